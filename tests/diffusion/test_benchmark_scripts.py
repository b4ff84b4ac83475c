"""The diffusion benchmark scripts run end to end (tiny settings; the numbers are not checked)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_solver_benchmark_quick_writes_a_table(tmp_path, capsys):
    bench = _load("diffusion_solvers")
    out = tmp_path / "solvers.json"
    argv = ["--quick", "--no-metrics", "--n", "3", "--steps", "2,4",
            "--solvers", "ddim,analytic-dpm,dpm-solver", "--out", str(out)]  # fmt: skip
    assert bench.main(argv) == 0
    record = json.loads(out.read_text())
    cells = [(e["solver"], e["steps"]) for e in record["entries"]]
    assert cells == [(s, n) for s in ("ddim", "analytic-dpm", "dpm-solver") for n in (2, 4)]
    assert all(e["images_per_s"] > 0 and e["fid"] is None for e in record["entries"])
    assert "analytic-dpm" in capsys.readouterr().out
    assert bench.parse_steps("10,20,50,full", 30) == [10, 20, 30]
    with pytest.raises(SystemExit):
        bench.parse_solvers("ddim,euler")


def test_conversion_benchmark_quick(tmp_path):
    bench = _load("diffusion_conversion")
    out = tmp_path / "conversion.json"
    argv = ["--quick", "--train-steps", "10", "--steps-T", "4,8", "--out", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())["report"]
    assert report["output_error"]["8"] < report["output_error"]["4"]
