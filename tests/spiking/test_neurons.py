"""Neuron modules: API, arguments, backends, parametric LIF gradient, input errors."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from snngen.spiking import IF, LIF, ParametricLIF
from snngen.spiking.surrogate import ATan, Rectangular


def test_lif_defaults_and_forms():
    lif = LIF()
    assert lif.spec.form == "spikingjelly" and lif.decay() == 0.5 and lif.backend == "fused"
    assert isinstance(lif.spec.surrogate, ATan)
    assert LIF(beta=0.9).spec.form == "snntorch" and LIF(beta=0.9).decay() == 0.9
    fsvae = LIF(form="fsvae", beta=0.25, v_threshold=0.2, surrogate="rectangular")
    assert fsvae.decay() == 0.25 and isinstance(fsvae.spec.surrogate, Rectangular)
    assert IF().spec.form == "if" and IF(v_reset=None).spec.v_reset is None


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"tau": 0.5}, "tau must be >= 1"),
        ({"beta": 1.5}, r"beta must be in \[0, 1\]"),
        ({"form": "fsvae"}, "needs beta"),
        ({"form": "izhikevich"}, "LIF form must be"),
        ({"v_threshold": 0.0}, "v_threshold must be > 0"),
        ({"backend": "cuda"}, "unknown backend 'cuda'"),
        ({"compile": "sometimes"}, "must be auto, 1"),
        ({"surrogate": "erf"}, "unknown surrogate 'erf'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LIF(**kwargs)


def test_parametric_lif_init():
    with pytest.raises(ValueError, match="init_tau must be > 1"):
        ParametricLIF(init_tau=1.0)
    plif = ParametricLIF(init_tau=3.0)
    assert plif.tau == pytest.approx(3.0)
    assert plif.decay().item() == pytest.approx(1 / 3)


NEURONS = [
    lambda **kw: LIF(tau=2.0, **kw),
    lambda **kw: LIF(tau=3.0, decay_input=False, v_reset=None, **kw),
    lambda **kw: LIF(beta=0.5, v_reset=None, **kw),
    lambda **kw: LIF(form="fsvae", beta=0.25, v_threshold=0.2, surrogate="rectangular", **kw),
    lambda **kw: IF(detach_reset=True, **kw),
    lambda **kw: ParametricLIF(init_tau=2.5, surrogate="sigmoid", **kw),
]


NEURON_IDS = ["lif", "lif-soft", "snntorch", "fsvae", "if", "plif"]


@pytest.mark.parametrize("make", NEURONS, ids=NEURON_IDS)
@settings(max_examples=5, deadline=None)
@given(t=st.integers(1, 5), b=st.integers(1, 3), c=st.integers(1, 4), seed=st.integers(0, 2**20))
def test_backends_agree_with_membrane(make, t, b, c, seed):
    """Fused and reference modules: equal spikes/membranes, close grads (incl. PLIF's w)."""
    torch.manual_seed(seed)
    x = torch.randn(t, b, c, 2) + 0.3
    outs = []
    for backend in ("fused", "reference"):
        torch.manual_seed(0)
        neuron = make(backend=backend, return_membrane=True)
        xx = x.clone().requires_grad_()
        spikes, mem = neuron(xx)
        (spikes * torch.linspace(-1, 1, spikes.numel()).view_as(spikes)).sum().add(
            mem.square().sum()
        ).backward()
        params = [p.grad for p in neuron.parameters()]
        outs.append((spikes, mem, xx.grad, params))
    (s1, m1, g1, p1), (s2, m2, g2, p2) = outs
    assert torch.equal(s1, s2) and torch.equal(m1, m2)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-5)
    for a, r in zip(p1, p2, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


def test_return_membrane_and_plain_output():
    x = torch.full((3, 1, 1), 1.5)
    spikes = LIF()(x)
    assert isinstance(spikes, torch.Tensor) and spikes.view(-1).tolist() == [0, 1, 0]
    spikes, mem = LIF(return_membrane=True)(x)
    assert mem.view(-1).tolist() == [0.75, 1.125, 0.75]


def test_parametric_lif_learns_tau():
    """dL/dw for 1/tau = sigmoid(w) matches a central finite difference of the reference.

    With ``detach_reset`` and a loss on the membrane only, no surrogate enters the gradient,
    which is then the true derivative (spikes are locally constant in w).
    """
    x = torch.randn(6, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = {"init_tau": 2.0, "return_membrane": True, "detach_reset": True}
    plif = ParametricLIF(**kw).double()

    def loss(module):
        return module(x)[1].square().sum()

    loss(plif).backward()
    eps = 1e-6
    ref = ParametricLIF(**kw, backend="reference").double()
    with torch.no_grad():
        ref.w += eps
        up = loss(ref).item()
        ref.w -= 2 * eps
        down = loss(ref).item()
    assert plif.w.grad.item() == pytest.approx((up - down) / (2 * eps), rel=1e-5)


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_bad_input_names_expected_shape(backend):
    lif = LIF(backend=backend)
    with pytest.raises(ValueError, match=r"expected a tensor shaped \[T, B, \.\.\.\]"):
        lif(torch.randn(4))
    with pytest.raises(ValueError, match=r"floating-point tensor shaped \[T, B, \.\.\.\]"):
        lif(torch.ones(2, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"T >= 1"):
        lif(torch.randn(0, 3))


def test_state_does_not_leak_between_calls():
    lif = LIF()
    x = torch.rand(4, 2, 3) * 2
    assert torch.equal(lif(x), lif(x))


def test_extra_repr_mentions_spec():
    text = repr(LIF(tau=2.0, v_reset=None))
    assert "spikingjelly" in text and "v_reset=None" in text and "fused" in text
    assert math.isclose(LIF(tau=4.0).decay(), 0.25)
