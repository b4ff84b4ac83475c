"""One call for every sample metric: :func:`evaluate`.

It runs each feature network once per set and computes the requested metrics from the shared
features, returning ``{key: MetricResult}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from torch import Tensor, nn

from snngen.metrics.features import (
    FeatureNet,
    Features,
    MetricsError,
    extract_features,
)
from snngen.metrics.networks import feature_network
from snngen.metrics.result import MetricResult
from snngen.metrics.scores import fid, inception_score, kid, precision_recall

#: metric names :func:`evaluate` knows, and the result keys each gives
METRICS: dict[str, tuple[str, ...]] = {
    "fid": ("fid",),
    "kid": ("kid",),
    "is": ("is",),
    "pr": ("precision", "recall"),
    "aefd": ("ae_fd",),
}
#: metrics that compare against a real set
NEEDS_REAL = {"fid", "kid", "pr", "aefd"}

Images = Tensor | Iterable | Features


def evaluate(
    fake: Images,
    real: Images | None = None,
    metrics: Sequence[str] = ("fid", "kid"),
    features: str | nn.Module = "classifier",
    *,
    dataset: str | None = None,
    root: str | Path | None = None,
    batch_size: int | None = None,
    autoencoder: str | nn.Module = "autoencoder",
    seed: int = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
    pr_k: int = 3,
    progress: bool | None = None,
) -> dict[str, MetricResult]:
    """Compute sample metrics of generated images ``fake`` against real images ``real``.

    ``fake`` / ``real``: images ``[N, C, H, W]`` in [0, 1], an iterable of such batches (or of
    ``(images, labels)``; re-iterable, e.g. a DataLoader, when ``"aefd"`` is asked with other
    metrics: each network reads the set once), or precomputed :class:`Features` of the chosen
    network.
    ``metrics``: any of ``"fid"``, ``"kid"``, ``"is"`` (no real set needed), ``"pr"``
    (precision and recall, k = ``pr_k``) and ``"aefd"`` (FSVAE's autoencoder Frechet distance,
    on ``autoencoder``: a feature-network name or an encoder module). ``features``: the network
    for fid/kid/is/pr, a name for :func:`feature_network` (``"classifier"``, ``"inception"``,
    ``"classifier:<dataset>"`` ...) or a module. ``dataset`` / ``root``: which cached
    classifier / autoencoder to use when a name does not say. ``batch_size``: images per
    forward pass (default: the network's own). ``seed``: KID subsets and IS shuffling.

    Returns ``{"fid", "kid", "is", "precision", "recall", "ae_fd"}`` restricted to what was
    asked, each a :class:`MetricResult` with the sample counts and the feature network.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise MetricsError(
            f"unknown metrics {unknown or list(metrics)}; choose from {list(METRICS)}"
        )
    if real is None and NEEDS_REAL.intersection(metrics):
        raise MetricsError(
            f"metrics {sorted(NEEDS_REAL.intersection(metrics))} compare with real images; "
            "pass real=..."
        )
    out: dict[str, MetricResult] = {}
    main = [m for m in metrics if m in ("fid", "kid", "is", "pr")]
    if main:
        net = _network(features, dataset, root)
        f_fake = extract_features(fake, net, batch_size=batch_size, progress=progress,
                                  desc="fake")
        f_real = None
        if real is not None and NEEDS_REAL.intersection(main):
            f_real = extract_features(real, net, batch_size=batch_size, progress=progress,
                                      desc="real")
        if "fid" in main:
            out["fid"] = fid(f_fake, f_real)
        if "kid" in main:
            out["kid"] = kid(f_fake, f_real, subsets=kid_subsets, subset_size=kid_subset_size,
                             seed=seed)
        if "is" in main:
            out["is"] = inception_score(f_fake, splits=is_splits, seed=seed)
        if "pr" in main:
            out.update(precision_recall(f_fake, f_real, k=pr_k))
    if "aefd" in metrics:
        from snngen.metrics.autoencoder import ae_frechet_distance

        encoder = _network(autoencoder, dataset, root)
        out["ae_fd"] = ae_frechet_distance(fake, real, encoder, batch_size=batch_size,
                                           progress=progress)
    return out


def _network(spec: str | nn.Module, dataset: str | None, root: str | Path | None) -> FeatureNet:
    return feature_network(spec, dataset=dataset, root=root)

