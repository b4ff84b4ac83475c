"""The Python API (``snngen.train | load | sample | evaluate | leaderboard``) runs the command
line's code paths: the same run folders, weights, samples and metrics, the same one-line errors.

One tiny SAE run is trained through ``snngen.train`` and one through ``snngen train`` with the
same overrides (module-scoped), and one tiny DDPM run for the samplers.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import snngen
from snngen.api import format_overrides
from snngen.cli import main
from snngen.config import apply_overrides
from snngen.errors import ConfigError, SnngenError
from snngen.generation import make_generator, shard_seed
from snngen.results import latest
from snngen.runs import checkpoint_path, load_run, model_weights, read_checkpoint

REPO = Path(__file__).resolve().parents[1]
SAE_CONFIG = "configs/sae_mnist5k.yaml"
DDPM_CONFIG = "configs/ddpm_mnist5k_small.yaml"

#: a tiny SAE run: 3 steps of 8 digits, EMA on, mse and fid (classifier) of 16 samples at the end
TINY_SAE = {
    "model.channels": [4, 8, 8], "model.latent_dim": 4, "model.num_steps": 2,
    "data.batch_size": 8, "data.num_workers": 0, "trainer.max_steps": 3,
    "trainer.accelerator": "cpu", "trainer.progress_bar": False,
    "trainer.grids_every_epoch": False, "trainer.ckpt_every_n_steps": 1000,
    "trainer.ema_decay": 0.5, "eval.n_samples": 16, "eval.batch_size": 16,
    "eval.metrics": ["mse", "fid"],
}
#: the same, as ``snngen train`` key=value arguments (written by hand, not by the API)
TINY_SAE_ARGS = [
    "model.channels=[4,8,8]", "model.latent_dim=4", "model.num_steps=2",
    "data.batch_size=8", "data.num_workers=0", "trainer.max_steps=3",
    "trainer.accelerator=cpu", "trainer.progress_bar=false",
    "trainer.grids_every_epoch=false", "trainer.ckpt_every_n_steps=1000",
    "trainer.ema_decay=0.5", "eval.n_samples=16", "eval.batch_size=16",
    "eval.metrics=[mse,fid]",
]
#: a tiny DDPM run (8 diffusion steps, 2 training steps, no evaluation)
TINY_DDPM = {
    "model.ch": 8, "model.num_res_blocks": 1, "model.diffusion_steps": 8,
    "model.sample_steps": 2, "data.batch_size": 4, "data.num_workers": 0,
    "trainer.max_steps": 2, "trainer.accelerator": "cpu", "trainer.progress_bar": False,
    "trainer.grids_every_epoch": False,
}


def feature_cache(tmp_path_factory, request) -> Path:
    """A private ``$SNNGEN_CACHE`` holding the mnist5k feature classifier, taken from pytest's
    cache (shared with tests/configs/test_every_config.py) or the user's snngen cache; one
    trained here (about 30 s, once) is put back into pytest's cache."""
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    shared = (Path(cache.mkdir("snngen-bundled-classifiers")) if cache is not None
              else tmp_path_factory.mktemp("bundled-classifiers"))
    user = Path(os.environ.get("SNNGEN_CACHE") or Path.home() / ".cache" / "snngen")
    private = tmp_path_factory.mktemp("snngen-cache")
    (private / "classifiers").mkdir()
    for folder in (user / "classifiers", shared):
        for f in folder.glob("mnist5k_*.pt"):
            if not (private / "classifiers" / f.name).exists():
                shutil.copy2(f, private / "classifiers" / f.name)
    return private


def keep_classifiers(private: Path, request) -> None:
    """Copy classifiers trained into ``private`` back to pytest's cache."""
    cache = getattr(request.config, "cache", None)
    if cache is None:
        return
    shared = Path(cache.mkdir("snngen-bundled-classifiers"))
    for f in (private / "classifiers").glob("mnist5k_*.pt"):
        if not (shared / f.name).exists():
            shutil.copy2(f, shared / f.name)


