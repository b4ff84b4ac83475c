"""FID, KID, IS, precision/recall and MSE against closed forms and brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from snngen.metrics import (
    Features,
    GaussianStats,
    MetricsError,
    fid,
    frechet_distance,
    inception_score,
    kid,
    precision_recall,
    reconstruction_mse,
)


def gaussian(n, mean, cov, seed):
    gen = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(torch.as_tensor(cov, dtype=torch.float64))
    z = torch.randn(n, len(mean), generator=gen, dtype=torch.float64)
    return torch.as_tensor(mean, dtype=torch.float64) + z @ chol.T


def analytic_fd(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


# ----------------------------------------------------------------------------- FID


def test_frechet_distance_diagonal_closed_form():
    # diagonal covariances: FD = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 0.25])
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    expected = 1 + 4 + ((a.sqrt() - b.sqrt()) ** 2).sum().item()
    got = frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b))
    assert got == pytest.approx(expected, abs=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_on_full_covariances():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    got = frechet_distance(*(torch.from_numpy(t) for t in (mu1, s1, mu2, s2)))
    assert got == pytest.approx(analytic_fd(mu1, s1, mu2, s2), rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero():
    f = torch.randn(500, 32, generator=torch.Generator().manual_seed(1))
    result = fid(Features(f, None, "net"), Features(f, None, "net"))
    assert abs(result.value) < 1e-8
    assert (result.n_fake, result.n_real, result.features) == (500, 500, "net")


def test_fid_of_sampled_gaussians_matches_the_analytic_value():
    mu1, mu2 = np.array([0.0, 0.0, 0.0]), np.array([1.0, -0.5, 0.0])
    s1 = np.array([[1.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 0.5]])
    s2 = np.array([[2.0, -0.3, 0.0], [-0.3, 1.0, 0.0], [0.0, 0.0, 1.5]])
    expected = analytic_fd(mu1, s1, mu2, s2)
    x1, x2 = gaussian(20000, mu1, s1, 0), gaussian(20000, mu2, s2, 1)
    got = fid(x1, x2).value
    # sampling error of the mean and covariance at n = 20000 is ~1%; the value is ~1.9
    assert got == pytest.approx(expected, rel=0.05)
    assert fid(x1, GaussianStats.of(x2)).value == pytest.approx(got, abs=1e-9)


def test_fid_agrees_with_torchmetrics():
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Identity(torch.nn.Module):
        num_features = 8

        def forward(self, x):
            return x

    gen = torch.Generator().manual_seed(2)
    real, fake = torch.randn(300, 8, generator=gen), torch.rand(200, 8, generator=gen) * 2
    metric = FrechetInceptionDistance(feature=Identity())
    metric.update(real, real=True)
    metric.update(fake, real=False)
    assert fid(fake, real).value == pytest.approx(float(metric.compute()), rel=1e-4)


def test_fid_rejects_features_of_different_networks():
    f = torch.randn(10, 4)
    with pytest.raises(MetricsError, match="different networks"):
        fid(Features(f, None, "a"), Features(f, None, "b"))


# ----------------------------------------------------------------------------- KID


def brute_force_mmd2(x, y):
    """Unbiased MMD^2 with kernel (x.y/d + 1)^3, by explicit sums."""
    d = x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    return xx + yy - 2 * xy


def test_kid_equals_the_brute_force_unbiased_mmd():
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(12, 5, generator=gen).double(), torch.randn(12, 5, generator=gen).double()
    result = kid(y, x, subsets=1, subset_size=12)  # the whole sets: order does not matter
    assert result.value == pytest.approx(brute_force_mmd2(x, y), rel=1e-9)
    assert result.params["subset_size"] == 12


def test_kid_is_about_zero_for_one_distribution_and_positive_for_two():
    eye = np.eye(8)
    same = kid(gaussian(1000, [0.0] * 8, eye, 4), gaussian(1000, [0.0] * 8, eye, 5),
               subsets=10, subset_size=200)
    shifted = kid(gaussian(1000, [0.5] * 8, eye, 6), gaussian(1000, [0.0] * 8, eye, 7),
                  subsets=10, subset_size=200)
    # unbiased estimator: one distribution gives ~0 (within one subset's spread), two clearly
    # different ones a value many spreads above 0
    assert abs(same.value) < 2 * same.std
    assert shifted.value > 5 * shifted.std
    assert abs(same.value) < 0.05 * shifted.value


def test_kid_caps_the_subset_size_and_is_seeded():
    a, b = torch.randn(50, 4), torch.randn(80, 4)
    r1, r2 = kid(a, b, subsets=5, seed=1), kid(a, b, subsets=5, seed=1)
    assert r1.params["subset_size"] == 50
    assert r1.value == r2.value and r1.std == r2.std
    assert kid(a, b, subsets=5, seed=2).value != r1.value


# ----------------------------------------------------------------------------- IS


def test_inception_score_of_uniform_predictions_is_one():
    assert inception_score(torch.zeros(100, 10)).value == pytest.approx(1.0, abs=1e-12)


def test_inception_score_of_confident_even_predictions_is_num_classes():
    labels = torch.arange(10).repeat(30)
    logits = 60.0 * torch.nn.functional.one_hot(labels, 10).double()
    result = inception_score(Features(torch.zeros(300, 1), logits, "clf"), splits=1)
    assert result.value == pytest.approx(10.0, rel=1e-9)
    assert result.std is None and result.features == "clf" and result.n_fake == 300


def test_inception_score_matches_its_formula():
    logits = torch.randn(64, 5, generator=torch.Generator().manual_seed(8)).double() * 2
    p = logits.softmax(1).numpy()
    expected = math.exp(np.mean(np.sum(p * (np.log(p) - np.log(p.mean(0))), axis=1)))
    assert inception_score(logits, splits=1).value == pytest.approx(expected, rel=1e-9)
    ten = inception_score(logits.repeat(10, 1), splits=10)  # each split a shuffle of 64 rows
    assert 1 <= ten.value <= 5 and ten.std is not None


def test_inception_score_needs_logits():
    with pytest.raises(MetricsError, match="logits"):
        inception_score(Features(torch.randn(20, 4), None, "inception-v3-pool3"))


# ----------------------------------------------------------------------------- precision / recall


def brute_force_pr(fake, real, k):
    def radii(s):
        return [sorted(float((a - b).norm()) for j, b in enumerate(s) if j != i)[k - 1]
                for i, a in enumerate(s)]

    def inside(q, s, r):
        return np.mean([any(float((a - b).norm()) <= rb for b, rb in zip(s, r, strict=True))
                        for a in q])

    return inside(fake, real, radii(real)), inside(real, fake, radii(fake))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_precision_recall_match_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    real, fake = torch.randn(9, 2, generator=gen), torch.randn(7, 2, generator=gen) * 1.5 + 0.5
    got = precision_recall(fake, real, k=3)
    p, r = brute_force_pr(fake.double(), real.double(), 3)
    assert got["precision"].value == pytest.approx(p)
    assert got["recall"].value == pytest.approx(r)
    assert got["precision"].params == {"k": 3}


def test_precision_recall_of_a_set_with_itself_are_one():
    f = torch.randn(300, 16, generator=torch.Generator().manual_seed(9))
    got = precision_recall(f, f)
    assert got["precision"].value == 1.0 and got["recall"].value == 1.0


def test_precision_recall_of_disjoint_sets_are_zero():
    real = torch.randn(50, 3)
    got = precision_recall(real + 100, real)
    assert got["precision"].value == 0.0 and got["recall"].value == 0.0


def test_precision_recall_radius_excludes_the_point_itself():
    # on a line 0, 1, 2, ..., the 1-NN radius is 1, so a point at 0.5 off the line's end is
    # inside with k = 1 but 1.5 off is not
    real = torch.arange(10.0)[:, None]
    out = precision_recall(torch.tensor([[-0.5], [-1.5]]), real, k=1)
    assert out["precision"].value == 0.5


# ----------------------------------------------------------------------------- MSE


def test_reconstruction_mse():
    a, b = torch.zeros(4, 1, 2, 2), torch.full((4, 1, 2, 2), 0.5)
    result = reconstruction_mse(a, b)
    assert result.value == pytest.approx(0.25) and result.n_fake == 4
    with pytest.raises(MetricsError, match="differ in shape"):
        reconstruction_mse(a, b[:2])


def test_metric_result_to_dict_is_json_ready():
    import json

    d = fid(torch.randn(20, 3), torch.randn(20, 3)).to_dict()
    json.dumps(d)
    assert set(d) >= {"name", "value", "n_real", "n_fake", "features", "params"}
    assert list(itertools.islice(d, 1)) == ["name"]
