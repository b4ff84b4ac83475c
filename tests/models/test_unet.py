"""Spiking U-Net (SDDPM), ANN twin, TSM, threshold guidance, weight inheritance, diffusion model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from snngen.config import load_config
from snngen.models import DataInfo, build_model
from snngen.models.diffusion_model import DDPMConfig, SDDPMConfig
from snngen.models.inherit import InheritanceError, inherit_weights
from snngen.models.unet import (
    ResBlock,
    SpikeAct,
    SpikingUNet,
    TSMConv2d,
    UNetConfig,
    sinusoidal_embedding,
)
from snngen.runs import build_checked_model
from snngen.spiking.neurons import IF

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(autouse=True)
def _eager(monkeypatch):
    """No torch.compile warm-up, and one thread: on tiny tensors intra-op threads only add
    synchronisation, which costs ~100x on a loaded CPU."""
    monkeypatch.setenv("SNNGEN_COMPILE", "0")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small(**kw) -> UNetConfig:
    base = dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, timesteps=3, in_channels=1)
    return UNetConfig(**{**base, **kw})


def inputs(b: int = 3, size: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 1, size, size, generator=g), torch.randint(0, 1000, (b,), generator=g)


def randomise_bn(net: torch.nn.Module, seed: int = 1) -> None:
    """Give every batch norm non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.3)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.8)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.3)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    "kw",
    [{}, {"tsm": True}, {"neuron": "relu", "timesteps": 1}, {"neuron": "silu"}, {"attn": [1]}],
)
def test_output_and_body_shapes(kw):
    net = SpikingUNet(small(**kw))
    x, t = inputs()
    assert net(x, t).shape == x.shape
    assert net.body(x, t).shape == (net.cfg.timesteps, 3, 8, 8, 8)
    assert net.body(x, t.float() + 0.5).shape == (net.cfg.timesteps, 3, 8, 8, 8)  # fractional t


def test_three_level_unet_and_bad_inputs():
    net = SpikingUNet(small(ch_mult=[1, 2, 2], num_res_blocks=2, timesteps=2))
    x, t = inputs(2, 16)
    assert net(x, t).shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(2, 1, 10, 10), t)
    with pytest.raises(ValueError, match="one diffusion time per image"):
        net(x, t[:1])


def test_ann_twin_has_identical_parameter_shapes():
    snn = SpikingUNet(small(ch_mult=[1, 2, 2], attn=[1]))
    for neuron in ("relu", "silu"):
        ann = SpikingUNet(small(ch_mult=[1, 2, 2], attn=[1], neuron=neuron, timesteps=1))
        a = {k: tuple(v.shape) for k, v in ann.state_dict().items()}
        s = {k: tuple(v.shape) for k, v in snn.state_dict().items()}
        assert a == s
        assert not ann.spiking and snn.spiking


def test_tsm_adds_exactly_one_scale_per_conv2d():
    plain, tsm = SpikingUNet(small()), SpikingUNet(small(tsm=True))
    extra = set(tsm.state_dict()) - set(plain.state_dict())
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in plain.modules())
    assert len(extra) == n_conv and all(k.endswith(".tsm_scale") or k == "tsm_scale" for k in extra)
    assert all(tuple(tsm.state_dict()[k].shape) == (3, 1, 1, 1, 1) for k in extra)
    assert set(plain.state_dict()) <= set(tsm.state_dict())


# --------------------------------------------------------------------------- exact behaviour


def test_sinusoidal_embedding_matches_the_original_table():
    d, n = 16, 50
    w = torch.exp(-torch.arange(0, d, 2) / d * math.log(10000))
    ang = torch.arange(n).float()[:, None] * w[None, :]
    table = torch.stack([ang.sin(), ang.cos()], dim=-1).view(n, d)  # SDDPM's fixed table
    t = torch.tensor([0, 1, 7, 49])
    torch.testing.assert_close(sinusoidal_embedding(t, d), table[t])


def _if_hard(x: torch.Tensor, thr: float = 1.0) -> torch.Tensor:
    """Brute-force IF neuron: v += x; spike if v >= thr; reset to 0. ``x [T, ...]``."""
    v, out = torch.zeros_like(x[0]), []
    for xt in x:
        v = v + xt
        s = (v >= thr).float()
        out.append(s)
        v = v * (1 - s)
    return torch.stack(out)


