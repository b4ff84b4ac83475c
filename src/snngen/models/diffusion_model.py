"""Denoising diffusion with the spiking U-Net (SDDPM / SDM) and its ANN twin (DDPM).

Registered names (one class, two sets of defaults):

* ``sddpm``: the spiking U-Net (IF neurons, T = 4); ``tsm: true`` gives SDM's TSM variant,
  ``init_from: RUN_OR_CKPT`` starts it from a trained plain SDDPM by weight inheritance;
* ``ddpm``: the ANN twin, the same U-Net with ``neuron: relu`` (or ``silu``) and ``timesteps: 1``,
  identical parameter shapes (a ReLU twin can be converted to an SNN, see
  :mod:`snngen.conversion`).

Training: images in [0, 1] are scaled to [-1, 1]; the loss is DDPM's simple eps-MSE (uniform
``t``, standard normal noise) on the linear (SDDPM: 1e-4 to 0.02 over 1000 steps) or cosine
schedule. Sampling: ``sample(n, generator=None, solver="ddpm", steps=None)`` runs one of the
samplers of :mod:`snngen.diffusion` (``ddpm``, ``ddim``, ``analytic-dpm``, ``dpm-solver``) and
returns images in [0, 1] (clamped). ``threshold_scale`` (config default 1.0, or per call) is the
threshold-guided strategy: every neuron's threshold is multiplied by it while sampling only.

Sampling follows SDDPM's code by default: the predicted ``x0`` is clamped to [-1, 1] at every
DDPM and DDIM step, and DDIM runs on SDDPM's grid (999, 979, .., 19, then to step 0);
``solver_options: {clip_denoised: false}`` / ``{spacing: uniform}`` give the unclamped DDIM of
the DDIM paper. Analytic-DPM follows baofff/Analytic-DPM: the variance clipped to the data
range [-1, 1] (Theorem 2), the clamped-x0 posterior mean, the last noisy step's sigma clipped
(``clip_sigma_steps: 1``, as its CIFAR-10 runs).

Analytic-DPM needs ``Gamma_n = E ||eps(x_n, n)||^2 / d`` over the data; the reference estimates
it on the full training set. :meth:`DiffusionModel.set_gamma_data` attaches the training set
(``snngen sample`` / ``eval`` do it for you); ``Gamma`` is then estimated on the sampler's
trajectory from all of it, or from its first ``gamma_images`` images when that is set, at the
first analytic-dpm call (cached per trajectory; a fixed seed, so the sample stream does not
depend on the cache). Without an attached set, the model falls back to the first
``gamma_images`` (256 when unset) training images it saw, kept in a buffer saved in
checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from snngen.diffusion import NoiseSchedule, StepCallback, Trajectory, estimate_gamma
from snngen.diffusion import sample as run_sampler
from snngen.diffusion.schedule import sampling_timesteps
from snngen.errors import ConfigError, SnngenError
from snngen.models.base import DataInfo, GenerativeModel, RunPart
from snngen.models.inherit import inherit_weights
from snngen.models.unet import ANN_ACTIVATIONS, SDDPM_IF, SpikingUNet, UNetConfig, neuron_name

__all__ = ["DDPMConfig", "DiffusionModel", "SDDPMConfig"]

SOLVERS = ("ddpm", "ddim", "analytic-dpm", "dpm-solver")
#: images remembered from training for Gamma when no training set is attached and
#: ``gamma_images`` is unset
GAMMA_MEMORY = 256
#: Analytic-DPM's defaults in the model (the reference's CIFAR-10 runs: clip_sigma_idx 1)
ANALYTIC_DEFAULTS: dict[str, Any] = {"clip_sigma_steps": 1}


@dataclass
class SDDPMConfig:
    """Spiking diffusion model (defaults: SDDPM on CIFAR-10, T = 4)."""

    name: str = "sddpm"
    # U-Net
    ch: int = 128
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 4])
    attn: list[int] = field(default_factory=list)
    num_res_blocks: int = 2
    dropout: float = 0.0
    timesteps: int = 4
    neuron: str | dict[str, Any] = field(default_factory=lambda: dict(SDDPM_IF))
    tsm: bool = False
    readout_decay: float = 0.8
    # diffusion
    diffusion_steps: int = 1000
    beta_schedule: Literal["linear", "cosine"] = "linear"
    beta_1: float = 1e-4
    beta_T: float = 0.02
    # sampling defaults (CLI --solver / --steps override)
    solver: str = "ddpm"
    sample_steps: int | None = None  # None: the solver's default (DDPM: all diffusion_steps)
    solver_options: dict[str, Any] = field(default_factory=dict)
    threshold_scale: float = 1.0
    gamma_images: int | None = None  # Analytic-DPM's Gamma: None = the whole training set
    # weight inheritance (SDM): a run folder or checkpoint of a plain model to start from
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if not self.threshold_scale > 0:
            raise ValueError(f"threshold_scale must be > 0, got {self.threshold_scale}")
        if self.diffusion_steps < 2:
            raise ValueError(f"diffusion_steps must be >= 2, got {self.diffusion_steps}")
        if self.gamma_images is not None and self.gamma_images < 1:
            raise ValueError(f"gamma_images must be >= 1 or null (all), got {self.gamma_images}")


@dataclass
class DDPMConfig(SDDPMConfig):
    """The ANN twin: the same U-Net with ReLU activations and a single step."""

    name: str = "ddpm"
    timesteps: int = 1
    neuron: str | dict[str, Any] = "relu"


def unet_config(cfg: SDDPMConfig, info: DataInfo) -> UNetConfig:
    """The :class:`UNetConfig` of a diffusion-model config and its data."""
    return UNetConfig(
        ch=cfg.ch,
        ch_mult=list(cfg.ch_mult),
        attn=list(cfg.attn),
        num_res_blocks=cfg.num_res_blocks,
        dropout=cfg.dropout,
        timesteps=cfg.timesteps,
        neuron=cfg.neuron,
        tsm=cfg.tsm,
        in_channels=info.channels,
        readout_decay=cfg.readout_decay,
    )


def _both(first: StepCallback | None, second: StepCallback | None) -> StepCallback:
    """One step callback calling ``first`` then ``second`` (either may be None)."""
    def call(i: int, t: float, x_t: Tensor, x0: Tensor) -> None:
        for cb in (first, second):
            if cb is not None:
                cb(i, t, x_t, x0)
    return call


def make_schedule(cfg: SDDPMConfig) -> NoiseSchedule:
    if cfg.beta_schedule == "linear":
        return NoiseSchedule.linear(cfg.diffusion_steps, cfg.beta_1, cfg.beta_T)
    return NoiseSchedule.cosine(cfg.diffusion_steps)


class DiffusionModel(GenerativeModel):
    """An eps-predicting U-Net (``.unet``) with its noise schedule (``.schedule``)."""

    name = "sddpm"

    #: the parent of weight inheritance (``model.init_from``), loaded by the run layer
    run_parts = (RunPart("init_state", "init_from", "state"),)

    def __init__(
        self, cfg: SDDPMConfig, info: DataInfo, *, init_state: Mapping | None = None
    ) -> None:
        """``init_state``: the content of ``cfg.init_from`` (a checkpoint's mapping or a
        state dict) as :func:`snngen.runs.load_model_parts` reads it; needed with ``init_from``."""
        super().__init__()
        if info.events:
            raise ValueError(f"model {cfg.name!r} takes images, not event streams")
        self.name = cfg.name
        self.cfg, self.info = cfg, info
        self.unet = SpikingUNet(unet_config(cfg, info))
        if info.image_size % self.unet.downsample_factor:
            raise ValueError(
                f"image_size {info.image_size} must be divisible by "
                f"{self.unet.downsample_factor} for ch_mult {cfg.ch_mult}"
            )
        self.schedule = make_schedule(cfg)
        memory = cfg.gamma_images or GAMMA_MEMORY
        shape = (memory, info.channels, info.image_size, info.image_size)
        self.register_buffer("gamma_data", torch.zeros(shape))
        self.register_buffer("gamma_filled", torch.zeros((), dtype=torch.long))
        self._gamma_cache: dict[tuple, Tensor] = {}
        self._gamma_source: Any = None
        self.inheritance = None
        if cfg.init_from:
            if init_state is None:
                raise SnngenError(
                    f"model.init_from {cfg.init_from}: the parent's weights were not loaded; "
                    "build the model with snngen.runs.build_checked_model"
                )
            self.inheritance = inherit_weights(self.unet, init_state)

    @property
    def spiking(self) -> bool:
        return neuron_name(self.cfg.neuron) not in ANN_ACTIVATIONS

    # ------------------------------------------------------------------ training
    def loss(self, batch: Tensor) -> dict[str, Tensor]:
        """DDPM's eps-MSE on ``batch`` ``[B, C, H, W]`` in [0, 1] (scaled to [-1, 1])."""
        x0 = batch * 2 - 1
        if self.training:
            self._remember(x0)
        loss = self.schedule.eps_loss(self.unet, x0)
        return {"loss": loss}

    def set_gamma_data(self, data: Tensor | Iterable | Callable[[], Any] | None) -> None:
        """Attach the training set for Analytic-DPM's Gamma: a tensor ``[M, C, H, W]``, a
        dataset of ``(image, label)`` items or a loader of batches, images in [0, 1] (or a
        callable returning one, opened only when Gamma is needed). ``None`` detaches it."""
        self._gamma_source = data
        self._gamma_cache.clear()

    def _gamma_batches(self) -> Iterator[Tensor]:
        """Batches ``[b, C, H, W]`` in [-1, 1] to estimate Gamma on (at most ``gamma_images``)."""
        cap = self.cfg.gamma_images
        if self._gamma_source is None:
            n = int(self.gamma_filled)
            yield from self.gamma_data[: n if cap is None else min(n, cap)].split(64)
            return
        data = self._gamma_source
        data = data() if callable(data) and not isinstance(data, (Tensor, Dataset)) else data
        if isinstance(data, Dataset):
            data = DataLoader(data, batch_size=64, shuffle=False)
        elif isinstance(data, Tensor):
            data = data.split(64)
        seen = 0
        for batch in data:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            if cap is not None:
                x = x[: cap - seen]
            if x.shape[0] == 0:
                return
            seen += x.shape[0]
            yield x.to(self.gamma_data.device, self.gamma_data.dtype) * 2 - 1

    @torch.no_grad()
    def _remember(self, x0: Tensor) -> None:
        """Keep the first training images (Gamma's fall-back without an attached set)."""
        self._gamma_cache.clear()
        k = int(self.gamma_filled)
        take = min(self.gamma_data.shape[0] - k, x0.shape[0])
        if take > 0:
            self.gamma_data[k : k + take] = x0[:take].to(self.gamma_data.dtype)
            self.gamma_filled += take

    # ------------------------------------------------------------------ sampling
    def _gamma(self, steps: int | None, options: dict, scale: float) -> Tensor:
        """Analytic-DPM's Gamma on the trajectory of ``steps`` (cached; eval mode)."""
        spacing = options.get("spacing") or "analytic-dpm"
        steps = 50 if steps is None else steps
        timesteps = options.get("timesteps")
        key = (steps, spacing, None if timesteps is None else tuple(timesteps), scale)
        if key not in self._gamma_cache:
            if self._gamma_source is None and int(self.gamma_filled) == 0:
                raise ConfigError(
                    "analytic-dpm needs training images to estimate Gamma; this model has seen "
                    "none (attach them with set_gamma_data, or pass gamma=... to sample)"
                )
            taus = sampling_timesteps(self.schedule, steps, spacing, timesteps)
            gen = torch.Generator(device=self.gamma_data.device).manual_seed(0)
            self._gamma_cache[key] = estimate_gamma(
                self.unet, self.schedule, self._gamma_batches(), timesteps=taus, generator=gen,
            )
        return self._gamma_cache[key]

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        solver: str | None = None,
        steps: int | None = None,
        threshold_scale: float | None = None,
        noise: Tensor | None = None,
        trajectory: bool = False,
        callback: StepCallback | None = None,
        **options: Any,
    ) -> Tensor | tuple[Tensor, Trajectory]:
        """Draw ``n`` images ``[n, C, H, W]`` in [0, 1].

        ``solver``: ``ddpm`` | ``ddim`` | ``analytic-dpm`` | ``dpm-solver`` (default: the
        config's); ``steps``: network calls (default: the config's ``sample_steps``, else the
        solver's default); ``threshold_scale``: threshold-guided sampling factor (default: the
        config's); ``noise``: a fixed starting point ``x_T`` ``[n, C, H, W]`` (default: drawn
        from ``generator``); ``options``: passed to the sampler on top of ``solver_options``
        (e.g. ``eta``, ``order``, ``method``, ``spacing``, ``clip_denoised``).

        ``trajectory=True`` returns ``(images, chain)``: the same images, and a
        :class:`~snngen.diffusion.Trajectory` of every step's ``x_t`` and predicted ``x0``
        (``[n, C, H, W]`` each, in the sampler's [-1, 1] scale; the last frame is the output
        before clamping). ``callback(i, t, x_t, x0_pred)``: called at every step instead
        (:data:`~snngen.diffusion.StepCallback`). Neither changes the images.
        """
        chain = Trajectory() if trajectory else None
        if chain is not None or callback is not None:
            options["callback"] = _both(chain, callback)
        solver = (solver or self.cfg.solver).strip().lower().replace("_", "-")
        steps = self.cfg.sample_steps if steps is None else steps
        opts = self._options(solver, options)
        scale = self.cfg.threshold_scale if threshold_scale is None else threshold_scale
        with self._sampling_mode(scale):
            if solver == "analytic-dpm" and "gamma" not in opts and "data" not in opts:
                opts["gamma"] = self._gamma(steps, opts, scale)
            device = self.gamma_data.device  # the model's: noise and samples live there
            shape = (n, self.info.channels, self.info.image_size, self.info.image_size)
            if noise is not None and tuple(noise.shape) != shape:
                raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
            x = run_sampler(solver, self.unet, self.schedule, shape if noise is None else noise,
                            steps, generator=generator, device=device, **opts)
        images = ((x.clamp(-1, 1) + 1) / 2).float()
        return (images, chain) if chain is not None else images

    @torch.no_grad()
    def analytic_gamma(
        self, steps: int | None = None, *, threshold_scale: float | None = None, **options: Any
    ) -> Tensor:
        """Analytic-DPM's ``Gamma_n`` for ``sample(solver="analytic-dpm", steps=steps, ...)``.

        Estimated on the remembered training images at the trajectory's steps and cached, so a
        later ``sample`` with the same arguments reuses it (benchmarks call this first to time
        the one-off estimate apart from sampling). Returns float64 ``[N]``, NaN off the
        trajectory.
        """
        steps = self.cfg.sample_steps if steps is None else steps
        opts = self._options("analytic-dpm", options)
        scale = self.cfg.threshold_scale if threshold_scale is None else threshold_scale
        with self._sampling_mode(scale):
            return self._gamma(steps, opts, scale)

    def _options(self, solver: str, options: dict[str, Any]) -> dict[str, Any]:
        """The sampler options: the solver's model defaults < ``solver_options`` < ``options``."""
        defaults = ANALYTIC_DEFAULTS if solver == "analytic-dpm" else {}
        return {**defaults, **self.cfg.solver_options, **options}

    @contextmanager
    def _sampling_mode(self, threshold_scale: float) -> Iterator[None]:
        """Eval mode and the given threshold scale inside; the previous state restored after."""
        was_training = self.training
        self.eval()
        self.unet.set_threshold_scale(threshold_scale)
        try:
            yield
        finally:
            self.unet.set_threshold_scale(1.0)
            self.train(was_training)
