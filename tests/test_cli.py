"""The command line: help texts, and one-line errors with exit status 2 that write nothing."""

import pytest

from snngen.cli import COMMANDS, main
from snngen.config import build_run_config, save_config
from snngen.training import fit


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help_with_example(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"snngen {command}" in out


def assert_one_line_error(capsys, code, *fragments):
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for f in fragments:
        assert f in err, err


def test_missing_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "nope.yaml"])
    assert_one_line_error(capsys, code, "config file not found: nope.yaml")
    assert files_under(tmp_path) == []


def test_bad_key_in_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("model: {name: tiny}\ntrainer: {max_step: 3}\n")
    code = main(["train", "c.yaml"])
    assert_one_line_error(capsys, code, "c.yaml", "trainer.max_step: unknown key")
    assert files_under(tmp_path) == ["c.yaml"]


def test_folder_that_is_not_a_run(tmp_path, capsys):
    code = main(["sample", str(tmp_path), "--out", str(tmp_path / "s.png")])
    assert_one_line_error(capsys, code, "is not a snngen run folder")
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_n_zero(tmp_path, capsys, command):
    with pytest.raises(SystemExit) as exit_:
        main([command, str(tmp_path), "--n", "0"])
    assert exit_.value.code == 2
    assert "--n: must be >= 1, got 0" in capsys.readouterr().err
    assert files_under(tmp_path) == []


def test_checkpoint_of_another_model(tmp_path, tiny_data, capsys):
    ds, info = tiny_data
    cfg = build_run_config({"model": {"name": "tiny"}, "data": {"batch_size": 8},
                            "trainer": {"max_steps": 1, "accelerator": "cpu",
                                        "progress_bar": False}})
    fit(cfg, tmp_path, ds, info)
    save_config(build_run_config({"model": {"name": "sae"}}), tmp_path / "config.yaml")
    before = files_under(tmp_path)
    code = main(["sample", str(tmp_path), "--out", str(tmp_path / "s.png")])
    assert_one_line_error(capsys, code, "belongs to model 'tiny'", "names model 'sae'")
    assert files_under(tmp_path) == before


def test_train_sample_eval_info_end_to_end(tmp_path, capsys, monkeypatch):
    """One small run through every command; the run folder holds what README promises."""
    import json

    from PIL import Image

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(
        "name: e2e\nmodel: {name: tiny, hidden: 8}\n"
        "data: {name: mnist5k, image_size: 8, batch_size: 500}\n"
        "trainer: {max_epochs: 2, accelerator: cpu, progress_bar: false, ckpt_every_n_steps: 5}\n"
        "eval: {n_samples: 100, metrics: [mse]}\n"
    )
    assert main(["train", "c.yaml", "optim.lr=0.01"]) == 0
    run = tmp_path / "runs" / "e2e"
    files = files_under(run)
    for expected in ("config.yaml", "checkpoints/last.ckpt", "samples.png", "recon.png",
                     "metrics.json", "grids/recon_epoch001.png", "grids/recon_epoch002.png"):
        assert expected in files, files
    assert any(f.endswith("metrics.csv") for f in files)
    assert any("events.out.tfevents" in f for f in files)
    assert "optim:\n  name: adamw\n  lr: 0.01" in (run / "config.yaml").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["mse"]["n"] == 100 and 0 < metrics["mse"]["value"] < 1

    assert main(["sample", str(run), "--n", "6", "--out", "six.png"]) == 0
    assert Image.open(tmp_path / "six.png").size[0] > 0
    assert main(["eval", str(run), "--metrics", "mse", "--n", "50", "--out", "m.json"]) == 0
    again = json.loads((tmp_path / "m.json").read_text())
    assert again["mse"]["n"] == 50
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "energy" in out
