"""Folders of images (imagefolder, CelebA, CelebA-HQ, LSUN): exact pixels, crops, splits and
error messages; and every dataset name failing cleanly on an empty data root."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from snngen.data import DataError, describe_datasets, get_dataset, list_datasets
from snngen.data.folders import center_crop_box


def save_png(path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


def rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_imagefolder_classes_and_exact_pixels(tmp_path):
    imgs = {}
    for c, (cls, n) in enumerate((("cats", 12), ("dogs", 8))):
        for i in range(n):
            arr = rgb(10, 14, seed=100 * c + i)
            imgs[(cls, i)] = arr
            save_png(tmp_path / cls / f"img{i}.png", arr)
    train = get_dataset("imagefolder", root=tmp_path, split="train", image_size=10)
    test = get_dataset("imagefolder", root=tmp_path, split="test", image_size=10)
    # every 10th image in natural order (cats/img0..img11, dogs/img0..img7) is test
    assert (len(train), len(test)) == (18, 2)
    assert [p.name for p in test.files] == ["img9.png", "img7.png"]
    assert [test[i][1] for i in range(2)] == [0, 1]  # cats = 0, dogs = 1
    x, y = test[1]
    # 10x14 image: centred square crop 10x10 from column 2, no resize at size 10: exact pixels
    ref = torch.from_numpy(imgs[("dogs", 7)][:, 2:12]).permute(2, 0, 1).float() / 255
    assert x.shape == (3, 10, 10) and y == 1 and torch.equal(x, ref)
    assert get_dataset("imagefolder", root=tmp_path)[0][0].shape == (3, 64, 64)  # default 64
    grey = get_dataset("imagefolder", root=tmp_path, image_size=5, channels=1, crop=4)[0][0]
    assert grey.shape == (1, 5, 5) and 0 <= grey.min() and grey.max() <= 1


def test_center_crop_box_like_torchvision():
    assert center_crop_box(178, 218, 148) == (15, 35, 163, 183)  # CelebA -> 148
    assert center_crop_box(10, 14, None) == (0, 2, 10, 12)
    assert center_crop_box(7, 4, None) == (2, 0, 6, 4)  # round(1.5) = 2, torchvision's rounding
    assert center_crop_box(5, 5, 9) == (0, 0, 5, 5)


def test_train_test_subfolders_and_corrupt_image(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            save_png(tmp_path / "lsun_bedroom" / split / f"{i}.png", rgb(6, 6, i))
    assert len(get_dataset("lsun_bedroom", root=tmp_path, split="train")) == 3
    test = get_dataset("lsun_bedroom", root=tmp_path, split="test", image_size=6)
    assert len(test) == 2 and test[1][1] == 0
    assert torch.equal(test[1][0], torch.from_numpy(rgb(6, 6, 1)).permute(2, 0, 1).float() / 255)
    bad = tmp_path / "lsun_bedroom" / "val" / "0.png"
    bad.write_bytes(bad.read_bytes()[:30])  # truncated PNG
    with pytest.raises(DataError, match="0.png"):
        test[0]


def test_celeba_partition_crop_and_resize(tmp_path):
    folder = tmp_path / "celeba"
    lines = []
    for i, part in enumerate([0, 0, 1, 2, 0, 2], start=1):
        save_png(folder / "img_align_celeba" / f"{i:06d}.jpg", rgb(218, 178, i))
        lines.append(f"{i:06d}.jpg {part}")
    (folder / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    train = get_dataset("celeba", root=tmp_path, split="train")
    test = get_dataset("celeba", root=tmp_path, split="test")
    assert [p.name for p in train.files] == ["000001.jpg", "000002.jpg", "000005.jpg"]
    assert [p.name for p in test.files] == ["000004.jpg", "000006.jpg"]
    x, y = test[0]
    assert x.shape == (3, 64, 64) and y == 0
    # centre crop 148 at full size equals the middle of the decoded file
    full = get_dataset("celeba", root=tmp_path, split="test", image_size=148)[0][0]
    arr = np.asarray(Image.open(folder / "img_align_celeba" / "000004.jpg").convert("RGB"))
    assert torch.equal(full, torch.from_numpy(arr[35:183, 15:163].copy()).permute(2, 0, 1) / 255.0)
    # without the partition file: the official ranges of file numbers (all 6 are train)
    (folder / "list_eval_partition.txt").unlink()
    assert len(get_dataset("celeba", root=tmp_path, split="train")) == 6
    with pytest.raises(DataError, match="celeba"):
        get_dataset("celeba", root=tmp_path, split="test")


@pytest.mark.parametrize("name", [n for n in list_datasets() if not n.startswith("mnist5k")])
def test_every_dataset_fails_cleanly_on_empty_root(tmp_path, name):
    """No data -> one-line DataError naming the dataset and the folder searched."""
    with pytest.raises(DataError) as err:
        get_dataset(name, root=tmp_path / "empty")
    msg = str(err.value)
    assert name in msg and "\n" not in msg
    assert str(tmp_path / "empty") in msg


def test_imagefolder_needs_root_and_describe():
    with pytest.raises(DataError, match="root"):
        get_dataset("imagefolder")
    table = describe_datasets()
    for name in list_datasets():
        assert f"\n{name} " in table
    assert "SNNGEN_DATA" in table and "train-images-idx3-ubyte" not in table  # brace form
    assert "{train,t10k}-{images-idx3,labels-idx1}-ubyte" in table
