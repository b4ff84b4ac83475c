"""FullySpikingVAE's ANN VAE (``ann_models/ann_vae.py``, ``VanillaVAE``/``VanillaVAELarge``)
checkpoints -> :class:`snngen.models.ann_vae.ANNVAE` weights.

Keys, with ``L`` levels (``len(channels)``): ``encoder.{i}.0`` (conv) / ``.1`` (batch norm) ->
``encoder.{3i}`` / ``encoder.{3i+1}``; ``fc_mu``, ``fc_var`` unchanged; ``decoder_input`` ->
``from_latent``; ``decoder.{i}.0`` / ``.1`` -> ``decoder.{3i}`` / ``decoder.{3i+1}``;
``final_layer.0`` / ``.1`` -> ``decoder.{3(L-1)}`` / ``decoder.{3(L-1)+1}``; ``final_layer.3``
(the last transposed conv) -> ``decoder.{3L}``. Shapes are unchanged.
"""

from __future__ import annotations

import re

from torch import Tensor

from snngen.importers.fsvae import split_level_key
from snngen.models.base import GenerativeModel

#: the original saves a flat state dict (no EMA copy, no wrapper)
WEIGHT_KEYS: tuple[str, ...] = ()


def target_key(key: str, levels: int) -> str:
    """The snngen key of the original ANN VAE key ``key`` (unknown keys unchanged)."""
    m = re.fullmatch(r"(encoder|decoder)\.(\d+)\.([01])\.(.+)", key)
    if m:
        return f"{m[1]}.{3 * int(m[2]) + int(m[3])}.{m[4]}"
    m = re.fullmatch(r"final_layer\.([013])\.(.+)", key)
    if m:
        index = {"0": 3 * (levels - 1), "1": 3 * (levels - 1) + 1, "3": 3 * levels}[m[1]]
        return f"decoder.{index}.{m[2]}"
    if key.startswith("decoder_input."):
        return "from_latent." + key.removeprefix("decoder_input.")
    return key


def original_key(key: str, model: GenerativeModel) -> str:
    """The original ANN VAE's name of snngen's key ``key`` (the inverse of :func:`target_key`,
    for messages about a weight the original file lacks); other keys are returned unchanged."""
    levels = len(model.cfg.channels)
    split = split_level_key(key, levels)
    if split:
        part, level, sub, rest = split
        if part == "decoder" and level == levels:
            return f"final_layer.3.{rest}"
        if sub == 2:  # an activation: no weights in the original
            return key
        if part == "decoder" and level == levels - 1:
            return f"final_layer.{sub}.{rest}"
        return f"{part}.{level}.{sub}.{rest}"
    if key.startswith("from_latent."):
        return "decoder_input." + key.removeprefix("from_latent.")
    return key


def convert(original: dict[str, Tensor], model: GenerativeModel) -> dict[str, Tensor]:
    """Map an original ANN VAE state dict onto ``model``'s (an ``ANNVAE``) keys."""
    levels = len(model.cfg.channels)
    return {target_key(k.removeprefix("module."), levels): v for k, v in original.items()}


__all__ = ["WEIGHT_KEYS", "convert", "original_key", "target_key"]
