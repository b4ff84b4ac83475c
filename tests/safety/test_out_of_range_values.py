"""Numbers float32 cannot hold are refused with the config, before anything is written.

``snngen train CFG optim.lr=1e38`` used to pass validation and stop at the first optimiser step
with torch's "value cannot be converted to type float without overflow" traceback (exit 1),
leaving a run folder with an empty ``checkpoints/``. Every float key (snngen's sections and the
models' own) now refuses NaN, infinities and magnitudes beyond float32; the learning rate is
checked against the scalars torch's optimisers hand their float32 kernels. The bound is pinned
against torch itself: a learning rate just inside it steps, one just beyond it overflows.
"""

from __future__ import annotations

import pytest
import torch
from fs_helpers import assert_one_line_exit2, snapshot

from snngen.cli import main
from snngen.config import build_run_config
from snngen.errors import ConfigError

#: float32's largest value, from torch (an independent source for the bound)
FLOAT32_MAX = torch.finfo(torch.float32).max

CASES = {
    # override(s)                                        fragments of the one line
    "lr_1e38": (["optim.lr=1e38"], ["optim.lr", "1e+38", "float32"]),
    "lr_nan": (["optim.lr=nan"], ["optim.lr", "finite", "nan"]),
    "lr_inf": (["optim.lr=inf"], ["optim.lr", "finite", "inf"]),
    "lr_yaml_inf": (["optim.lr=.inf"], ["optim.lr", "finite", "inf"]),
    "lr_neg_inf": (["optim.lr=-inf"], ["optim.lr", "-inf"]),
    "lr_1e39": (["optim.lr=1e39"], ["optim.lr", "float32", "1e39"]),
    "lr_huge_int": (["optim.lr=" + "9" * 400], ["optim.lr", "float32"]),
    "sgd_lr_4e38": (["optim.name=sgd", "optim.lr=4e38"], ["optim.lr", "float32", "4e38"]),
    "adamw_decay": (["optim.lr=1e37", "optim.weight_decay=100"],
                    ["optim.lr", "lr * weight_decay", "1e+39"]),
    "lr_scaled": (["optim.lr=1e35", "optim.lr_reference_batch=1"],
                  ["optim.lr", "lr_reference_batch", "5e+37"]),
    "weight_decay_1e39": (["optim.weight_decay=1e39"], ["optim.weight_decay", "1e39"]),
    "weight_decay_nan": (["optim.weight_decay=nan"], ["optim.weight_decay", "nan"]),
    "beta_nan": (["optim.betas=[0.9, .nan]"], ["optim.betas[1]", "nan"]),
    "grad_clip_inf": (["trainer.grad_clip=inf"], ["trainer.grad_clip", "inf"]),
    "grad_clip_1e39": (["trainer.grad_clip=1e39"], ["trainer.grad_clip", "1e39"]),
    "ema_decay_nan": (["trainer.ema_decay=nan"], ["trainer.ema_decay", "nan"]),
    "max_epochs_inf": (["trainer.max_steps=null", "trainer.max_epochs=inf"],
                       ["trainer.max_epochs", "inf"]),
    "max_epochs_1e30": (["trainer.max_steps=null", "trainer.max_epochs=1e30"],
                        ["trainer.max_epochs=1e+30", "2**62"]),
    "max_steps_1e30": (["trainer.max_steps=" + "1" + "0" * 30], ["trainer.max_steps", "2**62"]),
    "max_cpu_minutes_nan": (["trainer.max_cpu_minutes=nan"], ["trainer.max_cpu_minutes", "nan"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_out_of_range_value_refused_before_writing(case, config_dir, capsys):
    overrides, fragments = CASES[case]
    before = snapshot(config_dir)
    code = main(["train", "c.yaml", *overrides])
    assert_one_line_exit2(code, capsys.readouterr().err, *fragments)
    assert snapshot(config_dir) == before  # no run folder, no empty checkpoints/


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e39", "-1e39"])
def test_model_float_keys_refuse_non_finite(value):
    """A model's own float keys (here the SAE's neuron threshold) are checked the same way."""
    with pytest.raises(ConfigError, match=r"model\.v_threshold: must be a finite number"):
        build_run_config({"model": {"name": "sae", "v_threshold": value}})


def test_largest_float32_accepted_beyond_refused():
    """The bound is float32's largest value exactly (``torch.finfo``), not a rounder number."""
    ok = build_run_config({"model": {"name": "sae", "v_threshold": FLOAT32_MAX}})
    assert ok.model.v_threshold == FLOAT32_MAX
    beyond = float(torch.nextafter(torch.tensor(FLOAT32_MAX, dtype=torch.float64),
                                   torch.tensor(float("inf"), dtype=torch.float64)))
    with pytest.raises(ConfigError, match="float32"):
        build_run_config({"model": {"name": "sae", "v_threshold": beyond}})


def _first_step(name: str, lr: float, betas: tuple[float, float], weight_decay: float
                ) -> torch.Tensor | None:
    """One step of torch's own optimiser on a small float32 weight (1e-3, so that a decay
    factor near float32's largest value leaves it finite): the weight after the step, or None
    when torch refuses the step ("value cannot be converted to type float without overflow")."""
    w = torch.nn.Parameter(torch.full((3,), 1e-3))
    w.grad = torch.full((3,), 0.5)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    kw = {"momentum": betas[0]} if name == "sgd" else {"betas": betas}
    try:
        cls([w], lr=lr, weight_decay=weight_decay, **kw).step()
    except RuntimeError as err:
        assert "overflow" in str(err), err
        return None
    return w.detach()


# (optimiser, betas, weight decay, the largest lr float32 takes, worked out by hand)
EDGES = [
    ("adam", (0.9, 0.999), 0.0, FLOAT32_MAX * (1 - 0.9)),  # step size lr / (1 - beta1)
    ("adamw", (0.5, 0.95), 0.0, FLOAT32_MAX * (1 - 0.5)),
    ("adamw", (0.9, 0.999), 1e3, FLOAT32_MAX / 1e3),  # decay factor 1 - lr * wd
    ("adam", (0.0, 0.999), 0.0, FLOAT32_MAX),
    ("sgd", (0.9, 0.999), 0.0, FLOAT32_MAX),  # step lr
]


@pytest.mark.parametrize("name, betas, wd, edge", EDGES,
                         ids=["adam", "adamw_beta0.5", "adamw_decay", "adam_beta0", "sgd"])
def test_lr_bound_is_where_torch_overflows(name, betas, wd, edge):
    """Just inside the bound (1e-6 below: far above double rounding, far below the distance to
    the next bound) the config passes and torch's step leaves a finite float32 weight; just
    beyond it the config refuses, and torch refuses the step (Adam's step size, SGD's lr) or
    turns the weight into -inf (AdamW's decay factor, cast to float32 before it multiplies)."""
    optim = {"name": name, "betas": list(betas), "weight_decay": wd}
    inside, beyond = edge * (1 - 1e-6), edge * (1 + 1e-6)
    build_run_config({"model": {"name": "sae"}, "optim": {**optim, "lr": inside}})
    w = _first_step(name, inside, betas, wd)
    assert w is not None and bool(torch.isfinite(w).all()), w
    with pytest.raises(ConfigError, match=r"optim\.lr: .*float32"):
        build_run_config({"model": {"name": "sae"}, "optim": {**optim, "lr": beyond}})
    w = _first_step(name, beyond, betas, wd)
    assert w is None or not bool(torch.isfinite(w).all()), w
