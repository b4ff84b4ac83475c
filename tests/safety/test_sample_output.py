"""Bounded-memory sampling: the streamed outputs hold exactly the samples the model draws."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from snngen.cli import main
from snngen.runs import load_run


def reference_samples(run_dir, n, batch_size, seed=0):
    """The samples drawn directly: one generator, batches of ``batch_size``."""
    model = load_run(run_dir).model
    gen = torch.Generator().manual_seed(seed)
    out = [model.sample(min(batch_size, n - s), generator=gen) for s in range(0, n, batch_size)]
    return torch.cat(out)


def test_npy_output_streams_every_sample(run_copy, config_dir):
    assert main(["sample", str(run_copy), "--n", "7", "--batch-size", "3", "--seed", "5",
                 "--out", "s.npy"]) == 0
    arr = np.load(config_dir / "s.npy")
    ref = reference_samples(run_copy, 7, 3, seed=5)
    assert arr.shape == (7, 1, 8, 8) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr, ref.numpy())


def test_folder_output_one_png_per_sample(run_copy, config_dir):
    assert main(["sample", str(run_copy), "--n", "5", "--batch-size", "2",
                 "--out", "imgs/"]) == 0
    files = sorted(p.name for p in (config_dir / "imgs").iterdir())
    assert files == [f"sample_{i:06d}.png" for i in range(5)]
    ref = reference_samples(run_copy, 5, 2)
    expected = (ref.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()
    for i in range(5):
        got = np.asarray(Image.open(config_dir / "imgs" / f"sample_{i:06d}.png"))
        np.testing.assert_array_equal(got, expected[i])


def test_batch_size_changes_memory_not_the_grid_when_one_batch(run_copy, config_dir):
    """With one batch (n <= batch size) the grid is the same as drawing all at once."""
    assert main(["sample", str(run_copy), "--n", "4", "--out", "a.png"]) == 0
    assert main(["sample", str(run_copy), "--n", "4", "--batch-size", "4", "--out", "b.png"]) == 0
    a = np.asarray(Image.open(config_dir / "a.png"))
    b = np.asarray(Image.open(config_dir / "b.png"))
    np.testing.assert_array_equal(a, b)
