"""The noise schedule shared by every sampler, the forward process and the training loss.

Conventions
-----------
* **Discrete timesteps** ``n = 0 .. N-1`` index the ``N`` training steps (DDPM's ``t = 1 .. T``
  shifted by one, as in most code). ``n = -1`` stands for clean data: ``alpha_bar(-1) = 1``.
* **The network** is ``eps_model(x_t [B, ...], t [B]) -> eps [B, ...]`` with ``t`` on this
  discrete scale. DDPM, DDIM and Analytic-DPM call it with integer ``torch.long`` timesteps;
  DPM-Solver calls it with a floating tensor that may be fractional (see below).
* **Continuous time** (for DPM-Solver) follows DPM-Solver's ``NoiseScheduleVP('discrete')``:
  discrete step ``n`` sits at ``t_n = (n + 1) / N`` in ``(0, 1]``, ``log alpha_t`` is the
  piecewise-linear interpolation of ``log alpha_n = 0.5 log alpha_bar_n`` between these knots,
  ``sigma_t = sqrt(1 - alpha_t^2)`` and ``lambda_t = log(alpha_t / sigma_t)`` (half the log-SNR).
  The network input for a time ``t`` is ``N t - 1`` ("model time"), an integer at the knots.
  The usable range is ``t in [1/N, 1]`` (model time ``[0, N-1]``).

All schedule tensors are float64 on the CPU; samplers turn per-step coefficients into Python
floats, so the schedule works with samples on any device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from snngen.diffusion._common import expand_to, randn_like
from snngen.errors import ConfigError

SCHEDULES = ("linear", "cosine")
SPACINGS = ("uniform", "linear", "leading", "quadratic", "quad", "linspace", "trailing", "sddpm",
            "analytic-dpm")


def linear_betas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM's linear betas ``[N]`` float64 (Ho et al. 2020, Sec. 4: 1e-4 to 0.02, N = 1000)."""
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def cosine_betas(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal (2021) cosine schedule ``[N]`` float64.

    ``alpha_bar(u) = f(u) / f(0)``, ``f(u) = cos(((u + s) / (1 + s)) * pi / 2)^2`` (their Eq. 17),
    ``beta_n = min(1 - alpha_bar((n+1)/N) / alpha_bar(n/N), max_beta)``.
    """
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation of the knots ``(xp, fp)`` (``xp`` increasing) at ``x``.

    Outside ``[xp[0], xp[-1]]`` the end segments are extended linearly (as DPM-Solver's
    ``interpolate_fn``). Exact at the knots.
    """
    idx = (torch.searchsorted(xp, x.contiguous(), right=True) - 1).clamp(0, xp.numel() - 2)
    x0, x1, f0, f1 = xp[idx], xp[idx + 1], fp[idx], fp[idx + 1]
    w = (x - x0) / (x1 - x0)
    return f0 * (1 - w) + f1 * w


def _as_float64(x: float | Sequence[float] | Tensor) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float64).cpu()


