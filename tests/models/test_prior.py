"""Spiking transformer prior (stage 2): causality, exact key/value cache, sampling helpers,
training on a frozen stage-1 run folder, sample shapes and ranges."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from snngen.config import build_run_config, save_config
from snngen.errors import SnngenError
from snngen.models import DataInfo
from snngen.models.prior import PriorConfig, SpikingGPT, VQPrior, sample_logits
from snngen.runs import CONFIG_FILE, build_checked_model, load_run
from snngen.training import fit

STAGE1 = dict(
    name="vqvae",
    time_steps=2,
    ch=8,
    ch_mult=[1, 2],
    num_res_blocks=1,
    attn_resolutions=[],
    z_channels=8,
    embed_dim=4,
    n_embed=16,
    num_groups=4,
    disc_ndf=8,
    disc_layers=1,
    disc_start=1,
)


def train_stage1(run_dir, data, info, **model):
    cfg = build_run_config(
        {
            "model": {**STAGE1, **model},
            "data": {"batch_size": 4},
            "optim": {"name": "adam", "lr": 1e-3, "betas": [0.5, 0.9]},
            "trainer": {
                "max_steps": 2,
                "accelerator": "cpu",
                "progress_bar": False,
                "grids_every_epoch": False,
            },
        }
    )
    run_dir.mkdir(parents=True)
    save_config(cfg, run_dir / CONFIG_FILE)
    fit(cfg, run_dir, data, info)
    return run_dir


@pytest.fixture(scope="module")
def stage1_runs(tmp_path_factory):
    """Stage-1 run folders trained for 2 GAN steps: images (temporal, vanilla) and events."""
    root = tmp_path_factory.mktemp("stage1")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SNNGEN_COMPILE", "0")
        return _make_stage1_runs(root)


def _make_stage1_runs(root):
    g = torch.Generator().manual_seed(0)
    images = TensorDataset(torch.rand(8, 1, 8, 8, generator=g), torch.zeros(8))
    img_info = DataInfo(1, 8)
    events = TensorDataset(
        torch.randint(0, 2, (8, 2, 2, 8, 8), generator=g).float(), torch.zeros(8)
    )
    ev_info = DataInfo(2, 8, events=True, time_bins=2)
    return {
        "temporal": (train_stage1(root / "t", images, img_info), img_info),
        "vanilla": (train_stage1(root / "v", images, img_info, codebook="vanilla"), img_info),
        "events": (train_stage1(root / "e", events, ev_info), ev_info),
    }


def spiky_gpt(vocab=11, block=9, **kw) -> SpikingGPT:
    """A random GPT whose weights are large enough that every neuron group spikes."""
    cfg = PriorConfig(n_layer=2, n_head=2, n_embd=16, time_steps=3, **kw)
    gpt = SpikingGPT(cfg, vocab, block).double().eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in gpt.named_parameters():
            if "ln" not in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return gpt


def test_spiking_gpt_is_causal_and_attention_is_used():
    gpt = spiky_gpt()
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 11, (4, 9), generator=g)
    base = gpt(idx)
    assert base.shape == (4, 9, 11)
    for j in range(9):
        changed = idx.clone()
        changed[:, j] = (changed[:, j] + 1) % 11
        out = gpt(changed)
        assert torch.equal(out[:, :j], base[:, :j]), f"token {j} changed an earlier logit"
        assert not torch.equal(out[:, j], base[:, j])
    changed = idx.clone()
    changed[:, 0] = (changed[:, 0] + 1) % 11
    assert not torch.equal(gpt(changed)[:, -1], base[:, -1])  # information flows forward
    attn = gpt.blocks[0].attn
    x = torch.randn(3, 2, 9, 16, dtype=torch.float64)
    assert attn.q_neuron(attn.query(x)).mean() > 0.05  # the spiking q/k/v really spike


def test_cache_gives_the_training_forward_logits():
    gpt = spiky_gpt()
    idx = torch.randint(0, 11, (3, 9), generator=torch.Generator().manual_seed(2))
    full = gpt(idx)
    cache = gpt.new_cache()
    steps = [gpt(idx[:, i : i + 1], cache) for i in range(9)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-12, atol=1e-12)
    cache = gpt.new_cache()  # a prefix at once, then single tokens
    parts = [gpt(idx[:, :4], cache), gpt(idx[:, 4:5], cache), gpt(idx[:, 5:], cache)]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="block_size"):
        gpt(idx[:, :1], cache)


def test_sample_logits_temperature_and_top_k():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(2000, 1)
    assert torch.equal(sample_logits(logits, temperature=0), torch.ones(2000, dtype=torch.long))
    g = torch.Generator().manual_seed(0)
    top1 = sample_logits(logits, top_k=1, generator=g)
    assert torch.equal(top1, torch.ones(2000, dtype=torch.long))
    top2 = sample_logits(logits, top_k=2, generator=g)
    assert set(top2.tolist()) == {1, 3}
    p3 = torch.sigmoid(torch.tensor(-1.0)).item()  # P(token 3 | top-2) = e^2 / (e^2 + e^3)
    assert abs((top2 == 3).float().mean().item() - p3) < 0.04
    hot = sample_logits(logits, temperature=100.0, generator=g)  # nearly uniform
    assert (torch.bincount(hot, minlength=4) > 350).all()


@pytest.mark.parametrize("kind", ["temporal", "vanilla", "events"])
def test_prior_on_a_stage1_run(stage1_runs, kind):
    run_dir, info = stage1_runs[kind]
    torch.manual_seed(0)
    prior = build_checked_model(
        PriorConfig(stage1_run=str(run_dir), n_layer=1, n_head=2, n_embd=16, time_steps=2), info
    )
    assert isinstance(prior, VQPrior) and prior.stage1.discriminator is None
    stage1 = load_run(run_dir).model
    for k, v in stage1.state_dict().items():  # the run's (EMA-less) weights, frozen
        if not k.startswith("discriminator"):
            torch.testing.assert_close(prior.stage1.state_dict()[k], v)
    prior.train()
    assert not prior.stage1.training and prior.gpt.training
    decay, no_decay = prior.optimizer_groups()["loss"]  # minGPT's groups (the original's)
    assert {id(p) for p in decay["params"] + no_decay["params"]} == {
        id(p) for p in prior.gpt.parameters()
    }
    assert no_decay["weight_decay"] == 0.0
    x = torch.rand(3, 1, 8, 8) if not info.events else torch.randint(0, 2, (2, 3, 2, 8, 8)).float()
    out = prior.loss(x)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is None for p in prior.stage1.parameters())
    # frozen, as the original's first stage: no gradient is even recorded for its weights
    assert not any(p.requires_grad for p in prior.stage1.parameters())
    prior.eval()
    # vanilla: the original's baseline, one step's 16 codes per sequence, 2 steps per sample
    assert prior.seq_len == 16 and prior.code_steps == (2 if kind == "vanilla" else 1)
    s = prior.sample(5, generator=torch.Generator().manual_seed(0), top_k=4)
    if info.events:
        assert s.shape == (2, 5, 2, 8, 8) and s.min() >= 0 and s.max() <= 1
    else:
        assert s.shape == (5, 1, 8, 8) and s.min() >= 0 and s.max() <= 1
    assert prior.reconstruct(x).shape == x.shape


def test_vanilla_joint_mode(stage1_runs):
    """vanilla_mode: joint models the 2 steps of all 16 positions as one 32-token sequence."""
    run_dir, info = stage1_runs["vanilla"]
    torch.manual_seed(0)
    prior = build_checked_model(
        PriorConfig(stage1_run=str(run_dir), n_layer=1, n_head=2, n_embd=16, time_steps=2,
                    vanilla_mode="joint"), info
    )
    assert prior.seq_len == 32 and prior.code_steps == 1
    x = torch.rand(3, 1, 8, 8)
    tokens = prior.stage1.encode_tokens(x)
    logits = prior.gpt(prior._with_sos(tokens))
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, prior.vocab_size), tokens.flatten())
    torch.testing.assert_close(prior.loss(x)["loss"], ce)
    assert prior.eval().sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 8, 8)


@pytest.mark.parametrize("mode", ["independent", "joint"])
def test_cached_and_uncached_sampling_agree(stage1_runs, mode):
    run_dir, info = stage1_runs["vanilla"]
    torch.manual_seed(0)
    prior = build_checked_model(
        PriorConfig(stage1_run=str(run_dir), n_layer=2, n_head=2, n_embd=16, time_steps=2,
                    vanilla_mode=mode), info
    ).eval()
    # float64: the cached path multiplies [T, B, 1, C] where the uncached one multiplies
    # [T, B, N, C]; in float32 another processor's kernels could round the two differently in
    # the last bit and flip a spike (bit-identity is this machine's, not the contract)
    prior.gpt.double()
    with torch.no_grad():
        for name, p in prior.gpt.named_parameters():
            if "ln" not in name:
                p.mul_(20.0)  # spiking, input-dependent logits
    tokens = {}
    for use_cache in (True, False):
        gen = torch.Generator().manual_seed(7)
        tokens[use_cache] = prior.generate_tokens(6, gen, temperature=1.0, use_cache=use_cache)
    assert torch.equal(tokens[True], tokens[False])
    assert len(set(tokens[True].flatten().tolist())) > 3  # really random, not one token
    again = prior.generate_tokens(6, torch.Generator().manual_seed(8))
    assert not torch.equal(again, tokens[True])


def test_prior_errors(stage1_runs, tmp_path):
    run_dir, _ = stage1_runs["temporal"]
    with pytest.raises(SnngenError, match="stage1_run is not set"):
        build_checked_model(PriorConfig(n_layer=1, n_head=1, n_embd=8), DataInfo(1, 8))
    with pytest.raises(SnngenError, match="does not match"):
        build_checked_model(
            PriorConfig(stage1_run=str(run_dir), n_layer=1, n_head=1, n_embd=8), DataInfo(3, 8)
        )
    with pytest.raises(SnngenError, match="not a snngen run folder"):
        build_checked_model(
            PriorConfig(stage1_run=str(tmp_path), n_layer=1, n_head=1, n_embd=8), DataInfo(1, 8)
        )


# ----------------------------------------------------------------------------- benchmark


def _load_compare_benchmark():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "vqvae_compare.py"
    spec = importlib.util.spec_from_file_location("bench_vqvae_compare", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_compare_benchmark_rows(stage1_runs, tmp_path):
    import math

    from snngen.models.quantizers import codebook_usage

    bench = _load_compare_benchmark()
    stage1_dir, info = stage1_runs["temporal"]
    cfg = build_run_config(
        {
            "model": {"name": "vq_prior", "stage1_run": str(stage1_dir), "n_layer": 1,
                      "n_head": 2, "n_embd": 16, "time_steps": 2},
            "data": {"batch_size": 4},
            "trainer": {"max_steps": 1, "accelerator": "cpu", "progress_bar": False,
                        "grids_every_epoch": False},
        }
    )
    g = torch.Generator().manual_seed(5)
    x = torch.rand(12, 1, 8, 8, generator=g)
    test_set = TensorDataset(x, torch.zeros(12))
    prior_dir = tmp_path / "prior"
    prior_dir.mkdir()
    save_config(cfg, prior_dir / CONFIG_FILE)
    fit(cfg, prior_dir, test_set, info)
    features = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    rows = bench.compare([prior_dir, stage1_dir], n=12, n_recon=12, features=features,
                         batch_size=6, test_set=test_set)
    assert len(rows) == 1  # the stage-1 run is reported with its prior
    row = rows[0]
    prior = load_run(prior_dir).model
    stage1 = prior.stage1
    torch.testing.assert_close(
        row["recon_mse"], float(((stage1.reconstruct(x) - x) ** 2).mean()), rtol=1e-5, atol=0
    )
    tokens = stage1.encode_tokens(x)
    usage = codebook_usage(tokens, stage1.cfg.n_embed)
    assert math.isclose(row["perplexity"], usage["perplexity"], rel_tol=1e-9)
    assert (row["codes_used"], row["dead_codes"]) == (usage["used"], usage["dead"])
    with torch.no_grad():
        logits = prior.gpt(prior._with_sos(tokens))
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, prior.vocab_size), tokens.flatten()
        )
    assert math.isclose(row["bits_per_token"], ce.item() / math.log(2), rel_tol=1e-5)
    assert math.isfinite(row["fid"]) and row["n_samples"] == 12 and row["seconds_per_sample"] > 0
    stage1_only = bench.compare([stage1_dir], n_recon=12, batch_size=6, test_set=test_set)
    assert "fid" not in stage1_only[0]
    table = bench.format_table(rows + stage1_only)
    assert "temporal" in table and table.splitlines()[-1].rstrip().endswith("-")


def test_import_original_gpt_into_a_prior(stage1_runs):
    """``snngen import tts-prior``'s key map on a whole prior: the original's ``transformer.*``
    keys land in ``gpt``; without ``first_stage_model.*`` keys stage 1 keeps its run's weights."""
    from snngen.importers import ImportMismatch, load_original
    from snngen.importers.tts_prior import original_name

    run_dir, info = stage1_runs["temporal"]
    cfg = PriorConfig(stage1_run=str(run_dir), n_layer=1, n_head=2, n_embd=16, time_steps=2)
    torch.manual_seed(0)
    source = build_checked_model(cfg, info)
    torch.manual_seed(1)
    prior = build_checked_model(cfg, info)
    original = {"transformer." + original_name(k): v for k, v in source.gpt.state_dict().items()}
    original["transformer.blocks.0.attn.mask"] = torch.ones(1, 1, 16, 16)
    original["transformer.blocks.0.mlp.1.threshold"] = torch.tensor(0.5)
    stage1_before = {k: v.clone() for k, v in prior.stage1.state_dict().items()}
    load_original(prior, original, "tts-prior")
    for k, v in source.gpt.state_dict().items():
        assert torch.equal(prior.gpt.state_dict()[k], v)
    for k, v in stage1_before.items():
        assert torch.equal(prior.stage1.state_dict()[k], v)
    with pytest.raises(ImportMismatch, match="no place"):
        load_original(prior, {**original, "ema.x": torch.zeros(1)}, "tts-prior")
    # first_stage_model.* keys go through the tts-vqvae key map (stubbed here: identity)
    from snngen.importers import importer

    stage1 = {"first_stage_model." + k: torch.full_like(v, 0.25) if v.is_floating_point() else v
              for k, v in prior.stage1.state_dict().items()}
    calls = []

    def identity(sub, model):
        calls.append(model)
        return dict(sub)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(importer("tts-vqvae"), "convert", identity)
        load_original(prior, {**original, **stage1}, "tts-prior")
    assert calls == [prior.stage1]
    assert all((v == 0.25).all() for v in prior.stage1.state_dict().values()
               if v.is_floating_point())


def test_adamw_gets_mingpt_groups():
    """The trainer's optimiser over ``optimizer_groups()``: Linear weights decay with
    ``optim.weight_decay``, everything else with 0 (the original's minGPT groups)."""
    from snngen.training import make_optimizer

    cfg = build_run_config({"model": {"name": "vq_prior", "stage1_run": "unused"},
                            "optim": {"name": "adamw", "lr": 1e-3, "betas": [0.9, 0.95],
                                      "weight_decay": 0.01}})
    gpt = SpikingGPT(PriorConfig(n_layer=1, n_head=2, n_embd=8), 5, 4)
    opt = make_optimizer(cfg, gpt.param_groups(), {}, 1)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert all(g["betas"] == (0.9, 0.95) for g in opt.param_groups)
    linear = {id(m.weight) for m in gpt.modules() if isinstance(m, torch.nn.Linear)}
    assert {id(p) for p in opt.param_groups[0]["params"]} == linear
    assert len(opt.param_groups[1]["params"]) == len(list(gpt.parameters())) - len(linear)
