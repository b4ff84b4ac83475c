"""DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b), orders 1-3.

The diffusion ODE is solved in ``lambda = log(alpha / sigma)`` with the linear part exact
(DPM-Solver Prop. 3.1, Eq. 3.4)::

    x_t = alpha_t / alpha_s x_s - alpha_t int_{lambda_s}^{lambda_t} e^{-lambda} eps(x, lambda) dl
        (noise prediction, "dpmsolver")
    x_t = sigma_t / sigma_s x_s + sigma_t int_{lambda_s}^{lambda_t} e^{lambda} x0(x, lambda) dl
        (data prediction, "dpmsolver++", DPM-Solver++ Sec. 4)

and the network term is Taylor-expanded to order k. With ``h = lambda_t - lambda_s``:
order 1 is DDIM (DPM-Solver-1, Sec. 3.3; DPM-Solver++-1); the single-step solvers of order 2
and 3 are DPM-Solver's Algorithms 1-2 (``r1 = 1/2``; ``r1 = 1/3, r2 = 2/3``) and DPM-Solver++(2S)
(Algorithm 1) with its order-3 analogue; the multistep ones reuse earlier network outputs
(DPM-Solver++(2M), Algorithm 2, and the order-3 multistep rule of the DPM-Solver code). As in
the DPM-Solver code, a single step's intermediate points split it into equal parts of the time
spacing's own variable: ``lambda`` for ``"logSNR"`` (the ratios above), ``t`` or ``sqrt(t)``
for ``"time_uniform"`` / ``"time_quadratic"`` (then ``r1``, ``r2`` follow from ``lambda``).

Time is the DPM-Solver "discrete" schedule of :class:`NoiseSchedule`: the solver works between
model times ``N-1`` (``t = 1``) and ``0`` (``t = 1/N``) and calls the network at the
corresponding, generally fractional, model times (floating tensor of the samples' dtype;
``model_time="round"`` rounds them to integer ``torch.long`` steps for networks that can only
embed integers, an approximation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from snngen.diffusion._common import (
    EpsModel,
    StepCallback,
    call_eps_model,
    check_choice,
    initial_noise,
    progress_iter,
)
from snngen.diffusion.schedule import NoiseSchedule
from snngen.errors import ConfigError

ALGORITHMS = ("dpmsolver++", "dpmsolver")
METHODS = ("multistep", "singlestep")
SKIP_TYPES = ("logSNR", "time_uniform", "time_quadratic")
MODEL_TIMES = ("float", "round")


@dataclass(frozen=True)
class _Point:
    """Schedule quantities at one model time ``n`` (Python floats)."""

    n: float
    alpha: float
    sigma: float
    lam: float


def _point(schedule: NoiseSchedule, n: float) -> _Point:
    log_alpha = float(schedule.log_alpha_at(n))
    return _Point(
        n=n,
        alpha=math.exp(log_alpha),
        sigma=math.sqrt(-math.expm1(2 * log_alpha)),
        lam=float(schedule.lambda_at(n)),
    )


def _snap(n: float) -> float:
    """Round a model time to the nearest integer when it is one up to floating error."""
    r = round(n)
    return float(r) if abs(n - r) < 1e-7 else float(n)


def time_grid(
    schedule: NoiseSchedule,
    steps: int,
    skip_type: str = "logSNR",
    t_start: float = 1.0,
    t_end: float | None = None,
) -> list[float]:
    """``steps + 1`` decreasing model times from ``t_start`` to ``t_end`` (continuous times).

    ``"logSNR"``: uniform in ``lambda``; ``"time_uniform"``: uniform in ``t``;
    ``"time_quadratic"``: uniform in ``sqrt(t)`` (DPM-Solver Sec. 3.4 and its code).
    ``t_end`` defaults to ``1/N`` (model time 0).
    """
    check_choice("skip_type", skip_type, SKIP_TYPES)
    n_total = schedule.num_steps
    t_end = 1.0 / n_total if t_end is None else float(t_end)
    if not (1.0 / n_total - 1e-12 <= t_end < t_start <= 1.0 + 1e-12):
        raise ValueError(f"need 1/N <= t_end < t_start <= 1, got t_start={t_start}, t_end={t_end}")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if skip_type == "logSNR":
        lam = torch.linspace(
            float(schedule.marginal_lambda(t_start)),
            float(schedule.marginal_lambda(t_end)),
            steps + 1,
            dtype=torch.float64,
        )
        grid = schedule.model_time_of_lambda(lam)
    elif skip_type == "time_uniform":
        grid = schedule.model_time(torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64))
    else:
        root = torch.linspace(math.sqrt(t_start), math.sqrt(t_end), steps + 1, dtype=torch.float64)
        grid = schedule.model_time(root**2)
    grid = grid.clamp(0.0, n_total - 1.0)
    return [_snap(float(v)) for v in grid]


def singlestep_orders(steps: int, order: int) -> list[int]:
    """Orders of the outer steps of single-step DPM-Solver using exactly ``steps`` network calls
    (the "DPM-Solver-fast" split of the DPM-Solver code: mostly ``order``, then lower)."""
    if order == 3:
        k = steps // 3 + 1
        if steps % 3 == 0:
            return [3] * (k - 2) + [2, 1]
        return [3] * (k - 1) + ([1] if steps % 3 == 1 else [2])
    if order == 2:
        return [2] * (steps // 2) + ([1] if steps % 2 else [])
    return [1] * steps


class _Model:
    """The network seen by the solver: noise or data prediction at a model time."""

    def __init__(
        self,
        eps_model: EpsModel,
        schedule: NoiseSchedule,
        *,
        data_pred: bool,
        model_time: str,
        clip_denoised: bool,
    ) -> None:
        self.eps_model, self.schedule = eps_model, schedule
        self.data_pred, self.round = data_pred, model_time == "round"
        self.clip_denoised = clip_denoised
        self.calls = 0

    def eps(self, x: Tensor, p: _Point) -> Tensor:
        self.calls += 1
        t = round(p.n) if self.round else p.n
        return call_eps_model(self.eps_model, x, t, integer=self.round)

    def x0(self, x: Tensor, p: _Point) -> Tensor:
        x0 = (x - p.sigma * self.eps(x, p)) / p.alpha
        return x0.clamp(-1.0, 1.0) if self.clip_denoised else x0

    def __call__(self, x: Tensor, p: _Point) -> Tensor:
        """``x0`` for DPM-Solver++, ``eps`` for DPM-Solver ``[B, ...]``."""
        return self.x0(x, p) if self.data_pred else self.eps(x, p)

    def x0_of(self, x: Tensor, m: Tensor, p: _Point) -> Tensor:
        """The ``x0`` of an output ``m = self(x, p)`` (no network call)."""
        return m if self.data_pred else (x - p.sigma * m) / p.alpha


# ----------------------------------------------------------------------------------- updates
def first_order_update(x: Tensor, m_s: Tensor, s: _Point, t: _Point, data_pred: bool) -> Tensor:
    """DPM-Solver-1 (Lu et al. 2022, Sec. 3.3) / DPM-Solver++-1: exactly DDIM with eta = 0.

    ``x_t = alpha_t / alpha_s x - sigma_t (e^h - 1) eps_s`` (noise prediction) or
    ``x_t = sigma_t / sigma_s x - alpha_t (e^{-h} - 1) x0_s`` (data prediction).
    """
    h = t.lam - s.lam
    if data_pred:
        return (t.sigma / s.sigma) * x - (t.alpha * math.expm1(-h)) * m_s
    # sigma_t (e^h - 1) = alpha_t sigma_s / alpha_s - sigma_t, written so as to equal DDIM
    return (t.alpha / s.alpha) * x - (t.alpha * s.sigma / s.alpha - t.sigma) * m_s


def inner_ratios(
    schedule: NoiseSchedule, s: _Point, t: _Point, order: int, skip_type: str = "logSNR"
) -> tuple[float, ...]:
    """``(r1,)`` or ``(r1, r2)``: where a single step of ``order`` from ``s`` to ``t`` puts its
    intermediate points, as fractions of ``h = lambda_t - lambda_s``. As the DPM-Solver code:
    ``order`` equal parts of the step in ``skip_type``'s variable (``lambda``: ``1/2`` or
    ``1/3, 2/3``; ``t``; ``sqrt(t)``). Empty for order 1."""
    if order == 1:
        return ()
    if skip_type == "logSNR":
        return (0.5,) if order == 2 else (1.0 / 3.0, 2.0 / 3.0)
    a, b = (float(schedule.continuous_time(p.n)) for p in (s, t))
    if skip_type == "time_uniform":
        inner = torch.linspace(a, b, order + 1, dtype=torch.float64)
    else:
        inner = torch.linspace(math.sqrt(a), math.sqrt(b), order + 1, dtype=torch.float64) ** 2
    lam = schedule.marginal_lambda(inner)
    return tuple(float((lam[i] - lam[0]) / (lam[-1] - lam[0])) for i in range(1, order))


def singlestep_update(
    model: _Model,
    x: Tensor,
    m_s: Tensor,
    s: _Point,
    t: _Point,
    order: int,
    ratios: Sequence[float] | None = None,
) -> Tensor:
    """One single-step update of ``order`` 1-3 from ``s`` to ``t`` (``m_s = model(x, s)``);
    ``ratios``: ``(r1,)`` / ``(r1, r2)`` (default: the logSNR ones, :func:`inner_ratios`)."""
    if order == 1:
        return first_order_update(x, m_s, s, t, model.data_pred)
    sched, h = model.schedule, t.lam - s.lam
    r1, r2 = (*(ratios or inner_ratios(sched, s, t, order)), None)[:2]
    s1 = _point(sched, _snap(float(sched.model_time_of_lambda(s.lam + r1 * h))))
    x_s1 = first_order_update(x, m_s, s, s1, model.data_pred)
    d1 = model(x_s1, s1) - m_s
    if order == 2:
        if model.data_pred:  # DPM-Solver++(2S), Algorithm 1
            return (
                first_order_update(x, m_s, s, t, True) - (t.alpha * math.expm1(-h) / (2 * r1)) * d1
            )
        # DPM-Solver-2, Algorithm 1
        return first_order_update(x, m_s, s, t, False) - (t.sigma * math.expm1(h) / (2 * r1)) * d1
    s2 = _point(sched, _snap(float(sched.model_time_of_lambda(s.lam + r2 * h))))
    if model.data_pred:
        phi22 = math.expm1(-r2 * h) / (r2 * h) + 1.0
        x_s2 = first_order_update(x, m_s, s, s2, True) + (r2 / r1 * s2.alpha * phi22) * d1
        d2 = model(x_s2, s2) - m_s
        phi2 = math.expm1(-h) / h + 1.0
        return first_order_update(x, m_s, s, t, True) + (t.alpha * phi2 / r2) * d2
    # DPM-Solver-3, Algorithm 2
    phi22 = math.expm1(r2 * h) / (r2 * h) - 1.0
    x_s2 = first_order_update(x, m_s, s, s2, False) - (r2 / r1 * s2.sigma * phi22) * d1
    d2 = model(x_s2, s2) - m_s
    phi2 = math.expm1(h) / h - 1.0
    return first_order_update(x, m_s, s, t, False) - (t.sigma * phi2 / r2) * d2


def multistep_update(
    x: Tensor,
    history: list[tuple[_Point, Tensor]],
    t: _Point,
    order: int,
    data_pred: bool,
    reference_third_order: bool = False,
) -> Tensor:
    """One multistep update of ``order`` 1-3 to ``t`` from the last ``order`` ``(point, output)``
    pairs in ``history`` (oldest first); the last pair is the current point ``x`` is at.

    Order 3 uses the backward differences ``D1 ~ h m'`` and ``D2 ~ h^2 m'' / 2`` of the DPM-Solver
    code; the Taylor expansion of the exact solution then weighs ``D2`` by ``2 phi_3`` (local
    error ``O(h^4)``, global order 3). The DPM-Solver / diffusers code weighs it by ``phi_3``
    (local error ``O(h^3)``): ``reference_third_order=True`` reproduces that.
    """
    p0, m0 = history[-1]
    if order == 1:
        return first_order_update(x, m0, p0, t, data_pred)
    p1, m1 = history[-2]
    h, h0 = t.lam - p0.lam, p0.lam - p1.lam
    r0 = h0 / h
    d1_0 = (m0 - m1) / r0
    base = first_order_update(x, m0, p0, t, data_pred)
    if order == 2:  # DPM-Solver++(2M), Algorithm 2 (and its noise-prediction twin)
        if data_pred:
            return base - (0.5 * t.alpha * math.expm1(-h)) * d1_0
        return base - (0.5 * t.sigma * math.expm1(h)) * d1_0
    p2, m2 = history[-3]
    r1 = (p1.lam - p2.lam) / h
    d1_1 = (m1 - m2) / r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    w2 = 1.0 if reference_third_order else 2.0
    if data_pred:
        phi2 = math.expm1(-h) / h + 1.0
        phi3 = phi2 / h - 0.5
        return base + (t.alpha * phi2) * d1 - (w2 * t.alpha * phi3) * d2
    phi2 = math.expm1(h) / h - 1.0
    phi3 = phi2 / h - 0.5
    return base - (t.sigma * phi2) * d1 - (w2 * t.sigma * phi3) * d2


# ----------------------------------------------------------------------------------- sampler
@torch.no_grad()
def dpm_solver_sample(
    eps_model: EpsModel,
    schedule: NoiseSchedule,
    x_T: Tensor | Sequence[int],
    steps: int = 20,
    *,
    order: int = 2,
    method: str = "multistep",
    algorithm: str = "dpmsolver++",
    skip_type: str = "logSNR",
    t_start: float = 1.0,
    t_end: float | None = None,
    timesteps: Sequence[float] | Tensor | None = None,
    lower_order_final: bool = True,
    reference_third_order: bool = False,
    denoise_to_zero: bool = False,
    clip_denoised: bool = False,
    model_time: str = "float",
    generator: torch.Generator | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Sample with DPM-Solver / DPM-Solver++.

    Args:
        eps_model: ``eps_model(x_t [B, ...], t [B]) -> eps [B, ...]`` with ``t`` a floating
            (generally fractional) model time in ``[0, N-1]``, or ``torch.long`` with
            ``model_time="round"``.
        schedule: the training noise schedule (its DPM-Solver "discrete" continuous-time view).
        x_T: starting noise ``[B, ...]`` or a shape to draw.
        steps: number of network calls (plus one with ``denoise_to_zero``).
        order: 1, 2 or 3 (1 equals DDIM with eta = 0).
        method: ``"multistep"`` (reuses past outputs) or ``"singlestep"``.
        algorithm: ``"dpmsolver++"`` (data prediction, Lu et al. 2022b) or ``"dpmsolver"``
            (noise prediction, Lu et al. 2022).
        skip_type: time steps uniform in ``"logSNR"``, ``"time_uniform"`` or
            ``"time_quadratic"`` between the continuous times ``t_start`` (default 1, model
            time ``N-1``) and ``t_end`` (default ``1/N``, model time 0).
        timesteps: explicit decreasing model times in ``[0, N-1]`` (the grid including both
            ends); overrides steps/skip_type. With ``method="singlestep"`` every interval then
            uses ``order``, with the logSNR intermediate points.
        lower_order_final: multistep only: lower the order of the final steps when
            ``steps < 10`` (as the DPM-Solver code; stabilises very few steps).
        reference_third_order: multistep order 3 only: use the DPM-Solver code's coefficient of
            the second difference (half the Taylor one; see :func:`multistep_update`).
        denoise_to_zero: finish with one more call that returns the predicted ``x0`` at the last
            time (then the output is clean data, as DDIM's last step).
        clip_denoised: clamp the predicted ``x0`` to ``[-1, 1]`` (DPM-Solver++ only).
        model_time: ``"float"`` or ``"round"`` (see module docstring).
        generator: draws the initial noise when ``x_T`` is a shape (the solver is deterministic).
        progress: show a progress bar.
        callback: ``callback(i, t, x_t, x0_pred)`` at each point of the (outer) time grid
            where the network is called, ``t`` its model time, then at the end (``t`` = the
            last model time, or ``-1`` with ``denoise_to_zero``;
            :data:`~snngen.diffusion._common.StepCallback`).

    Returns:
        the sample at the last time ``[B, ...]`` (``x0`` with ``denoise_to_zero``).
    """
    check_choice("algorithm", algorithm, ALGORITHMS)
    check_choice("method", method, METHODS)
    check_choice("model_time", model_time, MODEL_TIMES)
    if order not in (1, 2, 3):
        raise ConfigError(f"order must be 1, 2 or 3, got {order}")
    model = _Model(
        eps_model,
        schedule,
        data_pred=algorithm == "dpmsolver++",
        model_time=model_time,
        clip_denoised=clip_denoised and algorithm == "dpmsolver++",
    )
    x = initial_noise(x_T, generator=generator, device=device, dtype=dtype)
    if method == "multistep":
        grid = _grid(schedule, steps, skip_type, t_start, t_end, timesteps)
        x = _multistep(model, x, grid, order, lower_order_final, reference_third_order, progress,
                       callback)
    else:
        grid, orders = _singlestep_plan(
            schedule, steps, order, skip_type, t_start, t_end, timesteps
        )
        inner = skip_type if timesteps is None else "logSNR"
        x = _singlestep(model, x, grid, orders, progress, callback, inner)
    end, n_frames = grid[-1], len(grid) - 1
    if denoise_to_zero:
        x_end = x
        x = model.x0(x, _point(schedule, grid[-1]))
        if callback is not None:
            callback(n_frames, end, x_end, x)
        end, n_frames = -1.0, n_frames + 1
    if callback is not None:
        callback(n_frames, end, x, x)
    return x