@pytest.fixture(scope="module")
def work(tmp_path_factory, request):
    """A working folder with ``configs`` (the repository's) and a private feature cache; the
    module's tests run inside it."""
    root = tmp_path_factory.mktemp("api")
    (root / "configs").symlink_to(REPO / "configs")
    cache = feature_cache(tmp_path_factory, request)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("SNNGEN_CACHE", str(cache))
        yield root
    keep_classifiers(cache, request)


@pytest.fixture(scope="module")
def sae_runs(work):
    """``(run, cli_dir)``: the tiny SAE trained by ``snngen.train`` (a dict of overrides plus
    keyword overrides) and by ``snngen train`` with the same overrides."""
    run = snngen.train(SAE_CONFIG, {k: v for k, v in TINY_SAE.items() if k != "trainer.max_steps"},
                       trainer__max_steps=3, name="api")
    assert main(["train", SAE_CONFIG, *TINY_SAE_ARGS, "name=cli"]) == 0
    return run, work / "runs" / "cli"


@pytest.fixture(scope="module")
def ddpm_run(work):
    """The tiny DDPM run (``snngen.train``, no evaluation)."""
    return snngen.train(DDPM_CONFIG, TINY_DDPM, evaluate=False, name="ddpm")


def cli_error(capsys, argv) -> str:
    """The one line ``snngen`` prints for a user error (exit status 2)."""
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def without_seconds(metrics: dict) -> dict:
    """One evaluation's result without what differs between two runs of it (time taken, when)
    and the command that made it (provenance: ``snngen eval ...`` or ``snngen.evaluate(...)``;
    the rest of the provenance must agree)."""
    out = {k: v for k, v in metrics.items() if k not in ("seconds", "measured_at")}
    if isinstance(out.get("provenance"), dict):
        out["provenance"] = {k: v for k, v in out["provenance"].items() if k != "command"}
    return out


def without_command(config_text: str) -> str:
    """A config.yaml without its header's command line (the CLI's and the API's differ)."""
    return "\n".join(line for line in config_text.splitlines()
                     if not line.startswith("#   command:"))


# ----------------------------------------------------------------------------- the package


def test_import_is_cheap_and_exports_the_api():
    code = ("import sys, snngen; print(sorted(snngen.__all__)); "
            "print(any(m in sys.modules for m in ('torch', 'lightning', 'snngen.api')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == str(sorted(["__version__", "evaluate", "leaderboard", "load", "plot",
                                 "sample", "train"]))
    assert out[1] == "False"  # torch loads on first use of a function
    import snngen.api as api

    assert snngen.load is api.load and snngen.sample is api.sample
    assert snngen.evaluate is api.evaluate and snngen.leaderboard is api.leaderboard
    from snngen.training import fit  # the harness module does not shadow the function

    assert snngen.train is api.train and fit.__module__ == "snngen.training"
    for fn in (api.train, api.load, api.sample, api.evaluate, api.leaderboard):
        assert fn.__doc__ and fn.__annotations__, fn.__name__
    assert "snngen.board.run_leaderboard" in api.leaderboard.__doc__


# ----------------------------------------------------------------------------- overrides


