"""The multi-step LIF update ``[T, ...] -> [T, ...]``.

Two implementations of one recurrence:

* :func:`lif_reference`: the time loop in plain autograd, the readable definition;
* :func:`lif_fused`: the same loop inside one ``torch.autograd.Function`` whose backward is a
  hand-written BPTT. It saves only the membrane ``h`` ``[T, N]`` (plus the input ``x`` where a
  derivative needs it, see :func:`_needs_x`); spikes are recomputed from ``h`` in the backward.

The recurrence, with state ``(h_{-1}, s_{-1}) = (v_r, 0)`` (``0`` for soft reset):

* reset of the previous step, ``v_t = R(h_{t-1}, s_{t-1})``:
  hard ``v = h - h s + v_r s`` (``h`` where ``s = 0``, ``v_r`` where ``s = 1``),
  soft ``v = h - v_th s``;
* charge ``h_t`` from ``v_t`` and ``x_t`` by form, with ``k`` the decay argument:

  - ``spikingjelly`` with ``decay_input``: ``h = v + k (x + v_r - v)`` (``torch.lerp``;
    spikingjelly's ``v + (x - (v - v_r)) / tau`` with ``k = 1/tau``);
  - ``spikingjelly`` without ``decay_input``: ``h = x + (1 - k) v + k v_r``
    (= ``v - (v - v_r) / tau + x``);
  - ``fsvae``: ``h = x + k v`` (FSVAE's ``u = 0.25 u (1 - o) + x``, ``k = beta = 0.25``);
  - ``if``: ``h = x + v``;
  - ``snntorch`` (reset applied after the leak, as snnTorch's ``Leaky``):
    ``u = x + k h_{t-1}``, then ``h = u - v_th s_{t-1}`` (soft, "subtract") or
    ``h = u - u s_{t-1} + v_r s_{t-1}`` (hard, "zero" for ``v_r = 0``);
* spike ``s_t = H(h_t - v_th)``, with the surrogate's derivative in the backward; ``H`` fires
  at the threshold (``h_t >= v_th``, spikingjelly) or, with ``strict_threshold``, only above it
  (``h_t > v_th``, snnTorch). The two differ only where ``h_t`` equals ``v_th`` exactly, which
  is common for neurons fed by spikes (snnTorch's ``Leaky`` with beta 0.5 and threshold 1 given
  one input spike holds exactly 1.0 and stays silent).

``detach_reset`` stops gradients through the ``s`` used in the reset. The membrane returned is
``h_t``, the charge before reset (what snnTorch returns as ``mem``).

Both implementations call the same step primitives (:func:`_reset`, :func:`_charge`,
:func:`_leak`) on the same ``[N]`` slices, so their spikes and membranes are bit-identical.

Compilation
-----------
``compile`` (argument, or the environment variable ``SNNGEN_COMPILE`` when the argument is
``None``) is ``"auto"`` (default), ``"cpp"``, ``"triton"``, ``True`` / ``1`` or ``False`` / ``0``:

* ``"cpp"``: the compiled C++ CPU backend of :mod:`snngen.spiking._lif_cpp`, which runs the
  whole time loop per element in one pass (forward: read ``x``, write spikes and ``h``;
  backward: one reverse pass), parallel over elements with the intra-op threads. It is built
  on first use with ``torch.utils.cpp_extension.load_inline`` (gcc, ~30-60 s, once per machine
  and source version; cached in the torch extensions directory; build it ahead with
  ``python -m snngen.spiking._lif_cpp``). It covers float32/float64 CPU tensors, every form,
  reset, ``detach_reset`` and ``strict_threshold``, and the built-in surrogates (exact types: a
  subclass that may override ``grad`` runs eagerly); anything else, or a failed build, runs the
  eager loops with one warning per reason. Its spikes and membranes are bit-identical to
  :func:`lif_reference` (it performs the same fused multiply-adds ATen performs), its gradients
  agree to rounding.
  Measured (``benchmarks/neurons.py``, 1 thread, T=8, 32x64x16x16): see benchmarks/README.md.
* ``"triton"``: the Triton kernels of :mod:`snngen.spiking.triton_lif` (CUDA tensors; CPU
  tensors only under Triton's interpreter, ``TRITON_INTERPRET=1``), one program per block of
  elements running the whole time loop, for float32, bfloat16 and float16 inputs (float32
  state), every form, reset, ``detach_reset``, ``strict_threshold``, the built-in surrogates
  and a learnable decay (a 0-dim tensor, e.g. :class:`~snngen.spiking.ParametricLIF`'s, is
  never read on the host: the constants derived from it reach the kernels as a small device
  tensor, so neither the forward nor the backward waits for the GPU). Spikes and membranes are
  bit-identical to :func:`lif_reference` on float32 inputs; a bfloat16 / float16 input gives
  the float32 result's spikes and its membrane rounded to the input dtype. Where they cannot
  run (no Triton, another device or dtype, a surrogate subclass), the eager loops do, with one
  warning per reason.
* ``"auto"``: on CPU, the C++ backend **if it is already built** (found in the extensions
  cache, or loaded in this process), else the eager fused loops; ``auto`` never starts a
  build, so a first call never blocks for a minute unexpectedly. On CUDA, the Triton kernels
  when Triton imports (else, or where they do not apply, ``torch.compile`` when Triton is
  available, else the eager loops).
* ``True``: ``torch.compile`` the per-step bodies (below). ``False``: the eager fused loops.

``torch.compile`` on CPU is opt-in: measured on a 2-core CPU (torch 2.13, T=8, 32x64x16x16,
``benchmarks/neurons.py --compile``), the first call spent 18-36 s compiling and the compiled
path was no faster than the eager loops (9.8 vs 8.8 ms per forward + backward). When
compiling, the per-step bodies of the forward and backward loops are compiled once per (spec,
dtype, device) with dynamic shapes, so a new sequence length or batch size does not
recompile. A failure to compile falls back to the eager loops: silently under ``auto``, with
one warning when compiling was asked for explicitly. Compiled steps are pure functions (each
step's ops fuse into one kernel; the loop copies their results into the outputs) and may
contract multiply-adds differently, so their spikes can differ from the reference at exact
threshold crossings; the eager loops and the C++ backend cannot.
"""

