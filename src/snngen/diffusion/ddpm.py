"""DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), optionally on a respaced trajectory.

With ``steps < N`` the chain runs on a subsequence ``tau`` of the training steps, respaced as in
improved DDPM (Nichol & Dhariwal 2021, Sec. 4): the subsequence defines its own betas
``beta'_i = 1 - alpha_bar_{tau_i} / alpha_bar_{tau_{i-1}}`` and the usual posterior formulas
are applied to them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
from snngen.diffusion.schedule import NoiseSchedule, sampling_timesteps

VARIANCES = ("fixedlarge", "fixedsmall")


def predict_x0(x: Tensor, eps: Tensor, alpha_bar: float, clip_denoised: bool = False) -> Tensor:
    """``x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)`` (DDPM Eq. 4 solved for x0);
    clamped to ``[-1, 1]`` when ``clip_denoised``. Shapes ``[B, ...]``."""
    x0 = (x - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)
    return x0.clamp(-1.0, 1.0) if clip_denoised else x0


def posterior_mean(x: Tensor, x0: Tensor, alpha_bar: float, alpha_bar_prev: float) -> Tensor:
    """Mean of the forward posterior ``q(x_prev | x_n, x0)`` (DDPM Eq. 7, for the step's own
    ``beta = 1 - alpha_bar / alpha_bar_prev``)::

        mu~ = sqrt(ab_prev) beta / (1 - ab) x0 + sqrt(1 - beta) (1 - ab_prev) / (1 - ab) x_n

    Shapes ``[B, ...]``. ``alpha_bar_prev = 1`` (the last step) gives ``x0``.
    """
    beta = 1.0 - alpha_bar / alpha_bar_prev
    c_x0 = math.sqrt(alpha_bar_prev) * beta / (1.0 - alpha_bar)
    c_xt = math.sqrt(1.0 - beta) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
    return c_x0 * x0 + c_xt * x


def ddpm_step(
    x: Tensor,
    eps: Tensor,
    alpha_bar: float,
    alpha_bar_prev: float,
    noise: Tensor | None,
    *,
    variance: str = "fixedlarge",
    clip_denoised: bool = True,
) -> Tensor:
    """One ancestral step ``x_n -> x_prev`` given the network's ``eps`` (``[B, ...]``).

    Mean: the posterior mean of DDPM Eq. (7) at the predicted ``x0`` (clamped to ``[-1, 1]``
    when ``clip_denoised``, as SDDPM's code does); variance ``beta`` (``"fixedlarge"``) or
    ``beta tilde`` (``"fixedsmall"``), Sec. 3.2. ``alpha_bar_prev = 1`` (the last step) returns
    the mean, and so does ``noise=None``.
    """
    beta = 1.0 - alpha_bar / alpha_bar_prev
    mean = posterior_mean(x, predict_x0(x, eps, alpha_bar, clip_denoised), alpha_bar,
                          alpha_bar_prev)  # fmt: skip
    if alpha_bar_prev >= 1.0 or noise is None:
        return mean
    var = beta if variance == "fixedlarge" else beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
    return mean + math.sqrt(var) * noise


@torch.no_grad()
def ddpm_sample(
    eps_model: EpsModel,
    schedule: NoiseSchedule,
    x_T: Tensor | Sequence[int],
    steps: int | None = None,
    *,
    variance: str = "fixedlarge",
    spacing: str = "linspace",
    timesteps: Sequence[int] | Tensor | None = None,
    clip_denoised: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Sample with DDPM's ancestral sampler.

    Args:
        eps_model: ``eps_model(x_t [B, ...], t [B] long) -> eps [B, ...]``.
        schedule: the training noise schedule (``N`` steps).
        x_T: starting noise ``[B, ...]`` (kept fixed, e.g. for benchmarks) or a shape to draw.
        steps: number of network calls; ``None`` = all ``N`` (the original sampler); fewer runs
            on a respaced trajectory (``spacing``, see :func:`discrete_timesteps`).
        variance: ``"fixedlarge"`` (sigma^2 = beta, DDPM's and SDDPM's choice) or
            ``"fixedsmall"`` (sigma^2 = posterior beta tilde).
        timesteps: explicit trajectory (distinct ints in ``0..N-1``); overrides steps/spacing.
        clip_denoised: clamp the predicted ``x0`` to ``[-1, 1]`` at each step (default, as
            SDDPM's sampler does for images in [-1, 1]; ``False`` keeps it unclamped).
        generator: drives all noise (initial and per-step), drawn on its device and placed on
            the samples' device.
        progress: show a progress bar.
        callback: ``callback(i, t, x_t, x0_pred)`` at each step and at the end
            (:data:`~snngen.diffusion._common.StepCallback`); the samples do not change.

    Returns:
        ``x_0`` ``[B, ...]`` (floating; not clamped). The last step adds no noise.
    """
    check_choice("variance", variance, VARIANCES)
    taus = sampling_timesteps(schedule, steps, spacing, timesteps)
    x = initial_noise(x_T, generator=generator, device=device, dtype=dtype)
    pairs = list(zip(taus, taus[1:] + [-1], strict=True))
    for i, (n, prev) in enumerate(
        progress_iter(pairs, enabled=progress, desc="ddpm", total=len(pairs))
    ):
        eps = call_eps_model(eps_model, x, n, integer=True)
        if callback is not None:
            callback(i, float(n), x, predict_x0(x, eps, schedule.alpha_bar(n), clip_denoised))
        noise = randn_like(x, generator) if prev >= 0 else None
        x = ddpm_step(
            x,
            eps,
            schedule.alpha_bar(n),
            schedule.alpha_bar(prev),
            noise,
            variance=variance,
            clip_denoised=clip_denoised,
        )
    if callback is not None:
        callback(len(pairs), -1.0, x, x)
    return x
