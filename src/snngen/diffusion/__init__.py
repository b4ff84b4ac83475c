"""Noise schedules and samplers: pure functions of an eps-predicting network.

The network is any callable ``eps_model(x_t [B, ...], t [B]) -> eps [B, ...]`` with ``t`` on the
discrete training scale ``0..N-1``: ``torch.long`` for DDPM, DDIM and Analytic-DPM; a floating,
generally fractional, tensor for DPM-Solver (or ``torch.long`` with ``model_time="round"``).
No sampler knows whether the network spikes. Example::

    schedule = NoiseSchedule.linear(1000)
    loss = schedule.eps_loss(net, x0)                                 # training
    x = sample("dpm-solver", net, schedule, (16, 1, 32, 32), steps=20)  # sampling
    chain = Trajectory()                                               # every step's x_t, x0
    x = sample("ddim", net, schedule, (16, 1, 32, 32), callback=chain)  # the same samples
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from snngen.diffusion._common import EpsModel, StepCallback, Trajectory
from snngen.diffusion.analytic_dpm import analytic_dpm_sample, analytic_variance, estimate_gamma
from snngen.diffusion.ddim import ddim_sample
from snngen.diffusion.ddpm import ddpm_sample
from snngen.diffusion.dpm_solver import dpm_solver_sample, time_grid
from snngen.diffusion.schedule import (
    NoiseSchedule,
    cosine_betas,
    discrete_timesteps,
    linear_betas,
)
from snngen.errors import ConfigError

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm_sample,
    "ddim": ddim_sample,
    "analytic-dpm": analytic_dpm_sample,
    "dpm-solver": dpm_solver_sample,
}


def sample(
    name: str,
    eps_model: EpsModel,
    schedule: NoiseSchedule,
    x_T: Tensor | Sequence[int],
    steps: int | None = None,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
    **options,
) -> Tensor:
    """Run the sampler ``name`` (``"ddpm"``, ``"ddim"``, ``"analytic-dpm"``, ``"dpm-solver"``).

    ``steps=None`` uses the sampler's default (DDPM: all ``N``; DDIM and Analytic-DPM: 50;
    DPM-Solver: 20). ``options`` go to the sampler (e.g. ``eta=0.0``, ``order=3``,
    ``gamma=...``, ``callback=Trajectory()`` to record the chain); underscores and case in
    ``name`` are forgiven (``"analytic_dpm"``).
    Returns samples ``[B, ...]``.
    """
    key = name.strip().lower().replace("_", "-")
    if key not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    if steps is not None:
        options["steps"] = steps
    return SAMPLERS[key](
        eps_model, schedule, x_T, generator=generator, progress=progress, **options
    )


__all__ = [
    "SAMPLERS",
    "EpsModel",
    "NoiseSchedule",
    "StepCallback",
    "Trajectory",
    "analytic_dpm_sample",
    "analytic_variance",
    "cosine_betas",
    "ddim_sample",
    "ddpm_sample",
    "discrete_timesteps",
    "dpm_solver_sample",
    "estimate_gamma",
    "linear_betas",
    "sample",
    "time_grid",
]
