"""The multi-step LIF update ``[T, ...] -> [T, ...]``.

Two implementations of one recurrence:

* ``lif_reference``: the time loop in plain autograd, the readable definition;
* ``lif_fused``: the same loop inside one ``torch.autograd.Function`` with hand-written BPTT
  that saves only the membrane ``h`` (plus ``x`` where a derivative needs it), compiled with
  ``torch.compile`` where the platform allows (see "Compilation" below).

The recurrence, with state ``(h_{t-1}, s_{t-1})`` starting at ``(0, 0)`` (or ``v_reset``):

* reset of the previous step, ``v = R(h_{t-1}, s_{t-1})``:
  hard ``v = h (1 - s) + v_reset s``, soft ``v = h - v_threshold s``;
* charge ``h_t`` by form:
  ``spikingjelly`` (decay_input) ``h = v + (x - (v - v_r)) k`` with ``k = 1/tau``,
  ``spikingjelly`` (no decay_input) ``h = v - (v - v_r) k + x``,
  ``fsvae`` ``h = beta v + x`` (FSVAE's ``u = 0.25 u (1 - o) + x``),
  ``if`` ``h = v + x``,
  ``snntorch`` ``h = beta h_{t-1} + x - v_threshold s_{t-1}`` (soft; snnTorch's subtract) or
  ``h = (beta h_{t-1} + x)(1 - s_{t-1}) + v_r s_{t-1}`` (hard; snnTorch's "zero" for v_r = 0);
* spike ``s_t = H(h_t - v_threshold)`` with the surrogate gradient.

``detach_reset`` stops gradients through the ``s`` used in the reset. The membrane returned is
``h_t``, the charge before reset (what snnTorch returns as ``mem``).

Compilation
-----------
``lif_fused`` runs its forward and backward time loops through ``torch.compile`` (one fused
kernel per direction, the loop over T unrolled) when ``compile=True``, or when ``compile=None``
(the default) and the environment variable ``SNNGEN_COMPILE`` is ``1`` / unset (``auto``).
``SNNGEN_COMPILE=0`` selects the eager loops. A compiled loop is built lazily on first use and
cached per (spec, dtype, device, T, which gradients are needed); sequences longer than
``MAX_COMPILED_STEPS`` and calls made while an outer ``torch.compile`` is tracing use the eager
loops. If compiling fails (no C++ compiler, unsupported platform) the eager loops are used and a
warning is given once per cached key. Spikes are bit-identical either way: the compiled kernel
performs the same float operations in the same order.
"""

from __future__ import annotations

import os
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from snngen.spiking.surrogate import Surrogate

FORMS = ("spikingjelly", "snntorch", "fsvae", "if")
COMPILE_ENV = "SNNGEN_COMPILE"
MAX_COMPILED_STEPS = 64  # longer sequences use the eager loops (compile time grows with T)


@dataclass(frozen=True)
class NeuronSpec:
    """Static description of a multi-step neuron (everything but the decay value)."""

    form: str = "spikingjelly"
    v_threshold: float = 1.0
    v_reset: float | None = 0.0  # None: soft reset (subtract threshold)
    detach_reset: bool = False
    decay_input: bool = True  # spikingjelly form only
    surrogate: Surrogate | None = None

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"unknown neuron form {self.form!r}; expected one of {FORMS}")


