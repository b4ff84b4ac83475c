"""Fully Spiking VAE (Kamata, Mukuta and Harada, AAAI 2022; kamata1729/FullySpikingVAE).

Pipeline (time first throughout)::

    image [B, C, H, W] in [0, 1] -> [-1, 1] -> direct encoding over T steps -> [T, B, C, H, W]
      -> spiking conv encoder (conv k3 s2 p1, tdBN, LIF per level) -> linear, tdBN, LIF
      -> x [T, B, latent]
      -> posterior q(z_t | x_<=t, z_<t): an SNN on [x_t, z_{t-1}] giving k spikes per latent
         unit; z_t = one of the k picked at random (autoregressive Bernoulli sampling)
      -> z [T, B, latent] -> linear, tdBN, LIF -> transposed-conv decoder (tdBN, LIF) -> last
         transposed conv (stride 1, no norm, no spike) -> [T, B, C, H, W]
      -> read-out tanh(sum_t 0.8^(T-1-t) y_t) in [-1, 1] -> back to [0, 1] for the interface

The prior p(z_t | z_<t) is the same kind of SNN fed only ``z_{t-1}``. Loss (original ``mmd``):
``MSE(recon, x) + mean((PSP(q_bar) - PSP(p_bar))^2)`` with ``q_bar``, ``p_bar`` the k-averaged
firing probabilities ``[T, B, latent]`` and PSP the first-order synaptic filter
``s_t = s_{t-1} + (x_t - s_{t-1}) / tau_s`` (tau_s 2). ``distance: kl`` gives the original's
Bernoulli KL variant (weight 1e-4). MSE is on the [-1, 1] scale, as the original (and its
published numbers); :meth:`FSVAE.reconstruct` returns [0, 1] images.

Faithful to the original code:

* LIF ``u_t = 0.25 u_{t-1} (1 - o_{t-1}) + x_t``, threshold 0.2, a spike when ``u > Vth``
  (``LIF(form="fsvae", strict_threshold=True)``), rectangular surrogate of width 1. The original
  centres the window on ``u`` (``|u| < 0.5``), not on ``u - Vth``: the default
  ``surrogate_centre: membrane`` reproduces it, ``threshold`` centres it on the threshold.
* tdBN over (T, B, H, W) scaled by ``alpha * Vth`` (alpha 1; 2 in the posterior and prior).
* Training-mode sampling of the posterior: for t < T-1 the posterior is re-run, without gradient,
  on the whole prefix ``[x_<=t, z_<t]`` (so tdBN takes batch statistics over the prefix, and
  updates its running statistics, as in the original); then one pass with gradient on the full
  sequence gives ``q``, and ``z_t`` is re-picked from it with the same random indices.
* Scheduled sampling of the prior (training only): at each step ``t >= 5`` with probability
  ``p`` (one draw per step for the whole batch) the prior's input ``z_t`` is replaced by its own
  majority prediction ``mean_k > 0.5`` (ties broken by 1e-3 Gaussian noise). ``p`` rises
  from 0.1 to 0.3 over ``scheduled_ramp_steps`` optimiser steps in ``scheduled_ramp_levels``
  stairs: with ramp steps = epochs x steps per epoch and levels = epochs (default: the
  original's MNIST run, 150 x 240 and 150) it is the original's once-per-epoch
  ``p = 0.1 + 0.2 epoch / epochs``; levels 0 ramps smoothly per step.

In eval mode tdBN uses running statistics, every layer is causal, and the autoregressive loops
step one frame at a time, feeding each new frame through the layers once and advancing each
neuron one step from its carried state (exactly what re-running on the prefix computes, in O(T)
instead of O(T^2)); the monitor then counts each layer call and neuron update once, as an online
SNN runs them. The original's own op count, prefix re-runs included, is
:mod:`snngen.models.fsvae_cost`.

Activation checkpointing (``trainer.checkpoint_activations``): each level of the encoder and
decoder (conv, tdBN, LIF) and the linear stages to and from the latent are checkpointed stages
(:class:`~snngen.spiking.checkpointing.StagedSequential`); the posterior and prior are not.

``neuron: relu`` swaps every LIF for a ReLU with everything else unchanged (T folded into the
batch): the network whose speed measures the neuron overhead. The Gaussian ANN VAE of the paper
is :class:`snngen.models.ann_vae.ANNVAE`, built from the same encoder/decoder builders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snngen.models.base import DataInfo, GenerativeModel
from snngen.spiking import kernels
from snngen.spiking.checkpointing import StagedSequential
from snngen.spiking.coding import direct_encode, weighted_decode
from snngen.spiking.layers import Conv2d, ConvTranspose2d, Linear, TdBatchNorm1d, TdBatchNorm2d
from snngen.spiking.neurons import LIF, MultiStepNeuron

__all__ = [
    "FSVAE",
    "FSVAEConfig",
    "AutoregressiveBernoulli",
    "bernoulli_kl",
    "conv_decoder",
    "conv_encoder",
    "pick_one_of_k",
    "psp",
    "psp_mmd",
]


# --------------------------------------------------------------------------- config


@dataclass
class FSVAEConfig:
    """Hyper-parameters of FSVAE (defaults: the original code's MNIST config)."""

    name: str = "fsvae"
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # +512: "large"
    latent_dim: int = 128
    num_steps: int = 16
    k: int = 20
    neuron: Literal["lif", "relu"] = "lif"
    beta: float = 0.25  # LIF decay (the original's tau)
    v_threshold: float = 0.2
    surrogate_width: float = 1.0
    # the original's window |u| < width/2 is centred on the membrane u; "threshold": on u - Vth
    surrogate_centre: Literal["threshold", "membrane"] = "membrane"
    strict_threshold: bool = True  # the original fires when u > Vth (False: u >= Vth)
    bn_alpha: float = 1.0
    prior_bn_alpha: float = 2.0  # tdBN alpha in the posterior and prior
    readout_decay: float = 0.8
    distance: Literal["mmd", "kl"] = "mmd"
    distance_weight: float | None = None  # None: 1 for mmd, 1e-4 for kl (the original's)
    psp_tau: float = 2.0
    scheduled_sampling: bool = True
    scheduled_p: list[float] = field(default_factory=lambda: [0.1, 0.3])
    scheduled_start: int = 5  # steps t >= this may use the prior's own prediction
    # p goes from the first to the last value over this many optimiser steps (0: p stays at the
    # first value), in ``scheduled_ramp_levels`` equal stairs (0: smoothly, per step). The
    # original steps p once per epoch over all its epochs: 150 stairs over 150 epochs x 240
    # steps (MNIST, batch 250): p = 0.1 + 0.2 * epoch / 150.
    scheduled_ramp_steps: int = 36000
    scheduled_ramp_levels: int = 150

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("channels must list at least one conv width, e.g. [32, 64, 128, 256]")
        for key in ("latent_dim", "num_steps", "k"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if len(self.scheduled_p) != 2 or not all(0.0 <= p <= 1.0 for p in self.scheduled_p):
            raise ValueError(
                f"scheduled_p must be [first, last] probabilities in [0, 1], got {self.scheduled_p}"
            )
        if self.psp_tau < 1.0:
            raise ValueError(f"psp_tau must be >= 1, got {self.psp_tau}")
        for key in ("scheduled_ramp_steps", "scheduled_ramp_levels"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")


# --------------------------------------------------------------------------- functions


def psp(x: Tensor, tau_s: float = 2.0) -> Tensor:
    """First-order synaptic filter over time: ``s_t = s_{t-1} + (x_t - s_{t-1}) / tau_s``, s_{-1}=0.

    Closed form ``s_t = sum_{u<=t} (1/tau_s) (1 - 1/tau_s)^(t-u) x_u``. ``x`` ``[T, ...]``;
    returns the same shape.
    """
    out, s = [], torch.zeros_like(x[0])
    for t in range(x.shape[0]):
        s = s + (x[t] - s) / tau_s
        out.append(s)
    return torch.stack(out)


def psp_mmd(q_bar: Tensor, p_bar: Tensor, tau_s: float = 2.0) -> Tensor:
    """FSVAE's MMD: ``mean((PSP(q_bar) - PSP(p_bar))^2)`` over every element; scalar.

    ``q_bar``, ``p_bar``: firing probabilities ``[T, B, latent]`` (the k-averaged outputs).
    """
    return torch.mean((psp(q_bar, tau_s) - psp(p_bar, tau_s)) ** 2)


def bernoulli_kl(q_bar: Tensor, p_bar: Tensor, eps: float = 1e-2) -> Tensor:
    """The original's ``kld`` distance: Bernoulli KL(q || p) per unit and step, with ``eps``
    added inside the logs, summed over (T, latent) and averaged over the batch; scalar.

    ``q_bar``, ``p_bar``: ``[T, B, latent]`` probabilities.
    """
    kl = q_bar * torch.log((q_bar + eps) / (p_bar + eps)) + (1 - q_bar) * torch.log(
        (1 - q_bar + eps) / (1 - p_bar + eps)
    )
    return kl.sum(dim=(0, 2)).mean()


def _randint(k: int, shape: tuple[int, ...], generator: torch.Generator | None, device) -> Tensor:
    """``randint(0, k, shape)`` from ``generator`` (on its own device), moved to ``device``."""
    if generator is None:
        return torch.randint(k, shape, device=device)
    return torch.randint(k, shape, generator=generator, device=generator.device).to(device)


def pick_one_of_k(out: Tensor, index: Tensor) -> Tensor:
    """Return ``out[..., index]``: one of the k candidates per unit.

    ``out`` ``[..., latent, k]``, ``index`` ``[..., latent]`` (long, in [0, k)); returns
    ``[..., latent]``. With a uniform index the result is a Bernoulli draw with
    ``p = out.mean(-1)`` when ``out`` is binary. Differentiable in ``out``.
    """
    return out.gather(-1, index.unsqueeze(-1)).squeeze(-1)


# --------------------------------------------------------------------------- builders

Factory = Callable[[int], nn.Module]


def conv_encoder(
    in_channels: int, channels: list[int], norm: Factory, act: Factory
) -> StagedSequential:
    """Per level: conv k3 s2 p1, ``norm(c)``, ``act(c)`` (one checkpointing stage per level).

    ``[T, B, C, H, W] -> [T, B, c_L, H / 2^L, W / 2^L]`` with L levels.
    """
    layers: list[nn.Module] = []
    cin = in_channels
    for c in channels:
        layers += [Conv2d(cin, c, 3, stride=2, padding=1), norm(c), act(c)]
        cin = c
    return StagedSequential(*layers, stage_size=3)


def conv_decoder(
    channels: list[int], out_channels: int, norm: Factory, act: Factory
) -> StagedSequential:
    """Mirror of :func:`conv_encoder` (``channels`` in the encoder's order).

    Per level, widest first: transposed conv k3 s2 p1 op1, ``norm``, ``act``; then a last
    transposed conv k3 s1 p1 to ``out_channels`` with no norm and no activation.
    ``[T, B, c_L, h, w] -> [T, B, out_channels, h 2^L, w 2^L]``. One checkpointing stage per
    level (the last conv runs outside them).
    """
    widths = list(reversed(channels)) + [channels[0]]
    layers: list[nn.Module] = []
    for cin, cout in zip(widths[:-1], widths[1:], strict=True):
        layers += [
            ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1),
            norm(cout),
            act(cout),
        ]
    layers.append(ConvTranspose2d(channels[0], out_channels, 3, stride=1, padding=1))
    return StagedSequential(*layers, stage_size=3)


def check_image_info(info: DataInfo, channels: list[int], model: str) -> int:
    """Return the bottom resolution ``image_size / 2^levels``; raise ``ValueError`` if it fails."""
    if info.events:
        raise ValueError(f"{model} takes images, not event streams")
    levels = len(channels)
    if info.image_size % 2**levels or info.image_size < 2**levels:
        raise ValueError(
            f"image_size {info.image_size} must be a multiple of 2^{levels} for {levels} "
            f"stride-2 convolutions (channels {channels}); use 32 with 4 levels, 64 with 5"
        )
    return info.image_size // 2**levels


# --------------------------------------------------------------------------- posterior / prior


class _Stepper:
    """Feeds an :class:`AutoregressiveBernoulli` one input frame at a time; returns the output at
    the newest step, ``[B, latent, k]``.

    ``incremental=False``: re-runs the whole network on the prefix (the original; in training
    tdBN then takes statistics over the prefix). ``incremental=True`` (eval): each new frame goes
    through each linear + tdBN once and advances each neuron by one step from its carried state
    (O(T) in all); :meth:`outputs` then runs every neuron once over its whole input history,
    which is the one call that forward hooks (:class:`~snngen.spiking.monitor.Monitor`) see, so
    each neuron update is counted once. Both modes give the same outputs when tdBN uses running
    statistics.
    """

    def __init__(self, net: AutoregressiveBernoulli, incremental: bool) -> None:
        self.net, self.incremental = net, incremental
        self.frames: list[Tensor] = []
        self.currents: list[list[Tensor]] = [[] for _ in net.blocks]
        self.state: list[tuple[Tensor, Tensor] | None] = [None for _ in net.blocks]

    def __call__(self, frame: Tensor) -> Tensor:
        if not self.incremental:
            self.frames.append(frame)
            return self.net(torch.stack(self.frames))[-1]
        h = frame.unsqueeze(0)
        for i, (linear, norm, neuron) in enumerate(self.net.blocks):
            current = norm(linear(h))
            self.currents[i].append(current)
            h = self._advance(i, neuron, current)
        return h[0].unflatten(-1, (self.net.latent_dim, self.net.k))

    def _advance(self, i: int, neuron: nn.Module, current: Tensor) -> Tensor:
        """Spikes ``[1, B, n]`` of block ``i``'s neuron at the newest step, without its hooks."""
        if not isinstance(neuron, MultiStepNeuron):
            return neuron(current)  # stateless (the ReLU twin)
        spec = neuron.spec
        if spec.form not in ("fsvae", "if") or spec.vr != 0.0:  # no one-step restart: re-run
            return neuron.forward(torch.cat(self.currents[i]))[-1:]
        if self.state[i] is not None:
            # from rest, one step of these forms charges h = x: feeding x' = charge(x, reset(h,
            # s)) continues the sequence with the kernel's own step (bit-identical)
            charge, spikes = self.state[i]
            v = kernels._reset(spec, charge, spikes)
            current = kernels._charge(spec, current, v, neuron.decay())
        spikes = neuron.forward(current)
        self.state[i] = (current, spikes)
        return spikes

    def outputs(self) -> Tensor:
        """The outputs of every step fed so far, ``[T, B, latent, k]``.

        Incremental: each neuron runs once over its whole input history (through its hooks).
        """
        if not self.incremental:
            return self.net(torch.stack(self.frames))
        h = torch.empty(0)
        for (_, _, neuron), history in zip(self.net.blocks, self.currents, strict=True):
            h = neuron(torch.cat(history))
        return h.unflatten(-1, (self.net.latent_dim, self.net.k))


class AutoregressiveBernoulli(nn.Module):
    """FSVAE's posterior (``cond_dim = latent_dim``) or prior (``cond_dim = 0``).

    Three blocks of linear, tdBN (alpha ``bn_alpha``), neuron: ``in -> 2C -> 4C -> kC`` with
    ``in = cond_dim + C`` and C the latent width. ``forward(inputs [T, B, in])`` returns the
    outputs ``[T, B, C, k]`` (spikes); in eval mode output ``t`` depends on inputs ``<= t`` only.
    """

    def __init__(
        self, latent_dim: int, k: int, cond_dim: int, norm: Factory, act: Factory
    ) -> None:
        super().__init__()
        self.latent_dim, self.k, self.cond_dim = latent_dim, k, cond_dim
        c = latent_dim
        widths = [cond_dim + c, 2 * c, 4 * c, k * c]
        self.blocks = nn.ModuleList(
            nn.Sequential(Linear(a, b), norm(b), act(b))
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )

    def forward(self, inputs: Tensor) -> Tensor:
        """``[T, B, cond_dim + C] -> [T, B, C, k]``."""
        h = inputs
        for block in self.blocks:
            h = block(h)
        return h.unflatten(-1, (self.latent_dim, self.k))

    def stepper(self) -> _Stepper:
        """A one-frame-at-a-time evaluator: incremental in eval mode, prefix re-runs in training."""
        return _Stepper(self, incremental=not self.training)

    def posterior(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Sample ``z ~ q(z | x)`` autoregressively.

        ``x``: encoder output ``[T, B, C]``. Returns ``(z [T, B, C], q [T, B, C, k])``; ``z_t`` is
        one of the k outputs of step t, picked uniformly (differentiable through ``q``).
        """
        steps, batch, c = x.shape
        index = _randint(self.k, (steps, batch, c), generator, x.device)
        z_prev = x.new_zeros(batch, c)
        z_in = [z_prev]
        step = self.stepper()
        if self.training:  # the original: prefix re-runs without gradient, then one full pass
            with torch.no_grad():
                xd = x.detach()
                for t in range(steps - 1):
                    z_prev = pick_one_of_k(step(torch.cat([xd[t], z_prev], -1)), index[t])
                    z_in.append(z_prev)
            q = self(torch.cat([x, torch.stack(z_in)], -1))
        else:
            for t in range(steps):
                z_prev = pick_one_of_k(step(torch.cat([x[t], z_prev], -1)), index[t])
            q = step.outputs()
        return pick_one_of_k(q, index), q

    def prior(
        self,
        z: Tensor,
        scheduled_p: float = 0.0,
        scheduled_start: int = 5,
    ) -> Tensor:
        """Return ``p(z_t | z_<t)`` outputs ``[T, B, C, k]`` for a posterior sample ``z`` [T, B, C].

        Teacher forcing (input ``[0, z_0, ..., z_{T-2}]``, detached); in training with
        ``scheduled_p > 0``, scheduled sampling as the original (module docstring).
        """
        z = z.detach()
        z_in = [torch.zeros_like(z[0])]
        if self.training and scheduled_p > 0:
            draws = torch.rand(z.shape[0], device=z.device)
            with torch.no_grad():
                for t in range(z.shape[0] - 1):
                    if t >= scheduled_start and draws[t] < scheduled_p:
                        prob = self(torch.stack(z_in))[-1].mean(-1)
                        prob = prob + 1e-3 * torch.randn_like(prob)
                        z_in.append((prob > 0.5).to(z.dtype))
                    else:
                        z_in.append(z[t])
            inputs = torch.stack(z_in)
        else:
            inputs = torch.cat([z_in[0].unsqueeze(0), z[:-1]])
        return self(inputs)

    def sample(
        self, n: int, steps: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw ``z ~ p(z)`` ``[steps, n, C]`` autoregressively (prior only)."""
        param = next(self.parameters())
        index = _randint(self.k, (steps, n, self.latent_dim), generator, param.device)
        z_prev = param.new_zeros(n, self.latent_dim)
        zs = []
        step = self.stepper()
        for t in range(steps):
            z_prev = pick_one_of_k(step(z_prev), index[t])
            zs.append(z_prev)
        if step.incremental:
            step.outputs()  # the neurons' one hooked call (a monitor counts each update once)
        return torch.stack(zs)


# --------------------------------------------------------------------------- model


class FSVAE(GenerativeModel):
    """Input ``[B, C, H, W]`` in [0, 1], H = W = bottom x 2^len(channels)."""

    name = "fsvae"

    def __init__(self, cfg: FSVAEConfig, info: DataInfo) -> None:
        super().__init__()
        self.bottom = check_image_info(info, cfg.channels, "FSVAE")
        self.cfg, self.info = cfg, info
        c_top, c = cfg.channels[-1], cfg.latent_dim
        flat = c_top * self.bottom**2
        act = self._act

        def norm2d(n: int) -> nn.Module:
            return TdBatchNorm2d(n, alpha=cfg.bn_alpha, v_threshold=cfg.v_threshold)

        def norm1d(n: int, alpha: float = cfg.bn_alpha) -> nn.Module:
            return TdBatchNorm1d(n, alpha=alpha, v_threshold=cfg.v_threshold)

        def norm_prior(n: int) -> nn.Module:
            return norm1d(n, cfg.prior_bn_alpha)

        self.encoder = conv_encoder(info.channels, cfg.channels, norm2d, act)
        self.to_latent = StagedSequential(Linear(flat, c), norm1d(c), act(c), stage_size=3)
        self.posterior_net = AutoregressiveBernoulli(c, cfg.k, c, norm_prior, act)
        self.prior_net = AutoregressiveBernoulli(c, cfg.k, 0, norm_prior, act)
        self.from_latent = StagedSequential(Linear(c, flat), norm1d(flat), act(flat),
                                            stage_size=3)
        self.decoder = conv_decoder(cfg.channels, info.channels, norm2d, act)
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))

    def _act(self, _: int) -> nn.Module:
        c = self.cfg
        if c.neuron == "relu":
            return nn.ReLU()
        offset = c.v_threshold if c.surrogate_centre == "membrane" else 0.0
        surrogate = {"name": "rectangular", "width": c.surrogate_width, "offset": offset}
        return LIF(beta=c.beta, form="fsvae", v_threshold=c.v_threshold, v_reset=0.0,
                   surrogate=surrogate, strict_threshold=c.strict_threshold)

    # -- pieces
    def encode(self, x: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` in [0, 1] -> encoder output ``[T, B, latent]`` (spikes)."""
        h = self.encoder(direct_encode(x * 2 - 1, self.cfg.num_steps))
        return self.to_latent(h.flatten(2))

    def decode(self, z: Tensor) -> Tensor:
        """Latent spikes ``[T, B, latent]`` -> images ``[B, C, H, W]`` in [-1, 1]."""
        h = self.from_latent(z).unflatten(2, (self.cfg.channels[-1], self.bottom, self.bottom))
        return torch.tanh(weighted_decode(self.decoder(h), self.cfg.readout_decay))

    def scheduled_p(self) -> float:
        """The current scheduled-sampling probability (0 when switched off).

        With ``scheduled_ramp_levels`` n > 0, step k uses stair ``e = floor(k n / ramp_steps)``
        (at most n): ``p = (last - first) * e / n + first``, the original's
        ``update_p(epoch, max_epoch)`` when n = epochs and ramp_steps = epochs x steps per epoch.
        """
        c = self.cfg
        if not c.scheduled_sampling:
            return 0.0
        first, last = c.scheduled_p
        if c.scheduled_ramp_steps == 0:
            return first
        step = int(self.train_steps)
        if c.scheduled_ramp_levels:
            levels = c.scheduled_ramp_levels
            stair = min(levels, step * levels // c.scheduled_ramp_steps)
            return (last - first) * stair / levels + first
        frac = min(1.0, step / c.scheduled_ramp_steps)
        return first + (last - first) * frac

    def distance(self, q: Tensor, p: Tensor) -> Tensor:
        """MMD (or KL) between posterior and prior outputs ``[T, B, C, k]``, unweighted; scalar."""
        q_bar, p_bar = q.mean(-1), p.mean(-1)
        if self.cfg.distance == "kl":
            return bernoulli_kl(q_bar, p_bar)
        return psp_mmd(q_bar, p_bar, self.cfg.psp_tau)

    # -- interface
    def loss(self, batch: Tensor) -> dict[str, Tensor]:
        c = self.cfg
        target = batch * 2 - 1
        z, q = self.posterior_net.posterior(self.encode(batch))
        p_sched = self.scheduled_p() if self.training else 0.0
        p = self.prior_net.prior(z, p_sched, c.scheduled_start)
        recon = self.decode(z)
        mse = F.mse_loss(recon, target)
        dist = self.distance(q, p)
        weight = c.distance_weight
        if weight is None:
            weight = 1e-4 if c.distance == "kl" else 1.0
        if self.training:
            self.train_steps += 1
        return {
            "loss": mse + weight * dist,
            "mse": mse.detach(),
            c.distance: dist.detach(),
            "q_rate": q.detach().mean(),
            "p_rate": p.detach().mean(),
            "scheduled_p": batch.new_tensor(p_sched),
        }

    @torch.no_grad()
    def reconstruct(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        z, _ = self.posterior_net.posterior(self.encode(x), generator)
        return (self.decode(z) + 1) / 2

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        z = self.prior_net.sample(n, self.cfg.num_steps, generator)
        return (self.decode(z) + 1) / 2
