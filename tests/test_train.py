"""The training harness: data order, exact resume, non-finite loss, checkpoints."""

import pytest
import torch

from snngen.config import build_run_config
from snngen.training import LAST_CKPT, NonFiniteLossError, StepBatchSampler, fit


def make_cfg(steps: int, **model):
    return build_run_config({
        "model": {"name": "tiny", **model},
        "data": {"batch_size": 8},
        "optim": {"name": "adamw", "lr": 1e-2, "weight_decay": 0.01},
        "trainer": {"max_steps": steps, "ckpt_every_n_steps": 3, "accelerator": "cpu",
                    "progress_bar": False, "seed": 1, "ema_decay": 0.9},
    })


def weights(lit):
    return {k: v.clone() for k, v in lit.state_dict().items()}


def test_sampler_is_a_function_of_batch_number():
    s = StepBatchSampler(20, 4, seed=0)
    it = iter(s)
    first = [next(it) for _ in range(12)]
    resumed = StepBatchSampler(20, 4, seed=0, start=7)
    assert next(iter(resumed)) == first[7]
    epoch0 = sorted(i for b in first[:5] for i in b)
    assert epoch0 == list(range(20))  # one epoch visits every item once
    ranks = [StepBatchSampler(20, 2, seed=0, rank=r, world_size=2).batch_indices(3) for r in (0, 1)]
    assert set(ranks[0]).isdisjoint(ranks[1])
    assert sorted(ranks[0] + ranks[1]) == sorted(StepBatchSampler(20, 4, seed=0).batch_indices(3))


def test_exact_resume(tmp_path, tiny_data):
    ds, info = tiny_data
    straight = fit(make_cfg(12), tmp_path / "a", ds, info)
    fit(make_cfg(6), tmp_path / "b", ds, info)
    resumed = fit(make_cfg(12), tmp_path / "b", ds, info, resume=True)
    assert resumed.batches_seen == straight.batches_seen == 12
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=k)
    # and a run that did not resume differs (the test can fail)
    other = fit(make_cfg(6), tmp_path / "c", ds, info)
    assert not torch.allclose(weights(other)["model.dec.weight"], a["model.dec.weight"])


def test_checkpoint_written_atomically(tmp_path, tiny_data):
    ds, info = tiny_data
    fit(make_cfg(4), tmp_path / "r", ds, info)
    ckpt_dir = tmp_path / "r" / "checkpoints"
    assert [p.name for p in ckpt_dir.iterdir()] == [LAST_CKPT]  # no temporary file left
    meta = torch.load(ckpt_dir / LAST_CKPT, weights_only=True)["snngen"]
    assert meta["batches_seen"] == 4 and meta["model_name"] == "tiny"


def test_non_finite_loss_stops_and_keeps_last_good(tmp_path, tiny_data):
    ds, info = tiny_data
    with pytest.raises(NonFiniteLossError, match="non-finite loss loss=nan at step 5"):
        fit(make_cfg(10, nan_after=5), tmp_path / "r", ds, info)
    meta = torch.load(tmp_path / "r" / "checkpoints" / LAST_CKPT, weights_only=True)["snngen"]
    assert meta["batches_seen"] == 3  # the last checkpoint before the failure, untouched
