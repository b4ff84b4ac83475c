"""A model from outside snngen: examples/custom_model driven through the command line.

The package declares its model in the entry-point group ``snngen.models``. CI installs it
(``pip install -e examples/custom_model``); where it is not installed, the test makes the same
entry point visible with a ``.dist-info`` folder written from the package's own
``pyproject.toml``, which is what an install writes for entry points.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "custom_model"
CONFIG = EXAMPLE / "configs" / "tiny_spiking_vae_mnist5k.yaml"


def write_dist_info(site: Path, name: str, entry_points: dict[str, str], group: str) -> None:
    """A minimal installed-distribution record declaring ``entry_points`` in ``group``."""
    info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    lines = [f"[{group}]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def plugin_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a ``python -m snngen`` that sees the example package."""
    paths = [str(ROOT / "src")]
    try:
        importlib.metadata.distribution("spiking-vae-example")
    except importlib.metadata.PackageNotFoundError:
        project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
        eps = project["project"]["entry-points"]["snngen.models"]
        write_dist_info(tmp_path / "site", project["project"]["name"], eps, "snngen.models")
        paths += [str(tmp_path / "site"), str(EXAMPLE / "src")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
    return env


def snngen(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snngen", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


CLI_SESSION = """
import sys
from snngen.cli import main

for line in sys.argv[1:]:
    print("$ snngen " + line, flush=True)
    code = main(line.split())
    print("exit", code, flush=True)
    if code:
        sys.exit(code)
"""


def test_custom_model_through_the_command_line(tmp_path):
    """``snngen models | train | sample | eval | info`` on the plug-in, in one fresh interpreter
    (what sees the entry point is the installed package's metadata, as for any user)."""
    env = plugin_env(tmp_path)
    commands = [
        "models",
        f"train {CONFIG} trainer.max_steps=3 trainer.max_epochs=null eval.metrics=[mse] "
        "eval.n_samples=20 name=plugin out_dir=runs",
        "sample runs/plugin --n 4 --out four.png",
        "eval runs/plugin --metrics mse --n 16 --out m.json",
        "info runs/plugin",
    ]
    done = subprocess.run([sys.executable, "-c", CLI_SESSION, *commands], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = done.stdout.split("$ snngen ")[1]
    assert "tiny_spiking_vae" in listed.split(), listed
    run = tmp_path / "runs" / "plugin"
    assert "mse" in json.loads((run / "metrics.json").read_text())
    assert (run / "config.yaml").read_text().count("name: tiny_spiking_vae") == 1
    from PIL import Image

    assert Image.open(tmp_path / "four.png").size[0] > 0
    assert json.loads((tmp_path / "m.json").read_text())["mse"]["n"] == 16
    info = done.stdout.split("$ snngen info")[1]
    assert "parameters" in info and "energy" in info


def test_a_broken_entry_point_names_its_package_and_breaks_nothing_else(tmp_path):
    site = tmp_path / "site"
    write_dist_info(site, "broken-plugin", {"broken_model": "broken_plugin_mod:Model"},
                    "snngen.models")
    (site / "broken_plugin_mod.py").write_text("raise ImportError('needs a missing library')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(site)])}
    (tmp_path / "c.yaml").write_text("model: {name: broken_model}\n")
    bad = snngen(env, "train", "c.yaml", cwd=tmp_path)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1, bad.stderr
    assert "broken-plugin" in lines[0] and "needs a missing library" in lines[0]
    assert not (tmp_path / "runs").exists()  # refused before anything was written
    listed = snngen(env, "models", cwd=tmp_path)  # listing imports no plug-in
    assert listed.returncode == 0 and {"broken_model", "sae", "fsvae"} <= set(listed.stdout.split())


@pytest.mark.parametrize("name", ["sae", "fsvae"])
def test_snngen_models_still_build_with_a_broken_plugin_installed(tmp_path, name, monkeypatch):
    site = tmp_path / "site"
    write_dist_info(site, "broken-plugin", {"broken_model": "broken_plugin_mod:Model"},
                    "snngen.models")
    (site / "broken_plugin_mod.py").write_text("raise ImportError('nope')\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    from snngen.models import get_model_entry

    assert get_model_entry(name).name == name


def test_a_config_file_is_a_leaderboard_row_of_its_own(tmp_path):
    from snngen.board import Board, train_overrides
    from snngen.board.entries import entry
    from snngen.board.settings import BoardSettings

    row = entry(str(CONFIG))
    assert (row.key, row.family, [s.config for s in row.stages]) == (
        "tiny_spiking_vae_mnist5k", "custom", [str(CONFIG)])
    with pytest.raises(KeyError, match="no config file"):
        entry(str(tmp_path / "missing.yaml"))
    with pytest.raises(KeyError, match="or the path of a config file"):
        entry("no_such_row")
    board = Board(tmp_path, BoardSettings(budget_minutes=2.0))
    overrides = train_overrides(board, row.final_stage)  # the whole budget, like any one-stage row
    assert "trainer.max_cpu_minutes=2.0" in overrides
    assert f"out_dir={(tmp_path / 'runs').resolve()}" in overrides
