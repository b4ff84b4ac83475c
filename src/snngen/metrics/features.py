"""Feature networks and feature extraction shared by every sample metric.

A feature network maps images ``[B, C, H, W]`` in [0, 1] to features ``[B, D]``; some (the
in-package classifiers) also give class logits ``[B, K]``, which the Inception Score needs.
Metrics never see images: :func:`extract_features` runs a network once over a set and every
metric reuses the resulting :class:`Features`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from snngen.console import progress_bar
from snngen.devices import model_device
from snngen.errors import SnngenError

#: show a progress bar (when ``progress=None``) once a set needs more batches than this
PROGRESS_MIN_BATCHES = 8


class MetricsError(SnngenError, ValueError):
    """A bad request to the metrics (unknown feature network, missing weights, bad sizes)."""


class FeatureNet(nn.Module):
    """Base class of feature networks.

    Subclasses implement ``forward(x) -> [B, D]`` on images ``[B, C, H, W]`` in [0, 1] and set
    :attr:`name` and :attr:`num_features`; those with a classification head set
    :attr:`num_classes` and override :meth:`features_and_logits`. ``num_features`` also lets
    torchmetrics' FID/KID classes take these modules as ``feature=``.
    """

    name: str = "features"
    num_features: int = 0
    num_classes: int = 0
    #: images per forward pass that :func:`extract_features` uses when not told otherwise
    batch_size: int = 500

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Return ``(features [B, D], logits [B, K] or None)`` of images ``x``."""
        return self(x), None


class ModuleFeatures(FeatureNet):
    """Any module used as a feature network, e.g. an autoencoder's encoder.

    The module's output (the first element if it returns a tuple or list, e.g. ``(mu, logvar)``)
    is flattened to ``[B, D]``. Inputs are passed through unchanged, so the module must accept
    what the caller gives it (images in [0, 1], or plain vectors).
    """

    def __init__(self, module: nn.Module, name: str | None = None) -> None:
        super().__init__()
        self.module = module
        self.name = name or getattr(module, "name", None) or type(module).__name__

    def forward(self, x: Tensor) -> Tensor:
        """Return the flattened module output ``[B, D]``."""
        out = self.module(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.flatten(1)


@dataclass
class Features:
    """Features of one set of samples, computed once and shared by all metrics.

    ``features``: ``[N, D]`` float32 on the CPU; ``logits``: ``[N, K]`` or ``None``;
    ``name``: the feature network that made them. Save and reload with :meth:`save` /
    :meth:`load` to cache the features of a reference set.
    """

    features: Tensor
    logits: Tensor | None
    name: str

    @property
    def n(self) -> int:
        """Number of samples."""
        return self.features.shape[0]

    def save(self, path: str | Path) -> Path:
        """Write to ``path`` (atomically: temporary file, fsync, rename); returns the path."""
        from snngen.files import save_torch

        return save_torch(
            {"features": self.features, "logits": self.logits, "name": self.name}, path
        )

    @classmethod
    def load(cls, path: str | Path) -> Features:
        """Read features written by :meth:`save`."""
        d = torch.load(Path(path), map_location="cpu", weights_only=True)
        return cls(d["features"], d["logits"], d["name"])


def _batches(images: Tensor | Iterable, batch_size: int) -> Iterable[Tensor]:
    if isinstance(images, Tensor):
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size]
        return
    for item in images:
        yield item[0] if isinstance(item, (tuple, list)) else item


def _num_images(images: Tensor | Iterable) -> int | None:
    """The number of images in ``images`` where it is known without reading them: a tensor, a
    DataLoader (its dataset's length), a sample stream of ``n`` (``.n``, ``.plan.n``)."""
    if isinstance(images, Tensor):
        return images.shape[0]
    if isinstance(images, torch.utils.data.DataLoader):
        try:
            return len(images.dataset)  # type: ignore[arg-type]
        except TypeError:
            return None
    plan = getattr(images, "plan", None)
    n = getattr(plan, "n", getattr(images, "n", None))
    return n if isinstance(n, int) else None


def _num_batches(images: Tensor | Iterable, batch_size: int) -> int | None:
    if isinstance(images, Tensor):
        return -(-images.shape[0] // batch_size)
    try:
        return len(images)  # type: ignore[arg-type]
    except TypeError:
        return None


@torch.inference_mode()
def extract_features(
    images: Tensor | Iterable | Features,
    net: nn.Module,
    *,
    batch_size: int | None = None,
    progress: bool | None = None,
    desc: str = "features",
) -> Features:
    """Run ``net`` over a set of images once; returns its :class:`Features`.

    ``images``: a tensor ``[N, C, H, W]`` in [0, 1] (or ``[N, ...]`` for a plain module), or an
    iterable of such batches (or of ``(batch, label)`` tuples, as a DataLoader gives). A
    :class:`Features` of the same network is returned unchanged (precomputed). ``net``: a
    :class:`FeatureNet` or any module (wrapped in :class:`ModuleFeatures`). ``batch_size``:
    images per forward pass for tensor inputs (default: the net's ``batch_size``). Batches go
    to the net's device; the result is float32 on the CPU. ``progress``: the ``features`` bar
    (:func:`snngen.console.progress_bar`, in images) on/off; ``None`` shows it for sets of more
    than ``PROGRESS_MIN_BATCHES`` batches. ``desc``: what the images are (``fake``, ``real``).
    """
    if not isinstance(net, FeatureNet):
        net = ModuleFeatures(net)
    if isinstance(images, Features):
        if images.name != net.name:
            raise MetricsError(
                f"precomputed features come from {images.name!r}, not from the network in use "
                f"{net.name!r}; pass the images, or features of {net.name!r}"
            )
        return images
    batch_size = batch_size or net.batch_size
    total = _num_batches(images, batch_size)
    if progress is None:
        progress = total is None or total > PROGRESS_MIN_BATCHES
    device = model_device(net)
    was_training = net.training
    net.eval()
    feats, logits = [], []
    label = f"features ({net.name})" if desc == "features" else f"features ({desc}, {net.name})"
    bar = progress_bar(desc=label, total=_num_images(images), unit="img", enabled=progress)
    try:
        for batch in _batches(images, batch_size):
            f, lg = net.features_and_logits(batch.to(device))
            feats.append(f.float().cpu())
            if lg is not None:
                logits.append(lg.float().cpu())
            bar.update(batch.shape[0])
    finally:
        net.train(was_training)
        bar.close()
    if not feats:
        raise MetricsError(f"extract_features: no images given to feature network {net.name!r}")
    return Features(torch.cat(feats), torch.cat(logits) if logits else None, net.name)
