"""Resume and Ctrl-C say what happened: a run at its budget has nothing to do and writes nothing,
a larger budget trains on exactly to it, Ctrl-C stops at a step boundary with a checkpoint (exit
130 and one line; ``snngen.train`` raises KeyboardInterrupt), and metrics.csv counts epochs."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fs_helpers import BASE_CONFIG, shown_lines

import snngen
from snngen.cli import build_parser, main
from snngen.config import build_run_config
from snngen.preflight import finished_message
from snngen.training import LAST_CKPT, LitGenerative, TrainingInterrupted, fit

TESTS = Path(__file__).resolve().parent


def make_cfg(steps: int | None, **trainer):
    return build_run_config({
        "model": {"name": "tiny"},
        "data": {"batch_size": 8},
        "optim": {"name": "adamw", "lr": 1e-2, "weight_decay": 0.01},
        "trainer": {"max_steps": steps, "ckpt_every_n_steps": 3, "accelerator": "cpu",
                    "progress_bar": False, "seed": 1, "ema_decay": 0.9, **trainer},
    })


def stamped(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``root``: its modification time (ns) and bytes (None for a folder)."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, None if p.is_dir() else
                                       p.read_bytes()) for p in sorted(root.rglob("*"))}


def ckpt_step(run: Path) -> int:
    return torch.load(run / "checkpoints" / LAST_CKPT, weights_only=True)["snngen"]["batches_seen"]


def ckpt_weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / LAST_CKPT, weights_only=True)["state_dict"]


def assert_same_weights(a: dict, b: dict) -> None:
    """Resume replays the same kernels on the same data in the same order on one thread: the
    weights are equal bit for bit (no tolerance)."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A folder holding ``c.yaml`` (the safety tests' tiny run: mnist5k at 8 px, batch 500)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(BASE_CONFIG)
    return tmp_path


# ----------------------------------------------------------------------------- finished runs


def test_finished_run_has_nothing_to_do_then_trains_on_exactly(work, capsys):
    # overrides after a flag (issue 21, case 7)
    assert main(["train", "c.yaml", "--no-eval", "trainer.max_steps=3", "name=fin"]) == 0
    run = work / "runs" / "fin"
    assert ckpt_step(run) == 3
    before = stamped(run)
    capsys.readouterr()
    for argv in (["train", "c.yaml", "trainer.max_steps=3", "name=fin", "--resume", "runs/fin"],
                 ["train", "--resume", "runs/fin"],  # no config: the run's own
                 ["train", "--resume", "runs/fin", "name=other", "eval.n_samples=7"]):
        assert main(argv) == 0, argv
        out = capsys.readouterr().out
        assert out.strip() == ("snngen: already trained 3 of 3 steps; nothing to do (to train "
                               "on, give a larger trainer.max_steps)"), (argv, out)
        assert stamped(run) == before, argv  # no logs/version_1, checkpoint and config as were
    # the same from Python
    for kwargs in ({"config": "c.yaml", "overrides": {"trainer.max_steps": 3}}, {}):
        got = snngen.train(resume=run, **kwargs)
        assert got.path == run and got.metrics is None
        assert "already trained 3 of 3 steps; nothing to do" in capsys.readouterr().out
        assert stamped(run) == before

    # a larger budget on the command line trains on, to exactly that step, as one run would
    # (the run keeps its name: it trains in its own folder)
    assert main(["train", "--resume", "runs/fin", "--no-eval", "trainer.max_steps=5",
                 "name=other"]) == 0
    assert "continuing to train (from step 3)" in capsys.readouterr().out
    assert ckpt_step(run) == 5
    saved = (run / "config.yaml").read_text()
    assert "max_steps: 5" in saved and "name: fin" in saved
    assert sorted(p.name for p in (work / "runs").iterdir()) == ["fin"]
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["version_0", "version_1"]
    assert main(["train", "c.yaml", "--no-eval", "trainer.max_steps=5", "name=straight"]) == 0
    assert_same_weights(ckpt_weights(run), ckpt_weights(work / "runs" / "straight"))


def test_resume_at_the_budget_trains_no_step(tmp_path, tiny_data):
    ds, info = tiny_data
    fit(make_cfg(5), tmp_path / "b", ds, info)
    saved = ckpt_weights(tmp_path / "b")
    again = fit(make_cfg(5), tmp_path / "b", ds, info, resume=True)
    assert again.batches_seen == 5 and ckpt_step(tmp_path / "b") == 5
    assert_same_weights(saved, ckpt_weights(tmp_path / "b"))
    assert_same_weights(saved, again.state_dict())  # the module too: no 6th step in memory