def check_multistep_input(x: Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` is a floating tensor shaped ``[T, B, ...]`` with T >= 1."""
    if not isinstance(x, Tensor):
        raise ValueError(f"expected a tensor shaped [T, B, ...], got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point tensor shaped [T, B, ...], got dtype {x.dtype}")
    if x.dim() < 2:
        raise ValueError(
            f"expected a tensor shaped [T, B, ...] (time first, then batch), got shape "
            f"{tuple(x.shape)}; add the time dimension, e.g. x.unsqueeze(0) or repeat T times"
        )
    if x.shape[0] == 0:
        raise ValueError(f"expected T >= 1 time steps in [T, B, ...], got shape {tuple(x.shape)}")


# --------------------------------------------------------------------------- the recurrence


def _initial_state(spec: NeuronSpec, x0: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``(h, s)`` before the first step, each shaped like ``x0`` [B, ...]."""
    vr = 0.0 if spec.v_reset is None else spec.v_reset
    return torch.full_like(x0, vr), torch.zeros_like(x0)


def _charge(spec: NeuronSpec, v: Tensor, x: Tensor, decay: Tensor | float) -> Tensor:
    """Charge from the post-reset state ``v`` (all forms but snntorch)."""
    vr = 0.0 if spec.v_reset is None else spec.v_reset
    if spec.form == "spikingjelly":
        if spec.decay_input:
            return v + (x - (v - vr)) * decay
        return v - (v - vr) * decay + x
    if spec.form == "fsvae":
        return decay * v + x
    return v + x  # if


def _reset(spec: NeuronSpec, h: Tensor, s: Tensor) -> Tensor:
    """Post-reset state ``v = R(h, s)`` (all forms but snntorch); shaped like ``h``."""
    if spec.v_reset is None:
        return h - spec.v_threshold * s
    return h * (1 - s) + spec.v_reset * s


def _lif_step(spec: NeuronSpec, h: Tensor, s: Tensor, x: Tensor, decay: Tensor | float) -> Tensor:
    """One step: from ``(h_{t-1}, s_{t-1})`` and ``x_t`` return ``h_t`` (shape of ``x``).

    The single definition of the update: the reference and the fused forward both call it, so
    their float operations (and therefore their spikes) are identical.
    """
    if spec.form == "snntorch":
        if spec.v_reset is not None:
            return (decay * h + x) * (1 - s) + spec.v_reset * s
        return decay * h + x - spec.v_threshold * s
    return _charge(spec, _reset(spec, h, s), x, decay)


def lif_reference(x: Tensor, decay: Tensor | float, spec: NeuronSpec) -> tuple[Tensor, Tensor]:
    """Plain-autograd time loop. Returns ``(spikes, membrane)``, both shaped like ``x`` [T, ...].

    ``decay`` is ``1/tau`` for the spikingjelly form, ``beta`` for snntorch/fsvae, unused for IF.
    """
    check_multistep_input(x)
    h, s = _initial_state(spec, x[0])
    spikes, mems = [], []
    for t in range(x.shape[0]):
        sr = s.detach() if spec.detach_reset else s
        h = _lif_step(spec, h, sr, x[t], decay)
        s = spec.surrogate(h - spec.v_threshold)
        spikes.append(s)
        mems.append(h)
    return torch.stack(spikes), torch.stack(mems)


# --------------------------------------------------------------------------- fused loops


def _spike(spec: NeuronSpec, h: Tensor) -> Tensor:
    """Heaviside spike ``1[h - v_threshold >= 0]`` in ``h``'s dtype (as the surrogate's forward)."""
    return (h - spec.v_threshold >= 0).to(h.dtype)


def _forward_loop(x: Tensor, decay: Tensor | float, spec: NeuronSpec) -> tuple[Tensor, Tensor]:
    """Run the recurrence without autograd. ``x`` [T, N]; returns ``(spikes, h)``, each [T, N]."""
    h, s = _initial_state(spec, x[0])
    spikes, mems = [], []
    for t in range(x.shape[0]):
        h = _lif_step(spec, h, s, x[t], decay)
        s = _spike(spec, h)
        spikes.append(s)
        mems.append(h)
    return torch.stack(spikes), torch.stack(mems)


def _backward_loop(
    h: Tensor,
    x: Tensor | None,
    decay: Tensor | float,
    grad_s: Tensor | None,
    grad_h: Tensor | None,
    spec: NeuronSpec,
    need_k: bool,
) -> tuple[Tensor, Tensor | None]:
    """Hand-written BPTT of :func:`_forward_loop`, from the saved membranes ``h`` [T, N].

    ``x`` [T, N] is only needed (else ``None``) for snntorch hard reset without
    ``detach_reset`` and for the decay gradient of the spikingjelly form with ``decay_input``.
    ``grad_s`` / ``grad_h`` [T, N] are the gradients of the spike / membrane outputs (``None``:
    that output was unused). Returns ``(grad_x [T, N], grad_decay [] or None)``.
    """
    steps = h.shape[0]
    thr = spec.v_threshold
    hard = spec.v_reset is not None
    vr = spec.v_reset if hard else 0.0
    h_init, s_init = _initial_state(spec, h[0])
    carry_h: Tensor | None = None  # dL/dh_t through step t + 1 (via h_t)
    carry_s: Tensor | None = None  # dL/ds_t through step t + 1 (via the reset)
    grads_x: list[Tensor] = []
    grad_k: Tensor | None = None
    for t in reversed(range(steps)):
        h_t = h[t]
        h_prev, s_prev = (h[t - 1], _spike(spec, h[t - 1])) if t > 0 else (h_init, s_init)
        g_s = _add(carry_s, None if grad_s is None else grad_s[t])
        g_h = _add(carry_h, None if grad_h is None else grad_h[t])
        d_h = _add(g_h, None if g_s is None else g_s * spec.surrogate.grad(h_t - thr))
        if d_h is None:  # no gradient reaches this step or any earlier one through it
            d_h = torch.zeros_like(h_t)
        if spec.form == "snntorch":
            d_u = d_h * (1 - s_prev) if hard else d_h  # u = beta h_{t-1} + x_t
            grads_x.append(d_u)
            carry_h = d_u * decay
            if need_k:
                grad_k = _add(grad_k, d_u * h_prev)
            if spec.detach_reset:
                carry_s = None
            elif hard:
                carry_s = d_h * (vr - (decay * h_prev + x[t]))
            else:
                carry_s = -thr * d_h
            continue
        v = _reset(spec, h_prev, s_prev) if need_k else None
        if spec.form == "spikingjelly":
            d_v = d_h * (1 - decay)
            grads_x.append(d_h * decay if spec.decay_input else d_h)
            if need_k:
                dk = x[t] - (v - vr) if spec.decay_input else vr - v
                grad_k = _add(grad_k, d_h * dk)
        elif spec.form == "fsvae":
            d_v = d_h * decay
            grads_x.append(d_h)
            if need_k:
                grad_k = _add(grad_k, d_h * v)
        else:  # if
            d_v = d_h
            grads_x.append(d_h)
        carry_h = d_v * (1 - s_prev) if hard else d_v
        if spec.detach_reset:
            carry_s = None
        else:
            carry_s = d_v * (vr - h_prev) if hard else -thr * d_v
    grads_x.reverse()
    return torch.stack(grads_x), None if grad_k is None else grad_k.sum()


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """``a + b`` where ``None`` stands for a zero gradient."""
    if a is None:
        return b
    return a if b is None else a + b


# --------------------------------------------------------------------------- compilation


def _compile_requested(compile: bool | None) -> bool:
    """Resolve ``compile`` (``None``: read ``SNNGEN_COMPILE``; unset or ``auto`` means on)."""
    if compile is not None:
        return bool(compile)
    value = os.environ.get(COMPILE_ENV, "auto").strip().lower()
    if value in ("0", "false", "off", "no"):
        return False
    if value in ("1", "true", "on", "yes", "auto", ""):
        return True
    raise ValueError(f"{COMPILE_ENV} must be 0, 1 or auto, got {value!r}")


_LOOPS: dict[tuple, Callable | None] = {}  # compiled loops; None marks a key that failed


def _bind(fn: Callable, **static) -> Callable:
    """Return ``fn`` with keyword arguments ``static`` bound, under a code object of its own.

    torch.compile caches graphs per code object and stops recompiling after a few variants;
    giving every (spec, dtype, device, T) key a fresh code object keeps each key's graph cached.
    """

    def bound(*args):
        return fn(*args, **static)

    code = bound.__code__.replace()
    return types.FunctionType(code, bound.__globals__, fn.__name__, None, bound.__closure__)


def _run_loop(key: tuple, fn: Callable, args: tuple, static: dict, use_compile: bool):
    """Call ``fn(*args, **static)``, through a cached compiled version when ``use_compile``."""
    if use_compile and not torch.compiler.is_compiling():
        if key not in _LOOPS:
            _LOOPS[key] = torch.compile(_bind(fn, **static), dynamic=False, fullgraph=True)
        compiled = _LOOPS[key]
        if compiled is not None:
            try:
                return compiled(*args)
            except Exception as err:  # compiler missing or unsupported: run eagerly from now on
                _LOOPS[key] = None
                warnings.warn(
                    f"snngen: torch.compile of the fused LIF loop failed ({type(err).__name__}: "
                    f"{err}); using the eager loop. Set {COMPILE_ENV}=0 to skip compiling.",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return fn(*args, **static)


# --------------------------------------------------------------------------- autograd


def _needs_x(spec: NeuronSpec, need_k: bool) -> bool:
    """Whether the backward needs the input ``x`` (see :func:`_backward_loop`)."""
    if spec.form == "snntorch":
        return spec.v_reset is not None and not spec.detach_reset
    return need_k and spec.form == "spikingjelly" and spec.decay_input


class _FusedLIF(torch.autograd.Function):
    """The whole ``[T, N]`` sequence as one autograd node; saves ``h`` (and ``x`` if needed)."""

    @staticmethod
    def forward(ctx, x: Tensor, decay: Tensor | float, spec: NeuronSpec, use_compile: bool):  # type: ignore[override]
        compiled = use_compile and x.shape[0] <= MAX_COMPILED_STEPS
        k = _as_tensor(decay, x) if compiled else decay
        key = ("fwd", spec, x.dtype, x.device, x.shape[0], isinstance(k, Tensor))
        spikes, h = _run_loop(key, _forward_loop, (x, k), {"spec": spec}, compiled)
        need_k = isinstance(decay, Tensor) and ctx.needs_input_grad[1]
        x_saved = x if _needs_x(spec, need_k) else None
        ctx.save_for_backward(h, x_saved, decay if isinstance(decay, Tensor) else None)
        ctx.decay = None if isinstance(decay, Tensor) else decay
        ctx.spec, ctx.need_k, ctx.compiled = spec, need_k, compiled
        ctx.set_materialize_grads(False)
        return spikes, h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_s: Tensor | None, grad_h: Tensor | None):  # type: ignore[override]
        h, x, decay_t = ctx.saved_tensors
        if grad_s is None and grad_h is None:
            return None, None, None, None
        decay = ctx.decay if decay_t is None else decay_t
        k = _as_tensor(decay, h) if ctx.compiled else decay
        spec, need_k = ctx.spec, ctx.need_k
        key = ("bwd", spec, h.dtype, h.device, h.shape[0], isinstance(k, Tensor), need_k)
        key += (grad_s is None, grad_h is None, x is None)
        args = (h, x, k, _contig(grad_s), _contig(grad_h))
        static = {"spec": spec, "need_k": need_k}
        grad_x, grad_k = _run_loop(key, _backward_loop, args, static, ctx.compiled)
        if grad_k is not None:
            grad_k = grad_k.to(decay_t.dtype)
        return (grad_x if ctx.needs_input_grad[0] else None), grad_k, None, None


def _as_tensor(decay: Tensor | float, x: Tensor) -> Tensor:
    """``decay`` as a 0-dim tensor in the dtype the eager ops compute ``x * decay`` in."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    return torch.as_tensor(decay, dtype=dtype, device=x.device).detach()


def _contig(g: Tensor | None) -> Tensor | None:
    """A contiguous gradient (autograd may hand over expanded zero-stride tensors)."""
    return None if g is None else g.contiguous()


def lif_fused(
    x: Tensor, decay: Tensor | float, spec: NeuronSpec, *, compile: bool | None = None
) -> tuple[Tensor, Tensor]:
    """Fused multi-step LIF: same contract and spikes as :func:`lif_reference`.

    ``x`` [T, B, ...]; ``decay`` a float or a 0-dim tensor (learnable: its gradient is
    returned). ``compile``: ``True`` / ``False`` force the compiled / eager loops, ``None``
    follows ``SNNGEN_COMPILE`` (see the module docstring). Returns ``(spikes, membrane)``,
    both shaped like ``x``.
    """
    check_multistep_input(x)
    if isinstance(decay, Tensor) and decay.dim() != 0:
        raise ValueError(f"expected decay as a float or a 0-dim tensor, got shape {decay.shape}")
    flat = x.reshape(x.shape[0], -1)
    if not flat.is_contiguous():
        flat = flat.contiguous()
    spikes, h = _FusedLIF.apply(flat, decay, spec, _compile_requested(compile))
    return spikes.view(x.shape), h.view(x.shape)
