"""Datasets stored as folders of image files: CelebA, CelebA-HQ, LSUN (exported to images) and
any ``imagefolder``. Images are decoded with PIL on access, centre-cropped and resized.

Layouts (``<root>`` is the data root, see :func:`~snngen.data.base.default_root`):

- ``celeba``: ``<root>/celeba/img_align_celeba/*.jpg`` with
  ``<root>/celeba/list_eval_partition.txt`` (torchvision's layout; ``<root>/img_align_celeba``
  also works). Without the partition file the official ranges of file numbers are used
  (train 1-162770, test 182638-202599).
  Images: centre crop 148 x 148, then resize to 64 (FSVAE).
- ``celeba_hq``, ``lsun_bedroom``, ``lsun_church``: ``<root>/<name>/`` holding images (at any
  depth; LSUN's LMDB must first be exported to image files, e.g. with the LSUN tools'
  ``data.py export``). Largest centred square, resized to 256.
- ``imagefolder``: ``root`` is the folder itself; one subfolder per class gives labels
  (sorted names -> 0, 1, ...), images directly in it get label 0. Resized to 64.

Splits of the folder sets: ``train/`` and ``test/`` (or ``val/``) subfolders when present;
otherwise every 10th image in natural name order (index % 10 == 9) is test, the rest train.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from snngen.data.base import (
    DataError,
    MissingDataError,
    check_split,
    natural_key,
    resolve_root,
    searched,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
CELEBA_PARTITION = "list_eval_partition.txt"
CELEBA_IMAGES = "img_align_celeba"
#: the official CelebA partition by file number (used when the partition file is absent)
CELEBA_RANGES = {"train": (1, 162770), "valid": (162771, 182637), "test": (182638, 202599)}
#: CelebA's splits: its official valid split is the reference of FSVAE's CelebA FID
CELEBA_SPLITS = ("train", "valid", "test")
TEST_EVERY = 10


def center_crop_box(width: int, height: int, crop: int | None) -> tuple[int, int, int, int]:
    """The ``(left, top, right, bottom)`` box of a centred crop (torchvision's rounding).

    ``crop=None`` takes the largest centred square. A crop larger than the image is clipped
    to it (as a square of the smaller side).
    """
    side = min(width, height) if crop is None else min(crop, width, height)
    left = int(round((width - side) / 2.0))
    top = int(round((height - side) / 2.0))
    return left, top, left + side, top + side


def load_image(path: Path, image_size: int, crop: int | None, channels: int = 3) -> Tensor:
    """Decode ``path``, centre-crop, resize (PIL bilinear) and return ``[C, S, S]`` in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            im = im.crop(center_crop_box(im.width, im.height, crop))
            if im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot decode image '{path}': {err} (truncated or corrupt)") from None
    x = torch.from_numpy(arr.copy())
    x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
    return x.float().div_(255.0)


_LISTINGS: dict[str, tuple[str, ...]] = {}


def list_images(folder: str) -> tuple[str, ...]:
    """All image files under ``folder`` (any depth), as paths relative to it, natural order.

    A non-empty listing is cached per process (listing LSUN takes a while); an empty one is
    not, so files added after a failed attempt are found on the next.
    """
    if folder in _LISTINGS:
        return _LISTINGS[folder]
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, folder)
        for name in filenames:
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                found.append(name if rel == "." else os.path.join(rel, name))
    listing = tuple(sorted(found, key=natural_key))
    if listing:
        _LISTINGS[folder] = listing
    return listing


class ImageFiles(Dataset):
    """Image files decoded on access. Items ``(x [C, S, S] in [0, 1], label)``."""

    def __init__(self, files: list[Path], labels: list[int], image_size: int,
                 crop: int | None = None, channels: int = 3, name: str = "") -> None:
        self.files, self.labels = files, labels
        self.image_size, self.crop, self.channels, self.name = image_size, crop, channels, name

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x = load_image(self.files[index], self.image_size, self.crop, self.channels)
        return x, self.labels[index]

    def __repr__(self) -> str:
        s = self.image_size
        return f"ImageFiles({self.name!r}, n={len(self)}, item=[{self.channels}, {s}, {s}])"


def _split_folder(folder: Path, split: str) -> tuple[Path, list[str]]:
    """(folder of the split, its image paths relative to it): ``train/``, ``test/``|``val/``
    subfolders if present, else every 10th image (natural order) as test."""
    sub = {"train": ["train"], "test": ["test", "val", "valid"]}[split]
    if (folder / "train").is_dir():
        for s in sub:
            if (folder / s).is_dir():
                return folder / s, list(list_images(str(folder / s)))
        raise DataError(f"'{folder}' has a train/ subfolder but no test/ (or val/) subfolder; "
                        "add one, or put all images in one folder for the automatic split")
    files = list_images(str(folder))
    keep = [i % TEST_EVERY == TEST_EVERY - 1 for i in range(len(files))]
    if split == "train":
        keep = [not k for k in keep]
    return folder, [f for f, k in zip(files, keep, strict=True) if k]


def _class_labels(files: list[str]) -> list[int]:
    """Labels from the first path component (class subfolders); 0 for all if any file is loose."""
    tops = [Path(f).parts[0] if len(Path(f).parts) > 1 else None for f in files]
    if any(t is None for t in tops):
        return [0] * len(files)
    classes = {c: i for i, c in enumerate(sorted(set(tops), key=natural_key))}
    return [classes[t] for t in tops]