def test_resblock_is_prespike_if_conv_bn_plus_temb_plus_shortcut():
    cfg = small()
    from snngen.models.unet import _Builder

    block = ResBlock(4, 6, 12, _Builder(cfg)).eval()
    randomise_bn(block)
    g = torch.Generator().manual_seed(3)
    x, temb = torch.randn(3, 2, 4, 5, 5, generator=g) * 2, torch.randn(2, 12, generator=g)

    def conv_bn(conv, bn, s):
        y = F.conv2d(s.flatten(0, 1), conv.weight, conv.bias, padding=conv.padding)
        y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0, bn.eps)
        return y.unflatten(0, s.shape[:2])

    h = conv_bn(block.conv1, block.bn1, _if_hard(x))
    h = h + (F.silu(temb) @ block.temb_proj[1].weight.T + block.temb_proj[1].bias)[..., None, None]
    h = conv_bn(block.conv2, block.bn2, _if_hard(h))
    sc = block.shortcut
    ref = h + F.conv2d(x.flatten(0, 1), sc.weight, sc.bias).unflatten(0, (3, 2))
    torch.testing.assert_close(block(x, temb), ref)


def test_readout_is_weighted_sum_over_steps():
    """ANN frames are identical, so T steps give sum_t 0.8^(T-1-t) = 2.44 x the T=1 output."""
    one = SpikingUNet(small(neuron="relu", timesteps=1)).eval()
    three = SpikingUNet(small(neuron="relu", timesteps=3)).eval()
    randomise_bn(one)
    three.load_state_dict(one.state_dict())
    x, t = inputs()
    torch.testing.assert_close(three(x, t), (1 + 0.8 + 0.64) * one(x, t), rtol=1e-5, atol=1e-6)


def test_activations_spike_and_are_binary():
    net = SpikingUNet(small()).eval()
    randomise_bn(net)
    outs = []
    hooks = [
        a.register_forward_hook(lambda m, i, o: outs.append(o)) for a in net.activations().values()
    ]
    net(*inputs())
    for h in hooks:
        h.remove()
    assert len(outs) == len(net.activations())
    every = torch.cat([o.flatten() for o in outs])
    assert set(every.unique().tolist()) <= {0.0, 1.0} and every.mean() > 0.01


@pytest.mark.parametrize("scale", [0.7, 1.3, 2.0])
def test_threshold_scale_equals_a_scaled_threshold(scale):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, 50, generator=g) * 1.5
    act = SpikeAct({"name": "if", "v_threshold": 1.0, "v_reset": 0.0})
    act.threshold_scale = scale
    torch.testing.assert_close(act(x), _if_hard(x, scale))
    ref = IF(v_threshold=scale, v_reset=0.0)(x)
    torch.testing.assert_close(act(x), ref)


def test_threshold_guidance_silences_the_network_and_is_undone():
    net = SpikingUNet(small()).eval()
    randomise_bn(net)
    x, t = inputs()
    before = net(x, t)
    net.set_threshold_scale(1e9)  # no neuron can fire: the output no longer depends on x
    y1, y2 = net(x, t), net(torch.randn_like(x), t)
    torch.testing.assert_close(y1, y2)
    net.set_threshold_scale(1.0)
    torch.testing.assert_close(net(x, t), before)
    with pytest.raises(ValueError):
        net.set_threshold_scale(0.0)


# --------------------------------------------------------------------------- inheritance


def test_tsm_inherited_from_plain_computes_the_same_output():
    plain = SpikingUNet(small(ch_mult=[1, 2, 2], attn=[2]))
    randomise_bn(plain)
    with torch.no_grad():  # a "trained" checkpoint: non-zero biases everywhere
        for name, p in plain.named_parameters():
            if name.endswith("bias"):
                p.add_(0.05 * torch.randn_like(p))
    tsm = SpikingUNet(small(ch_mult=[1, 2, 2], attn=[2], tsm=True))
    report = inherit_weights(tsm, plain)
    x, t = inputs(4, 16)
    for mode in ("eval", "train"):
        getattr(plain, mode)()
        getattr(tsm, mode)()
        assert torch.equal(tsm(x, t), plain(x, t))
    plain_keys = set(plain.state_dict())
    assert report.mapped == sorted(plain_keys)
    assert report.initialised == sorted(set(tsm.state_dict()) - plain_keys)
    assert all(k.endswith("tsm_scale") for k in report.initialised) and report.initialised
    assert report.dropped == []
    # the TSM part is live: moving one scale changes the output, and it gets gradients
    tsm.eval()
    tsm.head.tail_conv.tsm_scale.data[0] = 3.0
    assert not torch.allclose(tsm(x, t), plain.eval()(x, t))
    tsm.train()
    tsm(x, t).square().mean().backward()
    assert all(m.tsm_scale.grad is not None for m in tsm.modules() if isinstance(m, TSMConv2d))


