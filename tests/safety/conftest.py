"""A small trained run shared by the safety tests (tiny model, mnist5k at 8 px, 2 steps)."""

from __future__ import annotations

import shutil

import pytest
from fs_helpers import BASE_CONFIG

from snngen.cli import main


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """Path of a finished run folder (do not modify: copy it with :func:`copy_run`)."""
    work = tmp_path_factory.mktemp("trained")
    (work / "c.yaml").write_text(BASE_CONFIG.replace("runs", str(work)))
    assert main(["train", str(work / "c.yaml"), f"out_dir={work / 'runs'}"]) == 0
    return work / "runs" / "base"


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A private copy of the trained run folder."""
    dst = tmp_path / "run"
    shutil.copytree(trained_run, dst)
    return dst


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    """A working folder holding ``c.yaml`` (the base config); the test runs inside it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(BASE_CONFIG)
    return tmp_path
