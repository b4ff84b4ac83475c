"""ANN-to-SNN conversion of a trained ReLU U-Net (SDM's conversion path, Fast-SNN style).

A ReLU network with the spiking U-Net's layout (``SpikingUNet`` with ``neuron: relu``) becomes a
spiking one by replacing every ReLU with an integrate-and-fire neuron that

* resets by **subtraction** (the charge above threshold is kept),
* starts its membrane at **half the threshold** (rounds the rate to the nearest level instead of
  down), and
* emits spikes of height ``theta`` (its threshold), so the mean output over ``T`` steps
  approximates ``clip(ReLU input, 0, theta)``, with an error of at most ``theta / (2T)`` for a
  constant input.

Thresholds come from **threshold balancing** on calibration batches: ``theta_l`` is a high
percentile (default 99.9, "robust normalisation", Rueckauer et al. 2017) of the positive
activations of ReLU ``l`` over the batches. (Fast-SNN instead trains a quantised ANN whose clip
values become the thresholds, with ``T = 2^b - 1``; percentile balancing needs no retraining.)

Everything between two neurons is linear in eval mode (convs, batch norm with running
statistics, the time-embedding addition, real-valued shortcuts and skip concatenations, nearest
up-sampling), so the mean over time of every layer tracks the ANN. The non-spiking parts keep
their real values: the time-embedding MLP (constant over time) and the head (``BN -> Swish ->
conv -> ...``), which reads the **time-average** of the body's output. Attention blocks (products
of two spiking signals) are not converted: a U-Net with ``attn`` levels is refused.

:func:`conversion_report` measures the converted network against the ANN: per layer, the
relative L2 error of the neuron's mean output against the ReLU's output, and the relative L2 and
mean squared error of the predicted noise, for each number of steps ``T``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from snngen.models.unet import SpikingUNet
from snngen.spiking.neurons import IF

__all__ = [
    "ConversionReport",
    "ConvertedIF",
    "ConvertedUNet",
    "calibrate_thresholds",
    "conversion_report",
    "convert_unet",
]

Batch = tuple[Tensor, Tensor]  # (x [B, C, H, W], t [B]) inputs of the eps network


class ConvertedIF(nn.Module):
    """IF neuron for conversion: ``[T, B, ...] -> theta * spikes [T, B, ...]``.

    Subtractive reset, membrane initialised at ``theta / 2`` (done by adding ``theta / 2`` to the
    first step's input: for IF, ``h_1 = v_0 + x_1``). Uses the shared
    :class:`snngen.spiking.IF` (reference backend: thresholds differ per layer).
    """

    def __init__(self, threshold: float) -> None:
        super().__init__()
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        self.threshold = float(threshold)
        self.neuron = IF(v_threshold=self.threshold, v_reset=None, backend="reference")

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat([x[:1] + 0.5 * self.threshold, x[1:]], dim=0)
        return self.neuron(x) * self.threshold

    def extra_repr(self) -> str:
        return f"threshold={self.threshold:.4g}"


def _check_ann(ann: SpikingUNet) -> None:
    bad = {
        n: type(a.neuron).__name__
        for n, a in ann.activations().items()
        if not isinstance(a.neuron, nn.ReLU)
    }
    if bad:
        raise ValueError(
            f"conversion needs a ReLU network (neuron: relu); these activations are not ReLU: "
            f"{dict(list(bad.items())[:4])}"
        )
    if ann.cfg.attn:
        raise ValueError(
            f"conversion of attention blocks is not supported (attn={ann.cfg.attn}); "
            "train the ANN with attn: []"
        )
    if ann.cfg.tsm:
        raise ValueError("conversion takes a plain ANN, not a TSM network (tsm: false)")


@torch.no_grad()
def _record(net: nn.Module, acts: dict[str, nn.Module], fn) -> dict[str, Tensor]:
    """Run ``fn()`` with forward hooks on ``acts``; return each module's output (last call)."""
    out: dict[str, Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, o, name=name: out.__setitem__(name, o))
        for name, m in acts.items()
    ]
    try:
        fn()
    finally:
        for h in hooks:
            h.remove()
    return out


