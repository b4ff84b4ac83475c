"""Noise schedules, trajectories and per-step variances pinned by values worked out by hand.

Independent sources: Nichol & Dhariwal (2021), "Improved DDPM", Eq. (17) and Sec. 3.2 for the
cosine schedule; Ho et al. (2020), Sec. 4 for the linear one; Song et al. (2021), "DDIM",
Eq. (16) for sigma(eta); improved DDPM's ``space_timesteps`` for the ``linspace`` respacing.
The literals below were computed in float64 with Python's ``math`` module from those
definitions, not with snngen.
"""

from __future__ import annotations

import math

import pytest
import torch

from snngen.diffusion import NoiseSchedule, discrete_timesteps
from snngen.diffusion.ddim import ddim_sigma2
from snngen.diffusion.ddpm import ddpm_step

# alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2), s = 0.008,
# beta_n = min(1 - alpha_bar(n + 1) / alpha_bar(n), 0.999), T = 10. By hand for n = 0:
# f(0) = cos^2(0.008 / 1.008 * pi / 2) = 0.99984459..., f(0.1) = cos^2(0.108 / 1.008 * pi / 2)
# = 0.97194192..., beta_0 = 1 - 0.97194192 / 0.99984459 = 0.0279072...
COSINE_T10_BETAS = [
    0.02790726288603096, 0.07549363729672243, 0.12439598636904847, 0.17718952540157384,
    0.23728153019052478, 0.30988344010857216, 0.40400314303967555, 0.5369981776428854,
    0.743829366895427, 0.999,  # the last one is 1 - f(1)/f(0.9) ~ 1, clipped at 0.999
]
# T = 1000: (n, beta_n, alpha_bar_n); alpha_bar_999 is 0.001 x alpha_bar_998 (clipped beta)
COSINE_T1000 = [
    (0, 4.128422482196914e-05, 0.999958715775178),
    (1, 4.614175273665033e-05, 0.9999125759273678),
    (499, 0.0031458862304780677, 0.4938435904406382),
    (998, 0.7499993929011166, 2.4287669070348544e-06),
    (999, 0.999, 2.4287669070348567e-09),
]


def test_cosine_schedule_with_ten_steps_by_hand():
    """Nichol & Dhariwal 2021, s = 0.008, betas clipped at 0.999 (their Sec. 3.2)."""
    # 1 - ratio loses about 2 digits for the smallest beta (0.028): 1e-13 relative is ~500 ulps
    torch.testing.assert_close(NoiseSchedule.cosine(10).betas,
                               torch.tensor(COSINE_T10_BETAS, dtype=torch.float64),
                               rtol=1e-13, atol=0)
    torch.testing.assert_close(NoiseSchedule.from_name("cosine", 10).betas,
                               torch.tensor(COSINE_T10_BETAS, dtype=torch.float64),
                               rtol=1e-13, atol=0)


def test_cosine_schedule_with_1000_steps_by_hand():
    """The first betas (4e-5) come from 1 - (a ratio within 4e-5 of 1), which leaves ~11 good
    digits in float64: rtol 1e-10. The last beta is exactly the clip value 0.999."""
    sch = NoiseSchedule.cosine()
    assert sch.num_steps == 1000
    for n, beta, alpha_bar in COSINE_T1000:
        assert sch.betas[n].item() == pytest.approx(beta, rel=1e-10, abs=0), n
        assert sch.alphas_cumprod[n].item() == pytest.approx(alpha_bar, rel=1e-10, abs=0), n
    assert sch.betas[-1].item() == 0.999
    assert int((sch.betas >= 0.999).sum()) == 1  # only the last step reaches the clip


def test_linear_schedule_is_ddpms_1e4_to_0_02_over_1000_steps():
    """Ho et al. 2020 Sec. 4: beta_n = 1e-4 + n (0.02 - 1e-4) / 999, n = 0..999."""
    for sch in (NoiseSchedule.linear(), NoiseSchedule.from_name("linear")):
        assert sch.num_steps == 1000
        for n in (0, 1, 500, 998, 999):
            expected = 1e-4 + n * (0.02 - 1e-4) / 999
            # linspace's float64 rounding: a few ulps of 0.02
            assert sch.betas[n].item() == pytest.approx(expected, rel=1e-14, abs=1e-18), n
    # alpha_bar_999 = prod(1 - beta_n), worked out in float64 with math.prod: 4.035e-05
    expected = math.prod(1 - (1e-4 + n * (0.02 - 1e-4) / 999) for n in range(1000))
    assert NoiseSchedule.linear().alphas_cumprod[-1].item() == pytest.approx(expected, rel=1e-12)


def test_linspace_respacing_rounds_halves_to_even_like_improved_ddpm():
    """improved DDPM's space_timesteps: round(i * 999 / 6) with Python's round for 7 steps of
    1000: 0, 166.5 -> 166, 333, 499.5 -> 500, 666, 832.5 -> 832, 999."""
    assert discrete_timesteps(1000, 7, "linspace") == [999, 832, 666, 500, 333, 166, 0]
    # 249.75, 499.5, 749.25
    assert discrete_timesteps(1000, 5, "linspace") == [999, 749, 500, 250, 0]


@pytest.mark.parametrize("eta", [0.5, 0.3, 2.0])
def test_ddim_sigma_follows_eq_16_by_hand(eta):
    """DDIM Eq. (16): sigma = eta sqrt((1 - ab_prev) / (1 - ab)) sqrt(1 - ab / ab_prev);
    ab = 0.5, ab_prev = 0.8 gives sigma^2 = eta^2 * (0.2 / 0.5) * (1 - 0.625) = 0.15 eta^2."""
    assert ddim_sigma2(0.5, 0.8, eta) == pytest.approx(0.15 * eta**2, rel=1e-14)


def test_ddpm_step_variances_by_hand():
    """DDPM Sec. 3.2 on one step with ab = 0.5, ab_prev = 0.8 (beta = 1 - 0.5/0.8 = 0.375):
    fixedlarge sigma^2 = beta = 0.375, fixedsmall beta tilde = 0.375 * 0.2 / 0.5 = 0.15.
    With eps = 0 and x = 0 the mean is 0, so the step returns sigma * noise exactly."""
    x = torch.zeros(1, 3, dtype=torch.float64)
    noise = torch.ones(1, 3, dtype=torch.float64)
    large = ddpm_step(x, x, 0.5, 0.8, noise, variance="fixedlarge")
    small = ddpm_step(x, x, 0.5, 0.8, noise, variance="fixedsmall")
    torch.testing.assert_close(large, torch.full_like(x, math.sqrt(0.375)), rtol=1e-14, atol=0)
    torch.testing.assert_close(small, torch.full_like(x, math.sqrt(0.15)), rtol=1e-14, atol=0)
