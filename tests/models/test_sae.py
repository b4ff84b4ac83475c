"""The spiking autoencoder: architecture as the snnTorch tutorial, read-out, interface."""

import torch

from snngen.config import build_run_config
from snngen.models import DataInfo, build_model
from snngen.spiking.neurons import LIF


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
    assert all(n.spec.form == "snntorch" and n.beta == 0.5 for n in lifs)
    assert m.readout.spec.v_threshold == 20000.0


def test_readout_is_last_step_membrane_of_non_spiking_layer():
    torch.manual_seed(0)
    m = make(num_steps=3).eval()
    x = torch.rand(2, 1, 32, 32)
    h = m.from_latent(m.encode(x)).unflatten(2, (128, 4, 4))
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
