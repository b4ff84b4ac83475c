"""Loading golden fixtures and comparing snngen's outputs with the original code's.

A fixture is ``tests/golden/fixtures/NAME.pt``: a dict of tensors and plain containers written
by ``make_fixtures.py`` from the original system's own code (loaded here with
``weights_only=True``). Tolerances: 1e-6 in float64, 1e-4 in float32, relative to the size of
the expected values (``max|actual - expected| <= tol * max(1, max|expected|)``). Float64 runs
are chained and compared as they are; float32 runs through spiking neurons are compared on the
original's spikes, neuron call by neuron call (:func:`original_spikes`, below), so that they
test snngen and not the processor's rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from snngen.spiking.neurons import MultiStepNeuron

FIXTURES = Path(__file__).parent / "fixtures"
TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4}


def load_fixture(name: str) -> dict[str, Any]:
    """Return the fixture ``NAME.pt`` (a dict); skip the test if it has not been built."""
    path = FIXTURES / f"{name}.pt"
    if not path.exists():  # pragma: no cover - fixtures are committed
        pytest.fail(f"golden fixture {path} missing: run python tests/golden/make_fixtures.py")
    return torch.load(path, map_location="cpu", weights_only=True)


def max_difference(actual: Tensor, expected: Tensor) -> float:
    """Largest absolute difference (shapes must match exactly)."""
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"shape {tuple(actual.shape)} != original {tuple(expected.shape)}"
    )
    if actual.numel() == 0:
        return 0.0
    return (actual.detach().double() - expected.detach().double()).abs().max().item()


def assert_matches(actual: Tensor, expected: Tensor, what: str, tol: float | None = None) -> None:
    """Assert ``actual`` equals the original's ``expected`` within the dtype's tolerance."""
    if tol is None:
        tol = TOLERANCE.get(expected.dtype, 1e-4)
    scale = max(1.0, expected.detach().double().abs().max().item()) if expected.numel() else 1.0
    diff = max_difference(actual, expected)
    assert diff <= tol * scale, (
        f"{what}: differs from the original by {diff:.3g} (tol {tol * scale:.3g})"
    )


# ----------------------------------------------------------------------------------------------
# float32 through spiking thresholds: the original's spikes, neuron by neuron
#
# In float32, two correct implementations (or one on two processors: oneDNN's AVX-512 and AVX2
# kernels sum in different orders) give membranes that differ in the last bits. Where a membrane
# lies that close to the threshold, the spike flips, and chained through a network one flip
# changes everything downstream (the VQ-VAE decoder's output by 0.057 on an AVX-512 EPYC). So
# float32 fixtures also record every neuron call of the original: its spikes and the membranes
# that lie within RECORD_RADIUS * scale of the threshold (:func:`neuron_record`). The tests run
# snngen with :func:`original_spikes`, which checks each neuron call against the original's and
# passes the ORIGINAL's spikes on: every stage between two neuron layers is fed the original's
# own input, so a flip cannot cascade, and continuous outputs keep the float32 tolerance above.
#
# The band: BAND * scale, scale = max(|threshold|, max |h| of that neuron call), BAND = 2^-16,
# i.e. 128 ulp of the scale (1 ulp = 2^-23 of it). Why: a membrane is a sum of up to a few
# hundred products (a 3x3 conv over 32 channels: 288; GroupNorm's statistics over 2048 values)
# after a chain of normalisations, and two summation orders of n terms may differ by up to about
# n * 2^-24 of the sum of the magnitudes (the recursive-summation bound): 2^-16 of the scale for
# n ~ 256. Measured: snngen's float32 membranes differ from the original's by at most 4 ulp of
# the scale (all fixtures; DDIM's 50 chained U-Net calls), by 7 ulp with 4-ulp noise on the
# VQ-VAE decoder's input, and snngen's float32 from its float64 by 8 ulp: 16 times inside.
# Checked per neuron call:
# * each recorded membrane of the original equals snngen's within the band;
# * a spike may differ only where both the original's and snngen's membranes lie within the band
#   of the threshold and differ (equal membranes that fire differently are another firing rule:
#   a strict threshold made >=). After an element's first flip its later steps follow another
#   reset: they are not compared (the original's spikes are still passed on).
# Flips are counted and reported (:class:`FlipReport`, printed): at most the original's membranes
# within the band, which the report states. A slip that moves membranes by more than the band (a
# wrong threshold, decay or reset, a missing or wrong layer, another interpolation) fails.

BAND = 2.0**-16
RECORD_RADIUS = 2.0**-10  # relative to the scale: the fixture keeps membranes this near


def pack_bits(flags: Tensor) -> Tensor:
    """Booleans (any shape, flattened) -> uint8, 8 per byte, least significant bit first."""
    flat = flags.detach().flatten().to(torch.int32)
    flat = torch.cat([flat, flat.new_zeros((-flat.numel()) % 8)]).view(-1, 8)
    return (flat << torch.arange(8, dtype=torch.int32)).sum(1).to(torch.uint8)


def unpack_bits(packed: Tensor, count: int) -> Tensor:
    """Inverse of :func:`pack_bits`: the first ``count`` booleans."""
    bits = (packed.to(torch.int32).unsqueeze(1) >> torch.arange(8, dtype=torch.int32)) & 1
    return bits.flatten()[:count].bool()


def neuron_record(name: str, membrane: Tensor, spikes: Tensor, threshold: float) -> dict:
    """What a fixture keeps of one neuron call of the original (used by the builders).

    ``membrane``: the charge before reset ``[T, B, ...]`` (time first, in snngen's layout);
    ``spikes``: the spikes of the same shape. Keeps the spikes (bit-packed), the threshold,
    the scale ``max(|threshold|, max |membrane|)`` and, where a membrane lies within
    ``RECORD_RADIUS * scale`` of the threshold, its flat index and value.
    """
    h = membrane.detach()
    scale = max(abs(float(threshold)), h.double().abs().max().item() if h.numel() else 0.0)
    near = ((h.double() - threshold).abs() <= RECORD_RADIUS * scale).flatten().nonzero()
    near = near.flatten()
    return {"name": name, "shape": list(h.shape), "threshold": float(threshold),
            "scale": scale, "spikes": pack_bits(spikes != 0),
            "near": near.to(torch.int32), "near_membrane": h.flatten()[near].clone()}


def pack_records(records: list[dict]) -> dict:
    """A list of :func:`neuron_record` dicts as one dict of a few tensors (a fixture stores each
    tensor with some overhead: a DDIM run has 950 neuron calls)."""
    return {
        "names": [r["name"] for r in records], "shapes": [r["shape"] for r in records],
        "threshold": torch.tensor([r["threshold"] for r in records], dtype=torch.float64),
        "scale": torch.tensor([r["scale"] for r in records], dtype=torch.float64),
        "spikes": torch.cat([r["spikes"] for r in records]),
        "near_count": torch.tensor([len(r["near"]) for r in records]),
        "near": torch.cat([r["near"] for r in records]),
        "near_membrane": torch.cat([r["near_membrane"] for r in records]),
    }


def unpack_records(packed: dict) -> list[dict]:
    """Inverse of :func:`pack_records`."""
    out, spikes, near = [], 0, 0
    for i, (name, shape) in enumerate(zip(packed["names"], packed["shapes"], strict=True)):
        size, count = (math.prod(shape) + 7) // 8, int(packed["near_count"][i])
        out.append({"name": name, "shape": list(shape),
                    "threshold": float(packed["threshold"][i]),
                    "scale": float(packed["scale"][i]),
                    "spikes": packed["spikes"][spikes:spikes + size],
                    "near": packed["near"][near:near + count],
                    "near_membrane": packed["near_membrane"][near:near + count]})
        spikes, near = spikes + size, near + count
    return out


@dataclass
class FlipReport:
    """What :func:`original_spikes` saw: per spike flip, the neuron call, the original's name of
    the neuron and the margin ``|h - threshold| / scale`` of the original's membrane; the largest
    difference between snngen's and the original's recorded membranes, relative to the scale."""

    what: str
    calls: int = 0
    spikes: int = 0
    in_band: int = 0  # the original's membranes within the band (the most flips possible)
    compared: int = 0  # recorded (near-threshold) membranes compared
    deviation: float = 0.0
    flips: list[tuple[int, str, float]] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """No flip: snngen took every one of the original's spike decisions itself, so float32
        gradients are comparable too. After a flip the gradient of that neuron's later steps
        follows snngen's own reset, so float32 gradients are then left to the float64 fixture
        (which pins them exactly)."""
        return not self.flips

    def __str__(self) -> str:
        worst = max((m for *_, m in self.flips), default=0.0)
        return (f"{self.what}: {len(self.flips)} spike flip(s) in {self.spikes} spikes of "
                f"{self.calls} neuron calls (the original has {self.in_band} membranes within "
                f"{BAND:.3g} x scale of the threshold; largest flip margin {worst:.2g} x scale); "
                f"{self.compared} near-threshold membranes differ by at most "
                f"{self.deviation:.2g} x scale")


def _first_flips(spikes: Tensor, original: Tensor) -> dict[int, int]:
    """``{element: its first step where the spikes differ}`` over the flattened ``[T, N]``."""
    differ = (spikes.detach() != original).reshape(spikes.shape[0], -1)
    element = differ.any(0).nonzero().flatten()
    first = differ[:, element].int().argmax(0)
    return dict(zip(element.tolist(), first.tolist(), strict=True))


def _force(spikes: Tensor, rec: dict, call: int, report: FlipReport, membrane: Tensor) -> Tensor:
    """Check snngen's ``spikes`` and ``membrane`` (both [T, B, ...]) against the original's
    ``rec``; return the original's spikes (with snngen's gradient path: ``spikes + (original -
    spikes).detach()``)."""
    where = f"{report.what}: neuron call {call} (the original's {rec['name']})"
    assert list(spikes.shape) == rec["shape"], (
        f"{where}: snngen's spikes are shaped {list(spikes.shape)}, the original's {rec['shape']}")
    original = unpack_bits(rec["spikes"], spikes.numel()).view(spikes.shape).to(spikes.dtype)
    n = spikes[0].numel()
    flipped = _first_flips(spikes, original)
    ours = membrane.detach().double().flatten()
    band, threshold, scale = BAND * rec["scale"], rec["threshold"], rec["scale"]
    theirs = dict(zip(rec["near"].tolist(), rec["near_membrane"].double().tolist(), strict=True))
    # the recorded membranes, up to each element's first flip (after it, another reset)
    same = [(i, h) for i, h in theirs.items() if divmod(i, n)[0] <= flipped.get(i % n, math.inf)]
    moved = [(i, h) for i, h in same if abs(ours[i].item() - h) > band]
    assert not moved, (
        f"{where}: {len(moved)} of the original's {len(same)} near-threshold membranes differ "
        f"from snngen's by more than the band {band:.3g}; first at flat index {moved[0][0]}: "
        f"snngen {ours[moved[0][0]].item():.9g}, the original {moved[0][1]:.9g}")

    def rounding(i: int) -> bool:
        # both membranes within the band, and not equal: a flip needs a rounding difference
        # (equal membranes on the threshold that fire differently are another firing rule)
        h, h0 = ours[i].item(), theirs.get(i, math.inf)
        return abs(h0 - threshold) <= band and abs(h - threshold) <= band and h != h0

    flat = [t * n + e for e, t in flipped.items()]
    bad = [i for i in flat if not rounding(i)]
    assert not bad, (
        f"{where}: {len(bad)} of {spikes.numel()} spikes differ from the original's other than "
        f"by rounding (band {band:.3g} around the threshold {threshold:g}); first at flat index "
        f"{bad[0]}: snngen's membrane {ours[bad[0]].item():.9g}, the original's "
        + (f"{theirs[bad[0]]:.9g}" if bad[0] in theirs else "farther than 2^-10 x scale"))
    report.calls, report.spikes = report.calls + 1, report.spikes + spikes.numel()
    report.in_band += sum(abs(h - threshold) <= band for h in theirs.values())
    report.compared += len(same)
    report.deviation = max([report.deviation] + [abs(ours[i].item() - h) / scale
                                                 for i, h in same])
    report.flips += [(call, rec["name"], abs(theirs[i] - threshold) / scale) for i in flat]
    return spikes + (original - spikes).detach()


def _membrane(module: MultiStepNeuron, x: Tensor) -> Tensor:
    """snngen's membranes (charge before reset) of ``module`` on ``x`` [T, B, ...]."""
    keep = module.return_membrane
    module.return_membrane = True
    try:
        with torch.no_grad():
            return module.forward(x)[1]
    finally:
        module.return_membrane = keep


