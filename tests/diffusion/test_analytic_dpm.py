"""Analytic-DPM: the Gamma estimate, the optimal variance in closed form, clipping, sampling."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from snngen.diffusion import (
    analytic_dpm_sample,
    analytic_variance,
    ddim_sample,
    ddpm_sample,
    discrete_timesteps,
    estimate_gamma,
)
from snngen.diffusion.ddim import ddim_sigma2


def test_gamma_estimate_matches_closed_form(gaussian):
    """Gamma_n = E ||eps*(x_n)||^2 / d = (1 - ab) tr(C^-1) / d for Gaussian data."""
    data = gaussian.sample(20000, torch.Generator().manual_seed(0))
    steps = [0, 50, 300, 700, 999]
    est = estimate_gamma(
        gaussian, gaussian.schedule, data, timesteps=steps, batch_size=5000,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    exact = gaussian.gamma()
    torch.testing.assert_close(est[steps], exact[steps], rtol=0.03, atol=0)
    assert torch.isnan(est[1]) and torch.isnan(est[998])
    assert 0 < exact.min() and exact.max() <= 1  # Theorem 2: Gamma in (0, 1]


def test_gamma_from_a_loader_equals_gamma_from_a_tensor(gaussian):
    data = gaussian.sample(600, torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(data), batch_size=200)  # yields (x,) tuples
    kwargs = {"timesteps": [999, 10, 10], "generator": None}
    a = estimate_gamma(gaussian, gaussian.schedule, data, batch_size=200, **{
        **kwargs, "generator": torch.Generator().manual_seed(3)})  # fmt: skip
    b = estimate_gamma(gaussian, gaussian.schedule, loader, **{
        **kwargs, "generator": torch.Generator().manual_seed(3)})  # fmt: skip
    torch.testing.assert_close(a, b, equal_nan=True)
    c = estimate_gamma(gaussian, gaussian.schedule, loader, timesteps=[10], max_batches=1)
    assert torch.isfinite(c[10])
    with pytest.raises(ValueError, match="no samples"):
        estimate_gamma(gaussian, gaussian.schedule, [], timesteps=[10])


@pytest.mark.parametrize("eta", [1.0, 0.0, 0.5])
@pytest.mark.parametrize("steps", [10, 100])
def test_optimal_variance_equals_posterior_covariance(gaussian, eta, steps):
    """sigma*^2 = lambda^2 + c^2 tr Cov[x0 | x_n] / d, with Cov[x0 | x_n] from Gaussian algebra
    (Sigma^-1 + ab / (1 - ab) I)^-1, independent of Gamma."""
    sch = gaussian.schedule
    taus = discrete_timesteps(1000, steps, "linspace" if eta == 1 else "uniform")
    sigma2 = analytic_variance(sch, gaussian.gamma(), taus, eta=eta)
    assert sigma2[-1] == 0  # the last step returns the mean
    for i, (n, s) in enumerate(zip(taus[:-1], taus[1:], strict=True)):
        ab_n, ab_s = sch.alpha_bar(n), sch.alpha_bar(s)
        lambda2 = ddim_sigma2(ab_n, ab_s, eta)
        c = math.sqrt(ab_s) - math.sqrt((1 - ab_s - lambda2) * ab_n / (1 - ab_n))
        expected = lambda2 + c**2 * gaussian.posterior_x0_trace(ab_n)
        assert sigma2[i].item() == pytest.approx(expected, rel=1e-9)
        assert sigma2[i] >= lambda2  # Theorem 2 lower bound


def test_ddpm_case_matches_the_papers_form(gaussian):
    """Bao et al. Theorem 1 for consecutive steps: lambda^2 = beta tilde and
    sigma*^2 = beta~_n + (sqrt(bb_n / alpha_n) - sqrt(bb_{n-1} - beta~_n))^2 (1 - Gamma_n)."""
    sch = gaussian.schedule
    gamma = gaussian.gamma()
    taus = [600, 599]
    sigma2 = analytic_variance(sch, gamma, taus, eta=1.0)
    n = 600
    bb_n, bb_m = 1 - sch.alphas_cumprod[n].item(), 1 - sch.alphas_cumprod[n - 1].item()
    bt = sch.posterior_variance[n].item()
    paper = bt + (math.sqrt(bb_n / sch.alphas[n].item()) - math.sqrt(bb_m - bt)) ** 2 * (
        1 - gamma[n].item()
    )
    assert sigma2[0].item() == pytest.approx(paper, rel=1e-9)


def test_variance_clipping(schedule):
    taus = discrete_timesteps(1000, 10, "linspace")
    lambda2 = [ddim_sigma2(schedule.alpha_bar(n), schedule.alpha_bar(s), 1.0)
               for n, s in zip(taus[:-1], taus[1:], strict=True)]  # fmt: skip
    # Gamma > 1 (a poor estimate) is clipped to 1: sigma^2 falls back to lambda^2
    high = analytic_variance(schedule, torch.full((1000,), 1.3), taus)
    torch.testing.assert_close(high[:-1], torch.tensor(lambda2, dtype=torch.float64))
    # tiny Gamma at high noise: Cov[x0 | x_n] would be huge; data in [-1, 1] caps it at 1
    low = analytic_variance(schedule, torch.zeros(1000), taus)
    capped = analytic_variance(schedule, torch.zeros(1000), taus, data_range=(-1.0, 1.0))
    assert torch.all(capped <= low) and capped[0] < low[0]
    # clipping sigma of the last noisy step to ~2 pixels
    clipped = analytic_variance(schedule, torch.zeros(1000), taus, clip_sigma_steps=1)
    threshold = (2 * 2 / 255 * math.sqrt(math.pi / 2)) ** 2
    assert clipped[-2].item() == pytest.approx(min(low[-2].item(), threshold))
    torch.testing.assert_close(clipped[:-2], low[:-2])
    with pytest.raises(ValueError, match="missing"):
        analytic_variance(schedule, torch.full((1000,), float("nan")), taus)
    with pytest.raises(ValueError, match="one value per training step"):
        analytic_variance(schedule, torch.zeros(10), taus)


def _gaussian_kl(x, mu, cov):
    """KL(N(sample moments) || N(mu, cov)): how far the samples' Gaussian fit is from the truth."""
    m, c = x.mean(0), torch.cov(x.T)
    inv = torch.linalg.inv(cov)
    d = mu.numel()
    return 0.5 * float(
        torch.trace(inv @ c) + (mu - m) @ inv @ (mu - m) - d + torch.logdet(cov) - torch.logdet(c)
    )