@torch.no_grad()
def calibrate_thresholds(
    ann: SpikingUNet,
    batches: Iterable[Batch],
    *,
    percentile: float = 99.9,
    max_values: int = 1_000_000,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Threshold balancing: the ``percentile`` of each ReLU's positive outputs on ``batches``.

    ``batches`` yields ``(x [B, C, H, W], t [B])`` network inputs (for a diffusion model: noisy
    images ``x_t`` at random ``t``). At most ``max_values`` positive values per layer are kept
    (a uniform random subsample drawn with ``generator``). A layer that never fires gets 1.0.
    Returns ``{activation name: threshold}``.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    _check_ann(ann)
    ann.eval()
    acts = ann.activations()
    values: dict[str, list[Tensor]] = {name: [] for name in acts}
    n_batches = 0
    for x, t in batches:
        outs = _record(ann, acts, lambda x=x, t=t: ann(x, t))
        for name, o in outs.items():
            pos = o[o > 0].float().flatten()
            if pos.numel() > max_values:
                idx = torch.randperm(pos.numel(), generator=generator)[:max_values]
                pos = pos[idx.to(pos.device)]
            values[name].append(pos.cpu())
        n_batches += 1
    if n_batches == 0:
        raise ValueError("calibration needs at least one batch")
    thresholds = {}
    for name, chunks in values.items():
        v = torch.cat(chunks)
        if v.numel() > max_values:
            v = v[torch.randperm(v.numel(), generator=generator)[:max_values]]
        thresholds[name] = float(torch.quantile(v, percentile / 100)) if v.numel() else 1.0
        thresholds[name] = thresholds[name] if thresholds[name] > 0 else 1.0
    return thresholds


class ConvertedUNet(nn.Module):
    """The spiking network converted from an ANN U-Net: ``forward(x [B,C,H,W], t [B]) -> eps``.

    The body runs ``timesteps`` steps with :class:`ConvertedIF` neurons; the head reads the
    body's mean over time (repeated over the ANN's own ``timesteps``, normally 1). Change
    ``timesteps`` freely: nothing else depends on it.
    """

    def __init__(self, ann: SpikingUNet, thresholds: dict[str, float], timesteps: int) -> None:
        super().__init__()
        _check_ann(ann)
        missing = set(ann.activations()) - set(thresholds)
        if missing:
            raise ValueError(f"no threshold for activations {sorted(missing)[:4]}")
        self.unet = copy.deepcopy(ann).eval()
        for name, act in self.unet.activations().items():
            act.neuron = ConvertedIF(thresholds[name])
        self.timesteps = int(timesteps)
        self.thresholds = dict(thresholds)

    def body(self, x: Tensor, t: Tensor) -> Tensor:
        """The spiking body's output ``[T, B, ch, H, W]``."""
        return self.unet.body(x, t, self.timesteps)

    def set_threshold_scale(self, scale: float) -> None:
        """Threshold-guided inference, as :meth:`SpikingUNet.set_threshold_scale`."""
        self.unet.set_threshold_scale(scale)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        h = self.body(x, t).mean(dim=0, keepdim=True)
        return self.unet.head(h.expand(self.unet.cfg.timesteps, *h.shape[1:]))


def convert_unet(
    ann: SpikingUNet,
    calibration: Iterable[Batch],
    *,
    timesteps: int = 32,
    percentile: float = 99.9,
    generator: torch.Generator | None = None,
) -> ConvertedUNet:
    """Calibrate thresholds on ``calibration`` batches and return the converted SNN."""
    thresholds = calibrate_thresholds(ann, calibration, percentile=percentile, generator=generator)
    return ConvertedUNet(ann, thresholds, timesteps)


@dataclass
class ConversionReport:
    """Errors of a converted network against its ANN, per number of SNN steps ``T``.

    ``layer_error[T][name]``: ``||mean_t(out_t) - relu_out|| / ||relu_out||`` of activation
    ``name``; ``output_error[T]``: the same relative L2 error of the predicted noise;
    ``output_mse[T]``: its mean squared error. ``thresholds``: the balanced thresholds.
    """

    steps: list[int]
    thresholds: dict[str, float]
    layer_error: dict[int, dict[str, float]] = field(default_factory=dict)
    output_error: dict[int, float] = field(default_factory=dict)
    output_mse: dict[int, float] = field(default_factory=dict)

    def table(self, max_layers: int | None = None) -> str:
        """A text table: one row per layer (and the output), one column per ``T``."""
        names = list(self.thresholds)[:max_layers]
        width = max([len(n) for n in names] + [14])
        head = f"{'layer':<{width}} {'theta':>8} " + " ".join(
            f"{'T=' + str(s):>9}" for s in self.steps
        )
        rows = [head, "-" * len(head)]
        for n in names:
            errs = " ".join(f"{self.layer_error[s][n]:>9.4f}" for s in self.steps)
            rows.append(f"{n:<{width}} {self.thresholds[n]:>8.3f} {errs}")
        rows.append("-" * len(head))
        rows.append(
            f"{'output rel. L2':<{width}} {'':>8} "
            + " ".join(f"{self.output_error[s]:>9.4f}" for s in self.steps)
        )
        rows.append(
            f"{'output MSE':<{width}} {'':>8} "
            + " ".join(f"{self.output_mse[s]:>9.2e}" for s in self.steps)
        )
        return "\n".join(rows)

    def to_dict(self) -> dict:
        return {
            "steps": self.steps,
            "thresholds": self.thresholds,
            "layer_error": {str(k): v for k, v in self.layer_error.items()},
            "output_error": {str(k): v for k, v in self.output_error.items()},
            "output_mse": {str(k): v for k, v in self.output_mse.items()},
        }


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@torch.no_grad()
def conversion_report(
    ann: SpikingUNet,
    snn: ConvertedUNet,
    batches: Sequence[Batch],
    steps: Sequence[int] = (4, 8, 16, 32),
) -> ConversionReport:
    """Compare ``snn`` with ``ann`` on ``batches`` of ``(x, t)`` for each ``T`` in ``steps``.

    Errors are pooled over the batches (sums of squares, then the ratio). ``snn.timesteps`` is
    restored afterwards.
    """
    ann.eval()
    snn.eval()
    ann_acts, snn_acts = ann.activations(), snn.unet.activations()
    refs = []
    for x, t in batches:
        outs = _record(ann, ann_acts, lambda x=x, t=t: refs.append(ann(x, t)))
        refs[-1] = (refs[-1], {k: v[0] for k, v in outs.items()})  # ANN frames are identical
    report = ConversionReport(steps=list(steps), thresholds=dict(snn.thresholds))
    saved = snn.timesteps
    try:
        for s in steps:
            snn.timesteps = int(s)
            num = {k: 0.0 for k in ann_acts}
            den = {k: 0.0 for k in ann_acts}
            out_num = out_den = sq = 0.0
            count = 0
            for (x, t), (y_ann, a_ann) in zip(batches, refs, strict=True):
                holder: list[Tensor] = []
                outs = _record(snn, snn_acts, lambda x=x, t=t, h=holder: h.append(snn(x, t)))
                for k, v in outs.items():
                    num[k] += float((v.mean(0) - a_ann[k]).pow(2).sum())
                    den[k] += float(a_ann[k].pow(2).sum())
                diff = holder[0] - y_ann
                out_num += float(diff.pow(2).sum())
                out_den += float(y_ann.pow(2).sum())
                sq += float(diff.pow(2).sum())
                count += diff.numel()
            report.layer_error[int(s)] = {
                k: (num[k] / den[k]) ** 0.5 if den[k] > 0 else float(num[k] > 0) for k in num
            }
            report.output_error[int(s)] = (out_num / max(out_den, 1e-24)) ** 0.5
            report.output_mse[int(s)] = sq / max(count, 1)
    finally:
        snn.timesteps = saved
    return report
