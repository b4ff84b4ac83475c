"""Default settings of the sample metrics, each the value its paper or reference code uses.

* Inception Score over **10 splits** (Salimans et al. 2016; their TF code and torch-fidelity);
* KID: polynomial kernel ``(x.y / D + 1)^3`` (**degree 3**, gamma ``1/D``, coef 1; Binkowski
  et al. 2018) averaged over **100 subsets of 1,000** (torch-fidelity's defaults, which
  tts_vqvae points to);
* improved precision / recall with **k = 3** nearest neighbours (Kynkaanniemi et al. 2019);
* FID's covariance with the unbiased ``N - 1`` normaliser (pytorch-fid's ``np.cov``).

Each is checked on what a call without arguments records and computes, not only on the
signature, so a default changed anywhere on the way shows.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from snngen.metrics import GaussianStats, inception_score, kid, precision_recall


def _feats(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_inception_score_uses_10_splits_salimans_2016():
    assert inspect.signature(inception_score).parameters["splits"].default == 10
    logits = _feats(40, 5, 0)
    assert inception_score(logits).params["splits"] == 10
    # and 10 splits is what it computes: equal to an explicit splits=10 call, not to 5
    assert inception_score(logits).value == inception_score(logits, splits=10).value
    assert inception_score(logits).value != inception_score(logits, splits=5).value


def test_kid_is_binkowski_cubic_kernel_on_100_subsets_of_1000():
    params = inspect.signature(kid).parameters
    assert (params["degree"].default, params["gamma"].default, params["coef"].default) == (
        3, None, 1.0)
    assert (params["subsets"].default, params["subset_size"].default) == (100, 1000)
    # what a call records: 100 subsets by default (small sets: each subset is capped at 30) ...
    r = kid(_feats(30, 4, 1), _feats(30, 4, 2))
    assert (r.params["subsets"], r.params["subset_size"], r.params["degree"]) == (100, 30, 3)
    # ... of 1,000 when the sets are larger (2 subsets only, to keep the test fast)
    assert kid(_feats(1001, 2, 1), _feats(1001, 2, 2), subsets=2).params["subset_size"] == 1000
    # the kernel by hand on one subset pair: (x.y / 4 + 1)^3, unbiased MMD^2 (diagonals out)
    x, y = _feats(50, 4, 1), _feats(50, 4, 2) + 0.3
    kxx, kyy, kxy = ((x @ x.T / 4 + 1) ** 3, (y @ y.T / 4 + 1) ** 3, (x @ y.T / 4 + 1) ** 3)
    m = 50
    mmd = ((kxx.sum() - kxx.trace()) + (kyy.sum() - kyy.trace())) / (m * (m - 1)) - 2 * kxy.mean()
    one = kid(x, y, subsets=1)
    # one subset of all 50 (a permutation of each set): the same MMD^2 up to summation order
    assert one.value == pytest.approx(float(mmd), rel=1e-9, abs=1e-12)


def test_precision_recall_use_k_3_kynkaanniemi_2019():
    assert inspect.signature(precision_recall).parameters["k"].default == 3
    fake, real = _feats(60, 3, 3), _feats(60, 3, 4) + 0.5
    default = precision_recall(fake, real)
    explicit = precision_recall(fake, real, k=3)
    assert default["precision"].params["k"] == 3
    assert default["precision"].value == explicit["precision"].value
    assert default["recall"].value == explicit["recall"].value


def test_fid_covariance_is_unbiased_like_numpys_cov():
    f = _feats(30, 4, 5)
    stats = GaussianStats.of(f)
    # np.cov(rowvar=False) divides by N - 1 (pytorch-fid's calculate_activation_statistics)
    np.testing.assert_allclose(stats.sigma.numpy(), np.cov(f.numpy(), rowvar=False),
                               rtol=1e-12, atol=1e-15)  # float64, same sums in another order
    np.testing.assert_allclose(stats.mu.numpy(), f.numpy().mean(0), rtol=1e-12, atol=1e-15)
