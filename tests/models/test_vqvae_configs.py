"""The spiking VQ-VAE configs: every one validates, the paper ones hold the paper's numbers, the
priors point at their stage-1 configs, and the CPU-small ones build and take a training step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from snngen.config import load_config, save_config, to_dict
from snngen.models import DataInfo, build_model
from snngen.runs import CONFIG_FILE, build_checked_model
from snngen.training import fit, make_optimizer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STAGE1 = sorted(CONFIGS.glob("vqvae_*.yaml"))
PRIORS = sorted(CONFIGS.glob("vq_prior_*.yaml"))
SMALL = [p for p in STAGE1 if p.stem.endswith("_small")]
PAPER_DISC_START = {"celeba": 30001, "lsun_bedroom": 30001, "nmnist": 4685}
# the original's units: Lightning's global_step (two optimiser steps per batch) for the image
# configs; N-MNIST's original starts the discriminator by epoch (5 epochs = 4685 batches)
PAPER_DISC_UNIT = {"celeba": "optimizer_steps", "lsun_bedroom": "optimizer_steps",
                   "nmnist": "batches"}
# time steps: LSUN bedroom follows the released yaml (T=2; the paper's table says 6)
PAPER_TIME_STEPS = {"celeba": 4, "lsun_bedroom": 2, "nmnist": 4}


def small_info(cfg) -> DataInfo:
    """The data shape a small config trains on, without loading the data set."""
    size = cfg.data.image_size
    if cfg.data.name.endswith("_saccade"):
        return DataInfo(2, size, events=True, time_bins=cfg.data.options.get("time_bins", 4))
    assert cfg.data.name == "mnist5k"
    return DataInfo(1, size)


def random_batch(info: DataInfo, b: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if info.events:
        return torch.randint(0, 4, (info.time_bins, b, 2, info.image_size, info.image_size),
                             generator=g).float()
    return torch.rand(b, info.channels, info.image_size, info.image_size, generator=g)


def test_the_expected_configs_exist():
    names = {p.stem for p in STAGE1 + PRIORS}
    for ds in PAPER_DISC_START:
        assert {f"vqvae_{ds}", f"vq_prior_{ds}"} <= names
    for cb in ("temporal", "vanilla"):
        for ds in ("mnist5k", "saccade"):
            assert {f"vqvae_{cb}_{ds}_small", f"vq_prior_{cb}_{ds}_small"} <= names


@pytest.mark.parametrize("path", STAGE1 + PRIORS, ids=lambda p: p.stem)
def test_config_validates(path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    assert cfg.model.name == ("vq_prior" if path.stem.startswith("vq_prior") else "vqvae")


@pytest.mark.parametrize("dataset", sorted(PAPER_DISC_START))
def test_paper_configs_hold_the_paper_numbers(dataset):
    cfg = load_config(CONFIGS / f"vqvae_{dataset}.yaml")
    m = cfg.model
    assert (m.embed_dim, m.n_embed, m.num_res_blocks) == (256, 1024, 2)
    assert m.time_steps == PAPER_TIME_STEPS[dataset]
    assert (m.codebook, m.disc_weight, m.disc_loss, m.beta) == ("temporal", 0.8, "hinge", 0.25)
    assert m.disc_start == PAPER_DISC_START[dataset]
    assert m.disc_start_unit == PAPER_DISC_UNIT[dataset]
    assert (cfg.optim.name, cfg.optim.betas) == ("adam", [0.5, 0.9])
    param = [torch.nn.Parameter(torch.zeros(1))]
    for world in (1, 4):  # base_lr 4.5e-6 x batch x devices
        lr = make_optimizer(cfg, param, {}, world).param_groups[0]["lr"]
        assert lr == pytest.approx(4.5e-6 * cfg.data.batch_size * world)
    if dataset == "nmnist":
        assert m.perceptual_weight == 0 and cfg.data.options["time_bins"] == m.time_steps
    prior = load_config(CONFIGS / f"vq_prior_{dataset}.yaml").model
    assert (prior.n_layer, prior.n_head, prior.n_embd, prior.time_steps) == (24, 16, 1024, 2)


@pytest.mark.parametrize("path", PRIORS, ids=lambda p: p.stem)
def test_prior_configs_point_at_their_stage1_config(path):
    cfg = load_config(path)
    stage1_dir = Path(cfg.model.stage1_run)
    stage1 = load_config(CONFIGS / f"{stage1_dir.name}.yaml")
    assert stage1.name == stage1_dir.name and Path(stage1.out_dir) == stage1_dir.parent
    same = ("name", "root", "image_size", "options")  # the prior trains on stage 1's data
    assert {k: to_dict(cfg.data)[k] for k in same} == {k: to_dict(stage1.data)[k] for k in same}
    assert (cfg.optim.name, cfg.optim.betas, cfg.optim.weight_decay) == ("adamw", [0.9, 0.95], 0.01)


def test_small_temporal_and_vanilla_configs_differ_only_in_the_codebook():
    for ds in ("mnist5k", "saccade"):
        t = to_dict(load_config(CONFIGS / f"vqvae_temporal_{ds}_small.yaml"))
        v = to_dict(load_config(CONFIGS / f"vqvae_vanilla_{ds}_small.yaml"))
        assert t["model"].pop("codebook") == "temporal" and v["model"].pop("codebook") == "vanilla"
        t.pop("name"), v.pop("name")
        assert t == v


@pytest.mark.parametrize("path", SMALL, ids=lambda p: p.stem)
def test_small_stage1_configs_build_and_train_a_step(path):
    cfg = load_config(path)
    info = small_info(cfg)
    torch.manual_seed(0)
    model = build_model(cfg.model, info).train()
    assert sum(p.numel() for p in model.parameters()) < 2_000_000  # CPU-small
    model.step.fill_(cfg.model.disc_start)  # the GAN terms are on
    out = model.loss(random_batch(info, 2))
    out["loss"].backward(retain_graph=True)
    out["loss_disc"].backward()
    assert torch.isfinite(out["loss"]) and out["d_weight"] > 0
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert model.discriminator.main[0].weight.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def small_stage1_runs(tmp_path_factory):
    """One-step runs of the small mnist5k stage-1 configs (random data, batch 2)."""
    root = tmp_path_factory.mktemp("small_stage1")
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SNNGEN_COMPILE", "0")
        for cb in ("temporal", "vanilla"):
            overrides = ["trainer.max_steps=1", "data.batch_size=2", "trainer.progress_bar=false",
                         "trainer.grids_every_epoch=false", "trainer.accelerator=cpu"]
            cfg = load_config(CONFIGS / f"vqvae_{cb}_mnist5k_small.yaml", overrides)
            info = small_info(cfg)
            data = TensorDataset(random_batch(info, 4), torch.zeros(4))
            run_dir = root / cfg.name
            run_dir.mkdir()
            save_config(cfg, run_dir / CONFIG_FILE)
            fit(cfg, run_dir, data, info)
            runs[cb] = run_dir
    return runs


@pytest.mark.parametrize("codebook", ["temporal", "vanilla"])
def test_small_prior_configs_build_on_their_stage1_run(small_stage1_runs, codebook):
    path = CONFIGS / f"vq_prior_{codebook}_mnist5k_small.yaml"
    cfg = load_config(path, [f"model.stage1_run={small_stage1_runs[codebook]}"])
    info = small_info(cfg)
    torch.manual_seed(0)
    prior = build_checked_model(cfg.model, info)
    # vanilla: the original's baseline prior, 64-token sequences, one per step (4 steps)
    assert prior.seq_len == 64 and prior.code_steps == (1 if codebook == "temporal" else 4)
    out = prior.train().loss(random_batch(info, 2))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    tokens = prior.eval().generate_tokens(2, torch.Generator().manual_seed(0))
    assert tokens.shape == (2, prior.stage1.tokens_per_sample)
    assert tokens.max() < prior.stage1.cfg.n_embed
    images = prior.stage1.decode_tokens(tokens)
    assert images.shape == (2, 1, 16, 16) and 0 <= images.min() and images.max() <= 1