@pytest.mark.parametrize("step, steps, epochs, expected", [
    (3, 3, 1.0, "already trained 3 of 3 steps; nothing to do (to train on, give a larger "
                "trainer.max_steps)"),
    (2, 3, 1.0, None),
    (7, 3, 1.0, "already trained 7 steps, more than the 3 of trainer.max_steps=3; nothing to do"),
    # max_epochs: 64 items / batch 8 = 8 steps an epoch, so 2.5 epochs = 20 steps
    (20, None, 2.5, "already trained 20 of 20 steps (2.5 epochs); nothing to do (to train on, "
                    "give a larger trainer.max_epochs)"),
    (19, None, 2.5, None),
    # max_steps wins over max_epochs (so a larger max_steps is what trains on)
    (4, 4, 9.0, "already trained 4 of 4 steps; nothing to do (to train on, give a larger "
                "trainer.max_steps)"),
])
def test_finished_message(step, steps, epochs, expected):
    assert finished_message(make_cfg(steps, max_epochs=epochs), 64, step, 0.0) == expected


def test_finished_message_of_a_cpu_budget():
    cfg = make_cfg(None, max_epochs=None, max_cpu_minutes=0.1)  # 6 CPU seconds
    assert finished_message(cfg, 64, 40, 5.9) is None
    assert finished_message(cfg, 64, 41, 6.0) == (
        "already trained 41 steps in 0.1 of 0.1 CPU minutes; nothing to do (to train on, give "
        "a larger trainer.max_cpu_minutes)")


# ----------------------------------------------------------------------------- Ctrl-C


def sigint_after(monkeypatch, step: int, times: int = 1) -> None:
    """Deliver SIGINT ``times`` times to this process right after optimiser step ``step``
    (inside ``training_step``, before Lightning's end-of-batch hooks), as a Ctrl-C would."""
    original = LitGenerative.training_step

    def training_step(self, batch, batch_idx):
        original(self, batch, batch_idx)
        if self.batches_seen == step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(LitGenerative, "training_step", training_step)


def test_ctrl_c_in_python_raises_keyboard_interrupt_and_resumes_exactly(work, capsys,
                                                                        monkeypatch):
    handler = signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt) as caught:
        sigint_after(patch, 2)
        snngen.train("c.yaml", name="cc", trainer__max_steps=4, trainer__ckpt_every_n_steps=3,
                     evaluate=False)  # not SystemExit(1)
    run = Path("runs") / "cc"
    assert str(caught.value) == (
        f"stopped at step 2; last checkpoint at step 2; continue with snngen train --resume {run}")
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C works again afterwards
    assert ckpt_step(work / run) == 2  # written at the interruption (the next due was step 3)
    assert sorted(p.name for p in (work / run / "checkpoints").iterdir()) == [LAST_CKPT]
    snngen.train(resume=run, evaluate=False)
    assert ckpt_step(work / run) == 4
    snngen.train("c.yaml", name="straight", trainer__max_steps=4, trainer__ckpt_every_n_steps=3,
                 evaluate=False)
    assert_same_weights(ckpt_weights(work / run), ckpt_weights(work / "runs" / "straight"))


def test_second_ctrl_c_stops_at_once_keeping_the_last_checkpoint(tmp_path, tiny_data,
                                                                 monkeypatch):
    ds, info = tiny_data
    handler = signal.getsignal(signal.SIGINT)
    sigint_after(monkeypatch, 5, times=2)
    with pytest.raises(TrainingInterrupted) as caught:
        fit(make_cfg(8), tmp_path / "r", ds, info)
    assert (caught.value.step, caught.value.saved_step) == (5, 3)
    assert "stopped at step 5; last checkpoint at step 3; continue with" in str(caught.value)
    assert ckpt_step(tmp_path / "r") == 3  # the periodic one, untouched
    assert signal.getsignal(signal.SIGINT) is handler  # Lightning left it ignored


def test_ctrl_c_before_the_first_checkpoint_of_a_resumed_run(tmp_path, tiny_data, monkeypatch):
    """Interrupted at once after resuming from step 3, before any new checkpoint: the one it
    resumed from is named."""
    ds, info = tiny_data
    fit(make_cfg(3), tmp_path / "r", ds, info)
    sigint_after(monkeypatch, 4, times=2)
    with pytest.raises(TrainingInterrupted, match="stopped at step 4; last checkpoint at step 3"):
        fit(make_cfg(8, ckpt_every_n_steps=10), tmp_path / "r", ds, info, resume=True)


