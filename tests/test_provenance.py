"""A new run records where its numbers came from (config.yaml's header, metrics.json), ``snngen
info`` shows it, ``snngen train`` writes curves.png and ``snngen plot`` the pictures. One tiny
SAE trained by the command (3 steps of 8 digits, mse only); the expected values are computed
here independently: ``git rev-parse`` in the repository, ``torch.__version__``, the CPU's model
name from /proc/cpuinfo, the command line as typed."""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from snngen import provenance
from snngen.cli import main
from snngen.results import read_metrics_file

REPO = Path(__file__).resolve().parents[1]
ARGS = [
    str(REPO / "configs" / "sae_mnist5k.yaml"), "model.channels=[4,8,8]", "model.latent_dim=4",
    "model.num_steps=2", "data.batch_size=8", "data.num_workers=0", "trainer.max_steps=3",
    "trainer.accelerator=cpu", "trainer.progress_bar=false", "trainer.grids_every_epoch=false",
    "trainer.log_every_n_steps=1", "eval.metrics=[mse]", "eval.batch_size=8",
    "eval.n_samples=8", "name=prov",
]


def _git_head() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=False)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert main(["train", *ARGS]) == 0
    return root / "runs" / "prov"


def test_metrics_json_names_snngen_torch_commit_device_and_command(run):
    doc = read_metrics_file(run / "metrics.json")
    prov = doc["provenance"]
    assert prov["snngen"] == "0.1.0" and prov["torch"] == torch.__version__
    assert prov["git_commit"] == _git_head()  # None where the tests do not run in a checkout
    if prov["git_commit"] is not None:
        assert isinstance(prov["git_dirty"], bool)
    assert prov["device"] == f"cpu: {_cpu()}"
    # the command as typed, each argument shell-quoted (brackets are glob characters)
    assert prov["command"] == " ".join(shlex.quote(a) for a in ["snngen", "train", *ARGS])
    assert doc["results"]["snngen"]["mse"]["how"]["provenance"] == prov  # kept per result


def test_config_header_records_the_same_and_still_loads(run):
    text = (run / "config.yaml").read_text()
    head = provenance.read_header(text)
    assert head["torch"] == torch.__version__ and head["snngen"] == "0.1.0"
    assert head["git_commit"] == str(_git_head() or "null")
    assert head["command"].startswith("snngen train ") and "name=prov" in head["command"]
    assert yaml.safe_load(text)["model"]["name"] == "sae"  # comments only


def test_info_shows_provenance(run, capsys):
    assert main(["info", str(run), "--batch", "2", "--json", str(run / "info.json")]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and f"device:  cpu: {_cpu()}" in out
    saved = json.loads((run / "info.json").read_text())["provenance"]
    assert saved["trained"]["torch"] == torch.__version__
    assert any(k.startswith("evaluated") for k in saved)


def test_train_writes_curves_and_plot_writes_pictures(run, capsys):
    assert (run / "curves.png").is_file()
    capsys.readouterr()
    assert main(["plot", str(run), "--n", "2", "--layers", "encoder.2,decoder.2"]) == 0
    printed = capsys.readouterr().out.split()
    names = sorted(Path(p).name for p in printed)
    assert names == ["curves.png", "firing_rates.png", "membrane.png", "raster.png"]
    assert all(Path(p).parent == run / "plots" for p in printed)


def test_plot_refuses_bad_values_in_one_line_writing_nothing(run, capsys):
    capsys.readouterr()
    for flags, fragment in ((["--layers", "nope"], "--layers nope: not a spiking layer"),
                            (["--only", "chain,bogus"], "--only bogus: choose from"),
                            (["--solver", "ddim"], "--solver does not apply to model 'sae'")):
        out = run / "elsewhere"
        assert main(["plot", str(run), "--out", str(out), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and fragment in err, err
        assert not out.exists()


def test_plot_from_python_names_its_keyword_arguments(run):
    """``snngen.plot`` speaks of ``layers=`` / ``only=`` / ``solver``, not of the flags."""
    import snngen
    from snngen.errors import SnngenError

    out = run / "elsewhere"
    for kwargs, start in (({"layers": ["nope"]}, "layers=nope: not a spiking layer"),
                          ({"only": ["chain", "bogus"]}, "only=bogus: choose from"),
                          ({"solver": "ddim"}, "solver does not apply to model 'sae'")):
        with pytest.raises(SnngenError) as err:
            snngen.plot(run, out=out, **kwargs)
        assert str(err.value).startswith(start), err.value
        assert "--" not in str(err.value)
        assert not out.exists()
