"""Small helpers shared by the samplers (initial noise, calling the network, progress bars, the
step callback and its recorder :class:`Trajectory`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import Tensor
from tqdm.auto import tqdm

from snngen.errors import ConfigError

#: An eps-predicting network: ``eps_model(x_t [B, ...], t [B]) -> eps [B, ...]``.
EpsModel = Callable[[Tensor, Tensor], Tensor]

#: A sampler's step callback: ``callback(step_index, t, x_t [B, ...], x0_pred [B, ...])``.
#: Called once per step before it is taken, with the state ``x_t`` at the step's time ``t``
#: (the training scale ``0..N-1``; DPM-Solver's model times may be fractional) and the
#: ``x0`` predicted there from the network's eps (as the sampler uses it, e.g. clamped to
#: [-1, 1] when it clamps); then once more after the last step with ``x_t = x0_pred =`` the
#: sampler's output and ``t`` where it ended (``-1``: clean data). The tensors are the
#: sampler's own: read or copy them, never modify them in place.
StepCallback = Callable[[int, float, Tensor, Tensor], None]

T = TypeVar("T")


@dataclass
class Trajectory:
    """A :data:`StepCallback` that records every frame (copies, on the CPU).

    ``steps[k]``, ``times[k]``, ``x[k]`` (``x_t`` ``[B, ...]``) and ``x0[k]`` (predicted
    ``x0`` ``[B, ...]``) of frame ``k``; the last frame is the sampler's output.
    """

    steps: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    x: list[Tensor] = field(default_factory=list)
    x0: list[Tensor] = field(default_factory=list)

    def __call__(self, step: int, t: float, x_t: Tensor, x0_pred: Tensor) -> None:
        self.steps.append(int(step))
        self.times.append(float(t))
        self.x.append(x_t.detach().to("cpu", copy=True))
        self.x0.append(x0_pred.detach().to("cpu", copy=True))

    def __len__(self) -> int:
        return len(self.steps)

    def select(self, k: int) -> Trajectory:
        """About ``k`` frames evenly spread over the chain, the first and the output included."""
        n = len(self)
        if n == 0 or k >= n:
            return self
        keep = sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})
        return Trajectory(
            [self.steps[i] for i in keep],
            [self.times[i] for i in keep],
            [self.x[i] for i in keep],
            [self.x0[i] for i in keep],
        )


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ``ConfigError`` naming them."""
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")
    return value


def initial_noise(
    x_T: Tensor | Sequence[int],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """The starting point of a sampler.

    ``x_T`` is either a tensor ``[B, ...]`` (used as given, e.g. fixed noise for benchmarks; it is
    copied, never modified) or a shape ``(B, ...)`` from which standard normal noise is drawn with
    ``generator`` (on the generator's own device) and placed on ``device`` (default: the
    generator's device, else CPU) in ``dtype`` (default float32).
    """
    if isinstance(x_T, Tensor):
        if not x_T.is_floating_point():
            raise ValueError(f"x_T must be a floating-point tensor, got dtype {x_T.dtype}")
        x = x_T.to(device=device or x_T.device, dtype=dtype or x_T.dtype)
        return x.clone() if x is x_T else x
    shape = tuple(int(s) for s in x_T)
    if len(shape) < 1 or min(shape) < 1:
        raise ValueError(f"x_T must be a tensor or a non-empty shape of positive sizes, got {x_T}")
    if device is None:
        device = generator.device if generator is not None else "cpu"
    draw_on = generator.device if generator is not None else device
    noise = torch.randn(shape, generator=generator, device=draw_on, dtype=dtype or torch.float32)
    return noise.to(device)


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like ``x`` drawn from ``generator`` on the generator's own
    device (``x``'s when None), placed on ``x``'s device: a generator on the model's device
    draws the noise where it is used; one on another device gives the same numbers as there."""
    draw_on = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=draw_on, dtype=x.dtype).to(x.device)


def call_eps_model(eps_model: EpsModel, x: Tensor, t: int | float, *, integer: bool) -> Tensor:
    """Evaluate ``eps_model(x [B, ...], t [B]) -> eps [B, ...]`` at one time for the whole batch.

    ``integer=True`` passes ``t`` as a ``torch.long`` tensor (DDPM, DDIM, Analytic-DPM);
    ``integer=False`` as a floating tensor of ``x``'s dtype (DPM-Solver's fractional times).
    """
    if integer:
        t_batch = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
    else:
        t_batch = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
    eps = eps_model(x, t_batch)
    if not isinstance(eps, Tensor) or eps.shape != x.shape:
        got = tuple(eps.shape) if isinstance(eps, Tensor) else type(eps).__name__
        raise ValueError(
            f"eps_model must return a tensor shaped like its input {tuple(x.shape)}, got {got}"
        )
    return eps.to(x.dtype)


def progress_iter(items: Iterable[T], *, enabled: bool, desc: str, total: int) -> Iterator[T]:
    """Iterate over ``items`` with a tqdm progress bar when ``enabled``."""
    if not enabled:
        yield from items
        return
    yield from tqdm(items, desc=desc, total=total, leave=False)


def expand_to(coef: Tensor, x: Tensor) -> Tensor:
    """Broadcast a per-sample coefficient ``[B]`` against ``x [B, ...]`` (as ``[B, 1, ...]``)."""
    return coef.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
