"""Vector quantisers of spiking latents ``[T, B, C, H, W]``: the temporal and the vanilla codebook.

* :class:`TemporalCodebook` (the "time cell" codebook of the temporal-codebook VQ-VAE): each of
  the ``n_e`` entries is a trajectory of ``T`` vectors (``T * e_dim`` numbers). The encoder output
  at one spatial position, all ``T`` steps together, is matched to the nearest trajectory by
  squared L2 distance over the whole trajectory: **one index per position**, ``[B, H, W]``.
* :class:`VanillaCodebook`: one ``n_e x e_dim`` codebook, the nearest code chosen independently
  at every step: **one index per (step, position)**, ``[T, B, H, W]``.

Both use taming's "legacy" loss ``mean((z_q.detach() - z)^2) + beta * mean((z_q - z.detach())^2)``
(the first term moves the codebook, the second commits the encoder), the straight-through
estimator ``z + (z_q - z).detach()``, and the uniform ``+-1/n_e`` initialisation of the original.
Nearest codes use the expanded square ``|z|^2 - 2 z.e + |e|^2`` (one matrix product, no
``[N, n_e, D]`` broadcast). Codebook usage (perplexity, codes used, dead codes) is reported by
:func:`codebook_usage`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "QuantizerOutput",
    "TemporalCodebook",
    "VanillaCodebook",
    "codebook_usage",
    "nearest_code",
    "vq_loss",
]


@dataclass
class QuantizerOutput:
    """What a quantiser returns.

    ``z_q``: quantised latents ``[T, B, C, H, W]`` (straight-through: the forward value is the
    code, the gradient flows to the encoder output); ``loss``: codebook + beta * commitment,
    a scalar; ``indices``: ``[B, H, W]`` (temporal) or ``[T, B, H, W]`` (vanilla), int64.
    """

    z_q: Tensor
    loss: Tensor
    indices: Tensor


def nearest_code(z: Tensor, codebook: Tensor, chunk: int = 4096) -> Tensor:
    """Return the index of the nearest codebook row for every row of ``z``.

    ``z``: ``[N, D]``; ``codebook``: ``[K, D]``; returns ``[N]`` int64, the argmin over ``k`` of
    ``|z_n - e_k|^2 = |z_n|^2 - 2 z_n . e_k + |e_k|^2`` (ties: the lowest index). Rows are
    processed ``chunk`` at a time so the ``[N, K]`` distance matrix never exceeds ``chunk x K``.
    """
    if z.dim() != 2 or codebook.dim() != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"nearest_code expects z [N, D] and codebook [K, D], got {tuple(z.shape)} and "
            f"{tuple(codebook.shape)}"
        )
    e_sq = codebook.pow(2).sum(1)  # [K]
    out = []
    for part in z.split(chunk):
        dist = part.pow(2).sum(1, keepdim=True) - 2.0 * part @ codebook.t() + e_sq  # [n, K]
        out.append(dist.argmin(1))
    return torch.cat(out) if out else z.new_zeros(0, dtype=torch.long)


def vq_loss(z: Tensor, z_q: Tensor, beta: float, legacy: bool = True) -> Tensor:
    """Codebook + commitment loss (taming's convention).

    ``legacy=True`` (what the original runs): ``mean((z_q.detach() - z)^2)
    + beta * mean((z_q - z.detach())^2)``; ``legacy=False`` swaps where ``beta`` goes.
    """
    commit = torch.mean((z_q.detach() - z) ** 2)
    codebook = torch.mean((z_q - z.detach()) ** 2)
    return commit + beta * codebook if legacy else beta * commit + codebook


def codebook_usage(indices: Tensor, n_e: int) -> dict[str, float]:
    """Return usage statistics of code ``indices`` (any shape) for a codebook of ``n_e`` codes.

    ``perplexity = exp(-sum_k p_k log p_k)`` with ``p`` the empirical code frequencies (``n_e``
    when all codes are used equally, 1 when one code is used); ``used``: the number of distinct
    codes; ``dead``: ``n_e - used``; ``dead_fraction``: ``dead / n_e``.
    """
    counts = torch.bincount(indices.reshape(-1).long(), minlength=n_e).double()
    total = counts.sum()
    if total == 0:
        return {"perplexity": 0.0, "used": 0, "dead": n_e, "dead_fraction": 1.0}
    p = counts / total
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    used = int((counts > 0).sum())
    return {
        "perplexity": float(math.exp(entropy)),
        "used": used,
        "dead": n_e - used,
        "dead_fraction": (n_e - used) / n_e,
    }


def _check_latent(z: Tensor, e_dim: int, where: str) -> None:
    if z.dim() != 5 or z.shape[2] != e_dim:
        raise ValueError(
            f"{where} expects latents [T, B, C={e_dim}, H, W], got shape {tuple(z.shape)}"
        )


class _Codebook(nn.Module):
    """Shared parts: the embedding table, its initialisation, beta and the loss convention."""

    def __init__(self, n_e: int, width: int, beta: float, legacy: bool) -> None:
        super().__init__()
        if n_e < 1:
            raise ValueError(f"n_e (codebook size) must be >= 1, got {n_e}")
        self.n_e = n_e
        self.beta = float(beta)
        self.legacy = legacy
        self.embedding = nn.Embedding(n_e, width)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_e, 1.0 / n_e)

    def usage(self, indices: Tensor) -> dict[str, float]:
        """:func:`codebook_usage` of ``indices`` for this codebook."""
        return codebook_usage(indices, self.n_e)


class TemporalCodebook(_Codebook):
    """``n_e`` trajectories of ``time_steps`` vectors of size ``e_dim``; one index per position.

    ``forward(z)``: ``z`` ``[T, B, e_dim, H, W]`` becomes ``[B, H, W, T * e_dim]`` (step-major:
    entry ``t * e_dim + c`` is step ``t``, channel ``c``), each row is matched to its nearest
    entry, and the entry is split back into ``T`` per-step vectors.
    """

    def __init__(
        self, n_e: int, e_dim: int, time_steps: int, beta: float = 0.25, legacy: bool = True
    ) -> None:
        if time_steps < 1:
            raise ValueError(f"time_steps must be >= 1, got {time_steps}")
        super().__init__(n_e, time_steps * e_dim, beta, legacy)
        self.e_dim = e_dim
        self.time_steps = time_steps

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantise ``z`` ``[T, B, e_dim, H, W]``; indices ``[B, H, W]``."""
        _check_latent(z, self.e_dim, "TemporalCodebook")
        if z.shape[0] != self.time_steps:
            raise ValueError(
                f"TemporalCodebook was built for T={self.time_steps} steps, got latents with "
                f"T={z.shape[0]} (shape {tuple(z.shape)})"
            )
        t, b, c, h, w = z.shape
        flat = z.permute(1, 3, 4, 0, 2).reshape(b * h * w, t * c)  # [BHW, T*C]
        indices = nearest_code(flat.detach(), self.embedding.weight.detach()).view(b, h, w)
        z_q = self.lookup(indices)
        loss = vq_loss(z, z_q, self.beta, self.legacy)
        return QuantizerOutput(z + (z_q - z).detach(), loss, indices)

    def lookup(self, indices: Tensor) -> Tensor:
        """Trajectories of ``indices`` ``[B, H, W]`` as latents ``[T, B, e_dim, H, W]``."""
        b, h, w = indices.shape
        rows = self.embedding(indices)  # [B, H, W, T*C]
        return rows.view(b, h, w, self.time_steps, self.e_dim).permute(3, 0, 4, 1, 2)


class VanillaCodebook(_Codebook):
    """One ``n_e x e_dim`` codebook; the nearest code is chosen at every step and position."""

    def __init__(self, n_e: int, e_dim: int, beta: float = 0.25, legacy: bool = True) -> None:
        super().__init__(n_e, e_dim, beta, legacy)
        self.e_dim = e_dim

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantise ``z`` ``[T, B, e_dim, H, W]``; indices ``[T, B, H, W]``."""
        _check_latent(z, self.e_dim, "VanillaCodebook")
        t, b, c, h, w = z.shape
        flat = z.permute(0, 1, 3, 4, 2).reshape(-1, c)  # [T*B*H*W, C]
        indices = nearest_code(flat.detach(), self.embedding.weight.detach()).view(t, b, h, w)
        z_q = self.lookup(indices)
        loss = vq_loss(z, z_q, self.beta, self.legacy)
        return QuantizerOutput(z + (z_q - z).detach(), loss, indices)

    def lookup(self, indices: Tensor) -> Tensor:
        """Return the codes of ``indices`` ``[T, B, H, W]`` as latents ``[T, B, e_dim, H, W]``."""
        return self.embedding(indices).permute(0, 1, 4, 2, 3)
