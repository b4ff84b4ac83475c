"""Every sampler, driven by an exact eps-predictor, reproduces the data's mean and covariance;
and the samplers' shared API (x_T, shapes, generators, dispatcher, calling convention)."""

from __future__ import annotations

import pytest
import torch

from snngen.diffusion import (
    SAMPLERS,
    NoiseSchedule,
    ddim_sample,
    discrete_timesteps,
    estimate_gamma,
    sample,
)
from snngen.errors import ConfigError

N_SAMPLES = 4000
Z_MAX = 5.0  # moment errors in units of their standard error

GAUSSIAN_CASES = [
    ("ddpm", {}),  # 1000 steps, fixedlarge (SDDPM's sampler)
    ("ddpm", {"variance": "fixedsmall"}),
    ("ddpm", {"steps": 100}),  # respaced
    ("ddim", {"steps": 100}),
    ("ddim", {"steps": 100, "eta": 1.0, "spacing": "quadratic"}),
    ("analytic-dpm", {"steps": 50}),
    ("analytic-dpm", {"steps": 50, "trajectory": "ddim"}),
    ("dpm-solver", {"steps": 20}),  # DPM-Solver++(2M), logSNR
    ("dpm-solver", {"steps": 20, "order": 3, "algorithm": "dpmsolver"}),
    ("dpm-solver", {"steps": 20, "order": 3, "method": "singlestep"}),
    (
        "dpm-solver",
        {"steps": 20, "order": 2, "method": "singlestep", "skip_type": "time_quadratic"},
    ),
]


#: The moment tests check the samplers' mathematics on unbounded Gaussian data, so the image
#: defaults that follow the original code (x0 clamped to [-1, 1]; SDDPM's DDIM grid ending at
#: step 0; Analytic-DPM's data-range clip) are switched off; tests/golden pins those defaults.
UNBOUNDED = {
    "ddpm": {"clip_denoised": False},
    "ddim": {"clip_denoised": False, "spacing": "uniform"},
    "analytic-dpm": {"clip_denoised": False, "data_range": None, "spacing": "linspace"},
}


def _run(name, model, shape, options, seed=1):
    return sample(
        name,
        model,
        model.schedule,
        shape,
        generator=torch.Generator().manual_seed(seed),
        dtype=torch.float64,
        **{**UNBOUNDED.get(name, {}), **options},
    )


@pytest.mark.parametrize(("name", "options"), GAUSSIAN_CASES, ids=lambda v: str(v))
def test_samplers_match_gaussian_moments(name, options, gaussian, moments):
    if name == "analytic-dpm":
        options = {**options, "gamma": gaussian.gamma()}  # closed form
    x = _run(name, gaussian, (N_SAMPLES, 3), options)
    assert x.dtype == torch.float64 and x.shape == (N_SAMPLES, 3)
    mean_z, cov_z = moments(x, gaussian.mu, gaussian.cov)
    assert mean_z < Z_MAX and cov_z < Z_MAX, (mean_z, cov_z)


MIXTURE_CASES = [
    ("ddpm", {"steps": 200}),
    ("ddim", {"steps": 100}),
    ("analytic-dpm", {"steps": 50}),
    ("dpm-solver", {"steps": 20}),
    ("dpm-solver", {"steps": 20, "order": 3}),
]


@pytest.mark.parametrize(("name", "options"), MIXTURE_CASES, ids=lambda v: str(v))
def test_samplers_match_mixture_moments(name, options, mixture, moments):
    if name == "analytic-dpm":  # Gamma by Monte Carlo over data drawn from the mixture
        data = mixture.sample(4000, torch.Generator().manual_seed(7))
        taus = discrete_timesteps(1000, options["steps"], "linspace")
        options = {
            **options,
            "gamma": estimate_gamma(mixture, mixture.schedule, data, timesteps=taus),
        }
    x = _run(name, mixture, (N_SAMPLES, 2), options)
    mean_z, cov_z = moments(x, mixture.mean(), mixture.covariance())
    assert mean_z < Z_MAX and cov_z < Z_MAX, (mean_z, cov_z)
    # both modes are populated in the right proportion (0.3 near x=-1.5)
    assert abs((x[:, 0] < -0.25).double().mean().item() - 0.3) < 0.04


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samplers_keep_image_shapes_and_fixed_noise(name, schedule):
    """Any [B, ...] shape works; a given x_T is used (not modified) and float32 stays float32."""
    model = _LinearEps(schedule)
    x_T = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    keep = x_T.clone()
    options = {"steps": 10, "gamma": torch.full((1000,), 0.5)} if name == "analytic-dpm" else {}
    if name == "ddpm":
        options = {"steps": 10}
    out = sample(name, model, schedule, x_T, generator=torch.Generator().manual_seed(1), **options)
    assert out.shape == x_T.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert torch.equal(x_T, keep)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "analytic-dpm"])
def test_stochastic_samplers_are_reproducible_with_a_generator(name, gaussian):
    options = {"steps": 20, "eta": 1.0} if name != "ddpm" else {"steps": 20}
    if name == "analytic-dpm":
        options = {"steps": 20, "gamma": gaussian.gamma()}
    a = _run(name, gaussian, (16, 3), options, seed=5)
    b = _run(name, gaussian, (16, 3), options, seed=5)
    c = _run(name, gaussian, (16, 3), options, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)


