"""A small in-package classifier per dataset, used as a fast feature network.

:func:`train_classifier` trains a compact CNN on a dataset's train split (seeded, CPU-friendly,
about a minute for ``mnist5k``) and caches it as ``<cache>/classifiers/<dataset>_<size>.pt``;
:func:`load_classifier` reloads it, training it once if missing. The 128-d penultimate layer
gives the features for FID/KID/precision/recall, the logits the Inception Score. Inputs of
another size or channel count are resized and converted, so one classifier serves every model
on a dataset. ``snngen classifier <dataset>`` runs :func:`train_classifier`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snngen.metrics.cache import (
    cached_file,
    fit_network,
    load_cached,
    train_cached,
)
from snngen.metrics.features import FeatureNet, MetricsError

FEATURE_DIM = 128
CACHE_KIND = "classifiers"


def classifier_path(dataset: str, image_size: int = 32, cache: str | Path | None = None) -> Path:
    """Return where the classifier of ``dataset`` at ``image_size`` is cached."""
    return cached_file(CACHE_KIND, dataset, image_size, cache)


class ClassifierNet(FeatureNet):
    """Compact CNN: three conv-BN-ReLU-maxpool blocks (``width``, 2x, 4x channels), a 128-d
    ReLU layer (the features) and a linear head (the logits).

    ``forward(x)`` returns features ``[B, 128]`` of images ``[B, C, H, W]`` in [0, 1]; inputs are
    converted to ``in_channels`` (channel mean or repeat) and resized to ``image_size`` first.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 32,
        width: int = 16,
        name: str = "classifier",
    ) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.width = in_channels, image_size, width
        self.num_features, self.num_classes, self.name = FEATURE_DIM, num_classes, name
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out in (width, 2 * width, 4 * width):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(c_in * 16, FEATURE_DIM), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURE_DIM, num_classes))

    def config(self) -> dict:
        """The constructor arguments (stored with the weights)."""
        return {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "width": self.width,
            "name": self.name,
        }

    def prepare(self, x: Tensor) -> Tensor:
        """Convert images ``[B, C, H, W]`` in [0, 1] to the network's channels and size, scaled
        to [-1, 1]."""
        if x.dim() != 4:
            raise MetricsError(f"{self.name} expects images [B, C, H, W], got {list(x.shape)}")
        x = x.float()
        if x.shape[1] != self.in_channels:
            x = x.mean(1, keepdim=True) if self.in_channels == 1 else x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=self.image_size, mode="bilinear", antialias=True)
        return x * 2 - 1

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(features [B, 128], logits [B, num_classes])``."""
        h = self.embed(self.body(self.prepare(x)))
        return h, self.head(h)

    def forward(self, x: Tensor) -> Tensor:
        """Return features ``[B, 128]``."""
        return self.embed(self.body(self.prepare(x)))


@torch.inference_mode()
def accuracy(net: ClassifierNet, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Return the top-1 accuracy of ``net`` on ``images`` ``[N, C, H, W]`` / ``labels`` ``[N]``."""
    was_training = net.training
    net.eval()
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        _, logits = net.features_and_logits(images[start : start + batch_size])
        correct += (logits.argmax(1) == labels[start : start + batch_size]).sum().item()
    net.train(was_training)
    return correct / max(1, images.shape[0])


def _cross_entropy(net: ClassifierNet, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(net.features_and_logits(x)[1], y)


def fit_classifier(
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int = 6,
    batch_size: int = 128,
    lr: float = 3e-3,
    width: int = 16,
    seed: int = 0,
    name: str = "classifier",
    progress: bool = True,
) -> ClassifierNet:
    """Train a :class:`ClassifierNet` on ``images`` ``[N, C, H, W]`` in [0, 1] / ``labels`` ``[N]``.

    AdamW with a one-cycle schedule and random shifts of up to 2 pixels, seeded (weights,
    order, augmentation) without touching the global RNG. Returns the net in eval mode.
    """
    num_classes = int(labels.max()) + 1
    if num_classes < 2:
        raise MetricsError(
            f"{name}: the dataset has {num_classes} class; a classifier needs at least 2 "
            "(use features='inception' or 'autoencoder')"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ClassifierNet(images.shape[1], num_classes, images.shape[-1], width, name)
    fit_network(
        net,
        (images, labels),
        _cross_entropy,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        max_shift=2,
        progress=progress,
        desc=f"training {name}",
    )
    return net


def train_classifier(
    dataset: str,
    root: str | Path | None = None,
    *,
    image_size: int = 32,
    epochs: int = 6,
    seed: int = 0,
    cache: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> tuple[Path, float]:
    """Train the classifier of ``dataset`` once and cache it; returns ``(path, test accuracy)``.

    If the cached file exists (and ``force`` is false) nothing is trained and its recorded
    accuracy is returned. ``root``: the dataset folder (passed to :mod:`snngen.data`);
    ``cache``: the cache folder (default :func:`~snngen.metrics.cache.cache_dir`).
    """

    def fit(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor):
        net = fit_classifier(
            x_train,
            y_train,
            epochs=epochs,
            seed=seed,
            name=f"classifier:{dataset}",
            progress=progress,
        )
        return net, accuracy(net, x_test, y_test)

    return train_cached(
        classifier_path(dataset, image_size, cache),
        fit,
        score_key="test_accuracy",
        dataset=dataset,
        root=root,
        image_size=image_size,
        seed=seed,
        epochs=epochs,
        force=force,
    )


def load_classifier(
    dataset: str,
    *,
    root: str | Path | None = None,
    image_size: int = 32,
    cache: str | Path | None = None,
    train_if_missing: bool = True,
) -> ClassifierNet:
    """Return the cached classifier of ``dataset`` (eval mode), training it first if missing
    and ``train_if_missing`` (else :class:`FileNotFoundError` naming the command to run).
    Its ``test_accuracy`` attribute holds the accuracy recorded at training."""
    return load_cached(
        classifier_path(dataset, image_size, cache),
        ClassifierNet,
        "test_accuracy",
        lambda: train_classifier(dataset, root, image_size=image_size, cache=cache),
        what=f"{dataset} feature classifier",
        train_if_missing=train_if_missing,
        hint=f"; run `snngen classifier {dataset}`",
    )
