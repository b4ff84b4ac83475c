"""Files snngen writes are readable as the umask says: 0644 under umask 022, 0664 under 002,
0600 under 077 (the mode any program's new file gets: 0666 less the umask), never the 0600 of
``tempfile.mkstemp`` whatever the umask. Every writer goes through :func:`atomic_output`; the
run folder test covers what ``snngen train``, ``sample`` and ``eval`` write end to end."""

from __future__ import annotations

import contextlib
import os
import stat

import pytest
import torch
from fs_helpers import BASE_CONFIG

from snngen.cli import main
from snngen.config import build_run_config, save_config
from snngen.evaluation import write_metrics
from snngen.files import TMP_PREFIX, atomic_output, save_torch, write_bytes, write_text
from snngen.viz import save_grid


@contextlib.contextmanager
def umask(mask: int):
    """Run the block under process umask ``mask`` (restored afterwards)."""
    before = os.umask(mask)
    try:
        yield
    finally:
        os.umask(before)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


WRITERS = {
    "write_bytes": lambda p: write_bytes(p / "a.bin", b"x"),
    "write_text": lambda p: write_text(p / "a.txt", "x"),
    "atomic_output": lambda p: _atomic(p / "a.npy"),
    "checkpoint (save_torch)": lambda p: save_torch({"w": torch.zeros(2)}, p / "last.ckpt"),
    "config.yaml": lambda p: save_config(build_run_config({"model": {"name": "sae"}}),
                                         p / "config.yaml") or p / "config.yaml",
    "metrics.json": lambda p: write_metrics({"mse": 0.5}, p / "metrics.json"),
    "PNG": lambda p: save_grid(torch.rand(4, 1, 8, 8), p / "samples.png"),
}


def _atomic(path):
    with atomic_output(path) as f:
        f.write(b"x")
    return path


# 0666 & ~mask: what the kernel gives any new file (open(2) with mode 0666)
@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)],
                         ids=["umask022", "umask002", "umask077"])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_each_writer_follows_the_umask(writer, mask, expected, tmp_path):
    with umask(mask):
        path = WRITERS[writer](tmp_path)
    assert mode(path) == expected, (writer, oct(mode(path)))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_replacing_a_file_takes_the_umask_not_the_old_mode(tmp_path):
    """A rewrite is a new file renamed over the old one: it gets the umask's mode."""
    target = tmp_path / "metrics.json"
    with umask(0o077):
        write_text(target, "{}")
    assert mode(target) == 0o600
    with umask(0o022):
        write_text(target, '{"a": 1}')
    assert mode(target) == 0o644 and target.read_text() == '{"a": 1}'


def test_run_folder_readable_by_the_group_under_umask_002(tmp_path, monkeypatch):
    """``snngen train``, ``sample`` and ``eval`` under umask 002: every file of the run folder
    (checkpoints, config.yaml, metrics.json, PNGs, sample shards, Lightning's logs) is 0664
    and every folder 0775, as a shared project folder on a cluster needs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(BASE_CONFIG)
    with umask(0o002):
        assert main(["train", "c.yaml", "trainer.max_steps=1", "out_dir=runs"]) == 0
        run = tmp_path / "runs" / "base"
        assert main(["sample", str(run), "--n", "4", "--out", str(run / "extra.png")]) == 0
    files = [p for p in run.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"last.ckpt", "config.yaml", "metrics.json", "samples.png", "extra.png"} <= names
    wrong = {str(p.relative_to(run)): oct(mode(p)) for p in files if mode(p) != 0o664}
    assert wrong == {}
    folders = [p for p in run.rglob("*") if p.is_dir()]
    assert all(mode(p) == 0o775 for p in folders), [(str(p), oct(mode(p))) for p in folders]
