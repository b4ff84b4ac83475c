"""Spiking VQ-VAE (stage 1): quantisers against brute force, straight-through gradients, the
GAN loss terms against their closed forms, shapes and ranges for images and events."""

from __future__ import annotations

import math

import pytest
import torch

from snngen.errors import SnngenError
from snngen.models import DataInfo, build_model
from snngen.models.discriminator import (
    LPIPS,
    LPIPSWeightsMissing,
    PatchDiscriminator,
    adaptive_disc_weight,
    hinge_d_loss,
    load_lpips,
)
from snngen.models.quantizers import (
    TemporalCodebook,
    VanillaCodebook,
    codebook_usage,
    nearest_code,
    vq_loss,
)
from snngen.models.vqvae import Upsample, VQVAEConfig


@pytest.fixture(autouse=True)
def _eager_neurons(monkeypatch):
    monkeypatch.setenv("SNNGEN_COMPILE", "0")  # no torch.compile warm-up in unit tests


def tiny_cfg(**kw) -> VQVAEConfig:
    base = dict(
        time_steps=2,
        ch=8,
        ch_mult=[1, 2],
        num_res_blocks=1,
        attn_resolutions=[8],
        z_channels=8,
        embed_dim=4,
        n_embed=16,
        num_groups=4,
        disc_ndf=8,
        disc_layers=2,
        disc_start=2,
    )
    base.update(kw)
    return VQVAEConfig(**base)


def brute_nearest(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    return torch.stack([((codebook - row) ** 2).sum(1).argmin() for row in z])


# ----------------------------------------------------------------------------- quantisers


def test_nearest_code_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, 7, generator=g, dtype=torch.float64)
    cb = torch.randn(50, 7, generator=g, dtype=torch.float64)
    expected = brute_nearest(z, cb)
    assert torch.equal(nearest_code(z, cb), expected)
    assert torch.equal(nearest_code(z, cb, chunk=17), expected)  # chunking changes nothing


def test_temporal_codebook_matches_whole_trajectories():
    g = torch.Generator().manual_seed(1)
    T, B, C, H, W, K = 3, 2, 4, 3, 5, 20
    cb = TemporalCodebook(K, C, T).double()
    cb.embedding.weight.data = torch.randn(K, T * C, generator=g, dtype=torch.float64)
    z = torch.randn(T, B, C, H, W, generator=g, dtype=torch.float64)
    out = cb(z)
    assert out.indices.shape == (B, H, W)  # one index per position
    traj = cb.embedding.weight.view(K, T, C)
    for b in range(B):
        for h in range(H):
            for w in range(W):
                dist = ((traj - z[:, b, :, h, w]) ** 2).sum(dim=(1, 2))  # over all T steps
                assert out.indices[b, h, w] == dist.argmin()
                k = out.indices[b, h, w]
                torch.testing.assert_close(out.z_q[:, b, :, h, w], traj[k])


def test_vanilla_codebook_matches_every_step():
    g = torch.Generator().manual_seed(2)
    T, B, C, H, W, K = 3, 2, 4, 3, 5, 20
    cb = VanillaCodebook(K, C).double()
    cb.embedding.weight.data = torch.randn(K, C, generator=g, dtype=torch.float64)
    z = torch.randn(T, B, C, H, W, generator=g, dtype=torch.float64)
    out = cb(z)
    assert out.indices.shape == (T, B, H, W)  # one index per (step, position)
    flat = z.permute(0, 1, 3, 4, 2).reshape(-1, C)
    assert torch.equal(out.indices.reshape(-1), brute_nearest(flat, cb.embedding.weight))
    torch.testing.assert_close(out.z_q, cb.lookup(out.indices))


def test_codebook_init_is_uniform_in_one_over_n():
    cb = TemporalCodebook(64, 8, 4)
    assert cb.embedding.weight.shape == (64, 32)
    assert cb.embedding.weight.abs().max() <= 1 / 64


