"""The multi-step LIF kernels: fused == reference, closed-form traces, input checks, switches."""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_helpers import FORM_IDS, FORMS, RESET_IDS, RESETS, SURROGATES, run

from snngen.spiking import kernels
from snngen.spiking.kernels import NeuronSpec, lif_fused, lif_reference
from snngen.spiking.surrogate import ATan, Sigmoid

shapes = st.tuples(
    st.integers(1, 6),  # T
    st.integers(1, 3),  # B
    st.lists(st.integers(1, 4), min_size=0, max_size=2),  # feature dims
)


@pytest.mark.parametrize("reset", RESETS, ids=RESET_IDS)
@pytest.mark.parametrize("detach", [False, True], ids=["", "detach"])
@pytest.mark.parametrize("form,decay_input", FORMS, ids=FORM_IDS)
@settings(max_examples=6, deadline=None)
@given(
    shape=shapes,
    seed=st.integers(0, 2**31 - 1),
    decay=st.sampled_from([0.5, 0.25, 0.8, 0.3]),
    threshold=st.sampled_from([1.0, 0.5, 0.2]),
    outputs=st.sampled_from(["spikes", "membrane", "both"]),
    learn=st.booleans(),
)
def test_fused_matches_reference(
    form, decay_input, detach, reset, shape, seed, decay, threshold, outputs, learn
):
    """Bit-identical spikes and membranes, gradients within 1e-5, for every surrogate."""
    t, b, feats = shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(t, b, *feats, generator=gen) * 0.8 + 0.4
    grad_s = torch.randn(x.shape, generator=gen) if outputs != "membrane" else None
    grad_h = torch.randn(x.shape, generator=gen) if outputs != "spikes" else None
    learn = learn and form != "if"  # IF has no decay
    for sur in SURROGATES:
        spec = NeuronSpec(form, threshold, reset, detach, decay_input, sur)
        s1, h1, g1 = run(lif_fused, x, decay, spec, grad_s, grad_h, learn)
        s2, h2, g2 = run(lif_reference, x, decay, spec, grad_s, grad_h, learn)
        assert torch.equal(s1, s2), f"spikes differ for {spec}"
        assert torch.equal(h1, h2), f"membranes differ for {spec}"
        assert s1.shape == x.shape and h1.shape == x.shape
        for a, r in zip(g1, g2, strict=True):
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5, msg=f"gradient for {spec}")


@pytest.mark.parametrize("form,decay_input", FORMS[:4], ids=FORM_IDS[:4])
def test_zero_decay_and_float64(form, decay_input):
    """Edge cases: decay exactly 0 (dh/dx = 0 for spikingjelly) and float64 inputs."""
    spec = NeuronSpec(form, 0.5, 0.0, False, decay_input, ATan())
    x = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = torch.randn_like(x)
    for decay in (0.0, 0.6):
        s1, h1, g1 = run(lif_fused, x, decay, spec, g, g, learn=True)
        s2, h2, g2 = run(lif_reference, x, decay, spec, g, g, learn=True)
        assert torch.equal(s1, s2) and torch.equal(h1, h2) and s1.dtype == torch.float64
        for a, r in zip(g1, g2, strict=True):
            torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-9)


def test_non_contiguous_input_and_expanded_grad():
    """A transposed input and the zero-stride gradient of ``.sum()`` give the reference's."""
    spec = NeuronSpec("spikingjelly", 1.0, 0.0, False, True, Sigmoid())
    base = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(2)) + 0.5
    out = []
    for fn in (lif_fused, lif_reference):
        x = base.transpose(0, 1).detach().requires_grad_()  # [T=4, B=3, 5], non-contiguous
        spikes, _ = fn(x, 0.5, spec)
        spikes.sum().backward()
        out.append((spikes, x.grad))
    assert torch.equal(out[0][0], out[1][0])
    torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-5, atol=1e-6)


def test_retain_graph_backward_twice():
    spec = NeuronSpec("spikingjelly", 1.0, 0.0, False, True, ATan())
    x = (torch.randn(4, 2, 3) + 0.5).requires_grad_()
    spikes, mem = lif_fused(x, 0.5, spec)
    loss = spikes.sum() + mem.pow(2).sum()
    (g1,) = torch.autograd.grad(loss, x, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, x)
    assert torch.equal(g1, g2)


# --------------------------------------------------------------------------- closed forms


def trace(form, x_values, decay, threshold, v_reset, decay_input=True):
    x = torch.tensor(x_values, dtype=torch.float32).view(-1, 1)
    spec = NeuronSpec(form, threshold, v_reset, False, decay_input, ATan())
    results = [fn(x, decay, spec) for fn in (lif_fused, lif_reference)]
    for s, h in results:
        assert torch.equal(s, results[0][0]) and torch.equal(h, results[0][1])
    s, h = results[0]
    return s.view(-1).tolist(), h.view(-1).tolist()


