"""Tiny stand-in data sets written in each real data set's own file format.

Each writer puts a handful of items where :mod:`snngen.data` looks for the real files, in the
real encoding (IDX for MNIST / Fashion-MNIST, CIFAR-10's python pickle batches, CelebA's aligned
JPEGs with ``list_eval_partition.txt``, LSUN's exported image folder, N-MNIST's 40-bit ``.bin``
events, CIFAR10-DVS's AEDAT 2.0), written here from each format's definition, not with
snngen's readers. Every split has at least :data:`N_ITEMS` items; labelled sets cycle through
:data:`N_CLASSES` classes so the in-package classifier can be trained on them. Images are a
bright square whose position depends on the class, plus a little noise.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

#: items per split (>= the n=16 samples the every-config test evaluates, and >= one batch)
N_ITEMS = 16
#: classes of the labelled stand-ins (the classifier needs at least 2)
N_CLASSES = 4


def class_image(label: int, size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 ``[size, size]`` (1 channel) or ``[size, size, 3]``: a bright square in the corner
    ``label % 4`` on a dark noisy background."""
    img = rng.integers(0, 40, size=(size, size, channels), dtype=np.uint8)
    half = size // 2
    r0, c0 = (label % 4 // 2) * half, (label % 2) * half
    img[r0 + 2 : r0 + half - 2, c0 + 2 : c0 + half - 2] = 230
    return img[..., 0] if channels == 1 else img


def _labels(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.uint8) % N_CLASSES


# ----------------------------------------------------------------------------- IDX (MNIST)


def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic ``0 0 0x08 ndim``, big-endian dims, the bytes."""
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def write_idx(root: Path, name: str, n: int = N_ITEMS, seed: int = 0) -> None:
    """MNIST-style ``<root>/<name>/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``."""
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        y = _labels(n)
        x = np.stack([class_image(int(c), 28, 1, rng) for c in y])
        for stem, arr in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
            (folder / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(arr)))


# ----------------------------------------------------------------------------- CIFAR-10


def write_cifar10(root: Path, n: int = N_ITEMS, seed: int = 0) -> None:
    """``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch}``: pickled dicts with ``data``
    uint8 ``[n, 3072]`` (1024 red, 1024 green, 1024 blue values, row-major) and ``labels``."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        y = _labels(n)
        hwc = np.stack([class_image(int(c), 32, 3, rng) for c in y])
        data = hwc.transpose(0, 3, 1, 2).reshape(n, 3072)
        blob = {b"batch_label": name.encode(), b"labels": y.tolist(), b"data": data,
                b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(blob, protocol=2))


# ----------------------------------------------------------------------------- image folders