def test_overrides_round_trip_through_apply_overrides():
    values = {
        "trainer.max_steps": 100, "model.channels": [4, 8, 8], "optim.lr": 1e-5,
        "optim.betas": (0.9, 0.999), "trainer.ema_decay": None, "trainer.progress_bar": False,
        "data.augment": [], "name": "1", "out_dir": Path("runs/x"), "eval.n_samples": 1.5e3,
        "data.options": {"fit": "pad", "limit": None, "flags": [True, "no"]},
        "model.neuron": "a: b", "eval.ref_stats": "", "model.scale": float("inf"),
        "trainer.seed": np.int64(7),
    }
    kwargs = {k.replace(".", "__"): v for k, v in values.items()}
    expected = {
        "trainer": {"max_steps": 100, "ema_decay": None, "progress_bar": False, "seed": 7},
        "model": {"channels": [4, 8, 8], "neuron": "a: b", "scale": float("inf")},
        "optim": {"lr": 1e-5, "betas": [0.9, 0.999]},
        "data": {"augment": [], "options": {"fit": "pad", "limit": None,
                                            "flags": [True, "no"]}},
        "name": "1", "out_dir": "runs/x", "eval": {"n_samples": 1500.0, "ref_stats": ""},
    }
    by_kwargs = apply_overrides({}, format_overrides(**kwargs))
    by_dict = apply_overrides({}, format_overrides(values))
    assert by_kwargs == by_dict == expected
    assert type(by_kwargs["optim"]["lr"]) is float and type(by_kwargs["name"]) is str
    assert type(by_kwargs["trainer"]["seed"]) is int
    # the list form is passed as it is; keyword overrides come last, so they win
    assert format_overrides(["a.b=1"], a__b=2) == ["a.b=1", "a.b=2"]
    assert apply_overrides({}, format_overrides({"a.b": 1}, a__b=[2]))["a"]["b"] == [2]


@pytest.mark.parametrize("bad", [torch.zeros(2), object(), 1j])
def test_override_value_yaml_cannot_hold(bad):
    with pytest.raises(ConfigError, match=r"^override model\.channels: a \w+ value cannot"):
        format_overrides(model__channels=bad)


def test_overrides_of_a_wrong_form():
    with pytest.raises(ConfigError, match="expected a list of key=value strings or a dict"):
        format_overrides("trainer.max_steps=3")
    with pytest.raises(ConfigError, match=r"override 3: expected a key=value string"):
        format_overrides([3])


# ----------------------------------------------------------------------------- train


def test_train_is_snngen_train(sae_runs, work):
    """Same overrides, same code: identical weights, metadata, config and metrics."""
    run, cli_dir = sae_runs
    assert run.path == Path("runs/api") and run.cfg.trainer.max_steps == 3
    api_ckpt = read_checkpoint(checkpoint_path(run.path))
    cli_ckpt = read_checkpoint(checkpoint_path(cli_dir))
    assert api_ckpt["snngen"]["batches_seen"] == cli_ckpt["snngen"]["batches_seen"] == 3
    a, c = api_ckpt["state_dict"], cli_ckpt["state_dict"]
    assert a.keys() == c.keys() and any(k.startswith("ema.model.") for k in a)
    for key in a:
        assert torch.equal(a[key], c[key]), key
    config = (run.path / "config.yaml").read_text()
    assert without_command(config.replace("name: api", "name: cli")) == without_command(
        (cli_dir / "config.yaml").read_text())
    assert "#   command: snngen.train('configs/sae_mnist5k.yaml'" in config
    written = latest(json.loads((run.path / "metrics.json").read_text()))
    assert json.loads(json.dumps(run.metrics)) == written
    assert {"mse", "fid"} <= set(written) and written["fid"]["n_fake"] == 16
    cli_metrics = latest(json.loads((cli_dir / "metrics.json").read_text()))
    assert without_seconds(written) == without_seconds(cli_metrics)
    for name in ("recon.png", "samples.png"):
        assert (run.path / name).is_file()


def test_train_returns_the_loaded_run(sae_runs):
    run, _ = sae_runs
    assert run.model.run is run and not run.model.training
    again = load_run(run.path)
    assert run.info == again.info and run.meta["batches_seen"] == again.meta["batches_seen"]
    for key, value in again.model.state_dict().items():
        assert torch.equal(run.model.state_dict()[key], value), key


def test_train_refuses_a_bad_override_as_the_cli_does(work, capsys):
    before = sorted(p.name for p in (work / "runs").iterdir()) if (work / "runs").exists() else []
    with pytest.raises(ConfigError) as err:
        snngen.train(SAE_CONFIG, trainer__max_step=3)
    assert "trainer.max_step: unknown key" in str(err.value)
    assert f"snngen: error: {err.value}" == cli_error(
        capsys, ["train", SAE_CONFIG, "trainer.max_step=3"])
    with pytest.raises(ConfigError, match=r"config file not found: configs/nope\.yaml"):
        snngen.train("configs/nope.yaml")
    after = sorted(p.name for p in (work / "runs").iterdir()) if (work / "runs").exists() else []
    assert after == before  # nothing written


