"""Where ``snngen sample`` writes its samples, streamed batch by batch in bounded memory.

The output kind follows ``--out``:

* ``FILE.png``: one grid of every sample (events: a time-unfolded strip per sample plus an
  animated ``FILE.gif``). A grid holds at most :data:`MAX_GRID_SAMPLES` images
  (:data:`MAX_EVENT_STRIP_SAMPLES` event samples): a picture, not a store.
* ``FOLDER/`` (a trailing slash, or an existing folder): one PNG per sample,
  ``sample_000000.png`` ...; as many as the disk holds.
* ``FILE.npy``: one float32 array ``[n, C, H, W]`` (events ``[n, T, 2, H, W]``, sample first)
  written through a memory map; as large as the disk holds.

:func:`plan_sample_output` checks the request (kind, count, writable folder, free space)
before anything is generated or written; :func:`write_sample_batches` then consumes sample
batches one at a time. Every file is written atomically (:mod:`snngen.files`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from snngen.errors import SnngenError
from snngen.files import atomic_output, check_writable_folder
from snngen.results import sampler_label

#: the most images one PNG grid holds
MAX_GRID_SAMPLES = 4096
#: the most event samples one PNG strip / GIF holds
MAX_EVENT_STRIP_SAMPLES = 256
#: bytes a PNG of one sample takes at most, per pixel value, plus a header (a generous bound)
PNG_BYTES_PER_VALUE = 2
PNG_HEADER_BYTES = 1024
#: file name of the i-th sample in a folder output
FOLDER_PATTERN = "sample_{:06d}.png"


def default_sample_output(run_dir: str | Path, n: int, seed: int, options: dict) -> Path:
    """Where ``snngen sample RUN`` without ``--out`` writes: a grid in ``RUN/samples/`` named
    by the request, ``sample-<sampler>-n<n>-seed<seed>.png`` (sampler: ``default`` for the
    model's configured one, else e.g. ``ddim-50``, :func:`~snngen.results.sampler_label`).
    Never a file training writes (``RUN/samples.png``); the same name means the same request,
    hence the same images."""
    label = sampler_label(options) or "default"
    return Path(run_dir) / "samples" / f"sample-{label}-n{n}-seed{seed}.png"


@dataclass(frozen=True)
class SampleOutput:
    """A checked output request: ``kind`` is ``"grid"``, ``"folder"`` or ``"npy"``."""

    path: Path
    kind: str
    n: int
    values_per_sample: int


def plan_sample_output(
    out: str | Path, n: int, values_per_sample: int, events: bool = False
) -> SampleOutput:
    """Return the checked :class:`SampleOutput` of ``--out out --n n``; writes nothing.

    ``values_per_sample``: numbers in one sample (``C*H*W``, events ``T*2*H*W``). Raises
    :class:`SnngenError` (one line) for an unknown extension, a count the format cannot hold,
    a folder that cannot be written, or too little free space.
    """
    text = str(out)
    path = Path(out)
    if text.endswith(("/", "\\")) or path.is_dir():
        kind = "folder"
        need = n * (values_per_sample * PNG_BYTES_PER_VALUE + PNG_HEADER_BYTES)
        folder = path
    elif path.suffix.lower() == ".png":
        kind = "grid"
        limit = MAX_EVENT_STRIP_SAMPLES if events else MAX_GRID_SAMPLES
        if n > limit:
            raise SnngenError(
                f"--n {n}: a PNG {'strip' if events else 'grid'} holds at most {limit} samples; "
                f"write them to a folder (--out {path.with_suffix('')}/) or a .npy file"
            )
        need = n * (values_per_sample * PNG_BYTES_PER_VALUE * 8 + PNG_HEADER_BYTES)
        folder = path.parent
    elif path.suffix.lower() == ".npy":
        kind = "npy"
        need = n * values_per_sample * 4 + PNG_HEADER_BYTES
        folder = path.parent
    else:
        raise SnngenError(
            f"--out {out}: unknown output kind {path.suffix or '(no extension)'!r}; use a .png "
            "grid, a .npy array, or a folder ending in '/'"
        )
    check_writable_folder(folder, need, what="--out")
    return SampleOutput(path=path, kind=kind, n=n, values_per_sample=values_per_sample)


def write_sample_batches(batches: Iterable[Tensor], output: SampleOutput) -> list[Path]:
    """Write sample batches (images ``[B, C, H, W]`` in [0, 1], events ``[T, B, 2, H, W]``)
    as ``output`` asks; returns the written paths (a folder output: the folder)."""
    if output.kind == "grid":
        return _write_grid(batches, output)
    if output.kind == "folder":
        return _write_folder(batches, output)
    return _write_npy(batches, output)


def _write_grid(batches: Iterable[Tensor], output: SampleOutput) -> list[Path]:
    from snngen.report import is_event_batch, write_samples

    chunks = [b.cpu() for b in batches]  # bounded by MAX_GRID_SAMPLES
    samples = torch.cat(chunks, dim=1 if is_event_batch(chunks[0]) else 0)
    return write_samples(samples, output.path)


def _write_folder(batches: Iterable[Tensor], output: SampleOutput) -> list[Path]:
    from snngen.report import is_event_batch
    from snngen.viz import events_to_rgb, save_grid, time_unfold

    i = 0  # each file's folder is made by its atomic write
    for batch in batches:
        batch = batch.cpu()
        if is_event_batch(batch):
            images = time_unfold(events_to_rgb(batch))
        else:
            images = batch
        for image in images:
            save_grid(image[None], output.path / FOLDER_PATTERN.format(i), scale=1, pad=0)
            i += 1
    return [output.path]


def _write_npy(batches: Iterable[Tensor], output: SampleOutput) -> list[Path]:
    from snngen.report import is_event_batch

    i = 0
    with atomic_output(output.path, "wb") as handle:
        for batch in batches:
            batch = batch.detach().cpu().float()
            if is_event_batch(batch):
                batch = batch.transpose(0, 1)  # sample first: [B, T, 2, H, W]
            if i == 0:  # the header, from the first batch's sample shape
                shape = (output.n, *batch.shape[1:])
                if math.prod(batch.shape[1:]) != output.values_per_sample:
                    raise SnngenError(
                        f"samples have {math.prod(batch.shape[1:])} values each, expected "
                        f"{output.values_per_sample}"
                    )
                header = {"descr": "<f4", "fortran_order": False, "shape": shape}
                np.lib.format.write_array_header_1_0(handle, header)
            handle.write(np.ascontiguousarray(batch.numpy(), dtype="<f4").tobytes())
            i += batch.shape[0]
        if i != output.n:
            raise SnngenError(f"expected {output.n} samples, got {i}")
    return [output.path]