def test_trace_spikingjelly_decay_input_hard():
    # tau = 2: h = v + (x - v) / 2, hard reset to 0, threshold 1, x = 1.5 constant
    s, h = trace("spikingjelly", [1.5] * 5, 0.5, 1.0, 0.0)
    assert h == [0.75, 1.125, 0.75, 1.125, 0.75]
    assert s == [0, 1, 0, 1, 0]


def test_trace_spikingjelly_nonzero_reset_and_no_decay_input():
    # h = v - (v - v_r) / 2 + x, v_r = -0.5; starts at v_r
    s, h = trace("spikingjelly", [0.75, 0.75, 0.75, 0.75], 0.5, 1.0, -0.5, decay_input=False)
    # h0 = -0.5 - 0 + 0.75 = 0.25; h1 = 0.25 - 0.375 + 0.75 = 0.625; h2 = 0.625 - 0.5625 + 0.75
    # = 0.8125; h3 = 0.8125 - 0.65625 + 0.75 = 0.90625
    assert h == [0.25, 0.625, 0.8125, 0.90625]
    assert s == [0, 0, 0, 0]
    # decay_input: h = v + (x - (v - v_r)) / 2 with x = 2: h0 = -0.5 + 1 = 0.5;
    # h1 = 0.5 + (2 - 1) / 2 = 1.0 -> spike, reset to -0.5; h2 = 0.5
    s, h = trace("spikingjelly", [2.0, 2.0, 2.0], 0.5, 1.0, -0.5)
    assert h == [0.5, 1.0, 0.5] and s == [0, 1, 0]


def test_trace_snntorch_subtract():
    # mem = 0.5 mem + x - 1 * s_prev, x = 0.75
    s, h = trace("snntorch", [0.75] * 5, 0.5, 1.0, None)
    assert h == [0.75, 1.125, 0.3125, 0.90625, 1.203125]
    assert s == [0, 1, 0, 0, 1]


def test_trace_snntorch_zero_reset():
    # mem = (0.5 mem + x)(1 - s_prev): after a spike the next step's charge is discarded
    s, h = trace("snntorch", [1.5, 0.5, 0.25, 0.5], 0.5, 1.0, 0.0)
    assert h == [1.5, 0.0, 0.25, 0.625]
    assert s == [1, 0, 0, 0]


def test_trace_fsvae():
    # u = 0.25 u (1 - o) + x, threshold 0.25 (FSVAE: tau_decay 0.25)
    s, h = trace("fsvae", [0.125, 0.25, 0.0625, 0.25], 0.25, 0.25, 0.0)
    # u0 = 0.125; u1 = 0.03125 + 0.25 = 0.28125 -> spike; u2 = 0 + 0.0625; u3 = 0.015625 + 0.25
    assert h == [0.125, 0.28125, 0.0625, 0.265625]
    assert s == [0, 1, 0, 1]


def test_trace_if_soft_and_hard():
    s, h = trace("if", [0.75] * 6, 1.0, 1.0, None)  # subtract threshold
    assert h == [0.75, 1.5, 1.25, 1.0, 0.75, 1.5]
    assert s == [0, 1, 1, 1, 0, 1]
    s, h = trace("if", [0.75] * 4, 1.0, 1.0, 0.0)  # reset to 0
    assert h == [0.75, 1.5, 0.75, 1.5] and s == [0, 1, 0, 1]


def test_gradient_closed_form_two_steps():
    """T = 2, spikingjelly tau 2, detach_reset: dS_1/dx_0 = sg(h1 - 1) (1 - k)(1 - s_0) k."""
    sur = ATan()
    spec = NeuronSpec("spikingjelly", 1.0, 0.0, True, True, sur)
    x = torch.tensor([[0.8], [1.2]], requires_grad=True)
    spikes, mem = lif_fused(x, 0.5, spec)
    (g,) = torch.autograd.grad(spikes[1].sum(), x)
    h0, h1 = 0.4, 0.4 + (1.2 - 0.4) * 0.5
    assert mem.view(-1).tolist() == pytest.approx([h0, h1])
    sg1 = sur.grad(torch.tensor(h1 - 1.0)).item()
    assert g.view(-1).tolist() == pytest.approx([sg1 * 0.5 * 0.5, sg1 * 0.5], rel=1e-6)


