"""ANN-to-SNN conversion: the IF neuron, threshold balancing, and the error against the ANN."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from conftest import ann_config, noisy_batches

from snngen.conversion import (
    ConvertedIF,
    ConvertedUNet,
    calibrate_thresholds,
    conversion_report,
    convert_unet,
)
from snngen.models.unet import SpikingUNet

STEPS = (4, 8, 16, 32)


def if_subtract_reset(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Brute-force IF: membrane starts at theta / 2, ``v += x_t``, spike when ``v >= theta``,
    then ``v -= theta``. Returns ``theta * spikes`` ``[T, ...]``."""
    v = torch.full_like(x[0], theta / 2)
    out = []
    for x_t in x:
        v = v + x_t
        s = (v >= theta).to(x.dtype)
        v = v - theta * s
        out.append(theta * s)
    return torch.stack(out)


# --------------------------------------------------------------------------- the neuron


@pytest.mark.parametrize("theta", [0.5, 2.0])
def test_converted_if_matches_a_brute_force_neuron(theta):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 5, 40, generator=g, dtype=torch.float64) * theta
    torch.testing.assert_close(ConvertedIF(theta)(x), if_subtract_reset(x, theta))


@pytest.mark.parametrize("T", STEPS)
def test_constant_input_is_rounded_to_the_nearest_level(T):
    """For a constant input ``a`` the rate is ``clip(round(T a / theta), 0, T) / T``: an error
    of at most ``theta / (2T)`` inside ``[0, theta]`` (half-threshold start, subtract reset)."""
    theta = 1.7
    a = torch.linspace(-0.5, 2.2, 997, dtype=torch.float64) * theta  # avoids exact ties
    rate = ConvertedIF(theta)(a.expand(T, -1)).mean(0)
    levels = torch.floor(T * a / theta + 0.5).clamp(0, T)
    torch.testing.assert_close(rate, theta * levels / T)
    inside = (a >= 0) & (a <= theta)
    assert (rate - a)[inside].abs().max() <= theta / (2 * T) + 1e-12


def test_converted_if_rejects_a_bad_threshold():
    with pytest.raises(ValueError, match="threshold"):
        ConvertedIF(0.0)


# --------------------------------------------------------------------------- balancing


def _relu_outputs(ann: SpikingUNet, batches) -> dict[str, torch.Tensor]:
    """Every activation's output over ``batches``, recorded with our own hooks."""
    acts = ann.activations()
    seen: dict[str, list] = {n: [] for n in acts}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: seen[n].append(o.flatten()))
             for n, m in acts.items()]  # fmt: skip
    with torch.no_grad():
        for x, t in batches:
            ann(x, t)
    for h in hooks:
        h.remove()
    return {n: torch.cat(v) for n, v in seen.items()}


@pytest.mark.parametrize("percentile", [99.0, 99.9, 100.0])
def test_thresholds_are_percentiles_of_positive_activations(trained_ann, schedule, percentile):
    batches = noisy_batches(schedule, 3, seed=1)
    thresholds = calibrate_thresholds(trained_ann, batches, percentile=percentile)
    outs = _relu_outputs(trained_ann, batches)
    assert list(thresholds) == list(trained_ann.activations())  # every ReLU, in module order
    for name, o in outs.items():
        pos = o[o > 0].double().numpy()
        assert thresholds[name] == pytest.approx(np.percentile(pos, percentile), rel=1e-4)
    if percentile == 100.0:  # max-normalisation: no activation is above its threshold
        assert all(float(o.max()) <= thresholds[n] * (1 + 1e-6) for n, o in outs.items())


