"""Sample-quality scores computed from features: FID, KID, Inception Score, precision/recall.

Every function takes features, not images (run :func:`~snngen.metrics.features.extract_features`
once per set and pass its :class:`~snngen.metrics.features.Features`, or a plain feature matrix
``[N, D]``), and returns :class:`~snngen.metrics.result.MetricResult` records that name the
number of samples and the feature network.

- FID: Frechet distance between Gaussians fitted to the two sets (Heusel et al. 2017), computed
  here in float64 with symmetric eigendecompositions (exact and fast up to 2048-d; also used on
  cached reference statistics, which torchmetrics' stateful classes cannot take).
- KID: unbiased polynomial-kernel MMD^2 averaged over random subsets (Binkowski et al. 2018),
  with torchmetrics' ``poly_mmd``; seeded subsets.
- IS: ``exp(E_x KL(p(y|x) || p(y)))`` over splits (Salimans et al. 2016), with torchmetrics'
  ``InceptionScore`` on the logits; seeded shuffling.
- Precision / recall: k-NN manifolds of Kynkaanniemi et al. 2019 (k = 3), brute force in chunks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from snngen.metrics.features import Features, MetricsError
from snngen.metrics.result import MetricResult

FeatureSet = Features | Tensor


@dataclass
class GaussianStats:
    """Mean ``mu`` ``[D]`` and covariance ``sigma`` ``[D, D]`` (float64) of ``n`` feature
    vectors of network ``name``: what FID needs of a reference set. Build with
    :meth:`of`; save with ``torch.save(stats.__dict__, path)`` and rebuild with
    ``GaussianStats(**torch.load(path))``."""

    mu: Tensor
    sigma: Tensor
    n: int
    name: str | None = None

    @classmethod
    def of(cls, features: FeatureSet) -> GaussianStats:
        """Fit the Gaussian of a feature set (unbiased covariance, ``N - 1``)."""
        f, name = _matrix(features)
        if f.shape[0] < 2:
            raise MetricsError(f"a Gaussian needs at least 2 feature vectors, got {f.shape[0]}")
        f = f.double()
        return cls(f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1]), f.shape[0], name)


def _matrix(features: FeatureSet) -> tuple[Tensor, str | None]:
    """``(features [N, D], network name or None)`` of a feature set."""
    if isinstance(features, Features):
        return features.features, features.name
    if isinstance(features, Tensor) and features.dim() == 2:
        return features, None
    raise MetricsError(
        f"expected Features or a feature matrix [N, D], got {type(features).__name__}"
        + (f" of shape {list(features.shape)}" if isinstance(features, Tensor) else "")
    )


def _same_network(a: str | None, b: str | None) -> str | None:
    if a is not None and b is not None and a != b:
        raise MetricsError(f"the two sets have features of different networks: {a!r} and {b!r}")
    return a or b


def _psd_sqrt(sigma: Tensor) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix (negative rounding errors clipped)."""
    evals, evecs = torch.linalg.eigh(sigma)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Frechet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (``[D]``, ``[D, D]``).

    ``||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``, where the last
    trace is the sum of the square roots of the eigenvalues of the symmetric PSD matrix
    ``sigma1^(1/2) sigma2 sigma1^(1/2)`` (same eigenvalues as ``sigma1 sigma2``). Float64.
    """
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise MetricsError(
            f"Frechet distance of Gaussians of different dimension: {list(mu1.shape)} vs "
            f"{list(mu2.shape)}"
        )
    root1 = _psd_sqrt((sigma1 + sigma1.T) / 2)
    middle = root1 @ sigma2 @ root1
    tr_covmean = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * tr_covmean
    return float(value)


def fid(fake: FeatureSet | GaussianStats, real: FeatureSet | GaussianStats) -> MetricResult:
    """Frechet distance between the feature Gaussians of ``fake`` and ``real``.

    Either set may be features ``[N, D]`` or precomputed :class:`GaussianStats`. It is the FID
    on Inception features, the paper's autoencoder FD on autoencoder latents.
    """
    s_fake = fake if isinstance(fake, GaussianStats) else GaussianStats.of(fake)
    s_real = real if isinstance(real, GaussianStats) else GaussianStats.of(real)
    value = frechet_distance(s_fake.mu, s_fake.sigma, s_real.mu, s_real.sigma)
    return MetricResult("fid", value, n_real=s_real.n, n_fake=s_fake.n,
                        features=_same_network(s_fake.name, s_real.name))


def kid(
    fake: FeatureSet,
    real: FeatureSet,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
) -> MetricResult:
    """Kernel Inception Distance: unbiased MMD^2 with the kernel ``(x.y / D + 1)^3``.

    Mean (``value``) and standard deviation (``std``) over ``subsets`` random subsets of
    ``subset_size`` of each set (capped at the smaller set; the size used is in ``params``),
    drawn from ``seed``. Computed in float64. About 0 for two samples of one distribution.
    """
    from torchmetrics.image.kid import poly_mmd

    f_fake, name_fake = _matrix(fake)
    f_real, name_real = _matrix(real)
    size = min(subset_size, f_fake.shape[0], f_real.shape[0])
    if size < 2:
        raise MetricsError(f"KID needs at least 2 samples per set, got {size}")
    if subsets < 1:
        raise MetricsError(f"KID subsets must be >= 1, got {subsets}")
    f_fake, f_real = f_fake.double(), f_real.double()
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        i_real = torch.randperm(f_real.shape[0], generator=gen)[:size]
        i_fake = torch.randperm(f_fake.shape[0], generator=gen)[:size]
        values.append(poly_mmd(f_real[i_real], f_fake[i_fake], degree, gamma, coef))
    scores = torch.stack(values)
    return MetricResult(
        "kid", float(scores.mean()), std=float(scores.std(unbiased=False)),
        n_real=f_real.shape[0], n_fake=f_fake.shape[0],
        features=_same_network(name_fake, name_real),
        params={"subsets": subsets, "subset_size": size, "degree": degree, "coef": coef,
                "gamma": gamma, "seed": seed},
    )


def inception_score(
    fake: Features | Tensor, *, splits: int = 10, seed: int = 0, shuffle: bool = True
) -> MetricResult:
    """Inception Score ``exp(E_x KL(p(y|x) || p(y)))`` of class logits ``[N, K]``.

    ``fake``: :class:`Features` with logits (a classifier network) or the logits themselves.
    The samples are shuffled (from ``seed``; ``shuffle=False``: kept in order, part ``i`` being
    samples ``i N / splits`` to ``(i + 1) N / splits``, as SDDPM's code) and cut into ``splits``
    parts; ``value`` is the mean score over the parts, ``std`` their (unbiased) standard
    deviation (``None`` for one split). Ranges from 1 (every prediction the same) to K
    (confident predictions spread evenly over K classes).
    """
    from torchmetrics.image.inception import InceptionScore

    if isinstance(fake, Features):
        if fake.logits is None:
            raise MetricsError(
                f"the Inception Score needs class logits; feature network {fake.name!r} has no "
                "classification head (use features='classifier')"
            )
        logits, name = fake.logits, fake.name
    else:
        logits, name = fake, None
    if logits.dim() != 2 or logits.shape[0] < splits or splits < 1:
        raise MetricsError(
            f"IS needs logits [N, K] with N >= splits >= 1, got {list(logits.shape)} and "
            f"splits={splits}"
        )
    if not shuffle:
        mean, std = _is_in_order(logits.double(), splits)
        return MetricResult(
            "is", mean, std=std if splits > 1 else None, n_fake=logits.shape[0], features=name,
            params={"splits": splits, "shuffle": False},
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics' note that it keeps every feature
        metric = InceptionScore(feature=nn.Identity(), splits=splits)
        metric.update(logits.double())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mean, std = metric.compute()
    return MetricResult(
        "is", float(mean), std=float(std) if splits > 1 else None, n_fake=logits.shape[0],
        features=name, params={"splits": splits, "seed": seed},
    )


def _is_in_order(logits: Tensor, splits: int) -> tuple[float, float]:
    """Mean and unbiased std over ``splits`` consecutive parts of ``exp(mean KL(p || p_part))``."""
    n = logits.shape[0]
    log_p = logits.log_softmax(1)
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits : (i + 1) * n // splits]
        log_marginal = part.exp().mean(0).log()
        scores.append((part.exp() * (part - log_marginal)).sum(1).mean().exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std()) if splits > 1 else 0.0


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances ``[A, B]`` (float64, expanded-square form, clipped at 0)."""
    d = a.square().sum(1, keepdim=True) - 2 * a @ b.T + b.square().sum(1)[None, :]
    return d.clamp_(min=0)


def knn_radii(features: Tensor, k: int = 3, chunk: int = 1024) -> Tensor:
    """Squared distance ``[N]`` from each row of ``features`` ``[N, D]`` to its k-th nearest
    other row (the radius of its k-NN ball; the point itself is not counted)."""
    f = features.double()
    if f.shape[0] <= k:
        raise MetricsError(f"k-NN radii with k={k} need more than {k} samples, got {f.shape[0]}")
    out = [
        _sq_dists(f[s : s + chunk], f).kthvalue(k + 1, dim=1).values
        for s in range(0, f.shape[0], chunk)
    ]
    return torch.cat(out)


def manifold_coverage(
    query: Tensor, support: Tensor, radii: Tensor, chunk: int = 1024
) -> Tensor:
    """Bool ``[Q]``: whether each ``query`` row lies in at least one k-NN ball of ``support``
    (``[S, D]`` with squared radii ``[S]``, boundary included)."""
    q, s = query.double(), support.double()
    out = [
        (_sq_dists(q[i : i + chunk], s) <= radii[None, :]).any(1)
        for i in range(0, q.shape[0], chunk)
    ]
    return torch.cat(out)


def precision_recall(fake: FeatureSet, real: FeatureSet, *, k: int = 3) -> dict[str, MetricResult]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) on k-NN feature manifolds.

    Precision: the share of ``fake`` samples inside the real manifold (the union of balls
    around each real sample reaching its k-th nearest real neighbour); recall: the share of
    ``real`` samples inside the fake manifold. Returns ``{"precision", "recall"}``.
    """
    f_fake, name_fake = _matrix(fake)
    f_real, name_real = _matrix(real)
    name = _same_network(name_fake, name_real)
    precision = manifold_coverage(f_fake, f_real, knn_radii(f_real, k)).double().mean()
    recall = manifold_coverage(f_real, f_fake, knn_radii(f_fake, k)).double().mean()
    common = {"n_real": f_real.shape[0], "n_fake": f_fake.shape[0], "features": name,
              "params": {"k": k}}
    return {
        "precision": MetricResult("precision", float(precision), **common),
        "recall": MetricResult("recall", float(recall), **common),
    }


def reconstruction_mse(recon: Tensor, target: Tensor, *, batch_dim: int = 0) -> MetricResult:
    """Mean squared error over every element of ``recon`` vs ``target`` (same shape; images in
    [0, 1]); ``n_fake`` is the number of items along ``batch_dim`` (1 for time-first events)."""
    if recon.shape != target.shape:
        raise MetricsError(
            f"reconstruction {list(recon.shape)} and target {list(target.shape)} differ in shape"
        )
    value = torch.mean((recon.double() - target.double()).square())
    return MetricResult("mse", float(value), n_fake=recon.shape[batch_dim])
