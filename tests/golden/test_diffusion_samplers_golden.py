"""Golden tests: snngen's DDPM, DDIM and Analytic-DPM samplers against the original code.

Fixtures (``build_diffusion.py``):

* ``diffusion_samplers``: SDDPM's ``GaussianDiffusionSampler`` (x0 clamped at every step,
  ``fixedlarge`` variance, DDIM with eta 0 on SDDPM's grid) run from fixed noise with a seeded
  generator: with the tiny spiking U-Net (DDPM over a 40-step schedule, DDIM 50 steps of 1000,
  float64 and float32), and with a cheap deterministic eps function (the full 1000-step DDPM,
  DDIM with 10, 50 and 600 steps, whose grids are recorded);
* ``diffusion_analytic_dpm``: baofff/Analytic-DPM's ``reverse_ddpm_ms_eps`` and
  ``reverse_ddim_ms_eps`` (optimal variance with the data-range clip, the clamped-x0 mean) for
  10, 25 and 50 steps with and without the last-step sigma clip, their per-step variances and
  trajectories (``_choice_steps``), and ``save_ms_eps``'s Gamma estimate.
"""

from __future__ import annotations

import pytest
import torch
from golden import assert_matches, load_fixture, original_spikes
from test_diffusion_unet_golden import build

from snngen.diffusion import (
    NoiseSchedule,
    analytic_dpm_sample,
    analytic_variance,
    ddim_sample,
    ddpm_sample,
    discrete_timesteps,
    estimate_gamma,
)


def cheap(params):
    """The fixtures' stand-in eps network (``build_diffusion.cheap_eps``)."""

    def eps(x, t):
        s = torch.sin(t.to(x.dtype) / 37.0).reshape(-1, 1, 1, 1)
        return torch.tanh(params["a"] * x + params["b"] * s + params["c"])

    return eps


@pytest.fixture(scope="module")
def fx():
    torch.set_num_threads(1)
    return load_fixture("diffusion_samplers")


@pytest.fixture(scope="module")
def afx():
    return load_fixture("diffusion_analytic_dpm")


def gen(seed):
    return torch.Generator().manual_seed(int(seed))


# --------------------------------------------------------------------------- SDDPM's samplers


def test_ddpm_with_the_spiking_unet(fx):
    model = build("plain", load_fixture("diffusion_unet"))
    model.eval()
    x = ddpm_sample(model.unet, NoiseSchedule.linear(40), fx["unet_x_T"],
                    generator=gen(fx["unet_ddpm_40_seed"]))  # fmt: skip
    assert_matches(x, fx["unet_ddpm_40"], "DDPM (40 steps) with the U-Net")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ddim_with_the_spiking_unet(fx, dtype):
    model = build("plain", load_fixture("diffusion_unet"), dtype)
    model.eval()
    key = "unet_ddim_50" + ("_float32" if dtype == torch.float32 else "")
    # float32: the U-Net's 50 calls fed the original's spikes (golden.original_spikes)
    with original_spikes(model, fx.get(key + "_neurons"), f"DDIM ({dtype})") as flips:
        x = ddim_sample(model.unet, NoiseSchedule.linear(1000), fx["unet_x_T"].to(dtype), 50)
    assert_matches(x, fx[key], f"DDIM 50 steps with the U-Net ({dtype}; {flips})")


def test_the_model_samples_as_the_original(fx):
    """``DiffusionModel.sample`` defaults: DDPM, all steps, x0 clamped; DDIM on SDDPM's grid."""
    model = build("plain", load_fixture("diffusion_unet"))
    model.schedule = NoiseSchedule.linear(40)
    noise_model = build("plain", load_fixture("diffusion_unet"))
    assert model.cfg.solver == "ddpm" and model.cfg.sample_steps is None
    g = gen(fx["unet_ddpm_40_seed"])
    x = model.sample(2, generator=g, noise=fx["unet_x_T"])
    assert_matches(x, (fx["unet_ddpm_40"].clamp(-1, 1) + 1) / 2, "DiffusionModel DDPM")
    y = noise_model.sample(2, solver="ddim", steps=50, noise=fx["unet_x_T"])
    assert_matches(y, (fx["unet_ddim_50"].clamp(-1, 1) + 1) / 2, "DiffusionModel DDIM")


