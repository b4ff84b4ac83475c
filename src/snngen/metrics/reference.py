"""Reference sets and their statistics: which images a protocol compares with, cached once.

Which images the reference reads: ``leaderboard`` (``native_reference``) reads the dataset as
published (its name and root: the 28-px MNIST digits, brought to the classifier's 32 px) whatever
a run's data section pads, resizes or crops, so every run of a dataset, and the leaderboard
itself, measures against one reference; the other protocols read the run's own data section
(:func:`reference_source`).

Reference statistics are computed once per (protocol, dataset, split, image size, feature
network and its weights) and cached under :func:`~snngen.metrics.cache.cache_dir`
``/ref_stats/`` as ``.npz`` with ``mu`` ``[D]`` and ``sigma`` ``[D, D]`` in pytorch-fid's
layout (plus the reference ``features`` ``[N, D]`` that KID and precision/recall need);
:func:`load_ref_stats` reads a user's own pytorch-fid / clean-fid statistics file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from snngen.data import get_dataset
from snngen.files import atomic_output, weights_fingerprint
from snngen.metrics.cache import _to_image, cache_dir
from snngen.metrics.features import (
    FeatureNet,
    Features,
    MetricsError,
    ModuleFeatures,
    extract_features,
)
from snngen.metrics.protocols import MetricProtocol
from snngen.metrics.scores import GaussianStats

REF_STATS_KIND = "ref_stats"


@dataclass(frozen=True)
class DataSource:
    """Which images a reference set reads: dataset ``name``, ``root``, ``image_size`` (the size
    the dataset is opened at) and its ``options`` (as a config's ``data`` section)."""

    name: str
    root: str | None = None
    image_size: int | None = None
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, data: Any) -> DataSource:
        """From a :class:`~snngen.config.DataConfig` (or anything with the same fields)."""
        return cls(data.name, data.root, data.image_size, tuple(sorted(data.options.items())))

    def open(self, split: str):
        """The dataset's ``split`` as this source reads it (:func:`snngen.data.get_dataset`)."""
        return get_dataset(self.name, root=self.root, split=split, image_size=self.image_size,
                           **dict(self.options))


def reference_source(protocol: MetricProtocol, data: Any) -> DataSource:
    """The images ``protocol``'s reference reads for a run whose data section is ``data`` (a
    :class:`~snngen.config.DataConfig`, or a :class:`DataSource` of one): with
    ``native_reference`` the dataset as published (``data``'s name and root only), else
    ``data`` itself with its image size and options. The one place that decides it: ``snngen
    eval``, the leaderboard and :func:`protocol_reference` all ask here."""
    source = data if isinstance(data, DataSource) else DataSource.of(data)
    if protocol.native_reference:
        return DataSource(source.name, source.root)
    return source


class ReferenceImages:
    """Re-iterable batches ``[b, C, H, W]`` in [0, 1] of the first ``n`` items (``None``: all)
    of one split (event items as count images, as the sample side)."""

    def __init__(self, source: DataSource, split: str, n: int | None, batch_size: int = 250):
        self.dataset = source.open(split)
        self.n = len(self.dataset) if n is None else min(n, len(self.dataset))
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        for start in range(0, self.n, self.batch_size):
            stop = min(self.n, start + self.batch_size)
            yield torch.stack([_to_image(torch.as_tensor(self.dataset[i][0]))
                               for i in range(start, stop)])


def reference_size(protocol: MetricProtocol, kind: str, source: DataSource) -> int | None:
    """The size the reference split is opened at: the classifier's fixed size (one scale for
    every model of a dataset), else the run's own image size (the papers' reference images
    are at the training resolution)."""
    return protocol.classifier_size if kind == "classifier" else source.image_size


def ref_stats_path(
    protocol: MetricProtocol, source: DataSource, split: str, net_name: str,
    cache: str | Path | None = None,
) -> Path:
    """``<cache>/ref_stats/<protocol>-v<version>_<dataset>_<split>_<size>px_<net>[_<opts>].npz``:
    one file per (protocol, dataset, split, image size, feature network, data options);
    ``net_name`` should name the network and its weights (:func:`network_fingerprint`)."""
    base = Path(cache).expanduser() if cache is not None else cache_dir()
    slug = "".join(c if c.isalnum() or c in "-._" else "-" for c in net_name)
    opts = ""
    if source.options:
        text = json.dumps(source.options, sort_keys=True, default=str)
        opts = "_" + hashlib.sha256(text.encode()).hexdigest()[:10]
    size = source.image_size or "native"
    name = f"{protocol.name}-v{protocol.version}_{source.name}_{split}_{size}px_{slug}{opts}.npz"
    return base / REF_STATS_KIND / name


