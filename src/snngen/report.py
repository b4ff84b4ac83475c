"""Pictures of a model: reconstruction and sample grids (PNG), event strips and GIFs."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from snngen.models import GenerativeModel
from snngen.viz import save_comparison, save_event_gif, save_event_strip, save_grid


def is_event_batch(x: Tensor) -> bool:
    """Whether ``x`` is an event batch ``[T, B, 2, H, W]`` (rather than images ``[B, C, H, W]``)."""
    return x.dim() == 5


@torch.no_grad()
def save_reconstructions(model: GenerativeModel, x: Tensor, path: str | Path) -> Path | None:
    """Save originals above reconstructions of ``x``; returns the path, None if no reconstruct."""
    if not model.can_reconstruct:
        return None
    recon = model.reconstruct(x)
    if is_event_batch(x):
        n = min(8, x.shape[1])
        both = torch.cat([x[:, :n].cpu(), recon[:, :n].cpu()], dim=1)
        return save_event_strip(both, path, n=2 * n)
    return save_comparison(x.cpu(), recon.cpu(), path)


@torch.no_grad()
def save_samples(
    model: GenerativeModel, n: int, path: str | Path, seed: int = 0, gif: bool = True
) -> list[Path]:
    """Sample ``n`` items with a seeded generator and save them as a grid (events: strip + GIF).

    Returns the written paths.
    """
    gen = torch.Generator(device=_device(model)).manual_seed(seed)
    samples = model.sample(n, generator=gen)
    return write_samples(samples, path, gif=gif)


def write_samples(samples: Tensor, path: str | Path, gif: bool = True) -> list[Path]:
    """Save samples (images ``[B, C, H, W]`` or events ``[T, B, 2, H, W]``); returns the paths."""
    path = Path(path)
    if is_event_batch(samples):
        out = [save_event_strip(samples, path, n=samples.shape[1])]
        if gif:
            out.append(save_event_gif(samples, path.with_suffix(".gif"), n=samples.shape[1]))
        return out
    return [save_grid(samples, path)]


def save_grids(model: GenerativeModel, fixed: Tensor, out_dir: str | Path, tag: str) -> None:
    """Save ``out_dir/recon_<tag>.png`` for the fixed held-out batch."""
    save_reconstructions(model, fixed, Path(out_dir) / f"recon_{tag}.png")


def _device(model: torch.nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def events_to_images(x: Tensor) -> Tensor:
    """Turn event frames ``[T, B, 2, H, W]`` into images ``[B, 1, H, W]`` in [0, 1].

    The image is the total event count per pixel (both polarities, all steps) divided by its
    maximum over the batch, a picture of where the stream has edges.
    """
    img = x.float().clamp(min=0).sum(dim=(0, 2)).unsqueeze(1)
    return img / img.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-8)


def as_images(x: Tensor) -> Tensor:
    """Images ``[B, C, H, W]`` as they are; event frames ``[T, B, 2, H, W]`` as
    :func:`events_to_images`."""
    return events_to_images(x) if is_event_batch(x) else x
