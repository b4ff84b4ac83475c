"""trainer.max_cpu_minutes: training stops on CPU time, keeps snapshots, resumes exactly.

A fake CPU clock that advances exactly 1 s per step makes every stop and snapshot step known in
advance (the real clock is only read at the start and after each optimiser step).
"""

import itertools

import pytest
import torch

import snngen.training as train
from snngen.config import build_run_config
from snngen.errors import ConfigError
from snngen.training import LAST_CKPT, fit, snapshot_name


def make_cfg(minutes, snapshots=0, **trainer):
    return build_run_config({
        "model": {"name": "tiny"},
        "data": {"batch_size": 8},
        "optim": {"name": "adamw", "lr": 1e-2, "weight_decay": 0.01},
        "trainer": {"max_epochs": None, "max_cpu_minutes": minutes, "cpu_snapshots": snapshots,
                    "ckpt_every_n_steps": 100, "accelerator": "cpu", "progress_bar": False,
                    "seed": 1, **trainer},
    })


@pytest.fixture
def one_second_steps(monkeypatch):
    """The budget clock reads 0, 1, 2, ... seconds: one second per step."""
    ticks = itertools.count()
    monkeypatch.setattr(train, "cpu_clock", lambda: float(next(ticks)))


def meta(path):
    return torch.load(path, weights_only=True)["snngen"]


def test_stops_at_the_cpu_budget_with_snapshots(tmp_path, tiny_data, one_second_steps):
    ds, info = tiny_data
    lit = fit(make_cfg(0.1, snapshots=3), tmp_path / "r", ds, info)  # 6 CPU-s: 6 steps
    assert lit.batches_seen == 6 and lit.cpu_seconds == 6.0
    ckpt = tmp_path / "r" / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(
        [LAST_CKPT, snapshot_name(1, 3), snapshot_name(2, 3)])
    # snapshot k of 3 is written at the first step reaching k/3 of 6 s: steps 2 and 4
    assert [meta(ckpt / snapshot_name(k, 3))["batches_seen"] for k in (1, 2)] == [2, 4]
    assert [meta(ckpt / snapshot_name(k, 3))["cpu_seconds"] for k in (1, 2)] == [2.0, 4.0]
    assert meta(ckpt / LAST_CKPT)["cpu_seconds"] == 6.0


def test_step_budget_still_wins_when_smaller(tmp_path, tiny_data, one_second_steps):
    ds, info = tiny_data
    lit = fit(make_cfg(1.0, max_steps=4), tmp_path / "r", ds, info)
    assert lit.batches_seen == 4 and lit.cpu_seconds == 4.0


def test_cpu_time_carries_over_a_resume(tmp_path, tiny_data, monkeypatch):
    ds, info = tiny_data
    ticks = itertools.count()
    monkeypatch.setattr(train, "cpu_clock", lambda: float(next(ticks)))
    straight = fit(make_cfg(0.1), tmp_path / "a", ds, info)
    ticks2 = itertools.count()
    monkeypatch.setattr(train, "cpu_clock", lambda: float(next(ticks2)))
    fit(make_cfg(0.05), tmp_path / "b", ds, info)  # 3 s
    ticks3 = itertools.count(100)  # a new process: its clock starts elsewhere
    monkeypatch.setattr(train, "cpu_clock", lambda: float(next(ticks3)))
    resumed = fit(make_cfg(0.1), tmp_path / "b", ds, info, resume=True)
    assert resumed.batches_seen == straight.batches_seen == 6
    assert resumed.cpu_seconds == 6.0
    a, b = straight.state_dict(), resumed.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=k)


@pytest.mark.parametrize("trainer, message", [
    ({"max_cpu_minutes": 0}, "max_cpu_minutes: must be a number > 0"),
    ({"max_cpu_minutes": float("nan")}, "max_cpu_minutes: must be a finite number"),
    ({"max_cpu_minutes": None, "max_epochs": None},
     "set trainer.max_steps, trainer.max_epochs or trainer.max_cpu_minutes"),
    ({"max_cpu_minutes": None, "max_steps": 5, "cpu_snapshots": 2},
     "cpu_snapshots: needs trainer.max_cpu"),
    ({"cpu_snapshots": -1}, "cpu_snapshots: must be a number >= 0"),
])
def test_bad_budget_values_are_refused(trainer, message):
    raw = {"model": {"name": "tiny"}, "data": {"batch_size": 8},
           "trainer": {"max_epochs": None, "max_cpu_minutes": 1.0, **trainer}}
    with pytest.raises(ConfigError, match=message):
        build_run_config(raw)


def test_cpu_budget_refuses_several_processes():
    from snngen.preflight import check_hardware

    cfg = make_cfg(1.0, accelerator="cpu", devices=2, strategy="ddp")
    with pytest.raises(ConfigError, match="max_cpu_minutes: a CPU-time budget needs one process"):
        check_hardware(cfg)
