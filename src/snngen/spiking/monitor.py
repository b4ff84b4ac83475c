"""Firing rates, synaptic operations and an energy estimate for any ``nn.Module``.

::

    with Monitor(model) as mon:
        model(x)
    rows = mon.report()      # list of dicts, one per neuron / synaptic layer that ran
    print(mon.table())       # the same as a text table, with a total line

What is counted, exactly (forward hooks; nothing in the model changes):

* **Neurons** (every :class:`~snngen.spiking.neurons.MultiStepNeuron`): spikes and neuron-steps,
  overall and per time step. Firing rate = spikes / (neurons x steps x samples).
* **Synaptic layers** (every ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose1d/2d/3d``, ``nn.Linear``,
  folded or plain). For each call:

  - input binary (every value 0 or 1): **SOPs** (accumulates) = the number of
    (input spike, output element) connections, i.e. the sum over input spikes of their exact
    fan-out. For a convolution this is ``sum(conv(spikes, ones_like(weight)))`` with the layer's
    own stride, padding (and padding mode), dilation and groups, so border effects are exact.
  - otherwise: **MACs** = the dense count of the standard FLOP counters (fvcore convention):
    conv ``out_elements * C_in/groups * prod(kernel)``; transposed conv
    ``in_elements * C_out/groups * prod(kernel)``; linear ``rows * in * out``. Biases excluded.

  With ``skip_zero_weights=True`` SOPs count only connections whose weight is non-zero.
* **Energy** (pJ) = ``pj_per_ac * SOPs + pj_per_mac * MACs`` (defaults 0.9 and 4.6 pJ, 45 nm,
  Horowitz 2014). Neuron updates, norms and functional ops (e.g. the matmuls of attention) are
  not counted.

Per sample. Values in the report are divided by the number of samples that passed through each
layer: its batch size summed over forward calls of the monitored model (a layer run several times
inside one call of the model counts its batch once; calls made outside the model's ``forward``,
e.g. in a sampling loop, count each time). The batch axis is 1 for time-folded layers and neurons
(``[T, B, ...]``), ``N / T`` inside :class:`~snngen.spiking.layers.TimeFolded`, and 0 for plain
torch layers. A plain layer fed a hand-folded ``[T*B, ...]`` tensor would count frames as
samples: pass ``n_samples`` to fix the divisor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snngen.spiking.layers import FoldsTime, TimeFolded
from snngen.spiking.neurons import MultiStepNeuron

__all__ = ["Monitor", "PJ_PER_AC", "PJ_PER_MAC"]

PJ_PER_AC = 0.9  # pJ per 32-bit float add, 45 nm (Horowitz 2014)
PJ_PER_MAC = 4.6  # pJ per 32-bit float multiply-add, 45 nm (Horowitz 2014)

_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@dataclass
class _Stats:
    """Running totals of one module (integers, summed over calls)."""

    name: str
    type: str
    kind: str  # "neuron" or "synapse"
    order: int
    samples: int = 0
    last_call: int = -1
    spikes: int = 0
    neuron_steps: int = 0
    step_spikes: list[int] = field(default_factory=list)
    step_neurons: list[int] = field(default_factory=list)
    sops: int = 0
    macs: int = 0
    spike_calls: int = 0
    real_calls: int = 0


# --------------------------------------------------------------------------- exact counts


def is_binary(x: Tensor) -> bool:
    """True when every value of ``x`` is 0 or 1 (an empty tensor counts as binary)."""
    return bool(((x == 0) | (x == 1)).all())


def _int_sum(x: Tensor) -> int:
    """Exact integer sum of a tensor holding small integer values."""
    return int(x.double().sum().round().item())


def _connections(weight: Tensor, skip_zero_weights: bool) -> Tensor:
    """Float32 indicator of the connections: ones, or ``weight != 0``; shaped like ``weight``."""
    if skip_zero_weights:
        return (weight != 0).float()
    return torch.ones_like(weight, dtype=torch.float32)


def conv_sops(module: nn.modules.conv._ConvNd, spikes: Tensor, skip_zero_weights: bool) -> int:
    """Exact SOPs of a plain conv on binary ``spikes`` ``[N, C_in, *spatial]``: the number of
    (input spike, output element) connections = ``sum(conv(spikes, indicator(weight)))``."""
    ind = _connections(module.weight, skip_zero_weights)
    counts = module._conv_forward(spikes.float(), ind, None)  # layer's own padding mode
    return _int_sum(counts)


def conv_transpose_sops(
    module: nn.modules.conv._ConvTransposeNd,
    spikes: Tensor,
    out_shape: tuple[int, ...],
    skip_zero_weights: bool,
) -> int:
    """Exact SOPs of a transposed conv on ``spikes`` ``[N, C_in, *spatial]``; ``out_shape`` is
    the actual output's spatial shape (fixes ``output_padding``/``output_size``)."""
    nd = spikes.dim() - 2
    ind = _connections(module.weight, skip_zero_weights)
    output_padding = []
    for d in range(nd):
        size = (spikes.shape[2 + d] - 1) * module.stride[d] - 2 * module.padding[d]
        size += module.dilation[d] * (module.kernel_size[d] - 1) + 1
        output_padding.append(out_shape[d] - size)
    counts = _CONV_TRANSPOSE[nd](
        spikes.float(),
        ind,
        None,
        module.stride,
        module.padding,
        tuple(output_padding),
        module.groups,
        module.dilation,
    )
    return _int_sum(counts)


