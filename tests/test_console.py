"""The console of ``snngen train``: snngen's own first and last lines, one bar per phase, and
Lightning's banners only with ``--verbose`` (or ``SNNGEN_VERBOSE=1``)."""

import io
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from snngen.cli import main
from snngen.config import build_run_config
from snngen.console import VERBOSE_ENV, describe_finish
from snngen.models import DataInfo
from snngen.preflight import describe_training

BANNERS = ("GPU available", "TPU available", "Tip:", "litlogger", "LOCAL_RANK")
STEPS = 6
CONFIG = (
    "name: c\nmodel: {name: tiny, hidden: 8}\n"
    "data: {name: mnist5k, image_size: 8, batch_size: 64}\n"
    f"trainer: {{max_steps: {STEPS}, accelerator: cpu, ckpt_every_n_steps: 100}}\n"
    "eval: {n_samples: 100, metrics: [mse]}\n"
)
#: one drawing of a tqdm bar: "desc:  50%|█████     | 3/6 [00:00<00:00, ...]"
BAR = re.compile(r"^(?P<desc>[^\r\n]*?): +\d+%\|")


def bar_drawings(text: str) -> list[str]:
    """The description of every drawing of a progress bar in ``text`` (tqdm separates its
    drawings with carriage returns)."""
    return [m["desc"] for part in re.split(r"[\r\n]", text) if (m := BAR.match(part))]


def train(tmp_path, capsys, monkeypatch, *argv):
    """Run ``snngen [argv] train c.yaml`` in ``tmp_path``; return (stdout, stderr + Lightning's
    log lines)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(VERBOSE_ENV, "0")  # restored afterwards: --verbose writes it
    (tmp_path / "c.yaml").write_text(CONFIG)
    log = io.StringIO()  # Lightning's handlers write to the stderr they saw at import time
    handler = logging.StreamHandler(log)
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        assert main(list(argv)) == 0
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    out, err = capsys.readouterr()
    return out, err + log.getvalue()


def test_default_console_shows_snngen_lines_and_one_bar(tmp_path, capsys, monkeypatch):
    out, err = train(tmp_path, capsys, monkeypatch, "train", "c.yaml")
    for banner in BANNERS:
        assert banner not in out + err, banner
    assert "Warning" not in err, err
    lines = out.splitlines()
    first, last = lines[0], lines[-1]
    assert first.startswith("snngen: training tiny (c.yaml, "), first
    assert "on mnist5k (4,500 train / 500 test images, 8x8x1)" in first, first
    assert f"; {STEPS} steps of batch 64" in first and "on cpu" in first, first
    assert first.endswith(f"run folder {Path('runs') / 'c'}"), first
    assert last.startswith(f"snngen: done: run folder {Path('runs') / 'c'}; mse 0."), last
    assert last.endswith("(100 samples)"), last
    # one training bar: snngen's "train" (not Lightning's "Training" / "Epoch 0"), drawn at
    # most once per step (plus its start and its end), with the time left and the loss
    drawn = bar_drawings(err)
    assert set(drawn) == {"train"}, set(drawn)
    assert 2 <= len(drawn) <= STEPS + 2, drawn
    final = [p for p in re.split(r"[\r\n]", err) if p.startswith("train: 100%")][-1]
    assert f"{STEPS}/{STEPS} [" in final and "<00:00" in final and "loss=" in final, final


@pytest.mark.filterwarnings("ignore:.*LeafSpec")  # verbose shows Lightning's own warnings
def test_verbose_shows_lightnings_banners(tmp_path, capsys, monkeypatch):
    out, err = train(tmp_path, capsys, monkeypatch, "--verbose", "train", "c.yaml",
                     "trainer.progress_bar=false")
    for banner in ("GPU available", "TPU available", "Tip:", "litlogger"):
        assert banner in err, (banner, err)
    assert bar_drawings(err) == []  # trainer.progress_bar: false still hides the bars
    assert out.splitlines()[0].startswith("snngen: training tiny")


def test_verbose_after_the_command_and_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(VERBOSE_ENV, "0")
    assert main(["train", "nope.yaml", "--verbose"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "snngen: error: config file not found: nope.yaml", err


def test_feature_and_sample_bars(capsys):
    from snngen.generation import ImageBar
    from snngen.metrics.features import extract_features

    extract_features(torch.rand(20, 1, 4, 4), nn.Flatten(), batch_size=8, progress=True,
                     desc="fake")
    bar = ImageBar(30, 0, True)
    bar.update(30)
    bar.close()
    err = capsys.readouterr().err
    drawn = bar_drawings(err)
    assert drawn[0].startswith("features (fake, ") and set(drawn[1:]) <= {drawn[0], "sample"}
    # transient bars (gone once done): at least their first drawing, in images, time left "?"
    assert "0/20 [00:00<?, ?img/s]" in err and "0/30 [00:00<?, ?img/s]" in err, err


def plan(**trainer):
    cfg = build_run_config({"model": {"name": "tiny"}, "data": {"batch_size": 64},
                            "trainer": {"accelerator": "cpu", **trainer}})
    return SimpleNamespace(cfg=cfg, info=DataInfo(channels=1, image_size=32),
                           train_set=range(4500), test_set=range(500), model=nn.Linear(99, 10),
                           resume=False, run_dir=Path("runs/sae_mnist5k"))


def test_describe_training_and_finish():
    assert describe_training(plan(max_epochs=10), "configs/x.yaml") == (
        "snngen: training tiny (configs/x.yaml, 1k parameters) on mnist5k (4,500 train / 500 "
        "test images, 32x32x1); 700 steps of batch 64 (10 epochs) on cpu; run folder "
        f"{Path('runs/sae_mnist5k')}"
    )
    text = describe_training(plan(max_epochs=None, max_cpu_minutes=5))
    assert "as many steps of batch 64 as 5 CPU minutes allow" in text, text
    result = {"protocol": {"n_samples": 1000}, "mse": {"value": 0.0351, "n": 1000},
              "fid": {"value": 12.345678}, "seconds": 3.0}
    assert describe_finish("runs/x", result) == (
        "snngen: done: run folder runs/x; mse 0.0351, fid 12.35 (1,000 samples)")
    assert describe_finish("runs/x", None) == "snngen: done: run folder runs/x"


@pytest.mark.parametrize("value, verbose", [("1", True), ("0", False), ("", False)])
def test_verbose_environment_variable(monkeypatch, value, verbose):
    from snngen.console import is_verbose

    monkeypatch.setenv(VERBOSE_ENV, value)
    assert is_verbose() is verbose