def test_saves_only_membrane():
    """The fused node saves one [T, N] membrane (plus x only where a derivative needs it)."""

    def saved(fn, spec, decay):
        sizes = {}

        def pack(t):
            sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        x = torch.randn(8, 4, 16).requires_grad_()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(x, decay, spec)
        return sum(sizes.values())

    one = 8 * 4 * 16 * 4  # bytes of one float32 [T, N] tensor
    lif = NeuronSpec()
    assert saved(lif_fused, lif, 0.5) == one
    assert saved(lif_fused, NeuronSpec("snntorch", v_reset=None), 0.5) == one
    assert saved(lif_fused, NeuronSpec("snntorch"), 0.5) == 2 * one  # hard: u needs x
    plif = torch.tensor(0.5, requires_grad=True)
    assert saved(lif_fused, lif, plif) == 2 * one  # dL/dk needs x
    assert saved(lif_reference, lif, 0.5) >= 2.5 * one


# --------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("fn", [lif_fused, lif_reference])
def test_bad_input(fn):
    spec = NeuronSpec()
    with pytest.raises(ValueError, match=r"\[T, B, \.\.\.\].*got shape \(5,\)"):
        fn(torch.randn(5), 0.5, spec)
    with pytest.raises(ValueError, match=r"floating-point tensor shaped \[T, B, \.\.\.\].*int64"):
        fn(torch.ones(3, 2, dtype=torch.long), 0.5, spec)
    with pytest.raises(ValueError, match=r"\[T, B, \.\.\.\] with T >= 1.*\(0, 2\)"):
        fn(torch.randn(0, 2), 0.5, spec)
    with pytest.raises(ValueError, match="0-dim tensor"):
        fn(torch.randn(3, 2), torch.ones(2), spec)


def test_bad_spec():
    with pytest.raises(ValueError, match="unknown neuron form 'lifx'"):
        NeuronSpec("lifx")


# --------------------------------------------------------------------------- compile switch


def test_compile_switch_parsing(monkeypatch):
    monkeypatch.delenv(kernels.COMPILE_ENV, raising=False)
    assert kernels.parse_compile(None) == "auto"
    cases = [("0", False), ("off", False), ("1", True), ("True", True), ("auto", "auto")]
    for value, want in cases:
        monkeypatch.setenv(kernels.COMPILE_ENV, value)
        assert kernels.parse_compile(None) == want
    assert kernels.parse_compile(False) is False
    monkeypatch.setenv(kernels.COMPILE_ENV, "maybe")
    with pytest.raises(ValueError, match="SNNGEN_COMPILE must be auto, 1.*'maybe'"):
        kernels.parse_compile(None)


def test_auto_is_eager_on_cpu_and_silent(monkeypatch):
    """The default path on CPU never compiles and never warns."""
    monkeypatch.delenv(kernels.COMPILE_ENV, raising=False)
    assert kernels._resolve_compile(None, torch.device("cpu")) == (False, False)
    called = []
    monkeypatch.setattr(kernels, "_compiled_step", lambda *a: called.append(a))
    x = torch.randn(3, 2, 4).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spikes, _ = lif_fused(x, 0.5, NeuronSpec())
        spikes.sum().backward()
    assert not called


def test_compile_failure_falls_back(monkeypatch):
    """A step that fails to compile runs eagerly: a warning when asked for, silence under auto."""

    def broken(key, fn):
        def fail(*args):
            raise RuntimeError("no compiler here")

        return fail

    monkeypatch.setattr(kernels, "_compiled_step", broken)
    monkeypatch.setattr(kernels, "_COMPILED", {})
    x = torch.randn(3, 2, 4)
    want = lif_reference(x, 0.5, NeuronSpec())[0]
    with pytest.warns(RuntimeWarning, match="no compiler here"):
        got = lif_fused(x, 0.5, NeuronSpec(), compile=True)[0]
    assert torch.equal(got, want)
    monkeypatch.setattr(kernels, "_resolve_compile", lambda c, d: (True, False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(lif_fused(x, 0.5, NeuronSpec())[0], want)


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec,learn",
    [
        (NeuronSpec("spikingjelly", 1.0, 0.0, False, True, ATan()), False),
        (NeuronSpec("snntorch", 0.5, 0.0, False, True, Sigmoid()), True),
    ],
)
def test_compiled_matches_reference(spec, learn):
    """torch.compile'd steps (slow: builds C++ kernels) agree with the reference, no fallback."""
    x = torch.randn(6, 4, 8, generator=torch.Generator().manual_seed(3)) + 0.5
    g = torch.randn_like(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would warn
        s1, h1, g1 = run(lambda *a: lif_fused(*a, compile=True), x, 0.5, spec, g, g, learn)
    s2, h2, g2 = run(lif_reference, x, 0.5, spec, g, g, learn)
    assert (s1 != s2).float().mean() < 0.01
    torch.testing.assert_close(h1, h2, rtol=1e-5, atol=1e-5)
    if torch.equal(s1, s2):
        for a, r in zip(g1, g2, strict=True):
            torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)