@contextmanager
def original_spikes(model: nn.Module, records: dict | list[dict] | None,
                    what: str) -> Iterator[FlipReport]:
    """Run ``model``'s neurons on the original's spikes (see the comment above).

    ``records``: the original's neuron calls (:func:`pack_records` or a list of
    :func:`neuron_record`); None (a float64 fixture, compared exactly and chained): nothing is
    changed.

    Every call of a snngen neuron (``MultiStepNeuron``, through ``__call__``) is paired, in
    call order, with the next of ``records`` (:func:`neuron_record` dicts, in the original's
    call order); its spikes are checked against the original's and replaced by them. On leaving,
    every record must have been used. Yields the :class:`FlipReport`.
    """
    report = FlipReport(what)
    if records is None:
        yield report
        return
    pending = unpack_records(records) if isinstance(records, dict) else list(records)
    total = len(pending)
    calls = [0]

    def hook(module: nn.Module, args: tuple, out: Any) -> Any:
        calls[0] += 1
        assert pending, (f"{what}: snngen's neuron call {calls[0]} ({type(module).__name__}) "
                         f"has no counterpart: the original made {total} neuron calls")
        spikes = out[0] if isinstance(out, tuple) else out
        forced = _force(spikes, pending.pop(0), calls[0], report, _membrane(module, args[0]))
        return (forced, *out[1:]) if isinstance(out, tuple) else forced

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, MultiStepNeuron)]
    try:
        yield report
    finally:
        for h in handles:
            h.remove()
    assert not pending, (f"{what}: snngen made {calls[0]} neuron calls, the original "
                         f"{total} (next unmatched: {pending[0]['name']})")
    print(report)