from __future__ import annotations

import functools
import logging
import os
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from snngen.spiking import _lif_cpp
from snngen.spiking.surrogate import ATan, Surrogate

FORMS = ("spikingjelly", "snntorch", "fsvae", "if")
COMPILE_ENV = "SNNGEN_COMPILE"
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NeuronSpec:
    """Static description of a multi-step neuron (everything but the decay value).

    ``v_reset=None`` selects soft reset (subtract ``v_threshold``); ``decay_input`` only
    affects the spikingjelly form; ``surrogate`` defaults to :class:`ATan` (alpha 2);
    ``strict_threshold`` fires only when the membrane exceeds the threshold (snnTorch's
    ``mem > threshold``) instead of when it reaches it (``>=``, the default).
    """

    form: str = "spikingjelly"
    v_threshold: float = 1.0
    v_reset: float | None = 0.0
    detach_reset: bool = False
    decay_input: bool = True
    surrogate: Surrogate | None = None
    strict_threshold: bool = False

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"unknown neuron form {self.form!r}; expected one of {FORMS}")
        if self.surrogate is None:
            object.__setattr__(self, "surrogate", ATan())

    @property
    def hard(self) -> bool:
        """Whether the reset is hard (to ``v_reset``) rather than soft (subtract threshold)."""
        return self.v_reset is not None

    @property
    def fires(self) -> Callable:
        """The spike comparison ``(h, v_th) -> h >= v_th`` (``h > v_th`` when strict)."""
        return torch.gt if self.strict_threshold else torch.ge

    @property
    def quiet(self) -> Callable:
        """The complement of :attr:`fires`: ``h < v_th`` (``h <= v_th`` when strict)."""
        return torch.le if self.strict_threshold else torch.lt

    @property
    def vr(self) -> float:
        """The resting / reset potential (0 for soft reset)."""
        return 0.0 if self.v_reset is None else float(self.v_reset)


