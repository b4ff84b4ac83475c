"""Input encoders ``[B, ...] -> [T, B, ...]`` and output decoders ``[T, B, ...] -> [B, ...]``.

Encoders: :func:`direct_encode` (alias :func:`repeat`) presents the same real values at every
step, as FSVAE and SDDPM do; :func:`poisson_encode` draws Bernoulli spikes with probability
``x`` per step. Event data already arrives time-first (``[T, B, 2, H, W]``) and needs no encoder.

Decoders: :func:`mean_decode` (rate), :func:`last_decode` (last step, e.g. the membrane of the
snnTorch autoencoder's output layer), :func:`weighted_decode` (``sum_t decay^(T-1-t) x_t``, FSVAE's
image read-out and SDDPM's head with ``decay = 0.8``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "direct_encode",
    "last_decode",
    "mean_decode",
    "poisson_encode",
    "repeat",
    "weighted_decode",
]


def _check_steps(T: int) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"number of time steps T must be an int >= 1, got {T!r}")


def _check_time_first(x: Tensor, where: str) -> None:
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(
            f"{where} expects a time-first tensor [T, B, ...] with T >= 1, got {shape}"
        )


def direct_encode(x: Tensor, T: int) -> Tensor:
    """Repeat ``x`` ``[B, ...]`` over ``T`` steps: returns ``[T, B, ...]``.

    The result is an ``expand``-ed view (no copy, stride 0 along time): do not write into it in
    place; layers that need contiguous memory copy it when they fold time into batch.
    """
    _check_steps(T)
    return x.unsqueeze(0).expand(T, *x.shape)


#: Alias of :func:`direct_encode` ("repeat coding").
repeat = direct_encode


def poisson_encode(
    x: Tensor, T: int, *, generator: torch.Generator | None = None, clamp: bool = False
) -> Tensor:
    """Bernoulli (rate) coding: returns spikes ``[T, B, ...]`` in {0, 1}, dtype of ``x``.

    Step ``t`` fires where ``u_t < x`` with ``u_t ~ U[0, 1)`` drawn from ``generator`` (on
    ``x``'s device), so a seeded generator gives identical spikes on every call; ``x = 0`` never
    fires and ``x = 1`` always fires. ``x`` must be firing probabilities in [0, 1]: values
    outside raise ``ValueError`` (naming the range found) unless ``clamp=True``, which clamps
    them to [0, 1] first.
    """
    _check_steps(T)
    if not x.is_floating_point():
        raise ValueError(
            f"poisson_encode expects a floating tensor of probabilities, got {x.dtype}"
        )
    if clamp:
        x = x.clamp(0.0, 1.0)
    elif x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        lo, hi = float(x.min()), float(x.max())
        raise ValueError(
            f"poisson_encode expects probabilities in [0, 1], got values in [{lo}, {hi}]; "
            "rescale the input (images in [-1, 1]: (x + 1) / 2) or pass clamp=True"
        )
    u = torch.rand((T, *x.shape), generator=generator, dtype=x.dtype, device=x.device)
    return (u < x).to(x.dtype)


def mean_decode(x: Tensor) -> Tensor:
    """Mean over time: ``[T, B, ...] -> [B, ...]`` (a firing rate for spikes)."""
    _check_time_first(x, "mean_decode")
    return x.mean(0)


def last_decode(x: Tensor) -> Tensor:
    """The last time step: ``[T, B, ...] -> [B, ...]``."""
    _check_time_first(x, "last_decode")
    return x[-1]


def weighted_decode(x: Tensor, decay: float = 0.8) -> Tensor:
    """Exponentially weighted sum over time, latest step weighted 1:
    ``sum_t decay^(T-1-t) x_t``, ``[T, B, ...] -> [B, ...]``. ``decay=1`` is the plain sum."""
    _check_time_first(x, "weighted_decode")
    T = x.shape[0]
    powers = torch.arange(T - 1, -1, -1, device=x.device, dtype=x.dtype)
    weights = torch.as_tensor(decay, device=x.device, dtype=x.dtype) ** powers
    return torch.tensordot(weights, x, dims=1)
