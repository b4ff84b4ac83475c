"""The spiking autoencoder: architecture as the snnTorch tutorial, read-out, interface.

Outputs and gradients against the tutorial's own code: tests/golden/test_sae_golden.py.
"""

import copy

import pytest
import torch

from snngen.config import build_run_config
from snngen.models import DataInfo, build_model
from snngen.spiking import _lif_cpp, kernels
from snngen.spiking.layers import TimeBatchNorm2d
from snngen.spiking.neurons import LIF, ParametricLIF


def make(**model):
    cfg = build_run_config({"model": {"name": "sae", **model}})
    return build_model(cfg.model, DataInfo(channels=1, image_size=32))


def test_architecture_matches_tutorial():
    m = make()
    convs = [mod for mod in m.encoder if isinstance(mod, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [
        (1, 32, (2, 2)), (32, 64, (2, 2)), (64, 128, (2, 2))]
    assert m.to_latent[0].in_features == 128 * 4 * 4 and m.to_latent[0].out_features == 32
    lifs = [mod for mod in m.modules() if isinstance(mod, LIF)]
    # 3 conv levels + latent, from_latent, the Leaky after Unflatten, 2 deconv levels, read-out
    assert len(lifs) == 9 and lifs[5] is m.bottom_lif and lifs[-1] is m.readout
    assert all(n.spec.form == "snntorch" and n.beta == 0.5 for n in lifs)
    # snnTorch's Leaky: subtract reset with the reset detached, a spike only when mem > thr
    assert all(n.spec.v_reset is None and n.spec.detach_reset for n in lifs)
    assert all(n.spec.strict_threshold for n in lifs)
    assert all(n.spec.v_threshold == 1.0 for n in lifs[:-1])
    assert m.readout.spec.v_threshold == 20000.0
    bns = [mod for mod in m.modules() if isinstance(mod, TimeBatchNorm2d)]
    assert len(bns) == 5 and all(bn.per_step for bn in bns)


def test_readout_is_last_step_membrane_of_non_spiking_layer():
    torch.manual_seed(0)
    m = make(num_steps=3).eval()
    x = torch.rand(2, 1, 32, 32)
    h = m.bottom_lif(m.from_latent(m.encode(x)).unflatten(2, (128, 4, 4)))
    pre = m.decoder(h)  # input current of the read-out layer [T, B, 1, 32, 32]
    # membrane of a never-spiking snnTorch LIF: mem_t = beta mem_{t-1} + I_t
    mem = torch.zeros_like(pre[0])
    for t in range(pre.shape[0]):
        mem = 0.5 * mem + pre[t]
    torch.testing.assert_close(m.decode(m.encode(x)), mem)


def test_interface_shapes_ranges_and_gradients():
    torch.manual_seed(0)
    m = make(num_steps=2)
    x = torch.rand(4, 1, 32, 32)
    out = m.loss(x)
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert m.encoder[0].weight.grad.abs().sum() > 0  # surrogate gradients reach the first conv
    m.eval()
    r, s = m.reconstruct(x), m.sample(3, generator=torch.Generator().manual_seed(0))
    assert r.shape == x.shape and s.shape == (3, 1, 32, 32)
    assert r.min() >= 0 and r.max() <= 1 and s.min() >= 0 and s.max() <= 1
    s2 = m.sample(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s, s2)


def test_options_restore_snngens_former_behaviour():
    m = make(detach_reset=False, strict_threshold=False, bn_per_step=False)
    lifs = [mod for mod in m.modules() if isinstance(mod, LIF)]
    assert not any(n.spec.detach_reset or n.spec.strict_threshold for n in lifs)
    assert not any(bn.per_step for bn in m.modules() if isinstance(bn, TimeBatchNorm2d))


def test_batch_norm_per_step_in_training_folded_in_eval():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 2, 5, 5) * torch.arange(1.0, 4.0).view(3, 1, 1, 1, 1)
    bn, ref = TimeBatchNorm2d(2, per_step=True), torch.nn.BatchNorm2d(2)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    ref.load_state_dict(bn.state_dict())
    want = torch.stack([ref(x_t) for x_t in x])  # a torch BatchNorm called once per step
    torch.testing.assert_close(bn(x), want, rtol=0, atol=0)
    for key, value in ref.state_dict().items():  # running statistics: one update per step
        torch.testing.assert_close(bn.state_dict()[key], value, rtol=0, atol=0)
    assert int(bn.num_batches_tracked) == 3
    folded = TimeBatchNorm2d(2)
    folded.load_state_dict(ref.state_dict())
    bn.eval(), folded.eval()
    torch.testing.assert_close(bn(x), folded(x), rtol=0, atol=0)


@pytest.mark.parametrize("v_reset", [None, 0.0])
@pytest.mark.parametrize("detach", [False, True])
def test_strict_threshold_fires_only_above(v_reset, detach):
    # one input spike into snnTorch's Leaky (beta 0.5, thr 1): mem = 1.0 exactly, no spike;
    # two in a row: 1.5 > 1, a spike.
    x = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    x = x.view(4, 3, 1).double()
    strict = dict(beta=0.5, v_reset=v_reset, detach_reset=detach, strict_threshold=True,
                  return_membrane=True)
    s, mem = LIF(**strict)(x)
    assert s[:, 0, 0].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert s[:, 1, 0].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert s[:, 2, 0].tolist() == [0.0, 0.0, 0.0, 1.0]
    s_ge, _ = LIF(**{**strict, "strict_threshold": False})(x)
    assert s_ge[0, 0, 0] == 1.0  # mem == thr fires under >=
    assert kernels.NeuronSpec(strict_threshold=True).fires is torch.gt


@pytest.mark.parametrize("form", ["snntorch", "spikingjelly"])
@pytest.mark.parametrize("v_reset", [None, 0.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_strict_threshold_backends_agree_at_exact_ties(form, v_reset, dtype):
    # spike-valued inputs hit the threshold exactly; eager fused and C++ (where built) must
    # reproduce plain autograd: spikes, membranes and gradients (input and decay)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(6, 64, generator=gen) < 0.5).to(dtype) * (2.0 if form != "snntorch" else 1)
    w = torch.randn(6, 64, generator=gen, dtype=dtype)
    kw = dict(form=form, beta=0.5 if form == "snntorch" else None, v_reset=v_reset,
              strict_threshold=True, return_membrane=True)
    compiles = [False] + (["cpp"] if _lif_cpp.is_built() else [])
    results = []
    for backend, compile in [("reference", None)] + [("fused", c) for c in compiles]:
        xi = x.clone().requires_grad_(True)
        neuron = LIF(**kw, backend=backend, compile=compile) if form == "snntorch" else \
            ParametricLIF(v_reset=v_reset, strict_threshold=True,
                          return_membrane=True, backend=backend, compile=compile).to(dtype)
        sp, me = neuron(xi)
        params = [xi] + [p for p in neuron.parameters()]
        results.append((sp, me, *torch.autograd.grad((sp * w).sum() + me.sum(), params)))
    assert results[0][0].sum() > 0
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_latent_rate_tracks_per_step_firing_and_sample_draws_from_it():
    # snngen's addition (the tutorial has no prior): rates per (step, latent unit)
    torch.manual_seed(0)
    m = make(num_steps=3, channels=[4, 8], latent_dim=6)
    with torch.no_grad():
        m.to_latent[0].weight.mul_(8.0)  # make the latent fire at this tiny width
    x = torch.rand(5, 1, 32, 32)
    z = copy.deepcopy(m).encode(x)  # train mode: batch statistics, same spikes
    assert 0.05 < z.mean() < 0.95 and (z[0].mean(0) != z[-1].mean(0)).any()
    m.loss(x)
    want = torch.full((3, 6), 0.5).lerp(z.mean(dim=1), m.cfg.rate_momentum)
    torch.testing.assert_close(m.latent_rate, want)
    m.eval()
    seen = []
    m.decode = lambda zz: seen.append(zz) or torch.zeros(zz.shape[1], 1, 32, 32)
    pattern = (torch.arange(3).view(3, 1) + torch.arange(6)) % 2
    m.latent_rate.copy_(pattern.float())
    m.sample(4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(seen[-1], pattern.unsqueeze(1).expand(3, 4, 6).float())
    m.latent_rate.fill_(0.25)
    m.sample(4000, generator=torch.Generator().manual_seed(0))
    assert abs(seen[-1].mean().item() - 0.25) < 0.01