def _grid(
    schedule: NoiseSchedule,
    steps: int,
    skip_type: str,
    t_start: float,
    t_end: float | None,
    timesteps: Sequence[float] | Tensor | None,
) -> list[float]:
    if timesteps is None:
        return time_grid(schedule, steps, skip_type, t_start, t_end)
    grid = [_snap(float(v)) for v in np.asarray(timesteps, dtype=np.float64).reshape(-1)]
    ok = len(grid) >= 2 and all(a > b for a, b in zip(grid, grid[1:], strict=False))
    if not ok or grid[-1] < 0 or grid[0] > schedule.num_steps - 1:
        raise ValueError(
            "timesteps must be >= 2 strictly decreasing model times in "
            f"[0, {schedule.num_steps - 1}], got {grid[:5]}..."
        )
    return grid


def _singlestep_plan(
    schedule: NoiseSchedule,
    steps: int,
    order: int,
    skip_type: str,
    t_start: float,
    t_end: float | None,
    timesteps: Sequence[float] | Tensor | None,
) -> tuple[list[float], list[int]]:
    """Outer grid and per-interval orders of single-step DPM-Solver (DPM-Solver code's plan)."""
    if timesteps is not None:
        grid = _grid(schedule, steps, skip_type, t_start, t_end, timesteps)
        return grid, [order] * (len(grid) - 1)
    orders = singlestep_orders(steps, order)
    if skip_type == "logSNR":
        return time_grid(schedule, len(orders), skip_type, t_start, t_end), orders
    fine = time_grid(schedule, steps, skip_type, t_start, t_end)
    return [fine[i] for i in np.cumsum([0] + orders)], orders