def test_inheritance_reports_dropped_and_refuses_bad_shapes(tmp_path):
    tsm = SpikingUNet(small(tsm=True))
    plain = SpikingUNet(small())
    report = inherit_weights(plain, tsm)  # TSM -> plain: the scales have no place
    assert report.dropped == sorted(k for k in tsm.state_dict() if k.endswith("tsm_scale"))
    assert report.initialised == []
    assert "dropped" in report.summary()
    with pytest.raises(InheritanceError, match="no place"):
        inherit_weights(plain, tsm, allow_dropped=False)

    wide = SpikingUNet(small(ch=16))
    before = {k: v.clone() for k, v in tsm.state_dict().items()}
    with pytest.raises(InheritanceError) as err:
        inherit_weights(tsm, wide)
    msg = str(err.value)
    # the first differing tensor in module order, with both shapes
    assert "'time_embedding.mlp.0.weight': source shape (64, 16) != target shape (32, 8)" in msg
    assert all(torch.equal(before[k], v) for k, v in tsm.state_dict().items())  # untouched

    with pytest.raises(InheritanceError, match=r"tsm_scale.*\(3, 1, 1, 1, 1\).*\(5, 1, 1, 1, 1\)"):
        inherit_weights(SpikingUNet(small(tsm=True, timesteps=5)), tsm)


def test_inheritance_from_a_diffusion_model_checkpoint(tmp_path):
    info = DataInfo(channels=1, image_size=8)
    kw = dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, diffusion_steps=50)
    src = build_model(SDDPMConfig(**kw), info)
    randomise_bn(src)
    path = tmp_path / "plain.pt"
    torch.save(src.state_dict(), path)  # keys "unet.<...>" plus the model's own buffers
    dst = build_checked_model(SDDPMConfig(**kw, tsm=True, init_from=str(path)), info)  # reads path
    assert dst.inheritance is not None and dst.inheritance.dropped == [
        "gamma_data",
        "gamma_filled",
    ]
    x, t = inputs()
    src.eval(), dst.eval()
    assert torch.equal(dst.unet(x, t), src.unet(x, t))


# --------------------------------------------------------------------------- diffusion model


