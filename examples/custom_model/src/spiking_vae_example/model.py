"""A tiny spiking VAE built from ``snngen.spiking`` layers.

The image is repeated over ``time_steps`` (direct coding), two strided spiking convolutions
encode it, and the firing rates give the mean and log-variance of a Gaussian latent. The decoder
repeats the latent over time, runs it through a spiking linear layer and two transposed
convolutions, and reads the last layer's membrane-free output as the mean over time.
Tensors are time first: ``[T, B, C, H, W]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snngen.models import DataInfo, GenerativeModel
from snngen.spiking import LIF, Conv2d, ConvTranspose2d, Linear, direct_encode, mean_decode


@dataclass
class TinySpikingVAEConfig:
    """The model section of a config (``model: {name: tiny_spiking_vae, ...}``)."""

    name: str = "tiny_spiking_vae"
    time_steps: int = 4
    channels: int = 16
    latent_dim: int = 16
    kl_weight: float = 1e-3
    tau: float = 2.0

    def __post_init__(self) -> None:
        for key in ("time_steps", "channels", "latent_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be at least 1, got {getattr(self, key)}")
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight: must be >= 0, got {self.kl_weight}")


class TinySpikingVAE(GenerativeModel):
    """Spiking encoder -> Gaussian latent -> spiking decoder; images ``[B, C, H, W]`` in [0, 1]."""

    name = "tiny_spiking_vae"
    #: how snngen finds the config dataclass of a model declared through an entry point
    config_class = TinySpikingVAEConfig

    def __init__(self, cfg: TinySpikingVAEConfig, info: DataInfo) -> None:
        super().__init__()
        if info.events or info.image_size % 4:
            raise ValueError("tiny_spiking_vae takes images whose size divides by 4")
        self.cfg, self.info = cfg, info
        c, s = cfg.channels, info.image_size // 4
        self.feature_shape = (2 * c, s, s)
        self.encoder = nn.Sequential(
            Conv2d(info.channels, c, 3, stride=2, padding=1), LIF(cfg.tau),
            Conv2d(c, 2 * c, 3, stride=2, padding=1), LIF(cfg.tau),
        )
        self.to_latent = nn.Linear(2 * c * s * s, 2 * cfg.latent_dim)
        self.from_latent = nn.Sequential(Linear(cfg.latent_dim, 2 * c * s * s), LIF(cfg.tau))
        self.decoder = nn.Sequential(
            ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), LIF(cfg.tau),
            ConvTranspose2d(c, info.channels, 4, stride=2, padding=1),
        )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images ``[B, C, H, W]`` -> latent mean and log-variance, each ``[B, latent_dim]``."""
        spikes = self.encoder(direct_encode(x, self.cfg.time_steps))  # [T, B, 2c, H/4, W/4]
        mu, logvar = self.to_latent(mean_decode(spikes).flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def decode(self, z: Tensor) -> Tensor:
        """Latents ``[B, latent_dim]`` -> images ``[B, C, H, W]`` in [0, 1]."""
        h = self.from_latent(direct_encode(z, self.cfg.time_steps))  # [T, B, 2c*s*s] spikes
        h = h.unflatten(2, self.feature_shape)  # [T, B, 2c, s, s]
        return torch.sigmoid(mean_decode(self.decoder(h)))

    def loss(self, batch: Tensor) -> dict[str, Tensor]:
        """Reconstruction MSE plus ``kl_weight`` times the KL divergence to N(0, I)."""
        mu, logvar = self.encode(batch)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        mse = F.mse_loss(self.decode(z), batch)
        kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(1).mean()
        return {"loss": mse + self.cfg.kl_weight * kl, "mse": mse.detach(), "kl": kl.detach()}

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The decoded latent mean of ``x`` ``[B, C, H, W]``: same shape, in [0, 1]."""
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images ``[n, C, H, W]`` in [0, 1] decoded from z ~ N(0, I)."""
        device = self.to_latent.weight.device
        z = torch.randn(n, self.cfg.latent_dim, generator=generator,
                        device=generator.device if generator is not None else device)
        return self.decode(z.to(device))
