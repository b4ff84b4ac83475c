"""Bounded-memory sampling: the streamed outputs hold exactly the samples the model draws."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from snngen.cli import main
from snngen.runs import load_run


def reference_samples(run_dir, n, batch_size, seed=0):
    """The samples drawn directly: batches of ``batch_size`` from one generator seeded as
    snngen.generation's shard 0 (n <= 1000): sha256("snngen-shard:{seed}:0"), 63 bits."""
    model = load_run(run_dir).model
    digest = hashlib.sha256(f"snngen-shard:{seed}:0".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
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


def test_npy_output_of_events_is_sample_first(tmp_path):
    """Event batches [T, B, 2, H, W] are stored sample first: arr[i] is sample i's [T, 2, H, W]."""
    from snngen.sample_files import plan_sample_output, write_sample_batches

    gen = torch.Generator().manual_seed(0)
    first, second = (torch.randint(0, 5, (3, b, 2, 4, 4), generator=gen).float() for b in (2, 1))
    out = plan_sample_output(tmp_path / "ev.npy", 3, 3 * 2 * 4 * 4, events=True)
    write_sample_batches(iter([first, second]), out)
    arr = np.load(tmp_path / "ev.npy")
    assert arr.shape == (3, 3, 2, 4, 4)
    for i, sample in enumerate([first[:, 0], first[:, 1], second[:, 0]]):
        np.testing.assert_array_equal(arr[i], sample.numpy())


def test_diffusion_steps_bounded_by_the_trained_schedule():
    """--steps may be 1 ... the model's diffusion_steps (here 10), nothing else."""
    from snngen.errors import SnngenError
    from snngen.evaluation import sample_kwargs
    from snngen.models import DataInfo, build_model
    from snngen.models.diffusion_model import SDDPMConfig

    model = build_model(SDDPMConfig(ch=8, ch_mult=[1], num_res_blocks=1, timesteps=2,
                                    diffusion_steps=10), DataInfo(channels=1, image_size=8))
    assert sample_kwargs(model, steps=10, solver="ddim") == {"steps": 10, "solver": "ddim"}
    assert sample_kwargs(model, steps=1) == {"steps": 1}
    for bad in (11, 0):
        with pytest.raises(SnngenError, match=f"--steps {bad}"):
            sample_kwargs(model, steps=bad)
    with pytest.raises(SnngenError, match="--solver euler: unknown sampler"):
        sample_kwargs(model, solver="euler")
