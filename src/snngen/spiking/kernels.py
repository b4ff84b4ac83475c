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
* spike ``s_t = H(h_t - v_th)``, with the surrogate's derivative in the backward.

``detach_reset`` stops gradients through the ``s`` used in the reset. The membrane returned is
``h_t``, the charge before reset (what snnTorch returns as ``mem``).

Both implementations call the same step primitives (:func:`_reset`, :func:`_charge`,
:func:`_leak`) on the same ``[N]`` slices, so their spikes and membranes are bit-identical.

Compilation
-----------
``compile`` (argument, or the environment variable ``SNNGEN_COMPILE`` when the argument is
``None``) is ``"auto"`` (default), ``True`` / ``1`` or ``False`` / ``0``. ``auto`` runs the eager
fused loops on CPU (torch.compile takes 10-30 s to build a kernel there, far longer than the
eager loops ever cost) and compiles on CUDA when Triton is available. When compiling, the
per-step bodies of the forward and backward loops are compiled once per (spec, dtype, device)
with dynamic shapes, so a new sequence length or batch size does not recompile. A failure to
compile falls back to the eager loops: silently under ``auto``, with one warning when compiling
was asked for explicitly. Compiled kernels may contract multiply-adds differently, so their
spikes can differ from the reference at exact threshold crossings; the eager loops cannot.
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

from snngen.spiking.surrogate import ATan, Surrogate

FORMS = ("spikingjelly", "snntorch", "fsvae", "if")
COMPILE_ENV = "SNNGEN_COMPILE"
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NeuronSpec:
    """Static description of a multi-step neuron (everything but the decay value).

    ``v_reset=None`` selects soft reset (subtract ``v_threshold``); ``decay_input`` only
    affects the spikingjelly form; ``surrogate`` defaults to :class:`ATan` (alpha 2).
    """

    form: str = "spikingjelly"
    v_threshold: float = 1.0
    v_reset: float | None = 0.0
    detach_reset: bool = False
    decay_input: bool = True
    surrogate: Surrogate | None = None

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
        s = spec.surrogate(h - spec.v_threshold)
        spikes.append(s)
        mems.append(h)
    return torch.stack(spikes).view(x.shape), torch.stack(mems).view(x.shape)


# --------------------------------------------------------------------------- fused forward


def _forward_step(
    spec: NeuronSpec, k: Tensor | float, x: Tensor, h_prev: Tensor, s_prev: Tensor,
    h_out: Tensor, s_out: Tensor, buf: Tensor,
) -> None:
    """One forward step into ``h_out`` / ``s_out`` (all [N]); ``buf`` is scratch."""
    if spec.form == "snntorch":
        _reset(spec, _leak(x, h_prev, k, out=buf), s_prev, out=h_out)
    else:
        _charge(spec, x, _reset(spec, h_prev, s_prev, out=buf), k, out=h_out)
    torch.ge(h_out, spec.v_threshold, out=s_out)


def _forward_loop(
    x: Tensor, k: Tensor | float, spec: NeuronSpec, step: Callable
) -> tuple[Tensor, Tensor]:
    """Run the recurrence without autograd. ``x`` [T, N]; returns ``(spikes, h)``, each [T, N]."""
    spikes, h = torch.empty_like(x), torch.empty_like(x)
    h0, s0, buf = _initial(spec, x[0]), torch.zeros_like(x[0]), torch.empty_like(x[0])
    for t in range(x.shape[0]):
        h_prev, s_prev = (h0, s0) if t == 0 else (h[t - 1], spikes[t - 1])
        step(spec, k, x[t], h_prev, s_prev, h[t], spikes[t], buf)
    return spikes, h


# --------------------------------------------------------------------------- fused backward


def _coefficients(spec: NeuronSpec, k: float) -> tuple[float, float]:
    """``(a, b)`` with ``dh_t/dv_t = a`` (``dh_t/dh_{t-1}`` for snntorch) and ``dh_t/dx_t = b``."""
    if spec.form == "spikingjelly":
        return 1.0 - k, (k if spec.decay_input else 1.0)
    if spec.form in ("fsvae", "snntorch"):
        return k, 1.0
    return 1.0, 1.0


