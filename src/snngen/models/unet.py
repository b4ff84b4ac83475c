"""The spiking U-Net of SDDPM / SDM, its ANN twin and its TSM variant.

An eps-predicting network ``unet(x [B, C, H, W], t [B]) -> eps [B, C, H, W]`` (``t`` on the
diffusion's discrete scale; fractional values are fine, the embedding is computed, not looked up).

Faithful to SDDPM (Cao et al., WACV 2024) / SDM (IEEE TAI 2024):

* the image is presented at every one of ``T`` SNN steps (direct coding), time-first
  ``[T, B, C, H, W]`` throughout;
* stem: ``conv -> BN -> IF -> conv -> BN``; every block is **pre-spike**: the neuron comes
  first and turns the real-valued block input into spikes (``IF -> conv -> BN``);
* residual block: ``IF -> conv -> BN``, ``+ Linear(Swish(temb))`` (broadcast over T and pixels),
  ``IF -> [dropout] -> conv -> BN``, plus a real-valued shortcut (1x1 conv when widths differ);
  optional spiking self-attention after it (levels listed in ``attn``);
* down-sampling ``IF -> conv(stride 2) -> BN``; up-sampling ``IF -> nearest x2 -> conv -> BN``;
* diffusion-time embedding ``sinusoidal(ch) -> Linear(ch, 4ch) -> Swish -> Linear(4ch, 4ch)``,
  non-spiking, sin/cos interleaved as in the original table;
* head: ``BN -> Swish -> conv`` (weights initialised with gain 1e-5), then ``h + Swish(BN(
  conv3d(h)))`` with a ``Conv3d`` of kernel ``(3, 3, 1)`` on ``[B, C, H, W, T]`` (the original's
  ``T_output_layer``: 3x3 over the pixels, 1 over time, i.e. one 3x3 conv applied per step),
  then the read-out ``sum_t 0.8^(T-1-t) h_t``;
* neuron: IF, threshold 1, hard reset to 0, ATan surrogate (alpha 2).

Options:

* ``neuron``: any :func:`snngen.spiking.neuron_from_config` spec; ``"relu"`` / ``"silu"`` give the
  ANN twin with identical parameter shapes (use ``timesteps: 1`` for it: every step of an ANN
  computes the same thing, and the read-out weight of a single step is 1);
* ``tsm``: the temporal-wise spiking mechanism (SDM): every ``Conv2d`` gets a learnable per-step
  scale ``tsm_scale`` of shape ``(T, 1, 1, 1, 1)`` initialised to 1, so a TSM net with the
  weights of a plain net computes exactly the plain net (see :mod:`snngen.models.inherit`);
* threshold-guided sampling (SDDPM): :meth:`SpikingUNet.set_threshold_scale` multiplies every
  neuron's threshold by a factor at inference, without training. It is implemented by dividing
  the neuron's input by the factor, which gives the same spikes for IF neurons (the membrane
  is linear in the input, reset to 0 or by subtraction).
* activation checkpointing (``trainer.checkpoint_activations``,
  :mod:`snngen.spiking.checkpointing`): every residual block (its attention included),
  down-sampling, up-sampling and the head recompute their activations in the backward pass.

Differences from the original code, on purpose: the original passes ``dropout`` to its blocks
but never applies it (snngen applies it before the second conv when ``dropout > 0``; the paper
configs set 0.0 to match what runs); its attention class is not defined in the released file
(snngen uses :class:`snngen.spiking.SpikingSelfAttention` with the same neuron); all 3x3/1x1
convs are Xavier-uniform initialised (the stem's second conv used torch's default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import init

from snngen.spiking.checkpointing import CheckpointedBlock
from snngen.spiking.coding import direct_encode, weighted_decode
from snngen.spiking.layers import (
    Conv2d,
    SpikingSelfAttention,
    TimeBatchNorm2d,
    neuron_from_config,
)
from snngen.spiking.neurons import MultiStepNeuron

__all__ = [
    "SDDPM_IF",
    "SpikeAct",
    "SpikingUNet",
    "TSMConv2d",
    "UNetConfig",
    "sinusoidal_embedding",
]

#: SDDPM's neuron: spikingjelly ``IFNode`` defaults (threshold 1, hard reset to 0, ATan alpha 2).
SDDPM_IF: dict[str, Any] = {
    "name": "if",
    "v_threshold": 1.0,
    "v_reset": 0.0,
    "surrogate": {"name": "atan", "alpha": 2.0},
}

ANN_ACTIVATIONS = ("relu", "silu")


@dataclass
class UNetConfig:
    """Shape and neuron of the U-Net (defaults: SDDPM's CIFAR-10 network)."""

    ch: int = 128
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 4])
    attn: list[int] = field(default_factory=list)  # levels (indices into ch_mult) with attention
    num_res_blocks: int = 2
    dropout: float = 0.0
    timesteps: int = 4  # SNN time steps T
    neuron: str | dict[str, Any] = field(default_factory=lambda: dict(SDDPM_IF))
    tsm: bool = False
    in_channels: int = 3
    readout_decay: float = 0.8  # read-out weights decay^(T-1-t)

    def __post_init__(self) -> None:
        if self.ch < 2 or self.ch % 2:
            raise ValueError(
                f"ch must be an even number >= 2 (sinusoidal embedding), got {self.ch}"
            )
        if not self.ch_mult or min(self.ch_mult) < 1:
            raise ValueError(
                f"ch_mult must be a non-empty list of positive ints, got {self.ch_mult}"
            )
        bad = [a for a in self.attn if not 0 <= a < len(self.ch_mult)]
        if bad:
            raise ValueError(f"attn levels {bad} are outside 0..{len(self.ch_mult) - 1}")
        if self.num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {self.num_res_blocks}")
        if self.timesteps < 1:
            raise ValueError(f"timesteps (SNN steps T) must be >= 1, got {self.timesteps}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def neuron_name(spec: str | dict[str, Any] | nn.Module) -> str:
    """The lower-case name of a neuron spec (``"if"``, ``"lif"``, ``"relu"``...)."""
    if isinstance(spec, nn.Module):
        return type(spec).__name__.lower()
    name = spec.get("name", "") if isinstance(spec, dict) else spec
    return str(name).lower()


# --------------------------------------------------------------------------- building blocks


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """Transformer sinusoids of diffusion times ``t [B]`` -> ``[B, dim]`` (float32).

    ``emb[:, 2i] = sin(t w_i)``, ``emb[:, 2i+1] = cos(t w_i)``, ``w_i = 10000^(-2i/dim)``: the
    interleaved layout of SDDPM's fixed table, evaluated at any (also fractional) ``t``.
    """
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}")
    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, device=t.device) / dim)
    angles = t.float().reshape(-1, 1) * freqs.reshape(1, -1)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(-1, dim)


