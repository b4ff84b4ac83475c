"""Time-folded layers and spiking blocks: ``[T, B, ...]`` in, ``[T, B, ...]`` out.

Per-frame operations (convolutions, linear maps, group norm, pooling, up-sampling) see the time
steps as extra batch entries: the input ``[T, B, ...]`` is folded to ``[T*B, ...]``, the torch
module runs once, and the result is unfolded to ``[T, B, ...]``. Frame ``t`` of the output is
exactly the torch module applied to frame ``t`` of the input.

State-dict keys. :class:`Conv2d`, :class:`ConvTranspose2d`, :class:`Linear`,
:class:`TimeGroupNorm` and the batch norms *subclass* their torch counterparts, so their keys are
torch's own (``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``) and a
plain ``nn.Conv2d`` state dict loads into :class:`Conv2d` unchanged. The generic wrapper
:class:`TimeFolded` holds its module as ``.module``, so its keys carry a ``module.`` prefix
(``module.weight``). Nothing time-related is stored.

Blocks: :class:`LIFNonlinearity` (``x * LIF(x)``) and :class:`SpikingSelfAttention` (the spiking
attention block of the temporal-codebook VQ-VAE). :func:`neuron_from_config` builds any neuron,
or an ANN activation of identical shape for an ANN twin.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snngen.spiking.checkpointing import CheckpointedBlock
from snngen.spiking.neurons import IF, LIF, ParametricLIF

__all__ = [
    "BRAINCOG_LIF",
    "Conv2d",
    "ConvTranspose2d",
    "FoldsTime",
    "LIFNonlinearity",
    "Linear",
    "NEURONS",
    "SpikingSelfAttention",
    "TdBatchNorm1d",
    "TdBatchNorm2d",
    "TimeBatchNorm1d",
    "TimeBatchNorm2d",
    "TimeFolded",
    "TimeGroupNorm",
    "fold_time",
    "neuron_from_config",
    "unfold_time",
]


# --------------------------------------------------------------------------- folding helpers


def fold_time(x: Tensor) -> Tensor:
    """Fold time into batch: ``[T, B, ...] -> [T*B, ...]`` (a view when the layout allows)."""
    _check_time_batch(x, "fold_time", min_frame_dims=0)
    return x.flatten(0, 1)


def unfold_time(y: Tensor, T: int) -> Tensor:
    """Undo :func:`fold_time`: ``[T*B, ...] -> [T, B, ...]``. Raises if ``T`` does not divide."""
    if y.dim() < 1 or T < 1 or y.shape[0] % T:
        raise ValueError(
            f"unfold_time: cannot split shape {tuple(y.shape)} into T={T} steps along dim 0"
        )
    return y.reshape(T, y.shape[0] // T, *y.shape[1:])


def _check_time_batch(
    x: Tensor,
    where: str,
    *,
    frame_dims: tuple[int, ...] | None = None,
    min_frame_dims: int = 1,
    layout: str = "[T, B, ...]",
) -> None:
    """Raise ``ValueError`` unless ``x`` is ``[T, B, *frame]`` with an allowed frame rank."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{where} expects a tensor shaped {layout}, got {type(x).__name__}")
    n = x.dim() - 2
    ok = n in frame_dims if frame_dims is not None else n >= min_frame_dims
    if not ok:
        raise ValueError(
            f"{where} expects a time-first tensor shaped {layout}, got shape {tuple(x.shape)}; "
            f"add the time dimension first (e.g. snngen.spiking.direct_encode(x, T))"
        )


class FoldsTime:
    """Mixin for a torch module subclass: ``forward`` folds ``[T, B, ...]`` to ``[T*B, ...]``,
    runs the torch module's own forward, and unfolds the result to ``[T, B, ...]``.

    Subclasses set ``frame_dims`` (the allowed ranks of one frame, e.g. ``(3,)`` for
    ``[C, H, W]``; ``None`` for any rank >= 1) and ``layout`` (for error messages).
    :class:`snngen.spiking.monitor.Monitor` recognises these modules by this class.
    """

    frame_dims: tuple[int, ...] | None = None
    layout: str = "[T, B, ...]"

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        _check_time_batch(x, type(self).__name__, frame_dims=self.frame_dims, layout=self.layout)
        y = super().forward(x.flatten(0, 1), *args, **kwargs)  # type: ignore[misc]
        return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])