def write_celeba(root: Path, n: int = N_ITEMS, seed: int = 0) -> None:
    """``<root>/celeba/img_align_celeba/NNNNNN.jpg`` (218 x 178, as the aligned set) and
    ``list_eval_partition.txt`` with ``n`` files each in train (0), valid (1) and test (2)."""
    rng = np.random.default_rng(seed)
    folder = root / "celeba"
    images = folder / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(3 * n):
        name = f"{i + 1:06d}.jpg"
        img = np.zeros((218, 178, 3), np.uint8)
        img[35:183, 15:163] = np.asarray(Image.fromarray(class_image(i, 148, 3, rng)))
        Image.fromarray(img).save(images / name, quality=90)
        lines.append(f"{name} {i // n}")
    (folder / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")


def write_image_folder(root: Path, name: str, n: int = N_ITEMS, size: int = 24,
                       seed: int = 0) -> None:
    """An exported LSUN-style folder ``<root>/<name>/*.jpg`` with no subfolders: snngen takes
    every 10th image as test, so ``10 n`` images give ``n`` test items."""
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(10 * n):
        Image.fromarray(class_image(i, size, 3, rng)).save(folder / f"{i:07d}.jpg", quality=90)


# ----------------------------------------------------------------------------- events


def nmnist_bytes(events: list[tuple[int, int, int, int]]) -> bytes:
    """N-MNIST's 40-bit events: x (8 bits), y (8), polarity (1) and a 23-bit timestamp (us)."""
    out = bytearray()
    for x, y, p, t in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def _event_blob(label: int, size: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Dense events (1 ms apart, so a 10 ms denoising filter keeps them) in the class's corner
    of a ``size`` x ``size`` sensor: (x, y, p, t)."""
    half = size // 2
    r0, c0 = (label % 4 // 2) * half, (label % 2) * half
    ev = []
    for k in range(200):
        x = c0 + 2 + int(rng.integers(0, half - 4))
        y = r0 + 2 + int(rng.integers(0, half - 4))
        ev.append((x, y, k % 2, 1000 * (k // 4)))
    return ev


def write_nmnist(root: Path, n: int = N_ITEMS, seed: int = 0) -> None:
    """``<root>/nmnist/{Train,Test}/<digit>/NNNNN.bin`` on the 34 x 34 sensor."""
    rng = np.random.default_rng(seed)
    for split in ("Train", "Test"):
        for i in range(n):
            digit = i % N_CLASSES
            d = root / "nmnist" / split / str(digit)
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i:05d}.bin").write_bytes(nmnist_bytes(_event_blob(digit, 34, rng)))


def aedat2_bytes(events: list[tuple[int, ...]]) -> bytes:
    """AEDAT 2.0 of a DVS128: ``#`` header lines, then big-endian uint32 pairs (address,
    timestamp), address = y_raw << 8 | x_raw << 1 | off_bit."""
    head = b"#!AER-DAT2.0\r\n# stand-in written by snngen's tests\r\n"
    return head + b"".join(struct.pack(">II", (y << 8) | (x << 1) | (1 - p), t)
                           for x, y, p, t in events)


def write_cifar10_dvs(root: Path, n: int = N_ITEMS, seed: int = 0) -> None:
    """``<root>/cifar10_dvs/<class>/cifar10_<class>_<i>.aedat`` for every class; the first tenth
    of each class is test, so 10 files per class give one test item each."""
    from snngen.data.events import CIFAR10_DVS_CLASSES

    rng = np.random.default_rng(seed)
    per_class = max(10, -(-10 * n // len(CIFAR10_DVS_CLASSES)))
    for c, cls in enumerate(CIFAR10_DVS_CLASSES):
        d = root / "cifar10_dvs" / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (d / f"cifar10_{cls}_{i}.aedat").write_bytes(aedat2_bytes(_event_blob(c, 128, rng)))


# ----------------------------------------------------------------------------- by name

WRITERS = {
    "mnist": lambda root: write_idx(root, "mnist"),
    "fashion_mnist": lambda root: write_idx(root, "fashion_mnist", seed=1),
    "cifar10": write_cifar10,
    "celeba": write_celeba,
    "lsun_bedroom": lambda root: write_image_folder(root, "lsun_bedroom"),
    "lsun_church": lambda root: write_image_folder(root, "lsun_church"),
    "celeba_hq": lambda root: write_image_folder(root, "celeba_hq"),
    "nmnist": write_nmnist,
    "cifar10_dvs": write_cifar10_dvs,
}
#: bundled data sets: nothing to write (``<static>_saccade`` derives from the static set)
BUNDLED = ("mnist5k", "mnist5k_saccade")


def write_standin(name: str, root: Path) -> None:
    """Write the stand-in of data set ``name`` under ``root`` (once; bundled sets need none)."""
    if name in BUNDLED:
        return
    base = name.removesuffix("_saccade")
    if base not in WRITERS:
        raise KeyError(f"no stand-in writer for data set {name!r}; add one to {__file__}")
    marker = root / f".{base}-written"
    if not marker.exists():
        WRITERS[base](root)
        marker.touch()
