"""Activation checkpointing (snngen.spiking.checkpointing, trainer.checkpoint_activations).

Per family (SDDPM's U-Net, FSVAE, VQ-VAE, SAE; float64, tiny shapes): one training loss +
backward with checkpointing gives the gradients, the loss and the buffers (BatchNorm running
statistics) of the same step without it; the reference is plain autograd on an identical copy
of the model, seeded identically. Dropout is on where the family has it (U-Net, VQ-VAE), so a
recomputation that draws a new mask (no RNG state kept) fails; BatchNorm is updated in training
mode, so a recomputation that updates its statistics a second time fails. A forward pre-hook
counts the calls of one block: checkpointed, the backward pass calls it a second time (so an
implementation that does nothing fails); without checkpointing, or under ``no_grad``, once.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from snngen.config import build_run_config, load_config, save_config
from snngen.errors import ConfigError
from snngen.models import DataInfo, build_model
from snngen.spiking import _lif_cpp
from snngen.spiking.checkpointing import (
    CheckpointedBlock,
    StagedSequential,
    checkpointed_blocks,
    enable_activation_checkpointing,
)
from snngen.training import LitGenerative, fit

#: neuron back-ends with a custom autograd node that run float64 on the CPU: the eager fused
#: loops, and the C++ extension where it is built (never built here: ~1 min)
BACKENDS = ["0"] + (["cpp"] if _lif_cpp.is_built() else [])

#: family -> (model config, data, dotted path of the block whose calls are counted)
FAMILIES = {
    "sddpm": (dict(name="sddpm", ch=8, ch_mult=[1, 2], attn=[1], num_res_blocks=1,
                   dropout=0.3, timesteps=3, diffusion_steps=50),
              DataInfo(1, 8), "unet.downblocks.0"),
    "fsvae": (dict(name="fsvae", channels=[4, 8], latent_dim=6, num_steps=4, k=3),
              DataInfo(1, 8), "encoder.0"),
    "vqvae": (dict(name="vqvae", time_steps=2, ch=8, ch_mult=[1, 2], num_res_blocks=1,
                   attn_resolutions=[8], z_channels=8, embed_dim=4, n_embed=16, num_groups=4,
                   dropout=0.3, disc_ndf=8, disc_layers=2, disc_start=0),
              DataInfo(1, 16), "encoder.down.0.blocks.0"),
    "sae": (dict(name="sae", channels=[4, 8], latent_dim=6, num_steps=3),
            DataInfo(1, 8), "decoder.0"),
}


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: tiny tensors, and every reduction sums in one order."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make(family: str):
    model_cfg, info, block = FAMILIES[family]
    torch.manual_seed(0)
    cfg = build_run_config({"model": model_cfg})
    return build_model(cfg.model, info).double().train(), info, block


def batch(info: DataInfo, n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, info.channels, info.image_size, info.image_size, generator=g,
                      dtype=torch.float64)


def one_step(model, x, block: str, on: bool):
    """Loss + backward on a copy of ``model``; returns (loss, grads, buffers, calls of ``block``
    after the forward, calls after the backward)."""
    m = copy.deepcopy(model)
    assert (enable_activation_checkpointing(m, on) > 0) == on
    calls = [0]
    m.get_submodule(block).register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    torch.manual_seed(2)  # the loss's own draws (diffusion t and noise, FSVAE's posterior)
    loss = m.loss(x)["loss"]
    after_forward = calls[0]
    loss.backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    buffers = {n: b.clone() for n, b in m.named_buffers()}
    return loss.detach(), grads, buffers, after_forward, calls[0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_gradients_equal_without_checkpointing(family, backend, monkeypatch):
    monkeypatch.setenv("SNNGEN_COMPILE", backend)
    model, info, block = make(family)
    x = batch(info)
    loss0, g0, b0, f0, c0 = one_step(model, x, block, on=False)
    loss1, g1, b1, f1, c1 = one_step(model, x, block, on=True)
    assert (f0, c0) == (1, 1)  # plain: one call, nothing recomputed
    assert (f1, c1) == (1, 2)  # checkpointed: called again in the backward pass
    assert g0.keys() == g1.keys() and len(g0) > 4
    inside = [n for n in g0 if n.startswith(block)]
    assert inside and any(g0[n].abs().sum() > 0 for n in inside)  # the block gets a gradient
    # Non-reentrant checkpointing keeps the autograd graph and recomputes its saved tensors
    # with the same ops on the same inputs (same RNG state), so the gradients are the same
    # float64 numbers; 1e-12 relative only allows a reduction summed in another order. A new
    # dropout mask or a second BatchNorm update changes them by ~1e-4 or more.
    torch.testing.assert_close(loss1, loss0, rtol=0, atol=0)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-12, atol=1e-15, msg=name)
    for name in b0:  # running statistics updated once per step, as without checkpointing
        torch.testing.assert_close(b1[name], b0[name], rtol=0, atol=0, msg=name)


def test_nested_blocks_are_not_checkpointed_twice():
    """The U-Net's attention sits inside a checkpointed residual block: it is recomputed once
    with the block, not once more on its own."""
    model, info, _ = make("sddpm")
    enable_activation_checkpointing(model)
    attn = model.unet.downblocks[2].attn  # level 1 (after a down-sampling) has attention
    assert isinstance(attn, CheckpointedBlock) and not attn.checkpoint_activations
    assert all(not isinstance(b, type(attn)) for b in checkpointed_blocks(model))
    calls = []
    attn.register_forward_pre_hook(lambda *_: calls.append(1))
    torch.manual_seed(0)
    model.loss(batch(info))["loss"].backward()
    assert len(calls) == 2
    assert enable_activation_checkpointing(model, False) == 0
    assert not any(b.checkpoint_activations for b in checkpointed_blocks(model))


def test_no_recomputation_without_gradients():
    """Sampling and evaluation (no_grad) run the blocks once, with the same outputs."""
    model, info, block = make("fsvae")
    model.eval()
    x = batch(info)
    with torch.no_grad():
        want = model.reconstruct(x, generator=torch.Generator().manual_seed(0))
        enable_activation_checkpointing(model)
        calls = []
        model.get_submodule(block).register_forward_pre_hook(lambda *_: calls.append(1))
        got = model.reconstruct(x, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 1 and torch.equal(got, want)


def test_staged_sequential_stages():
    """Stages of ``stage_size`` modules, a shorter tail run plainly; the keys of nn.Sequential."""
    mods = [torch.nn.Linear(3, 3) for _ in range(5)]
    seq = StagedSequential(*mods, stage_size=2)
    assert list(seq.state_dict()) == list(torch.nn.Sequential(*mods).state_dict())
    enable_activation_checkpointing(seq)
    calls = {i: 0 for i in range(5)}
    for i, m in enumerate(mods):
        m.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    seq(torch.randn(2, 3, requires_grad=True)).sum().backward()
    # the two stages are recomputed up to their last saved tensor (the second Linear's input);
    # the tail Linear is not recomputed
    assert calls == {0: 2, 1: 2, 2: 2, 3: 2, 4: 1}
    with pytest.raises(ValueError, match="stage_size"):
        StagedSequential(*mods, stage_size=0)


def test_config_key_round_trip(tmp_path):
    raw = {"model": {"name": "sae"}, "trainer": {"max_steps": 1}}
    assert build_run_config(raw).trainer.checkpoint_activations is False
    path = tmp_path / "c.yaml"
    save_config(build_run_config({**raw, "trainer": {"checkpoint_activations": True}}), path)
    assert load_config(path).trainer.checkpoint_activations is True
    assert load_config(path, ["trainer.checkpoint_activations=false"]).trainer \
        .checkpoint_activations is False
    with pytest.raises(ConfigError, match="trainer.checkpoint_activations"):
        load_config(path, ["trainer.checkpoint_activations=sometimes"])


def test_training_harness_switches_blocks_on():
    model_cfg, info, _ = FAMILIES["sddpm"]
    on = build_run_config({"model": model_cfg, "trainer": {"checkpoint_activations": True}})
    lit = LitGenerative(on, info)
    blocks = checkpointed_blocks(lit.model)
    # 2 levels x 1 residual block down, 1 down-sampling, 2 middle blocks, 2 levels x 2 blocks
    # up, 1 up-sampling, the head
    assert len(blocks) == 11 and all(b.checkpoint_activations for b in blocks)
    off = LitGenerative(build_run_config({"model": model_cfg}), info)
    assert not any(b.checkpoint_activations for b in checkpointed_blocks(off.model))


def test_training_with_checkpointing_gives_the_same_weights(tmp_path):
    """Two optimiser steps through the Lightning harness (dropout, gradient clipping, EMA) with
    ``trainer.checkpoint_activations`` on give the weights of the same run without it, to the
    bit: the same float32 ops in the same order (measured equal)."""
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    data = torch.utils.data.TensorDataset(x, torch.zeros(8, dtype=torch.long))
    states = []
    for on in (False, True):
        cfg = build_run_config({
            "model": FAMILIES["sddpm"][0], "data": {"batch_size": 4},
            "trainer": {"max_steps": 2, "accelerator": "cpu", "progress_bar": False,
                        "ema_decay": 0.5, "grad_clip": 1.0, "checkpoint_activations": on}})
        lit = fit(cfg, tmp_path / f"run_{on}", data, DataInfo(1, 8))
        assert lit.batches_seen == 2
        assert all(b.checkpoint_activations is on for b in checkpointed_blocks(lit.model))
        states.append(lit.model.state_dict())
    plain, ckpt = states
    assert plain.keys() == ckpt.keys()
    for key in plain:
        assert torch.equal(ckpt[key], plain[key]), key


def test_training_harness_warns_when_nothing_to_checkpoint():
    cfg = build_run_config({"model": {"name": "tiny"}, "trainer": {"checkpoint_activations": True}})
    with pytest.warns(UserWarning, match="trainer.checkpoint_activations.*'tiny'"):
        LitGenerative(cfg, DataInfo(1, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LitGenerative(build_run_config({"model": {"name": "tiny"}}), DataInfo(1, 8))


def test_bf16_autocast_recomputed_under_autocast():
    """``bf16-mixed`` training runs the loss under CPU autocast: the recomputation re-enters it
    (torch's checkpoint records the autocast state), so the bfloat16 ops and their gradients
    are the ones without checkpointing (a recomputation without autocast fails: it feeds the
    saved bfloat16 block input to float32 weights)."""
    model, info, block = make("sddpm")
    model.float()
    x = batch(info).float()
    results = []
    for on in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(one_step(model, x, block, on))
    (loss0, g0, _, _, c0), (loss1, g1, _, _, c1) = results
    assert (c0, c1) == (1, 2)
    torch.testing.assert_close(loss1, loss0, rtol=0, atol=0)
    for name in g0:  # the same float32/bfloat16 ops in the same order: the same numbers
        torch.testing.assert_close(g1[name], g0[name], rtol=0, atol=0, msg=name)