# ----------------------------------------------------------------------------- load


def test_load_gives_the_runs_ema_weights(sae_runs):
    run, _ = sae_runs
    state = read_checkpoint(checkpoint_path(run.path))["state_dict"]
    model = snngen.load(run.path)
    reference = load_run(run.path).model.state_dict()
    got = model.state_dict()
    assert got.keys() == reference.keys()  # model.run is no submodule: the state is unchanged
    ema = model_weights(state, ema=True)
    for key in reference:
        assert torch.equal(got[key], reference[key]) and torch.equal(got[key], ema[key]), key
    assert "run" not in dict(model.named_modules()) and not model.training
    assert model.run.path == run.path and model.run.cfg.model.name == "sae"
    raw = snngen.load(run.path, ema=False).state_dict()
    trained = model_weights(state, ema=False)
    assert all(torch.equal(raw[k], trained[k]) for k in raw)
    assert any(not torch.equal(raw[k], got[k]) for k in raw)  # EMA 0.5 after 3 steps differs
    assert model.sample(3).shape == (3, 1, 32, 32)
    twin = copy.deepcopy(model)  # the checked sample and the run follow the copy
    assert twin.sample.model is twin and twin.run.model is twin


def test_load_refuses_what_is_not_a_run(tmp_path, capsys):
    with pytest.raises(SnngenError) as err:
        snngen.load(tmp_path / "nope")
    nope = tmp_path / "nope"
    assert str(err.value) == f"{nope} is not a snngen run folder (no config.yaml in it)"
    assert f"snngen: error: {err.value}" == cli_error(capsys, ["sample", str(tmp_path / "nope")])
    # the API names its keyword argument (the command line says --device cuda:7)
    with pytest.raises(SnngenError, match="^device='cuda:7': this machine has no CUDA GPU; "
                                          "use device='cpu'"):
        snngen.load(tmp_path, device="cuda:7")


# ----------------------------------------------------------------------------- sample


def test_sample_is_snngen_sample(ddpm_run, work):
    """``model.sample(n, solver=..., steps=...)``, ``snngen.sample`` and ``snngen sample``
    draw the same images for one seed."""
    assert main(["sample", str(ddpm_run.path), "--n", "6", "--batch-size", "8", "--seed", "3",
                 "--solver", "dpm-solver", "--steps", "3", "--out", "cli.npy"]) == 0
    cli = torch.from_numpy(np.load(work / "cli.npy"))
    api = snngen.sample(ddpm_run.path, 6, seed=3, solver="dpm-solver", steps=3)
    model = snngen.load(ddpm_run.path)
    direct = model.sample(6, generator=make_generator("cpu", shard_seed(3, 0)),
                          solver="dpm-solver", steps=3)
    assert cli.shape == api.shape == direct.shape == (6, 1, 16, 16)
    assert torch.equal(api, cli) and torch.equal(direct, cli)
    assert 0 <= float(cli.min()) and float(cli.max()) <= 1
    assert torch.equal(snngen.sample(model, 6, seed=3, solver="dpm-solver", steps=3), cli)
    assert not torch.equal(snngen.sample(model, 6, seed=4, solver="dpm-solver", steps=3), cli)
    assert not torch.equal(snngen.sample(model, 6, seed=3, solver="ddim", steps=3), cli)


