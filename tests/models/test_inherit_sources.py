"""Weight-inheritance sources read from disk: a run folder or its checkpoint file gives the
trained weights (or the EMA copy), exactly as the trained module holds them."""

from __future__ import annotations

import pytest
import torch

from snngen.config import build_run_config
from snngen.models.inherit import load_source_state
from snngen.runs import read_weights_source
from snngen.training import fit


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=gen)
    from snngen.models import DataInfo

    ds = torch.utils.data.TensorDataset(x, torch.zeros(64, dtype=torch.long))
    cfg = build_run_config({"model": {"name": "tiny"}, "data": {"batch_size": 8},
                            "trainer": {"max_steps": 3, "accelerator": "cpu",
                                        "progress_bar": False, "ema_decay": 0.5}})
    run = tmp_path_factory.mktemp("inherit") / "run"
    lit = fit(cfg, run, ds, DataInfo(channels=1, image_size=8))
    return run, lit


def assert_same_state(got, expected):
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


@pytest.mark.parametrize("as_file", [False, True], ids=["run_folder", "ckpt_file"])
def test_trained_weights_from_disk(trained, as_file):
    run, lit = trained
    source = run / "checkpoints" / "last.ckpt" if as_file else run
    assert_same_state(load_source_state(read_weights_source(source)), lit.model.state_dict())
    ema = lit.ema.model.state_dict()
    assert not all(torch.equal(ema[k], v) for k, v in lit.model.state_dict().items())
    assert_same_state(load_source_state(read_weights_source(source), ema=True), ema)


def test_plain_state_dict_file(tmp_path):
    state = {"a.weight": torch.arange(3.0), "model.b": torch.ones(2)}
    torch.save(state, tmp_path / "w.pt")  # not a snngen checkpoint: keys kept as they are
    assert_same_state(load_source_state(read_weights_source(tmp_path / "w.pt")), state)
