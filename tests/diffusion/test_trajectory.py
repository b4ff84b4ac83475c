"""The samplers' step callback / :class:`Trajectory`: the samples are bit-identical with and
without it, the frames follow the sampler's own time grid in order, the last frame is the output,
and each recorded ``x0`` prediction is the closed form ``(x_t - sqrt(1 - ab) eps) / sqrt(ab)``
recomputed here from the recorded ``x_t`` and a fresh call of the network."""

from __future__ import annotations

import math

import pytest
import torch

from snngen.diffusion import NoiseSchedule, Trajectory, sample
from snngen.diffusion.dpm_solver import time_grid
from snngen.diffusion.schedule import sampling_timesteps

N = 100
SHAPE = (3, 1, 4, 4)


class _Net:
    """A fixed nonlinear eps-model of ``x [B, ...]`` and ``t [B]`` (integer or fractional)."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1))) / N
        return torch.tanh(1.3 * x + 0.7 * tt) * (0.5 + tt) + 0.1 * x.flip(-1)


def _gamma() -> torch.Tensor:
    return torch.linspace(0.6, 0.99, N, dtype=torch.float64)


# (sampler, options, the times the frames must have before the final one, the final time)
def _cases(schedule: NoiseSchedule) -> list:
    ddpm_t = sampling_timesteps(schedule, 8, "linspace", None)
    ddim_t = sampling_timesteps(schedule, 6, "sddpm", None)
    uni_t = sampling_timesteps(schedule, 6, "uniform", None)
    adpm_t = sampling_timesteps(schedule, 6, "analytic-dpm", None)
    grid6 = time_grid(schedule, 6)
    return [
        ("ddpm", {"steps": 8}, ddpm_t, -1.0),
        ("ddim", {"steps": 6}, ddim_t, 0.0),
        ("ddim", {"steps": 6, "eta": 1.0, "spacing": "uniform"}, uni_t, -1.0),
        ("analytic-dpm", {"steps": 6, "gamma": _gamma()}, adpm_t, -1.0),
        ("analytic-dpm", {"steps": 6, "gamma": _gamma(), "trajectory": "ddim"}, adpm_t, -1.0),
        ("dpm-solver", {"steps": 6, "order": 2}, grid6[:-1], grid6[-1]),
        ("dpm-solver", {"steps": 6, "order": 3, "algorithm": "dpmsolver"}, grid6[:-1], grid6[-1]),
        ("dpm-solver", {"steps": 6, "order": 1, "method": "singlestep", "clip_denoised": True},
         grid6[:-1], grid6[-1]),
        ("dpm-solver", {"steps": 6, "denoise_to_zero": True}, grid6, -1.0),
    ]


SCHEDULE = NoiseSchedule.linear(N, 1e-4, 0.05)
CASES = _cases(SCHEDULE)
IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


def _run(name: str, options: dict, **extra) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    return sample(name, _Net(), SCHEDULE, SHAPE, generator=gen, **options, **extra)


@pytest.mark.parametrize(("name", "options", "times", "end"), CASES, ids=IDS)
def test_trajectory_leaves_samples_bit_identical(name, options, times, end):
    plain = _run(name, options)
    chain = Trajectory()
    traced = _run(name, options, callback=chain)
    assert torch.equal(plain, traced)  # bit-identical: the same noise draws and arithmetic
    assert torch.equal(chain.x[-1], plain) and torch.equal(chain.x0[-1], plain)
    assert chain.steps == list(range(len(times) + 1))
    # the frames walk the sampler's own grid, in its (decreasing) order, then the end time
    assert chain.times == pytest.approx([float(t) for t in times] + [end], abs=1e-9)


@pytest.mark.parametrize(("name", "options", "times", "end"), CASES, ids=IDS)
def test_recorded_x0_is_the_closed_form_of_eps(name, options, times, end):
    chain = Trajectory()
    _run(name, options, callback=chain)
    clip = options.get("clip_denoised", name != "dpm-solver")
    net = _Net()
    for t, x_t, x0 in zip(chain.times[:-1], chain.x[:-1], chain.x0[:-1], strict=True):
        integer = name != "dpm-solver"
        t_batch = torch.full((SHAPE[0],), int(t) if integer else t,
                             dtype=torch.long if integer else x_t.dtype)
        eps = net(x_t, t_batch)
        ab = float(SCHEDULE.alphas_cumprod_at(torch.tensor([t], dtype=torch.float64))[0])
        want = (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        want = want.clamp(-1, 1) if clip else want
        # float32 samples; the sampler's alpha comes from log-alpha (DPM-Solver) or the
        # cumulative product (others), which differ in the last float32 bits: 1e-5 relative
        torch.testing.assert_close(x0, want, rtol=1e-5, atol=1e-5)


def test_select_keeps_first_and_last_in_order():
    chain = Trajectory()
    _run("ddpm", {"steps": 20}, callback=chain)
    few = chain.select(8)
    assert len(few) == 8 and few.steps[0] == 0 and few.steps[-1] == 20
    assert few.steps == sorted(few.steps) and torch.equal(few.x[-1], chain.x[-1])
