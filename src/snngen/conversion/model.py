"""A trained ANN diffusion model (``ddpm``, ReLU U-Net) turned into a spiking one, whole.

:func:`convert_model` returns a copy of the :class:`~snngen.models.diffusion_model.DiffusionModel`
whose U-Net is the :class:`~snngen.conversion.convert.ConvertedUNet`: it samples, is evaluated and
is measured (SOPs, firing rates) like any other model. Calibration inputs are noisy training
images at uniform random diffusion times (:func:`noisy_inputs`).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from snngen.conversion.convert import Batch, convert_unet
from snngen.errors import SnngenError


def noisy_inputs(model, x01: Tensor, batch: int, seed: int) -> list[Batch]:
    """``(x_t, t)`` network inputs of ``model``'s U-Net: images ``[N, C, H, W]`` in [0, 1]
    scaled to [-1, 1] and noised at uniform random times (drawn from ``seed``), in batches."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for chunk in (x01 * 2 - 1).split(batch):
        t = torch.randint(0, model.schedule.num_steps, (chunk.shape[0],), generator=gen)
        out.append((model.schedule.q_sample(chunk, t, generator=gen), t))
    return out


def convert_model(
    model,
    calibration_images: Tensor,
    *,
    timesteps: int,
    percentile: float = 99.9,
    batch_size: int = 64,
    seed: int = 1,
):
    """Return a spiking copy of the ANN diffusion ``model`` (``model`` itself is unchanged).

    ``calibration_images``: ``[N, C, H, W]`` in [0, 1] (training images), noised at random
    times to balance the thresholds at the ``percentile`` of each ReLU's positive outputs;
    ``timesteps``: IF steps per network call. Raises :class:`SnngenError` for a model that is
    not a ReLU diffusion U-Net.
    """
    from snngen.models.diffusion_model import DiffusionModel

    if not isinstance(model, DiffusionModel) or model.spiking:
        raise SnngenError(
            f"ANN-to-SNN conversion needs an ANN diffusion model (ddpm, neuron relu); got "
            f"{getattr(model, 'name', type(model).__name__)!r}"
        )
    calib = noisy_inputs(model, calibration_images, batch_size, seed)
    snn = convert_unet(model.unet.eval(), calib, timesteps=timesteps, percentile=percentile)
    converted = copy.deepcopy(model)
    converted.unet = snn
    return converted.eval()
