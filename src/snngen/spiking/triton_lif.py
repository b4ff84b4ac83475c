"""Triton kernels of the fused multi-step LIF (:mod:`snngen.spiking.kernels`), for CUDA tensors.

Importing this module imports Triton; :mod:`snngen.spiking.kernels` imports it only when a
Triton kernel may run (a CUDA input, or ``compile="triton"``).

One program per block of ``BLOCK`` elements runs the whole time loop with its state in
registers, as the C++ CPU kernel (``lif_kernel.cpp``) runs it per element:

* forward: reads ``x`` [T, N] once (float32, bfloat16 or float16; the state is float32) and
  writes the spikes (``x``'s dtype) and the float32 membrane ``h`` [T, N], which is what the
  backward saves; for a half-precision input it also writes the membrane output in ``x``'s
  dtype. The spikes are recomputed from the saved float32 ``h`` in the backward, so a membrane
  rounded to half precision never flips a spike there.
* backward: one reverse pass over the saved ``h`` (plus ``x`` where a derivative needs it, see
  :func:`snngen.spiking.kernels._needs_x`) and the output gradients, writing ``dL/dx``; with a
  learnable decay every program also writes its partial sum of ``dL/dk`` (summed in float64
  afterwards: deterministic, no atomics).

Exactness: the forward performs the operations of the C++ kernel (the fused multiply-adds ATen
performs for the eager step primitives, ``tl.fma``, and ATen's two-branch ``lerp``), with the
constants rounded as there (:func:`snngen.spiking._lif_cpp.forward_constants`), so on float32
inputs spikes and membranes are bit-identical to :func:`snngen.spiking.kernels.lif_reference`
(tested under Triton's interpreter on every form x reset x strict threshold, including membranes
landing exactly on the threshold). Two operations are written differently but give the same
values: the reset is a ``tl.where`` (with ``s`` in {0, 1} the eager ops yield exactly ``h``,
``v_r`` or ``h - v_th`` rounded once), and ``+ v_r`` / ``+ k v_r`` are added even when zero (the
reference skips them; only the sign of a zero result can differ, which compares equal). Every
product in the forward is an explicit ``tl.fma`` and the other operations are single additions /
subtractions, so the compiler's multiply-add contraction (on by default on CUDA) has nothing to
change. For a bfloat16 / float16 input the recurrence runs in float32 on the exactly widened
input: spikes and the float32 membrane equal the float32 reference on ``x.float()``, and the
membrane output is that rounded to ``x``'s dtype. The backward is the C++ kernel's BPTT in
float32 (gradients agree with the reference to rounding; half-precision gradients are the
float32 ones rounded to ``x``'s dtype).

The decay: a float goes to the kernels as scalar arguments (with the constants derived from
it). A 0-dim tensor decay (learnable, e.g. ``ParametricLIF``'s) is never read on the host, which
would make every call wait for the GPU: its constants (forward: ``k``, ``1 - k``, ``k v_r``;
backward: ``k`` and the coefficients ``a``, ``b``) are computed with tensor ops into a float32
[3] device tensor that the kernels load (``K_PTR``), rounded as the float path rounds them, and
the forward takes ``torch.lerp``'s branch (``|k| < 0.5``) at run time instead of as a
compile-time constant. Results are the same bits either way.

Forms, surrogates and their parameters use the C++ kernel's codes (:mod:`._lif_cpp`); a
surrogate subclass (which may override ``grad``) is not supported here and runs eagerly.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from snngen.spiking import _lif_cpp

#: input dtypes the kernels take (the state is float32 for all of them)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: elements per program
BLOCK = 512


@triton.jit
def _round_bf16(v):
    """The float32 ``v`` rounded to the nearest bfloat16 (ties to even, as ``Tensor.to``), as
    float32: cast to bfloat16 after this, exactly. Triton's interpreter truncates in its
    float32 -> bfloat16 cast; CUDA rounds as this does."""
    bits = v.to(tl.uint32, bitcast=True)
    bits = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16) << 16
    return tl.where(v == v, bits.to(tl.float32, bitcast=True), v)  # NaN stays NaN


@triton.jit(do_not_specialize=["steps", "n"])
def _lif_forward_kernel(
    x_ptr, s_ptr, h_ptr, m_ptr, c_ptr, steps, n, thr, vr, k, a1, kvr,
    FORM: tl.constexpr, HARD: tl.constexpr, STRICT: tl.constexpr, SMALL: tl.constexpr,
    STORE_M: tl.constexpr, K_PTR: tl.constexpr, BLOCK: tl.constexpr,
):
    """Spikes ``s`` (x's dtype), float32 membrane ``h`` and (``STORE_M``) the membrane in
    ``m``'s dtype, all [T, N], of ``x`` [T, N]; one program per ``BLOCK`` elements. With
    ``K_PTR`` the constants ``(k, a1, kvr)`` are read from ``c_ptr`` (float32 [3]; the scalar
    arguments are unused) and lerp's branch is taken on ``|k| < 0.5`` at run time (``SMALL`` is
    unused)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    h = tl.zeros([BLOCK], dtype=tl.float32) + vr  # the state before the first step: (vr, 0)
    fired = offs < 0  # s_{-1} = 0
    if K_PTR:  # a tensor decay: its constants in device memory
        k = tl.load(c_ptr)
        a1 = tl.load(c_ptr + 1)
        kvr = tl.load(c_ptr + 2)
    km1 = k - 1.0
    if K_PTR:  # lerp's branch (SMALL) at run time: fma(e - v, kw, v if small else e)
        small = tl.abs(k) < 0.5  # ATen tests the float32 k
        kw = tl.where(small, k, km1)
    for _ in range(steps):
        xi = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if FORM == 2:  # snntorch: u = x + k h_{t-1}, then the reset
            h = tl.fma(h, k, xi)
        if HARD:  # v = R(h, s)
            v = tl.where(fired, vr, h)
        else:
            v = tl.where(fired, h - thr, h)
        if FORM == 0:  # torch.lerp(v, x + vr, k), ATen's two branches
            e = xi + vr
            if K_PTR:
                h = tl.fma(e - v, kw, tl.where(small, v, e))
            elif SMALL:
                h = tl.fma(e - v, k, v)
            else:
                h = tl.fma(e - v, km1, e)
        elif FORM == 1:  # x + (1 - k) v + k vr
            h = tl.fma(v, a1, xi) + kvr
        elif FORM == 3:  # fsvae: x + k v
            h = tl.fma(v, k, xi)
        elif FORM == 4:  # if
            h = xi + v
        else:  # snntorch: the reset state is the membrane
            h = v
        if STRICT:
            fired = h > thr
        else:
            fired = h >= thr
        tl.store(h_ptr + offs, h, mask=mask)
        tl.store(s_ptr + offs, tl.where(fired, 1.0, 0.0).to(s_ptr.dtype.element_ty), mask=mask)
        if STORE_M:
            m = h
            if m_ptr.dtype.element_ty == tl.bfloat16:
                m = _round_bf16(h)
            tl.store(m_ptr + offs, m.to(m_ptr.dtype.element_ty), mask=mask)
        offs += n


