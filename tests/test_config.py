from pathlib import Path

import pytest

from snngen.config import ConfigError, apply_overrides, build_run_config, load_config, save_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_load_validates_types_and_defaults(tmp_path):
    path = write(tmp_path, "model: {name: tiny, hidden: 8}\ntrainer: {max_steps: 5}\n")
    cfg = load_config(path)
    assert cfg.model.hidden == 8 and cfg.trainer.max_steps == 5
    assert cfg.optim.lr == 1e-3 and cfg.data.name == "mnist5k"


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "model: {name: tiny}\ntrainer: {max_stepz: 5}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "trainer.max_stepz" in str(err.value)


def test_unknown_model_key(tmp_path):
    path = write(tmp_path, "model: {name: tiny, hiden: 3}\n")
    with pytest.raises(ConfigError, match=r"model\.hiden: unknown key"):
        load_config(path)


def test_mistyped_value(tmp_path):
    path = write(tmp_path, "model: {name: tiny}\ndata: {batch_size: lots}\n")
    with pytest.raises(ConfigError, match=r"data\.batch_size: expected int, got 'lots'"):
        load_config(path)


def test_unknown_model_name(tmp_path):
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        load_config(write(tmp_path, "model: {name: nope}\n"))


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("does/not/exist.yaml")


def test_overrides_parse_yaml_values(tmp_path):
    path = write(tmp_path, "model: {name: tiny}\n")
    cfg = load_config(path, ["trainer.max_steps=7", "optim.betas=[0.5,0.9]", "data.root=null",
                             "optim.lr=2e-4"])
    assert cfg.trainer.max_steps == 7 and cfg.optim.betas == [0.5, 0.9]
    assert cfg.data.root is None and cfg.optim.lr == pytest.approx(2e-4)
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["trainer.max_steps"])


def test_round_trip(tmp_path):
    cfg = build_run_config({"model": {"name": "tiny", "hidden": 4}, "trainer": {"seed": 3}})
    save_config(cfg, tmp_path / "out.yaml")
    again = load_config(tmp_path / "out.yaml")
    assert again == cfg
