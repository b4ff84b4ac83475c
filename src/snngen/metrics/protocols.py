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

The reference sets and their cached statistics are in :mod:`snngen.metrics.reference`;
checking a request against its protocol in :mod:`snngen.metrics.plan`; measuring samples in
:mod:`snngen.metrics.measure`. One ``snngen eval`` walks protocols -> plan -> reference ->
measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import snngen.metrics.classifier as classifier
from snngen.metrics.features import FeatureNet, MetricsError
from snngen.metrics.inception import InceptionFeatures

UNLABELLED_DATASETS = ("celeba", "celeba_hq", "lsun_bedroom", "lsun_church")
#: feature dimension of each feature network kind
FEATURE_DIMS = {"classifier": 128, "inception": 2048}
#: the resize methods a protocol may name
RESIZES = ("bilinear-antialias", "tf1-bilinear", "torch-bilinear", "pil-bicubic")


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
        return classifier.load_classifier(dataset, root=root,
                                          image_size=protocol.classifier_size)
    return InceptionFeatures(
        quantize=protocol.quantize, resize=protocol.resize_for(kind), logits=inception_logits
    )