def _backward_step(
    spec: NeuronSpec, a: float, b: float, k: float, first: bool, last: bool,
    h_t: Tensor, h_prev: Tensor | None, x_t: Tensor | None, x_next: Tensor | None,
    gs_t: Tensor | None, gh_t: Tensor | None, d_next: Tensor | None, dx_next: Tensor | None,
    d_out: Tensor, dx_out: Tensor, grad_k: Tensor | None, bufs: tuple[Tensor, Tensor],
) -> None:
    """One BPTT step: write ``dL/dx_t`` into ``dx_out`` (and ``b dL/dh_t`` into ``d_out``).

    With ``d_t = dL/dh_t``: ``d_t = gh_t + sg_t (gs_t + c_{t+1}) + r_{t+1}``, ``sg_t`` the
    surrogate derivative, ``c_{t+1}`` the gradient reaching ``s_t`` through step t + 1's reset and
    ``r_{t+1}`` the one reaching ``h_t`` through step t + 1's charge (both zero when ``last``).
    The loop carries ``D_t = b d_t`` (``b = dh/dx``, > 0), which for every form but snntorch
    is ``dL/dx_t`` itself, so ``d_out`` is ``dx_out`` there; ``d_next`` / ``dx_next`` are step
    t + 1's ``D`` / ``dL/dx``. For snntorch ``dL/dx_t = d_t (1 - s_{t-1})`` (hard reset) and
    ``D`` is kept apart only when the reset derivative needs it. ``h_prev`` is ``h_{t-1}``
    (None when ``first``); ``x_t``, ``x_next`` the inputs where the derivative needs them;
    ``grad_k`` [N] accumulates ``b dL/dk`` per element when not None. ``bufs``: [N] scratch.
    """
    thr, vr = spec.v_threshold, spec.vr
    snn = spec.form == "snntorch"
    rho = a / b  # d_{t+1} = rho / a * D_{t+1}: scales the carried D back to d
    sg, e = bufs
    spec.surrogate.grad_(torch.sub(h_t, thr, out=sg), b)  # b dS_t/dh_t
    # acc = b (sg (gs_t + c_{t+1}) + gh_t), in scratch (or straight into d_out at the last step),
    # so that each output row is written once (it is the one pass that misses the cache).
    acc = d_out if last else e
    if not last and not spec.detach_reset:
        if spec.hard:  # dh_{t+1}/ds_t = a (vr - h_t); snntorch: vr - u_{t+1}
            if snn:
                p, scale = _leak(x_next, h_t, k, out=e), -1.0 / b
            else:
                p, scale = h_t, -rho
            if vr != 0.0:
                p = torch.sub(p, vr, out=e)
            if gs_t is None:
                torch.mul(p, d_next, out=e).mul_(scale)
            else:
                torch.addcmul(gs_t, p, d_next, value=scale, out=e)
        else:  # dh_{t+1}/ds_t = -thr a (snntorch: -thr)
            scale = -thr * (1.0 / b if snn else rho)
            if gs_t is None:
                torch.mul(d_next, scale, out=e)
            else:
                torch.add(gs_t, d_next, alpha=scale, out=e)
        e.mul_(sg)
    elif gs_t is not None:
        torch.mul(sg, gs_t, out=acc)
    else:
        acc.zero_()
    if gh_t is not None:
        acc.add_(gh_t, alpha=b)
    # D_t = acc + b r_{t+1}: through step t + 1's charge (snntorch: leak, du_{t+1}/dh_t = beta).
    d = d_out
    if not last:
        if snn:
            torch.add(acc, dx_next, alpha=a * b, out=d)
        elif spec.hard:  # dv_{t+1}/dh_t = 1 - s_t = 1[h_t < thr]
            torch.addcmul(acc, d_next, torch.lt(h_t, thr, out=sg), value=a, out=d)
        else:
            torch.add(acc, d_next, alpha=a, out=d)
    # dL/dx_t (snntorch) and b dL/dk.
    if snn:
        if spec.hard and not first:  # du_t = d_t (1 - s_{t-1})
            torch.mul(d, torch.lt(h_prev, thr, out=e), out=dx_out)
        elif dx_out.data_ptr() != d.data_ptr():
            dx_out.copy_(d)
        if grad_k is not None and not first:  # du_t/dbeta = h_{t-1}
            grad_k.addcmul_(dx_out, h_prev)
        elif grad_k is not None and vr != 0.0:
            grad_k.add_(dx_out, alpha=vr)
        return
    if grad_k is None or spec.form == "if":
        return
    if first:
        v = e.fill_(vr)
    else:
        v = _reset(spec, h_prev, torch.ge(h_prev, thr, out=e), out=sg)
    if spec.form == "spikingjelly":  # dh/dk = x + vr - v (decay_input) or vr - v
        w = v.neg_().add_(vr)
        if spec.decay_input:
            w.add_(x_t)
        grad_k.addcmul_(d, w)
    else:  # fsvae: dh/dk = v
        grad_k.addcmul_(d, v)


def _needs_x(spec: NeuronSpec, need_k: bool) -> bool:
    """Whether the backward needs the input ``x``: snntorch hard reset (the reset derivative
    uses ``u = x + beta h``) and the decay gradient of the spikingjelly ``decay_input`` form."""
    if spec.form == "snntorch":
        return spec.hard and not spec.detach_reset
    return need_k and spec.form == "spikingjelly" and spec.decay_input


