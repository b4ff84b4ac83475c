"""Helpers shared by the kernel tests (fused eager and C++ against the reference)."""

import warnings

import torch

from snngen.spiking.surrogate import ATan, FastSigmoid, Rectangular, Sigmoid, Triangle

# the grid every kernel is checked on: each surrogate x (form, decay_input) x reset
SURROGATES = [ATan(), Sigmoid(), Rectangular(width=1.0, offset=0.3), Triangle(0.5), FastSigmoid()]
# (form, decay_input): the four update forms, spikingjelly with decay_input on and off
FORM_IDS = ["sj", "sj-nodecayin", "snntorch", "fsvae", "if"]
FORMS = [
    ("spikingjelly", True),
    ("spikingjelly", False),
    ("snntorch", True),
    ("fsvae", True),
    ("if", True),
]
RESETS = [0.0, -0.3, None]  # hard to 0, hard to v_reset != 0, soft
RESET_IDS = ["hard0", "hard-0.3", "soft"]


def run(fn, x, decay, spec, grad_s, grad_h, learn):
    """Spikes, membrane and gradients (x, and decay when ``learn``) of one kernel
    (a gradient is ``None`` where the kernel's output does not depend on that input)."""
    x = x.clone().requires_grad_()
    k = torch.tensor(decay, dtype=x.dtype, requires_grad=True) if learn else decay
    spikes, mem = fn(x, k, spec)
    loss = 0.0
    if grad_s is not None:
        loss = loss + (spikes * grad_s).sum()
    if grad_h is not None:
        loss = loss + (mem * grad_h).sum()
    inputs = [x, k] if learn else [x]
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return spikes, mem, grads


def backend(t):
    """The autograd node behind lif_fused's final view ("_CppLIF...", "_TritonLIF...", ...)."""
    node = t.grad_fn
    while type(node).__name__ == "ViewBackward0":
        node = node.next_functions[0][0]
    return type(node).__name__


def forced_fused(x, decay, spec, compile: str, node: str):
    """lif_fused forced onto one backend (``compile``) that must make the autograd node ``node``;
    a fallback to another backend would warn, an error here."""
    from snngen.spiking.kernels import lif_fused

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        spikes, mem = lif_fused(x, decay, spec, compile=compile)
    assert backend(spikes).startswith(node)
    return spikes, mem


def assert_matches_reference(fused, x, decay, spec, grad_s, grad_h, learn):
    """Spikes and membranes of the backend ``fused`` equal ``lif_reference``'s exactly, gradients
    within 1e-5 (IF: the reference has no decay gradient, the backend's is None or zero)."""
    from snngen.spiking.kernels import lif_reference

    s1, h1, g1 = run(fused, x, decay, spec, grad_s, grad_h, learn)
    s2, h2, g2 = run(lif_reference, x, decay, spec, grad_s, grad_h, learn)
    assert torch.equal(s1, s2), f"spikes differ for {spec}"
    assert torch.equal(h1, h2), f"membranes differ for {spec}"
    for a, r in zip(g1, g2, strict=True):
        if r is None:  # IF: the decay is unused by the reference
            assert a is None or torch.all(a == 0)
            continue
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5, msg=f"gradient for {spec}")
