"""Deterministic samplers against the exact probability-flow ODE map of Gaussian data.

For Gaussian data the ODE map between two noise levels is linear and known in closed form
(see ``GaussianEps.transport``), so the sample-by-sample error of DDIM and DPM-Solver from the
same ``x_T`` measures their discretisation error alone.
"""

from __future__ import annotations

import math

import pytest
import torch

from snngen.diffusion import ddim_sample, discrete_timesteps, dpm_solver_sample, time_grid
from snngen.diffusion import dpm_solver as dpm

STEPS = 20


@pytest.fixture(scope="module")
def x_T():
    return torch.randn(1000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _rms(x, ref):
    return float(((x - ref) ** 2).sum(1).mean().sqrt())


def _ddim_error(gaussian, x_T, spacing="uniform"):
    sch = gaussian.schedule
    start = discrete_timesteps(1000, STEPS, spacing)[0]
    x = ddim_sample(gaussian, sch, x_T, STEPS, spacing=spacing, clip_denoised=False)
    return _rms(x, gaussian.transport(x_T, sch.alpha_bar(start), 1.0))  # DDIM ends at clean data


def _dpm_error(gaussian, x_T, **options):
    sch = gaussian.schedule
    x = dpm_solver_sample(gaussian, sch, x_T, STEPS, **options)
    return _rms(x, gaussian.transport(x_T, sch.alpha_bar(999), sch.alpha_bar(0)))


@pytest.mark.parametrize("algorithm", ["dpmsolver", "dpmsolver++"])
@pytest.mark.parametrize("method", ["multistep", "singlestep"])
def test_dpm_solver_order1_equals_ddim(gaussian, x_T, algorithm, method):
    """DPM-Solver-1 is DDIM (eta = 0) on the same times; DDIM's last step to clean data is
    DPM-Solver's ``denoise_to_zero``."""
    sch = gaussian.schedule
    taus = discrete_timesteps(1000, STEPS, "uniform")  # 950, 900, .., 0
    ddim = ddim_sample(gaussian, sch, x_T, timesteps=taus, clip_denoised=False)  # unbounded data
    solver = dpm_solver_sample(
        gaussian,
        sch,
        x_T,
        order=1,
        method=method,
        algorithm=algorithm,
        timesteps=taus,
        denoise_to_zero=True,
    )
    torch.testing.assert_close(solver, ddim, rtol=0, atol=1e-10)
    # and on DPM-Solver's own time grid (fractional times): order 1 == DDIM's update formula
    grid = time_grid(sch, 10, "logSNR")
    a = dpm_solver_sample(gaussian, sch, x_T, order=1, algorithm=algorithm, timesteps=grid)
    b = dpm_solver_sample(gaussian, sch, x_T, order=1, algorithm="dpmsolver", timesteps=grid)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_dpm_solver_2_and_3_beat_ddim_at_20_steps(gaussian, x_T, capsys):
    ddim = {s: _ddim_error(gaussian, x_T, s) for s in ("uniform", "quadratic", "trailing")}
    errors = {}
    for algorithm in ("dpmsolver", "dpmsolver++"):
        for method in ("multistep", "singlestep"):
            for order in (1, 2, 3):
                errors[algorithm, method, order] = _dpm_error(
                    gaussian, x_T, order=order, method=method, algorithm=algorithm
                )
    with capsys.disabled():
        print("\nRMS error vs exact ODE map, 20 network calls:")
        for spacing, e in ddim.items():
            print(f"  DDIM ({spacing:9s})              {e:.2e}")
        for (algorithm, method, order), e in errors.items():
            print(f"  {algorithm:11s} {method:10s} order {order}  {e:.2e}")
    best_ddim = min(ddim.values())
    for (_, method, order), e in errors.items():
        if order == 3 or (order == 2 and method == "multistep"):
            assert e < best_ddim / 4
        elif order == 2:  # single-step order 2 has only 10 steps of 2 calls each
            assert e < best_ddim


@pytest.mark.parametrize("data_pred", [False, True], ids=["dpmsolver", "dpmsolver++"])
@pytest.mark.parametrize("kind", ["singlestep", "multistep"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_local_error_has_the_solver_order(gaussian, x_T, data_pred, kind, order):
    """One step from the exact trajectory has local error O(h^(order+1)) in lambda."""
    sch = gaussian.schedule
    model = dpm._Model(gaussian, sch, data_pred=data_pred, model_time="float", clip_denoised=False)
    lam0 = float(sch.lambda_at(500.0))

    def point(lam):
        return dpm._point(sch, float(sch.model_time_of_lambda(lam)))

    def exact(p):
        return gaussian.transport(x_T, sch.alpha_bar(999), p.alpha**2)

    errors = []
    for h in (0.2, 0.1, 0.05):
        target = point(lam0 + h)
        if kind == "singlestep":
            s = point(lam0)
            x = dpm.singlestep_update(model, exact(s), model(exact(s), s), s, target, order)
        else:
            pts = [point(lam0 - k * h) for k in range(order - 1, -1, -1)]
            history = [(p, model(exact(p), p)) for p in pts]
            x = dpm.multistep_update(exact(pts[-1]), history, target, order, data_pred)
        errors.append(_rms(x, exact(target)))
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert min(rates) > order + 0.8, rates


@pytest.mark.parametrize("skip_type", ["logSNR", "time_quadratic", "time_uniform"])
@pytest.mark.parametrize("method", ["multistep", "singlestep"])
def test_every_time_spacing_converges_at_the_solver_order(gaussian, x_T, skip_type, method):
    """Global error against the exact ODE map when the number of calls doubles (24, 48, 96).

    On logSNR and quadratic grids each order reaches its rate (single-step order 3 ends with
    lower-order steps, so it is held to 2). A grid uniform in t keeps a last interval whose
    length in lambda shrinks only logarithmically on the discrete linear schedule, so there
    only convergence is asked for: the reason DPM-Solver recommends logSNR for such models."""
    sch = gaussian.schedule
    exact = gaussian.transport(x_T, sch.alpha_bar(999), sch.alpha_bar(0))
    for order in (1, 2, 3):
        errors = [
            _rms(dpm_solver_sample(gaussian, sch, x_T, n, order=order, method=method,
                                   skip_type=skip_type), exact)
            for n in (24, 48, 96)
        ]  # fmt: skip
        rates = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
        if skip_type == "time_uniform":
            assert min(rates) > 0.9, (order, errors)
        else:
            expected = 2 if (order == 3 and method == "singlestep") else order
            assert rates[-1] > expected - 0.3, (order, errors, rates)


def test_reference_third_order_multistep_is_less_accurate(gaussian, x_T):
    """The DPM-Solver code's coefficient of the 2nd difference is half the Taylor one."""
    ours = _dpm_error(gaussian, x_T, order=3)
    reference = _dpm_error(gaussian, x_T, order=3, reference_third_order=True)
    assert ours < reference


def test_long_runs_converge_to_the_ode(gaussian, x_T):
    sch = gaussian.schedule
    exact = gaussian.transport(x_T, sch.alpha_bar(999), 1.0)
    ddim = ddim_sample(gaussian, sch, x_T, 1000, spacing="uniform", clip_denoised=False)
    assert _rms(ddim, exact) < 5e-3
    assert _dpm_error(gaussian, x_T, order=3) < 5e-3
    solver = dpm_solver_sample(gaussian, sch, x_T, 50, order=3, denoise_to_zero=True)
    assert _rms(solver, exact) < 2e-3


def test_time_grids(schedule):
    for skip in ("logSNR", "time_uniform", "time_quadratic"):
        grid = time_grid(schedule, 10, skip)
        assert len(grid) == 11 and grid[0] == 999 and grid[-1] == 0
        assert all(a > b for a, b in zip(grid, grid[1:], strict=False))
    lam = schedule.lambda_at(torch.tensor(time_grid(schedule, 10, "logSNR"), dtype=torch.float64))
    torch.testing.assert_close(lam.diff(), lam.diff()[:1].expand(10))  # uniform in lambda
    assert time_grid(schedule, 20, "time_uniform")[1] == pytest.approx(999 - 999 / 20)
    assert dpm.singlestep_orders(20, 3) == [3] * 6 + [2]
    assert dpm.singlestep_orders(21, 3) == [3] * 6 + [2, 1]
    assert dpm.singlestep_orders(7, 2) == [2, 2, 2, 1]
    with pytest.raises(ValueError):
        time_grid(schedule, 10, t_start=0.5, t_end=0.6)
    with pytest.raises(ValueError):
        dpm_solver_sample(lambda x, t: x, schedule, (2, 2), timesteps=[10, 20])
