"""Shared pieces of the metrics tests: a synthetic labelled image set that a tiny classifier
learns in a second, and an isolated cache folder."""

from __future__ import annotations

import pytest
import torch


def make_bars(n: int, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy images ``[n, 1, size, size]`` in [0, 1] of 4 classes: a bright bar in row
    band, column band, top-left or bottom-right quadrant; returns ``(images, labels)``."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    x = 0.2 * torch.rand(n, 1, size, size, generator=gen)
    h = size // 2
    x[labels == 0, :, :h, :] += 0.7
    x[labels == 1, :, :, :h] += 0.7
    x[labels == 2, :, h:, h:] += 0.7
    x[labels == 3, :, :h, :h] += 0.7
    return x.clamp(0, 1), labels


@pytest.fixture
def bars():
    """The :func:`make_bars` function."""
    return make_bars


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh snngen cache folder (``$SNNGEN_CACHE``)."""
    monkeypatch.setenv("SNNGEN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def bars_dataset(monkeypatch):
    """Make :func:`load_labelled_images` serve the ``bars`` set (train 256 / test 64) for any
    dataset name, so training runs without real data; records the calls."""
    calls = []

    def fake_load(dataset, split, *, root=None, image_size=32):
        calls.append((dataset, split, image_size))
        train = split == "train"
        return make_bars(256 if train else 64, image_size, seed=0 if train else 1)

    import snngen.metrics.cache as cache

    monkeypatch.setattr(cache, "load_labelled_images", fake_load)
    return calls
