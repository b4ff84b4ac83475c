"""A vq_prior whose stage 1 is missing names the config key to fix, ``model.stage1_run``."""

from __future__ import annotations

import pytest
from fs_helpers import assert_one_line_exit2, snapshot

from snngen.cli import main
from snngen.config import build_run_config, save_config
from snngen.errors import SnngenError
from snngen.models import DataInfo
from snngen.models.prior import PriorConfig, VQPrior

TAIL = ("data: {name: mnist5k, image_size: 16, batch_size: 500}\n"
        "trainer: {max_steps: 1, accelerator: cpu, progress_bar: false}\n"
        "eval: {metrics: [mse]}\n")


def _half_run(folder):
    """A folder with a vqvae run's config.yaml but no checkpoint (training never finished)."""
    folder.mkdir()
    save_config(build_run_config({"model": {"name": "vqvae"}}), folder / "config.yaml")
    return folder


@pytest.mark.parametrize("kind, fragment", [
    ("absent", "does not exist; give the run folder of a trained vqvae"),
    ("empty", "is not a snngen run folder (no config.yaml in it)"),
    ("half", "has no checkpoint at checkpoints/last.ckpt"),
])
def test_missing_stage1_names_model_stage1_run(kind, fragment, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    stage1 = tmp_path / "stage1"
    if kind == "empty":
        stage1.mkdir()
    elif kind == "half":
        _half_run(stage1)
    with pytest.raises(SnngenError) as err:
        VQPrior(PriorConfig(stage1_run=str(stage1)), DataInfo(1, 16))
    assert str(err.value).startswith("model.stage1_run: ") and fragment in str(err.value)
    (tmp_path / "p.yaml").write_text(
        f"model: {{name: vq_prior, stage1_run: {stage1}, n_layer: 1, n_head: 1, n_embd: 8}}\n"
        + TAIL)
    before = snapshot(tmp_path)
    code = main(["train", "p.yaml"])
    assert_one_line_exit2(code, capsys.readouterr().err, "model.stage1_run: ", fragment)
    assert snapshot(tmp_path) == before