def test_ddpm_1000_steps(fx):
    x = ddpm_sample(cheap(fx["cheap_params"]), NoiseSchedule.linear(1000), fx["cheap_x_T"],
                    generator=gen(fx["cheap_ddpm_1000_seed"]))  # fmt: skip
    assert_matches(x, fx["cheap_ddpm_1000"], "DDPM 1000 steps")


@pytest.mark.parametrize("steps", [10, 50, 600])
def test_ddim_on_sddpm_grid(fx, steps):
    grid = fx[f"ddim_{steps}_t_list"].tolist()  # the original's t_list, ending on 0
    assert grid[-1] == 0
    assert discrete_timesteps(1000, steps, "sddpm") == grid[:-1]
    x = ddim_sample(cheap(fx["cheap_params"]), NoiseSchedule.linear(1000), fx["cheap_x_T"],
                    steps)  # fmt: skip
    assert_matches(x, fx[f"cheap_ddim_{steps}"], f"DDIM {steps} steps")


def test_the_old_behaviour_is_one_option_away(fx):
    """Unclamped x0 / DDIM's uniform grid to clean data differ from the original."""
    eps, sch = cheap(fx["cheap_params"]), NoiseSchedule.linear(1000)
    x = ddim_sample(eps, sch, fx["cheap_x_T"], 50, clip_denoised=False)
    assert (x - fx["cheap_ddim_50"]).abs().max() > 1e-3
    y = ddim_sample(eps, sch, fx["cheap_x_T"], 50, spacing="uniform")
    assert (y - fx["cheap_ddim_50"]).abs().max() > 1e-3


# --------------------------------------------------------------------------- Analytic-DPM


@pytest.mark.parametrize("steps", [10, 25, 50])
def test_analytic_dpm_trajectories(afx, steps):
    expected = sorted(afx[f"steps_{steps}"].tolist(), reverse=True)
    assert discrete_timesteps(1000, steps, "analytic-dpm") == expected


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
@pytest.mark.parametrize("steps", [10, 25, 50])
@pytest.mark.parametrize("clip", [0, 1])
def test_analytic_dpm_variance_and_samples(afx, kind, steps, clip):
    sch = NoiseSchedule.linear(1000)
    key = f"{kind}_{steps}_clip{clip}"
    taus = discrete_timesteps(1000, steps, "analytic-dpm")
    sigma2 = analytic_variance(sch, afx["gamma"], taus, eta=1.0 if kind == "ddpm" else 0.0,
                               data_range=(-1.0, 1.0), clip_sigma_steps=clip)  # fmt: skip
    assert_matches(sigma2[:-1], afx[key + "_sigma2"], f"{key} sigma^2")
    x = analytic_dpm_sample(cheap(afx["cheap_params"]), sch, afx["x_T"], steps,
                            gamma=afx["gamma"], trajectory=kind, clip_sigma_steps=clip,
                            generator=gen(afx[key + "_seed"]))  # fmt: skip
    assert_matches(x, afx[key], f"{key} samples")


def test_gamma_estimate(afx):
    """``estimate_gamma`` on the whole (tiny) data set at every step, in the original's order.

    The original draws its noise from torch's global generator, step by step, and each of its
    DataLoader passes first draws one int64 (the loader's base seed); the test mirrors that
    draw between steps so both see the same noise.
    """
    data = afx["gamma_data"][afx["gamma_data_order"]]
    eps, sch = cheap(afx["cheap_params"]), NoiseSchedule.linear(1000)
    g = gen(afx["gamma_seed"])
    gamma = torch.empty(1000, dtype=torch.float64)
    for n in range(1000):
        torch.empty((), dtype=torch.int64).random_(generator=g)  # the loader's base seed
        gamma[n] = estimate_gamma(eps, sch, data, timesteps=[n], batch_size=64, generator=g)[n]
    # the original keeps Gamma in float32 (relative 6e-8)
    assert_matches(gamma, afx["gamma_estimate"], "Gamma", tol=1e-6)
