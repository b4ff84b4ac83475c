"""Crash-safe files: a write that fails half-way leaves the previous file byte-identical and no
temporary file behind; disk-full and read-only errors are one line; a NaN stop tells the truth."""

from __future__ import annotations

import csv
import errno
import os

import pytest
from fs_helpers import assert_one_line_exit2, snapshot

import snngen.files
from snngen.cli import main
from snngen.files import TMP_PREFIX, FileWriteError, atomic_output, write_text


class HalfWriter:
    """A file object that writes the first half of what it is given, then fails (ENOSPC)."""

    def __init__(self, handle, err=errno.ENOSPC):
        self.handle, self.err = handle, err

    def write(self, data):
        data = bytes(data)
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        raise OSError(self.err, os.strerror(self.err))

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


@pytest.fixture
def failing_disk(monkeypatch):
    """Make every atomic write fail half-way with the given errno (default ENOSPC)."""
    real = os.fdopen

    def arm(err=errno.ENOSPC, only: str = ""):
        """``only``: fail just the writes of files with this name (others succeed)."""
        def fdopen(fd, mode="r"):
            name = os.readlink(f"/proc/self/fd/{fd}")  # the temporary file's path
            handle = real(fd, mode)
            return HalfWriter(handle, err) if only in os.path.basename(name) else handle
        monkeypatch.setattr(snngen.files.os, "fdopen", fdopen)
    return arm


def leftovers(folder):
    return [p for p in folder.rglob("*") if p.name.startswith(TMP_PREFIX)]


@pytest.mark.parametrize("err, reason", [(errno.ENOSPC, "no space left"),
                                         (errno.EROFS, "read-only file system"),
                                         (errno.EACCES, "permission denied")])
def test_failed_write_keeps_previous_file(tmp_path, failing_disk, err, reason):
    target = tmp_path / "metrics.json"
    target.write_text('{"old": 1}')
    failing_disk(err)
    with pytest.raises(FileWriteError, match=reason) as info:
        write_text(target, '{"new": 2}' * 1000)
    assert str(target) in str(info.value)
    assert target.read_text() == '{"old": 1}'
    assert leftovers(tmp_path) == []


def test_exception_inside_block_removes_temp(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"before")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as f:
            f.write(b"partial")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"before" and leftovers(tmp_path) == []


def test_successful_write_is_fsynced_and_renamed(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(snngen.files.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    target = tmp_path / "c.yaml"
    write_text(target, "a: 1\n")
    assert target.read_text() == "a: 1\n" and len(synced) >= 1 and leftovers(tmp_path) == []


def test_disk_full_while_checkpointing(run_copy, config_dir, failing_disk, capsys):
    """Resume a run; its next checkpoint write hits a full disk: one line, old checkpoint kept."""
    ckpt = run_copy / "checkpoints" / "last.ckpt"
    old = ckpt.read_bytes()
    failing_disk(errno.ENOSPC, only="last.ckpt")
    code = main(["train", "c.yaml", "trainer.max_steps=4", "--resume", str(run_copy)])
    assert_one_line_exit2(code, capsys.readouterr().err, "last.ckpt", "no space left")
    assert ckpt.read_bytes() == old
    assert leftovers(run_copy) == []


def test_sample_write_fails_half_way(run_copy, config_dir, failing_disk, capsys):
    (config_dir / "s.png").write_bytes(b"previous picture")
    failing_disk(errno.ENOSPC)
    code = main(["sample", str(run_copy), "--n", "4", "--out", "s.png"])
    assert_one_line_exit2(code, capsys.readouterr().err, "s.png", "no space left")
    assert (config_dir / "s.png").read_bytes() == b"previous picture"
    assert leftovers(config_dir) == []


def test_nan_before_first_checkpoint_tells_the_truth(config_dir, capsys):
    code = main(["train", "c.yaml", "model.nan_after=2", "trainer.ckpt_every_n_steps=50",
                 "trainer.max_steps=10", "trainer.log_every_n_steps=1"])
    err = capsys.readouterr().err
    assert_one_line_exit2(code, err, "non-finite loss", "at step 2", "no checkpoint was written")
    assert "is kept" not in err
    run = config_dir / "runs" / "base"
    assert not (run / "checkpoints" / "last.ckpt").exists()
    rows = list(csv.DictReader(open(run / "logs" / "version_0" / "metrics.csv")))
    losses = {int(r["step"]): r["train/loss"] for r in rows if r.get("train/loss")}
    assert 1 in losses or 0 in losses, rows  # the good step before the NaN is on disk
    assert any(v == "nan" for v in losses.values()), rows  # and the failing one


def test_nan_after_a_checkpoint_names_it(config_dir, capsys):
    code = main(["train", "c.yaml", "model.nan_after=4", "trainer.ckpt_every_n_steps=2",
                 "trainer.max_steps=10"])
    assert_one_line_exit2(code, capsys.readouterr().err, "at step 4",
                          "last.ckpt (step 2), is kept")
    import torch

    meta = torch.load(config_dir / "runs" / "base" / "checkpoints" / "last.ckpt",
                      weights_only=True)["snngen"]
    assert meta["batches_seen"] == 2


def test_run_folder_layout_matches_readme(trained_run):
    """README's picture: one logs/version_N per run with both loggers in it."""
    files = snapshot(trained_run)
    versions = sorted({f.split("/")[1] for f in files if f.startswith("logs/version_")})
    assert versions == ["version_0"], files
    assert "logs/version_0/metrics.csv" in files
    assert any(f.startswith("logs/version_0/events.out.tfevents") for f in files)
    for f in ("config.yaml", "checkpoints/last.ckpt", "recon.png", "samples.png", "metrics.json"):
        assert f in files
