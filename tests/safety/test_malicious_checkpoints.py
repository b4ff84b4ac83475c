"""Checkpoints are data, never code: a hostile pickle handed to any entry point is refused with
one line (exit 2) and the code inside it never runs (its marker file never appears)."""

from __future__ import annotations

import pytest
from fs_helpers import assert_one_line_exit2, snapshot, write_malicious_checkpoint

from snngen.cli import main
from snngen.config import build_run_config, save_config

FORMATS = ["torch", "legacy"]


def plant(run, marker, fmt):
    write_malicious_checkpoint(run / "checkpoints" / "last.ckpt", marker, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "{run}", "--n", "4", "--out", "{tmp}/s.png"],
        ["eval", "{run}", "--metrics", "mse", "--n", "4", "--out", "{tmp}/m.json"],
        ["info", "{run}"],
        ["train", "{tmp}/c.yaml", "--resume", "{run}"],
    ],
    ids=["sample", "eval", "info", "resume"],
)
def test_run_checkpoint_never_executes(argv, fmt, run_copy, config_dir, capsys):
    marker = config_dir / "PWNED"
    plant(run_copy, marker, fmt)
    before = snapshot(config_dir)
    argv = [a.format(run=run_copy, tmp=config_dir) for a in argv]
    code = main(argv)
    assert not marker.exists(), "the checkpoint's code ran"
    assert_one_line_exit2(code, capsys.readouterr().err, "is not a valid checkpoint",
                          "last.ckpt")
    assert snapshot(config_dir) == before


def assert_train_refused(config_dir, config_text, marker, fragment, capsys):
    """``snngen train`` of ``config_text`` is refused without running the payload or writing."""
    (config_dir / "x.yaml").write_text(config_text)
    before = snapshot(config_dir)
    code = main(["train", "x.yaml"])
    assert not marker.exists()
    assert_one_line_exit2(code, capsys.readouterr().err, "is not a valid checkpoint", fragment)
    assert snapshot(config_dir) == before


TAIL = (
    "trainer: {max_steps: 1, accelerator: cpu, progress_bar: false}\n"
    "eval: {metrics: [mse]}\n"
)


@pytest.mark.parametrize("fmt", FORMATS)
def test_init_from_file_never_executes(fmt, config_dir, capsys):
    marker = config_dir / "PWNED"
    bad = write_malicious_checkpoint(config_dir / "sddpm.ckpt", marker, fmt)
    config = (
        "model: {name: sddpm, ch: 8, ch_mult: [1], num_res_blocks: 1, timesteps: 2, tsm: true,\n"
        f"        diffusion_steps: 10, init_from: {bad}}}\n"
        "data: {name: mnist5k, image_size: 8, batch_size: 500}\n" + TAIL
    )
    assert_train_refused(config_dir, config, marker, "sddpm.ckpt", capsys)


@pytest.mark.parametrize("fmt", FORMATS)
def test_stage1_run_never_executes(fmt, config_dir, capsys):
    marker = config_dir / "PWNED"
    stage1 = config_dir / "stage1"
    stage1.mkdir()
    save_config(build_run_config({"model": {"name": "vqvae"}}), stage1 / "config.yaml")
    plant(stage1, marker, fmt)
    config = (
        f"model: {{name: vq_prior, stage1_run: {stage1}, n_layer: 1, n_head: 1, n_embd: 8}}\n"
        "data: {name: mnist5k, image_size: 16, batch_size: 500}\n" + TAIL
    )
    assert_train_refused(config_dir, config, marker, "last.ckpt", capsys)


def test_inherit_weights_api_refuses_payload(tmp_path):
    """The library entry point (not only the CLI) loads data only."""
    from snngen.files import CheckpointError
    from snngen.runs import read_weights_source

    marker = tmp_path / "PWNED"
    bad = write_malicious_checkpoint(tmp_path / "x.ckpt", marker)
    with pytest.raises(CheckpointError, match="is not a valid checkpoint"):
        read_weights_source(bad)
    assert not marker.exists()


def test_real_checkpoint_still_loads_and_resumes(run_copy, config_dir, capsys):
    """weights_only loading accepts everything snngen itself writes (sample + resume)."""
    assert main(["sample", str(run_copy), "--n", "4", "--out", str(config_dir / "s.png")]) == 0
    assert (config_dir / "s.png").is_file()
    assert main(["train", "c.yaml", "trainer.max_steps=3", "--resume", str(run_copy)]) == 0
    import torch

    meta = torch.load(run_copy / "checkpoints" / "last.ckpt", weights_only=True)["snngen"]
    assert meta["batches_seen"] == 3


def test_run_config_with_python_tag_never_executes(run_copy, config_dir, capsys):
    """A run's config.yaml is read with yaml.safe_load: a python/object tag is refused."""
    marker = config_dir / "PWNED"
    (run_copy / "config.yaml").write_text(
        f"model: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    code = main(["sample", str(run_copy), "--out", str(config_dir / "s.png")])
    assert not marker.exists()
    assert_one_line_exit2(code, capsys.readouterr().err, "config.yaml", "not valid YAML")


def test_checkpoint_claiming_a_huge_image_is_refused(run_copy, config_dir, capsys):
    """data_info is checked before a model is built from it (no 65536-px allocation)."""
    import torch

    ckpt = run_copy / "checkpoints" / "last.ckpt"
    data = torch.load(ckpt, weights_only=True)
    data["snngen"]["data_info"]["image_size"] = 65536
    torch.save(data, ckpt)
    code = main(["info", str(run_copy)])
    assert_one_line_exit2(code, capsys.readouterr().err, "data_info")


def test_eval_out_in_new_folder(run_copy, config_dir):
    assert main(["eval", str(run_copy), "--metrics", "mse", "--n", "8",
                 "--out", "new/dir/m.json"]) == 0
    import json

    assert json.loads((config_dir / "new" / "dir" / "m.json").read_text())["mse"]["n"] == 8
