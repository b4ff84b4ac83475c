"""Conversion defaults that its documentation cites, pinned by name and by behaviour.

* Threshold balancing at the **99.9th percentile** of each ReLU's positive activations
  ("robust normalisation", Rueckauer et al. 2017, as ``snngen.conversion`` cites it), the same
  default in :func:`calibrate_thresholds`, :func:`convert_unet` and :func:`convert_model`.
* IF neurons with subtractive reset and the membrane starting at **half the threshold**
  (Fast-SNN, and SDM's ANN2SNN per the seed facts): a constant input ``a`` in ``[0, theta]``
  is rounded to the nearest of ``T + 1`` levels, so ``T = 1`` fires exactly when
  ``a >= theta / 2``.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from conftest import noisy_batches

from snngen.conversion import ConvertedIF, calibrate_thresholds, convert_model, convert_unet


@pytest.mark.parametrize("fn", [calibrate_thresholds, convert_unet, convert_model])
def test_default_percentile_is_rueckauer_2017_robust_normalisation_99_9(fn):
    assert inspect.signature(fn).parameters["percentile"].default == 99.9


def test_thresholds_by_default_are_the_99_9th_percentile_of_positive_activations(
    trained_ann, schedule
):
    """Without a percentile argument, each threshold is numpy's 99.9th percentile (linear
    interpolation, the same rule as torch.quantile) of that ReLU's positive outputs. rel 1e-4:
    torch.quantile works in the activations' float32, whose interpolation position
    ``q (n - 1)`` for n ~ 1e4 values is off by up to ~1e-3 of a rank (measured: 1.1e-6)."""
    batches = noisy_batches(schedule, 3, seed=1)
    acts = trained_ann.activations()
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in acts}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: seen[n].append(o.flatten()))
             for n, m in acts.items()]  # fmt: skip
    with torch.no_grad():
        for x, t in batches:
            trained_ann(x, t)
    for h in hooks:
        h.remove()
    got = calibrate_thresholds(trained_ann, batches)
    for name, outs in seen.items():
        pos = torch.cat(outs)
        pos = pos[pos > 0].double().numpy()
        assert got[name] == pytest.approx(np.percentile(pos, 99.9), rel=1e-4), name
        # the neighbouring choices (99.99, 99) are 5% or more away here: the pin discriminates
        for other in (99.99, 99.0):
            assert abs(np.percentile(pos, other) / got[name] - 1) > 1e-2, (name, other)


@pytest.mark.parametrize("theta", [1.0, 0.5])  # binary fractions: exact arithmetic
def test_if_membrane_starts_at_half_the_threshold(theta):
    """One step: input just below theta / 2 stays silent, theta / 2 fires (v = theta)."""
    x = torch.tensor([[0.5 * theta - 1e-9, 0.5 * theta, 0.0, theta]], dtype=torch.float64)
    torch.testing.assert_close(ConvertedIF(theta)(x), torch.tensor(
        [[0.0, theta, 0.0, theta]], dtype=torch.float64))
    # subtractive reset, 0.75 theta for 4 steps (in units of theta): v = 0.5 + 0.75 = 1.25
    # spike -> 0.25; 1.0 spike -> 0; 0.75; 1.5 spike -> 0.5: 3 spikes = round(4 * 0.75)
    steps = ConvertedIF(theta)(torch.full((4, 1), 0.75 * theta, dtype=torch.float64))
    assert steps.flatten().tolist() == [theta, theta, 0.0, theta]
