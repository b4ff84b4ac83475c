"""Fuzzing the command line: generated configs, overrides and argument lists, run in-process.

Every outcome is success or exit 2 with one line on stderr, never a traceback; on failure the
folder is exactly as before. Training itself is replaced by a sentinel (what is fuzzed is the
validation in front of it); sampling runs for real on a tiny trained run.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from fs_helpers import BASE_CONFIG, shown_lines, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snngen.training
from snngen.cli import main

FAST = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))

KEYS = [
    "data.batch_size", "data.num_workers", "data.image_size", "data.name", "data.root",
    "data.options", "optim.lr", "optim.betas", "optim.name", "optim.weight_decay",
    "optim.lr_reference_batch", "trainer.max_steps", "trainer.max_epochs", "trainer.precision",
    "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy",
    "trainer.seed", "trainer.ema_decay", "trainer.grad_clip", "trainer.ckpt_every_n_steps",
    "trainer.log_every_n_steps", "eval.n_samples", "eval.metrics", "eval.features",
    "eval.batch_size", "model.hidden", "model.noise", "model.dropout", "model.name", "name",
    "out_dir", "trainer", "model", "data",
]
INTS = st.one_of(st.integers(-8, 70), st.sampled_from([0, 1, 2**31, 2**63, -(2**63), 10**9]))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, 1.0, 0.5, 1e-300, -0.0]))
TEXT = st.text(max_size=12)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT,
                    st.sampled_from(["auto", "cpu", "gpu", "32-true", "bf16-mixed", "ddp",
                                     "mnist5k", "tiny", "sae", "adam", "inception", "0,1"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)), max_leaves=6)


def as_override(key: str, value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    return f"{key}={text}"


OVERRIDES = st.lists(
    st.one_of(
        st.builds(as_override, st.sampled_from(KEYS), VALUES),
        st.builds(as_override, TEXT, VALUES),  # unknown keys
        TEXT,  # not key=value at all
    ),
    max_size=4,
)
CONFIG_FILES = st.one_of(
    st.just(BASE_CONFIG.encode()),
    st.binary(max_size=200),  # random bytes
    st.builds(lambda v: yaml.safe_dump(v).encode(), VALUES),  # random nesting
    st.builds(lambda d: yaml.safe_dump({**yaml.safe_load(BASE_CONFIG), **d}).encode(),
              st.dictionaries(st.sampled_from(["model", "data", "optim", "trainer", "eval",
                                               "name", "out_dir", "extra"]), VALUES, max_size=2)),
)


class ReachedTraining(Exception):
    """Validation passed: training would start now."""


def fake_fit(*args, **kwargs):
    raise ReachedTraining


@contextlib.contextmanager
def workdir():
    path = Path(tempfile.mkdtemp(prefix="snngen-fuzz-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def check_train(config: bytes, overrides: list[str], capsys, monkeypatch) -> None:
    with workdir() as work:
        monkeypatch.chdir(work)
        (work / "c.yaml").write_bytes(config)
        before = snapshot(work)
        capsys.readouterr()
        try:
            code = main(["train", "c.yaml", *overrides])
        except ReachedTraining:
            return
        except SystemExit as exit_:  # argparse: an override that looks like a flag
            code = exit_.code
        err = capsys.readouterr().err
        assert code == 2, (overrides, code, err)
        assert len(shown_lines(err)) == 1 and "Traceback" not in err, (overrides, err)
        assert snapshot(work) == before, overrides


@FAST
@given(config=CONFIG_FILES, overrides=OVERRIDES)
def test_fuzz_train_config_and_overrides(config, overrides, capsys, monkeypatch):
    monkeypatch.setattr(snngen.training, "fit", fake_fit)
    check_train(config, overrides, capsys, monkeypatch)


@pytest.mark.slow
@SLOW
@given(config=CONFIG_FILES, overrides=OVERRIDES)
def test_fuzz_train_many(config, overrides, capsys, monkeypatch):
    monkeypatch.setattr(snngen.training, "fit", fake_fit)
    check_train(config, overrides, capsys, monkeypatch)


FLAGS = {
    "sample": ["--n", "--out", "--seed", "--solver", "--steps", "--temperature", "--top-k",
               "--threshold-scale", "--batch-size"],
    "eval": ["--metrics", "--n", "--features", "--seed", "--out", "--solver", "--steps",
             "--temperature", "--batch-size"],
    "info": ["--batch", "--json"],
}
ARG_VALUES = st.one_of(
    st.integers(-3, 40).map(str),
    st.sampled_from(["0", "nan", "inf", "-inf", "1e9", "100000000", "x", "", "mse", "fid,nope",
                     "classifier", "inception", "ddpm", "out.png", "out.npy", "out/", "o.bmp",
                     "/proc/nope/x.png", "is"]),
    st.text(max_size=8),
)


@st.composite
def cli_args(draw):
    command = draw(st.sampled_from(sorted(FLAGS)))
    args = []
    for _ in range(draw(st.integers(0, 4))):
        args += [draw(st.sampled_from(FLAGS[command])), draw(ARG_VALUES)]
    if draw(st.booleans()):
        args.append(draw(st.sampled_from(["--bogus", "extra", "-n"])))
    return command, args


@FAST
@given(call=cli_args())
def test_fuzz_sample_eval_info_arguments(call, trained_run, capsys, monkeypatch):
    command, args = call
    if command == "eval" and "--metrics" not in args:
        args = [*args, "--metrics", "mse"]  # keep the feature classifier out of the fast suite
    if any(m in a for a in args for m in ("fid", "kid", "pr", "aefd")) or (
        "is" in args and "--features" not in args
    ):
        return
    with workdir() as work:
        monkeypatch.chdir(work)
        run = work / "run"
        shutil.copytree(trained_run, run)
        before = snapshot(work)
        capsys.readouterr()
        try:
            code = main([command, str(run), *args])
        except SystemExit as exit_:
            code = exit_.code
        err = capsys.readouterr().err
        if code == 0:
            return
        assert code == 2, (command, args, code, err)
        assert len(shown_lines(err)) == 1 and "Traceback" not in err, (command, args, err)
        assert snapshot(work) == before, (command, args)