@pytest.mark.parametrize(("options", "flags", "message"), [
    ({"steps": 9}, ["--steps", "9"], "steps 9: the model was trained with 8 diffusion steps"),
    ({"solver": "euler"}, ["--solver", "euler"], "solver euler: unknown sampler"),
    ({"threshold_scale": 0.0}, ["--threshold-scale", "0"], "threshold_scale 0"),
    ({"temperature": 1.0}, ["--temperature", "1"], "temperature does not apply"),
])
def test_sample_options_are_checked_as_the_cli_checks_them(ddpm_run, capsys, options, flags,
                                                           message):
    """The command's line, naming the keyword argument where the command names its flag."""
    model = snngen.load(ddpm_run.path)
    line = cli_error(capsys, ["sample", str(ddpm_run.path), "--n", "2", *flags,
                              "--out", "x.npy"])
    for call in (lambda: model.sample(2, **options),
                 lambda: snngen.sample(ddpm_run.path, 2, **options)):
        with pytest.raises(SnngenError) as err:
            call()
        assert str(err.value).startswith(message) and "--" not in str(err.value)
        keyword = next(iter(options))  # the same sentence, the flag for the keyword
        assert line == f"snngen: error: {flags[0]}{str(err.value)[len(keyword):]}"


def test_sample_refuses_bad_counts(ddpm_run):
    model = snngen.load(ddpm_run.path)
    for call in (lambda: model.sample(0), lambda: snngen.sample(model, 0)):
        with pytest.raises(SnngenError, match=r"^n 0: must be a whole number >= 1"):
            call()
    with pytest.raises(SnngenError, match=r"^seed -1: must be a whole number in"):
        snngen.sample(model, 2, seed=-1)


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_is_snngen_eval(sae_runs, work, capsys):
    """Same options on runs of identical weights: the same metrics.json numbers; the run
    folder, a Run and a loaded model evaluate alike."""
    run, cli_dir = sae_runs
    # seed 1: not the end-of-run evaluation's samples (refused without fresh, as the CLI)
    with pytest.raises(SnngenError, match="holds samples of another request"):
        snngen.evaluate(run.path, "mse,fid", n=16, seed=1, batch_size=8, out="api.json")
    got = snngen.evaluate(run.path, "mse,fid", n=16, seed=1, batch_size=8, out="api.json",
                          fresh=True)
    capsys.readouterr()
    assert main(["eval", str(cli_dir), "--metrics", "mse,fid", "--n", "16", "--seed", "1",
                 "--batch-size", "8", "--out", "cli.json", "--fresh"]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = latest(json.loads((work / "api.json").read_text()))
    assert json.loads(json.dumps(got)) == written
    cli = latest(json.loads((work / "cli.json").read_text()))
    assert without_seconds(written) == without_seconds(cli) == without_seconds(printed)
    assert written["fid"]["n_fake"] == 16 and written["mse"]["n"] == 16
    assert written["protocol"]["name"] == "snngen"
    from_model = snngen.evaluate(snngen.load(run.path), ["mse", "fid"], n=16, seed=1,
                                 batch_size=8, out="model.json")
    assert without_seconds(from_model) == without_seconds(written)
    assert (run.path / "samples" / "snngen").is_dir()  # shards kept in the run folder


def test_evaluate_writes_run_metrics_with_sample_options(ddpm_run):
    model = snngen.load(ddpm_run.path)
    got = snngen.evaluate(model, ["fid"], protocol="snngen", n=16, solver="ddim", steps=2)
    assert got["sample_options"] == {"solver": "ddim", "steps": 2}
    assert json.loads((ddpm_run.path / "metrics.json").read_text())["fid"] == got["fid"]


def test_evaluate_refuses_bad_requests_as_the_cli_does(sae_runs, capsys, tmp_path,
                                                       monkeypatch):
    """Refused before any sample is drawn, with the command's line."""
    monkeypatch.delenv("SNNGEN_INCEPTION_LOGITS", raising=False)
    run, _ = sae_runs
    cases = [  # (keyword arguments, the command's flags, the API's line, the command's line)
        ({"metrics": "mse,foo"}, ["--metrics", "mse,foo"], "metrics: unknown ['foo']",
         "--metrics: unknown ['foo']"),
        ({"metrics": "is", "protocol": "sddpm"}, ["--metrics", "is", "--protocol", "sddpm"],
         "metrics is: the Inception Score ('is') on Inception features needs",
         "--metrics is: the Inception Score ('is') on Inception features needs"),
        ({"metrics": ["fid"], "ref_stats": "nope.npz"},
         ["--metrics", "fid", "--ref-stats", "nope.npz"], "ref_stats nope.npz: no such file",
         "--ref-stats nope.npz: no such file"),
    ]
    for kwargs, flags, message, cli_message in cases:
        line = cli_error(capsys, ["eval", str(run.path), *flags])
        with pytest.raises(SnngenError) as err:
            snngen.evaluate(run.path, **kwargs)
        assert str(err.value).startswith(message) and "--" not in str(err.value), err.value
        assert line.startswith(f"snngen: error: {cli_message}")
    with pytest.raises(SnngenError, match=r"^n 0: must be a whole number >= 1"):
        snngen.evaluate(run.path, "mse", n=0)
    with pytest.raises(SnngenError, match="is not a snngen run folder"):
        snngen.evaluate(tmp_path, "mse")
    bare = load_run(run.path).model
    with pytest.raises(SnngenError, match=r"has no run folder; pass a run folder"):
        snngen.evaluate(bare, "mse")


def test_api_errors_name_keyword_arguments_not_flags(sae_runs, ddpm_run, work):
    """From Python, a mistaken call is named as it was written: ``out=`` (which only the
    command has), a misspelt ``nn=``, overrides that are not a list or dict."""
    run, _ = sae_runs
    before = sorted(str(p.relative_to(work)) for p in work.rglob("*"))
    with pytest.raises(SnngenError) as err:
        snngen.sample(ddpm_run.path, 8, out="x.png")
    assert isinstance(err.value, TypeError)  # as Python's own unexpected-keyword error
    assert str(err.value).startswith("snngen.sample() got an unexpected keyword argument 'out'")
    assert "--" not in str(err.value) and "finite number" not in str(err.value)
    with pytest.raises(SnngenError) as err:
        snngen.evaluate(run.path, ["fid"], nn=50)
    assert str(err.value).startswith(
        "snngen.evaluate() got an unexpected keyword argument 'nn'; did you mean n=?")
    assert "--" not in str(err.value) and isinstance(err.value, TypeError)
    with pytest.raises(ConfigError, match=r"^overrides 5: expected a list of key=value "
                                          r"strings or a dict"):
        snngen.train(SAE_CONFIG, 5)
    with pytest.raises(SnngenError, match=r"^config 5: expected the path of a YAML run config"):
        snngen.train(5)
    with pytest.raises(SnngenError, match=r"^resume 3: expected a run folder to continue"):
        snngen.train(SAE_CONFIG, resume=3)
    with pytest.raises(SnngenError, match=r"^metrics 5: expected metric names"):
        snngen.evaluate(run.path, 5)
    assert sorted(str(p.relative_to(work)) for p in work.rglob("*")) == before  # nothing written


# ----------------------------------------------------------------------------- leaderboard


def test_leaderboard_is_the_board_module(monkeypatch):
    """``snngen.leaderboard(**kw)`` is ``snngen.board.run_leaderboard(**kw)``."""
    import types

    calls = []
    fake = types.ModuleType("snngen.board")
    fake.run_leaderboard = lambda **kw: calls.append(kw) or "table"
    monkeypatch.setitem(sys.modules, "snngen.board", fake)
    assert snngen.leaderboard(runs="runs", metric="fid") == "table"
    assert calls == [{"runs": "runs", "metric": "fid"}]


@pytest.mark.parametrize("spec, message", [
    ("gpu", "device='gpu': expected auto, cpu, cuda or cuda:N"),
    ("cuda:x", "device='cuda:x': expected auto, cpu, cuda or cuda:N"),
])
def test_api_device_errors_name_the_keyword(tmp_path, spec, message):
    """``snngen.load(run, device=...)`` speaks of its keyword; the command line of --device."""
    from snngen.devices import resolve_device
    from snngen.errors import SnngenError

    with pytest.raises(SnngenError) as err:
        snngen.load(tmp_path, device=spec)
    assert str(err.value) == message
    with pytest.raises(SnngenError, match=f"^--device {spec}: expected auto, cpu"):
        resolve_device(spec)