class SpikeAct(nn.Module):
    """A multi-step activation ``[T, B, ...] -> [T, B, ...]`` with a threshold scale.

    Wraps ``neuron_from_config(spec)`` as ``.neuron``; returns spikes (the membrane, if the
    neuron returns one, is dropped). ``threshold_scale`` ``s`` (threshold-guided sampling)
    multiplies the threshold of a spiking neuron: it runs the neuron on ``x / s``, which gives
    exactly the spikes of threshold ``s * v_threshold`` for IF/LIF neurons whose reset value is
    0 (hard) or subtractive (soft). ANN activations ignore it.
    """

    def __init__(self, spec: str | dict[str, Any] | nn.Module) -> None:
        super().__init__()
        self.neuron = neuron_from_config(spec)
        self.threshold_scale = 1.0

    @property
    def spiking(self) -> bool:
        """Whether the wrapped activation is a spiking neuron (not an ANN activation)."""
        return isinstance(self.neuron, MultiStepNeuron)

    def forward(self, x: Tensor) -> Tensor:
        """Return spikes (or the ANN activation) of ``x``, same shape ``[T, B, ...]``."""
        if self.threshold_scale != 1.0 and self.spiking:
            x = x / self.threshold_scale
        out = self.neuron(x)
        return out[0] if isinstance(out, tuple) else out

    def extra_repr(self) -> str:
        return "" if self.threshold_scale == 1.0 else f"threshold_scale={self.threshold_scale}"


