"""A tiny registered model so harness tests do not depend on real models (used by conftest.py
and by the DDP worker script, which runs outside pytest)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from snngen.models import DataInfo, GenerativeModel, register_model


@dataclass
class TinyConfig:
    name: str = "tiny"
    hidden: int = 16
    noise: float = 0.1
    nan_after: int = -1  # produce a NaN loss from this call on (for the non-finite test)
    dropout: float = 0.2


class TinyAutoencoder(GenerativeModel):
    """A small stochastic MLP autoencoder: uses the global RNG (input noise) and dropout."""

    name = "tiny"

    def __init__(self, cfg: TinyConfig, info: DataInfo) -> None:
        super().__init__()
        d = info.channels * info.image_size**2
        self.cfg, self.info = cfg, info
        self.enc = nn.Sequential(
            nn.Flatten(), nn.Linear(d, cfg.hidden), nn.Dropout(cfg.dropout), nn.ReLU()
        )
        self.dec = nn.Linear(cfg.hidden, d)
        self.calls = 0

    def loss(self, batch):
        self.calls += 1
        noisy = batch + self.cfg.noise * torch.randn_like(batch)
        recon = self.dec(self.enc(noisy)).view_as(batch)
        loss = F.mse_loss(recon, batch)
        if 0 <= self.cfg.nan_after <= self.calls:
            loss = loss * float("nan")
        return {"loss": loss}

    @torch.no_grad()
    def reconstruct(self, x):
        return self.dec(self.enc(x)).view_as(x).clamp(0, 1)

    @torch.no_grad()
    def sample(self, n, *, generator=None):
        z = torch.rand(n, self.cfg.hidden, generator=generator)
        s = self.info.image_size
        return self.dec(z).view(n, self.info.channels, s, s).clamp(0, 1)


register_model("tiny", TinyConfig, TinyAutoencoder)