@pytest.mark.parametrize("cls", ["temporal", "vanilla"])
def test_straight_through_and_loss_gradients(cls):
    g = torch.Generator().manual_seed(3)
    T, B, C, H, W, K = 2, 2, 3, 2, 2, 8
    cb = TemporalCodebook(K, C, T, beta=0.25) if cls == "temporal" else VanillaCodebook(K, C)
    cb = cb.double()
    z = torch.randn(T, B, C, H, W, generator=g, dtype=torch.float64, requires_grad=True)
    out = cb(z)
    w = torch.randn(z.shape, generator=g, dtype=torch.float64)
    (out.z_q * w).sum().backward()
    torch.testing.assert_close(z.grad, w)  # straight-through: identity gradient
    # loss value and gradient: legacy = mean((zq - z)^2) * (1 + beta) in value; d/dz = 2(z-zq)/N
    z.grad = None
    zq = cb.lookup(out.indices).detach()
    loss = cb(z).loss
    torch.testing.assert_close(loss, 1.25 * ((zq - z) ** 2).mean())
    loss.backward()
    torch.testing.assert_close(z.grad, 2 * (z - zq).detach() / z.numel())


def test_vq_loss_legacy_switches_beta():
    z = torch.tensor([1.0, 2.0], requires_grad=True)
    e = torch.tensor([0.0, 0.0], requires_grad=True)
    vq_loss(z, e, beta=0.25, legacy=True).backward()
    torch.testing.assert_close(z.grad, z.detach())  # commitment weight 1 on the encoder
    torch.testing.assert_close(e.grad, -0.25 * z.detach())  # beta on the codebook
    z.grad = e.grad = None
    vq_loss(z, e, beta=0.25, legacy=False).backward()
    torch.testing.assert_close(z.grad, 0.25 * z.detach())


def test_codebook_usage_closed_forms():
    uniform = codebook_usage(torch.arange(8).repeat(5), 8)
    assert math.isclose(uniform["perplexity"], 8.0, rel_tol=1e-9) and uniform["dead"] == 0
    one = codebook_usage(torch.full((10,), 3), 8)
    assert one["perplexity"] == 1.0 and one["used"] == 1 and one["dead"] == 7
    half = codebook_usage(torch.tensor([0, 0, 0, 1]), 4)  # p = (3/4, 1/4)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert math.isclose(half["perplexity"], math.exp(h), rel_tol=1e-9)
    assert half["dead_fraction"] == 0.5


# ----------------------------------------------------------------------------- GAN parts


def test_hinge_and_adaptive_weight_closed_forms():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # relu(1 - real) = (0, 0.5) -> 0.25; relu(1 + fake) = (0, 1) -> 0.5
    assert torch.isclose(hinge_d_loss(real, fake), torch.tensor(0.375))
    W = torch.ones(3, requires_grad=True)
    a, b = torch.tensor([3.0, 0.0, 4.0]), torch.tensor([0.0, 1.0, 0.0])
    weight = adaptive_disc_weight((W * a).sum(), (W * b).sum(), W, 0.8)
    assert torch.isclose(weight, torch.tensor(0.8 * 5.0 / (1.0 + 1e-4)))


