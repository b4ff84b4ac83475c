"""Slow checks: FID+KID speed on 10,000 images, the real mnist5k classifier's accuracy."""

from __future__ import annotations

import time

import pytest
import torch

from snngen.metrics import ClassifierNet, evaluate

pytestmark = pytest.mark.slow


def test_fid_kid_on_10k_32px_images_with_the_classifier_under_30s(capsys):
    gen = torch.Generator().manual_seed(0)
    fake, real = torch.rand(10_000, 1, 32, 32, generator=gen), torch.rand(10_000, 1, 32, 32,
                                                                           generator=gen)
    net = ClassifierNet(1, 10, 32).eval()  # the default architecture; weights do not change speed
    t0 = time.perf_counter()
    out = evaluate(fake, real, metrics=["fid", "kid"], features=net, progress=False)
    seconds = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\nFID+KID, 10,000 vs 10,000 images 32x32, classifier features: {seconds:.1f} s")
    assert out["fid"].n_fake == 10_000 and out["kid"].n_real == 10_000
    assert seconds < 30


def test_mnist5k_classifier_reaches_95_percent(tmp_path, capsys):
    from snngen.metrics import train_classifier

    t0 = time.perf_counter()
    path, acc = train_classifier("mnist5k", cache=tmp_path, progress=False)
    with capsys.disabled():
        print(f"\nmnist5k classifier: test accuracy {acc:.4f} in {time.perf_counter() - t0:.0f} s")
    assert path.is_file() and acc > 0.95
