"""benchmarks/memory.py: the CPU memory measurement against closed forms, and a tiny run of the
table (checkpointing must lower what the forward leaves held)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load():
    spec = importlib.util.spec_from_file_location("bench_memory", BENCH / "memory.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_cpu_memory_closed_form():
    """``y = exp(x)`` keeps its output (n floats) for the backward pass: held = 4n bytes + the
    4-byte loss; the backward allocates ``grad * y`` (4n more), which becomes ``x.grad``: peak
    8n + two 4-byte scalars (the loss and its gradient). Measured: exactly these."""
    bench = _load()
    n = 1 << 20
    x = torch.randn(n, requires_grad=True)
    held, peak = bench.cpu_memory(lambda: x.exp().sum())
    assert 4 * n <= held <= 4 * n + 16  # 16: a few scalars, not another n-float tensor
    assert 8 * n <= peak <= 8 * n + 32
    assert x.grad is not None


def test_memory_table_tiny(tmp_path, capsys):
    bench = _load()
    out = tmp_path / "memory.json"
    argv = ["--device", "cpu", "--ch", "4", "--timesteps", "1", "2", "--batch", "1",
            "--out", str(out)]
    assert bench.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["timesteps"], r["checkpointing"]) for r in rows] == [
        (1, False), (1, True), (2, False), (2, True)]
    plain, ckpt = rows[2], rows[3]
    # what autograd keeps grows with T (about linearly), and checkpointing keeps a fraction
    assert 1.8 < plain["held_mb"] / rows[0]["held_mb"] < 2.2
    assert ckpt["held_mb"] < 0.5 * plain["held_mb"] and ckpt["peak_mb"] < plain["peak_mb"]
    assert "held MB" in capsys.readouterr().out