class NoiseSchedule:
    """A variance-preserving noise schedule with ``N`` discrete steps.

    Attributes (float64 ``[N]`` tensors unless noted): ``betas``, ``alphas = 1 - betas``,
    ``alphas_cumprod`` (alpha_bar), ``alphas_cumprod_prev`` (alpha_bar of the step before, 1 for
    ``n = 0``), ``posterior_variance`` (DDPM's beta tilde, Eq. 7), ``log_alpha`` (``0.5 log
    alpha_bar``, the knots of the continuous-time schedule) and ``num_steps`` (``N``, an int).

    Build one with :meth:`linear`, :meth:`cosine`, :meth:`from_name` or from any betas.
    """

    def __init__(self, betas: Tensor | Sequence[float] | np.ndarray) -> None:
        betas = _as_float64(betas)
        if betas.ndim != 1 or betas.numel() < 2:
            raise ValueError(f"betas must be 1-D with at least 2 steps, got shape {betas.shape}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must lie strictly between 0 and 1")
        self.betas = betas
        self.num_steps = int(betas.numel())
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat(
            [torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]]
        )
        # DDPM Eq. (7): beta tilde_n = (1 - alpha_bar_{n-1}) / (1 - alpha_bar_n) * beta_n
        self.posterior_variance = (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod) * betas
        # DPM-Solver 'discrete' schedule: knots of log alpha_t at model times 0..N-1
        self.log_alpha = 0.5 * torch.log(self.alphas_cumprod)
        self._knots = torch.arange(self.num_steps, dtype=torch.float64)
        self._q_cache: dict[str, tuple[Tensor, Tensor]] = {}

    # ----------------------------------------------------------------------------- constructors
    @classmethod
    def linear(
        cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> NoiseSchedule:
        """DDPM / SDDPM linear schedule (1e-4 to 0.02 over 1000 steps)."""
        return cls(linear_betas(num_steps, beta_start, beta_end))

    @classmethod
    def cosine(
        cls, num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999
    ) -> NoiseSchedule:
        """Nichol & Dhariwal cosine schedule."""
        return cls(cosine_betas(num_steps, s, max_beta))

    @classmethod
    def from_name(cls, name: str, num_steps: int = 1000) -> NoiseSchedule:
        """``"linear"`` or ``"cosine"`` with default parameters."""
        if name not in SCHEDULES:
            raise ConfigError(f"unknown noise schedule {name!r}; choose one of {SCHEDULES}")
        return cls.linear(num_steps) if name == "linear" else cls.cosine(num_steps)

    def __repr__(self) -> str:
        b = self.betas
        return f"NoiseSchedule(N={self.num_steps}, betas={b[0].item():.3g}..{b[-1].item():.3g})"

    # -------------------------------------------------------------------------- discrete time
    def alpha_bar(self, n: int) -> float:
        """``alpha_bar_n`` for an integer step ``n`` in ``-1 .. N-1`` (``alpha_bar_{-1} = 1``)."""
        n = int(n)
        if not -1 <= n < self.num_steps:
            raise ValueError(f"timestep {n} is outside -1..{self.num_steps - 1}")
        return 1.0 if n < 0 else float(self.alphas_cumprod[n])

    def alphas_cumprod_at(self, model_time: Tensor | float) -> Tensor:
        """``alpha_bar`` at a possibly fractional model time (continuous-time schedule).

        Equal to ``alphas_cumprod[n]`` at integer ``n``; in between, ``log sqrt(alpha_bar)`` is
        interpolated linearly, exactly as the DPM-Solver samplers see the schedule. float64.
        """
        return torch.exp(2 * self.log_alpha_at(model_time))

    # ------------------------------------------------------------------------ continuous time
    def model_time(self, t: Tensor | float) -> Tensor:
        """Continuous ``t in [1/N, 1]`` -> network input on the discrete scale, ``N t - 1``."""
        return _as_float64(t) * self.num_steps - 1

    def continuous_time(self, model_time: Tensor | float) -> Tensor:
        """Inverse of :meth:`model_time`: ``t = (n + 1) / N``."""
        return (_as_float64(model_time) + 1) / self.num_steps

    def log_alpha_at(self, model_time: Tensor | float) -> Tensor:
        """``log alpha`` at a model time (piecewise-linear between the integer knots)."""
        return _interp(_as_float64(model_time), self._knots, self.log_alpha)

    def marginal_log_mean_coeff(self, t: Tensor | float) -> Tensor:
        """``log alpha_t`` at continuous time ``t`` (DPM-Solver's name)."""
        return self.log_alpha_at(self.model_time(t))

    def marginal_alpha(self, t: Tensor | float) -> Tensor:
        """``alpha_t = sqrt(alpha_bar)``: ``x_t = alpha_t x_0 + sigma_t eps``."""
        return torch.exp(self.marginal_log_mean_coeff(t))

    def marginal_std(self, t: Tensor | float) -> Tensor:
        """``sigma_t = sqrt(1 - alpha_t^2)``."""
        return torch.sqrt(-torch.expm1(2 * self.marginal_log_mean_coeff(t)))

    def marginal_lambda(self, t: Tensor | float) -> Tensor:
        """``lambda_t = log alpha_t - log sigma_t`` (half the log-SNR), decreasing in ``t``."""
        return self.lambda_at(self.model_time(t))

    def inverse_lambda(self, lam: Tensor | float) -> Tensor:
        """Continuous ``t`` with ``lambda_t = lam`` (DPM-Solver's ``inverse_lambda``)."""
        return self.continuous_time(self.model_time_of_lambda(lam))

    def lambda_at(self, model_time: Tensor | float) -> Tensor:
        """``lambda`` at a model time."""
        log_alpha = self.log_alpha_at(model_time)
        return log_alpha - 0.5 * torch.log(-torch.expm1(2 * log_alpha))

    def model_time_of_lambda(self, lam: Tensor | float) -> Tensor:
        """Model time where ``lambda`` equals ``lam``.

        ``log alpha = -0.5 log(1 + exp(-2 lambda))``, then invert the piecewise-linear
        ``log alpha`` (decreasing in time, so the knots are flipped).
        """
        log_alpha = -0.5 * torch.logaddexp(torch.zeros(()).double(), -2 * _as_float64(lam))
        return _interp(log_alpha, self.log_alpha.flip(0), self._knots.flip(0))

    # ------------------------------------------------------------------- forward process, loss
    def q_sample(
        self,
        x0: Tensor,
        t: Tensor | int,
        noise: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw ``x_t ~ q(x_t | x_0)``: ``sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise``.

        DDPM Eq. (4). ``x0 [B, ...]``, ``t`` integer timesteps ``[B]`` (or one int) in
        ``0..N-1``, ``noise`` like ``x0`` (drawn from ``generator`` when omitted).
        Returns ``x_t [B, ...]`` in ``x0``'s dtype.
        """
        t = torch.as_tensor(t, device=x0.device).long().reshape(-1).expand(x0.shape[0])
        if t.device.type == "cpu" and (int(t.min()) < 0 or int(t.max()) >= self.num_steps):
            raise ValueError(f"timesteps must lie in 0..{self.num_steps - 1}")
        if noise is None:
            noise = randn_like(x0, generator)
        signal, noise_scale = self._q_coefficients(t.device)
        return expand_to(signal[t], x0) * x0 + expand_to(noise_scale[t], x0) * noise

    def _q_coefficients(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """``sqrt(alpha_bar)`` and ``sqrt(1 - alpha_bar)`` on ``device`` (cached; float64 on the
        CPU, float32 elsewhere), so that training never copies or synchronises."""
        key = str(device)
        if key not in self._q_cache:
            dtype = torch.float64 if device.type == "cpu" else torch.float32
            ab = self.alphas_cumprod
            self._q_cache[key] = (ab.sqrt().to(device, dtype), (1 - ab).sqrt().to(device, dtype))
        return self._q_cache[key]

    def sample_timesteps(
        self,
        batch_size: int,
        *,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Uniform random training timesteps ``[B]`` (long) in ``0..N-1``."""
        return torch.randint(
            0, self.num_steps, (batch_size,), device=device, generator=generator, dtype=torch.long
        )

    def eps_loss(
        self,
        model: Callable[[Tensor, Tensor], Tensor],
        x0: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """DDPM's simple loss (Eq. 14, Algorithm 1): ``mean ||eps - model(x_t, t)||^2``.

        ``t`` uniform in ``0..N-1`` and ``eps`` standard normal, both drawn from ``generator``
        (which must live on ``x0``'s device); ``model(x_t [B, ...], t [B] long) -> [B, ...]``.
        Returns a scalar (mean over all elements; float32, or float64 for float64 inputs).
        """
        t = self.sample_timesteps(x0.shape[0], device=x0.device, generator=generator)
        noise = randn_like(x0, generator)
        pred = model(self.q_sample(x0, t, noise), t)
        if pred.shape != noise.shape:
            raise ValueError(
                f"the model must return eps shaped like x0 {tuple(x0.shape)}, "
                f"got {tuple(pred.shape)}"
            )
        dtype = torch.promote_types(pred.dtype, torch.float32)  # half -> float32; float64 kept
        return torch.mean((pred.to(dtype) - noise.to(dtype)) ** 2)


def discrete_timesteps(num_train_steps: int, steps: int, spacing: str = "uniform") -> list[int]:
    """``steps`` distinct training timesteps in sampling (decreasing) order.

    Spacings (``N`` training steps, ``S`` sampling steps):

    * ``"uniform"`` (aliases ``"linear"``, ``"leading"``): ``0, k, 2k, ..`` with ``k = N // S``
      (DDIM's "uniform", Song et al. 2021 Appendix D.2; diffusers' "leading");
    * ``"quadratic"`` (alias ``"quad"``): ``floor(linspace(0, sqrt(0.8 N), S)^2)`` (DDIM's
      "quadratic"); repeated values are pushed up by one so the ``S`` steps stay distinct;
    * ``"linspace"``: ``round(linspace(0, N-1, S))``, both ends included (improved DDPM's
      respacing, Analytic-DPM's DDPM trajectories);
    * ``"trailing"``: ``round(N - i N / S) - 1`` for ``i < S``, starts at ``N-1`` (diffusers);
    * ``"sddpm"``: SDDPM's DDIM grid ``int(N - 1 - i N / S)`` for ``i < S`` (999, 979, .., 19
      for 50 of 1000 steps), without the step 0 that the original's grid ends on (its sampler
      stops there without a network call, see :func:`snngen.diffusion.ddim.ddim_sample`'s
      ``end_step``); for ``S > N / 2`` the grid reaches 0 itself, so there are ``S - 1`` steps;
    * ``"analytic-dpm"``: Analytic-DPM's ``linear`` steps, ``round(1 + k (N-1)/(S-1))`` with the
      stride summed in floating point, minus one (their steps count from 1): ``"linspace"``
      except where a value falls on a half (Python rounds halves to even).
    """
    if spacing not in SPACINGS:
        raise ConfigError(f"unknown timestep spacing {spacing!r}; choose one of {SPACINGS}")
    if not 1 <= steps <= num_train_steps:
        raise ConfigError(
            f"steps={steps} is not possible with a {num_train_steps}-step noise schedule; "
            f"choose 1..{num_train_steps}"
        )
    n, s = num_train_steps, steps
    if spacing in ("uniform", "linear", "leading"):
        seq = [i * (n // s) for i in range(s)]
    elif spacing in ("quadratic", "quad"):
        seq = [int(v) for v in np.linspace(0, np.sqrt(0.8 * n), s) ** 2]
        for i in range(1, s):  # keep them distinct (DDIM's code repeats small values)
            seq[i] = max(seq[i], seq[i - 1] + 1)
        if seq[-1] >= n:
            raise ConfigError(
                f"quadratic spacing cannot place {s} distinct steps in {n}; use fewer steps or "
                "another spacing"
            )
    elif spacing == "linspace":
        seq = [int(v) for v in np.round(np.linspace(0, n - 1, s))]
    elif spacing == "sddpm":
        seq = [max(int(n - 1 - n / s * i), 0) for i in range(s)]
        seq = [v for v in seq if v > 0] or [0]
    elif spacing == "analytic-dpm":
        seq, index, stride = [], 1.0, (n - 1) / max(s - 1, 1)
        for _ in range(s):
            seq.append(round(index) - 1)
            index += stride
    else:  # trailing
        seq = sorted(int(v) for v in np.round(np.arange(n, 0, -n / s))[:s] - 1)
    return sorted(set(seq), reverse=True)


def check_timesteps(schedule: NoiseSchedule, timesteps: Sequence[int] | Tensor) -> list[int]:
    """Validate user timesteps: distinct integers in ``0..N-1``, returned in decreasing order."""
    seq = [int(v) for v in torch.as_tensor(timesteps).reshape(-1).tolist()]
    if not seq:
        raise ValueError("timesteps is empty")
    if len(set(seq)) != len(seq) or min(seq) < 0 or max(seq) >= schedule.num_steps:
        raise ValueError(
            f"timesteps must be distinct integers in 0..{schedule.num_steps - 1}, "
            f"got {seq[:10]}{' ...' if len(seq) > 10 else ''}"
        )
    return sorted(seq, reverse=True)


def sampling_timesteps(
    schedule: NoiseSchedule,
    steps: int | None,
    spacing: str,
    timesteps: Sequence[int] | Tensor | None = None,
) -> list[int]:
    """The decreasing evaluation timesteps of a discrete sampler (DDPM, DDIM, Analytic-DPM).

    ``timesteps`` (validated by :func:`check_timesteps`) wins over ``steps``/``spacing``;
    ``steps=None`` means all ``N`` steps. The chain then always ends at clean data (``n = -1``).
    """
    if timesteps is not None:
        return check_timesteps(schedule, timesteps)
    steps = schedule.num_steps if steps is None else int(steps)
    return discrete_timesteps(schedule.num_steps, steps, spacing)
