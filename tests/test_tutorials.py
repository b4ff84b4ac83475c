"""The tutorials in docs/tutorials/ run top to bottom (nbclient, a real Jupyter kernel), and what
they print agrees with numbers recomputed here from the files they leave behind.

Each notebook finds the repository through ``$SNNGEN_ROOT`` and writes into
``$SNNGEN_TUTORIAL_DIR`` (a pytest temporary folder), so its run folders can be opened after it
ends. The three take about 80 s together on a loaded 2-core CPU, hence ``slow``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from test_api import feature_cache, keep_classifiers

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TUTORIALS = REPO / "docs" / "tutorials"
# energy per operation of snngen.spiking.monitor (Horowitz 2014, 45 nm), restated here
PJ_PER_SOP, PJ_PER_MAC = 0.9, 4.6


@pytest.fixture(scope="module")
def cache(tmp_path_factory, request):
    """A private ``$SNNGEN_CACHE`` holding the mnist5k classifier (tutorial 1 measures FID)."""
    private = feature_cache(tmp_path_factory, request)
    yield private
    keep_classifiers(private, request)


def execute(name: str, work: Path, cache: Path, monkeypatch) -> str:
    """Run ``docs/tutorials/<name>`` in a fresh kernel started in its own folder (as a user
    would), writing into ``work``; return everything its cells printed to stdout. Any cell
    that raises fails the test (nbclient's CellExecutionError names the cell)."""
    monkeypatch.setenv("SNNGEN_ROOT", str(REPO))
    monkeypatch.setenv("SNNGEN_TUTORIAL_DIR", str(work))
    monkeypatch.setenv("SNNGEN_CACHE", str(cache))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]))
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        f"{name} is committed with outputs; clear them"
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(TUTORIALS)}}).execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.get("name") == "stdout")


def printed_json(text: str, label: str) -> dict:
    """The JSON object a cell printed after ``label``."""
    return json.loads(re.search(rf"^{re.escape(label)} (.*)$", text, flags=re.M).group(1))


def test_first_spiking_generator(tmp_path, cache, monkeypatch):
    from snngen.api import open_run
    from snngen.evaluation import test_batches
    from snngen.plots import training_curves
    from snngen.runs import open_datasets
    from snngen.spiking.neurons import MultiStepNeuron

    text = execute("01_first_spiking_generator.ipynb", tmp_path, cache, monkeypatch)
    run_dir = tmp_path / "runs" / "quickstart_mnist5k"
    assert "steps trained: 30" in text
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["fid"]["n_fake"] == 100  # the notebook's eval.n_samples reached the protocol
    assert f"mse: {metrics['mse']['value']:.4g}" in text
    assert "samples: (32, 1, 32, 32)" in text
    # trainer.log_every_n_steps=3 over 30 steps: Lightning logs at steps 2, 5, ..., 29
    assert training_curves(run_dir)["train/loss"][0] == list(range(2, 30, 3))
    shown = {p.stem for p in (run_dir / "plots").glob("*.png")}
    assert shown == {"firing_rates", "raster", "membrane", "curves"}

    # the firing rates it printed (snngen info's Monitor) against spikes counted here with plain
    # forward hooks on the same 8 test digits and the same seed (posterior sampling)
    run = open_run(run_dir)
    _, test_set = open_datasets(run.cfg)
    x = next(test_batches(test_set, 8, 8))
    counts: dict[str, list[float]] = {}

    def hook(name):
        def count(_mod, _inp, out):
            c = counts.setdefault(name, [0.0, 0.0])
            c[0] += float(out.sum())
            c[1] += out.numel()
        return count

    model = run.model.eval()
    for name, mod in model.named_modules():
        if isinstance(mod, MultiStepNeuron):
            mod.register_forward_hook(hook(name))
    torch.manual_seed(0)
    with torch.no_grad():
        model.reconstruct(x)
    rates = printed_json(text, "firing rates:")
    assert rates.keys() == counts.keys()
    for name, (spikes, total) in counts.items():
        # the same spikes summed in another order: float32 sums of 0/1, exact below 2^24
        assert rates[name] == pytest.approx(spikes / total, abs=1e-7), name
    assert rates["decoder.2"] > 0  # the markdown says the decoder fires, if rarely


def test_spiking_diffusion(tmp_path, cache, monkeypatch):
    text = execute("02_spiking_diffusion.ipynb", tmp_path, cache, monkeypatch)
    assert "steps trained: 20" in text
    assert "last frame == samples: True" in text
    assert (tmp_path / "denoising_chain.png").is_file() and (tmp_path / "samplers.png").is_file()
    cost = printed_json(text, "cost per sample:")
    assert list(cost) == ["ddpm", "ddim", "analytic-dpm", "dpm-solver"]
    for solver, c in cost.items():
        # the energy model, restated: a sum of two products, float64 rounding only
        assert c["energy_pj"] == pytest.approx(PJ_PER_SOP * c["sops"] + PJ_PER_MAC * c["macs"],
                                               rel=1e-12), solver
    # MACs are the layers fed real values (the first conv, time embeddings, shortcuts), whose
    # count does not depend on spikes: 100 network calls cost 10x what 10 calls cost, within
    # the odd layer whose input happens to be binary on one call (< 0.1 %)
    assert cost["ddpm"]["macs"] / cost["ddim"]["macs"] == pytest.approx(10, rel=1e-3)
    assert cost["ddpm"]["sops"] > 5 * cost["dpm-solver"]["sops"]


def test_bring_your_own_model(tmp_path, cache, monkeypatch):
    from snngen.api import open_run
    from snngen.models import register_model
    from snngen.runs import open_datasets

    text = execute("03_bring_your_own_model.ipynb", tmp_path, cache, monkeypatch)
    assert "steps trained: 30" in text
    evaluated = float(re.search(r"snngen.evaluate mse: ([\d.]+)", text).group(1))
    by_hand = float(re.search(r"by hand: +([\d.]+)", text).group(1))
    assert evaluated == by_hand

    # the notebook's model class, taken from its cell and registered here, loads the checkpoint
    # it wrote; its reconstruction MSE recomputed in this process matches what it printed
    nb = nbformat.read(TUTORIALS / "03_bring_your_own_model.ipynb", as_version=4)
    ns: dict = {}
    exec(next(c.source for c in nb.cells if "class NotebookVAE" in c.source), ns)
    register_model("notebook_vae", ns["NotebookVAEConfig"], ns["NotebookVAE"])
    run = open_run(tmp_path / "runs" / "notebook_vae")
    assert run.meta["batches_seen"] == 30
    _, test_set = open_datasets(run.cfg)
    x = torch.stack([test_set[i][0] for i in range(100)])
    mse = ((run.model.reconstruct(x).double() - x.double()) ** 2).mean().item()
    assert mse == pytest.approx(evaluated, abs=5e-7)  # printed with 6 decimals
    totals = printed_json(text, "per sample:")
    assert totals["sops"] > 0 and totals["macs"] > 0  # the v_threshold makes the network spike
    # the energy model, restated: a sum of two products, float64 rounding only
    assert totals["energy_pj"] == pytest.approx(
        PJ_PER_SOP * totals["sops"] + PJ_PER_MAC * totals["macs"], rel=1e-12)
