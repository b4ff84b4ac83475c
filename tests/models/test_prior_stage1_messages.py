"""A vq_prior whose stage 1 is missing names the config key to fix, ``model.stage1_run``."""

from __future__ import annotations

import pytest
from fs_helpers import assert_one_line_exit2, snapshot

from snngen.cli import main
from snngen.config import build_run_config, save_config

TAIL = ("data: {name: mnist5k, image_size: 16, batch_size: 500}\n"
        "trainer: {max_steps: 1, accelerator: cpu, progress_bar: false}\n"
        "eval: {metrics: [mse]}\n")


@pytest.mark.parametrize("kind, fragment", [
    ("absent", "is not a snngen run folder (no config.yaml in it)"),
    ("empty", "is not a snngen run folder (no config.yaml in it)"),
    ("half", "has no checkpoint at checkpoints/last.ckpt"),
])
def test_missing_stage1_names_model_stage1_run(kind, fragment, tmp_path, monkeypatch, capsys):
    """``snngen train`` of a prior whose stage-1 run folder is absent, empty, or has a config
    but no checkpoint (its training never finished): one line naming ``model.stage1_run`` and
    the folder, exit 2, nothing written."""
    monkeypatch.chdir(tmp_path)
    stage1 = tmp_path / "stage1"
    if kind in ("empty", "half"):
        stage1.mkdir()
    if kind == "half":
        save_config(build_run_config({"model": {"name": "vqvae"}}), stage1 / "config.yaml")
    (tmp_path / "p.yaml").write_text(
        f"model: {{name: vq_prior, stage1_run: {stage1}, n_layer: 1, n_head: 1, n_embd: 8}}\n"
        + TAIL)
    before = snapshot(tmp_path)
    code = main(["train", "p.yaml"])
    assert_one_line_exit2(code, capsys.readouterr().err, f"model.stage1_run {stage1}: ",
                          fragment)
    assert snapshot(tmp_path) == before
