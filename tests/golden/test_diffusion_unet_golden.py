"""Golden tests: snngen's spiking U-Net (plain and TSM) against SDDPM's ``Spk_UNet`` and SDM's
``Spk_UNet_TSM``, with the original's weights loaded through ``snngen import``'s key map.

Fixtures ``diffusion_unet`` / ``diffusion_unet_tsm`` (``build_diffusion.py``): a tiny U-Net
(ch 4, ch_mult [1, 2], 1 res block, T = 4, 8x8 RGB) with seeded weights and BN statistics; the
original's eps in eval mode (running statistics) and train mode (batch statistics), the running
statistics after the train forward, the training loss on a seeded ``t`` and noise, and its
gradients w.r.t. the input and every parameter; float64, plus eval/train forwards in float32
(with every neuron fed the original's spikes, ``golden.original_spikes``).
"""

from __future__ import annotations

import pytest
import torch
from golden import assert_matches, load_fixture, original_spikes

from snngen.importers import ImportMismatch, load_original
from snngen.models.base import DataInfo
from snngen.models.diffusion_model import DiffusionModel, SDDPMConfig
from snngen.models.unet import SDDPM_IF

FIXTURES = {"plain": "diffusion_unet", "tsm": "diffusion_unet_tsm"}
FAMILY = {"plain": "sddpm", "tsm": "sdm"}


def build(kind: str, fx: dict, dtype: torch.dtype = torch.float64) -> DiffusionModel:
    """A snngen diffusion model of the fixture's shape with the original's weights."""
    c = fx["config"]
    cfg = SDDPMConfig(ch=c["ch"], ch_mult=list(c["ch_mult"]), attn=list(c["attn"]),
                      num_res_blocks=c["num_res_blocks"], dropout=c["dropout"],
                      timesteps=c["timestep"], neuron=dict(SDDPM_IF), tsm=kind == "tsm",
                      diffusion_steps=c["T"])  # fmt: skip
    model = DiffusionModel(cfg, DataInfo(channels=c["img_ch"], image_size=c["image_size"]))
    load_original(model, fx["state_dict"], FAMILY[kind])
    return model.to(dtype)


@pytest.fixture(scope="module", params=["plain", "tsm"])
def case(request):
    torch.set_num_threads(1)
    fx = load_fixture(FIXTURES[request.param])
    return request.param, fx


def test_forward_eval_and_train_mode(case):
    kind, fx = case
    model = build(kind, fx)
    model.eval()
    assert_matches(model.unet(fx["x"], fx["t"]), fx["eval_eps"], f"{kind} eval eps")
    model.train()
    assert_matches(model.unet(fx["x"], fx["t"]), fx["train_eps"], f"{kind} train eps")
    stats = {k[len("unet."):]: v for k, v in model.state_dict().items() if "running" in k}
    from snngen.importers.sddpm import snngen_key

    for key, expected in fx["running_stats_after_train"].items():
        assert_matches(stats[snngen_key(key)], expected, f"{kind} {key} after a train step")


def test_forward_float32(case):
    kind, fx = case
    model = build(kind, fx, torch.float32)
    model.eval()
    x = fx["x"].float()
    for mode in ("eval", "train"):
        model.train(mode == "train")
        with original_spikes(model, fx[f"{mode}_neurons_float32"], f"{kind} {mode}") as flips:
            eps = model.unet(x, fx["t"])
        assert_matches(eps, fx[f"{mode}_eps_float32"], f"{kind} {mode} eps fp32 ({flips})")


def test_loss_and_gradients(case):
    kind, fx = case
    model = build(kind, fx)
    model.train()
    x0 = fx["x0"].clone().requires_grad_(True)
    gen = torch.Generator().manual_seed(fx["loss_seed"])  # the original's global seed
    loss = model.schedule.eps_loss(model.unet, x0, generator=gen)
    assert loss.dtype == torch.float64
    assert_matches(loss, fx["loss"], f"{kind} loss")
    loss.backward()
    assert_matches(x0.grad, fx["grad_x0"], f"{kind} d loss / d x0")
    from snngen.importers.sddpm import snngen_key

    params = dict(model.unet.named_parameters())
    assert len(fx["grad_params"]) == len(params)
    for key, expected in fx["grad_params"].items():
        got = params[snngen_key(key)].grad
        assert got is not None, key
        assert_matches(got, expected, f"{kind} d loss / d {key}")


def test_the_model_loss_matches_the_original(case):
    """``DiffusionModel.loss`` scales [0, 1] images to [-1, 1] and runs the same eps-MSE."""
    kind, fx = case
    model = build(kind, fx)
    model.train()
    torch.manual_seed(fx["loss_seed"])  # the model draws from torch's global generator
    loss = model.loss((fx["x0"] + 1) / 2)["loss"]
    assert_matches(loss, fx["loss"], f"{kind} DiffusionModel.loss")


@pytest.mark.parametrize("kind", ["plain", "tsm"])
def test_import_refuses_a_missing_or_misshaped_key(kind):
    fx = load_fixture(FIXTURES[kind])
    key = "tail_conv.tsmconv.weight" if kind == "tsm" else "tail_conv.weight"
    broken = {k: v for k, v in fx["state_dict"].items() if k != key}
    with pytest.raises(ImportMismatch, match=key.replace(".", r"\.")):
        build(kind, {**fx, "state_dict": broken})
    key = "downblocks.0.conv1.tsmp" if kind == "tsm" else "downblocks.0.conv1.weight"
    broken = dict(fx["state_dict"])
    broken[key] = broken[key][:1]
    with pytest.raises(ImportMismatch, match=key.replace(".", r"\.")):
        build(kind, {**fx, "state_dict": broken})
    broken = {**fx["state_dict"], "extra.weight": torch.zeros(1)}
    with pytest.raises(ImportMismatch, match=r"extra\.weight"):
        build(kind, {**fx, "state_dict": broken})


def test_checkpoint_layout_and_ema_preference():
    from snngen.importers import find_weights
    from snngen.importers.sddpm import WEIGHT_KEYS

    fx = load_fixture("diffusion_unet")
    sd = fx["state_dict"]
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    # SDDPM's main_SDDPM.py: {"net_model", "optim", "step", "x_T"}
    assert find_weights({"net_model": sd, "optim": {}, "step": 5, "x_T": fx["x"]},
                        WEIGHT_KEYS) is sd  # fmt: skip
    # SDM's released checkpoints also hold the EMA copy, which is preferred
    assert find_weights({"net_model": sd, "ema_model": ema}, WEIGHT_KEYS) is ema
    dp = {"module." + k: v for k, v in sd.items()}  # saved from a DataParallel wrapper
    model = build("plain", {**fx, "state_dict": dp})
    model.eval()
    assert_matches(model.unet(fx["x"], fx["t"]), fx["eval_eps"], "eval eps via module.")