class _Recorder:
    """An eps-model that records the timesteps it is called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t):
        assert t.shape == (x.shape[0],)
        self.calls.append(t.clone())
        return torch.zeros_like(x)


@pytest.mark.parametrize(
    ("name", "options", "n_calls", "dtype"),
    [
        ("ddpm", {}, 1000, torch.long),
        ("ddpm", {"steps": 25}, 25, torch.long),
        ("ddim", {"steps": 20}, 20, torch.long),
        ("analytic-dpm", {"steps": 20, "gamma": [0.5] * 1000}, 20, torch.long),
        ("dpm-solver", {"steps": 20}, 20, torch.float32),
        ("dpm-solver", {"steps": 20, "method": "singlestep", "order": 3}, 20, torch.float32),
        ("dpm-solver", {"steps": 7, "order": 3, "denoise_to_zero": True}, 8, torch.float32),
        ("dpm-solver", {"steps": 20, "model_time": "round"}, 20, torch.long),
    ],
    ids=str,
)
def test_eps_model_calling_convention(name, options, n_calls, dtype, schedule):
    rec = _Recorder()
    sample(name, rec, schedule, (2, 3), **options)
    assert len(rec.calls) == n_calls
    ts = torch.stack(rec.calls)
    assert all(c.dtype == dtype for c in rec.calls)
    assert ts.min() >= 0 and ts.max() <= 999
    first = ts[:, 0].double()
    assert first[0] == first.max()  # sampling runs from noise to data
    if name != "dpm-solver" or "method" not in options:
        assert torch.all(first[1:] <= first[:-1])


def test_dispatcher_names_and_errors(gaussian, schedule):
    x_T = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = sample("ddim", gaussian, schedule, x_T, 10)
    b = ddim_sample(gaussian, schedule, x_T, 10)
    assert torch.equal(a, b)
    c = sample("Analytic_DPM", gaussian, schedule, x_T, 10, gamma=gaussian.gamma())
    assert c.shape == x_T.shape
    with pytest.raises(ConfigError, match="dpm-solver"):
        sample("euler", gaussian, schedule, x_T)
    with pytest.raises(ConfigError, match="variance"):
        sample("ddpm", gaussian, schedule, x_T, variance="learned")
    with pytest.raises(ConfigError, match="algorithm"):
        sample("dpm-solver", gaussian, schedule, x_T, algorithm="unipc")
    with pytest.raises(ValueError, match="order"):
        sample("dpm-solver", gaussian, schedule, x_T, order=4)
    with pytest.raises(ValueError, match="gamma"):
        sample("analytic-dpm", gaussian, schedule, x_T)
    # errors the CLI shows as one line (ConfigError is a SnngenError)
    with pytest.raises(ConfigError, match=r"steps=5000 .* choose 1\.\.1000"):
        sample("ddim", gaussian, schedule, x_T, 5000)
    with pytest.raises(ConfigError, match="steps"):
        sample("dpm-solver", gaussian, schedule, x_T, 0)
    with pytest.raises(ConfigError, match="eta"):
        sample("ddim", gaussian, schedule, x_T, 10, eta=-1.0)


def test_bad_model_output_is_named(schedule):
    with pytest.raises(ValueError, match="shaped like its input"):
        sample("ddim", lambda x, t: x[:, :1], schedule, (4, 3), 5)


def test_progress_bar_runs(gaussian, schedule):
    out = sample("dpm-solver", gaussian, schedule, (4, 3), 5, progress=True, dtype=torch.float64)
    assert out.shape == (4, 3)


def test_clip_denoised_bounds_the_prediction(schedule):
    big = lambda x, t: -10 * torch.ones_like(x)  # noqa: E731  (x0 far outside [-1, 1])
    x = sample("ddim", big, schedule, (4, 3), 10, clip_denoised=True)
    assert x.abs().max() <= 1 + 1e-5
    y = sample("dpm-solver", big, schedule, (4, 3), 10, clip_denoised=True, denoise_to_zero=True)
    assert y.abs().max() <= 1 + 1e-5


def test_cosine_schedule_samples(gaussian_eps, moments):
    """The samplers only see the schedule object: a cosine schedule works the same way."""
    sch = NoiseSchedule.cosine(1000)
    g = gaussian_eps(sch, torch.tensor([1.0, -0.5]), torch.tensor([[0.5, 0.1], [0.1, 0.2]]))
    for name, options in [("ddim", {"steps": 100}), ("dpm-solver", {"steps": 20, "order": 3})]:
        x = _run(name, g, (N_SAMPLES, 2), options)
        assert max(moments(x, g.mu, g.cov)) < Z_MAX


class _LinearEps:
    """A toy eps-model with a learnable-looking form, for shape/API tests."""

    def __init__(self, schedule):
        self.schedule = schedule

    def __call__(self, x, t):
        ab = self.schedule.alphas_cumprod_at(t.double().cpu()).to(x)
        return (1 - ab).sqrt().view(-1, *[1] * (x.ndim - 1)) * x