def _backward_loop(
    h: Tensor, x: Tensor | None, k: float, grad_s: Tensor | None, grad_h: Tensor | None,
    spec: NeuronSpec, need_k: bool, step: Callable,
) -> tuple[Tensor, Tensor | None]:
    """BPTT of :func:`_forward_loop` from the saved membranes ``h`` [T, N].

    ``grad_s`` / ``grad_h`` [T, N] (any strides) are the gradients of the spike / membrane
    outputs (None: unused). Returns ``(grad_x [T, N], grad_k [] or None)``.
    """
    steps = h.shape[0]
    a, b_true = _coefficients(spec, k)
    b = b_true if b_true > 0.0 else 1.0  # carry D = b d (b = 0: carry d, zero grad_x at the end)
    grad_x = torch.empty_like(h)
    bufs = (torch.empty_like(h[0]), torch.empty_like(h[0]))
    # snntorch with hard reset: dL/dx_t != D_t, and the reset derivative needs D_{t+1} itself.
    apart = spec.form == "snntorch" and spec.hard and not spec.detach_reset
    d_bufs = (torch.empty_like(h[0]), torch.empty_like(h[0])) if apart else None
    acc = torch.zeros_like(h[0]) if need_k else None
    for t in reversed(range(steps)):
        first, last = t == 0, t == steps - 1
        if apart:
            d_out, d_next = d_bufs[t % 2], d_bufs[(t + 1) % 2]
        else:
            d_out, d_next = grad_x[t], (None if last else grad_x[t + 1])
        step(
            spec, a, b, k, first, last, h[t], None if first else h[t - 1],
            None if x is None else x[t], None if x is None or last else x[t + 1],
            None if grad_s is None else grad_s[t], None if grad_h is None else grad_h[t],
            d_next, None if last else grad_x[t + 1], d_out, grad_x[t], acc, bufs,
        )
    if b_true != b:
        grad_x.zero_()
    return grad_x, None if acc is None else acc.sum() / b


# --------------------------------------------------------------------------- compilation


def parse_compile(value: bool | str | None) -> bool | str:
    """Normalise a compile switch to ``True``, ``False`` or ``"auto"``.

    ``None`` reads ``SNNGEN_COMPILE`` (unset: ``"auto"``); strings ``1/true/on/yes``,
    ``0/false/off/no`` and ``auto`` are accepted. Raises ``ValueError`` otherwise.
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
    raise ValueError(
        f"compile / {COMPILE_ENV} must be auto, 1 (true) or 0 (false), got {value!r}"
    )


def _resolve_compile(compile: bool | str | None, device: torch.device) -> tuple[bool, bool]:
    """Return ``(compile, explicit)`` from the argument or ``SNNGEN_COMPILE`` (see module doc)."""
    value = parse_compile(compile)
    if value == "auto":
        return device.type == "cuda" and _has_triton(), False
    return bool(value), True


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
        copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__)
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
                return loop(*args, compiled)
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


class _FusedLIF(torch.autograd.Function):
    """The whole ``[T, N]`` sequence as one autograd node; saves ``h`` (and ``x`` if needed)."""

    @staticmethod
    def forward(ctx, x: Tensor, decay: Tensor | float, spec: NeuronSpec, use_compile):  # type: ignore[override]
        k = decay.detach() if isinstance(decay, Tensor) else decay
        spikes, h = _run("forward", _forward_loop, _forward_step, (x, k, spec), spec, x,
                         use_compile)
        need_x, need_k = ctx.needs_input_grad[0], isinstance(decay, Tensor) and (
            ctx.needs_input_grad[1]
        )
        ctx.spec, ctx.need_k, ctx.use_compile = spec, need_k, use_compile
        ctx.k = k  # a float, or the detached 0-dim tensor (read in backward: no sync here)
        ctx.k_dtype = decay.dtype if need_k else None
        ctx.set_materialize_grads(False)
        if need_x or need_k:
            ctx.save_for_backward(h, x if _needs_x(spec, need_k) else None)
        return spikes, h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_s: Tensor | None, grad_h: Tensor | None):  # type: ignore[override]
        if grad_s is None and grad_h is None:
            return None, None, None, None
        h, x = ctx.saved_tensors
        args = (h, x, float(ctx.k), grad_s, grad_h, ctx.spec, ctx.need_k)
        grad_x, grad_k = _run("backward", _backward_loop, _backward_step, args, ctx.spec, h,
                              ctx.use_compile)
        if grad_k is not None:
            grad_k = grad_k.reshape(()).to(ctx.k_dtype)
        return (grad_x if ctx.needs_input_grad[0] else None), grad_k, None, None


def lif_fused(
    x: Tensor, decay: Tensor | float, spec: NeuronSpec, *, compile: bool | str | None = None
) -> tuple[Tensor, Tensor]:
    """Fused multi-step LIF: same contract, spikes and membranes as :func:`lif_reference`.

    ``x`` [T, B, ...]; ``decay`` a float or a 0-dim tensor (learnable: its gradient is
    returned). ``compile``: ``"auto"`` / ``True`` / ``False``, or ``None`` to read
    ``SNNGEN_COMPILE`` (see the module docstring). Returns ``(spikes, membrane)``, both shaped
    like ``x``.
    """
    check_multistep_input(x)
    _check_decay(decay)
    flat = x.reshape(x.shape[0], -1).contiguous()
    use_compile = _resolve_compile(compile, x.device)
    spikes, h = _FusedLIF.apply(flat, decay, spec, use_compile)
    return spikes.view(x.shape), h.view(x.shape)
