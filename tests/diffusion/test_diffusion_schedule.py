"""NoiseSchedule: betas, continuous-time view, forward process, training loss, timesteps."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from snngen.diffusion import NoiseSchedule, discrete_timesteps
from snngen.diffusion.schedule import check_timesteps, sampling_timesteps
from snngen.errors import ConfigError


def test_linear_schedule_is_ddpm(schedule):
    assert schedule.num_steps == 1000
    assert schedule.betas[0].item() == pytest.approx(1e-4)
    assert schedule.betas[-1].item() == pytest.approx(0.02)
    torch.testing.assert_close(schedule.alphas_cumprod, torch.cumprod(1 - schedule.betas, 0))
    assert schedule.posterior_variance[0].item() == 0.0
    assert torch.all(schedule.posterior_variance[1:] < schedule.betas[1:])
    assert schedule.alpha_bar(-1) == 1.0
    assert schedule.alpha_bar(999) == pytest.approx(4.04e-5, rel=0.01)  # known DDPM value
    with pytest.raises(ValueError):
        schedule.alpha_bar(1000)


def test_cosine_schedule_follows_nichol_dhariwal():
    sch = NoiseSchedule.cosine(1000)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for n in (0, 10, 500, 900):  # away from the 0.999 clip
        assert sch.alphas_cumprod[n].item() == pytest.approx(f((n + 1) / 1000) / f(0), rel=1e-9)
    assert sch.betas.max().item() <= 0.999
    assert NoiseSchedule.from_name("cosine", 100).num_steps == 100
    with pytest.raises(ConfigError, match="quadratic"):
        NoiseSchedule.from_name("quadratic")
    with pytest.raises(ValueError):
        NoiseSchedule([0.1, 1.5])


def test_continuous_time_matches_the_discrete_schedule_at_the_knots(schedule):
    n = torch.arange(1000, dtype=torch.float64)
    t = schedule.continuous_time(n)
    torch.testing.assert_close(t, (n + 1) / 1000)
    torch.testing.assert_close(schedule.model_time(t), n)
    alpha, sigma = schedule.marginal_alpha(t), schedule.marginal_std(t)
    torch.testing.assert_close(alpha**2, schedule.alphas_cumprod, rtol=1e-12, atol=0)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(t))
    torch.testing.assert_close(schedule.alphas_cumprod_at(n), schedule.alphas_cumprod)
    lam = schedule.marginal_lambda(t)
    torch.testing.assert_close(lam, torch.log(alpha / sigma))
    assert torch.all(lam[1:] < lam[:-1])  # lambda decreases with time


def test_log_alpha_is_piecewise_linear_and_lambda_inverts(schedule):
    mid = schedule.log_alpha_at(torch.tensor([10.5, 700.25], dtype=torch.float64))
    la = schedule.log_alpha
    torch.testing.assert_close(mid[0], 0.5 * (la[10] + la[11]))
    torch.testing.assert_close(mid[1], 0.75 * la[700] + 0.25 * la[701])
    t = torch.rand(200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = 1e-3 + (1 - 1e-3) * t
    torch.testing.assert_close(schedule.inverse_lambda(schedule.marginal_lambda(t)), t)


def test_q_sample_is_ddpm_eq4(schedule):
    x0 = torch.randn(5, 2, 3, 3)
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 10, 500, 998, 999])
    xt = schedule.q_sample(x0, t, noise)
    ab = schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(xt, ab.sqrt() * x0 + (1 - ab).sqrt() * noise)
    torch.testing.assert_close(
        schedule.q_sample(x0, 7, noise)[0], schedule.q_sample(x0[:1], 7, noise[:1])[0]
    )
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(
        schedule.q_sample(x0, t, generator=g1), schedule.q_sample(x0, t, generator=g2)
    )
    with pytest.raises(ValueError, match="0..999"):
        schedule.q_sample(x0, torch.full((5,), 1000))


def test_eps_loss_of_the_exact_model_is_one_minus_gamma(schedule, gaussian):
    """E ||eps - eps*||^2 / d = 1 - Gamma_n, averaged over uniform n."""
    x0 = gaussian.sample(20000, torch.Generator().manual_seed(0))
    loss = schedule.eps_loss(gaussian, x0, generator=torch.Generator().manual_seed(1))
    expected = (1 - gaussian.gamma()).mean().item()
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(expected, rel=0.05)


def test_eps_loss_trains_a_network_and_is_reproducible(schedule):
    net = nn.Linear(4, 4)
    model = lambda x, t: net(x) * (t[:, None].float() / 1000)  # noqa: E731
    x0 = torch.randn(8, 4)
    a = schedule.eps_loss(model, x0, generator=torch.Generator().manual_seed(0))
    b = schedule.eps_loss(model, x0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    a.backward()
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shaped like x0"):
        schedule.eps_loss(lambda x, t: x[:, :2], x0)


@pytest.mark.parametrize("spacing", ["uniform", "quadratic", "linspace", "trailing", "leading"])
@pytest.mark.parametrize("steps", [1, 7, 20, 100, 1000])
def test_discrete_timesteps_are_distinct_decreasing_and_in_range(spacing, steps):
    seq = discrete_timesteps(1000, steps, spacing)
    assert len(seq) == steps
    assert all(a > b for a, b in zip(seq, seq[1:], strict=False))
    assert 0 <= seq[-1] and seq[0] <= 999


def test_discrete_timesteps_follow_their_papers():
    assert discrete_timesteps(1000, 20, "uniform") == list(range(950, -1, -50))  # DDIM
    assert discrete_timesteps(1000, 10, "trailing")[0] == 999
    assert discrete_timesteps(1000, 10, "linspace")[0] == 999  # improved DDPM respacing
    assert discrete_timesteps(1000, 10, "linspace")[-1] == 0
    assert discrete_timesteps(1000, 10, "quadratic")[0] == int(0.8 * 1000)  # DDIM quadratic
    with pytest.raises(ConfigError, match="cosine"):
        discrete_timesteps(1000, 10, "cosine")
    with pytest.raises(ValueError):
        discrete_timesteps(1000, 1001)


def test_explicit_timesteps_are_validated(schedule):
    assert check_timesteps(schedule, [0, 500, 10]) == [500, 10, 0]
    assert sampling_timesteps(schedule, None, "uniform") == list(range(999, -1, -1))
    for bad in ([], [3, 3], [-1, 5], [1000]):
        with pytest.raises(ValueError):
            check_timesteps(schedule, bad)


def test_schedule_bounds_are_exact():
    """betas must lie strictly inside (0, 1); alpha_bar is defined for n in -1..N-1 with
    alpha_bar_{-1} = 1 (the boundary values themselves, not just far-off ones)."""
    for bad in ([0.1, 1.0], [0.0, 0.1]):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            NoiseSchedule(bad)
    s = NoiseSchedule([0.1, 0.2, 0.3])
    assert s.alpha_bar(-1) == 1.0
    assert s.alpha_bar(2) == pytest.approx(0.9 * 0.8 * 0.7)
    for bad_n in (-2, 3):
        with pytest.raises(ValueError, match="outside -1..2"):
            s.alpha_bar(bad_n)