class TSMConv2d(Conv2d):
    """Time-folded ``Conv2d`` followed by a learnable per-step scale (SDM's TSM).

    ``y_t = tsm_scale[t] * conv(x_t)`` for ``x [T, B, C, H, W]``; ``tsm_scale`` has shape
    ``(T, 1, 1, 1, 1)`` and starts at 1 (then the layer is exactly ``Conv2d``). State-dict keys:
    ``weight``, ``bias`` (as ``nn.Conv2d``) and ``tsm_scale``.
    """

    def __init__(self, *args: Any, timesteps: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tsm_scale = nn.Parameter(torch.ones(timesteps, 1, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Return ``tsm_scale * conv(x)``, ``[T, B, C_out, H_out, W_out]``."""
        if x.dim() == 5 and x.shape[0] != self.tsm_scale.shape[0]:
            raise ValueError(
                f"TSMConv2d was built for T={self.tsm_scale.shape[0]} steps, got input with "
                f"T={x.shape[0]} (shape {tuple(x.shape)})"
            )
        return super().forward(x) * self.tsm_scale


def _xavier(conv: nn.Module, gain: float = 1.0) -> nn.Module:
    init.xavier_uniform_(conv.weight, gain=gain)
    if conv.bias is not None:
        init.zeros_(conv.bias)
    return conv


class _Builder:
    """Makes the convolutions and activations of one U-Net (plain or TSM; its neuron)."""

    def __init__(self, cfg: UNetConfig) -> None:
        self.cfg = cfg

    def conv(self, cin: int, cout: int, k: int, stride: int = 1, gain: float = 1.0) -> Conv2d:
        """A ``k x k`` conv with padding ``k // 2`` (TSM when the config says so)."""
        if self.cfg.tsm:
            conv: Conv2d = TSMConv2d(cin, cout, k, stride, k // 2, timesteps=self.cfg.timesteps)
        else:
            conv = Conv2d(cin, cout, k, stride, k // 2)
        return _xavier(conv, gain)  # type: ignore[return-value]

    def act(self) -> SpikeAct:
        return SpikeAct(self.cfg.neuron)


class ResBlock(CheckpointedBlock):
    """Pre-spike residual block ``[T, B, C_in, H, W], temb [B, tdim] -> [T, B, C_out, H, W]``."""

    def __init__(self, cin: int, cout: int, tdim: int, b: _Builder, *, attn: bool = False) -> None:
        super().__init__()
        self.neuron1, self.conv1, self.bn1 = b.act(), b.conv(cin, cout, 3), TimeBatchNorm2d(cout)
        self.temb_proj = nn.Sequential(nn.SiLU(), _xavier(nn.Linear(tdim, cout)))
        self.neuron2, self.conv2, self.bn2 = b.act(), b.conv(cout, cout, 3), TimeBatchNorm2d(cout)
        self.dropout = nn.Dropout(b.cfg.dropout) if b.cfg.dropout > 0 else nn.Identity()
        self.shortcut = b.conv(cin, cout, 1) if cin != cout else nn.Identity()
        self.attn = (
            SpikingSelfAttention(cout, num_groups=math.gcd(32, cout), neuron=b.act())
            if attn
            else nn.Identity()
        )

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.bn1(self.conv1(self.neuron1(x)))
        h = h + self.temb_proj(temb)[None, :, :, None, None]
        h = self.bn2(self.conv2(self.dropout(self.neuron2(h))))
        return self.attn(h + self.shortcut(x))


class DownSample(CheckpointedBlock):
    """``IF -> conv(3x3, stride 2) -> BN``: ``[T, B, C, H, W] -> [T, B, C, H/2, W/2]``."""

    def __init__(self, ch: int, b: _Builder) -> None:
        super().__init__()
        self.neuron, self.conv, self.bn = b.act(), b.conv(ch, ch, 3, stride=2), TimeBatchNorm2d(ch)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        return self.bn(self.conv(self.neuron(x)))


class UpSample(CheckpointedBlock):
    """``IF -> nearest x2 -> conv(3x3) -> BN``: ``[T, B, C, H, W] -> [T, B, C, 2H, 2W]``."""

    def __init__(self, ch: int, b: _Builder) -> None:
        super().__init__()
        self.neuron, self.conv, self.bn = b.act(), b.conv(ch, ch, 3), TimeBatchNorm2d(ch)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        s = self.neuron(x)
        s = F.interpolate(s.flatten(0, 1), scale_factor=2.0, mode="nearest")
        return self.bn(self.conv(s.unflatten(0, x.shape[:2])))


class TimeEmbedding(nn.Module):
    """``t [B] -> [B, 4ch]``: sinusoids(ch) -> Linear(ch, 4ch) -> Swish -> Linear(4ch, 4ch)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.ch = ch
        self.mlp = nn.Sequential(
            _xavier(nn.Linear(ch, 4 * ch)), nn.SiLU(), _xavier(nn.Linear(4 * ch, 4 * ch))
        )

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(t, self.ch).to(self.mlp[0].weight.dtype))


class Head(CheckpointedBlock):
    """Output head ``[T, B, C, H, W] -> [B, C_img, H, W]`` (see the module docstring)."""

    def __init__(self, ch: int, b: _Builder) -> None:
        super().__init__()
        c_img = b.cfg.in_channels
        self.decay = b.cfg.readout_decay
        self.tail_bn = TimeBatchNorm2d(ch)
        self.tail_conv = b.conv(ch, c_img, 3, gain=1e-5)
        self.t_output_layer = nn.Conv3d(c_img, c_img, (3, 3, 1), padding=(1, 1, 0))
        self.last_bn = TimeBatchNorm2d(c_img)

    def forward(self, h: Tensor) -> Tensor:
        h = self.tail_conv(F.silu(self.tail_bn(h)))  # [T, B, C, H, W]
        g = self.t_output_layer(h.permute(1, 2, 3, 4, 0)).permute(4, 0, 1, 2, 3)
        h = F.silu(self.last_bn(g)) + h
        return weighted_decode(h, self.decay)


# --------------------------------------------------------------------------- the U-Net


class SpikingUNet(nn.Module):
    """SDDPM's spiking U-Net (see the module docstring); ``forward(x [B,C,H,W], t [B])``."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        b = _Builder(cfg)
        ch, tdim = cfg.ch, 4 * cfg.ch
        self.time_embedding = TimeEmbedding(ch)
        self.conv, self.bn = b.conv(cfg.in_channels, ch, 3), TimeBatchNorm2d(ch)
        self.neuron = b.act()
        self.conv_identity, self.bn_identity = b.conv(ch, ch, 3), TimeBatchNorm2d(ch)

        self.downblocks = nn.ModuleList()
        chs, now = [ch], ch
        for i, mult in enumerate(cfg.ch_mult):
            for _ in range(cfg.num_res_blocks):
                self.downblocks.append(ResBlock(now, ch * mult, tdim, b, attn=i in cfg.attn))
                now = ch * mult
                chs.append(now)
            if i != len(cfg.ch_mult) - 1:
                self.downblocks.append(DownSample(now, b))
                chs.append(now)
        self.middleblocks = nn.ModuleList([ResBlock(now, now, tdim, b) for _ in range(2)])
        self.upblocks = nn.ModuleList()
        for i, mult in reversed(list(enumerate(cfg.ch_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                self.upblocks.append(
                    ResBlock(chs.pop() + now, ch * mult, tdim, b, attn=i in cfg.attn)
                )
                now = ch * mult
            if i != 0:
                self.upblocks.append(UpSample(now, b))
        self.head = Head(now, b)

    @property
    def downsample_factor(self) -> int:
        """Image sizes must be divisible by this (``2^(levels - 1)``)."""
        return 2 ** (len(self.cfg.ch_mult) - 1)

    @property
    def spiking(self) -> bool:
        """Whether the activations are spiking neurons (False for the ANN twin)."""
        return self.neuron.spiking

    def activations(self) -> dict[str, SpikeAct]:
        """The activation modules by qualified name (those of attention blocks included)."""
        return {n: m for n, m in self.named_modules() if isinstance(m, SpikeAct)}

    def set_threshold_scale(self, scale: float) -> None:
        """Threshold-guided inference: multiply every neuron's threshold by ``scale`` (> 0)."""
        if not scale > 0:
            raise ValueError(f"threshold scale must be > 0, got {scale}")
        for act in self.activations().values():
            act.threshold_scale = float(scale)

    def body(self, x: Tensor, t: Tensor, timesteps: int | None = None) -> Tensor:
        """Everything before the head: ``x [B, C, H, W], t [B] -> [T, B, ch, H, W]``."""
        steps = self.cfg.timesteps if timesteps is None else timesteps
        self._check_input(x, t)
        temb = self.time_embedding(t.to(x.device))
        h = self.bn(self.conv(direct_encode(x, steps)))
        h = self.bn_identity(self.conv_identity(self.neuron(h)))
        hs = [h]
        for layer in self.downblocks:
            h = layer(h, temb)
            hs.append(h)
        for layer in self.middleblocks:
            h = layer(h, temb)
        for layer in self.upblocks:
            if isinstance(layer, ResBlock):
                h = torch.cat([h, hs.pop()], dim=2)
            h = layer(h, temb)
        return h

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Predict the noise: ``x [B, C, H, W]``, ``t [B]`` -> ``eps [B, C, H, W]``."""
        return self.head(self.body(x, t))

    def _check_input(self, x: Tensor, t: Tensor) -> None:
        c, f = self.cfg.in_channels, self.downsample_factor
        if x.dim() != 4 or x.shape[1] != c or x.shape[2] % f or x.shape[3] % f:
            raise ValueError(
                f"SpikingUNet expects images [B, {c}, H, W] with H, W divisible by {f}, "
                f"got shape {tuple(x.shape)}"
            )
        if t.shape != (x.shape[0],):
            raise ValueError(
                f"SpikingUNet expects one diffusion time per image, t of shape "
                f"({x.shape[0]},), got {tuple(t.shape)}"
            )