def test_balancing_subsamples_and_handles_silent_layers(trained_ann, schedule):
    batches = noisy_batches(schedule, 3, seed=1)
    full = calibrate_thresholds(trained_ann, batches, percentile=99.0)
    sub = calibrate_thresholds(
        trained_ann, batches, percentile=99.0, max_values=2000,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    for name in full:
        assert sub[name] == pytest.approx(full[name], rel=0.25)
    silent = SpikingUNet(ann_config())
    silent.load_state_dict(trained_ann.state_dict())
    with torch.no_grad():
        silent.bn.bias.fill_(-1e4)  # the stem's ReLU never fires
    assert calibrate_thresholds(silent.eval(), batches)["neuron"] == 1.0


# --------------------------------------------------------------------------- the converted net


@pytest.fixture(scope="module")
def converted(trained_ann, schedule):
    snn = convert_unet(trained_ann, noisy_batches(schedule, 4, seed=1), timesteps=32)
    return snn, noisy_batches(schedule, 2, seed=2)


def test_stem_neuron_quantises_the_anns_preactivation(trained_ann, converted):
    """The stem's input is constant over time (direct coding), so its converted rate is exactly
    the ANN pre-activation rounded to the threshold's levels."""
    # float64 copies: the closed form rounds T pre / theta + 1/2 down where the neuron adds pre
    # T times; in float32 a value within rounding of a half level could go either way
    # depending on the processor's kernels (in float64 it needs to lie within ~1e-15 of one)
    snn, batches = copy.deepcopy(converted[0]).double(), converted[1]
    ann = copy.deepcopy(trained_ann).double()
    x, t = batches[0][0].double(), batches[0][1]
    pre: list = []
    h = ann.neuron.register_forward_pre_hook(lambda _m, a: pre.append(a[0][0]))
    with torch.no_grad():
        ann(x, t)
    h.remove()
    theta = snn.thresholds["neuron"]
    for T in (4, 16):
        snn.timesteps = T
        rate: list = []
        h = snn.unet.neuron.register_forward_hook(lambda _m, _i, o, r=rate: r.append(o.mean(0)))
        with torch.no_grad():
            snn(x, t)
        h.remove()
        expected = theta * torch.floor(T * pre[0] / theta + 0.5).clamp(0, T) / T
        torch.testing.assert_close(rate[0], expected, atol=1e-12, rtol=1e-12)


def test_conversion_error_falls_as_T_grows(trained_ann, converted, capsys):
    snn, batches = converted
    report = conversion_report(trained_ann, snn, batches, steps=STEPS)
    with capsys.disabled():
        print("\n" + report.table())
    err = [report.output_error[T] for T in STEPS]
    assert all(b < 0.8 * a for a, b in zip(err, err[1:], strict=False)), err
    assert err[-1] < 0.15 and err[0] > 2 * err[-1], err
    # every layer is reported, and every layer gets more accurate with more steps
    names = list(trained_ann.activations())
    assert all(list(report.layer_error[T]) == names for T in STEPS)
    for name in names:
        assert report.layer_error[32][name] < report.layer_error[4][name], name
    assert snn.timesteps == 32  # restored
    # the pooled output error equals a direct computation at that T
    snn.timesteps = 8
    with torch.no_grad():
        diff = torch.cat([(snn(x, t) - trained_ann(x, t)).flatten() for x, t in batches])
        ref = torch.cat([trained_ann(x, t).flatten() for x, t in batches])
    snn.timesteps = 32
    assert report.output_error[8] == pytest.approx(float(diff.norm() / ref.norm()), rel=1e-5)
    assert report.output_mse[8] == pytest.approx(float(diff.pow(2).mean()), rel=1e-5)
    # printable and JSON-ready
    text = report.table()
    assert all(n in text for n in names) and "T=32" in text and "output rel. L2" in text
    back = json.loads(json.dumps(report.to_dict()))
    assert back["output_error"]["32"] == pytest.approx(err[-1])


def test_converted_net_converges_to_the_ann(trained_ann, schedule):
    """With max-normalised thresholds (no clipping on these inputs) the only error is the
    rate quantisation, which vanishes as T grows."""
    batches = noisy_batches(schedule, 1, seed=3)
    snn = convert_unet(trained_ann, batches, timesteps=256, percentile=100.0)
    report = conversion_report(trained_ann, snn, batches, steps=(16, 256))
    assert report.output_error[256] < 0.03 < report.output_error[16], report.output_error
    x, t = batches[0]
    with torch.no_grad():
        eps = snn(x, t)
    assert eps.shape == x.shape and torch.isfinite(eps).all()


def test_converted_net_samples_like_any_eps_model(trained_ann, converted, schedule):
    from snngen.diffusion import sample

    snn, _ = converted
    snn.timesteps = 4
    x = sample("ddim", snn, schedule, (2, 1, 8, 8), 5, generator=torch.Generator().manual_seed(0))
    snn.timesteps = 32
    assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()


# --------------------------------------------------------------------------- refusals


def test_conversion_refuses_what_it_cannot_convert(trained_ann, schedule):
    batches = noisy_batches(schedule, 1, seed=1)
    with pytest.raises(ValueError, match="not ReLU"):
        calibrate_thresholds(SpikingUNet(ann_config(neuron="silu")), batches)
    with pytest.raises(ValueError, match="not ReLU"):  # a spiking net is not an ANN
        calibrate_thresholds(SpikingUNet(ann_config(neuron="if", timesteps=2)), batches)
    with pytest.raises(ValueError, match="attention"):
        calibrate_thresholds(SpikingUNet(ann_config(attn=[1])), batches)
    with pytest.raises(ValueError, match="TSM"):
        calibrate_thresholds(SpikingUNet(ann_config(tsm=True)), batches)
    with pytest.raises(ValueError, match="percentile"):
        calibrate_thresholds(trained_ann, batches, percentile=0.0)
    with pytest.raises(ValueError, match="at least one batch"):
        calibrate_thresholds(trained_ann, [])
    with pytest.raises(ValueError, match="no threshold"):
        ConvertedUNet(trained_ann, {"neuron": 1.0}, timesteps=4)
    assert not math.isnan(trained_ann(*batches[0]).sum().item())  # the ANN is left as it was