@triton.jit
def _surrogate_grad(z, p0, p1, SUR: tl.constexpr):
    """The surrogate derivative at ``z = h - thr`` (formulas of :mod:`.surrogate`)."""
    if SUR == 0:  # ATan: alpha/2 / (1 + (pi/2 alpha z)^2); p0 = alpha
        q = (1.5707963267948966 * p0) * z
        g = (0.5 * p0) / (1.0 + q * q)
    elif SUR == 1:  # Sigmoid: alpha s (1 - s), s = sigmoid(alpha z)
        sig = 1.0 / (1.0 + tl.exp(-(p0 * z)))
        g = p0 * sig * (1.0 - sig)
    elif SUR == 2:  # Rectangular: 1[|z + offset| < width/2] / width; p1 = offset
        g = tl.where(tl.abs(z + p1) < 0.5 * p0, 1.0 / p0, 0.0)
    elif SUR == 3:  # Triangle: max(0, 1 - |z|/width) / width
        g = tl.maximum(1.0 - tl.abs(z) / p0, 0.0) / p0
    else:  # FastSigmoid: 1 / (slope |z| + 1)^2
        q = p0 * tl.abs(z) + 1.0
        g = 1.0 / (q * q)
    return g


@triton.jit(do_not_specialize=["steps", "n"])
def _lif_backward_kernel(
    h_ptr, x_ptr, gs_ptr, gh_ptr, gx_ptr, gk_ptr, c_ptr, steps, n, thr, vr, k, a, b, p0, p1,
    FORM: tl.constexpr, HARD: tl.constexpr, STRICT: tl.constexpr, DETACH: tl.constexpr,
    SUR: tl.constexpr, HAS_GS: tl.constexpr, HAS_GH: tl.constexpr, NEED_K: tl.constexpr,
    K_PTR: tl.constexpr, BLOCK: tl.constexpr,
):
    """BPTT over ``BLOCK`` elements, the C++ kernel's ``backward_range``: with ``d_t = dL/dh_t
    = gh_t + sg_t (gs_t + c_{t+1}) + r_{t+1}`` (``c`` through step t+1's reset, ``r`` through its
    charge), writes ``dL/dx`` [T, N] (``gx``'s dtype) and, with ``NEED_K``, this program's sum
    of ``dL/dk`` to ``gk[program]``. With ``K_PTR`` the constants ``(k, a, b)`` are read from
    ``c_ptr`` (float32 [3]; the scalar arguments are unused)."""
    if K_PTR:  # a tensor decay: its constants in device memory
        k = tl.load(c_ptr)
        a = tl.load(c_ptr + 1)
        b = tl.load(c_ptr + 2)
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    size = steps.to(tl.int64) * n
    offs += size - n  # the last step's row
    zero = tl.zeros([BLOCK], dtype=tl.float32)
    dn = zero  # d_{t+1}
    dun = zero  # snntorch: dL/du_{t+1}
    kacc = zero
    for _ in range(steps):
        # a lane's offset is lane + t n with lane < n: t > 0 iff offs >= n (elementwise
        # conditions: the interpreter cannot mix a scalar condition into a mask)
        has_prev = mask & (offs >= n)
        hi = tl.load(h_ptr + offs, mask=mask, other=0.0)
        sg = _surrogate_grad(hi - thr, p0, p1, SUR)
        gs = zero
        gh = zero
        if HAS_GS:
            gs = tl.load(gs_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_GH:
            gh = tl.load(gh_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if HARD or NEED_K:  # h_{t-1} (h_{-1} = vr) and whether it spiked
            hp = tl.load(h_ptr + offs - n, mask=has_prev, other=vr)
            if STRICT:
                fired_prev = has_prev & (hp > thr)
            else:
                fired_prev = has_prev & (hp >= thr)
        if FORM == 2:  # snntorch: u_t = x_t + k h_{t-1}, h_t = R(u_t, s_{t-1})
            if DETACH:
                d = gh + sg * gs + k * dun
            else:
                if HARD:  # dh_{t+1}/ds_t = vr - u_{t+1}
                    xn = tl.load(x_ptr + offs + n, mask=mask & (offs + n < size), other=0.0)
                    c = (vr - tl.fma(hi, k, xn.to(tl.float32))) * dn
                else:
                    c = -thr * dn
                d = gh + sg * (gs + c) + k * dun
            du = d
            if HARD:  # dh_t/du_t = 1 - s_{t-1}
                du = tl.where(fired_prev, 0.0, d)
            if NEED_K:  # du_t/dk = h_{t-1}
                kacc += du * hp
            gx = du
            dn = d
            dun = du
        else:
            if HARD:  # dv_{t+1}/ds_t = vr - h_t, dv_{t+1}/dh_t = 1 - s_t
                if STRICT:
                    r = tl.where(hi > thr, 0.0, 1.0)
                else:
                    r = tl.where(hi >= thr, 0.0, 1.0)
                if DETACH:
                    d = gh + sg * gs + a * r * dn
                else:
                    d = gh + sg * (gs + a * (vr - hi) * dn) + a * r * dn
            else:  # dv_{t+1}/ds_t = -thr, dv_{t+1}/dh_t = 1
                if DETACH:
                    d = gh + sg * gs + a * dn
                else:
                    d = gh + sg * (gs - a * thr * dn) + a * dn
            gx = b * d
            dn = d
            if NEED_K and FORM != 4:  # dh_t/dk from v_t = R(h_{t-1}, s_{t-1}), v_0 = vr
                if HARD:
                    v = tl.where(fired_prev, vr, hp)
                else:
                    v = tl.where(fired_prev, hp - thr, hp)
                if FORM == 0:  # x + vr - v
                    xi = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                    w = xi + vr - v
                elif FORM == 1:  # vr - v
                    w = vr - v
                else:  # fsvae: v
                    w = v
                kacc += d * w
        if gx_ptr.dtype.element_ty == tl.bfloat16:
            gx = _round_bf16(gx)
        tl.store(gx_ptr + offs, gx.to(gx_ptr.dtype.element_ty), mask=mask)
        offs -= n
    if NEED_K:
        tl.store(gk_ptr + pid, tl.sum(tl.where(mask, kacc, 0.0), axis=0))


def unsupported(x: Tensor, spec) -> str | None:
    """Why the kernels cannot run on ``x`` [T, N] with ``spec`` (a
    :class:`~snngen.spiking.kernels.NeuronSpec`), or None when they can."""
    if x.device.type != "cuda" and not (x.device.type == "cpu" and INTERPRETED):
        return (
            f"the input is on {x.device} (the Triton LIF kernels run on CUDA, or on CPU under "
            "Triton's interpreter, TRITON_INTERPRET=1 set before snngen imports them)"
        )
    if x.dtype not in DTYPES:
        return f"dtype {x.dtype} (the Triton LIF kernels take float32, bfloat16 and float16)"
    if type(spec.surrogate) not in _lif_cpp._SURROGATE_CODES:
        return (
            f"surrogate {type(spec.surrogate).__name__} has no Triton derivative (supported: "
            f"{', '.join(c.__name__ for c in _lif_cpp._SURROGATE_CODES)})"
        )
    return None


def _grid(n: int, block: int) -> tuple[int]:
    return (max(1, triton.cdiv(n, block)),)


def _device_constants(values: tuple[Tensor | float, ...], device: torch.device) -> Tensor:
    """The float32 [len(values)] tensor on ``device`` of ``values`` (floats and 0-dim tensors),
    each rounded once to float32 as a float kernel argument is, built with tensor ops only: no
    value is read on the host (no synchronisation with the device)."""
    wide = [
        v.to(device=device, dtype=torch.float64) if isinstance(v, Tensor)
        else torch.full((), v, dtype=torch.float64, device=device)
        for v in values
    ]
    return torch.stack(wide).float()


def forward_constants(spec, k: Tensor, device: torch.device) -> Tensor:
    """``(k, 1 - k, k v_r)`` of a tensor decay as a float32 [3] tensor on ``device`` for the
    forward kernel's ``c_ptr``: the float32 tensor arithmetic of
    :func:`snngen.spiking._lif_cpp.forward_constants` on ``k.float()`` (the state is float32,
    whatever the decay's dtype), the same values without reading them on the host."""
    k = k.float()
    return _device_constants((k, 1.0 - k, k * spec.vr), device)


def forward(
    x: Tensor, k: Tensor | float, spec, block: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``(spikes, h, membrane)`` of ``x`` [T, N] (contiguous): spikes and membrane in ``x``'s
    dtype, ``h`` the float32 membrane to save for :func:`backward` (``membrane`` is ``h``
    itself for a float32 input). ``block``: elements per program (default :data:`BLOCK`)."""
    steps, n = x.shape
    block = block or BLOCK
    consts = None
    if isinstance(k, Tensor):  # a tensor decay (learnable): its constants stay on the device
        consts = forward_constants(spec, k, x.device)
        kf = a1 = kvr = 0.0
        small = False  # decided in the kernel
    else:
        kf, a1, kvr = _lif_cpp.forward_constants(spec, k)
        small = abs(float(torch.tensor(kf, dtype=torch.float32))) < 0.5  # ATen tests the float32 k
    spikes = torch.empty_like(x)
    h = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    mem = h if x.dtype == torch.float32 else torch.empty_like(x)
    if x.numel() == 0:
        return spikes, h, mem
    _lif_forward_kernel[_grid(n, block)](
        x, spikes, h, mem, h if consts is None else consts, steps, n, float(spec.v_threshold),
        spec.vr, kf, a1, kvr, FORM=_lif_cpp._FORM_CODES[(spec.form, bool(spec.decay_input))],
        HARD=spec.hard, STRICT=bool(spec.strict_threshold), SMALL=small, STORE_M=mem is not h,
        K_PTR=consts is not None, BLOCK=block,
    )
    return spikes, h, mem


def backward(
    h: Tensor, x: Tensor | None, k: Tensor | float, a: Tensor | float, b: Tensor | float,
    grad_s: Tensor | None, grad_h: Tensor | None, spec, need_k: bool, dtype: torch.dtype,
    block: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """BPTT from the saved float32 ``h`` [T, N] (and ``x`` where needed); ``(a, b)`` are
    ``dh_t/dv_t`` and ``dh_t/dx_t`` (:func:`snngen.spiking.kernels._coefficients`). ``k``,
    ``a`` and ``b`` are floats or (a tensor decay) 0-dim tensors, which go to the kernel as a
    float32 device tensor without being read on the host; either way each is rounded once to
    float32 (give tensors in float64 for a float's rounding). Returns ``(dL/dx [T, N] in dtype,
    dL/dk as a float64 0-dim tensor, or None unless need_k)``; upstream gradients may have any
    strides (made contiguous)."""
    steps, n = h.shape
    block = block or BLOCK
    need_k = bool(need_k) and spec.form != "if"
    sur, p0, p1 = _lif_cpp._surrogate_params(spec.surrogate)
    gs = None if grad_s is None else grad_s.contiguous()
    gh = None if grad_h is None else grad_h.contiguous()
    grid = _grid(n, block)
    gx = torch.empty(h.shape, dtype=dtype, device=h.device)
    gk = torch.zeros(grid[0] if need_k else 1, dtype=torch.float32, device=h.device)
    consts = None
    if any(isinstance(v, Tensor) for v in (k, a, b)):
        consts = _device_constants((k, a, b), h.device)
        k = a = b = 0.0
    if h.numel() > 0:
        _lif_backward_kernel[grid](
            h, h if x is None else x, h if gs is None else gs, h if gh is None else gh, gx, gk,
            h if consts is None else consts, steps, n, float(spec.v_threshold), spec.vr,
            float(k), float(a), float(b), p0, p1,
            FORM=_lif_cpp._FORM_CODES[(spec.form, bool(spec.decay_input))], HARD=spec.hard,
            STRICT=bool(spec.strict_threshold), DETACH=bool(spec.detach_reset), SUR=sur,
            HAS_GS=gs is not None, HAS_GH=gh is not None, NEED_K=need_k,
            K_PTR=consts is not None, BLOCK=block,
        )
    return gx, (gk.sum(dtype=torch.float64) if need_k else None)


#: whether the kernels run under Triton's interpreter (TRITON_INTERPRET=1 when this module was
#: imported): then they take CPU tensors
INTERPRETED = type(_lif_forward_kernel).__name__ == "InterpretedFunction"