def test_analytic_dpm_beats_handcrafted_variances_with_few_steps(gaussian):
    """With 20 steps the optimal variance beats DDPM's fixed ones and DDIM (Bao et al. Table 2's
    pattern); what error remains comes from the mean and the isotropic variance."""
    sch = gaussian.schedule
    x_T = torch.randn(20000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def kl(sampler, **kw):  # unbounded data: none of the image defaults (x0 clamp, data range)
        kw = {"clip_denoised": False, **kw}
        if sampler is analytic_dpm_sample:
            kw = {"data_range": None, "spacing": "linspace", **kw}
        if sampler is ddim_sample:
            kw = {"spacing": "uniform", **kw}
        x = sampler(gaussian, sch, x_T, 20, generator=torch.Generator().manual_seed(1), **kw)
        return _gaussian_kl(x, gaussian.mu, gaussian.cov)

    analytic = kl(analytic_dpm_sample, gamma=gaussian.gamma())
    large = kl(ddpm_sample, variance="fixedlarge")
    small = kl(ddpm_sample, variance="fixedsmall")
    assert analytic < 0.7 * min(large, small), (analytic, large, small)
    analytic_ddim = kl(analytic_dpm_sample, gamma=gaussian.gamma(), trajectory="ddim")
    ddim = kl(ddim_sample)
    assert analytic_ddim < 0.5 * ddim, (analytic_ddim, ddim)


def test_analytic_dpm_can_estimate_gamma_itself(gaussian, moments):
    data = gaussian.sample(4000, torch.Generator().manual_seed(2))
    x = analytic_dpm_sample(
        gaussian, gaussian.schedule, (4000, 3), 50, data=data, clip_denoised=False,
        data_range=None, generator=torch.Generator().manual_seed(3), dtype=torch.float64,
    )  # fmt: skip
    assert max(moments(x, gaussian.mu, gaussian.cov)) < 5