class NeuronLog:
    """Builder side: the original's neuron updates, turned into :func:`neuron_record` dicts.

    ``add(module, name, membrane, spikes, threshold)`` is called by a builder's patch of the
    original's neuron at every update: one step ``[B, ...]`` of a single-step neuron (snnTorch's
    ``Leaky``, braincog's ``LIFNode``, spikingjelly's nodes), or a whole call ``[T, B, ...]``.
    :meth:`records` groups a single-step neuron's updates ``steps`` at a time into calls, orders
    all calls by their first update and returns their records.
    """

    def __init__(self) -> None:
        self.events: list[tuple[int, str, Tensor, Tensor, float]] = []

    def add(self, module: nn.Module, name: str, membrane: Tensor, spikes: Tensor,
            threshold: float) -> None:
        self.events.append((id(module), name, membrane.detach().clone(),
                            spikes.detach().clone(), float(threshold)))

    def records(self, steps: int | None = None, layout: Any = None) -> dict:
        """``steps``: updates per call (single-step neurons) or None (each update is a call);
        ``layout(name, tensor [T, ...])``: the original's layout -> snngen's (default: as is).
        Returns the calls packed (:func:`pack_records`)."""
        per_module: dict[int, list[int]] = {}
        for i, (key, *_rest) in enumerate(self.events):
            per_module.setdefault(key, []).append(i)
        calls = []
        for indices in per_module.values():
            size = steps or 1
            assert len(indices) % size == 0, f"{len(indices)} updates, not a multiple of {size}"
            calls += [indices[j:j + size] for j in range(0, len(indices), size)]
        out = []
        for call in sorted(calls, key=lambda c: c[0]):
            _, name, _, _, threshold = self.events[call[0]]
            if steps:
                h = torch.stack([self.events[i][2] for i in call])
                s = torch.stack([self.events[i][3] for i in call])
            else:
                h, s = self.events[call[0]][2:4]
            if layout is not None:
                h, s = layout(name, h), layout(name, s)
            out.append(neuron_record(name, h, s, threshold))
        self.events.clear()
        return pack_records(out)
