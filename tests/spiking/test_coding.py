"""Encoders and decoders against loops and closed forms."""

import pytest
import torch

from snngen.spiking import (
    direct_encode,
    last_decode,
    mean_decode,
    poisson_encode,
    repeat,
    weighted_decode,
)


def test_direct_encode_repeats_without_copying():
    x = torch.rand(2, 1, 3, 3)
    y = direct_encode(x, 4)
    assert y.shape == (4, 2, 1, 3, 3)
    for t in range(4):
        assert torch.equal(y[t], x)
    assert y.stride(0) == 0 and y.data_ptr() == x.data_ptr()
    assert repeat is direct_encode


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_encoders_reject_bad_step_counts(bad):
    with pytest.raises(ValueError, match="T must be an int >= 1"):
        direct_encode(torch.rand(2, 3), bad)
    with pytest.raises(ValueError, match="T must be an int >= 1"):
        poisson_encode(torch.rand(2, 3), bad)


def test_poisson_encode_is_bernoulli_of_a_seeded_generator():
    x = torch.rand(3, 5)
    s1 = poisson_encode(x, 6, generator=torch.Generator().manual_seed(7))
    s2 = poisson_encode(x, 6, generator=torch.Generator().manual_seed(7))
    assert s1.shape == (6, 3, 5) and s1.dtype == x.dtype
    assert torch.equal(s1, s2)
    u = torch.rand((6, 3, 5), generator=torch.Generator().manual_seed(7))
    assert torch.equal(s1, (u < x).float())
    s3 = poisson_encode(x, 6, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(s1, s3)


def test_poisson_encode_rates_and_extremes():
    p = torch.tensor([0.0, 0.3, 0.75, 1.0])
    s = poisson_encode(p, 4000, generator=torch.Generator().manual_seed(0))
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    rate = s.mean(0)
    assert rate[0] == 0 and rate[3] == 1
    # binomial std at T=4000 is <= 0.008; 0.03 is about 4 std
    assert abs(rate[1] - 0.3) < 0.03 and abs(rate[2] - 0.75) < 0.03


def test_poisson_encode_range_error_and_clamp():
    x = torch.tensor([-0.5, 0.2, 1.5])
    with pytest.raises(ValueError, match=r"\[0, 1\].*\[-0\.5, 1\.5\].*clamp=True"):
        poisson_encode(x, 3)
    s = poisson_encode(x, 50, clamp=True, generator=torch.Generator().manual_seed(0))
    assert s[:, 0].sum() == 0 and s[:, 2].sum() == 50
    with pytest.raises(ValueError, match="floating"):
        poisson_encode(torch.tensor([0, 1]), 3)


def test_decoders_against_loops():
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(mean_decode(x), sum(x[t] for t in range(5)) / 5)
    assert torch.equal(last_decode(x), x[4])
    expected = sum(0.8 ** (5 - 1 - t) * x[t] for t in range(5))
    torch.testing.assert_close(weighted_decode(x), expected)
    torch.testing.assert_close(weighted_decode(x, decay=1.0), x.sum(0))


def test_weighted_decode_closed_form_for_constant_input():
    T, d = 16, 0.8
    y = weighted_decode(torch.ones(T, 3, dtype=torch.float64), decay=d)
    torch.testing.assert_close(y, torch.full((3,), (1 - d**T) / (1 - d), dtype=torch.float64))
    assert torch.equal(
        weighted_decode(torch.arange(3.0).view(3, 1), decay=0.0), torch.tensor([2.0])
    )


@pytest.mark.parametrize("decoder", [mean_decode, last_decode, weighted_decode])
def test_decoders_require_time_first(decoder):
    with pytest.raises(ValueError, match=r"\[T, B, \.\.\.\]"):
        decoder(torch.randn(4))
