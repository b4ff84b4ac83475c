"""Surrogate gradients: Heaviside forward; backward = derivative of the documented smooth."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from snngen.spiking.surrogate import (
    ATan,
    FastSigmoid,
    Rectangular,
    Sigmoid,
    Triangle,
    get_surrogate,
)

SURROGATES = [
    ATan(),
    ATan(alpha=0.7),
    Sigmoid(),
    Sigmoid(alpha=1.5),
    Rectangular(),
    Rectangular(width=0.5, offset=0.2),
    Triangle(),
    Triangle(width=0.5),
    FastSigmoid(),
    FastSigmoid(slope=3.0),
]


def kinks(sur) -> list[float]:
    """Points where ``smooth`` is not differentiable (piecewise surrogates)."""
    if isinstance(sur, Rectangular):
        return [-sur.offset - sur.width / 2, -sur.offset + sur.width / 2]
    if isinstance(sur, Triangle):
        return [-sur.width, 0.0, sur.width]
    return []


def away_from_kinks(sur, x: torch.Tensor, margin: float = 1e-3) -> torch.Tensor:
    keep = torch.ones_like(x, dtype=torch.bool)
    for k in kinks(sur):
        keep &= (x - k).abs() > margin
    return x[keep]


points = st.lists(
    st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False), min_size=1, max_size=16
)


@pytest.mark.parametrize("sur", SURROGATES, ids=repr)
def test_smooth_passes_gradcheck(sur):
    """``smooth`` is differentiable where claimed (float64 finite differences)."""
    gen = torch.Generator().manual_seed(0)
    x = away_from_kinks(sur, torch.rand(64, generator=gen, dtype=torch.float64) * 6 - 3, 1e-2)
    assert torch.autograd.gradcheck(sur.smooth, (x.requires_grad_(),), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("sur", SURROGATES, ids=repr)
@settings(max_examples=25, deadline=None)
@given(values=points)
def test_backward_is_derivative_of_smooth(sur, values):
    """The spike's backward and ``grad`` equal autograd's derivative of ``smooth`` (float64)."""
    x = away_from_kinks(sur, torch.tensor(values, dtype=torch.float64))
    if x.numel() == 0:
        return
    xs = x.clone().requires_grad_()
    (want,) = torch.autograd.grad(sur.smooth(xs).sum(), xs)
    xh = x.clone().requires_grad_()
    spikes = sur(xh)
    (got,) = torch.autograd.grad(spikes.sum(), xh)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sur.grad(x), want, rtol=1e-10, atol=1e-12)
    # forward: Heaviside, 1 at x >= 0
    assert torch.equal(spikes.detach(), (x >= 0).to(x.dtype))


@pytest.mark.parametrize("sur", SURROGATES, ids=repr)
@settings(max_examples=15, deadline=None)
@given(values=points, scale=st.sampled_from([1.0, 0.5, 0.37, 2.0, 0.0]))
def test_inplace_grad_matches_grad(sur, values, scale):
    """``grad_`` (the fused kernel's in-place version, with a folded scale) equals ``grad``."""
    x = torch.tensor(values, dtype=torch.float32)
    want = sur.grad(x) * scale
    buf = x.clone()
    got = sur.grad_(buf, scale)
    assert got.data_ptr() == buf.data_ptr()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sur", [s for s in SURROGATES if hasattr(s, "inv_grad_")], ids=repr)
@pytest.mark.parametrize("scale", [1.0, 0.5, 3.0])
def test_inverse_grad(sur, scale):
    """``inv_grad_`` (divided by in the kernel) is ``1 / (scale * grad)``."""
    x = torch.linspace(-3, 3, 101)
    torch.testing.assert_close(sur.inv_grad_(x.clone(), scale), 1 / (scale * sur.grad(x)))


@pytest.mark.parametrize("one_pass", [True, False])
def test_affine_helper_both_paths(one_pass):
    """The in-place ``a x (or x^2) + b`` helper: one-op CPU path and the accelerator path."""
    from snngen.spiking.surrogate import _axpb_

    x = torch.linspace(-2, 2, 9)
    torch.testing.assert_close(_axpb_(x.clone(), 3.0, 0.5, one_pass=one_pass), 3 * x + 0.5)
    got = _axpb_(x.clone(), 3.0, 0.5, square=True, one_pass=one_pass)
    torch.testing.assert_close(got, 3 * x**2 + 0.5)


def test_documented_values():
    """Closed forms at a few points (peak heights and window edges)."""
    zero = torch.zeros(1)
    assert ATan(alpha=2.0).grad(zero).item() == pytest.approx(1.0)  # alpha / 2
    assert Sigmoid(alpha=4.0).grad(zero).item() == pytest.approx(1.0)  # alpha / 4
    assert FastSigmoid(slope=25.0).grad(zero).item() == pytest.approx(1.0)
    assert Triangle(width=0.5).grad(zero).item() == pytest.approx(2.0)
    rect = Rectangular(width=1.0, offset=0.2)
    x = torch.tensor([-0.69, -0.71, 0.29, 0.31])
    assert rect.grad(x).tolist() == [1.0, 0.0, 1.0, 0.0]  # window |x + 0.2| < 0.5
    at = ATan(alpha=2.0)
    want = math.atan(math.pi) / math.pi + 0.5
    assert at.smooth(torch.tensor([1.0])).item() == pytest.approx(want)


def test_get_surrogate():
    assert get_surrogate("atan") == ATan()
    assert get_surrogate({"name": "rectangular", "width": 0.5}) == Rectangular(width=0.5)
    tri = Triangle(width=0.3)
    assert get_surrogate(tri) is tri
    with pytest.raises(ValueError, match="unknown surrogate 'tanh'.*atan"):
        get_surrogate("tanh")
