"""README's Python examples run as written: the ``## Python API`` and ``## Library`` sections'
```python blocks are executed in order (one namespace per section), in a scratch folder whose
``configs`` is the repository's. A block preceded by ``<!-- not-run -->`` is only compiled."""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import re
from pathlib import Path

import pytest
import torch
from test_api import feature_cache, keep_classifiers

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_RUN = "<!-- not-run -->"


def section(title: str) -> str:
    """The text of README's ``## title`` section (up to the next ``## `` heading)."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def python_blocks(text: str) -> list[tuple[str, bool]]:
    """``(code, run)`` of each ```python block; ``run`` is False after ``<!-- not-run -->``."""
    out = []
    for m in re.finditer(r"```python\n(.*?)```", text, flags=re.S):
        before = text[: m.start()].rstrip().splitlines()
        out.append((m.group(1), not (before and before[-1].strip() == NOT_RUN)))
    return out


def run_blocks(title: str) -> tuple[dict, str]:
    """Execute the section's runnable blocks in one namespace; returns it and their stdout."""
    ns: dict = {"__name__": "__readme__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for i, (code, run) in enumerate(python_blocks(section(title))):
            compiled = compile(code, f"README.md ## {title} block {i}", "exec")
            if run:
                exec(compiled, ns)
    return ns, out.getvalue()


@pytest.fixture
def scratch(tmp_path, monkeypatch, tmp_path_factory, request):
    """A working folder with the repository's configs and a private feature cache."""
    (tmp_path / "configs").symlink_to(README.parent / "configs")
    cache = feature_cache(tmp_path_factory, request)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SNNGEN_CACHE", str(cache))
    yield tmp_path
    keep_classifiers(cache, request)


def test_python_api_section_runs(scratch):
    ns, out = run_blocks("Python API")
    lines = out.splitlines()
    assert "runs/sae_mnist5k 2" in lines
    sae = scratch / "runs" / "sae_mnist5k"
    written = json.loads((sae / "metrics.json").read_text())
    assert written["fid"]["n_fake"] == 50 and written["mse"]["n"] == 50
    assert f"{written['mse']['value']} {written['fid']['value']}" in lines
    images, same = ns["images"], ns["same_as_cli"]
    assert images.shape == same.shape == (16, 1, 16, 16)
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    metrics = ns["metrics"]
    assert metrics["protocol"]["name"] == "snngen" and metrics["fid"]["n_fake"] == 50
    ddpm = scratch / "runs" / "ddpm_mnist5k_small"
    assert json.loads((ddpm / "metrics.json").read_text())["kid"] == metrics["kid"]
    # the error line README shows is the one printed
    shown = re.search(r"print\(err\)\s+# (.*)", section("Python API")).group(1)
    assert shown in lines


def test_not_run_blocks_are_the_leaderboard():
    skipped = [code for code, run in python_blocks(section("Python API")) if not run]
    assert len(skipped) == 1 and "snngen.leaderboard(" in skipped[0]
    try:
        from snngen.board import run_leaderboard
    except ImportError:  # the board is not in this checkout
        return
    # README's call fits run_leaderboard's signature
    call = re.search(r"snngen\.leaderboard\((.*)\)", skipped[0]).group(1)
    kwargs = eval(f"dict({call})")
    inspect.signature(run_leaderboard).bind(**kwargs)


def test_library_section_runs():
    ns, _ = run_blocks("Library")
    assert ns["spikes"].shape == (8, 32, 64, 16, 16)
    assert set(torch.unique(ns["spikes"]).tolist()) <= {0.0, 1.0}
