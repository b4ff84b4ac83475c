"""Spiking convolutional autoencoder (the snnTorch SAE tutorial).

The static image ``[B, C, H, W]`` is presented at every one of ``num_steps`` steps::

    encoder      (Conv s2 -> BatchNorm -> LIF) x len(channels) -> Flatten -> Linear -> LIF
                 = latent spikes [T, B, latent_dim]
    from_latent  Linear -> LIF
    bottom_lif   Unflatten to [C_last, H/2^L, W/2^L] -> LIF
    decoder      (ConvT s2 -> BatchNorm -> LIF) x (len(channels) - 1) -> ConvT s2
    readout      LIF with threshold 20000 (never spikes): its membrane at the last step is the
                 image (unclamped); loss = MSE against the input in [0, 1]

As the tutorial runs it (golden tests against its own code, ``tests/golden/test_sae_golden.py``):
snnTorch ``Leaky`` neurons (``mem = beta mem + x - v_th * reset``, the reset of step t being the
*detached* spike of step t-1, a spike when ``mem > v_th`` strictly), beta 0.5, threshold 1, atan
surrogate (alpha 2), num_steps 5, latent 32, channels 32-64-128, and BatchNorm applied to each
time step separately (per-step batch statistics in training, running statistics updated once per
step). Each of these is one config flag away from snngen's alternatives (``detach_reset``,
``strict_threshold``, ``bn_per_step``); ``docs/sae.md`` lists what remains different.

With ``trainer.checkpoint_activations`` each encoder and decoder level (conv, BatchNorm, LIF) is
a checkpointed stage (:mod:`snngen.spiking.checkpointing`).

Sampling is snngen's addition (the tutorial has no prior): ``sample`` decodes latent spike
trains drawn as independent Bernoulli spikes with each latent unit's per-step firing rate on the
training data (tracked during training), which gives plausible but blurry digits; use FSVAE for
a real generative model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snngen.models.base import DataInfo, GenerativeModel
from snngen.spiking.checkpointing import StagedSequential
from snngen.spiking.coding import direct_encode
from snngen.spiking.layers import Conv2d, ConvTranspose2d, Linear, TimeBatchNorm2d
from snngen.spiking.neurons import LIF


@dataclass
class SAEConfig:
    """Hyper-parameters of the spiking autoencoder (defaults: the snnTorch tutorial).

    ``detach_reset``: no gradient through the subtract reset (snnTorch's ``mem_reset``
    detaches it). ``strict_threshold``: spike when ``mem > threshold`` (snnTorch) rather than
    ``>=``. ``bn_per_step``: batch statistics per time step (the tutorial calls its BatchNorm
    once per step) rather than over the folded ``T*B`` frames. ``rate_momentum``: of the latent
    firing-rate estimate used by ``sample`` (snngen's addition).
    """

    name: str = "sae"
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    latent_dim: int = 32
    num_steps: int = 5
    beta: float = 0.5
    v_threshold: float = 1.0
    surrogate: str = "atan"
    surrogate_alpha: float = 2.0
    output_threshold: float = 20000.0
    detach_reset: bool = True
    strict_threshold: bool = True
    bn_per_step: bool = True
    rate_momentum: float = 0.05

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if not self.channels:
            raise ValueError("channels must list at least one conv width")


class SpikingAutoencoder(GenerativeModel):
    """Input ``[B, C, H, W]`` in [0, 1] (H = W divisible by 2^len(channels))."""

    name = "sae"

    def __init__(self, cfg: SAEConfig, info: DataInfo) -> None:
        super().__init__()
        if info.events:
            raise ValueError("the spiking autoencoder takes images, not event streams")
        levels = len(cfg.channels)
        if info.image_size % (2**levels):
            raise ValueError(
                f"image_size {info.image_size} must be divisible by 2^{levels} for "
                f"{levels} stride-2 convolutions"
            )
        self.cfg, self.info = cfg, info
        self.bottom = info.image_size // 2**levels
        flat = cfg.channels[-1] * self.bottom**2

        enc: list[nn.Module] = []
        cin = info.channels
        for c in cfg.channels:
            enc += [Conv2d(cin, c, 3, stride=2, padding=1), self._bn(c), self._lif()]
            cin = c
        self.encoder = StagedSequential(*enc, stage_size=3)  # checkpointing: one stage per level
        self.to_latent = nn.Sequential(Linear(flat, cfg.latent_dim), self._lif())
        self.from_latent = nn.Sequential(Linear(cfg.latent_dim, flat), self._lif())
        self.bottom_lif = self._lif()  # the tutorial's Leaky right after nn.Unflatten
        dec: list[nn.Module] = []
        widths = list(reversed(cfg.channels))
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            dec += [ConvTranspose2d(cin, cout, 3, 2, padding=1, output_padding=1),
                    self._bn(cout), self._lif()]
        dec.append(ConvTranspose2d(widths[-1], info.channels, 3, 2, padding=1, output_padding=1))
        self.decoder = StagedSequential(*dec, stage_size=3)
        self.readout = self._lif(v_threshold=cfg.output_threshold, return_membrane=True)
        self.register_buffer("latent_rate", torch.full((cfg.num_steps, cfg.latent_dim), 0.5))

    def _lif(self, **overrides) -> LIF:
        c = self.cfg
        kwargs = dict(beta=c.beta, v_threshold=c.v_threshold, v_reset=None,
                      surrogate={"name": c.surrogate, "alpha": c.surrogate_alpha},
                      detach_reset=c.detach_reset, strict_threshold=c.strict_threshold)
        kwargs.update(overrides)
        return LIF(**kwargs)

    def _bn(self, channels: int) -> TimeBatchNorm2d:
        return TimeBatchNorm2d(channels, per_step=self.cfg.bn_per_step)

    def encode(self, x: Tensor) -> Tensor:
        """Return latent spikes ``[T, B, latent_dim]`` of images ``[B, C, H, W]``."""
        h = self.encoder(direct_encode(x, self.cfg.num_steps))
        return self.to_latent(h.flatten(2))

    def decode(self, z: Tensor) -> Tensor:
        """Return images ``[B, C, H, W]`` (unclamped) from latent spikes ``[T, B, latent_dim]``."""
        h = self.from_latent(z)
        h = self.bottom_lif(h.unflatten(2, (self.cfg.channels[-1], self.bottom, self.bottom)))
        _, mem = self.readout(self.decoder(h))
        return mem[-1]

    def loss(self, batch: Tensor) -> dict[str, Tensor]:
        z = self.encode(batch)
        recon = self.decode(z)
        mse = F.mse_loss(recon, batch)
        if self.training:
            with torch.no_grad():
                rate = z.mean(dim=1).to(self.latent_rate.dtype)  # bf16 under mixed precision
                self.latent_rate.lerp_(rate, self.cfg.rate_momentum)
        return {"loss": mse, "mse": mse.detach(), "latent_rate": z.detach().mean()}

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x)).clamp(0, 1)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        p = self.latent_rate.unsqueeze(1).expand(-1, n, -1)
        # drawn by the generator on its own device, used on the model's
        draw_on = generator.device if generator is not None else p.device
        u = torch.rand(p.shape, generator=generator, device=draw_on).to(p.device)
        return self.decode((u < p).to(p.dtype)).clamp(0, 1)
