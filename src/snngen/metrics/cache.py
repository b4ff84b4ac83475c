"""Where the trained feature networks live, and the one way they read their data.

The in-package classifier and autoencoder are trained once per dataset and image size and kept
under :func:`cache_dir` (``$SNNGEN_CACHE`` or ``~/.cache/snngen``) as plain ``torch.save`` dicts,
written atomically. Both read labelled images through :func:`load_labelled_images`, which uses
:func:`snngen.data.get_dataset`, and train with :func:`fit_network`.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from snngen.metrics.features import MetricsError


def cache_dir() -> Path:
    """Return snngen's cache folder: ``$SNNGEN_CACHE`` if set, else ``~/.cache/snngen``."""
    env = os.environ.get("SNNGEN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "snngen"


def cached_file(kind: str, dataset: str, image_size: int, cache: str | Path | None = None) -> Path:
    """Return ``<cache>/<kind>/<dataset>_<image_size>.pt`` (``cache`` defaults to
    :func:`cache_dir`), e.g. ``~/.cache/snngen/classifiers/mnist5k_32.pt``."""
    base = Path(cache).expanduser() if cache is not None else cache_dir()
    return base / kind / f"{dataset}_{image_size}.pt"


def save_record(record: dict[str, Any], path: Path) -> Path:
    """Write ``record`` with ``torch.save`` atomically (temporary file, fsync, rename)."""
    from snngen.files import save_torch

    return save_torch(record, path)


def read_record(path: Path) -> dict[str, Any]:
    """Read a record written by :func:`save_record`; a truncated or foreign file raises
    :class:`MetricsError` naming the file."""
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupt or not a torch file
        raise MetricsError(f"cannot read {path} ({err}); delete it to retrain") from err
    if not isinstance(record, dict) or "state_dict" not in record or "config" not in record:
        raise MetricsError(f"{path} is not an snngen feature-network file; delete it to retrain")
    return record


def train_cached(
    path: Path,
    fit: Callable[[Tensor, Tensor, Tensor, Tensor], tuple[torch.nn.Module, float]],
    *,
    score_key: str,
    dataset: str,
    root: str | Path | None,
    image_size: int,
    seed: int,
    epochs: int,
    force: bool = False,
) -> tuple[Path, float]:
    """Train a feature network once and cache it at ``path``; returns ``(path, held-out score)``.

    ``fit(x_train, y_train, x_test, y_test) -> (net, score)`` trains on ``dataset``'s splits
    (read with :func:`load_labelled_images`); the net (with a ``config()`` method), its score
    under ``score_key`` and how it was trained are saved atomically. An existing file is reused
    (its recorded score returned) unless ``force``.
    """
    if path.is_file() and not force:
        return path, float(read_record(path)[score_key])
    t0 = time.perf_counter()
    x_train, y_train = load_labelled_images(dataset, "train", root=root, image_size=image_size)
    x_test, y_test = load_labelled_images(dataset, "test", root=root, image_size=image_size)
    net, score = fit(x_train, y_train, x_test, y_test)
    record = {
        "state_dict": net.state_dict(),
        "config": net.config(),
        "dataset": dataset,
        score_key: score,
        "seed": seed,
        "epochs": epochs,
        "n_train": int(x_train.shape[0]),
        "n_test": int(x_test.shape[0]),
        "train_seconds": time.perf_counter() - t0,
    }
    save_record(record, path)
    return path, score


def load_cached(
    path: Path,
    net_cls: type[torch.nn.Module],
    score_key: str,
    train: Callable[[], Any],
    *,
    what: str,
    train_if_missing: bool = True,
    hint: str = "",
) -> torch.nn.Module:
    """Return the network cached at ``path`` (eval mode, its recorded score as attribute
    ``score_key``), calling ``train()`` first when the file is missing and ``train_if_missing``
    (else :class:`FileNotFoundError` naming ``what``, the path and ``hint``)."""
    if not path.is_file():
        if not train_if_missing:
            raise FileNotFoundError(f"no {what} at {path}{hint}")
        print(f"snngen: training the {what} once -> {path}", file=sys.stderr)
        train()
    record = read_record(path)
    net = net_cls(**record["config"])
    net.load_state_dict(record["state_dict"])
    setattr(net, score_key, float(record[score_key]))
    return net.eval()


def _to_image(x: Tensor) -> Tensor:
    """An item as an image ``[C, H, W]`` in [0, 1]. Event frames ``[T, 2, H, W]`` become the
    total event count per pixel over its maximum, ``[1, H, W]`` (as snngen.evaluation does)."""
    if x.dim() == 4:
        img = x.float().clamp(min=0).sum(dim=(0, 1)).unsqueeze(0)
        return img / img.max().clamp(min=1e-8)
    return x.float()


def load_labelled_images(
    dataset: str, split: str, *, root: str | Path | None = None, image_size: int = 32
) -> tuple[Tensor, Tensor]:
    """Return ``(images [N, C, H, W] in [0, 1], labels [N] int64)`` of one split of a dataset.

    Reads :func:`snngen.data.get_dataset` (items ``(x, label)``); event items ``[T, 2, H, W]``
    become count images ``[1, H, W]``. ``split``: ``"train"`` or ``"test"``.
    """
    from snngen.data import get_dataset

    ds = get_dataset(dataset, root=root, split=split, image_size=image_size)
    images, labels = [], []
    for i in range(len(ds)):
        item = ds[i]
        images.append(_to_image(torch.as_tensor(item[0])))
        labels.append(int(item[1]))
    if not images:
        raise MetricsError(f"dataset {dataset!r} split {split!r} is empty")
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def shift_images(x: Tensor, max_shift: int, gen: torch.Generator) -> Tensor:
    """Translate each image of ``x`` ``[B, C, H, W]`` by its own random integer offset in
    ``[-max_shift, max_shift]`` along each axis, filling with zeros; returns ``[B, C, H, W]``."""
    b, c, h, w = x.shape
    p = max_shift
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    dy = torch.randint(0, 2 * p + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * p + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(b, c, h, w + 2 * p)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(b, c, h, w)
    return out.gather(3, cols)


def fit_network(
    net: torch.nn.Module,
    tensors: tuple[Tensor, ...],
    loss_fn: Callable[..., Tensor],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 1e-4,
    seed: int = 0,
    max_shift: int = 0,
    progress: bool = True,
    desc: str = "training",
) -> torch.nn.Module:
    """Train ``net`` in place with AdamW and a one-cycle learning rate; returns it in eval mode.

    ``tensors``: ``(images [N, C, H, W], *targets [N, ...])``, shuffled together each epoch;
    ``loss_fn(net, images, *targets) -> scalar``. ``max_shift`` > 0 shifts the images by up to
    that many pixels (augmentation). Order, augmentation and dropout come from ``seed``; the
    global RNG state is left as it was.
    """
    n = tensors[0].shape[0]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    net.train()
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout
        for _ in bar:
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                x, *targets = (t[idx] for t in tensors)
                if max_shift:
                    x = shift_images(x, max_shift, gen)
                loss = loss_fn(net, x, *targets)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return net.eval()