class TimeFolded(nn.Module):
    """Apply any per-frame module to ``[T, B, ...]`` by folding time into batch.

    ``TimeFolded(nn.AvgPool2d(2))(x)`` maps ``[T, B, C, H, W]`` to ``[T, B, C, H/2, W/2]``.
    The wrapped module is ``.module``; state-dict keys are ``module.<torch key>``.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """Return ``module`` applied per frame: ``[T, B, ...] -> [T, B, ...]``."""
        _check_time_batch(x, f"TimeFolded({type(self.module).__name__})", min_frame_dims=0)
        y = self.module(x.flatten(0, 1), *args, **kwargs)
        return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])


class Conv2d(FoldsTime, nn.Conv2d):
    """``nn.Conv2d`` on ``[T, B, C, H, W]`` -> ``[T, B, C_out, H_out, W_out]``; torch's args."""

    frame_dims = (3,)
    layout = "[T, B, C, H, W]"


class ConvTranspose2d(FoldsTime, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` on ``[T, B, C, H, W]``; ``output_size`` (if given) is per frame."""

    frame_dims = (3,)
    layout = "[T, B, C, H, W]"


class Linear(FoldsTime, nn.Linear):
    """``nn.Linear`` on ``[T, B, ..., in_features]`` -> ``[T, B, ..., out_features]``."""

    frame_dims = None
    layout = "[T, B, ..., features]"


class TimeGroupNorm(FoldsTime, nn.GroupNorm):
    """``nn.GroupNorm`` applied per frame (statistics of one sample at one time step).

    Input ``[T, B, C, ...]``; output the same shape.
    """

    frame_dims = None
    layout = "[T, B, C, ...]"


# --------------------------------------------------------------------------- batch norms


class _TimeBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the folded ``T*B`` batch, with the normalised value scaled by ``scale``.

    ``y = weight * scale * (x - mean) / sqrt(var + eps) + bias``, statistics per channel over
    every axis but the channel axis (``T, B`` and the spatial axes). Running statistics are
    updated exactly as torch's batch norm does (unbiased variance, ``momentum``).

    ``per_step=True``: in training, each time step is normalised with its own batch statistics
    (over ``B`` and the spatial axes) and the running statistics are updated once per step, in
    time order - what a torch batch norm called once per step does (the snnTorch tutorials).
    Eval mode uses the running statistics either way.
    """

    frame_dims: tuple[int, ...] = (1, 2)
    layout = "[T, B, C] or [T, B, C, L]"

    def __init__(
        self,
        num_features: int,
        *,
        scale: float = 1.0,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        per_step: bool = False,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.scale = float(scale)
        self.per_step = bool(per_step)

    def _check_input_dim(self, x: Tensor) -> None:
        _check_time_batch(x, type(self).__name__, frame_dims=self.frame_dims, layout=self.layout)

    def forward(self, x: Tensor) -> Tensor:
        """Return the normalised ``x``, same shape (``[T, B, C, ...]``)."""
        self._check_input_dim(x)
        if self.per_step and (self.training or self.running_mean is None):
            return torch.stack([self._batch_norm(x_t) for x_t in x])
        y = self._batch_norm(x.flatten(0, 1))
        return y.reshape(x.shape)

    def _batch_norm(self, x: Tensor) -> Tensor:
        """torch's ``_BatchNorm.forward`` with the weight scaled by ``self.scale``."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        use_buffers = not self.training or self.track_running_stats
        return F.batch_norm(
            x,
            self.running_mean if use_buffers else None,
            self.running_var if use_buffers else None,
            self._scaled_weight(x),
            self.bias,
            use_batch_stats,
            factor,
            self.eps,
        )

    def _scaled_weight(self, x: Tensor) -> Tensor | None:
        if self.scale == 1.0:
            return self.weight
        if self.weight is None:
            return torch.full((self.num_features,), self.scale, dtype=x.dtype, device=x.device)
        return self.weight * self.scale

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scale={self.scale}" + (
            ", per_step=True" if self.per_step else "")


class TimeBatchNorm1d(_TimeBatchNorm):
    """Plain batch norm over folded time for ``[T, B, C]`` or ``[T, B, C, L]``.

    Statistics per channel over ``(T, B[, L])``; keys as ``nn.BatchNorm1d``.
    """

    def __init__(self, num_features: int, **kwargs: Any) -> None:
        super().__init__(num_features, **kwargs)


class TimeBatchNorm2d(_TimeBatchNorm):
    """Plain batch norm over folded time for ``[T, B, C, H, W]``.

    Statistics per channel over ``(T, B, H, W)``; keys as ``nn.BatchNorm2d``.
    """

    frame_dims = (3,)
    layout = "[T, B, C, H, W]"

    def __init__(self, num_features: int, **kwargs: Any) -> None:
        super().__init__(num_features, **kwargs)


class TdBatchNorm1d(_TimeBatchNorm):
    """Threshold-dependent batch norm (Zheng et al. 2021) for ``[T, B, C]`` or ``[T, B, C, L]``.

    ``y = weight * alpha * v_threshold * (x - mean) / sqrt(var + eps) + bias`` with ``mean`` and
    the biased ``var`` per channel over ``(T, B[, L])`` in training, running statistics in eval.
    FSVAE uses it after its linear layers (alpha 1; alpha 2 in the prior/posterior).
    """

    def __init__(
        self, num_features: int, alpha: float = 1.0, v_threshold: float = 1.0, **kwargs: Any
    ) -> None:
        super().__init__(num_features, scale=alpha * v_threshold, **kwargs)
        self.alpha = float(alpha)
        self.v_threshold = float(v_threshold)


class TdBatchNorm2d(TdBatchNorm1d):
    """Threshold-dependent batch norm for ``[T, B, C, H, W]``: statistics over ``(T, B, H, W)``.

    Same formula as :class:`TdBatchNorm1d`; state-dict keys as ``nn.BatchNorm2d``.
    """

    frame_dims = (3,)
    layout = "[T, B, C, H, W]"


# --------------------------------------------------------------------------- neurons


NEURONS: dict[str, type[nn.Module]] = {
    "lif": LIF,
    "if": IF,
    "plif": ParametricLIF,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
}

#: braincog's ``LIFNode`` defaults, as used by the temporal-codebook VQ-VAE: threshold 0.5,
#: tau 2, ``mem += (x - mem) / tau``, hard reset to 0 with the reset detached, and the
#: quadratic-gate surrogate with alpha 2 (= a triangle of half-width 1/alpha = 0.5); a spike
#: only above the threshold (``(mem - threshold).gt(0)``).
BRAINCOG_LIF: dict[str, Any] = {
    "name": "lif",
    "tau": 2.0,
    "v_threshold": 0.5,
    "v_reset": 0.0,
    "detach_reset": True,
    "surrogate": {"name": "triangle", "width": 0.5},
    "strict_threshold": True,
}


def neuron_from_config(spec: str | dict[str, Any] | nn.Module) -> nn.Module:
    """Return a fresh multi-step activation module (``[T, B, ...] -> [T, B, ...]``).

    ``spec`` is a name (``"lif"``, ``"if"``, ``"plif"``, ``"relu"``, ``"silu"``), a dict with
    ``name`` plus keyword arguments (``{"name": "lif", "tau": 2.0, "v_threshold": 0.5}``), or a
    module used as a template (a deep copy is returned, so every call gives its own module).
    ``"relu"``/``"silu"`` are elementwise ANN activations: the ANN twin of a spiking model has
    identical shapes. Raises ``ValueError`` naming an unknown name or bad arguments.
    """
    if isinstance(spec, nn.Module):
        return copy.deepcopy(spec)
    if isinstance(spec, dict):
        kwargs = dict(spec)
        name = kwargs.pop("name", None)
        if name is None:
            raise ValueError(
                f"neuron config {spec!r} has no 'name'; expected one of {sorted(NEURONS)}"
            )
    else:
        name, kwargs = spec, {}
    key = str(name).lower()
    if key not in NEURONS:
        raise ValueError(f"unknown neuron {name!r}; expected one of {sorted(NEURONS)}")
    try:
        return NEURONS[key](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments {kwargs!r} for neuron {name!r}: {err}") from err


def _spikes(out: Tensor | tuple[Tensor, Tensor]) -> Tensor:
    """The spike tensor of a neuron output (neurons with ``return_membrane`` return a pair)."""
    return out[0] if isinstance(out, tuple) else out


class LIFNonlinearity(nn.Module):
    """The LIF-nonlinearity ``y = x * LIF(x)``: real values gated by the spikes they cause.

    ``neuron``: any :func:`neuron_from_config` spec; default :data:`BRAINCOG_LIF`. Input and
    output ``[T, B, ...]``. With ``"relu"`` it computes ``x * relu(x)``; for an ANN twin of a
    block built on this, use ``nn.SiLU`` (the function it replaces) instead of this module.
    """

    def __init__(self, neuron: str | dict[str, Any] | nn.Module | None = None) -> None:
        super().__init__()
        self.neuron = neuron_from_config(BRAINCOG_LIF if neuron is None else neuron)

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x * spikes(x)``, shaped like ``x`` ``[T, B, ...]``."""
        return x * _spikes(self.neuron(x))


class SpikingSelfAttention(CheckpointedBlock):
    """Spiking self-attention over the pixels of each frame (tts_vqvae's ``AttnBlockSnn``).

    For each time step and sample, with ``h = GroupNorm(x)`` and ``N = H*W`` positions:
    ``q = S_q(W_q h)``, ``k = S_k(W_k h)`` (spikes; 1x1 convs; ``S`` the neuron run over time),
    ``v = W_v h`` (real), ``A[i, j] = C^-1/2 sum_c q[c, i] k[c, j]`` (no softmax),
    ``o[c, i] = sum_j A[i, j] v[c, j]``, and the output is ``x + W_o o``.

    Input and output ``[T, B, C, H, W]``. ``neuron``: any :func:`neuron_from_config` spec
    (default :data:`BRAINCOG_LIF`); q and k each get their own copy. GroupNorm uses
    ``num_groups`` (32 in the original) and ``eps`` 1e-6.
    """

    def __init__(
        self,
        channels: int,
        *,
        num_groups: int = 32,
        eps: float = 1e-6,
        neuron: str | dict[str, Any] | nn.Module | None = None,
    ) -> None:
        super().__init__()
        if channels % num_groups:
            raise ValueError(
                f"SpikingSelfAttention: channels={channels} is not divisible by "
                f"num_groups={num_groups}; pass num_groups dividing the channel count"
            )
        spec = BRAINCOG_LIF if neuron is None else neuron
        self.channels = channels
        self.norm = TimeGroupNorm(num_groups, channels, eps=eps)
        self.q = Conv2d(channels, channels, kernel_size=1)
        self.k = Conv2d(channels, channels, kernel_size=1)
        self.v = Conv2d(channels, channels, kernel_size=1)
        self.proj_out = Conv2d(channels, channels, kernel_size=1)
        self.q_neuron = neuron_from_config(spec)
        self.k_neuron = neuron_from_config(spec)

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x + attention(x)``, shaped ``[T, B, C, H, W]``."""
        _check_time_batch(x, "SpikingSelfAttention", frame_dims=(3,), layout="[T, B, C, H, W]")
        t, b, c, height, width = x.shape
        h = self.norm(x)
        q = _spikes(self.q_neuron(self.q(h))).reshape(t * b, c, height * width)
        k = _spikes(self.k_neuron(self.k(h))).reshape(t * b, c, height * width)
        v = self.v(h).reshape(t * b, c, height * width)
        attn = torch.bmm(q.transpose(1, 2), k) * c**-0.5  # [T*B, N query, N key]
        out = torch.bmm(v, attn.transpose(1, 2))  # [T*B, C, N query]
        return x + self.proj_out(out.reshape(t, b, c, height, width))
