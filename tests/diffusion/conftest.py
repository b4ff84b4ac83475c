"""Exact eps-predictors for Gaussian and Gaussian-mixture data (no training needed).

For ``x0 ~ N(mu, Sigma)``: ``x_n = sqrt(ab) x0 + sqrt(1 - ab) eps ~ N(sqrt(ab) mu, C)`` with
``C = ab Sigma + (1 - ab) I``, and the optimal predictor is
``eps*(x_n) = E[eps | x_n] = sqrt(1 - ab) C^{-1} (x_n - sqrt(ab) mu)``. A mixture weights the
component predictors by their posterior responsibilities. Fractional model times use the
schedule's continuous-time ``alpha_bar`` (what DPM-Solver sees), so these are exact along the
solver's ODE too.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from snngen.diffusion import NoiseSchedule

DTYPE = torch.float64


def _alpha_bars(schedule: NoiseSchedule, t: Tensor) -> Tensor:
    """``alpha_bar`` at each model time of ``t [B]`` (integer steps or fractional times)."""
    if t.dtype == torch.long:
        return schedule.alphas_cumprod[t.cpu()]
    return schedule.alphas_cumprod_at(t.cpu().to(DTYPE))


def _alpha_bar(schedule: NoiseSchedule, t: Tensor) -> float:
    """The common ``alpha_bar`` of a batch of (identical) model times ``t [B]``."""
    assert torch.all(t == t[0]), "samplers call the model at one time per batch"
    return float(_alpha_bars(schedule, t[:1])[0])


class GaussianEps:
    """Exact eps-predictor for ``N(mu, Sigma)`` data; inputs ``[B, d]`` or ``[B, *shape]``."""

    def __init__(self, schedule: NoiseSchedule, mu: Tensor, cov: Tensor) -> None:
        self.schedule, self.mu, self.cov = schedule, mu.to(DTYPE), cov.to(DTYPE)
        self.evals, self.vecs = torch.linalg.eigh(self.cov)
        self.d = mu.numel()
        self.calls = 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        flat = x.reshape(x.shape[0], -1).to(DTYPE)
        if bool(torch.all(t == t[0])):  # samplers: one time per batch (fast path)
            ab = _alpha_bar(self.schedule, t)
            z = (flat - math.sqrt(ab) * self.mu) @ self.vecs
            eps = math.sqrt(1 - ab) * (z / (ab * self.evals + 1 - ab)) @ self.vecs.T
        else:  # training: one time per sample
            ab = _alpha_bars(self.schedule, t)[:, None]  # [B, 1]
            z = (flat - ab.sqrt() * self.mu) @ self.vecs
            eps = (1 - ab).sqrt() * (z / (ab * self.evals + 1 - ab)) @ self.vecs.T
        return eps.to(x.dtype).reshape(x.shape)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        z = torch.randn(n, self.d, generator=generator, dtype=DTYPE)
        return self.mu + (z * self.evals.sqrt()) @ self.vecs.T

    def transport(self, x: Tensor, ab_from: float, ab_to: float) -> Tensor:
        """Exact probability-flow ODE map between two noise levels.

        Every eigen-direction is an independent 1-D Gaussian whose standardised coordinate is
        constant along the flow: ``x_to - m_to = sqrt(v_to / v_from) (x_from - m_from)``.
        """
        v_from = ab_from * self.evals + 1 - ab_from
        v_to = ab_to * self.evals + 1 - ab_to
        z = (x.to(DTYPE) - math.sqrt(ab_from) * self.mu) @ self.vecs
        return math.sqrt(ab_to) * self.mu + (z * (v_to / v_from).sqrt()) @ self.vecs.T

    def gamma(self) -> Tensor:
        """Closed form ``Gamma_n = E||eps*||^2 / d = (1 - ab) tr(C^{-1}) / d`` ``[N]``."""
        ab = self.schedule.alphas_cumprod[:, None]
        return ((1 - ab) / (ab * self.evals + 1 - ab)).sum(1) / self.d

    def posterior_x0_trace(self, ab: float) -> float:
        """``tr Cov[x0 | x_n] / d`` = ``tr (Sigma^{-1} + ab / (1 - ab) I)^{-1} / d``."""
        return float((1.0 / (1.0 / self.evals + ab / (1 - ab))).sum()) / self.d


class MixtureEps:
    """Exact eps-predictor for a Gaussian mixture ``sum_k w_k N(mu_k, Sigma_k)``; ``[B, d]``."""

    def __init__(self, schedule: NoiseSchedule, weights: Tensor, mus: Tensor, covs: Tensor):
        self.schedule = schedule
        self.weights, self.mus, self.covs = weights.to(DTYPE), mus.to(DTYPE), covs.to(DTYPE)
        self.d = mus.shape[1]

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        ab = _alpha_bar(self.schedule, t)
        flat = x.to(DTYPE)
        eye = torch.eye(self.d, dtype=DTYPE)
        c = ab * self.covs + (1 - ab) * eye  # [K, d, d]
        diff = flat[:, None, :] - math.sqrt(ab) * self.mus[None]  # [B, K, d]
        sol = torch.linalg.solve(c[None], diff[..., None])[..., 0]  # [B, K, d]
        logp = -0.5 * (diff * sol).sum(-1) - 0.5 * torch.logdet(c)[None] + self.weights.log()
        resp = torch.softmax(logp, dim=1)  # [B, K]
        eps = math.sqrt(1 - ab) * (resp[..., None] * sol).sum(1)
        return eps.to(x.dtype)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs)
        z = torch.randn(n, self.d, generator=generator, dtype=DTYPE)
        return self.mus[k] + (chol[k] @ z[..., None])[..., 0]

    def mean(self) -> Tensor:
        return (self.weights[:, None] * self.mus).sum(0)

    def covariance(self) -> Tensor:
        m = self.mean()
        second = self.covs + self.mus[:, :, None] * self.mus[:, None, :]
        return (self.weights[:, None, None] * second).sum(0) - m[:, None] * m[None, :]


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run many tiny tensor ops, which intra-op threads only slow down (badly so on
    a shared CPU)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def schedule() -> NoiseSchedule:
    return NoiseSchedule.linear(1000)


@pytest.fixture(scope="session")
def gaussian_eps() -> type[GaussianEps]:
    """The exact-predictor class, to build Gaussians on other schedules."""
    return GaussianEps


@pytest.fixture(scope="session")
def gaussian(schedule: NoiseSchedule) -> GaussianEps:
    """A 3-D Gaussian with correlated coordinates and eigenvalues from 0.04 to ~2."""
    mu = torch.tensor([0.5, -1.0, 0.25])
    a = torch.tensor([[1.0, 0.6, -0.3], [0.0, 0.7, 0.4], [0.0, 0.0, 0.25]])
    return GaussianEps(schedule, mu, a.T @ a + 0.02 * torch.eye(3))


@pytest.fixture(scope="session")
def mixture(schedule: NoiseSchedule) -> MixtureEps:
    """A 2-D two-component mixture with well separated modes."""
    weights = torch.tensor([0.3, 0.7])
    mus = torch.tensor([[-1.5, 0.5], [1.0, -0.5]])
    covs = torch.stack(
        [torch.tensor([[0.2, 0.05], [0.05, 0.1]]), torch.tensor([[0.15, -0.05], [-0.05, 0.3]])]
    )
    return MixtureEps(schedule, weights, mus, covs)


def moment_errors(samples: Tensor, mean: Tensor, cov: Tensor) -> tuple[float, float]:
    """Max error of the sample mean and covariance, each in units of its standard error."""
    n = samples.shape[0]
    sd = cov.diagonal().sqrt()
    mean_z = ((samples.mean(0) - mean) / (sd / math.sqrt(n))).abs().max()
    # standard error of cov_ij for Gaussian data: sqrt((S_ii S_jj + S_ij^2) / n)
    se = ((sd[:, None] * sd[None]) ** 2 + cov**2).div(n).sqrt()
    cov_z = ((torch.cov(samples.T) - cov) / se).abs().max()
    return float(mean_z), float(cov_z)


@pytest.fixture(scope="session")
def moments():
    return moment_errors
