"""The ANN VAE that FSVAE is compared with (the original's ``ann_models/ann_vae.py``).

Same encoder and decoder shapes as :class:`snngen.models.fsvae.FSVAE`, built by the same
builders (:func:`~snngen.models.fsvae.conv_encoder`, :func:`~snngen.models.fsvae.conv_decoder`)
with batch norm and LeakyReLU (slope 0.01) instead of tdBN and LIF, and one time step (the
``[T, B, ...]`` layers run with T = 1). Gaussian latent: ``mu`` and ``log_var`` are linear maps
of the flattened encoder output, ``z = mu + exp(log_var / 2) eps``; the decoder input is a plain
linear map (no norm, no activation, as the original), and the image is ``tanh`` of the last
transposed conv.

Loss: ``MSE(recon, x) + kl_weight * KL(N(mu, sigma) || N(0, I))`` with the KL summed over the
latent and averaged over the batch, on the [-1, 1] scale. The original sets ``kl_weight`` to
``1 / (batches per epoch)`` (batch / training-set size). Samples decode ``z ~ N(0, I)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snngen.models.base import DataInfo, GenerativeModel
from snngen.models.fsvae import check_image_info, conv_decoder, conv_encoder
from snngen.spiking.layers import TimeBatchNorm2d

__all__ = ["ANNVAE", "ANNVAEConfig"]


@dataclass
class ANNVAEConfig:
    """Hyper-parameters of the ANN VAE (defaults: the original's MNIST run)."""

    name: str = "ann_vae"
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    latent_dim: int = 128
    negative_slope: float = 0.01
    kl_weight: float = 250 / 60000  # original: 1 / len(train loader)

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("channels must list at least one conv width, e.g. [32, 64, 128, 256]")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight}")


class ANNVAE(GenerativeModel):
    """Input ``[B, C, H, W]`` in [0, 1]; same layer shapes as FSVAE, one time step."""

    name = "ann_vae"

    def __init__(self, cfg: ANNVAEConfig, info: DataInfo) -> None:
        super().__init__()
        self.bottom = check_image_info(info, cfg.channels, "ANN VAE")
        self.cfg, self.info = cfg, info
        flat = cfg.channels[-1] * self.bottom**2

        def act(_: int) -> nn.Module:
            return nn.LeakyReLU(cfg.negative_slope)

        self.encoder = conv_encoder(info.channels, cfg.channels, TimeBatchNorm2d, act)
        self.fc_mu = nn.Linear(flat, cfg.latent_dim)
        self.fc_var = nn.Linear(flat, cfg.latent_dim)
        self.from_latent = nn.Linear(cfg.latent_dim, flat)
        self.decoder = conv_decoder(cfg.channels, info.channels, TimeBatchNorm2d, act)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images ``[B, C, H, W]`` in [0, 1] -> ``(mu, log_var)``, each ``[B, latent]``."""
        h = self.encoder((x * 2 - 1).unsqueeze(0))[0].flatten(1)
        return self.fc_mu(h), self.fc_var(h)

    def decode(self, z: Tensor) -> Tensor:
        """Latents ``[B, latent]`` -> images ``[B, C, H, W]`` in [-1, 1]."""
        h = self.from_latent(z).unflatten(1, (self.cfg.channels[-1], self.bottom, self.bottom))
        return torch.tanh(self.decoder(h.unsqueeze(0))[0])

    def loss(self, batch: Tensor) -> dict[str, Tensor]:
        mu, log_var = self.encode(batch)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        mse = F.mse_loss(self.decode(z), batch * 2 - 1)
        kl = torch.mean(-0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=1))
        return {"loss": mse + self.cfg.kl_weight * kl, "mse": mse.detach(), "kl": kl.detach()}

    @torch.no_grad()
    def reconstruct(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        mu, log_var = self.encode(x)
        eps = _randn(mu.shape, generator, mu)
        return (self.decode(mu + torch.exp(0.5 * log_var) * eps) + 1) / 2

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        return (self.decode(_randn((n, self.cfg.latent_dim), generator, self.fc_mu.weight)) + 1) / 2


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal noise of ``shape`` in ``like``'s dtype and device, drawn from
    ``generator`` (on its own device; the global generator when None)."""
    if generator is None:
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    noise = torch.randn(shape, generator=generator, dtype=like.dtype, device=generator.device)
    return noise.to(like.device)