def test_patch_discriminator_shape_and_init():
    d = PatchDiscriminator(3, ndf=64, n_layers=3)
    assert d(torch.randn(2, 3, 64, 64)).shape == (2, 1, 6, 6)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5 and [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert abs(convs[3].weight.std().item() - 0.02) < 0.002


def test_lpips_needs_local_weights(tmp_path):
    with pytest.raises(LPIPSWeightsMissing, match="lpips_vgg_path"):
        build_model(tiny_cfg(perceptual_weight=1.0), DataInfo(1, 16))
    net = LPIPS()
    vgg = {f"features.{k}": v for k, v in net.features.state_dict().items()}
    lin = {f"lin{i}.model.1.weight": h.weight.abs() for i, h in enumerate(net.lins)}
    torch.save(vgg, tmp_path / "vgg16.pth")
    torch.save(lin, tmp_path / "vgg.pth")
    loaded = load_lpips(str(tmp_path / "vgg16.pth"), str(tmp_path / "vgg.pth"))
    x, y = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    assert torch.equal(loaded(x, x), torch.zeros(2))
    assert (loaded(x, y) > 0).all()
    model = build_model(
        tiny_cfg(
            perceptual_weight=1.0,
            lpips_vgg_path=str(tmp_path / "vgg16.pth"),
            lpips_lin_path=str(tmp_path / "vgg.pth"),
        ),
        DataInfo(1, 16),
    )
    assert "p_loss" in model.loss(torch.rand(2, 1, 16, 16))
    assert isinstance(LPIPSWeightsMissing("x"), SnngenError)


# ----------------------------------------------------------------------------- the model


@pytest.mark.parametrize("codebook", ["temporal", "vanilla"])
def test_images_shapes_ranges_and_tokens(codebook):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(codebook=codebook), DataInfo(1, 16)).eval()
    x = torch.rand(3, 1, 16, 16)
    rec = model.reconstruct(x)
    assert rec.shape == x.shape and rec.min() >= 0 and rec.max() <= 1
    tokens = model.encode_tokens(x)
    per_pos = 1 if codebook == "temporal" else 2
    assert tokens.shape == (3, 8 * 8 * per_pos) == (3, model.tokens_per_sample)
    assert tokens.dtype == torch.long and 0 <= tokens.min() and tokens.max() < 16
    torch.testing.assert_close(model.decode_tokens(tokens), rec)  # tokens carry everything


def test_gan_losses_before_and_after_disc_start():
    torch.manual_seed(0)
    # disc_start in the original's optimiser steps (two per batch): batch 0 reads steps 0 and
    # 1 (both off), batch 1 reads 2 and 3 (both on)
    model = build_model(tiny_cfg(disc_start=2), DataInfo(1, 16)).train()
    groups = model.optimizer_groups()
    assert list(groups) == ["loss", "loss_disc"]
    gen, disc = set(groups["loss"]), set(groups["loss_disc"])
    assert gen.isdisjoint(disc) and gen | disc == set(model.parameters())
    x = torch.rand(4, 1, 16, 16)
    before = model.loss(x)  # step 0 < disc_start
    assert before["d_weight"] == 0 and before["loss_disc"] == 0
    assert before["loss"].grad_fn is not None and before["loss_disc"].grad_fn is not None
    before["loss_disc"].backward()
    assert all(p.grad is None or not p.grad.any() for p in disc)  # zero factor, zero grads
    after = model.loss(x)  # step 1 >= disc_start
    assert after["d_weight"] > 0 and after["loss_disc"] > 0
    expected = after["rec_loss"] + after["q_loss"] + after["d_weight"] * after["g_loss"]
    torch.testing.assert_close(after["loss"].detach(), expected)
    assert int(model.step) == 2


@pytest.mark.parametrize(
    ("unit", "disc_start", "expected"),
    [
        # the original's Lightning global_step: 2k at batch k's generator loss, 2k + 1 at its
        # discriminator loss; 30001 switches the discriminator on at batch 15,000 and the
        # generator term at batch 15,001
        ("optimizer_steps", 30001, {14999: (0, 0), 15000: (0, 1), 15001: (1, 1)}),
        ("optimizer_steps", 30000, {14999: (0, 0), 15000: (1, 1)}),
        ("batches", 30001, {30000: (0, 0), 30001: (1, 1)}),
    ],
)
def test_disc_start_units(unit, disc_start, expected):
    model = build_model(tiny_cfg(disc_start=disc_start, disc_start_unit=unit), DataInfo(1, 16))
    for batch, factors in expected.items():
        model.step.fill_(batch)
        assert model.disc_factors() == factors, (unit, batch)


