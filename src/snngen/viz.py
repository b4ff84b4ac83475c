"""Pictures: image grids (PNG), event streams as time-unfolded strips (PNG) and animations (GIF).

No torchvision: grids are assembled with plain tensor ops and written with Pillow.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def make_grid(
    images: Tensor, nrow: int | None = None, pad: int = 2, pad_value: float = 1.0
) -> Tensor:
    """Tile ``images`` ``[B, C, H, W]`` (values in [0, 1]) into one ``[C, H', W']`` image.

    ``nrow`` images per row (default: about square). Values are clamped to [0, 1].
    """
    if images.dim() != 4:
        raise ValueError(f"expected images shaped [B, C, H, W], got {tuple(images.shape)}")
    b, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(b)))
    ncol_rows = math.ceil(b / nrow)
    grid = torch.full((c, ncol_rows * (h + pad) + pad, nrow * (w + pad) + pad), pad_value)
    for i in range(b):
        r, k = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, top : top + h, left : left + w] = images[i].detach().float().cpu().clamp(0, 1)
    return grid


def to_pil(image: Tensor) -> Image.Image:
    """Return a PIL image of ``[C, H, W]`` in [0, 1] (C = 1 grey, C = 3 RGB), quantised as
    torchvision's ``save_image`` does (``x * 255 + 0.5``, clamped, truncated: halves round up),
    so a PNG snngen writes holds the levels pytorch-fid reads from such files."""
    arr = (image.detach().cpu().float() * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
    if arr.shape[0] == 1:
        return Image.fromarray(arr[0], mode="L")
    return Image.fromarray(np.transpose(arr[:3], (1, 2, 0)), mode="RGB")


def save_grid(
    images: Tensor, path: str | Path, nrow: int | None = None, scale: int = 2, pad: int = 2
) -> Path:
    """Save ``images`` ``[B, C, H, W]`` in [0, 1] as a PNG grid (upscaled ``scale`` x, ``pad``
    pixels between images).

    Returns the path written."""
    img = to_pil(make_grid(images, nrow=nrow, pad=pad))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return save_image(img, path)


def save_image(img: Image.Image, path: str | Path, **options) -> Path:
    """Write a PIL image atomically (temporary file, fsync, rename; :mod:`snngen.files`).

    The format comes from the suffix (``.png``, ``.gif``, ...); ``options`` go to
    ``Image.save``. Creates the parent folder. Returns the path."""
    from snngen.files import atomic_output

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image file extension {path.suffix!r}")
    with atomic_output(path, "wb") as f:
        img.save(f, format=fmt, **options)
    return path


def save_comparison(originals: Tensor, recons: Tensor, path: str | Path, n: int = 8) -> Path:
    """Save originals (top row) above reconstructions (bottom row), ``[B, C, H, W]`` each."""
    n = min(n, originals.shape[0])
    both = torch.cat([originals[:n].cpu(), recons[:n].cpu().to(originals.dtype)])
    return save_grid(both, path, nrow=n)


def events_to_rgb(frames: Tensor) -> Tensor:
    """Colour event frames ``[..., 2, H, W]`` as RGB ``[..., 3, H, W]`` in [0, 1].

    Channel 0 holds OFF and channel 1 ON counts (tonic's order, as :mod:`snngen.data` bins them).
    ON events are red, OFF events green, on a black background; counts are normalised by the
    largest count in the tensor.
    """
    frames = frames.detach().float().cpu().clamp(min=0)
    peak = frames.max().clamp(min=1e-8)
    off, on = frames[..., 0, :, :] / peak, frames[..., 1, :, :] / peak
    return torch.stack([on, off, torch.zeros_like(on)], dim=-3)


def time_unfold(frames: Tensor) -> Tensor:
    """Lay out ``[T, B, C, H, W]`` as images ``[B, C, H, T*W]``, steps side by side."""
    t, b, c, h, w = frames.shape
    return frames.permute(1, 2, 3, 0, 4).reshape(b, c, h, t * w)


def save_event_strip(frames: Tensor, path: str | Path, n: int = 8) -> Path:
    """Save event frames ``[T, B, 2, H, W]`` as a time-unfolded PNG strip, one sample a row."""
    rgb = events_to_rgb(frames[:, :n])
    return save_grid(time_unfold(rgb), path, nrow=1)


def save_event_gif(frames: Tensor, path: str | Path, n: int = 16, ms_per_frame: int = 150) -> Path:
    """Save event frames ``[T, B, 2, H, W]`` as an animated GIF of a grid of ``n`` samples."""
    rgb = events_to_rgb(frames[:, :n])
    images = [to_pil(make_grid(rgb[t], pad_value=0.3)) for t in range(rgb.shape[0])]
    images = [im.resize((im.width * 3, im.height * 3), Image.NEAREST) for im in images]
    return save_image(
        images[0], path, save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0
    )
