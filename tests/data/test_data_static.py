"""mnist5k, IDX (MNIST / Fashion-MNIST) and CIFAR-10 pickle batches: exact decoding of small
files written here in the official formats, splits, sizes and error messages."""

from __future__ import annotations

import functools
import gzip
import pickle
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snngen.data import DataError, get_dataset, list_datasets, read_idx
from snngen.data.static import mnist5k_path

# ----------------------------------------------------------------------------- mnist5k


@functools.lru_cache(maxsize=1)
def _mnist5k_reference() -> tuple[np.ndarray, np.ndarray]:
    """The csv decoded independently (plain text parsing)."""
    with gzip.open(mnist5k_path(), "rt") as f:
        rows = [list(map(int, line.split(","))) for line in f if line.strip()]
    arr = np.array(rows)
    return arr[:, :784].reshape(-1, 28, 28), arr[:, 784]


def test_mnist5k_splits_sizes_balance_and_disjoint():
    train = get_dataset("mnist5k", split="train")
    test = get_dataset("mnist5k", split="test")
    assert (len(train), len(test)) == (4500, 500)
    assert torch.bincount(test.labels).tolist() == [50] * 10
    assert torch.bincount(train.labels).tolist() == [450] * 10
    # the two splits together are exactly the 5,000 digits of the file, each once
    pixels, labels = _mnist5k_reference()
    both = torch.cat([train.images, test.images]).view(5000, -1).numpy()
    ref = {row.tobytes() for row in pixels.reshape(5000, -1).astype(np.uint8)}
    assert {row.tobytes() for row in both} == ref
    # the order is shuffled (the file is sorted by class)
    assert len(set(test.labels[:10].tolist())) > 3


def test_mnist5k_items_exact_and_deterministic():
    pixels, labels = _mnist5k_reference()
    ds = get_dataset("mnist5k", split="test")
    again = get_dataset("mnist5k", split="test")
    assert torch.equal(ds.images, again.images) and torch.equal(ds.labels, again.labels)
    x, y = ds[7]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28) and isinstance(y, int)
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0
    # the item is one of the file's rows, divided by 255, with its label
    hits = np.where((pixels.reshape(5000, -1) == np.rint(x.numpy() * 255).reshape(1, -1)).all(1))[0]
    assert len(hits) >= 1 and labels[hits[0]] == y
    assert torch.allclose(x * 255, torch.from_numpy(pixels[hits[0]]).float().unsqueeze(0))


def bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` weights of 1-D linear interpolation when enlarging: each output pixel
    centre mapped back to the input (half-pixel centres), the two nearest input pixels weighted
    by distance, edges clamped."""
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        pos = (i + 0.5) * n_in / n_out - 0.5
        lo = int(np.floor(pos))
        for k, a in ((lo, 1 - (pos - lo)), (lo + 1, pos - lo)):
            w[i, min(max(k, 0), n_in - 1)] += a
    return w


def bilinear_by_hand(img: np.ndarray, size: int) -> np.ndarray:
    """Independent reference of PIL's bilinear enlargement of an 8-bit image (what
    torchvision's Resize does to PIL images): a horizontal pass rounded to 8 bits, then a
    vertical pass rounded to 8 bits (PIL resamples in two passes through an 8-bit image)."""
    w = bilinear_weights(img.shape[0], size)
    rows = np.floor(img @ w.T + 0.5)
    return np.floor(w @ rows + 0.5)


def test_mnist5k_resized_to_32_as_the_originals_do():
    """Default 28 -> 32 is a bilinear resize of the 8-bit image, rounded to 8 bits (FSVAE, SDDPM
    and the snnTorch tutorial run torchvision's Resize on PIL images); fit=pad pads instead."""
    d28 = get_dataset("mnist5k", split="test")
    d32 = get_dataset("mnist5k", split="test", image_size=32)
    for index in (3, 17):
        x28, x32 = d28[index][0], d32[index][0]
        assert x32.shape == (1, 32, 32)
        ref = bilinear_by_hand(np.rint(x28[0].numpy() * 255), 32)
        got = np.rint(x32[0].numpy() * 255)
        assert np.array_equal(got, ref)
    padded = get_dataset("mnist5k", split="test", image_size=32, fit="pad")[3][0]
    assert torch.equal(padded[:, 2:30, 2:30], d28[3][0])  # padding: pixels kept
    border = padded.clone()
    border[:, 2:30, 2:30] = 0
    assert border.abs().max() == 0
    x16 = get_dataset("mnist5k", split="test", image_size=16)[3][0]
    assert x16.shape == (1, 16, 16) and 0 <= x16.min() and x16.max() <= 1
    # area-like shrink keeps the mean brightness roughly
    assert abs(x16.mean() - d28[3][0].mean()) < 0.02


def test_mnist5k_loads_fast():
    import time

    from snngen.data import static

    static._read_mnist5k.cache_clear()
    t0 = time.perf_counter()
    get_dataset("mnist5k")
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    get_dataset("mnist5k", split="test")
    assert first < 1.0 and time.perf_counter() - t0 < 0.2


# ----------------------------------------------------------------------------- IDX


def idx_bytes(arr: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array, written from the format's definition."""
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def write_idx_set(folder, n_train=5, n_test=3, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        for stem, arr in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
            data = idx_bytes(arr)
            path = folder / (stem + (".gz" if gz else ""))
            path.write_bytes(gzip.compress(data) if gz else data)
        out[prefix] = (x, y)
    return out


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_exact_decoding(tmp_path, gz, name):
    ref = write_idx_set(tmp_path / name, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = get_dataset(name, root=tmp_path, split=split)
        x, y = ref[prefix]
        assert len(ds) == len(x)
        for i in range(len(x)):
            img, label = ds[i]
            assert img.shape == (1, 28, 28) and label == int(y[i])
            assert torch.equal(img, torch.from_numpy(x[i]).float().div(255).unsqueeze(0))
    img32 = get_dataset(name, root=tmp_path, split="test", image_size=32, fit="pad")[1][0]
    assert torch.equal(img32, F.pad(torch.from_numpy(ref["t10k"][0][1]).float().div(255), (2,) * 4)
                       .unsqueeze(0))


def test_idx_torchvision_layout_and_read_idx(tmp_path):
    ref = write_idx_set(tmp_path / "MNIST" / "raw", gz=False)
    ds = get_dataset("mnist", root=tmp_path, split="train")
    assert len(ds) == 5 and ds[4][1] == int(ref["train"][1][4])
    arr = read_idx(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte")
    assert arr.shape == (5, 28, 28) and np.array_equal(arr, ref["train"][0])


def test_idx_missing_names_files_and_folders(tmp_path):
    with pytest.raises(DataError) as err:
        get_dataset("fashion_mnist", root=tmp_path, split="test")
    msg = str(err.value)
    assert "fashion_mnist" in msg and "t10k-images-idx3-ubyte" in msg
    assert "t10k-labels-idx1-ubyte" in msg and str(tmp_path / "fashion_mnist") in msg
    assert f"snngen datasets download fashion_mnist --root {tmp_path}'" in msg  # the way out
    assert "data.download: true" in msg and "\n" not in msg


@pytest.mark.parametrize("gz", [True, False])
def test_idx_truncated_or_corrupt_names_file(tmp_path, gz):
    write_idx_set(tmp_path / "mnist", gz=gz)
    stem = "train-images-idx3-ubyte" + (".gz" if gz else "")
    path = tmp_path / "mnist" / stem
    path.write_bytes(path.read_bytes()[:-100])  # cut off the end
    with pytest.raises(DataError, match="train-images-idx3-ubyte") as err:
        get_dataset("mnist", root=tmp_path)
    assert str(path) in str(err.value)
    path.write_bytes(b"\x12\x34" + b"\x00" * 50)  # not an IDX (nor a gzip) file
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        get_dataset("mnist", root=tmp_path)


def test_idx_label_count_mismatch(tmp_path):
    write_idx_set(tmp_path / "mnist", gz=False)
    (tmp_path / "mnist" / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte"):
        get_dataset("mnist", root=tmp_path)


# ----------------------------------------------------------------------------- CIFAR-10


def cifar_batch(n: int, seed: int) -> tuple[bytes, np.ndarray, list[int]]:
    """A python batch as the CIFAR-10 site describes it: rows of 3072 bytes, the 1024 red
    values (row-major 32x32), then green, then blue; labels a list."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist()
    blob = pickle.dumps({b"batch_label": b"x", b"labels": labels, b"data": data,
                         b"filenames": [b"f"] * n}, protocol=2)
    return blob, data, labels


def write_cifar(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    ref = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        blob, data, labels = cifar_batch(n, seed=i)
        (folder / name).write_bytes(blob)
        ref[name] = (data, labels)
    return ref


def test_cifar_exact_decoding(tmp_path):
    ref = write_cifar(tmp_path / "cifar-10-batches-py")
    train = get_dataset("cifar10", root=tmp_path, split="train")
    test = get_dataset("cifar10", root=tmp_path, split="test")
    assert (len(train), len(test)) == (15, 3)
    data, labels = ref["data_batch_2"]
    x, y = train[3 + 1]  # batch 2, item 1
    assert x.shape == (3, 32, 32) and y == labels[1]
    row = data[1]
    for c in range(3):
        for (h, w) in [(0, 0), (0, 31), (5, 7), (31, 0), (31, 31)]:
            assert x[c, h, w] * 255 == pytest.approx(row[c * 1024 + h * 32 + w], abs=1e-4)
    data, labels = ref["test_batch"]
    x, y = test[2]
    assert y == labels[2] and torch.allclose(
        x * 255, torch.from_numpy(data[2].reshape(3, 32, 32)).float(), atol=1e-4)
    small = get_dataset("cifar10", root=tmp_path, split="test", image_size=16)
    assert small[0][0].shape == (3, 16, 16)


def test_cifar_from_archive(tmp_path):
    ref = write_cifar(tmp_path / "src" / "cifar-10-batches-py")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    test = get_dataset("cifar10", root=tmp_path, split="test")
    data, labels = ref["test_batch"]
    assert len(test) == 3 and test[0][1] == labels[0]
    assert torch.allclose(test[0][0] * 255, torch.from_numpy(data[0].reshape(3, 32, 32)).float(),
                          atol=1e-4)


def test_cifar100_fine_labels_from_folder_and_archive(tmp_path):
    """CIFAR-100's python batches ("train", "test") as its site describes them: the same 3072
    bytes per row, labels in "fine_labels" (0-99) beside "coarse_labels" (0-19)."""
    rng = np.random.default_rng(3)
    src = tmp_path / "src" / "cifar-100-python"
    src.mkdir(parents=True)
    ref = {}
    for name, n in (("train", 5), ("test", 4)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = rng.integers(20, 100, size=n).tolist()  # >= 20: never a coarse label
        (src / name).write_bytes(pickle.dumps(
            {b"filenames": [b"f"] * n, b"batch_label": b"x", b"fine_labels": fine,
             b"coarse_labels": [f // 5 for f in fine], b"data": data}, protocol=2))
        ref[name] = (data, fine)
    for root in (tmp_path / "src", tmp_path / "tar"):
        if root.name == "tar":
            root.mkdir()
            with tarfile.open(root / "cifar-100-python.tar.gz", "w:gz") as tar:
                tar.add(src, arcname="cifar-100-python")
        test = get_dataset("cifar100", root=root, split="test")
        data, fine = ref["test"]
        assert len(test) == 4 and [test[i][1] for i in range(4)] == fine
        assert torch.allclose(test[3][0] * 255,
                              torch.from_numpy(data[3].reshape(3, 32, 32)).float(), atol=1e-4)
        assert len(get_dataset("cifar100", root=root, split="train")) == 5
    with pytest.raises(DataError, match="cifar-100-python"):
        get_dataset("cifar100", root=tmp_path / "none")


def test_cifar_missing_and_corrupt(tmp_path):
    with pytest.raises(DataError) as err:
        get_dataset("cifar10", root=tmp_path, split="train")
    msg = str(err.value)
    assert "cifar10" in msg and "data_batch_1" in msg and "data_batch_5" in msg
    assert str(tmp_path / "cifar-10-batches-py") in msg
    write_cifar(tmp_path / "cifar-10-batches-py")
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="test_batch"):
        get_dataset("cifar10", root=tmp_path, split="test")
    # a pickle that would run code is refused, not executed: its marker file never appears
    marker = tmp_path / "PWNED"

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    pickle.loads(pickle.dumps(Exploit()))  # the payload is real: unpickled freely, it runs
    assert marker.exists()
    marker.unlink()
    path.write_bytes(pickle.dumps({b"data": Exploit(), b"labels": [0]}))
    with pytest.raises(DataError, match="test_batch"):
        get_dataset("cifar10", root=tmp_path, split="test")
    assert not marker.exists()


# ----------------------------------------------------------------------------- registry


def test_unknown_name_split_option():
    with pytest.raises(DataError) as err:
        get_dataset("mnsit")
    assert "mnsit" in str(err.value) and all(n in str(err.value) for n in list_datasets())
    with pytest.raises(DataError, match="split"):
        get_dataset("mnist5k", split="val")
    with pytest.raises(DataError, match="image_size"):
        get_dataset("mnist5k", image_size=0)
    with pytest.raises(DataError, match="colour") as err:
        get_dataset("mnist5k", colour=True)
    assert "fit" in str(err.value)
    with pytest.raises(DataError, match="saccade"):
        get_dataset("mnist5k", time_bins=4)  # an event option on a static set
    with pytest.raises(DataError, match="fit"):
        get_dataset("mnist5k", fit="stretch")
