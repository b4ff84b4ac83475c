"""Named metric protocols: one object says how a paper's numbers were measured.

A :class:`MetricProtocol` fixes everything that changes a FID/KID/IS value besides the samples:
the feature network, how images are quantised and resized for it, how many samples are drawn,
which split of the dataset is the reference (and its statistics), and the IS splits. Every
``metrics.json`` records the protocol's name and version (:meth:`MetricProtocol.record`), so a
number always says how it was made. The protocols:

=========  ===================  ==========================  =======  ==========================
name       features             preprocessing               samples  reference
=========  ===================  ==========================  =======  ==========================
snngen     in-package           bilinear (antialiased) to   1,000    test split (first 10,000)
           classifier at 32 px  32 px; Inception (TF1
           (Inception where a   bilinear to 299) where a
           set has no labels)   dataset has no classifier
leaderb.   in-package           bilinear (antialiased) to   5,000    whole training split
           classifier at 32 px  32 px (``leaderboard``)                  (mnist5k: 4,500)
sddpm      Inception pool3      float, torch bilinear to    50,000   whole training split; IS
                                299 (SDDPM's score/ code)            in 10 splits, in order
fsvae      Inception pool3      8-bit, PIL bicubic to 299   5,000    whole test split (CelebA:
                                (clean-fid)                          valid); IS on 2,560 / 10
tts_vqvae  Inception pool3      8-bit, torch bilinear to    50,000   whole training split
                                299 (pytorch-fid)
=========  ===================  ==========================  =======  ==========================

``snngen`` is the fast default: one fixed feature network per dataset (the 32-px classifier)
whatever a model's image size, so every snngen number on a dataset is on one scale. The other
three reproduce the papers' conventions: SDDPM/SDM's own ``score/`` code (pytorch-fid's
Inception: float samples, ``F.interpolate`` bilinear with half-pixel centres, IS from the
bias-free logits in 10 consecutive splits) on 50,000 samples against training-set statistics;
FSVAE uses clean-fid on 5,000 samples against the full test split and IS on 2,560 samples in 10
splits; tts_vqvae points to pytorch-fid for FID (image files: 8-bit) and torch-fidelity for
KID/IS/precision-recall (KID: 100 subsets of 1,000; IS: 10 splits; torch-fidelity itself
resizes with TF1's bilinear: snngen extracts one feature set, pytorch-fid's). The network is
the bundled TF-Inception port, which maps pixel ``p`` to ``p / 128 - 1`` as TF-FID (pytorch-fid:
``2 p / 255 - 1``, 0.4% apart).

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from snngen.metrics.features import FeatureNet, Features, MetricsError, extract_features
from snngen.metrics.inception import sha256_file
from snngen.metrics.result import MetricResult
from snngen.metrics.scores import GaussianStats

#: datasets without class labels: no in-package classifier, so ``snngen`` uses Inception
UNLABELLED_DATASETS = ("celeba", "celeba_hq", "lsun_bedroom", "lsun_church")
#: feature dimension of each feature network kind
FEATURE_DIMS = {"classifier": 128, "inception": 2048}
#: the resize methods a protocol may name
RESIZES = ("bilinear-antialias", "tf1-bilinear", "torch-bilinear", "pil-bicubic")
REF_STATS_KIND = "ref_stats"


@dataclass(frozen=True)
class MetricProtocol:
    """How sample metrics are measured; see the module docstring for the four protocols.

    ``features``: ``"classifier"`` (the in-package classifier; Inception for the datasets in
    :data:`UNLABELLED_DATASETS`) or ``"inception"`` (the bundled TF-Inception pool3).
    ``resize``: ``"bilinear-antialias"`` (the classifier's own), ``"tf1-bilinear"`` (TF1
    ``resize_bilinear``, no half-pixel offset) or ``"pil-bicubic"`` (clean-fid: PIL bicubic per
    channel in float). ``classifier_size``: the one image size of the classifier (samples and
    reference images are resized to it). ``quantize``: round images to 8-bit levels first.
    ``n_samples``: samples drawn unless told otherwise. ``reference_split``: ``"train"`` or
    ``"test"``; ``split_overrides``: ``(dataset, split)`` pairs that differ (CelebA's valid
    split). ``reference_n``: at most this many reference images (``None``: the whole split).
    ``is_splits`` / ``is_samples`` / ``is_shuffle``: IS over that many splits of the first
    ``is_samples`` samples (``None``: all), shuffled first or kept in order.
    ``kid_subsets`` / ``kid_subset_size``: KID's subsets. ``native_reference``: the reference
    is the dataset as published, its name and root only: none of a run's data options and not
    its image size (the protocol's own resize, e.g. the classifier's 32 px, still applies);
    otherwise it is read as the run's data section reads it (:func:`reference_source`).
    """

    name: str
    version: int
    features: str
    resize: str
    quantize: bool
    n_samples: int
    reference_split: str
    conventions: str
    classifier_size: int = 32
    split_overrides: tuple[tuple[str, str], ...] = ()
    reference_n: int | None = None
    is_splits: int = 10
    is_samples: int | None = None
    is_shuffle: bool = True
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    native_reference: bool = False

    def split_for(self, dataset: str) -> str:
        """The reference split of ``dataset`` under this protocol."""
        return dict(self.split_overrides).get(dataset, self.reference_split)

    def features_for(self, dataset: str, requested: str | None = None) -> str:
        """The feature network kind (``"classifier"`` or ``"inception"``) used on ``dataset``.

        ``requested`` (a config's ``eval.features``) may choose for the ``snngen`` protocol; the
        paper protocols fix Inception and refuse another choice.
        """
        if requested is not None and requested != self.features and self.name != "snngen":
            raise MetricsError(
                f"protocol {self.name!r} measures on {self.features} features; drop the "
                f"features choice {requested!r} (or use protocol 'snngen')"
            )
        kind = requested or self.features
        if kind == "classifier" and dataset in UNLABELLED_DATASETS:
            return "inception"
        return kind

    def resize_for(self, kind: str) -> str:
        """The resize used before network ``kind``: the classifier always resizes its own way;
        ``snngen``'s Inception fallback uses TF1 bilinear as TF-FID."""
        if kind == "classifier":
            return "bilinear-antialias"
        return "tf1-bilinear" if self.resize == "bilinear-antialias" else self.resize

    def record(self) -> dict[str, Any]:
        """The protocol's fields as a JSON-ready dict (what ``metrics.json`` stores)."""
        return {
            "name": self.name, "version": self.version, "features": self.features,
            "resize": self.resize, "quantize": self.quantize, "n_samples": self.n_samples,
            "reference_split": self.reference_split,
            "split_overrides": dict(self.split_overrides), "reference_n": self.reference_n,
            "is_splits": self.is_splits, "is_samples": self.is_samples,
            "is_shuffle": self.is_shuffle,
            "kid_subsets": self.kid_subsets, "kid_subset_size": self.kid_subset_size,
            "native_reference": self.native_reference, "conventions": self.conventions,
        }


PROTOCOLS: dict[str, MetricProtocol] = {
    p.name: p
    for p in (
        MetricProtocol(
            "snngen", 1, features="classifier", resize="bilinear-antialias", quantize=False,
            n_samples=1000, reference_split="test", reference_n=10_000,
            conventions="snngen's fast default: the in-package classifier at 32 px for every "
            "model of a dataset",
        ),
        MetricProtocol(
            "leaderboard", 1, features="classifier", resize="bilinear-antialias",
            quantize=False, n_samples=5000, reference_split="train", native_reference=True,
            conventions="snngen's leaderboard: the in-package classifier at 32 px, 5,000 "
            "samples against the whole training split as published (mnist5k: 4,500 images)",
        ),
        MetricProtocol(
            "sddpm", 1, features="inception", resize="torch-bilinear", quantize=False,
            n_samples=50_000, reference_split="train", is_shuffle=False,
            conventions="SDDPM's score/ code (pytorch-fid's Inception): float samples, torch "
            "bilinear to 299, 50,000 samples vs training-set statistics; IS in 10 splits in "
            "order (SDDPM / SDM)",
        ),
        MetricProtocol(
            "fsvae", 1, features="inception", resize="pil-bicubic", quantize=True,
            n_samples=5000, reference_split="test", split_overrides=(("celeba", "valid"),),
            is_samples=2560,
            conventions="clean-fid: uint8, PIL bicubic to 299, 5,000 samples vs the full test "
            "split (CelebA: valid); IS on 2,560 samples in 10 splits (FullySpikingVAE)",
        ),
        MetricProtocol(
            "tts_vqvae", 1, features="inception", resize="torch-bilinear", quantize=True,
            n_samples=50_000, reference_split="train",
            conventions="pytorch-fid FID, torch-fidelity KID/IS/precision-recall, 50,000 "
            "samples vs the training split (tts_vqvae)",
        ),
    )
}


def get_protocol(name: str) -> MetricProtocol:
    """Return the protocol called ``name``; :class:`MetricsError` listing the names otherwise."""
    if name not in PROTOCOLS:
        raise MetricsError(f"unknown metric protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


# ----------------------------------------------------------------------------- feature network


def protocol_network(
    protocol: MetricProtocol,
    dataset: str,
    *,
    root: str | Path | None = None,
    features: str | None = None,
    inception_logits: Any = None,
) -> FeatureNet:
    """Return the feature network of ``protocol`` on ``dataset`` (independent of any model's
    image size): the cached classifier at ``protocol.classifier_size``, or Inception with the
    protocol's quantisation and resize (and the 1008-way logits head ``inception_logits``, an
    :class:`~snngen.metrics.inception.InceptionLogits`, for IS)."""
    kind = protocol.features_for(dataset, features)
    if kind == "classifier":
        from snngen.metrics.classifier import load_classifier

        return load_classifier(dataset, root=root, image_size=protocol.classifier_size)
    from snngen.metrics.inception import InceptionFeatures

    return InceptionFeatures(
        quantize=protocol.quantize, resize=protocol.resize_for(kind), logits=inception_logits
    )


# ----------------------------------------------------------------------------- reference set


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
        from snngen.data import get_dataset

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
        from snngen.metrics.cache import _to_image

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
    from snngen.metrics.cache import cache_dir

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
    from snngen.files import atomic_output

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
    from snngen.files import weights_fingerprint

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
        from snngen.metrics.features import ModuleFeatures

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


# ----------------------------------------------------------------------------- scores


def score_features(
    protocol: MetricProtocol,
    fake: Features,
    metrics: Sequence[str],
    *,
    real: Features | None = None,
    real_stats: GaussianStats | None = None,
    seed: int = 0,
    pr_k: int = 3,
) -> dict[str, MetricResult]:
    """Compute ``metrics`` (``fid``, ``kid``, ``is``, ``pr``) of ``fake`` features under
    ``protocol``: FID against ``real_stats`` (else ``real``'s), KID with the protocol's subsets,
    IS on the first ``is_samples`` logits in ``is_splits`` splits, precision/recall with k."""
    from snngen.metrics.scores import fid, inception_score, kid, precision_recall

    out: dict[str, MetricResult] = {}
    if "fid" in metrics:
        out["fid"] = fid(fake, real_stats if real_stats is not None else real)
    if "kid" in metrics:
        out["kid"] = kid(fake, real, subsets=protocol.kid_subsets,
                         subset_size=protocol.kid_subset_size, seed=seed)
    if "is" in metrics:
        n = fake.n if protocol.is_samples is None else min(fake.n, protocol.is_samples)
        logits = None if fake.logits is None else fake.logits[:n]
        out["is"] = inception_score(Features(fake.features[:n], logits, fake.name),
                                    splits=protocol.is_splits, seed=seed,
                                    shuffle=protocol.is_shuffle)
    if "pr" in metrics:
        out.update(precision_recall(fake, real, k=pr_k))
    return out


# ----------------------------------------------------------------------------- planning

#: metrics measured on samples (the rest, ``mse``, on reconstructions)
SAMPLE_METRICS = ("fid", "kid", "is", "pr", "aefd")
#: how the command line spells each option in messages (a config uses ``eval.<key>``)
CLI_FLAGS = {"metrics": "--metrics", "n": "--n", "features": "--features",
             "protocol": "--protocol", "ref_stats": "--ref-stats",
             "inception_logits": "--inception-logits"}


@dataclass(frozen=True)
class EvaluationPlan:
    """An evaluation resolved against its protocol before any sample is drawn: the
    ``protocol``, ``dataset``, reference ``split``, feature network ``kind``, sample count
    ``n`` (the caller's, else the protocol's), the ``sample_metrics`` asked, and the user's
    ``ref_stats`` / ``inception_logits`` files (``None``: not given)."""

    protocol: MetricProtocol
    dataset: str
    split: str
    kind: str
    n: int
    sample_metrics: tuple[str, ...]
    ref_stats: Path | None = None
    inception_logits: Path | None = None


def plan_evaluation(
    dataset: str | None,
    metrics: Sequence[str],
    n: int | None = None,
    *,
    protocol: str = "snngen",
    features: str | None = None,
    ref_stats: str | Path | None = None,
    inception_logits: str | Path | None = None,
    load_files: bool = True,
    flags: dict[str, str] | None = None,
) -> EvaluationPlan:
    """Resolve and check an evaluation request; returns its :class:`EvaluationPlan`.

    Refuses, in one line naming the option (spelt as in ``flags``, default the command line's):
    an unknown protocol; a feature choice the protocol does not allow; IS on Inception features
    without an Inception logits file (``inception_logits``, else ``$SNNGEN_INCEPTION_LOGITS``);
    a logits or ``ref_stats`` file that is missing, or with ``load_files``, malformed.
    """
    from snngen.metrics.inception import INCEPTION_LOGITS_ENV, inception_logits_path

    flags = {**CLI_FLAGS, **(flags or {})}
    if protocol not in PROTOCOLS:
        raise MetricsError(
            f"{flags['protocol']} {protocol}: unknown metric protocol; choose from "
            f"{', '.join(PROTOCOLS)}"
        )
    proto = PROTOCOLS[protocol]
    try:
        kind = proto.features_for(dataset or "", features)
    except MetricsError as err:
        raise MetricsError(f"{flags['features']} {features}: {err}") from None
    sample_metrics = tuple(m for m in metrics if m in SAMPLE_METRICS)
    logits = inception_logits_path(inception_logits)
    if "is" in sample_metrics and kind == "inception" and logits is None:
        give = flags["inception_logits"]
        give = f"set {give}: FILE" if give.startswith("eval.") else f"pass {give} FILE"
        raise MetricsError(
            f"{flags['metrics']} is: the Inception Score ('is') on Inception features needs the "
            f"network's 1008-way logits, which the bundled Inception lacks; {give} or set "
            f"{INCEPTION_LOGITS_ENV}=FILE (a state dict "
            "with fc.weight [1008, 2048], e.g. pytorch-fid's pt_inception-2015-12-05), or drop "
            "'is'"
        )
    if logits is not None and not ("is" in sample_metrics and kind == "inception"):
        logits = None  # not needed: never read
    refs = Path(ref_stats).expanduser() if ref_stats else None
    if refs is not None and "fid" not in sample_metrics:
        refs = None
    logits_what = flags["inception_logits"] if inception_logits else INCEPTION_LOGITS_ENV
    for what, path in ((logits_what, logits), (flags["ref_stats"], refs)):
        if path is not None and not path.is_file():
            raise MetricsError(f"{what} {path}: no such file")
    if load_files:
        from snngen.metrics.inception import load_inception_logits

        if logits is not None:
            load_inception_logits(logits, what=logits_what)
        if refs is not None:
            load_ref_stats(refs, FEATURE_DIMS[kind], what=flags["ref_stats"])
    return EvaluationPlan(proto, dataset or "", proto.split_for(dataset or ""), kind,
                          n or proto.n_samples, sample_metrics, refs, logits)


# ----------------------------------------------------------------------------- measuring


@dataclass
class Measurement:
    """What an :class:`EvaluationPlan` measures with, made ready before any sample is drawn: the
    feature network ``net``, the reference ``real_stats`` / ``real`` features (``None`` when no
    metric needs them) and a ``record`` of where they came from."""

    plan: EvaluationPlan
    net: FeatureNet | None
    real_stats: GaussianStats | None
    real: Features | None
    record: dict[str, Any]


def prepare_measurement(
    plan: EvaluationPlan,
    source: DataSource,
    *,
    features: nn.Module | None = None,
    real: Any = None,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> Measurement:
    """Build the feature network, read the user's statistics and the (cached) reference set
    of ``plan``, so that every file and split a metric needs is checked before sampling.

    ``source``: the images the reference reads, :func:`reference_source` of the plan's
    protocol and the run's data section (the protocol's network resizes them, see
    :func:`reference_size`).

    ``features``: a module replacing the protocol's network (then the reference is ``real``,
    images or batches, e.g. the run's first test items: outside any protocol, recorded so).
    """
    from snngen.metrics.inception import load_inception_logits

    proto = plan.protocol
    record: dict[str, Any] = {"name": proto.name, "version": proto.version, "n_samples": plan.n,
                              "reference_split": plan.split}
    main = [m for m in plan.sample_metrics if m in ("fid", "kid", "is", "pr")]
    if not main:
        return Measurement(plan, None, None, None, record)
    if features is not None:
        net = features if isinstance(features, FeatureNet) else _module_features(features)
        record.update(features=net.name, reference_split="the given images (custom features)")
    else:
        logits = None
        if plan.inception_logits is not None:
            logits = load_inception_logits(plan.inception_logits)
            record["inception_logits"] = logits.record()
        net = protocol_network(proto, plan.dataset, root=source.root, features=plan.kind,
                               inception_logits=logits)
        record.update(features=net.name, resize=proto.resize_for(plan.kind),
                      quantize=proto.quantize and plan.kind == "inception")
    real_stats, real_feats = None, None
    if plan.ref_stats is not None:
        real_stats = load_ref_stats(plan.ref_stats, _dim(net))
        record["ref_stats"] = {"file": str(plan.ref_stats), "sha256": sha256_file(plan.ref_stats)}
    if {"kid", "pr"} & set(main) or ("fid" in main and real_stats is None):
        if features is not None:
            real_feats = extract_features(real, net, batch_size=batch_size, progress=progress,
                                          desc="real")
            record["reference"] = {"n": real_feats.n}
        else:
            size = reference_size(proto, plan.kind, source)
            src = DataSource(source.name, source.root, size, source.options)
            stats, real_feats, path = reference_features(
                proto, net, src, split=plan.split, batch_size=batch_size, progress=progress
            )
            real_stats = stats if real_stats is None else real_stats
            record["reference"] = {"n": real_feats.n, "image_size": size, "cache": str(path)}
    return Measurement(plan, net, real_stats, real_feats, record)


def _module_features(module: nn.Module) -> FeatureNet:
    from snngen.metrics.features import ModuleFeatures

    return ModuleFeatures(module)


def _dim(net: FeatureNet) -> int | None:
    return net.num_features or None


def measure(
    m: Measurement,
    fake: Any,
    *,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> dict[str, MetricResult]:
    """Compute the plan's fid/kid/is/pr of ``fake`` (images ``[N, C, H, W]`` in [0, 1] or an
    iterable of batches) with a prepared :class:`Measurement`."""
    main = [x for x in m.plan.sample_metrics if x in ("fid", "kid", "is", "pr")]
    if not main or m.net is None:
        return {}
    f_fake = extract_features(fake, m.net, batch_size=batch_size, progress=progress,
                              desc="fake")
    return score_features(m.plan.protocol, f_fake, main, real=m.real, real_stats=m.real_stats,
                          seed=seed)


def protocol_reference(
    protocol: MetricProtocol | str,
    source: DataSource,
    *,
    features: str | None = None,
    split: str | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> tuple[FeatureNet, GaussianStats, Features]:
    """``(network, reference statistics, reference features)`` of ``protocol`` on the dataset of
    ``source`` (a run's data, ``DataSource.of(cfg.data)``; ``split``: default the protocol's),
    the cached reference included: what a benchmark needs to score its own samples on the same
    scale as ``snngen eval`` (the same :func:`reference_source`)."""
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    source = reference_source(proto, source)
    kind = proto.features_for(source.name, features)
    net = protocol_network(proto, source.name, root=source.root, features=kind)
    src = DataSource(source.name, source.root, reference_size(proto, kind, source),
                     source.options)
    stats, feats, _ = reference_features(proto, net, src, split=split or proto.split_for(
        source.name), batch_size=batch_size, progress=progress)
    return net, stats, feats
