"""Pieces every dataset shares: the error type, the data root, split checks, size fitting and
an in-memory dataset of decoded images.

Static items are ``(x, label)`` with ``x`` float32 ``[C, H, W]`` in [0, 1]; event items are
``(x, label)`` with ``x`` float32 ``[T, 2, H, W]`` event counts (see :mod:`snngen.data.events`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from snngen.errors import SnngenError

#: environment variable naming the data root used when ``root=None``
DATA_ENV = "SNNGEN_DATA"
SPLITS = ("train", "test")


class DataError(SnngenError):
    """A dataset cannot be opened: unknown name or option, files missing, truncated or corrupt.

    The message names the dataset or the file and says what would be right.
    """


class MissingDataError(DataError):
    """A dataset's files are absent (not corrupt): ``snngen datasets download`` can add them.

    :func:`snngen.data.get_dataset` appends the download command to the message, or downloads
    the files when asked to (``download=True``, a config's ``data.download: true``).
    """


def default_root() -> Path:
    """Return the data root used when none is given: ``$SNNGEN_DATA`` if set, else ``./data``."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else Path("data")


def resolve_root(root: str | os.PathLike | None) -> Path:
    """Return ``root`` (or :func:`default_root`) as an absolute path (for clear messages)."""
    path = Path(root).expanduser() if root is not None else default_root()
    return path.absolute()


def check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> str:
    """Return ``split`` if it is one of ``allowed`` (``"train"``, ``"test"``; CelebA also has
    ``"valid"``); :class:`DataError` otherwise."""
    if split not in allowed:
        choices = " or ".join(repr(s) for s in allowed)
        raise DataError(f"split={split!r} is not a split; choose {choices}")
    return split


def check_size(image_size: int | None, what: str = "image_size") -> int | None:
    """Return ``image_size`` if it is ``None`` or a positive int; :class:`DataError` otherwise."""
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"{what}={image_size!r} must be a positive integer or null")
    return image_size


def first_folder(candidates: Iterable[Path], needed: Sequence[str]) -> Path | None:
    """Return the first folder of ``candidates`` in which every name of ``needed`` exists."""
    for folder in candidates:
        if all((folder / name).exists() for name in needed):
            return folder
    return None


def searched(folders: Iterable[Path]) -> str:
    """The folders searched, for error messages: ``'/a', '/b'``."""
    return ", ".join(f"'{f}'" for f in folders)


def natural_key(text: str) -> list:
    """Sort key that orders ``img2`` before ``img10`` (digit runs compare as numbers)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def resize(x: Tensor, size: int) -> Tensor:
    """Resize ``[..., C, H, W]`` to ``size x size`` (bilinear, antialiased when shrinking).

    Returns a float tensor with the same leading dimensions. Values are not clamped (event
    counts are not bounded); images in [0, 1] stay in [0, 1] up to rounding, so callers clamp.
    """
    if x.shape[-2:] == (size, size):
        return x
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:]).float()
    out = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False,
                        antialias=size < max(x.shape[-2:]))
    return out.reshape(*lead, *out.shape[-3:])


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """Resize uint8 images ``[N, C, H, W]`` to ``size x size`` as the original systems do.

    FSVAE, SDDPM and the snnTorch tutorial apply ``torchvision.transforms.Resize`` to PIL images:
    PIL's bilinear filter (antialiased when shrinking) on 8-bit pixels, rounded back to 8 bits.
    This is that computation with PIL directly, channel by channel. Returns uint8
    ``[N, C, size, size]``.
    """
    from PIL import Image

    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"resize_uint8 takes uint8 [N, C, H, W], got {images.dtype} "
                         f"{tuple(images.shape)}")
    if images.shape[-2:] == (size, size):
        return images
    arr = images.numpy()
    out = np.empty((*arr.shape[:2], size, size), dtype=np.uint8)
    for i in range(arr.shape[0]):
        for c in range(arr.shape[1]):
            plane = Image.fromarray(arr[i, c], mode="L").resize((size, size), Image.BILINEAR)
            out[i, c] = np.asarray(plane)
    return torch.from_numpy(out)


def check_fit(fit: str) -> str:
    if fit not in ("pad", "resize"):
        raise DataError(f"fit={fit!r} is not known; choose 'resize' (the originals' 28 -> 32) or "
                        "'pad' (28 -> 32 by 2 px of zeros)")
    return fit


def fit_images(images: Tensor, image_size: int | None, fit: str = "resize") -> Tensor:
    """Bring uint8 images ``[N, C, H, W]`` to ``image_size x image_size`` (uint8 out).

    ``fit="resize"`` (default, what the original systems do): :func:`resize_uint8`.
    ``fit="pad"``: a 28x28 image asked for at 32 is zero-padded by 2 pixels on every side (the
    digit keeps its pixels); any other change of size still resizes. ``None`` keeps the size.
    """
    if image_size is None or images.shape[-2:] == (image_size, image_size):
        return images
    if check_fit(fit) == "pad" and images.shape[-2:] == (28, 28) and image_size == 32:
        return F.pad(images, (2, 2, 2, 2))
    return resize_uint8(images, image_size)


class ArrayDataset(Dataset):
    """Decoded images held in memory as uint8 ``[N, C, H, W]`` with int labels ``[N]``.

    The images are brought to ``image_size`` once, on construction (:func:`fit_images`).
    ``__getitem__`` returns ``(x, label)``: ``x`` float32 ``[C, S, S]`` in [0, 1] (``S`` the
    requested ``image_size``, or the stored size when ``None``).
    """

    def __init__(self, images: Tensor, labels: Tensor, image_size: int | None = None,
                 fit: str = "resize", name: str = "") -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} "
                             f"{tuple(images.shape)}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        self.fit = check_fit(fit)
        self.images, self.labels = fit_images(images, image_size, fit), labels.long()
        self.image_size, self.name = image_size, name

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index].float().div_(255.0), int(self.labels[index])

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return f"ArrayDataset({self.name!r}, n={len(self)}, item=[{c}, {h}, {w}])"