@pytest.mark.parametrize("ctrl_c", [True, False])
def test_an_error_caused_by_the_same_ctrl_c_reads_as_the_interruption(ctrl_c, tmp_path,
                                                                      tiny_data, monkeypatch):
    """Terminal Ctrl-C also stops DataLoader workers; the main process may then fail to fetch a
    batch ("worker exited unexpectedly") before the step ends: that is the interruption. The
    same error without a Ctrl-C stays an error."""
    ds, info = tiny_data
    original = LitGenerative.training_step

    def training_step(self, batch, batch_idx):
        if self.batches_seen == 5:
            if ctrl_c:
                os.kill(os.getpid(), signal.SIGINT)
            raise RuntimeError("DataLoader worker (pid 1) exited unexpectedly")
        original(self, batch, batch_idx)

    monkeypatch.setattr(LitGenerative, "training_step", training_step)
    if ctrl_c:
        with pytest.raises(TrainingInterrupted,
                           match="stopped at step 5; last checkpoint at step 3"):
            fit(make_cfg(8), tmp_path / "r", ds, info)
    else:
        with pytest.raises(RuntimeError, match="exited unexpectedly"):
            fit(make_cfg(8), tmp_path / "r", ds, info)


CTRL_C_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import tiny_model  # registers model "tiny"
from snngen.cli import main
from snngen.training import LitGenerative

original = LitGenerative.training_step

def training_step(self, batch, batch_idx):
    original(self, batch, batch_idx)
    if self.batches_seen == 2:
        os.kill(os.getpid(), signal.SIGINT)

LitGenerative.training_step = training_step
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_in_snngen_train_exits_130_with_one_line(work):
    script = work / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT.format(tests=str(TESTS)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(script), "train", "c.yaml", "--no-eval", "trainer.max_steps=4",
         "trainer.ckpt_every_n_steps=3", "name=cc"],
        capture_output=True, text=True, timeout=300, env=env, cwd=work)
    assert proc.returncode == 130, proc.stderr[-3000:]
    run = Path("runs") / "cc"
    assert shown_lines(proc.stderr) == [
        f"snngen: stopped at step 2; last checkpoint at step 2; continue with snngen train "
        f"--resume {run}"], proc.stderr
    assert ckpt_step(work / run) == 2


# ----------------------------------------------------------------------------- metrics.csv


def epochs_logged(log_dir: Path) -> dict[int, float]:
    with open(log_dir / "metrics.csv") as f:
        return {int(row["step"]): float(row["epoch"]) for row in csv.DictReader(f)
                if row.get("train/loss")}


def test_metrics_csv_counts_epochs_across_a_resume(tmp_path, tiny_data):
    ds, info = tiny_data  # 64 items, batch 8: 8 steps an epoch
    fit(make_cfg(20, log_every_n_steps=1), tmp_path / "a", ds, info)
    # Lightning's step column counts from 0: step s is optimiser step s + 1, of epoch s // 8
    assert epochs_logged(tmp_path / "a" / "logs" / "version_0") == {s: s // 8 for s in range(20)}
    fit(make_cfg(12, log_every_n_steps=1), tmp_path / "b", ds, info)
    fit(make_cfg(20, log_every_n_steps=1), tmp_path / "b", ds, info, resume=True)
    assert epochs_logged(tmp_path / "b" / "logs" / "version_1") == {
        s: s // 8 for s in range(12, 20)}


# ----------------------------------------------------------------------------- command line


def test_overrides_anywhere_on_the_line():
    parse = build_parser().parse_args
    args = parse(["train", "c.yaml", "--no-eval", "trainer.max_steps=2", "-v", "data.x=1"])
    assert (args.config, args.overrides, args.no_eval) == (
        "c.yaml", ["trainer.max_steps=2", "data.x=1"], True)
    args = parse(["train", "--resume", "runs/r", "trainer.max_steps=2"])
    assert (args.resume, args.config, args.overrides) == ("runs/r", "trainer.max_steps=2", [])
    args = parse(["import", "sddpm", "ck.pt", "--config", "c.yaml", "--out", "o", "model.k=4"])
    assert (args.checkpoint, args.config, args.out, args.overrides) == (
        "ck.pt", "c.yaml", "o", ["model.k=4"])


def test_train_without_config_or_resume_is_one_line(work, capsys):
    assert main(["train", "trainer.max_steps=2"]) == 2
    lines = shown_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "no config" in lines[0], lines
    assert sorted(p.name for p in work.iterdir()) == ["c.yaml"]