def check_multistep_input(x: Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` is a floating tensor shaped ``[T, B, ...]`` with T >= 1."""
    if not isinstance(x, Tensor):
        raise ValueError(f"expected a tensor shaped [T, B, ...], got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(
            f"expected a floating-point tensor shaped [T, B, ...], got dtype {x.dtype} "
            f"(shape {tuple(x.shape)}); convert it with x.float()"
        )
    if x.dim() < 2:
        raise ValueError(
            f"expected a tensor shaped [T, B, ...] (time first, then batch), got shape "
            f"{tuple(x.shape)}; add the time dimension, e.g. x.unsqueeze(0) or repeat T times"
        )
    if x.shape[0] == 0:
        raise ValueError(
            f"expected a tensor shaped [T, B, ...] with T >= 1 time steps, got shape "
            f"{tuple(x.shape)}"
        )


def _check_decay(decay: Tensor | float) -> None:
    if isinstance(decay, Tensor) and decay.dim() != 0:
        raise ValueError(
            f"expected decay as a float or a 0-dim tensor, got shape {tuple(decay.shape)}"
        )


# --------------------------------------------------------------------------- step primitives
# Each takes ``out`` (a buffer, or None to allocate): the fused loops pass buffers, the
# reference passes None and records autograd. Same ops on same-shaped tensors -> same bits.


def _reset(spec: NeuronSpec, h: Tensor, s: Tensor, out: Tensor | None = None) -> Tensor:
    """Post-reset state ``v = R(h, s)``; ``h``, ``s`` [N] (``s`` in {0, 1})."""
    if not spec.hard:
        return torch.add(h, s, alpha=-spec.v_threshold, out=out)
    v = torch.addcmul(h, h, s, value=-1.0, out=out)  # exact: h (s = 0) or 0 (s = 1)
    if spec.vr != 0.0:
        v = torch.add(v, s, alpha=spec.vr, out=out)
    return v


def _axpy(x: Tensor, v: Tensor, a: Tensor | float, out: Tensor | None) -> Tensor:
    """``x + a v`` (``a`` a float or a 0-dim tensor)."""
    if isinstance(a, Tensor):
        return torch.addcmul(x, v, a, out=out)
    return torch.add(x, v, alpha=a, out=out)


def _charge(
    spec: NeuronSpec, x: Tensor, v: Tensor, k: Tensor | float, out: Tensor | None = None
) -> Tensor:
    """Charge ``h_t`` from the post-reset state ``v`` and input ``x`` (all forms but snntorch)."""
    vr = spec.vr
    if spec.form == "spikingjelly":
        if spec.decay_input:  # v + k (x + vr - v)
            return torch.lerp(v, x if vr == 0.0 else x + vr, k, out=out)
        h = _axpy(x, v, 1.0 - k, out)
        return h if vr == 0.0 else torch.add(h, k * vr, out=out)
    if spec.form == "fsvae":
        return _axpy(x, v, k, out)
    return torch.add(x, v, out=out)  # if


def _leak(x: Tensor, h: Tensor, k: Tensor | float, out: Tensor | None = None) -> Tensor:
    """snnTorch's pre-reset charge ``u = x + beta h_{t-1}``."""
    return _axpy(x, h, k, out)


def _initial(spec: NeuronSpec, like: Tensor) -> Tensor:
    """The state before the first step: ``v_r`` (0 for soft reset), shaped like ``like``."""
    return torch.full_like(like, spec.vr)


# --------------------------------------------------------------------------- reference


def lif_reference(x: Tensor, decay: Tensor | float, spec: NeuronSpec) -> tuple[Tensor, Tensor]:
    """Plain-autograd time loop: the definition the fused kernel is tested against.

    ``x`` [T, B, ...]; ``decay`` is ``1/tau`` for the spikingjelly form, ``beta`` for
    snntorch/fsvae (a float or a 0-dim tensor, differentiable), unused for IF.
    Returns ``(spikes, membrane)``, both shaped like ``x``.
    """
    check_multistep_input(x)
    _check_decay(decay)
    flat = x.reshape(x.shape[0], -1).contiguous()  # same [N] slices as the fused loops
    h = _initial(spec, flat[0])
    s = torch.zeros_like(flat[0])
    spikes, mems = [], []
    for t in range(flat.shape[0]):
        sr = s.detach() if spec.detach_reset else s
        if spec.form == "snntorch":
            h = _reset(spec, _leak(flat[t], h, decay), sr)
        else:
            h = _charge(spec, flat[t], _reset(spec, h, sr), decay)
        s = spec.surrogate(h - spec.v_threshold, strict=spec.strict_threshold)
        spikes.append(s)
        mems.append(h)
    return torch.stack(spikes).view(x.shape), torch.stack(mems).view(x.shape)


# --------------------------------------------------------------------------- fused forward


def _forward_step(
    spec: NeuronSpec, k: Tensor | float, x: Tensor, h_prev: Tensor, s_prev: Tensor,
    h_out: Tensor | None = None, s_out: Tensor | None = None, buf: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One forward step; returns ``(h_t, s_t)`` (all [N]).

    Eager loops pass ``h_out`` / ``s_out`` (rows of the outputs) and a scratch ``buf``;
    compiled loops pass none, so the step is a pure function that fuses into one kernel.
    """
    if spec.form == "snntorch":
        h = _reset(spec, _leak(x, h_prev, k, out=buf), s_prev, out=h_out)
    else:
        h = _charge(spec, x, _reset(spec, h_prev, s_prev, out=buf), k, out=h_out)
    return h, _mask(spec.fires, h, spec.v_threshold, s_out)


def _mask(compare: Callable, h: Tensor, thr: float, out: Tensor | None) -> Tensor:
    """``compare(h, thr)`` as 0/1 in ``h``'s dtype, into ``out`` when given."""
    if out is None:
        return compare(h, thr).to(h.dtype)
    return compare(h, thr, out=out)


def _forward_loop(
    x: Tensor, k: Tensor | float, spec: NeuronSpec, step: Callable, pure: bool = False
) -> tuple[Tensor, Tensor]:
    """Run the recurrence without autograd. ``x`` [T, N]; returns ``(spikes, h)``, each [T, N].

    ``pure``: ``step`` returns fresh tensors (a compiled step), copied into the outputs.
    """
    spikes, h = torch.empty_like(x), torch.empty_like(x)
    h_prev, s_prev = _initial(spec, x[0]), torch.zeros_like(x[0])
    buf = None if pure else torch.empty_like(x[0])
    for t in range(x.shape[0]):
        if pure:
            h_prev, s_prev = step(spec, k, x[t], h_prev, s_prev)
            h[t].copy_(h_prev)
            spikes[t].copy_(s_prev)
        else:
            h_prev, s_prev = step(spec, k, x[t], h_prev, s_prev, h[t], spikes[t], buf)
    return spikes, h


# --------------------------------------------------------------------------- fused backward


def _coefficients(spec: NeuronSpec, k: Tensor | float) -> tuple[Tensor | float, Tensor | float]:
    """``(a, b)`` with ``dh_t/dv_t = a`` (``dh_t/dh_{t-1}`` for snntorch) and ``dh_t/dx_t = b``
    (0-dim tensors where they depend on a tensor ``k``)."""
    if spec.form == "spikingjelly":
        return 1.0 - k, (k if spec.decay_input else 1.0)
    if spec.form in ("fsvae", "snntorch"):
        return k, 1.0
    return 1.0, 1.0


def _backward_step(
    spec: NeuronSpec, a: float, b: float, k: float, first: bool, last: bool,
    h_t: Tensor, h_prev: Tensor | None, x_t: Tensor | None, x_next: Tensor | None,
    gs_t: Tensor | None, gh_t: Tensor | None, d_next: Tensor | None, dx_next: Tensor | None,
    need_k: bool, d_out: Tensor | None = None, dx_out: Tensor | None = None,
    bufs: tuple[Tensor | None, Tensor | None] = (None, None),
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor | float] | None]:
    """One BPTT step; returns ``(D_t, dL/dx_t, k_term)``.

    With ``d_t = dL/dh_t``: ``d_t = gh_t + sg_t (gs_t + c_{t+1}) + r_{t+1}``, ``sg_t`` the
    surrogate derivative, ``c_{t+1}`` the gradient reaching ``s_t`` through step t + 1's reset and
    ``r_{t+1}`` the one reaching ``h_t`` through step t + 1's charge (both zero when ``last``).
    The loop carries ``D_t = b d_t`` (``b = dh/dx``, > 0), which for every form but snntorch
    is ``dL/dx_t`` itself; ``d_next`` / ``dx_next`` are step t + 1's ``D`` / ``dL/dx``. For
    snntorch ``dL/dx_t = d_t (1 - s_{t-1})`` with hard reset. ``h_prev`` is ``h_{t-1}`` (None
    when ``first``); ``x_t``, ``x_next`` the inputs where the derivative needs them.
    ``k_term = (u, w)`` (when ``need_k``): ``b dL/dk`` gains ``u * w`` summed over elements.
    Eager loops pass output rows ``d_out`` / ``dx_out`` (the same row when ``D = dL/dx``) and
    two scratch ``bufs``; compiled loops pass none and get fresh tensors (a pure function).
    """
    thr, vr = spec.v_threshold, spec.vr
    snn = spec.form == "snntorch"
    rho = a / b  # d_{t+1} = rho / a * D_{t+1}: scales the carried D back to d
    sg, e = bufs
    inv = getattr(spec.surrogate, "inv_grad_", None)  # then sg holds 1 / (b dS_t/dh_t)
    if inv is not None:
        sg = inv(torch.sub(h_t, thr, out=sg), b)
    else:
        sg = spec.surrogate.grad_(torch.sub(h_t, thr, out=sg), b)  # b dS_t/dh_t
    # acc = b (sg (gs_t + c_{t+1}) + gh_t), in scratch (or straight into d_out at the last step),
    # so that each output row is written once (it is the one pass that misses the cache).
    acc_out = d_out if last else e
    if not last and not spec.detach_reset:
        if spec.hard:  # dh_{t+1}/ds_t = a (vr - h_t); snntorch: vr - u_{t+1}
            if snn:
                p, scale = _leak(x_next, h_t, k, out=e), -1.0 / b
            else:
                p, scale = h_t, -rho
            if vr != 0.0:
                p = torch.sub(p, vr, out=e)
            if gs_t is None:
                acc = torch.mul(p, d_next, out=e).mul_(scale)
            else:
                acc = torch.addcmul(gs_t, p, d_next, value=scale, out=e)
        else:  # dh_{t+1}/ds_t = -thr a (snntorch: -thr)
            scale = -thr * (1.0 / b if snn else rho)
            if gs_t is None:
                acc = torch.mul(d_next, scale, out=e)
            else:
                acc = torch.add(gs_t, d_next, alpha=scale, out=e)
        acc = acc.div_(sg) if inv is not None else acc.mul_(sg)
    elif gs_t is not None:
        acc = (torch.div if inv is not None else torch.mul)(gs_t, sg, out=acc_out)
    else:
        acc = torch.zeros_like(h_t) if acc_out is None else acc_out.zero_()
    if gh_t is not None:
        acc = acc.add_(gh_t, alpha=b)
    # D_t = acc + b r_{t+1}: through step t + 1's charge (snntorch: leak, du_{t+1}/dh_t = beta).
    d = acc
    if not last:
        if snn:
            d = torch.add(acc, dx_next, alpha=a * b, out=d_out)
        elif spec.hard:  # dv_{t+1}/dh_t = 1 - s_t = 1[h_t < thr]
            d = torch.addcmul(acc, d_next, _mask(spec.quiet, h_t, thr, sg), value=a, out=d_out)
        else:
            d = torch.add(acc, d_next, alpha=a, out=d_out)
    # dL/dx_t (snntorch) and the k term.
    if snn:
        if spec.hard and not first:  # du_t = d_t (1 - s_{t-1})
            dx = torch.mul(d, _mask(spec.quiet, h_prev, thr, e), out=dx_out)
        elif dx_out is not None and dx_out.data_ptr() != d.data_ptr():
            dx = dx_out.copy_(d)
        else:
            dx = d
        if not need_k or (first and vr == 0.0):
            return d, dx, None
        return d, dx, ((dx, vr) if first else (dx, h_prev))  # du_t/dbeta = h_{t-1}
    if not need_k or spec.form == "if":
        return d, d, None
    if first:
        v = torch.full_like(h_t, vr) if e is None else e.fill_(vr)
    else:
        v = _reset(spec, h_prev, _mask(spec.fires, h_prev, thr, e), out=sg)
    if spec.form == "spikingjelly":  # dh/dk = x + vr - v (decay_input) or vr - v
        w = v.neg_().add_(vr)
        return d, d, (d, w.add_(x_t) if spec.decay_input else w)
    return d, d, (d, v)  # fsvae: dh/dk = v


def _needs_x(spec: NeuronSpec, need_k: bool) -> bool:
    """Whether the backward needs the input ``x``: snntorch hard reset (the reset derivative
    uses ``u = x + beta h``) and the decay gradient of the spikingjelly ``decay_input`` form."""
    if spec.form == "snntorch":
        return spec.hard and not spec.detach_reset
    return need_k and spec.form == "spikingjelly" and spec.decay_input


def _backward_loop(
    h: Tensor, x: Tensor | None, k: float, grad_s: Tensor | None, grad_h: Tensor | None,
    spec: NeuronSpec, need_k: bool, step: Callable, pure: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """BPTT of :func:`_forward_loop` from the saved membranes ``h`` [T, N].

    ``grad_s`` / ``grad_h`` [T, N] (any strides) are the gradients of the spike / membrane
    outputs (None: unused). ``pure``: ``step`` is compiled and returns fresh tensors.
    Returns ``(grad_x [T, N], grad_k [] or None)``.
    """
    steps = h.shape[0]
    a, b_true = _coefficients(spec, k)
    b = b_true if b_true > 0.0 else 1.0  # carry D = b d (b = 0: carry d, zero grad_x at the end)
    grad_x = torch.empty_like(h)
    # snntorch with hard reset: dL/dx_t != D_t, and the reset derivative needs D_{t+1} itself.
    apart = spec.form == "snntorch" and spec.hard and not spec.detach_reset
    bufs = (None, None) if pure else (torch.empty_like(h[0]), torch.empty_like(h[0]))
    d_bufs = (torch.empty_like(h[0]), torch.empty_like(h[0])) if apart and not pure else None
    acc = torch.zeros_like(h[0]) if need_k else None
    d_next = dx_next = None
    for t in reversed(range(steps)):
        first, last = t == 0, t == steps - 1
        args = (
            spec, a, b, k, first, last, h[t], None if first else h[t - 1],
            None if x is None else x[t], None if x is None or last else x[t + 1],
            None if grad_s is None else grad_s[t], None if grad_h is None else grad_h[t],
            d_next, dx_next, need_k,
        )
        if pure:
            d_next, dx_next, term = step(*args)
            grad_x[t].copy_(dx_next)
        else:
            d_out = d_bufs[t % 2] if apart else grad_x[t]
            d_next, dx_next, term = step(*args, d_out, grad_x[t], bufs)
        if term is not None:
            u, w = term
            acc.add_(u, alpha=w) if isinstance(w, float) else acc.addcmul_(u, w)
    if b_true != b:
        grad_x.zero_()
    return grad_x, None if acc is None else acc.sum() / b


# --------------------------------------------------------------------------- compilation


def parse_compile(value: bool | str | None) -> bool | str:
    """Normalise a compile switch to ``True``, ``False``, ``"auto"``, ``"cpp"`` or ``"triton"``.

    ``None`` reads ``SNNGEN_COMPILE`` (unset: ``"auto"``); strings ``1/true/on/yes``,
    ``0/false/off/no``, ``auto``, ``cpp`` and ``triton`` are accepted. Raises ``ValueError``
    otherwise.
    """
    if value is None:
        value = os.environ.get(COMPILE_ENV, "auto")
    if isinstance(value, bool):
        return value
    key = str(value).strip().lower()
    if key in ("0", "false", "off", "no"):
        return False
    if key in ("1", "true", "on", "yes"):
        return True
    if key in ("auto", ""):
        return "auto"
    if key in ("cpp", "triton"):
        return key
    raise ValueError(
        f"compile / {COMPILE_ENV} must be auto, 1 (true), 0 (false), cpp or triton, got {value!r}"
    )


def _resolve_compile(compile: bool | str | None, device: torch.device) -> tuple[bool, bool]:
    """Return ``(torch.compile?, explicit)`` from the argument or ``SNNGEN_COMPILE``.

    ``"cpp"`` / ``"triton"`` never use ``torch.compile`` (where their backend cannot run, the
    eager loops do); see :func:`_use_cpp` / :func:`_use_triton` for those backends.
    """
    value = parse_compile(compile)
    if value == "auto":
        return device.type == "cuda" and _has_triton(), False
    if value in ("cpp", "triton"):
        return False, True
    return bool(value), True


_CPP_WARNED: set[str] = set()  # reasons already warned about, C++ and Triton (one each)


def _eager_instead(reason: str, explicit: bool) -> bool:
    """Say that a backend cannot run (``reason``) and the eager loops will: one warning per
    reason when that backend was asked for explicitly, else a debug log. Returns False (for
    :func:`_use_cpp` / :func:`_use_triton`)."""
    message = f"snngen: {reason}; using the eager fused LIF loops"
    if explicit and reason not in _CPP_WARNED:
        _CPP_WARNED.add(reason)
        warnings.warn(message, RuntimeWarning, stacklevel=4)  # lif_fused's caller
    else:
        _log.debug(message)
    return False


def _use_cpp(value: bool | str, x: Tensor, spec: NeuronSpec) -> bool:
    """Whether to run the C++ backend for the parsed switch ``value`` and input ``x`` [T, N].

    ``"cpp"`` builds the extension when missing and warns once per reason it cannot run;
    ``"auto"`` uses it on CPU only when already built, silently otherwise.
    """
    if value not in ("cpp", "auto") or torch.compiler.is_compiling():
        return False
    explicit = value == "cpp"
    if not explicit and x.device.type != "cpu":
        return False
    if x.device.type != "cpu":
        reason = f"the input is on {x.device} (the C++ LIF backend is CPU-only)"
    elif x.dtype not in _lif_cpp.DTYPES:
        reason = f"dtype {x.dtype} (the C++ LIF backend takes float32 and float64)"
    else:
        reason = _lif_cpp.unsupported(spec)
    if reason is None:
        if not explicit and not _lif_cpp.is_built():
            return False
        if _lif_cpp.load(build=explicit) is not None:
            return True
        reason = f"the C++ LIF extension could not be built or loaded ({_lif_cpp.last_error()})"
    return _eager_instead(reason, explicit)


def _use_triton(value: bool | str, x: Tensor, spec: NeuronSpec) -> bool:
    """Whether to run the Triton kernels for the parsed switch ``value`` and input ``x`` [T, N].

    ``"triton"`` warns once per reason they cannot run; ``"auto"`` uses them for CUDA inputs
    when Triton imports, silently otherwise (and never imports Triton for a CPU input).
    """
    if value not in ("triton", "auto") or torch.compiler.is_compiling():
        return False
    explicit = value == "triton"
    if not explicit and (x.device.type != "cuda" or not _has_triton()):
        return False
    module = _triton_lif()
    if isinstance(module, str):
        reason = f"Triton is not available ({module})"
    else:
        reason = module.unsupported(x, spec)
    if reason is None:
        return True
    return _eager_instead(reason, explicit)


@functools.lru_cache(maxsize=1)
def _triton_lif() -> types.ModuleType | str:
    """:mod:`snngen.spiking.triton_lif` (imported on first use), or why it cannot be imported."""
    try:
        from snngen.spiking import triton_lif
    except Exception as err:  # no triton, or one this code does not run on
        return f"{type(err).__name__}: {err}"
    return triton_lif


@functools.lru_cache(maxsize=1)
def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


_COMPILED: dict[tuple, Callable | None] = {}  # per (direction, spec, dtype, device); None: failed


def _compiled_step(key: tuple, fn: Callable) -> Callable | None:
    """A torch.compile'd ``fn`` (dynamic shapes), built lazily and cached under ``key``.

    Every key compiles a copy of ``fn`` with a code object of its own: torch.compile caches
    graphs per code object and stops recompiling after a few variants, so sharing one code
    object between many neuron specs would exhaust that limit.
    """
    if key not in _COMPILED:
        copy = types.FunctionType(
            fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__
        )
        _COMPILED[key] = torch.compile(copy, dynamic=True)
    return _COMPILED[key]


def _run(
    direction: str, loop: Callable, step: Callable, args: tuple, spec: NeuronSpec,
    ref: Tensor, use_compile: tuple[bool, bool],
):
    """Run ``loop(*args, step)`` with ``step`` compiled when asked and possible."""
    wanted, explicit = use_compile
    if wanted and not torch.compiler.is_compiling():
        key = (direction, spec, ref.dtype, ref.device)
        compiled = _compiled_step(key, step)
        if compiled is not None:
            try:
                return loop(*args, compiled, True)
            except Exception as err:  # no compiler / unsupported platform: eager from now on
                _COMPILED[key] = None
                message = (
                    f"snngen: torch.compile of the fused LIF {direction} step failed "
                    f"({type(err).__name__}: {err}); using the eager loop. "
                    f"Set {COMPILE_ENV}=0 to skip compiling."
                )
                if explicit:
                    warnings.warn(message, RuntimeWarning, stacklevel=4)
                else:
                    _log.info(message)
    return loop(*args, step)


# --------------------------------------------------------------------------- autograd


def _save_for_backward(ctx, x: Tensor, decay: Tensor | float, spec: NeuronSpec, h: Tensor) -> None:
    """Keep what either LIF node's backward needs: the membrane ``h`` ``[T, N]`` (and ``x`` when
    the form's gradient reads it), the spec, and whether (and in which dtype) ``decay`` wants a
    gradient. Nothing is saved when no input needs a gradient."""
    need_x = ctx.needs_input_grad[0]
    need_k = isinstance(decay, Tensor) and ctx.needs_input_grad[1]
    ctx.spec, ctx.need_k = spec, need_k
    ctx.k_dtype = decay.dtype if need_k else None
    ctx.set_materialize_grads(False)
    if need_x or need_k:
        ctx.save_for_backward(h, x if _needs_x(spec, need_k) else None)


def _input_grads(ctx, grad_x: Tensor | None, grad_k: Tensor | None) -> tuple:
    """Return ``(grad_x, grad_decay)`` as autograd expects them: ``None`` where not needed, the
    decay gradient as a 0-dim tensor of the decay's dtype."""
    if grad_k is not None:
        grad_k = grad_k.reshape(()).to(ctx.k_dtype)
    return (grad_x if ctx.needs_input_grad[0] else None), grad_k


#: input dtypes :func:`lif_fused` runs with float32 state on the CPU
_HALF_DTYPES = (torch.bfloat16, torch.float16)


def _node_backward(grads: Callable, extra: int = 1) -> staticmethod:
    """The ``backward`` of a LIF autograd node (saved with :func:`_save_for_backward`) whose
    backend computes ``grads(ctx, h, x, grad_s, grad_h) -> (dL/dx, dL/dk or None)`` from the
    saved ``h`` and ``x``: nothing to do when neither output has a gradient; the gradients as
    autograd expects them (:func:`_input_grads`), then ``None`` for the ``extra`` non-tensor
    arguments of ``forward`` after ``x`` and ``decay``."""

    @once_differentiable
    def backward(ctx, grad_s: Tensor | None, grad_h: Tensor | None):
        if grad_s is None and grad_h is None:
            return (None,) * (2 + extra)
        h, x = ctx.saved_tensors
        return *_input_grads(ctx, *grads(ctx, h, x, grad_s, grad_h)), *(None,) * extra

    return staticmethod(backward)


def _fused_grads(ctx, h: Tensor, x: Tensor | None, grad_s, grad_h):
    args = (h, x, float(ctx.k), grad_s, grad_h, ctx.spec, ctx.need_k)
    return _run("backward", _backward_loop, _backward_step, args, ctx.spec, h, ctx.use_compile)


def _cpp_grads(ctx, h: Tensor, x: Tensor | None, grad_s, grad_h):
    return _lif_cpp.backward(h, x, ctx.k, grad_s, grad_h, ctx.spec, ctx.need_k)


def _triton_grads(ctx, h: Tensor, x: Tensor | None, grad_s, grad_h):
    # a tensor decay stays on the device: its float64 copy gives (k, a, b) as float() and
    # Python arithmetic would, each rounded once to float32 in triton_lif.backward
    k = ctx.k.double() if isinstance(ctx.k, Tensor) else ctx.k
    a, b = _coefficients(ctx.spec, k)
    return _triton_lif().backward(h, x, k, a, b, grad_s, grad_h, ctx.spec, ctx.need_k, ctx.x_dtype)


class _FusedLIF(torch.autograd.Function):
    """The whole ``[T, N]`` sequence as one autograd node; saves ``h`` (and ``x`` if needed)."""

    @staticmethod
    def forward(ctx, x: Tensor, decay: Tensor | float, spec: NeuronSpec, use_compile):  # type: ignore[override]
        k = decay.detach() if isinstance(decay, Tensor) else decay
        spikes, h = _run("forward", _forward_loop, _forward_step, (x, k, spec), spec, x,
                         use_compile)
        _save_for_backward(ctx, x, decay, spec, h)
        ctx.use_compile = use_compile
        ctx.k = k  # a float, or the detached 0-dim tensor (read in backward: no sync here)
        return spikes, h

    backward = _node_backward(_fused_grads, extra=2)  # spec, use_compile


class _CppLIF(torch.autograd.Function):
    """The C++ backend as one autograd node; saves ``h`` (and ``x`` if needed), as _FusedLIF."""

    @staticmethod
    def forward(ctx, x: Tensor, decay: Tensor | float, spec: NeuronSpec):  # type: ignore[override]
        k = decay.detach() if isinstance(decay, Tensor) else decay
        spikes, h = _lif_cpp.forward(x, k, spec)
        _save_for_backward(ctx, x, decay, spec, h)
        ctx.k = float(k)  # a CPU decay (the C++ backend's): no device to wait for
        return spikes, h

    backward = _node_backward(_cpp_grads)


class _TritonLIF(torch.autograd.Function):
    """The Triton kernels as one autograd node; saves the float32 ``h`` (and ``x`` if needed)."""

    @staticmethod
    def forward(ctx, x: Tensor, decay: Tensor | float, spec: NeuronSpec):  # type: ignore[override]
        k = decay.detach() if isinstance(decay, Tensor) else decay
        spikes, h, mem = _triton_lif().forward(x, k, spec)
        _save_for_backward(ctx, x, decay, spec, h)
        # a float, or the detached 0-dim tensor: never read on the host (no synchronisation)
        ctx.k, ctx.x_dtype = k, x.dtype
        return spikes, mem

    backward = _node_backward(_triton_grads)


def lif_fused(
    x: Tensor, decay: Tensor | float, spec: NeuronSpec, *, compile: bool | str | None = None
) -> tuple[Tensor, Tensor]:
    """Fused multi-step LIF: same contract, spikes and membranes as :func:`lif_reference`.

    ``x`` [T, B, ...]; ``decay`` a float or a 0-dim tensor (learnable: its gradient is
    returned). ``compile``: ``"auto"`` / ``"cpp"`` / ``"triton"`` / ``True`` / ``False``, or
    ``None`` to read ``SNNGEN_COMPILE`` (see the module docstring). Returns ``(spikes,
    membrane)``, both shaped like ``x``. A bfloat16 / float16 CPU input (``bf16-mixed``
    autocast) runs with float32 state (on the C++ backend where it applies), as the Triton
    kernels do: the float32 result's spikes, its membrane rounded once to ``x``'s dtype.
    """
    check_multistep_input(x)
    _check_decay(decay)
    flat = x.reshape(x.shape[0], -1).contiguous()
    value = parse_compile(compile)
    # a half-precision CPU input (bf16-mixed autocast) runs with float32 state, as the Triton
    # kernels do: the float32 result's spikes, its membrane rounded once to x's dtype
    widen = flat.device.type == "cpu" and flat.dtype in _HALF_DTYPES and value != "triton"
    if widen:
        flat = flat.float()
    if _use_cpp(value, flat, spec):
        spikes, h = _CppLIF.apply(flat, decay, spec)
    elif _use_triton(value, flat, spec):
        spikes, h = _TritonLIF.apply(flat, decay, spec)
    else:
        spikes, h = _FusedLIF.apply(flat, decay, spec, _resolve_compile(value, x.device))
    if widen:
        spikes, h = spikes.to(x.dtype), h.to(x.dtype)
    return spikes.view(x.shape), h.view(x.shape)
