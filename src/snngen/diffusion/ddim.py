"""DDIM sampling (Song, Meng & Ermon 2021) with stochasticity ``eta`` (``eta = 0``: deterministic).

One step from ``x_n`` to the earlier step ``s`` of the trajectory (DDIM Eq. 12)::

    x_s = sqrt(ab_s) x0_pred + sqrt(1 - ab_s - sigma^2) eps + sigma z,
    x0_pred = (x_n - sqrt(1 - ab_n) eps) / sqrt(ab_n),
    sigma^2 = eta^2 (1 - ab_s) / (1 - ab_n) (1 - ab_n / ab_s)            (DDIM Eq. 16)

By default the trajectory is SDDPM's (``spacing="sddpm"``: 999, 979, .., 19 for 50 of 1000
steps) and its last step goes to ``n = 0``, whose ``x`` is returned (SDDPM's sampler stops there);
with any other spacing the last step goes to clean data (``ab_s = 1``, i.e. it returns
``x0_pred``), as in the DDIM code. ``x0_pred`` is clamped to ``[-1, 1]`` at every step
(``clip_denoised``), as in SDDPM's code.
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
    initial_noise,
    progress_iter,
    randn_like,
)
from snngen.diffusion.ddpm import predict_x0
from snngen.diffusion.schedule import NoiseSchedule, sampling_timesteps
from snngen.errors import ConfigError


def ddim_sigma2(alpha_bar: float, alpha_bar_prev: float, eta: float) -> float:
    """DDIM Eq. (16): ``eta^2 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)``.

    ``eta = 1`` gives DDPM's posterior variance beta tilde (for the respaced betas).
    """
    return eta**2 * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * (1.0 - alpha_bar / alpha_bar_prev)


def generalized_step(
    x: Tensor,
    eps: Tensor,
    alpha_bar: float,
    alpha_bar_prev: float,
    *,
    lambda2: float,
    sigma2: float,
    noise: Tensor | None,
    clip_denoised: bool = True,
) -> Tensor:
    """One step of the generalized (non-Markovian) reverse process, ``[B, ...]`` in and out.

    Mean ``sqrt(ab_prev) x0_pred + sqrt(1 - ab_prev - lambda2) eps`` (DDIM Eq. 12; Analytic-DPM's
    mu~_n with the optimal x0, Theorem 1), plus ``sqrt(sigma2) noise``. DDIM uses
    ``sigma2 = lambda2``; Analytic-DPM uses its optimal variance with the same mean.
    """
    x0 = predict_x0(x, eps, alpha_bar, clip_denoised)
    mean = (
        math.sqrt(alpha_bar_prev) * x0 + math.sqrt(max(1.0 - alpha_bar_prev - lambda2, 0.0)) * eps
    )
    if noise is None or sigma2 <= 0.0:
        return mean
    return mean + math.sqrt(sigma2) * noise


@torch.no_grad()
def ddim_sample(
    eps_model: EpsModel,
    schedule: NoiseSchedule,
    x_T: Tensor | Sequence[int],
    steps: int = 50,
    *,
    eta: float = 0.0,
    spacing: str = "sddpm",
    timesteps: Sequence[int] | Tensor | None = None,
    end_step: int | None = None,
    clip_denoised: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Sample with DDIM.

    Args:
        eps_model: ``eps_model(x_t [B, ...], t [B] long) -> eps [B, ...]``.
        schedule: the training noise schedule.
        x_T: starting noise ``[B, ...]`` or a shape to draw.
        steps: number of network calls (trajectory length).
        eta: 0 = deterministic DDIM; 1 = DDPM-like ancestral sampling on the same trajectory.
        spacing: ``"sddpm"`` (SDDPM's grid, the default), ``"uniform"`` (DDIM's code),
            ``"quadratic"``, ``"linspace"``, ``"trailing"`` (see
            :func:`snngen.diffusion.schedule.discrete_timesteps`).
        timesteps: explicit trajectory (distinct ints in ``0..N-1``); overrides steps/spacing.
        end_step: where the last step lands: ``-1`` = clean data (DDIM's code: it returns
            ``x0_pred``), ``0`` = SDDPM's (it returns ``x`` at step 0, no network call there);
            ``None`` = 0 with the ``"sddpm"`` spacing, else -1.
        clip_denoised: clamp ``x0_pred`` to ``[-1, 1]`` (default, as SDDPM; ``eps`` is kept as
            predicted); ``False`` = DDIM's unclamped step.
        generator: drives all noise; progress: show a progress bar.
        callback: ``callback(i, t, x_t, x0_pred)`` at each step and at the end (``t`` =
            ``end_step``; :data:`~snngen.diffusion._common.StepCallback`).

    Returns:
        ``x_0`` ``[B, ...]``.
    """
    if eta < 0:
        raise ConfigError(f"eta must be >= 0, got {eta}")
    taus = sampling_timesteps(schedule, steps, spacing, timesteps)
    if end_step is None:
        end_step = 0 if spacing == "sddpm" and timesteps is None else -1
    if end_step not in (-1, 0) or (end_step == 0 and taus[-1] == 0):
        raise ConfigError(f"end_step={end_step} must be -1 (clean data) or 0 (SDDPM), and below "
                          f"the last timestep {taus[-1]}")
    x = initial_noise(x_T, generator=generator, device=device, dtype=dtype)
    pairs = list(zip(taus, taus[1:] + [end_step], strict=True))
    for i, (n, prev) in enumerate(
        progress_iter(pairs, enabled=progress, desc="ddim", total=len(pairs))
    ):
        ab, ab_prev = schedule.alpha_bar(n), schedule.alpha_bar(prev)
        eps = call_eps_model(eps_model, x, n, integer=True)
        if callback is not None:
            callback(i, float(n), x, predict_x0(x, eps, ab, clip_denoised))
        sigma2 = ddim_sigma2(ab, ab_prev, eta)
        noise = randn_like(x, generator) if sigma2 > 0 else None
        x = generalized_step(
            x,
            eps,
            ab,
            ab_prev,
            lambda2=sigma2,
            sigma2=sigma2,
            noise=noise,
            clip_denoised=clip_denoised,
        )
    if callback is not None:
        callback(len(pairs), float(end_step), x, x)
    return x
