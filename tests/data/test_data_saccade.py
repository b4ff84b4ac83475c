"""Static images as events by simulated saccades: checked against a plain per-pixel DVS
written here (its own bilinear shift and threshold loop), and on its defining properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from snngen.data import DataError, SaccadeEvents, get_dataset, saccade_events
from snngen.data.saccade import LOG_EPS, saccade_path, shift_images


def shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``img`` moved by (dx, dy): out[i, j] = img at (i - dy, j - dx), bilinear, zeros outside."""
    h, w = img.shape
    out = np.zeros_like(img)
    for i in range(h):
        for j in range(w):
            y, x = i - dy, j - dx
            y0, x0 = math.floor(y), math.floor(x)
            for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                    if 0 <= yy < h and 0 <= xx < w:
                        out[i, j] += wy * wx * img[yy, xx]
    return out


def reference_events(img, time_bins, amplitude, threshold, substeps):
    """A DVS pixel by pixel: log(0.1 + I) against a reference that moves by whole thresholds."""
    n = time_bins * substeps
    verts = [(-amplitude / 2, -amplitude / 2), (0, amplitude / 2), (amplitude / 2, -amplitude / 2)]
    verts.append(verts[0])
    path = []
    for s in range(n + 1):
        u = 3 * s / n
        k = min(int(u), 2)
        f = u - k
        path.append(tuple(verts[k][c] * (1 - f) + verts[k + 1][c] * f for c in range(2)))
    logs = [np.log(LOG_EPS + shifted(img, dx, dy)) for dx, dy in path]
    frames = np.zeros((time_bins, 2) + img.shape)
    ref = logs[0].copy()
    for s in range(1, n + 1):
        for i, j in np.ndindex(img.shape):
            d = logs[s][i, j] - ref[i, j]
            count = math.floor(abs(d) / threshold + 1e-9)
            ref[i, j] += math.copysign(count * threshold, d)
            frames[(s - 1) // substeps, 1 if d > 0 else 0, i, j] += count
    return frames


def test_matches_per_pixel_reference():
    rng = np.random.default_rng(0)
    img = np.zeros((7, 8))
    img[2:5, 3:6] = rng.uniform(0.3, 1.0, size=(3, 3))
    got = saccade_events(torch.from_numpy(img).unsqueeze(0), time_bins=3, amplitude=2.0,
                         threshold=0.3, substeps=2)
    ref = reference_events(img, 3, 2.0, 0.3, 2)
    assert got.shape == (3, 2, 7, 8) and got.dtype == torch.float32
    assert np.array_equal(got.numpy(), ref)


def test_path_and_shift():
    p = saccade_path(6, 4.0)
    assert p.shape == (7, 2)
    assert p[[0, 2, 4, 6]].tolist() == [[-2, -2], [0, 2], [2, -2], [-2, -2]]
    img = torch.arange(12, dtype=torch.float64).view(3, 4)
    out = shift_images(img, torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64))
    right = torch.zeros_like(img)
    right[:, 1:] = img[:, :-1]
    up = torch.zeros_like(img)
    up[:-1] = img[1:]
    assert torch.allclose(out[0], right) and torch.allclose(out[1], up)


def test_properties_on_digits():
    digits = get_dataset("mnist5k", split="test", image_size=32)
    x, _ = digits[0]
    ev = saccade_events(x)
    assert ev.shape == (4, 2, 32, 32)
    assert ev[:, 0].sum() > 100 and ev[:, 1].sum() > 100  # both polarities
    assert (ev >= 0).all() and torch.equal(ev, ev.round())
    # the path is closed, so every pixel ends where it started: as many ON as OFF events
    assert torch.equal(ev[:, 1].sum(0), ev[:, 0].sum(0))
    assert torch.equal(ev, saccade_events(x))  # deterministic
    # every bin sees motion: events in each of the T frames
    assert (ev.sum(dim=(1, 2, 3)) > 0).all()
    # events only where the moved image differs from black: not in far corners
    assert ev[..., :2, :2].sum() == 0
    assert saccade_events(torch.zeros(1, 32, 32)).abs().sum() == 0  # blank image: no events
    assert saccade_events(torch.full((3, 16, 16), 0.5), amplitude=0).abs().sum() == 0
    # a higher threshold gives fewer events
    assert saccade_events(x, threshold=0.5).sum() < ev.sum()


def test_dataset_names_and_options():
    ds = get_dataset("mnist5k_saccade", split="test", image_size=32, time_bins=3)
    x, y = ds[5]
    assert isinstance(ds, SaccadeEvents) and len(ds) == 500 and x.shape == (3, 2, 32, 32)
    base_x, base_y = get_dataset("mnist5k", split="test", image_size=32)[5]
    assert y == base_y and torch.equal(x, saccade_events(base_x, time_bins=3))
    same = get_dataset("mnist5k", split="test", image_size=32, saccade=True, time_bins=3)
    assert torch.equal(same[5][0], x)
    other = get_dataset("mnist5k_saccade", split="test", saccade_threshold=0.4,
                        saccade_amplitude=2.0, saccade_substeps=3)
    assert other[5][0].shape == (4, 2, 28, 28)
    assert torch.equal(other[5][0], saccade_events(get_dataset("mnist5k", split="test")[5][0],
                                                   amplitude=2.0, threshold=0.4, substeps=3))
    with pytest.raises(DataError, match="saccade_threshold"):
        get_dataset("mnist5k_saccade", saccade_threshold=0)
    with pytest.raises(DataError, match="denoise_us"):
        get_dataset("mnist5k_saccade", denoise_us=5)
