"""Spiking VQ-VAE with a temporal codebook (stage 1 of "Time Cell Inspired Temporal Codebook in
Spiking Neural Networks for Enhanced Image Generation", Brain-Cog-Lab/tts_vqvae).

Pipeline (time first throughout)::

    image [B, C, H, W] in [0, 1] -> [-1, 1] -> direct encoding over T steps -> [T, B, C, H, W]
    (event frames [T, B, 2, H, W] enter as they are, one frame per step)
      -> SNN encoder -> 1x1 pre-quant conv -> quantiser -> 1x1 post-quant conv -> SNN decoder
      -> images: mean over time, back to [0, 1];  events: one output frame per step

Encoder and decoder are built from :class:`ResnetBlockSnn` (GroupNorm, LIF-nonlinearity
``x * LIF(x)``, 3x3 conv, optional time-embedding addition, GroupNorm, LIF-nonlinearity, dropout,
3x3 conv; 1x1 or 3x3 shortcut) and the spiking attention block
(:class:`snngen.spiking.layers.SpikingSelfAttention`), with ``len(ch_mult)`` resolution levels,
strided-conv down-sampling, and up-sampling by nearest interpolation + 3x3 conv (what the
original code runs, the default) or by a 4x4 transposed conv (``upsample="transposed"``, what the
paper's tables and README list).
With ``trainer.checkpoint_activations`` every residual block, attention block, down- and
up-sampling recomputes its activations in the backward pass
(:mod:`snngen.spiking.checkpointing`).
Neurons: braincog's LIF (threshold 0.5, tau 2, hard reset, a spike only above the threshold),
:data:`BRAINCOG_LIF`.

Quantiser: :class:`~snngen.models.quantizers.TemporalCodebook` (one index per position) or
:class:`~snngen.models.quantizers.VanillaCodebook` (one per step and position), beta 0.25.

Loss (VQ-GAN style, taming's ``VQLPIPSWithDiscriminator``): L1 reconstruction (+ LPIPS only when
its weights are given locally) + codebook loss + a hinge PatchGAN term with the adaptive weight
(x ``disc_weight`` 0.8) switched on at ``disc_start``, counted by default in the original's
units (Lightning's ``global_step``: two optimiser steps per batch; ``disc_start_unit``). The
model returns ``"loss"`` (encoder, decoder, codebook) and ``"loss_disc"`` (the discriminator, on
detached reconstructions); the trainer steps one Adam per key. Event data: as the original,
every frame is compared with its target frame, with its own adaptive weight and discriminator
call, and the per-frame losses are averaged (``event_loss="folded"``: all frames as one batch).

Tokens for a prior (:mod:`snngen.models.prior`): raster order over the latent positions; for the
vanilla codebook each position contributes its ``T`` codes in time order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snngen.models.base import DataInfo, GenerativeModel
from snngen.models.discriminator import (
    D_LOSSES,
    PatchDiscriminator,
    adaptive_disc_weight,
    disc_factor,
    load_lpips,
)
from snngen.models.quantizers import (
    QuantizerOutput,
    TemporalCodebook,
    VanillaCodebook,
    codebook_usage,
)
from snngen.spiking.checkpointing import CheckpointedBlock
from snngen.spiking.coding import direct_encode
from snngen.spiking.layers import (
    BRAINCOG_LIF,
    Conv2d,
    ConvTranspose2d,
    LIFNonlinearity,
    Linear,
    SpikingSelfAttention,
    TimeGroupNorm,
)

__all__ = [
    "Downsample",
    "ResnetBlockSnn",
    "SpikingDecoder",
    "SpikingEncoder",
    "Upsample",
    "VQVAE",
    "VQVAEConfig",
]

NeuronSpec = str | dict[str, Any]


@dataclass
class VQVAEConfig:
    """Hyper-parameters of the spiking VQ-VAE (defaults: the paper's CelebA configuration)."""

    name: str = "vqvae"
    # SNN
    time_steps: int = 4
    neuron: dict[str, Any] | str = field(default_factory=lambda: dict(BRAINCOG_LIF))
    # quantiser
    codebook: Literal["temporal", "vanilla"] = "temporal"
    n_embed: int = 1024
    embed_dim: int = 256
    beta: float = 0.25
    # encoder / decoder
    ch: int = 128
    ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    num_res_blocks: int = 2
    attn_resolutions: list[int] = field(default_factory=lambda: [4])
    z_channels: int = 256
    dropout: float = 0.0
    num_groups: int = 32
    upsample: Literal["nearest", "transposed"] = "nearest"  # original code; paper: transposed
    # loss
    rec_loss: Literal["l1", "mse"] = "l1"
    codebook_weight: float = 1.0
    disc_weight: float = 0.8  # 0 turns the discriminator off (no "loss_disc")
    # the GAN terms switch on at disc_start, counted in disc_start_unit: "optimizer_steps"
    # (the original's Lightning global_step, two per batch - generator then discriminator -, so
    # 30001 is batch ~15,000) or "batches" (one per training batch)
    disc_start: int = 30001
    disc_start_unit: Literal["optimizer_steps", "batches"] = "optimizer_steps"
    disc_factor: float = 1.0
    disc_layers: int = 3
    disc_ndf: int = 64
    disc_loss: Literal["hinge", "vanilla"] = "hinge"
    perceptual_weight: float = 0.0  # LPIPS; needs the two weight files below
    lpips_vgg_path: str | None = None
    lpips_lin_path: str | None = None
    # events -> [-1, 1]: "sample_max" (the original): each sample divided by its own largest
    # count; "fixed": counts clipped to [0, event_max]. Decoded frames are [0, 1] x event_max
    # (reconstructions: x the input's own largest count under "sample_max").
    event_norm: Literal["sample_max", "fixed"] = "sample_max"
    event_max: float = 1.0
    # event losses: "per_frame" (the original: every loss term, the adaptive weight and the
    # discriminator's batch statistics per time-step frame, then averaged over the frames) or
    # "folded" (all frames as one batch of images: one adaptive weight, one discriminator call)
    event_loss: Literal["per_frame", "folded"] = "per_frame"

    def __post_init__(self) -> None:
        if self.time_steps < 1:
            raise ValueError(f"time_steps must be >= 1, got {self.time_steps}")
        if not self.ch_mult or min(self.ch_mult) < 1:
            raise ValueError(f"ch_mult must list positive multipliers, got {self.ch_mult}")
        for key in ("ch", "n_embed", "embed_dim", "z_channels", "num_groups"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {self.num_res_blocks}")
        widths = [self.ch] + [self.ch * m for m in self.ch_mult]
        bad = [w for w in widths if w % self.num_groups]
        if bad:
            raise ValueError(
                f"num_groups={self.num_groups} must divide every block width {widths} "
                f"(ch x ch_mult); change num_groups or ch"
            )
        if self.event_max <= 0:
            raise ValueError(f"event_max must be > 0, got {self.event_max}")
        if self.disc_start_unit not in ("optimizer_steps", "batches"):
            raise ValueError(
                f"disc_start_unit must be 'optimizer_steps' (the original's global_step, two per "
                f"batch) or 'batches', got {self.disc_start_unit!r}"
            )


# ----------------------------------------------------------------------------- blocks


def is_ann(neuron: NeuronSpec) -> bool:
    """Whether ``neuron`` names the ANN twin (``"silu"``: swish, the original VQ-GAN's)."""
    name = neuron.get("name") if isinstance(neuron, dict) else neuron
    return str(name).lower() == "silu"


def nonlinearity(neuron: NeuronSpec) -> nn.Module:
    """The block nonlinearity: ``x * LIF(x)`` (:class:`LIFNonlinearity`), or ``nn.SiLU`` for the
    ANN twin (``neuron="silu"``: ``x * sigmoid(x)``, the function the LIF gate replaces)."""
    return nn.SiLU() if is_ann(neuron) else LIFNonlinearity(neuron)


class ResnetBlockSnn(CheckpointedBlock):
    """Spiking residual block ``[T, B, C_in, H, W] -> [T, B, C_out, H, W]``.

    ``h = conv1(act(norm1(x)))``; ``h += W_t act(temb)`` when a time embedding ``[T, B, temb]``
    is given (``temb_channels > 0``); ``h = conv2(dropout(act(norm2(h))))``; output
    ``shortcut(x) + h`` with a 1x1 (or, ``conv_shortcut=True``, 3x3) conv when widths differ.
    ``act`` is the LIF-nonlinearity ``x * LIF(x)``; each use has its own neuron.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        dropout: float = 0.0,
        num_groups: int = 32,
        neuron: NeuronSpec = BRAINCOG_LIF,
        conv_shortcut: bool = False,
        temb_channels: int = 0,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.norm1 = TimeGroupNorm(num_groups, in_channels, eps=1e-6)
        self.act1 = nonlinearity(neuron)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1)
        if temb_channels > 0:
            self.temb_act = nonlinearity(neuron)
            self.temb_proj = Linear(temb_channels, out_channels)
        self.norm2 = TimeGroupNorm(num_groups, out_channels, eps=1e-6)
        self.act2 = nonlinearity(neuron)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        elif conv_shortcut:
            self.shortcut = Conv2d(in_channels, out_channels, 3, padding=1)
        else:
            self.shortcut = Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        """Return the block output ``[T, B, C_out, H, W]`` (``temb``: ``[T, B, temb]`` or None)."""
        h = self.conv1(self.act1(self.norm1(x)))
        if temb is not None:
            h = h + self.temb_proj(self.temb_act(temb))[..., None, None]
        h = self.conv2(self.dropout(self.act2(self.norm2(h))))
        return self.shortcut(x) + h


class Downsample(CheckpointedBlock):
    """Halve H and W: pad one row/column at the bottom/right, then a 3x3 conv of stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        """``[T, B, C, H, W] -> [T, B, C, H/2, W/2]``."""
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(CheckpointedBlock):
    """Double H and W: a 4x4 transposed conv of stride 2 (``mode="transposed"``, the paper's
    table) or nearest interpolation + 3x3 conv (``mode="nearest"``, the original code)."""

    def __init__(self, channels: int, mode: str = "transposed") -> None:
        super().__init__()
        if mode not in ("transposed", "nearest"):
            raise ValueError(f"upsample mode must be 'transposed' or 'nearest', got {mode!r}")
        self.mode = mode
        if mode == "transposed":
            self.conv: nn.Module = ConvTranspose2d(channels, channels, 4, stride=2, padding=1)
        else:
            self.conv = Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """``[T, B, C, H, W] -> [T, B, C, 2H, 2W]``."""
        if self.mode == "nearest":
            t, b = x.shape[:2]
            x = F.interpolate(x.flatten(0, 1), scale_factor=2.0, mode="nearest")
            x = x.reshape(t, b, *x.shape[1:])
        return self.conv(x)


class _Level(nn.Module):
    """One resolution level: residual blocks, each optionally followed by attention."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(attns)

    def forward(self, h: Tensor) -> Tensor:
        for i, block in enumerate(self.blocks):
            h = block(h)
            if len(self.attns):
                h = self.attns[i](h)
        return h


def _mid(channels: int, cfg: VQVAEConfig) -> nn.Sequential:
    """Middle of encoder and decoder: block, spiking attention, block."""
    kw = dict(dropout=cfg.dropout, num_groups=cfg.num_groups, neuron=cfg.neuron)
    return nn.Sequential(
        ResnetBlockSnn(channels, channels, **kw),
        _attention(channels, cfg),
        ResnetBlockSnn(channels, channels, **kw),
    )


def _attention(channels: int, cfg: VQVAEConfig) -> nn.Module:
    return SpikingSelfAttention(channels, num_groups=cfg.num_groups, neuron=cfg.neuron)


class SpikingEncoder(nn.Module):
    """``[T, B, C, R, R] -> [T, B, z_channels, R / 2^(L-1), R / 2^(L-1)]``, L = len(ch_mult).

    conv_in (3x3, ``ch``); per level ``num_res_blocks`` blocks of width ``ch * ch_mult[i]``
    (attention after each block where the resolution is in ``attn_resolutions``) and a
    down-sampling except after the last level; middle (block, attention, block); GroupNorm,
    LIF-nonlinearity, conv_out (3x3).
    """

    def __init__(self, cfg: VQVAEConfig, in_channels: int, resolution: int) -> None:
        super().__init__()
        kw = dict(dropout=cfg.dropout, num_groups=cfg.num_groups, neuron=cfg.neuron)
        self.conv_in = Conv2d(in_channels, cfg.ch, 3, padding=1)
        layers: list[nn.Module] = []
        cin, res = cfg.ch, resolution
        for i, mult in enumerate(cfg.ch_mult):
            cout = cfg.ch * mult
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlockSnn(cin, cout, **kw))
                cin = cout
                if res in cfg.attn_resolutions:
                    attns.append(_attention(cin, cfg))
            layers.append(_Level(blocks, attns))
            if i != len(cfg.ch_mult) - 1:
                layers.append(Downsample(cin))
                res //= 2
        self.down = nn.Sequential(*layers)
        self.mid = _mid(cin, cfg)
        self.norm_out = TimeGroupNorm(cfg.num_groups, cin, eps=1e-6)
        self.act_out = nonlinearity(cfg.neuron)
        self.conv_out = Conv2d(cin, cfg.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """Return latents ``[T, B, z_channels, h, w]`` of inputs ``[T, B, C, H, W]``."""
        h = self.mid(self.down(self.conv_in(x)))
        return self.conv_out(self.act_out(self.norm_out(h)))


class SpikingDecoder(nn.Module):
    """``[T, B, z_channels, r, r] -> [T, B, out_channels, r 2^(L-1), r 2^(L-1)]``.

    conv_in (3x3) to ``ch * ch_mult[-1]``; middle (block, attention, block); per level, from the
    lowest resolution up, ``num_res_blocks + 1`` blocks (attention where listed) and an
    up-sampling except after the highest level; GroupNorm, LIF-nonlinearity, conv_out (3x3).
    """

    def __init__(self, cfg: VQVAEConfig, out_channels: int, resolution: int) -> None:
        super().__init__()
        kw = dict(dropout=cfg.dropout, num_groups=cfg.num_groups, neuron=cfg.neuron)
        levels = len(cfg.ch_mult)
        cin = cfg.ch * cfg.ch_mult[-1]
        res = resolution // 2 ** (levels - 1)
        self.conv_in = Conv2d(cfg.z_channels, cin, 3, padding=1)
        self.mid = _mid(cin, cfg)
        layers: list[nn.Module] = []
        for i in reversed(range(levels)):
            cout = cfg.ch * cfg.ch_mult[i]
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResnetBlockSnn(cin, cout, **kw))
                cin = cout
                if res in cfg.attn_resolutions:
                    attns.append(_attention(cin, cfg))
            layers.append(_Level(blocks, attns))
            if i != 0:
                layers.append(Upsample(cin, cfg.upsample))
                res *= 2
        self.up = nn.Sequential(*layers)
        self.norm_out = TimeGroupNorm(cfg.num_groups, cin, eps=1e-6)
        self.act_out = nonlinearity(cfg.neuron)
        self.conv_out = Conv2d(cin, out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        """Return per-step outputs ``[T, B, C_out, H, W]`` of latents ``[T, B, z, h, w]``."""
        h = self.up(self.mid(self.conv_in(z)))
        return self.conv_out(self.act_out(self.norm_out(h)))


# ----------------------------------------------------------------------------- the model


class VQVAE(GenerativeModel):
    """Spiking VQ-VAE (stage 1). Images ``[B, C, H, W]`` in [0, 1] or events ``[T, B, 2, H, W]``.

    ``reconstruct`` returns the same kind and range as its input (events: ``[T, B, 2, H, W]``
    counts in ``[0, scale]``, see :meth:`event_scale`). It cannot sample on its own: train a
    prior on its codes
    (:class:`snngen.models.prior.VQPrior`, model name ``vq_prior``).
    """

    name = "vqvae"

    def __init__(self, cfg: VQVAEConfig, info: DataInfo) -> None:
        super().__init__()
        levels = len(cfg.ch_mult)
        if info.image_size % 2 ** (levels - 1):
            raise ValueError(
                f"image_size {info.image_size} must be divisible by 2^{levels - 1} for "
                f"{levels} resolution levels (ch_mult {cfg.ch_mult})"
            )
        if info.events and info.time_bins != cfg.time_steps:
            raise ValueError(
                f"event data has {info.time_bins} time bins but the SNN runs "
                f"time_steps={cfg.time_steps}; set model.time_steps={info.time_bins} (one frame "
                "per step) or change the dataset's number of bins"
            )
        self.cfg, self.info = cfg, info
        self.latent_size = info.image_size // 2 ** (levels - 1)
        self.encoder = SpikingEncoder(cfg, info.channels, info.image_size)
        self.quant_conv = Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        if cfg.codebook == "temporal":
            self.quantize: nn.Module = TemporalCodebook(
                cfg.n_embed, cfg.embed_dim, cfg.time_steps, beta=cfg.beta
            )
        else:
            self.quantize = VanillaCodebook(cfg.n_embed, cfg.embed_dim, beta=cfg.beta)
        self.post_quant_conv = Conv2d(cfg.embed_dim, cfg.z_channels, 1)
        self.decoder = SpikingDecoder(cfg, info.channels, info.image_size)
        if cfg.disc_weight > 0 and PatchDiscriminator.output_size(
            info.image_size, cfg.disc_layers
        ) < 1:
            raise ValueError(
                f"disc_layers={cfg.disc_layers} is too deep for {info.image_size}px images; "
                "lower model.disc_layers"
            )
        self.discriminator = (
            PatchDiscriminator(info.channels, cfg.disc_ndf, cfg.disc_layers)
            if cfg.disc_weight > 0
            else None
        )
        self.perceptual = None
        if cfg.perceptual_weight > 0:
            if info.channels not in (1, 3):
                raise ValueError(
                    f"perceptual_weight > 0 needs 1- or 3-channel images, got {info.channels} "
                    "channels; set model.perceptual_weight=0"
                )
            self.perceptual = load_lpips(cfg.lpips_vgg_path, cfg.lpips_lin_path)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    # -- spaces
    def event_scale(self, x: Tensor) -> Tensor:
        """The count that maps to +1 for each sample of events ``x`` ``[T, B, C, H, W]``:
        ``[1, B, 1, 1, 1]``, its largest count (``event_norm="sample_max"``; 1 for a blank
        sample) or ``event_max`` (``"fixed"``)."""
        if self.cfg.event_norm == "fixed":
            return x.new_full((1, x.shape[1], 1, 1, 1), self.cfg.event_max)
        peak = x.clamp(min=0).amax(dim=(0, 2, 3, 4), keepdim=True)
        return torch.where(peak > 0, peak, torch.ones_like(peak))

    def to_model_space(self, x: Tensor) -> Tensor:
        """Model input ``[T, B, C, H, W]`` in [-1, 1]: images repeated over T (direct coding),
        event frames ``[T, B, 2, H, W]`` divided by :meth:`event_scale` (clipped) and rescaled."""
        if self.info.events:
            if x.dim() != 5 or x.shape[0] != self.cfg.time_steps:
                raise ValueError(
                    f"expected event frames [T={self.cfg.time_steps}, B, C, H, W], got "
                    f"{tuple(x.shape)}"
                )
            return (x.clamp(min=0) / self.event_scale(x)).clamp(max=1) * 2.0 - 1.0
        if x.dim() != 4:
            raise ValueError(f"expected images [B, C, H, W], got {tuple(x.shape)}")
        return direct_encode(x * 2.0 - 1.0, self.cfg.time_steps)

    def from_model_space(self, y: Tensor, scale: Tensor | float | None = None) -> Tensor:
        """Decoder output ``[T, B, C, H, W]`` -> images ``[B, C, H, W]`` in [0, 1] (mean over
        time) or event frames ``[T, B, C, H, W]`` in ``[0, scale]`` (default ``event_max``)."""
        if self.info.events:
            scale = self.cfg.event_max if scale is None else scale
            return ((y + 1.0) * 0.5).clamp(0, 1) * scale
        return ((y.mean(0) + 1.0) * 0.5).clamp(0, 1)

    # -- stages
    def encode(self, x_t: Tensor) -> QuantizerOutput:
        """Quantise model-space inputs ``x_t`` ``[T, B, C, H, W]``; see :class:`QuantizerOutput`."""
        return self.quantize(self.quant_conv(self.encoder(x_t)))

    def decode(self, z_q: Tensor) -> Tensor:
        """Decoder outputs ``[T, B, C, H, W]`` (model space) of quantised latents ``z_q``."""
        return self.decoder(self.post_quant_conv(z_q))

    # -- tokens for a prior
    @property
    def vocab_size(self) -> int:
        """Number of codes (the prior's vocabulary)."""
        return self.cfg.n_embed

    @property
    def tokens_per_sample(self) -> int:
        """Tokens per image: ``h*w`` (temporal codebook) or ``h*w*T`` (vanilla)."""
        n = self.latent_size**2
        return n if self.cfg.codebook == "temporal" else n * self.cfg.time_steps

    @torch.no_grad()
    def encode_tokens(self, x: Tensor) -> Tensor:
        """Code indices of a batch in raster order, ``[B, tokens_per_sample]`` int64."""
        idx = self.encode(self.to_model_space(x)).indices
        if self.cfg.codebook == "temporal":
            return idx.flatten(1)  # [B, H*W]
        return idx.permute(1, 2, 3, 0).flatten(1)  # [T,B,H,W] -> [B, H*W*T]

    def tokens_to_latents(self, tokens: Tensor) -> Tensor:
        """Quantised latents ``[T, B, embed_dim, h, w]`` of tokens ``[B, tokens_per_sample]``."""
        b, r = tokens.shape[0], self.latent_size
        if tokens.shape[1] != self.tokens_per_sample:
            raise ValueError(
                f"expected {self.tokens_per_sample} tokens per sample, got {tokens.shape[1]}"
            )
        if self.cfg.codebook == "temporal":
            return self.quantize.lookup(tokens.view(b, r, r))
        idx = tokens.view(b, r, r, self.cfg.time_steps).permute(3, 0, 1, 2)
        return self.quantize.lookup(idx)

    @torch.no_grad()
    def decode_tokens(self, tokens: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` in [0, 1] (or event frames ``[T, B, C, H, W]``) of tokens."""
        return self.from_model_space(self.decode(self.tokens_to_latents(tokens)))

    # -- training
    def _pairs(self, x_t: Tensor, y_t: Tensor) -> list[tuple[Tensor, Tensor]]:
        """(target, reconstruction) image batches in model space, one pair per loss evaluation:
        images: the input and the time-mean of the output; events: every frame with its target
        frame (``event_loss="per_frame"``) or all frames folded into one batch."""
        if not self.info.events:
            return [(x_t[0], y_t.mean(0))]
        if self.cfg.event_loss == "folded":
            return [(x_t.flatten(0, 1), y_t.flatten(0, 1))]
        return list(zip(x_t.unbind(0), y_t.unbind(0), strict=True))

    def disc_factors(self) -> tuple[float, float]:
        """The GAN factors (generator term, discriminator loss) of the current batch.

        ``disc_start_unit="optimizer_steps"`` follows the original's Lightning ``global_step``,
        which advances once per optimiser step: batch ``k`` (0-based, :attr:`step`) reads
        ``2k`` for its generator loss and ``2k + 1`` for its discriminator loss (after the
        generator's step), so the discriminator starts training one batch before the generator
        term when ``disc_start`` is odd. ``"batches"``: both read ``k``.
        """
        cfg, k = self.cfg, int(self.step)
        g_step, d_step = (2 * k, 2 * k + 1) if cfg.disc_start_unit == "optimizer_steps" else (k, k)
        return (disc_factor(g_step, cfg.disc_start, cfg.disc_factor),
                disc_factor(d_step, cfg.disc_start, cfg.disc_factor))

    def loss(self, batch: Tensor) -> dict[str, Tensor]:
        """Losses and logs of one batch (images ``[B, C, H, W]`` or events ``[T, B, 2, H, W]``).

        ``loss``: reconstruction (+ LPIPS) + codebook_weight * quantiser loss (+ adaptive-weight
        generator term after ``disc_start``); ``loss_disc``: the discriminator's hinge loss
        (present when ``disc_weight > 0``). Logs (detached scalars): ``rec_loss``, ``q_loss``,
        ``mse`` (in [0, 1] units), the batch's codebook usage ``perplexity``, ``codes_used``,
        ``dead_codes``, and, with the discriminator, ``g_loss``, ``d_weight``, ``disc_factor``,
        ``logits_real``, ``logits_fake``; ``p_loss`` with LPIPS. See
        :meth:`loss_in_model_space`.
        """
        return self.loss_in_model_space(self.to_model_space(batch))

    def loss_in_model_space(self, x_t: Tensor) -> dict[str, Tensor]:
        """:meth:`loss` of model-space inputs ``x_t`` ``[T, B, C, H, W]`` in [-1, 1].

        As the original's training step: every (target, reconstruction) pair of
        :meth:`_pairs` gets ``nll + d_weight * factor * g_loss + codebook_weight * q_loss`` and
        ``factor * d_loss``, averaged over the pairs; all generator terms are evaluated before
        the discriminator terms (the order in which the discriminator's batch-norm statistics
        are updated). Advances :attr:`step` in training.
        """
        cfg = self.cfg
        q = self.encode(x_t)
        y_t = self.decode(q.z_q)
        pairs = self._pairs(x_t, y_t)
        g_factor, d_factor = self.disc_factors()
        gen = [self._generator_terms(target, recon, q.loss, g_factor) for target, recon in pairs]
        out = {k: torch.stack([g[k] for g in gen]).mean() for k in gen[0]}
        if self.discriminator is not None:
            disc = [self._disc_terms(target, recon, d_factor) for target, recon in pairs]
            out.update({k: torch.stack([d[k] for d in disc]).mean() for k in disc[0]})
            out["disc_factor"] = torch.tensor(g_factor)
        if self.training and torch.is_grad_enabled():
            self.step += 1
        target = torch.cat([t for t, _ in pairs])
        recon = torch.cat([r for _, r in pairs])
        usage = codebook_usage(q.indices, cfg.n_embed)
        with torch.no_grad():
            mse01 = F.mse_loss(recon.clamp(-1, 1), target) * 0.25  # in [0, 1] units
        out.update(
            q_loss=q.loss.detach(),
            mse=mse01,
            perplexity=torch.tensor(usage["perplexity"]),
            codes_used=torch.tensor(float(usage["used"])),
            dead_codes=torch.tensor(float(usage["dead"])),
        )
        return out

    def _generator_terms(
        self, target: Tensor, recon: Tensor, q_loss: Tensor, factor: float
    ) -> dict[str, Tensor]:
        """``loss`` of one pair (taming's generator step) and its logs.

        The discriminator sees the reconstruction even before ``disc_start`` (as the original,
        whose batch-norm statistics that call updates); the term and its adaptive weight are
        only built when ``factor > 0`` (before, the original adds ``0 * g_loss``).
        """
        cfg, disc = self.cfg, self.discriminator
        if cfg.rec_loss == "l1":
            rec = (target - recon).abs().mean()
        else:
            rec = F.mse_loss(recon, target)
        nll = rec
        logs: dict[str, Tensor] = {}
        if self.perceptual is not None:
            p_loss = self.perceptual(target, recon).mean()
            nll = rec + cfg.perceptual_weight * p_loss
            logs["p_loss"] = p_loss.detach()
        loss = nll + cfg.codebook_weight * q_loss
        if disc is not None:
            d_weight = torch.zeros((), device=loss.device)
            with torch.set_grad_enabled(torch.is_grad_enabled() and factor > 0):
                g_loss = -disc(recon).mean()
            if factor > 0:
                if torch.is_grad_enabled() and nll.requires_grad:
                    last = self.decoder.conv_out.weight
                    d_weight = adaptive_disc_weight(nll, g_loss, last, cfg.disc_weight)
                loss = loss + d_weight * factor * g_loss
            logs.update(g_loss=g_loss.detach(), d_weight=d_weight.detach())
        return {"loss": loss, "rec_loss": rec.detach(), **logs}

    def _disc_terms(self, target: Tensor, recon: Tensor, factor: float) -> dict[str, Tensor]:
        """``loss_disc`` of one pair (on detached images) and the mean logits."""
        logits_real = self.discriminator(target.detach())
        logits_fake = self.discriminator(recon.detach())
        return {
            "loss_disc": factor * D_LOSSES[self.cfg.disc_loss](logits_real, logits_fake),
            "logits_real": logits_real.detach().mean(),
            "logits_fake": logits_fake.detach().mean(),
        }

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"loss": autoencoder + codebook, "loss_disc": discriminator}`` (one Adam each)."""
        disc = set(self.discriminator.parameters()) if self.discriminator is not None else set()
        gen = [p for p in self.parameters() if p.requires_grad and p not in disc]
        groups = {"loss": gen}
        if self.discriminator is not None:
            groups["loss_disc"] = list(self.discriminator.parameters())
        return groups

    # -- inference
    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        y = self.decode(self.encode(self.to_model_space(x)).z_q)
        return self.from_model_space(y, self.event_scale(x) if self.info.events else None)

    @property
    def can_sample(self) -> bool:
        """False: stage 1 samples only through a prior (:meth:`sample` says which), so sample
        metrics are refused before training, not after it."""
        return False

    cannot_sample_hint = ("a stage-1 vqvae samples through a prior: train vq_prior with "
                          "model.stage1_run=<this run> and sample that run")

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Not available: stage 1 has no distribution over its codes. Raises
        ``NotImplementedError`` naming the stage-2 model that samples through it."""
        raise NotImplementedError(
            "a vqvae (stage 1) cannot sample on its own: train the spiking GPT prior on its codes "
            "(model name vq_prior with model.stage1_run=<this run folder>, configs/vq_prior_*.yaml)"
            " and sample from that run; its samples are images [n, C, H, W] or events "
            "[T, n, 2, H, W]"
        )

    @torch.no_grad()
    def codebook_stats(self, batches) -> dict[str, float]:
        """:func:`codebook_usage` of the codes of every batch in the iterable ``batches``."""
        tokens = [self.encode_tokens(x).cpu() for x in batches]
        return codebook_usage(torch.cat([t.flatten() for t in tokens]), self.cfg.n_embed)

    def drop_training_modules(self) -> None:
        """Delete the discriminator and LPIPS (not needed once trained, e.g. under a prior)."""
        self.discriminator = None
        self.perceptual = None