def load_imagefolder(name: str, folder: Path, split: str, image_size: int,
                     crop: int | None, channels: int = 3, labels: bool = True) -> ImageFiles:
    """The ``split`` of a folder of images (see the module docstring for the layout)."""
    if channels not in (1, 3):
        raise DataError(f"channels={channels!r} must be 1 (grey) or 3 (RGB)")
    if crop is not None and (isinstance(crop, bool) or not isinstance(crop, int) or crop < 1):
        raise DataError(f"crop={crop!r} must be a positive integer or null")
    base, files = _split_folder(folder, check_split(split))
    if not files:
        raise DataError(f"dataset '{name}' ({split}): no image files "
                        f"({', '.join(IMAGE_EXTENSIONS)}) under '{base}'")
    ys = _class_labels(files) if labels else [0] * len(files)
    return ImageFiles([base / f for f in files], ys, image_size, crop, channels, name=name)


# ----------------------------------------------------------------------------- named sets

FOLDER_NAMES = {
    "celeba_hq": ("celeba_hq", "CelebA-HQ", "celeba-hq", "celebahq"),
    "lsun_bedroom": ("lsun_bedroom", "lsun/bedroom", "lsun/bedroom_train", "bedroom"),
    "lsun_church": ("lsun_church", "lsun/church_outdoor", "lsun/church", "church_outdoor"),
}
FOLDER_DEFAULTS = {"celeba": (64, 148), "celeba_hq": (256, None), "lsun_bedroom": (256, None),
                   "lsun_church": (256, None), "imagefolder": (64, None)}


def load_named_folder(name: str, root=None, split: str = "train", image_size: int | None = None,
                      crop: int | None = None) -> ImageFiles:
    """``celeba_hq``, ``lsun_bedroom`` or ``lsun_church`` from ``<root>/<name>/`` (images)."""
    base = resolve_root(root)
    folders = [base / sub for sub in FOLDER_NAMES[name]]
    folder = next((f for f in folders if f.is_dir() and list_images(str(f))), None)
    if folder is None:
        raise MissingDataError(
            f"dataset '{name}': no folder of images (*.jpg, *.png, ...) found at any of "
            f"{searched(folders)}; put the images (optionally in train/ and test/ subfolders) in "
            f"'{folders[0]}'")
    size = image_size or FOLDER_DEFAULTS[name][0]
    return load_imagefolder(name, folder, split, size, crop, labels=False)


def load_generic_folder(root=None, split: str = "train", image_size: int | None = None,
                        crop: int | None = None, channels: int = 3) -> ImageFiles:
    """``imagefolder``: ``root`` is the folder of images (class subfolders give labels)."""
    if root is None:
        raise DataError("dataset 'imagefolder' needs root=<folder of images> (data.root in a "
                        "config, --root on the command line)")
    folder = resolve_root(root)
    if not folder.is_dir():
        raise DataError(f"dataset 'imagefolder': folder '{folder}' does not exist")
    return load_imagefolder("imagefolder", folder, split, image_size or 64, crop, channels)


def _celeba_split_files(folder: Path, images: Path, split: str) -> list[Path]:
    part = folder / CELEBA_PARTITION
    wanted = {"train": "0", "valid": "1", "test": "2"}[split]
    if part.is_file():
        try:
            rows = [line.split() for line in part.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"cannot read '{part}': {err}") from None
        if any(len(r) != 2 or r[1] not in ("0", "1", "2") for r in rows):
            raise DataError(f"'{part}' is corrupt: every line must be '<file> <0|1|2>'")
        return [images / r[0] for r in rows if r[1] == wanted]
    lo, hi = CELEBA_RANGES[split]
    names = [f for f in list_images(str(images)) if Path(f).stem.isdigit()]
    return [images / f for f in names if lo <= int(Path(f).stem) <= hi]


def load_celeba(root=None, split: str = "train", image_size: int | None = None,
                crop: int | None = 148) -> ImageFiles:
    """CelebA (aligned): centre crop ``crop`` (148, as FSVAE) then resize to ``image_size`` (64).

    Items ``(x [3, S, S] in [0, 1], 0)``.
    """
    base = resolve_root(root)
    folders = [base / "celeba", base]
    folder = next((f for f in folders if (f / CELEBA_IMAGES).is_dir()), None)
    if folder is None:
        raise MissingDataError(
            f"dataset 'celeba': folder {CELEBA_IMAGES}/ (the aligned *.jpg files) not found in "
            f"any of {searched(folders)}; place it and {CELEBA_PARTITION} in '{folders[0]}'")
    files = _celeba_split_files(folder, folder / CELEBA_IMAGES, check_split(split, CELEBA_SPLITS))
    if not files:
        raise DataError(f"dataset 'celeba' ({split}): no images of this split in "
                        f"'{folder / CELEBA_IMAGES}'")
    missing = next((f for f in files[:1] + files[-1:] if not f.is_file()), None)
    if missing is not None:
        raise DataError(f"dataset 'celeba': '{missing}' is listed in {CELEBA_PARTITION} "
                        "but missing")
    size = image_size or FOLDER_DEFAULTS["celeba"][0]
    return ImageFiles(files, [0] * len(files), size, crop, 3, name="celeba")
