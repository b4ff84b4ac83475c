"""The one interface every generative model implements.

Training, sampling and evaluation code use only this interface:

* ``loss(batch) -> dict[str, Tensor]`` with key ``"loss"`` (more keys are logged);
* ``sample(n, *, generator=None) -> Tensor`` images ``[n, C, H, W]`` in [0, 1]
  (event models: ``[T, n, 2, H, W]`` counts);
* ``reconstruct(x) -> Tensor`` where the model has one (same shape and range as ``x``).

``batch`` is what the data layer gives without labels: images ``[B, C, H, W]`` in [0, 1], or
event frames ``[T, B, 2, H, W]`` (time first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about its data to build itself."""

    channels: int
    image_size: int
    events: bool = False
    time_bins: int | None = None  # event data: number of frames T


@dataclass(frozen=True)
class RunPart:
    """A part a model is built with that another run folder holds (a model never opens one).

    ``field`` is the model config's key naming a run folder or checkpoint (e.g. ``stage1_run``);
    the layer that owns run folders (:func:`snngen.runs.load_model_parts`) loads it and passes it
    to the model's constructor as the keyword ``keyword``: with ``kind="model"`` the run's
    trained model (its EMA weights when the config's ``ema_field`` is true), with
    ``kind="state"`` the checkpoint's content (a mapping holding a state dict).
    """

    keyword: str
    field: str
    kind: Literal["model", "state"]
    ema_field: str | None = None


class GenerativeModel(nn.Module):
    """Base class of snngen's generative models (see module docstring)."""

    #: name in the model registry; checkpoints record it
    name: str = "base"
    #: parts loaded from other run folders and passed to the constructor (see :class:`RunPart`)
    run_parts: ClassVar[tuple[RunPart, ...]] = ()
    #: where :attr:`can_sample` is False: what to do instead (one phrase, shown in the refusal)
    cannot_sample_hint: str = ""

    def loss(self, batch: Tensor) -> dict[str, Tensor]:  # pragma: no cover - abstract
        """Return a dict of scalar tensors with key ``"loss"`` (the one to minimise)."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Return ``n`` new samples (``[n, C, H, W]`` in [0, 1])."""
        raise NotImplementedError(f"model {self.name!r} cannot sample")

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Return the reconstruction of ``x`` (same shape and range)."""
        raise NotImplementedError(f"model {self.name!r} has no reconstruction")

    @property
    def can_sample(self) -> bool:
        """Whether :meth:`sample` is implemented."""
        return type(self).sample is not GenerativeModel.sample

    @property
    def can_reconstruct(self) -> bool:
        """Whether :meth:`reconstruct` is implemented."""
        return type(self).reconstruct is not GenerativeModel.reconstruct

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """Map each loss key that gets its own optimiser to the parameters it trains.

        Default: one optimiser, key ``"loss"``, all parameters. A GAN-style model returns
        e.g. ``{"loss": generator_params, "loss_disc": discriminator_params}``; the trainer then
        steps one optimiser per key, in this order, each on its own loss.
        """
        return {"loss": [p for p in self.parameters() if p.requires_grad]}

    def optimizer_overrides(self) -> dict[str, dict]:
        """Per-group optimiser settings overriding the run's ``optim`` section (e.g. betas)."""
        return {}
