"""Sample generation: devices, per-shard seeding, resumable shard folders, several processes.

References: the shard seed is re-derived here from its spec (sha256 of the text), the expected
samples are drawn by hand with ``torch.rand`` / ``model.sample`` and that seed; the device
checks watch every random tensor a sampler creates (a TorchFunctionMode) with the model on the
``meta`` device.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from snngen.errors import SnngenError
from snngen.generation import (
    ShardPlan,
    ShardStore,
    generate_shards,
    make_generator,
    resolve_device,
    run_samples,
    sample_stream,
    shard_batches,
    shard_seed,
)
from snngen.models import DataInfo, GenerativeModel


class UniformModel(GenerativeModel):
    """``sample(n)`` = ``torch.rand(n, 1, 2, 2, generator)``: the samples are the raw draws."""

    name = "uniform"

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.calls: list[int] = []

    @torch.no_grad()
    def sample(self, n, *, generator=None):
        self.calls.append(n)
        return torch.rand(n, 1, 2, 2, generator=generator, device=self.scale.device) * self.scale


def by_hand(seed: int, index: int, length: int, batch: int) -> torch.Tensor:
    """Shard ``index``'s samples from the spec: one CPU generator seeded sha256-derived."""
    digest = hashlib.sha256(f"snngen-shard:{seed}:{index}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    sizes = [min(batch, length - k) for k in range(0, length, batch)]
    return torch.cat([torch.rand(b, 1, 2, 2, generator=gen) for b in sizes])


# ----------------------------------------------------------------------------- devices



def die_at_shard(monkeypatch, dying: int):
    """Make writing shard ``dying`` raise KeyboardInterrupt (a kill); return the real write."""
    real_write = ShardStore.write

    def write_then_die(self, index, images):
        if index == dying:
            raise KeyboardInterrupt
        return real_write(self, index, images)

    monkeypatch.setattr(ShardStore, "write", write_then_die)
    return real_write

def test_resolve_device_on_a_machine_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    for bad, words in (("cuda", "no CUDA GPU"), ("cuda:1", "no CUDA GPU"), ("tpu", "auto, cpu")):
        with pytest.raises(SnngenError, match=words) as err:
            resolve_device(bad)
        assert "\n" not in str(err.value)


def test_resolve_device_with_two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(SnngenError, match="2 GPU"):
        resolve_device("cuda:2")


def test_the_shard_generator_is_made_on_the_model_device(monkeypatch):
    """A model on cuda:1 gets a generator made on cuda:1 (torch.Generator recorded: there is no
    GPU here), seeded with the shard's seed; on meta (no values) the global generator."""
    made = []

    class FakeGenerator:
        def __init__(self, device="cpu"):
            self.device = torch.device(device)
            made.append(self)

        def manual_seed(self, seed):
            self.seed = seed
            return self

    monkeypatch.setattr(torch, "Generator", FakeGenerator)
    monkeypatch.setattr("snngen.generation.model_device", lambda m: torch.device("cuda", 1))
    seen = []

    class Recorder(GenerativeModel):
        def sample(self, n, *, generator=None):
            seen.append(generator)
            return torch.zeros(n, 1, 1, 1)

    list(shard_batches(Recorder(), ShardPlan(5, seed=7, shard_size=5, batch_size=2), 0))
    assert len(made) == 1 and made[0].device == torch.device("cuda", 1)
    assert made[0].seed == shard_seed(7, 0) and seen == [made[0]] * 3  # batches 2, 2, 1
    assert make_generator("meta", 3) is None


RANDOM = {"randn", "rand", "randint", "randn_like", "rand_like", "randint_like", "multinomial",
          "normal", "bernoulli", "randperm", "poisson", "normal_", "uniform_", "bernoulli_",
          "exponential_", "random_"}


class RandomCalls(TorchFunctionMode):
    """Records the device of every random tensor created inside the block."""

    def __init__(self):
        super().__init__()
        self.devices: list[tuple[str, torch.device]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name in RANDOM and isinstance(out, torch.Tensor):
            self.devices.append((name, out.device))
        return out


def _families() -> dict:
    from snngen.config import build_run_config
    from snngen.models import build_model
    from snngen.models.prior import VQPrior

    def make(size, **m):
        cfg = build_run_config({"model": m}, check_eval=False)
        return build_model(cfg.model, DataInfo(channels=1, image_size=size))

    stage1 = make(8, name="vqvae", time_steps=2, ch=8, ch_mult=[1, 2], num_res_blocks=1,
                  attn_resolutions=[], z_channels=8, embed_dim=4, n_embed=16, num_groups=4,
                  disc_ndf=8, disc_layers=1, disc_start=1)
    prior_cfg = build_run_config({"model": {"name": "vq_prior", "n_layer": 1, "n_head": 1,
                                            "n_embd": 8, "stage1_run": "x"}}, check_eval=False)
    steps = 20
    gamma = torch.ones(steps, dtype=torch.float64)
    diffusion = make(8, name="sddpm", ch=8, ch_mult=[1, 2], num_res_blocks=1,
                     diffusion_steps=steps)
    return {
        "sae": (make(32, name="sae"), [{}]),
        "fsvae": (make(8, name="fsvae", channels=[4, 8], latent_dim=6, num_steps=3, k=4), [{}]),
        "ann_vae": (make(8, name="ann_vae", channels=[4, 8], latent_dim=6), [{}]),
        "vq_prior": (VQPrior(prior_cfg.model, DataInfo(channels=1, image_size=8), stage1), [{}]),
        "sddpm": (diffusion, [dict(solver="ddpm", steps=2), dict(solver="ddim", steps=2),
                              dict(solver="analytic-dpm", steps=2, gamma=gamma),
                              dict(solver="dpm-solver", steps=2)]),
    }


def test_every_sampler_creates_its_noise_on_the_model_device(monkeypatch):
    """Each family's ``sample`` with the model on ``meta``: every random tensor is born on meta
    (a CPU-made noise tensor would show up as 'cpu'), and so are the samples."""
    monkeypatch.setenv("SNNGEN_COMPILE", "0")
    for name, (model, option_sets) in _families().items():
        model = model.to("meta").eval()
        for options in option_sets:
            with RandomCalls() as calls:
                out = model.sample(2, **options)
            assert calls.devices, (name, options)  # the check saw the sampler's noise
            assert {d.type for _, d in calls.devices} == {"meta"}, (name, options, calls.devices)
            assert out.device.type == "meta", (name, options)


def test_diffusion_noise_from_a_generator_elsewhere_lands_on_the_model_device(monkeypatch):
    """diffusers' randn_tensor pattern: a CPU generator draws, the noise is placed on the model's
    device (meta here), so the sampler runs there."""
    monkeypatch.setenv("SNNGEN_COMPILE", "0")
    model, _ = _families()["sddpm"]
    model = model.to("meta").eval()
    with RandomCalls() as calls:
        out = model.sample(2, solver="ddpm", steps=2, generator=torch.Generator().manual_seed(0))
    assert out.device.type == "meta"
    assert {d.type for _, d in calls.devices} == {"cpu"}  # drawn by the CPU generator ...


# ----------------------------------------------------------------------------- seeding


def test_shard_seed_is_the_sha256_of_seed_and_index():
    for seed, index in ((0, 0), (0, 1), (5, 0), (2**62, 123)):
        digest = hashlib.sha256(f"snngen-shard:{seed}:{index}".encode()).digest()
        assert shard_seed(seed, index) == int.from_bytes(digest[:8], "little") >> 1
    assert len({shard_seed(0, i) for i in range(100)}) == 100


def test_samples_are_the_per_shard_draws_in_any_order(tmp_path):
    """n=7, shards of 3, batches of 2: the stream equals the by-hand draws of shards 0, 1, 2;
    writing the shards as 3 'ranks' in reverse order gives the same files."""
    model = UniformModel()
    plan = ShardPlan(7, seed=11, shard_size=3, batch_size=2)
    stream = torch.cat(list(sample_stream(model, plan, progress=False)))
    expected = torch.cat([by_hand(11, i, plan.length(i), 2) for i in range(3)])
    torch.testing.assert_close(stream, expected, rtol=0, atol=0)
    store = ShardStore(tmp_path / "s", plan, model, "snngen")
    store.prepare()
    for rank in (2, 1, 0):
        generate_shards(model, store, rank=rank, world=3, progress=False)
    assert [store.plan.length(i) for i in range(3)] == [3, 3, 1]
    got = torch.cat(list(store))
    torch.testing.assert_close(got, expected.half().float(), rtol=0, atol=0)  # float16 files
    assert (got - expected).abs().max() <= 2**-12


# ----------------------------------------------------------------------------- resume


def test_a_killed_generation_resumes_from_its_shards(tmp_path, monkeypatch):
    model = UniformModel()
    plan = ShardPlan(10, seed=3, shard_size=2, batch_size=2)
    whole = ShardStore(tmp_path / "whole", plan, model, "snngen")
    run_samples(model, whole, progress=False)
    reference = torch.cat(list(whole))

    store = ShardStore(tmp_path / "killed", plan, model, "snngen")
    real_write = die_at_shard(monkeypatch, 3)
    model.calls.clear()
    with pytest.raises(KeyboardInterrupt):
        run_samples(model, store, progress=False)
    assert store.missing() == [3, 4] and len(model.calls) == 4  # shards 0-2, then 3 died
    monkeypatch.setattr(ShardStore, "write", real_write)
    mtimes = {i: store.path(i).stat().st_mtime_ns for i in range(3)}
    model.calls.clear()
    run_samples(model, store, progress=False)
    assert model.calls == [2, 2]  # only shards 3 and 4 drawn again
    assert {i: store.path(i).stat().st_mtime_ns for i in range(3)} == mtimes
    torch.testing.assert_close(torch.cat(list(store)), reference, rtol=0, atol=0)
    manifest = json.loads((store.folder / "manifest.json").read_text())
    assert {k: manifest[k] for k in ("seed", "n", "shard_size", "batch_size", "options", "dtype",
                                     "rng_device")} == {
        "seed": 3, "n": 10, "shard_size": 2, "batch_size": 2, "options": {}, "dtype": "float16",
        "rng_device": "cpu"}
    assert np.load(store.path(0)).dtype == np.float16


def test_the_progress_bar_counts_images_with_rate_and_time_left():
    """A resumed request starts at the images on disk (4 of 10), then counts 3 more."""
    from snngen.generation import ImageBar

    bar = ImageBar(10, 4, True)
    bar.update(3)
    text = str(bar.bar)
    bar.close()
    assert "7/10" in text and "img/s" in text and "<" in text  # done, rate, time left


def test_other_options_are_refused_in_one_line_and_n_is_not_an_option(tmp_path):
    model = UniformModel()
    folder = tmp_path / "samples" / "snngen"
    run_samples(model, ShardStore(folder, ShardPlan(5, seed=1, shard_size=2), model),
                progress=False)
    with pytest.raises(SnngenError, match=r"another request \(seed 1, now 2\).*--fresh") as err:
        run_samples(model, ShardStore(folder, ShardPlan(5, seed=2, shard_size=2), model))
    assert "\n" not in str(err.value)
    with torch.no_grad():
        model.scale.fill_(0.5)  # other weights: refused too
    with pytest.raises(SnngenError, match="weights"):
        run_samples(model, ShardStore(folder, ShardPlan(5, seed=1, shard_size=2), model))
    model.calls.clear()
    longer = ShardStore(folder, ShardPlan(8, seed=1, shard_size=2), model)
    with pytest.raises(SnngenError):
        run_samples(model, longer)
    run_samples(model, longer, replace_stale=True, progress=False)
    assert model.calls == [2, 2, 2, 2]  # the stale shards were replaced
    with torch.no_grad():
        model.scale.fill_(1.0)
    model.calls.clear()
    store = run_samples(model, ShardStore(folder, ShardPlan(9, seed=1, shard_size=2), model),
                        fresh=True, progress=False)
    assert model.calls == [2] * 4 + [1]
    model.calls.clear()
    run_samples(model, ShardStore(folder, ShardPlan(12, seed=1, shard_size=2), model),
                progress=False)
    assert model.calls == [2, 2]  # a larger n: shard 4 (1 -> 2 images) and shard 5 only
    assert np.load(store.path(4)).shape == (2, 1, 2, 2)


# ----------------------------------------------------------------------------- processes


def _ann_vae_run(root: Path, size: int = 8) -> Path:
    """A run folder of a tiny ANN VAE trained one step on random images."""
    from torch.utils.data import TensorDataset

    from snngen.config import build_run_config, save_config
    from snngen.runs import CONFIG_FILE
    from snngen.training import fit

    cfg = build_run_config({
        "model": {"name": "ann_vae", "channels": [4, 8], "latent_dim": 6},
        "data": {"batch_size": 4, "image_size": size},
        "trainer": {"max_steps": 1, "accelerator": "cpu", "progress_bar": False,
                    "grids_every_epoch": False},
    }, check_eval=False)
    images = torch.rand(8, 1, size, size, generator=torch.Generator().manual_seed(0))
    data = TensorDataset(images, torch.zeros(8, dtype=torch.long))
    root.mkdir(parents=True)
    save_config(cfg, root / CONFIG_FILE)
    fit(cfg, root, data, DataInfo(channels=1, image_size=size))
    return root


@pytest.mark.slow
def test_two_gloo_processes_draw_the_samples_of_one(tmp_path):
    """n=8 in shards of 2 over 2 CPU processes (Lightning Fabric, gloo) = 1 process = by hand."""
    from snngen.runs import load_run

    run = load_run(_ann_vae_run(tmp_path / "run"))
    plan = ShardPlan(8, seed=5, shard_size=2, batch_size=2)
    env_before = dict(os.environ)
    two = run_samples(run.model, ShardStore(tmp_path / "two", plan, run.model), devices=2,
                      run_dir=run.path, progress=False)
    assert dict(os.environ) == env_before
    one = run_samples(run.model, ShardStore(tmp_path / "one", plan, run.model), progress=False)
    for i in range(plan.num_shards):
        assert np.array_equal(np.load(two.path(i)), np.load(one.path(i))), i
        gen = torch.Generator().manual_seed(shard_seed(5, i))
        torch.testing.assert_close(two.read(i), run.model.sample(2, generator=gen).half().float())


@pytest.mark.slow
def test_eval_cli_with_two_processes_resumes_after_a_kill(tmp_path):
    """``snngen eval RUN --devices 2`` (a subprocess, as a user runs it) writes metrics.json and
    its shards; with the last two shards gone (what a kill half-way leaves), ``--devices 1``
    draws only those, byte-identical to the two processes' ones, and the same KID."""
    run = _ann_vae_run(tmp_path / "run", size=32)  # mnist5k's cached 32-px classifier
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}

    def cli_eval(devices: int) -> dict:
        cmd = [sys.executable, "-m", "snngen.cli", "eval", str(run), "--metrics", "kid",
               "--n", "8", "--shard-size", "2", "--devices", str(devices), "--device", "cpu"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads((run / "metrics.json").read_text())

    first = cli_eval(2)
    folder = run / "samples" / "snngen"  # the default protocol
    shards = sorted(folder.glob("shard_*.npy"))
    assert len(shards) == 4 and (folder / "manifest.json").is_file()
    kept = {p: p.stat().st_mtime_ns for p in shards[:2]}
    lost = {p: np.load(p) for p in shards[2:]}
    for p in lost:
        p.unlink()
    second = cli_eval(1)
    assert {p: p.stat().st_mtime_ns for p in shards[:2]} == kept  # not drawn again
    for p, array in lost.items():
        assert np.array_equal(np.load(p), array), p
    assert second["kid"]["value"] == first["kid"]["value"]


@pytest.mark.slow
def test_the_end_of_a_ddp_training_run_draws_its_samples_on_both_ranks(tmp_path):
    """``snngen train ... trainer.devices=2`` (gloo): the end-of-run evaluation's 4 shards are
    drawn by the 2 ranks (ranks own 0, 2 and 1, 3) and equal a 1-process draw from the run."""
    import yaml

    from snngen.runs import load_run

    config = {
        "name": "ddp_eval", "out_dir": str(tmp_path),
        "model": {"name": "ann_vae", "channels": [4, 8], "latent_dim": 6},
        "data": {"name": "mnist5k", "image_size": 32, "batch_size": 4},
        "trainer": {"max_steps": 1, "accelerator": "cpu", "devices": 2, "strategy": "ddp",
                    "progress_bar": False, "grids_every_epoch": False},
        "eval": {"metrics": ["kid"], "n_samples": 8, "shard_size": 2, "batch_size": 2},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    for k in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "SNNGEN_RUN_DIR"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, "-m", "snngen.cli", "train", str(tmp_path / "c.yaml")],
                          capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = load_run(tmp_path / "ddp_eval")
    assert "kid" in json.loads((run.path / "metrics.json").read_text())
    plan = ShardPlan(8, seed=0, shard_size=2, batch_size=2)
    trained = ShardStore(run.path / "samples" / "snngen", plan, run.model)
    assert trained.missing() == []
    one = run_samples(run.model, ShardStore(tmp_path / "one", plan, run.model), progress=False)
    for i in range(4):
        assert np.array_equal(np.load(trained.path(i)), np.load(one.path(i))), i


# ----------------------------------------------------------------------------- commands


@pytest.mark.parametrize("argv", [
    ["sample", "RUN", "--device", "cuda"],
    ["eval", "RUN", "--device", "cuda:0"],
    ["eval", "RUN", "--device", "gpu"],
])
def test_a_device_this_machine_lacks_is_one_line_before_anything(argv, tmp_path, capsys,
                                                                 monkeypatch):
    from snngen.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    assert main([a.replace("RUN", str(tmp_path / "no_run")) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("snngen: error: --device") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # validated before the run folder is even opened


def test_more_devices_than_gpus_is_refused(monkeypatch):
    from snngen.devices import check_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_devices("cuda", 2) == torch.device("cuda")
    assert check_devices("cpu", 4) == torch.device("cpu")  # CPU processes: any number
    with pytest.raises(SnngenError, match="--devices 3: this machine has 2 GPU"):
        check_devices("auto", 3)


def test_finish_run_evaluates_where_the_model_is(tmp_path, monkeypatch):
    """No move to the CPU: the model stays on its device (meta here) and the fixed batch joins
    it, for the grids and for the evaluation."""
    import snngen.evaluation as ev
    from snngen.config import build_run_config

    seen = []
    monkeypatch.setattr(ev, "save_reconstructions",
                        lambda m, x, p: seen.append(("recon", ev.model_device(m), x.device)))
    monkeypatch.setattr(ev, "save_samples", lambda m, n, p: seen.append(("grid", m, n)))
    monkeypatch.setattr(ev, "evaluate_model",
                        lambda m, cfg, *a, samples=None, **k: seen.append(("eval", m, samples))
                        or {})
    monkeypatch.setattr(ev, "write_metrics", lambda result, path: None)
    model = UniformModel().to("meta")
    cfg = build_run_config({"model": {"name": "sae"}, "eval": {"metrics": ["kid"],
                                                                "n_samples": 8}},
                           check_eval=False)
    ev.finish_run(tmp_path, model, cfg, None, torch.zeros(2, 1, 2, 2))
    assert seen[0] == ("recon", torch.device("meta"), torch.device("meta"))
    assert seen[1][1] is model and seen[2][1] is model
    assert model.scale.device.type == "meta"
    assert seen[2][2].run_dir == tmp_path and seen[2][2].replace_stale


class QuadrantMeans(torch.nn.Module):
    """A cheap stand-in for Inception pool3: ``[B, C, H, W] -> [B, 4]`` quadrant means."""

    name = "quadrants"
    num_features = 4
    num_classes = 0
    batch_size = 500

    def forward(self, x):
        x = x.float().mean(1)
        h = x.shape[-1] // 2
        return torch.stack([x[:, :h, :h].mean((1, 2)), x[:, :h, h:].mean((1, 2)),
                            x[:, h:, :h].mean((1, 2)), x[:, h:, h:].mean((1, 2))], 1)

    def features_and_logits(self, x):
        return self(x), None


@pytest.mark.slow
def test_acceptance_sddpm_protocol_two_processes_killed_and_resumed(tmp_path, monkeypatch,
                                                                      capsys):
    """``snngen eval RUN --protocol sddpm --n 64 --devices 2`` on a CPU run (Inception replaced
    by a stand-in, there are no Inception weights here): killed after 2 of 4 shards, run again
    with 2 processes, it draws only shards 2 and 3, equal to the by-hand draws, and writes
    metrics.json with the protocol's name, version, sample count and reference split."""
    import snngen.metrics.inception as inception
    import snngen.metrics.protocols as protocols
    from snngen.cli import main
    from snngen.metrics.features import FeatureNet
    from snngen.runs import load_run

    net = type("QuadrantNet", (QuadrantMeans, FeatureNet), {})()
    monkeypatch.setattr(protocols, "protocol_network", lambda *a, **k: net)
    monkeypatch.setattr(protocols, "FEATURE_DIMS", {"classifier": 4, "inception": 4})
    monkeypatch.setattr(inception, "find_inception_weights", lambda *a, **k: "stand-in")
    monkeypatch.setenv("SNNGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = _ann_vae_run(tmp_path / "run", size=32)
    argv = ["eval", str(run), "--protocol", "sddpm", "--metrics", "fid,kid", "--n", "64",
            "--shard-size", "16", "--device", "cpu"]
    real_write = die_at_shard(monkeypatch, 2)
    assert main(argv) == 130  # killed half-way
    monkeypatch.setattr(ShardStore, "write", real_write)
    folder = run / "samples" / "sddpm"
    assert sorted(p.name for p in folder.glob("shard_*")) == ["shard_00000.npy",
                                                               "shard_00001.npy"]
    kept = {p: p.stat().st_mtime_ns for p in folder.glob("shard_*")}
    capsys.readouterr()
    assert main(argv + ["--devices", "2"]) == 0, capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished shards not redrawn
    model = load_run(run).model
    for i in range(4):
        gen = torch.Generator().manual_seed(shard_seed(0, i))  # eval.batch_size 250 > 16
        expected = model.sample(16, generator=gen).half().numpy()
        assert np.array_equal(np.load(folder / f"shard_{i:05d}.npy"), expected), i
    m = json.loads((run / "metrics.json").read_text())
    p = m["protocol"]
    assert (p["name"], p["n_samples"], p["reference_split"]) == ("sddpm", 64, "train")
    assert "version" in p and m["fid"]["n_fake"] == 64


def test_reconstruction_error_is_measured_on_the_model_device():
    """The test batches go to the model's device (meta) before reconstruct; the error is then
    taken on the CPU: zeros against x gives mean(x^2)."""
    from torch.utils.data import TensorDataset

    from snngen.evaluation import reconstruction_mse

    seen = []

    class Zeros(GenerativeModel):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones((), device="meta"))

        def reconstruct(self, x):
            seen.append(x.device)
            return torch.zeros(x.shape)

    x = torch.arange(24.0).reshape(6, 1, 2, 2) / 24
    out = reconstruction_mse(Zeros(), TensorDataset(x, torch.zeros(6)), 6, 4)
    assert seen == [torch.device("meta")] * 2
    assert out["n"] == 6 and out["value"] == pytest.approx(float((x**2).mean()), rel=1e-6)