def test_discriminator_trains_one_batch_before_the_generator_term():
    # the original at batch 15,000 with disc_start 30001: the generator loss reads global_step
    # 30000 (no GAN term), the discriminator loss, after the generator's optimiser step, 30001
    torch.manual_seed(0)
    model = build_model(tiny_cfg(disc_start=30001), DataInfo(1, 16)).train()
    model.step.fill_(15000)
    out = model.loss(torch.rand(2, 1, 16, 16))
    assert out["disc_factor"] == 0 and out["d_weight"] == 0
    assert out["loss_disc"] > 0
    expected = out["rec_loss"] + out["q_loss"]
    torch.testing.assert_close(out["loss"].detach(), expected)


def test_disc_start_unit_default_is_the_originals():
    assert VQVAEConfig().disc_start_unit == "optimizer_steps"
    with pytest.raises(ValueError, match="disc_start_unit"):
        VQVAEConfig(disc_start_unit="epochs")


def test_braincog_neuron_fires_only_above_threshold():
    # braincog's LIFNode: spike = (mem - 0.5).gt(0); mem = x / 2 at the first step
    from snngen.spiking.layers import LIFNonlinearity

    x = torch.tensor([1.0, 1.0 + 1e-6, 0.999], dtype=torch.float64).view(1, 3)
    assert LIFNonlinearity()(x).tolist() == [[0.0, 1.0 + 1e-6, 0.0]]


def test_event_loss_per_frame_is_the_mean_of_frame_losses():
    torch.manual_seed(0)
    info = DataInfo(2, 16, events=True, time_bins=2)
    model = build_model(tiny_cfg(disc_start=0), info).train()
    x = torch.randint(0, 3, (2, 3, 2, 16, 16)).float()
    per_frame = model.loss(x)
    model.cfg.event_loss = "folded"
    folded = model.loss(x)
    # the L1 term is the same average; the GAN terms see other batches (per frame vs folded)
    torch.testing.assert_close(per_frame["rec_loss"], folded["rec_loss"])
    assert not torch.allclose(per_frame["g_loss"], folded["g_loss"])


def test_straight_through_reaches_the_encoder():
    torch.manual_seed(0)
    model = build_model(tiny_cfg(codebook_weight=0.0, disc_weight=0.0), DataInfo(1, 16))
    assert list(model.optimizer_groups()) == ["loss"]
    out = model.loss(torch.rand(4, 1, 16, 16))
    assert "loss_disc" not in out
    out["loss"].backward()  # reconstruction only: gradients reach the encoder through z_q
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert (
        model.quantize.embedding.weight.grad is None
        or not model.quantize.embedding.weight.grad.any()
    )


@pytest.mark.parametrize("mode", ["transposed", "nearest"])
def test_upsample_modes(mode):
    up = Upsample(4, mode)
    assert up(torch.randn(2, 3, 4, 5, 5)).shape == (2, 3, 4, 10, 10)
    model = build_model(tiny_cfg(upsample=mode), DataInfo(3, 16))
    assert model.reconstruct(torch.rand(2, 3, 16, 16)).shape == (2, 3, 16, 16)


def test_temporal_codebook_with_one_step_is_the_vanilla_codebook():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(1, 2, 4, 3, 3, generator=g, dtype=torch.float64)
    temporal, vanilla = TemporalCodebook(12, 4, 1).double(), VanillaCodebook(12, 4).double()
    vanilla.embedding.weight.data.copy_(temporal.embedding.weight.data)
    a, b = temporal(z), vanilla(z)
    assert torch.equal(a.indices, b.indices[0])
    torch.testing.assert_close(a.z_q, b.z_q)
    torch.testing.assert_close(a.loss, b.loss)


@pytest.mark.parametrize("codebook", ["temporal", "vanilla"])
def test_loss_logs_codebook_usage_of_the_batch(codebook):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(codebook=codebook, disc_weight=0.0), DataInfo(1, 16)).eval()
    x = torch.rand(3, 1, 16, 16)
    out = model.loss(x)
    tokens = model.encode_tokens(x)
    counts = torch.bincount(tokens.flatten(), minlength=16).double()
    p = counts[counts > 0] / counts.sum()
    assert math.isclose(float(out["perplexity"]), math.exp(-(p * p.log()).sum()), rel_tol=1e-6)
    assert int(out["codes_used"]) == int((counts > 0).sum())
    assert int(out["dead_codes"]) == 16 - int((counts > 0).sum())


