"""Analytic-DPM (Bao, Li, Zhu & Zhang 2022): the analytic optimal reverse variance.

The reverse process keeps the generalized (DDIM-family) mean on a trajectory ``tau`` and picks
the variance that minimises the KL to the forward process. For one step ``n -> s`` with
``lambda^2`` the variance of the forward posterior ``q(x_s | x_n, x_0)`` (``lambda^2 = beta
tilde`` for DDPM-like trajectories, ``0`` for DDIM-like ones) the optimum is (Theorem 1, with
the multi-step generalisation of their Sec. 5 and Appendix)::

    sigma*^2 = lambda^2 + (sqrt(bb_n / a_ns) - sqrt(bb_s - lambda^2))^2 (1 - Gamma_n)
    Gamma_n  = E_q ||eps*(x_n, n)||^2 / d  = bb_n E ||grad log q_n(x_n)||^2 / d

with ``bb = 1 - alpha_bar`` and ``a_ns = alpha_bar_n / alpha_bar_s``. Written with the
covariance of ``x_0`` given ``x_n``, ``E tr Cov[x0 | x_n] / d = bb_n / alpha_bar_n (1 - Gamma_n)``,
which Theorem 2 bounds: ``Gamma_n <= 1`` (so ``sigma*^2 >= lambda^2``) and, for data in
``[a, b]``, ``E tr Cov[x0 | x_n] / d <= ((b - a) / 2)^2``. Both clips are applied here (the
second only when ``data_range`` is given; the sampler's default is images in ``[-1, 1]``, as
the reference code). ``Gamma_n`` is estimated by Monte Carlo over data (:func:`estimate_gamma`,
their Eq. for Gamma_n with M samples; the reference uses the full training set) or passed in
precomputed.

As the reference code (``baofff/Analytic-DPM``, ``reverse_ddpm_ms_eps`` /
``reverse_ddim_ms_eps``): the predicted ``x0`` is clamped to ``[-1, 1]`` in the mean; on a
DDPM-like trajectory the mean is the forward posterior's, ``coeff1 clamp(x0) + coeff2 x_n``; on
a DDIM-like one it is ``sqrt(ab_s) clamp(x0) + sqrt(bb_s - lambda^2) eps``; the trajectory is
their ``linear`` one (spacing ``"analytic-dpm"``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

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
    randn_like,
)
from snngen.diffusion.ddim import ddim_sigma2, generalized_step
from snngen.diffusion.ddpm import posterior_mean, predict_x0
from snngen.diffusion.schedule import NoiseSchedule, check_timesteps, sampling_timesteps

TRAJECTORIES = ("ddpm", "ddim")


def _batches(data: Tensor | Iterable, batch_size: int, max_batches: int | None) -> Iterator[Tensor]:
    """Yield ``x0`` batches from a tensor ``[M, ...]`` or an iterable of batches (a DataLoader;
    a ``(x, y, ..)`` tuple/list yields ``x``)."""
    chunks = data.split(batch_size) if isinstance(data, Tensor) else data
    for i, batch in enumerate(chunks):
        if max_batches is not None and i >= max_batches:
            return
        if isinstance(batch, (list, tuple)):
            batch = batch[0]
        if not isinstance(batch, Tensor):
            raise TypeError(f"data must yield tensors (or tuples of them), got {type(batch)}")
        yield batch


@torch.no_grad()
def estimate_gamma(
    eps_model: EpsModel,
    schedule: NoiseSchedule,
    data: Tensor | Iterable,
    *,
    timesteps: Sequence[int] | Tensor | None = None,
    batch_size: int = 256,
    max_batches: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """Monte Carlo estimate of ``Gamma_n = E ||eps_model(x_n, n)||^2 / d`` (the score moment).

    ``x_n = q_sample(x0, n, eps)`` with ``x0`` from ``data`` (a tensor ``[M, ...]`` split into
    ``batch_size`` chunks, or an iterable of batches such as a DataLoader; at most
    ``max_batches``) and fresh noise from ``generator`` for each step. The data are read once;
    every requested timestep is evaluated on every batch.

    Args:
        timesteps: the steps to estimate (default: all ``N``; a sampler only needs those of its
            trajectory, which is much cheaper). Repeats are allowed.

    Returns:
        float64 ``[N]``; ``NaN`` at the steps not estimated.
    """
    if timesteps is None:
        steps = list(range(schedule.num_steps))
    else:  # repeated steps (e.g. the union of two trajectories) are estimated once
        steps = check_timesteps(schedule, sorted(set(torch.as_tensor(timesteps).tolist())))
    sums = torch.zeros(schedule.num_steps, dtype=torch.float64)
    count = 0
    for x0 in progress_iter(
        _batches(data, batch_size, max_batches), enabled=progress, desc="gamma", total=None
    ):
        x0 = x0.to(device=device or x0.device)
        x0 = x0 if x0.is_floating_point() else x0.float()
        for n in steps:
            x_n = schedule.q_sample(x0, n, randn_like(x0, generator))
            eps = call_eps_model(eps_model, x_n, n, integer=True)
            sums[n] += eps.flatten(1).double().pow(2).mean(1).sum().cpu()
        count += x0.shape[0]
    if count == 0:
        raise ValueError("data yielded no samples to estimate Gamma from")
    gamma = torch.full((schedule.num_steps,), float("nan"), dtype=torch.float64)
    gamma[steps] = sums[steps] / count
    return gamma


def _as_gamma(schedule: NoiseSchedule, gamma: Tensor | np.ndarray | Sequence[float]) -> Tensor:
    gamma = torch.as_tensor(np.asarray(gamma, dtype=np.float64)).reshape(-1)
    if gamma.numel() != schedule.num_steps:
        raise ValueError(
            f"gamma must have one value per training step ({schedule.num_steps}), "
            f"got {gamma.numel()}"
        )
    return gamma


def analytic_variance(
    schedule: NoiseSchedule,
    gamma: Tensor | np.ndarray | Sequence[float],
    timesteps: Sequence[int],
    *,
    eta: float = 1.0,
    data_range: tuple[float, float] | None = None,
    clip_sigma_steps: int = 0,
    clip_pixel: float = 2.0,
) -> Tensor:
    """The optimal reverse variances ``sigma*^2`` of a trajectory, float64 ``[S]``.

    Args:
        gamma: ``Gamma_n`` per training step ``[N]`` (only the trajectory's entries are read).
        timesteps: the trajectory, decreasing; step ``i`` goes from ``timesteps[i]`` to
            ``timesteps[i+1]`` and the last one to clean data (variance 0: it returns the mean).
        eta: ``lambda^2 = eta^2 beta tilde`` (DDIM Eq. 16); 1 = DDPM-like (Analytic-DPM),
            0 = DDIM-like (Analytic-DDIM).
        data_range: ``(a, b)`` bounds of the data, e.g. ``(-1, 1)`` for images; enables the
            upper bound of Theorem 2.
        clip_sigma_steps: clip ``sigma`` of the last ``k`` noisy steps so that ``E|sigma z|``
            stays below ``clip_pixel`` pixel widths of an 8-bit image in ``[-1, 1]`` (their
            sampling trick; 0 = off).
    """
    gamma = _as_gamma(schedule, gamma)
    taus = [int(n) for n in timesteps]
    bad = [n for n in taus if not math.isfinite(float(gamma[n]))]
    if bad:
        raise ValueError(
            f"gamma is missing (NaN) at timesteps {bad[:10]}{'...' if len(bad) > 10 else ''}; "
            "estimate it there with estimate_gamma(..., timesteps=...)"
        )
    sigma2 = torch.zeros(len(taus), dtype=torch.float64)
    for i, (n, s) in enumerate(zip(taus, taus[1:] + [-1], strict=True)):
        if s < 0:
            break
        sigma2[i] = _optimal_sigma2(
            schedule.alpha_bar(n), schedule.alpha_bar(s), float(gamma[n]), eta, data_range
        )
    noisy = len(taus) - 1
    if clip_sigma_steps > 0:
        threshold = (clip_pixel * 2.0 / 255.0 * math.sqrt(math.pi / 2.0)) ** 2
        lo = max(noisy - clip_sigma_steps, 0)
        sigma2[lo:noisy] = sigma2[lo:noisy].clamp(max=threshold)
    return sigma2


def _optimal_sigma2(
    ab_n: float,
    ab_s: float,
    gamma_n: float,
    eta: float,
    data_range: tuple[float, float] | None,
) -> float:
    """``sigma*^2`` of one step ``n -> s`` (Theorem 1, clipped by Theorem 2)."""
    lambda2 = ddim_sigma2(ab_n, ab_s, eta)
    cov_x0 = (1.0 - ab_n) / ab_n * (1.0 - min(gamma_n, 1.0))  # E tr Cov[x0 | x_n] / d >= 0
    if data_range is not None:
        cov_x0 = min(cov_x0, ((data_range[1] - data_range[0]) / 2.0) ** 2)
    # x_s's mean is sqrt(ab_s) x0 + sqrt(bb_s - lambda2) (x_n - sqrt(ab_n) x0) / sqrt(bb_n);
    # its coefficient on x0 multiplies the posterior covariance of x0.
    coef = math.sqrt(ab_s) - math.sqrt(max(1.0 - ab_s - lambda2, 0.0) * ab_n / (1.0 - ab_n))
    return lambda2 + coef**2 * cov_x0


@torch.no_grad()
def analytic_dpm_sample(
    eps_model: EpsModel,
    schedule: NoiseSchedule,
    x_T: Tensor | Sequence[int],
    steps: int = 50,
    *,
    gamma: Tensor | np.ndarray | Sequence[float] | None = None,
    data: Tensor | Iterable | None = None,
    trajectory: str = "ddpm",
    eta: float | None = None,
    spacing: str = "analytic-dpm",
    timesteps: Sequence[int] | Tensor | None = None,
    data_range: tuple[float, float] | None = (-1.0, 1.0),
    clip_sigma_steps: int = 0,
    clip_pixel: float = 2.0,
    clip_denoised: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Sample with Analytic-DPM (``trajectory="ddpm"``) or Analytic-DDIM (``"ddim"``).

    Args:
        eps_model: ``eps_model(x_t [B, ...], t [B] long) -> eps [B, ...]``.
        schedule: the training noise schedule.
        x_T: starting noise ``[B, ...]`` or a shape to draw.
        steps: number of network calls.
        gamma: precomputed ``Gamma_n`` ``[N]`` (see :func:`estimate_gamma`); or give ``data``
            to estimate it here at the trajectory's steps (a tensor ``[M, ...]`` or a loader).
        trajectory: ``"ddpm"`` (``lambda^2 = beta tilde``, the posterior mean) or ``"ddim"``
            (``lambda^2 = 0``); ``eta`` overrides ``lambda^2 = eta^2 beta tilde`` (then the
            generalized DDIM mean is used for either).
        spacing: trajectory spacing, default ``"analytic-dpm"`` (the reference's ``linear``).
        timesteps: explicit trajectory (distinct ints in ``0..N-1``).
        data_range: variance clipping, see :func:`analytic_variance` (``None`` drops
            Theorem 2's upper bound).
        clip_sigma_steps: variance clipping, see :func:`analytic_variance` (the reference's
            CIFAR-10 runs use ``clip_sigma_steps=1``).
        clip_pixel: variance clipping, see :func:`analytic_variance`.
        clip_denoised: clamp the predicted ``x0`` to ``[-1, 1]`` in the mean (default, as the
            reference).
        callback: ``callback(i, t, x_t, x0_pred)`` at each step and at the end
            (:data:`~snngen.diffusion._common.StepCallback`).

    Returns:
        ``x_0`` ``[B, ...]`` (the last step returns the mean).
    """
    check_choice("trajectory", trajectory, TRAJECTORIES)
    posterior = trajectory == "ddpm" and eta is None
    eta = (1.0 if trajectory == "ddpm" else 0.0) if eta is None else float(eta)
    taus = sampling_timesteps(schedule, steps, spacing, timesteps)
    x = initial_noise(x_T, generator=generator, device=device, dtype=dtype)
    if gamma is None:
        if data is None:
            raise ValueError("analytic-dpm needs gamma (see estimate_gamma) or data to estimate it")
        gamma = estimate_gamma(
            eps_model, schedule, data, timesteps=taus, generator=generator, device=x.device
        )
    sigma2 = analytic_variance(
        schedule,
        gamma,
        taus,
        eta=eta,
        data_range=data_range,
        clip_sigma_steps=clip_sigma_steps,
        clip_pixel=clip_pixel,
    )
    steps_ = list(zip(taus, taus[1:] + [-1], sigma2.tolist(), strict=True))
    for i, (n, prev, var) in enumerate(progress_iter(
        steps_, enabled=progress, desc="analytic-dpm", total=len(steps_)
    )):
        ab, ab_prev = schedule.alpha_bar(n), schedule.alpha_bar(prev)
        eps = call_eps_model(eps_model, x, n, integer=True)
        if callback is not None:
            callback(i, float(n), x, predict_x0(x, eps, ab, clip_denoised))
        noise = randn_like(x, generator) if prev >= 0 else None  # drawn even for sigma 0
        if posterior:  # reference reverse_ddpm_ms_eps: coeff1 * clamp(x0) + coeff2 * x_n
            x0 = predict_x0(x, eps, ab, clip_denoised)
            x = posterior_mean(x, x0, ab, ab_prev)
            x = x if noise is None else x + math.sqrt(var) * noise
            continue
        x = generalized_step(x, eps, ab, ab_prev, lambda2=ddim_sigma2(ab, ab_prev, eta),
                             sigma2=var, noise=noise, clip_denoised=clip_denoised)  # fmt: skip
    if callback is not None:
        callback(len(steps_), -1.0, x, x)
    return x
