"""Turn static images into event streams by simulated sensor saccades, as N-MNIST was recorded.

N-MNIST moved an event camera in three saccades along a triangle, (0, 0) -> (3.5, 7) ->
(7, 0) -> (0, 0) pixels in (x, y), while it watched a still digit. Here the image moves along
the same triangle, scaled to ``amplitude`` pixels and centred on its resting place:
``(-a/2, -a/2) -> (0, a/2) -> (a/2, -a/2) -> (-a/2, -a/2)`` (sub-pixel shifts by bilinear
interpolation, zeros outside the image). Each pixel is an ideal DVS pixel: it keeps a
reference log intensity ``L_ref`` (initially its first value) and, whenever
``L = log(eps + I)`` has moved ``n >= 1`` thresholds ``theta`` away from it, emits ``n``
events of that sign and moves ``L_ref`` by ``n * theta``. The path is sampled at
``T * substeps`` equal steps; the events of steps ``(b * substeps, (b + 1) * substeps]`` go to
time bin ``b``. The defaults (``theta = 0.3``, ``a = W / 8``, ``T = 4``) give a 32x32 MNIST
digit about 4,900 events, the scale of an N-MNIST recording (4,000-5,000). Channel 0 counts
OFF (darker) events, channel 1 ON events, as in :mod:`snngen.data.events`. A blank image
gives no events; everything is deterministic.

Use it as the dataset name ``<static name>_saccade`` (``mnist5k_saccade``: event models on the
bundled digits, offline) or the option ``saccade=True`` of any static dataset.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from snngen.data.base import DataError

#: log(eps + I): the offset keeps black pixels finite (I in [0, 1])
LOG_EPS = 0.1
#: the triangle of N-MNIST's three saccades, in units of the amplitude, centred
TRIANGLE = ((-0.5, -0.5), (0.0, 0.5), (0.5, -0.5), (-0.5, -0.5))


def saccade_path(n_steps: int, amplitude: float) -> Tensor:
    """Image offsets ``[n_steps + 1, 2]`` (dx, dy in pixels) at equal steps along the triangle.

    Step 0 and step ``n_steps`` are the first vertex; steps ``n_steps/3`` and ``2 n_steps/3``
    (when whole) are the other two.
    """
    s = torch.linspace(0.0, 3.0, n_steps + 1, dtype=torch.float64)
    leg = s.floor().clamp(max=2).long()
    frac = (s - leg).unsqueeze(1)
    v = torch.tensor(TRIANGLE, dtype=torch.float64) * amplitude
    return v[leg] * (1 - frac) + v[leg + 1] * frac


def shift_images(gray: Tensor, offsets: Tensor) -> Tensor:
    """Move an image ``[H, W]`` by each offset ``[K, 2]`` (dx right, dy down; bilinear, zero
    fill). Returns ``[K, H, W]``."""
    h, w = gray.shape
    theta = torch.zeros(len(offsets), 2, 3, dtype=gray.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2.0 * offsets[:, 0].to(gray.dtype) / w  # sample at x - dx
    theta[:, 1, 2] = -2.0 * offsets[:, 1].to(gray.dtype) / h
    grid = F.affine_grid(theta, [len(offsets), 1, h, w], align_corners=False)
    src = gray.expand(len(offsets), 1, h, w)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, 0]


def default_substeps(time_bins: int) -> int:
    """Simulation steps per time bin: at least 2, and at least 24 steps in all."""
    return max(2, math.ceil(24 / time_bins))


def saccade_events(image: Tensor, time_bins: int = 4, amplitude: float | None = None,
                   threshold: float = 0.3, substeps: int | None = None) -> Tensor:
    """Event frames of one image seen through three simulated saccades.

    Args:
        image: ``[C, H, W]`` (or ``[H, W]``) in [0, 1]; colour is averaged to grey.
        time_bins: ``T``, the number of frames.
        amplitude: side of the saccade triangle in pixels (default ``W / 8``).
        threshold: the contrast threshold ``theta`` in log intensity.
        substeps: simulation steps per frame (default :func:`default_substeps`).

    Returns:
        float32 ``[T, 2, H, W]`` event counts (channel 0 OFF, 1 ON).
    """
    gray = image.double()
    gray = gray.mean(0) if gray.dim() == 3 else gray
    h, w = gray.shape
    amplitude = w / 8 if amplitude is None else float(amplitude)
    k = substeps or default_substeps(time_bins)
    offsets = saccade_path(time_bins * k, amplitude)
    logs = torch.log(LOG_EPS + shift_images(gray.clamp(0, 1), offsets))  # [S + 1, H, W]
    ref = logs[0].clone()
    frames = torch.zeros(time_bins, 2, h, w, dtype=torch.float64)
    for step in range(1, len(logs)):
        # a tiny tolerance keeps an exact multiple of theta from flipping with rounding
        n = torch.trunc((logs[step] - ref) / threshold + torch.sign(logs[step] - ref) * 1e-9)
        ref += n * threshold
        b = (step - 1) // k
        frames[b, 1] += n.clamp(min=0)
        frames[b, 0] += (-n).clamp(min=0)
    return frames.float()


class SaccadeEvents(Dataset):
    """A static dataset seen as events: items ``(frames [T, 2, H, W], label)``.

    ``dataset`` yields ``(image [C, H, W] in [0, 1], label)``; see :func:`saccade_events`
    for the other arguments. Frames are computed on access (deterministic).
    """

    def __init__(self, dataset: Dataset, time_bins: int = 4, amplitude: float | None = None,
                 threshold: float = 0.3, substeps: int | None = None) -> None:
        if isinstance(time_bins, bool) or not isinstance(time_bins, int) or time_bins < 1:
            raise DataError(f"time_bins={time_bins!r} must be a positive integer")
        if not (isinstance(threshold, int | float) and threshold > 0):
            raise DataError(f"saccade_threshold={threshold!r} must be a number > 0")
        if amplitude is not None and not (isinstance(amplitude, int | float) and amplitude >= 0):
            raise DataError(f"saccade_amplitude={amplitude!r} must be pixels >= 0 or null")
        if substeps is not None and (not isinstance(substeps, int) or substeps < 1):
            raise DataError(f"saccade_substeps={substeps!r} must be a positive integer or null")
        self.dataset, self.time_bins, self.amplitude = dataset, time_bins, amplitude
        self.threshold, self.substeps = float(threshold), substeps

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.dataset[index][:2]
        frames = saccade_events(image, self.time_bins, self.amplitude, self.threshold,
                                self.substeps)
        return frames, label

    def __repr__(self) -> str:
        return f"SaccadeEvents({self.dataset!r}, time_bins={self.time_bins})"