def _multistep(
    model: _Model,
    x: Tensor,
    grid: list[float],
    order: int,
    lower_order_final: bool,
    reference_third_order: bool,
    progress: bool,
    callback: StepCallback | None = None,
) -> Tensor:
    points = [_point(model.schedule, n) for n in grid]
    n_steps = len(points) - 1
    history = [(points[0], model(x, points[0]))]
    if callback is not None:
        callback(0, points[0].n, x, model.x0_of(x, history[-1][1], points[0]))
    for step in progress_iter(
        range(1, n_steps + 1), enabled=progress, desc="dpm-solver", total=n_steps
    ):
        if step < order:  # warm-up: not enough history yet
            step_order = step
        elif lower_order_final and n_steps < 10:
            step_order = min(order, n_steps + 1 - step)
        else:
            step_order = order
        x = multistep_update(
            x, history, points[step], step_order, model.data_pred, reference_third_order
        )
        if step < n_steps:
            history = (history + [(points[step], model(x, points[step]))])[-order:]
            if callback is not None:
                callback(step, points[step].n, x, model.x0_of(x, history[-1][1], points[step]))
    return x


def _singlestep(
    model: _Model,
    x: Tensor,
    grid: list[float],
    orders: list[int],
    progress: bool,
    callback: StepCallback | None = None,
    skip_type: str = "logSNR",
) -> Tensor:
    points = [_point(model.schedule, n) for n in grid]
    for i in progress_iter(
        range(len(orders)), enabled=progress, desc="dpm-solver", total=len(orders)
    ):
        s, t = points[i], points[i + 1]
        m_s = model(x, s)
        if callback is not None:
            callback(i, s.n, x, model.x0_of(x, m_s, s))
        ratios = inner_ratios(model.schedule, s, t, orders[i], skip_type)
        x = singlestep_update(model, x, m_s, s, t, orders[i], ratios)
    return x