def linear_sops(module: nn.Linear, spikes: Tensor, skip_zero_weights: bool) -> int:
    """Exact SOPs of a linear layer on binary ``spikes`` ``[..., in_features]``."""
    per_input = spikes.reshape(-1, module.in_features).double().sum(0)  # spikes per input unit
    if skip_zero_weights:
        fan_out = (module.weight != 0).sum(0).double()
    else:
        fan_out = torch.full_like(per_input, module.out_features)
    return int((per_input * fan_out).sum().round().item())


def dense_macs(module: nn.Module, x: Tensor, y: Tensor) -> int:
    """Dense MAC count of one call with (unfolded-to-plain) input ``x`` and output ``y``."""
    if isinstance(module, nn.Linear):
        return x.numel() * module.out_features
    k = math.prod(module.kernel_size)
    if module.transposed:
        return x.numel() * (module.out_channels // module.groups) * k
    return y.numel() * (module.in_channels // module.groups) * k


def synaptic_ops(
    module: nn.Module, x: Tensor, y: Tensor, skip_zero_weights: bool = False
) -> tuple[int, int]:
    """``(SOPs, MACs)`` of one call of a plain conv / transposed conv / linear layer.

    ``x`` and ``y`` are the layer's plain input and output (time already folded into batch).
    A binary ``x`` gives ``(SOPs, 0)``, a real-valued one ``(0, MACs)``.
    """
    if not is_binary(x):
        return 0, dense_macs(module, x, y)
    if isinstance(module, nn.Linear):
        return linear_sops(module, x, skip_zero_weights), 0
    if module.transposed:
        return conv_transpose_sops(module, x, tuple(y.shape[2:]), skip_zero_weights), 0
    return conv_sops(module, x, skip_zero_weights), 0


def _is_synapse(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd))


# --------------------------------------------------------------------------- the monitor


class Monitor:
    """Collects firing rates, SOPs, MACs and energy of ``model`` while used as a context manager.

    Args:
        model: any module; every neuron and conv/linear layer inside it is watched.
        pj_per_ac: energy per accumulate (SOP), in pJ.
        pj_per_mac: energy per multiply-accumulate, in pJ.
        n_samples: divisor for per-sample values; ``None`` infers it per layer (module doc).
        skip_zero_weights: count only non-zero-weight connections in SOPs.

    Totals accumulate over every forward call made while attached; :meth:`reset` clears them.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        pj_per_ac: float = PJ_PER_AC,
        pj_per_mac: float = PJ_PER_MAC,
        n_samples: int | None = None,
        skip_zero_weights: bool = False,
    ) -> None:
        self.model = model
        self.pj_per_ac = float(pj_per_ac)
        self.pj_per_mac = float(pj_per_mac)
        if n_samples is not None and n_samples < 1:
            raise ValueError(f"n_samples must be a positive int or None, got {n_samples!r}")
        self.n_samples = n_samples
        self.skip_zero_weights = skip_zero_weights
        self._handles: list[Any] = []
        self._stats: dict[str, _Stats] = {}
        self._model_call = 0  # id of the current call of ``model`` (0: none yet)
        self._in_model = 0
        self._fold_steps: list[int] = []  # T of the enclosing TimeFolded calls

    # -- attaching ---------------------------------------------------------------------------

    def __enter__(self) -> Monitor:
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def attach(self) -> None:
        """Register the forward hooks (idempotent)."""
        if self._handles:
            return
        hook = self.model.register_forward_pre_hook
        self._handles.append(hook(lambda m, a: self._enter_model()))
        self._handles.append(self.model.register_forward_hook(lambda m, a, o: self._leave_model()))
        for order, (name, module) in enumerate(self.model.named_modules()):
            if isinstance(module, MultiStepNeuron):
                self._watch(module, name, "neuron", order)
            elif _is_synapse(module):
                self._watch(module, name, "synapse", order)
            elif isinstance(module, TimeFolded):
                self._handles.append(module.register_forward_pre_hook(self._push_fold))
                self._handles.append(module.register_forward_hook(self._pop_fold))

    def detach(self) -> None:
        """Remove every hook; collected numbers are kept."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._in_model = 0
        self._fold_steps.clear()

    def reset(self) -> None:
        """Forget all collected numbers (hooks stay as they are)."""
        self._stats.clear()
        self._model_call = 0

    def _watch(self, module: nn.Module, name: str, kind: str, order: int) -> None:
        label = name or type(module).__name__

        def hook(mod: nn.Module, args: tuple, out: Any) -> None:
            if not args or not isinstance(args[0], Tensor):
                return
            stats = self._stats.get(label)
            if stats is None:
                stats = self._stats[label] = _Stats(label, type(mod).__name__, kind, order)
            with torch.no_grad(), torch.autocast(args[0].device.type, enabled=False):
                if kind == "neuron":
                    self._record_neuron(stats, out[0] if isinstance(out, tuple) else out)
                else:
                    self._record_synapse(mod, stats, args[0], out)

        self._handles.append(module.register_forward_hook(hook))

    def _enter_model(self) -> None:
        if self._in_model == 0:
            self._model_call += 1
            self._fold_steps.clear()
        self._in_model += 1

    def _leave_model(self) -> None:
        self._in_model = max(0, self._in_model - 1)

    def _push_fold(self, module: nn.Module, args: tuple) -> None:
        self._fold_steps.append(int(args[0].shape[0]) if args and args[0].dim() else 1)

    def _pop_fold(self, module: nn.Module, args: tuple, out: Any) -> None:
        if self._fold_steps:
            self._fold_steps.pop()

    # -- recording ---------------------------------------------------------------------------

    def _count_samples(self, stats: _Stats, batch: int) -> None:
        """Add ``batch`` samples, once per call of the model (each time outside of one)."""
        if self._in_model and stats.last_call == self._model_call:
            return
        stats.samples += batch
        stats.last_call = self._model_call if self._in_model else -1

    def _record_neuron(self, stats: _Stats, spikes: Tensor) -> None:
        """Spikes ``[T, B, ...]``: totals and per-step counts."""
        steps = spikes.shape[0]
        per_step = spikes.reshape(steps, -1)
        self._count_samples(stats, spikes.shape[1] if spikes.dim() > 1 else 1)
        stats.spikes += _int_sum(per_step)
        stats.neuron_steps += per_step.numel()
        counts = per_step.double().sum(1).round().long().tolist()
        while len(stats.step_spikes) < steps:
            stats.step_spikes.append(0)
            stats.step_neurons.append(0)
        for t, count in enumerate(counts):
            stats.step_spikes[t] += count
            stats.step_neurons[t] += per_step.shape[1]

    def _record_synapse(self, module: nn.Module, stats: _Stats, x: Tensor, y: Tensor) -> None:
        """Fold time if the layer is time-folded, then count SOPs or MACs of the call."""
        if isinstance(module, FoldsTime):
            batch = x.shape[1]
            x, y = x.flatten(0, 1), y.flatten(0, 1)
        elif self._fold_steps:
            batch = max(1, x.shape[0] // self._fold_steps[-1])
        else:
            batch = x.shape[0] if x.dim() > 1 else 1
        self._count_samples(stats, batch)
        sops, macs = synaptic_ops(module, x, y, self.skip_zero_weights)
        stats.sops += sops
        stats.macs += macs
        if macs == 0:  # binary input (or an empty one)
            stats.spike_calls += 1
        else:
            stats.real_calls += 1

    # -- results -----------------------------------------------------------------------------

    def _ordered(self) -> list[_Stats]:
        return sorted(self._stats.values(), key=lambda s: s.order)

    def _samples(self, stats: _Stats) -> int:
        return self.n_samples if self.n_samples is not None else max(1, stats.samples)

    def firing_rates(self) -> dict[str, float]:
        """Mean firing rate of every neuron module that ran: ``{name: spikes / neuron-steps}``."""
        return {
            s.name: s.spikes / max(1, s.neuron_steps) for s in self._ordered() if s.kind == "neuron"
        }

    def rates_per_step(self) -> dict[str, list[float]]:
        """Firing rate at each time step ``t`` of every neuron module: ``{name: [rate_t]}``."""
        return {s.name: _step_rates(s) for s in self._ordered() if s.kind == "neuron"}

    def _row(self, s: _Stats) -> dict[str, Any]:
        n = self._samples(s)
        is_neuron = s.kind == "neuron"
        sops, macs = s.sops / n, s.macs / n
        return {
            "name": s.name,
            "type": s.type,
            "kind": s.kind,
            "firing_rate": s.spikes / max(1, s.neuron_steps) if is_neuron else None,
            "rate_per_step": _step_rates(s) if is_neuron else None,
            "spikes": s.spikes / n if is_neuron else None,
            "input": None if is_neuron else _input_kind(s),
            "sops": None if is_neuron else sops,
            "macs": None if is_neuron else macs,
            "energy_pj": None if is_neuron else self.pj_per_ac * sops + self.pj_per_mac * macs,
            "sops_total": None if is_neuron else s.sops,
            "macs_total": None if is_neuron else s.macs,
            "samples": n,
        }

    def report(self) -> list[dict[str, Any]]:
        """One dict per watched module that ran, in model order, values per sample.

        Keys: ``name, type, kind`` (``"neuron"``/``"synapse"``), ``firing_rate``,
        ``rate_per_step`` (list over t), ``spikes`` (per sample) for neurons; ``input``
        (``"spikes"``/``"real"``/``"mixed"``), ``sops``, ``macs``, ``energy_pj`` (per sample),
        ``sops_total``, ``macs_total`` (exact integers over all calls) for synaptic layers;
        ``samples`` (the divisor). Keys that do not apply are ``None``.
        """
        return [self._row(s) for s in self._ordered()]

    def totals(self) -> dict[str, Any]:
        """Whole-model sums per sample: ``sops, macs, energy_pj``, exact ``sops_total`` and
        ``macs_total``, and the overall ``firing_rate`` (all spikes / all neuron-steps)."""
        rows = self.report()
        syn = [r for r in rows if r["kind"] == "synapse"]
        neurons = [s for s in self._ordered() if s.kind == "neuron"]
        steps = sum(s.neuron_steps for s in neurons)
        return {
            "sops": sum(r["sops"] for r in syn),
            "macs": sum(r["macs"] for r in syn),
            "energy_pj": sum(r["energy_pj"] for r in syn),
            "sops_total": sum(r["sops_total"] for r in syn),
            "macs_total": sum(r["macs_total"] for r in syn),
            "firing_rate": sum(s.spikes for s in neurons) / steps if steps else None,
        }

    def table(self) -> str:
        """The report as a fixed-width text table (per sample), with a total line."""
        header = ("layer", "type", "rate", "input", "SOPs", "MACs", "energy (pJ)")
        lines = [header]
        for r in self.report():
            lines.append(
                (
                    r["name"],
                    r["type"],
                    _fmt(r["firing_rate"], ".4f"),
                    r["input"] or "",
                    _fmt(r["sops"], ",.0f"),
                    _fmt(r["macs"], ",.0f"),
                    _fmt(r["energy_pj"], ",.1f"),
                )
            )
        t = self.totals()
        total_rate = _fmt(t["firing_rate"], ".4f")
        lines.append(
            (
                "TOTAL",
                "",
                total_rate,
                "",
                _fmt(t["sops"], ",.0f"),
                _fmt(t["macs"], ",.0f"),
                _fmt(t["energy_pj"], ",.1f"),
            )
        )
        widths = [max(len(str(row[i])) for row in lines) for i in range(len(header))]
        text = [
            "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in lines
        ]
        text.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(line.rstrip() for line in text)

    def __str__(self) -> str:
        return self.table()


def _step_rates(s: _Stats) -> list[float]:
    return [n / max(1, d) for n, d in zip(s.step_spikes, s.step_neurons, strict=True)]


def _input_kind(s: _Stats) -> str:
    if s.spike_calls and s.real_calls:
        return "mixed"
    return "spikes" if s.spike_calls else "real"


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)