def test_diffusion_model_loss_and_samples():
    info = DataInfo(channels=1, image_size=8)
    kw = dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, diffusion_steps=40)
    for cfg in (SDDPMConfig(**kw), DDPMConfig(**kw)):
        model = build_model(cfg, info)
        assert model.name == cfg.name and model.spiking == (cfg.name == "sddpm")
        out = model.loss(torch.rand(6, 1, 8, 8))
        assert out["loss"].ndim == 0 and out["loss"].item() > 0
        out["loss"].backward()
        assert int(model.gamma_filled) == 6
        for solver in ("ddpm", "ddim", "analytic-dpm", "dpm-solver"):
            x = model.sample(3, generator=torch.Generator().manual_seed(0), solver=solver, steps=4)
            assert x.shape == (3, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
        a = model.sample(2, generator=torch.Generator().manual_seed(1), solver="ddim", steps=3)
        b = model.sample(2, generator=torch.Generator().manual_seed(1), solver="ddim", steps=3)
        assert torch.equal(a, b)
    assert all(act.threshold_scale == 1.0 for act in model.unet.activations().values())


def test_analytic_gamma_is_estimated_once_and_used_by_sample():
    from snngen.diffusion import discrete_timesteps, estimate_gamma

    info = DataInfo(channels=1, image_size=8)
    model = build_model(SDDPMConfig(ch=8, ch_mult=[1, 2], num_res_blocks=1, diffusion_steps=40),
                        info)  # fmt: skip
    model.loss(torch.rand(5, 1, 8, 8))  # remembers 5 training images
    gamma = model.analytic_gamma(4)
    assert model.training  # the mode is restored
    taus = discrete_timesteps(40, 4, "linspace")
    assert torch.isfinite(gamma[taus]).all() and int(torch.isfinite(gamma).sum()) == 4
    model.eval()
    ref = estimate_gamma(model.unet, model.schedule, model.gamma_data[:5], timesteps=taus,
                         batch_size=64, generator=torch.Generator().manual_seed(0))  # fmt: skip
    torch.testing.assert_close(gamma, ref, equal_nan=True)
    model.sample(2, solver="analytic-dpm", steps=4)
    assert len(model._gamma_cache) == 1  # reused, not estimated again


@pytest.mark.parametrize(
    "name",
    [
        "sddpm_cifar10",
        "sddpm_mnist",
        "sddpm_fashion_mnist",
        "sddpm_celeba",
        "sddpm_lsun_bedroom",
        "sddpm_mnist5k_small",
        "ddpm_mnist5k_small",
        "sdm_tsm_mnist5k_small",
        "sdm_tsm_cifar10",
    ],
)
def test_configs_validate(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.model.name in ("sddpm", "ddpm")
    if "small" in name:
        if getattr(cfg.model, "init_from", None):  # the source run is trained by the user first
            assert "sddpm" in cfg.model.init_from
            cfg.model.init_from = None
        model = build_model(cfg.model, DataInfo(channels=1, image_size=cfg.data.image_size))
        assert model.unet.cfg.timesteps == cfg.model.timesteps


def test_analytic_gamma_from_the_attached_training_set():
    """Gamma comes from the whole attached training set (as Analytic-DPM's reference), or its
    first ``gamma_images``; a dataset, a tensor or a lazy callable may be attached."""
    from torch.utils.data import TensorDataset

    from snngen.diffusion import discrete_timesteps, estimate_gamma

    info = DataInfo(channels=1, image_size=8)
    kw = dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, diffusion_steps=40)
    images = torch.rand(70, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    taus = discrete_timesteps(40, 4, "analytic-dpm")

    def expected(model, n):
        model.eval()
        return estimate_gamma(model.unet, model.schedule, images[:n] * 2 - 1, timesteps=taus,
                              batch_size=64, generator=torch.Generator().manual_seed(0))

    model = build_model(SDDPMConfig(**kw), info)
    assert model.cfg.gamma_images is None
    model.loss(torch.rand(3, 1, 8, 8))  # remembered, but the attached set wins
    model.set_gamma_data(TensorDataset(images, torch.zeros(70)))
    torch.testing.assert_close(model.analytic_gamma(4), expected(model, 70), equal_nan=True)
    opened = []
    model.set_gamma_data(lambda: opened.append(1) or images)
    assert not opened  # opened lazily
    torch.testing.assert_close(model.analytic_gamma(4), expected(model, 70), equal_nan=True)
    capped = build_model(SDDPMConfig(**kw, gamma_images=5), info)
    capped.unet.load_state_dict(model.unet.state_dict())
    capped.set_gamma_data(images)
    torch.testing.assert_close(capped.analytic_gamma(4), expected(capped, 5), equal_nan=True)
    with pytest.raises(ValueError, match="gamma_images"):
        SDDPMConfig(gamma_images=0)


def test_model_samplers_default_to_the_originals():
    """DDPM/DDIM clamp x0 (SDDPM), DDIM on SDDPM's grid, Analytic-DPM with the data-range clip
    and the last step's sigma clip (baofff/Analytic-DPM's CIFAR-10 runs)."""
    from snngen.diffusion import analytic_dpm_sample, ddim_sample, ddpm_sample

    info = DataInfo(channels=1, image_size=8)
    model = build_model(SDDPMConfig(ch=8, ch_mult=[1, 2], num_res_blocks=1, diffusion_steps=40),
                        info)  # fmt: skip
    model.loss(torch.rand(4, 1, 8, 8))
    model.eval()
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 3

    def run(fn, seed=1, **kw):
        return fn(model.unet, model.schedule, noise, generator=torch.Generator().manual_seed(seed),
                  **kw)

    def to_image(x):
        return ((x.clamp(-1, 1) + 1) / 2).float()

    got = model.sample(2, generator=torch.Generator().manual_seed(1), noise=noise)
    assert torch.equal(got, to_image(run(ddpm_sample, clip_denoised=True)))
    assert not torch.equal(got, to_image(run(ddpm_sample, clip_denoised=False)))
    got = model.sample(2, solver="ddim", steps=8, noise=noise)
    assert torch.equal(got, to_image(run(ddim_sample, steps=8, spacing="sddpm", end_step=0)))
    gamma = model.analytic_gamma(6)
    got = model.sample(2, generator=torch.Generator().manual_seed(1), noise=noise,
                       solver="analytic-dpm", steps=6)  # fmt: skip
    ref = run(analytic_dpm_sample, steps=6, gamma=gamma, data_range=(-1.0, 1.0),
              clip_sigma_steps=1, clip_denoised=True, spacing="analytic-dpm")
    assert torch.equal(got, to_image(ref))
