"""``golden.original_spikes``, the float32 comparison through spiking thresholds, on records made
by hand: an IF neuron (threshold 1, ``h_t = v_t + x_t``, hard reset) whose membranes are its
inputs at the first step, so each case sets the original's and snngen's membranes exactly."""

from __future__ import annotations

import pytest
import torch
from golden import BAND, neuron_record, original_spikes, pack_records, unpack_records
from torch import nn

from snngen.spiking.neurons import IF

EPS = 2.0**-23  # one float32 ulp of 1


def run(x: list[list[float]], original_h: list[list[float]], original_s: list[list[float]],
        strict: bool = False):
    """snngen's IF on ``x`` [T, N] against an original with membranes ``original_h`` and
    spikes ``original_s``; returns (the spikes passed on, the report)."""
    model = nn.Sequential(IF(v_threshold=1.0, strict_threshold=strict))
    x_t = torch.tensor(x, dtype=torch.float32).unsqueeze(1)  # [T, 1, N]
    record = neuron_record("if", torch.tensor(original_h).unsqueeze(1),
                           torch.tensor(original_s).unsqueeze(1), 1.0)
    with original_spikes(model, pack_records([record]), "case") as report:
        out = model(x_t)
    return out[:, 0], report


def test_a_flip_within_the_band_is_counted_and_the_originals_spike_passed_on():
    # snngen's membrane 1 - 1 ulp (silent), the original's 1 + 1 ulp (fired): rounding
    out, report = run([[1 - EPS, 0.5]], [[1 + EPS, 0.5]], [[1.0, 0.0]])
    assert out.tolist() == [[1.0, 0.0]]  # the original's spikes go on
    assert len(report.flips) == 1 and report.in_band == 1 and not report.exact
    assert report.flips[0][2] == pytest.approx(EPS)  # margin of the original's membrane
    assert "1 spike flip(s)" in str(report)


def test_a_flip_far_from_the_threshold_fails():
    with pytest.raises(AssertionError, match="other than by rounding"):
        run([[1.5, 0.5]], [[0.9, 0.5]], [[0.0, 0.0]])
    # the original's membrane just outside the band (the scale is max(|threshold|, max |h|) =
    # 1): the two membranes then differ by more than the band too
    out_of_band = 1 + 2 * BAND
    with pytest.raises(AssertionError, match="membranes differ from snngen's by more than"):
        run([[1 - EPS, 0.5]], [[out_of_band, 0.5]], [[1.0, 0.0]])


def test_equal_membranes_that_fire_differently_are_another_firing_rule():
    # both exactly on the threshold: the original is strict (silent), snngen fires at it
    with pytest.raises(AssertionError, match="other than by rounding"):
        run([[1.0, 0.5]], [[1.0, 0.5]], [[0.0, 0.0]])
    _, report = run([[1.0, 0.5]], [[1.0, 0.5]], [[0.0, 0.0]], strict=True)
    assert report.exact


def test_a_recorded_membrane_off_by_more_than_the_band_fails_without_a_flip():
    near = 1 + 2.0**-12  # recorded (within 2^-10 of the scale), spikes agree, values do not
    with pytest.raises(AssertionError, match="near-threshold membranes differ"):
        run([[near + 4 * BAND, 0.5]], [[near, 0.5]], [[1.0, 0.0]])


def test_after_a_flip_the_element_s_later_steps_are_not_compared():
    # step 0 flips within the band; at step 1 the original was reset (0 + x, recorded as near
    # the threshold), snngen not (1 - ulp + x, about 2, fires): another reset, not an error
    x = 1 - 2.0**-12
    out, report = run([[1 - EPS], [x]], [[1 + EPS], [x]], [[1.0], [0.0]])
    assert out.tolist() == [[1.0], [0.0]] and len(report.flips) == 1


def test_snngen_and_the_original_must_make_the_same_neuron_calls():
    record = neuron_record("if", torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), 1.0)
    model = nn.Sequential(IF(v_threshold=1.0), IF(v_threshold=1.0))
    with pytest.raises(AssertionError, match="has no counterpart"):
        with original_spikes(model, [record], "one record"):
            model(torch.zeros(1, 1, 2))
    with pytest.raises(AssertionError, match="snngen made 2 neuron calls, the original 3"):
        with original_spikes(model, [record] * 3, "three records"):
            model(torch.zeros(1, 1, 2))
    with pytest.raises(AssertionError, match=r"shaped \[1, 1, 3\], the original's \[1, 1, 2\]"):
        with original_spikes(model[:1], [record], "shape"):
            model[:1](torch.zeros(1, 1, 3))


def test_records_pack_and_unpack():
    gen = torch.Generator().manual_seed(0)
    h = [torch.rand(3, 2, 5, generator=gen) * 2, torch.rand(2, 1, 7, generator=gen) * 2]
    records = [neuron_record(f"n{i}", m, m > 1, 1.0) for i, m in enumerate(h)]
    back = unpack_records(pack_records(records))
    for a, b in zip(records, back, strict=True):
        assert a["name"] == b["name"] and a["shape"] == b["shape"]
        assert torch.equal(a["spikes"], b["spikes"]) and torch.equal(a["near"], b["near"])