def test_event_normalisation_modes():
    info = DataInfo(channels=2, image_size=16, events=True, time_bins=2)
    x = torch.zeros(2, 3, 2, 16, 16)
    x[0, 0, 0, 0, 0], x[1, 0, 1, 2, 2] = 4.0, 2.0  # sample 0: peak 4
    x[1, 1, 0, 3, 3] = 7.0  # sample 1: peak 7; sample 2: blank
    model = build_model(tiny_cfg(disc_weight=0.0), info).eval()  # default: sample_max
    assert model.cfg.event_norm == "sample_max"
    m = model.to_model_space(x)
    assert m[0, 0, 0, 0, 0] == 1 and m[1, 0, 1, 2, 2] == 0 and m[1, 1, 0, 3, 3] == 1
    assert (m[:, 2] == -1).all()  # a blank sample stays blank
    assert model.event_scale(x).flatten().tolist() == [4.0, 7.0, 1.0]
    rec = model.reconstruct(x)
    assert rec.shape == x.shape
    assert (rec.amax(dim=(0, 2, 3, 4)) <= torch.tensor([4.0, 7.0, 1.0])).all()
    fixed = build_model(tiny_cfg(disc_weight=0.0, event_norm="fixed", event_max=2.0), info)
    m = fixed.to_model_space(x)
    assert m[0, 0, 0, 0, 0] == 1 and m[1, 0, 1, 2, 2] == 1 and m[0, 1, 0, 0, 0] == -1  # clipped
    assert fixed.eval().reconstruct(x).max() <= 2.0


def test_no_torchvision_import():
    import inspect

    import snngen.models.discriminator as disc
    import snngen.models.vqvae as vq

    for module in (disc, vq):
        assert "import torchvision" not in inspect.getsource(module)
        assert "from torchvision" not in inspect.getsource(module)
    with pytest.raises(LPIPSWeightsMissing, match="no such file"):
        load_lpips("/nonexistent/vgg16.pth", "/nonexistent/vgg.pth")


def test_events_in_events_out():
    torch.manual_seed(0)
    info = DataInfo(channels=2, image_size=16, events=True, time_bins=2)
    model = build_model(tiny_cfg(event_max=2.0), info)
    x = torch.randint(0, 3, (2, 3, 2, 16, 16)).float()  # [T, B, 2, H, W] counts
    out = model.loss(x)
    assert set(out) >= {"loss", "loss_disc"}
    rec = model.eval().reconstruct(x)
    assert rec.shape == x.shape and rec.min() >= 0 and rec.max() <= 2.0
    tokens = model.encode_tokens(x)
    assert model.decode_tokens(tokens).shape == (2, 3, 2, 16, 16)
    with pytest.raises(NotImplementedError, match="vq_prior"):
        model.sample(2)
    with pytest.raises(ValueError, match="time_steps=4"):
        build_model(tiny_cfg(time_steps=4), info)


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="num_groups=3"):
        tiny_cfg(num_groups=3)
    with pytest.raises(ValueError, match="divisible"):
        build_model(tiny_cfg(ch_mult=[1, 2, 2, 2, 2]), DataInfo(1, 8))


def test_event_frames_resize_with_aligned_corners():
    # the original's N-MNIST / CIFAR10-DVS transform: bilinear, align_corners=True: the corner
    # pixels keep their counts and a 2-px ramp becomes an evenly spaced one
    from snngen.data.events import resize_frames

    ramp = torch.tensor([[0.0, 3.0], [0.0, 3.0]]).expand(1, 2, 2, 2)
    out = resize_frames(ramp, 4)
    assert out.shape == (1, 2, 4, 4)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, 1.0, 2.0, 3.0]))