def save_ref_stats(path: Path, stats: GaussianStats, features: Tensor, meta: dict) -> Path:
    """Write ``mu``, ``sigma`` (pytorch-fid's layout, float64), ``features`` (float32) and
    ``meta`` (a JSON string) as one ``.npz``, atomically; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, "wb") as f:
        np.savez(f, mu=stats.mu.numpy(), sigma=stats.sigma.numpy(),
                 features=features.float().numpy(), meta=np.array(json.dumps(meta)))
    return path


def load_ref_stats(
    path: str | Path, dim: int | None = None, what: str = "--ref-stats"
) -> GaussianStats:
    """Read a pytorch-fid / clean-fid statistics file (``.npz`` with ``mu`` ``[D]`` and ``sigma``
    ``[D, D]``), without pickles; checks shapes (and ``D == dim`` when given), finiteness and
    symmetry. Any problem is a one-line :class:`MetricsError` naming ``what`` (how the caller
    spells the option) and the file. The file does not say how many images made it: ``n`` is 0.
    """
    path = Path(path).expanduser()
    try:
        with np.load(path, allow_pickle=False) as data:
            if "mu" not in data or "sigma" not in data:
                raise MetricsError(
                    f"{what} {path}: needs arrays 'mu' and 'sigma' (pytorch-fid's .npz), "
                    f"has {sorted(data.keys())}"
                )
            mu, sigma = np.asarray(data["mu"]), np.asarray(data["sigma"])
    except MetricsError:
        raise
    except Exception as err:  # missing, not a zip, a pickle, truncated
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MetricsError(f"{what} {path}: not a readable .npz of mu/sigma ({first})") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]) or not (
        np.issubdtype(mu.dtype, np.floating) and np.issubdtype(sigma.dtype, np.floating)
    ):
        raise MetricsError(
            f"{what} {path}: mu must be a float vector [D] and sigma [D, D], got "
            f"{mu.dtype}{list(mu.shape)} and {sigma.dtype}{list(sigma.shape)}"
        )
    if dim is not None and mu.shape[0] != dim:
        raise MetricsError(
            f"{what} {path}: statistics of {mu.shape[0]}-d features, but the feature "
            f"network gives {dim}-d features"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise MetricsError(f"{what} {path}: mu or sigma has non-finite values")
    scale = max(1.0, float(np.abs(sigma).max()))
    if not np.allclose(sigma, sigma.T, rtol=0, atol=1e-6 * scale):
        raise MetricsError(f"{what} {path}: sigma is not symmetric")
    return GaussianStats(torch.from_numpy(mu).double(), torch.from_numpy(sigma).double(), 0)


def network_fingerprint(net: nn.Module) -> str:
    """10 hex digits of the sha256 of a network's weights (its state dict's tensors in order;
    Inception: its weights file's digest), so a retrained classifier gets new statistics."""
    digest = getattr(net, "weights_sha256", None) or weights_fingerprint(net)
    return digest[:10]


def reference_features(
    protocol: MetricProtocol,
    net: nn.Module,
    source: DataSource,
    *,
    split: str,
    batch_size: int | None = None,
    progress: bool | None = None,
    cache: str | Path | None = None,
) -> tuple[GaussianStats, Features, Path]:
    """Return ``(statistics, features, cache file)`` of the protocol's reference set.

    Computed once per :func:`ref_stats_path` and cached (atomic ``.npz``); later calls read the
    file and run no network.
    """
    if not isinstance(net, FeatureNet):
        net = ModuleFeatures(net)
    path = ref_stats_path(protocol, source, split, f"{net.name}_{network_fingerprint(net)}", cache)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                feats = torch.from_numpy(np.array(data["features"]))
            stats = load_ref_stats(path, feats.shape[1])
            stats = GaussianStats(stats.mu, stats.sigma, feats.shape[0], net.name)
            return stats, Features(feats, None, net.name), path
        except (MetricsError, KeyError, ValueError, OSError):
            pass  # a damaged cache file is recomputed (and replaced)
    images = ReferenceImages(source, split, protocol.reference_n)
    feats = extract_features(images, net, batch_size=batch_size, progress=progress,
                             desc=f"reference {source.name}/{split}")
    stats = GaussianStats.of(feats)
    meta = {"protocol": protocol.name, "version": protocol.version, "dataset": source.name,
            "split": split, "image_size": source.image_size, "features": net.name,
            "n": feats.n}
    save_ref_stats(path, stats, feats.features, meta)
    return stats, Features(feats.features, None, net.name), path
