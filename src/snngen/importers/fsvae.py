"""FullySpikingVAE (kamata1729) checkpoints -> :class:`snngen.models.fsvae.FSVAE` weights.

The original saves ``net.state_dict()`` of its ``FSVAE`` / ``FSVAELarge`` as is
(``checkpoint/NAME/best.pth``); keys and the snngen keys they map to, with ``L`` levels
(``len(channels)``):

=====================================  ===========================================
original                               snngen
=====================================  ===========================================
``encoder.{i}`` (tdConv, + ``.bn``)    ``encoder.{3i}`` (+ ``encoder.{3i+1}``)
``before_latent_layer`` (+ ``.bn``)    ``to_latent.0`` (+ ``to_latent.1``)
``posterior.layers.{j}`` (+ ``.bn``)   ``posterior_net.blocks.{j}.0`` (+ ``.1``)
``prior.layers.{j}`` (+ ``.bn``)       ``prior_net.blocks.{j}.0`` (+ ``.1``)
``decoder_input`` (+ ``.bn``)          ``from_latent.0`` (+ ``from_latent.1``)
``decoder.{i}`` (+ ``.bn``)            ``decoder.{3i}`` (+ ``decoder.{3i+1}``)
``final_layer.0`` (+ ``.bn``)          ``decoder.{3(L-1)}`` (+ ``decoder.{3(L-1)+1}``)
``final_layer.1``                      ``decoder.{3L}``
=====================================  ===========================================

Conv weights lose the original's trailing time-kernel axis of size 1 (``[.., 3, 3, 1]`` ->
``[.., 3, 3]``). The buffers ``posterior.initial_input`` / ``prior.initial_input`` (zeros) and
``membrane_output_layer.coef`` (``0.8^(T-1-t)``, checked against the config's ``num_steps`` and
``readout_decay``) have no snngen counterpart; snngen's ``train_steps`` counter is kept as the
model has it.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from snngen.importers import ImportMismatch
from snngen.models.base import GenerativeModel

#: the original saves a flat state dict (no EMA copy, no wrapper)
WEIGHT_KEYS: tuple[str, ...] = ()

_DROPPED = ("posterior.initial_input", "prior.initial_input", "membrane_output_layer.coef")


def target_key(key: str, levels: int) -> str:
    """The snngen key of the original FSVAE key ``key`` (unknown keys are returned unchanged,
    so the import check names them)."""
    bn = ".bn." in key
    head, rest = key.split(".bn.", 1) if bn else key.rsplit(".", 1)
    sub = 1 if bn else 0  # the layer itself, or its tdBN
    m = re.fullmatch(r"(encoder|decoder)\.(\d+)", head)
    if m:
        return f"{m[1]}.{3 * int(m[2]) + sub}.{rest}"
    m = re.fullmatch(r"(posterior|prior)\.layers\.(\d+)", head)
    if m:
        return f"{m[1]}_net.blocks.{m[2]}.{sub}.{rest}"
    if head == "before_latent_layer":
        return f"to_latent.{sub}.{rest}"
    if head == "decoder_input":
        return f"from_latent.{sub}.{rest}"
    if head == "final_layer.0":
        return f"decoder.{3 * (levels - 1) + sub}.{rest}"
    if head == "final_layer.1" and not bn:
        return f"decoder.{3 * levels}.{rest}"
    return key


def split_level_key(key: str, levels: int) -> tuple[str, int, int, str] | None:
    """snngen's ``encoder.<i>.<rest>`` / ``decoder.<i>.<rest>`` of a FullySpikingVAE-shaped
    network (3 modules a level: layer, norm, neuron) as ``(part, level, sub, rest)``; the
    decoder's last layer (index ``3 * levels``) is level ``levels``, sub 0; ``None`` for other
    keys."""
    m = re.fullmatch(r"(encoder|decoder)\.(\d+)\.(.+)", key)
    if not m:
        return None
    index, rest = int(m[2]), m[3]
    if m[1] == "decoder" and index == 3 * levels:
        return m[1], levels, 0, rest
    return (m[1], *divmod(index, 3), rest)


def original_key(key: str, model: GenerativeModel) -> str:
    """The original FSVAE's name of snngen's key ``key`` (the inverse of :func:`target_key`,
    for messages about a weight the original file lacks); other keys are returned unchanged."""
    levels = len(model.cfg.channels)
    split = split_level_key(key, levels)
    if split:
        part, level, sub, rest = split
        if part == "decoder" and level == levels:
            return f"final_layer.1.{rest}"
        if sub == 2:  # a neuron: no weights in the original
            return key
        head = "final_layer.0" if part == "decoder" and level == levels - 1 else f"{part}.{level}"
        return _with_bn(head, sub, rest)
    m = re.fullmatch(r"(posterior|prior)_net\.blocks\.(\d+)\.([01])\.(.+)", key)
    if m:
        return _with_bn(f"{m[1]}.layers.{m[2]}", int(m[3]), m[4])
    m = re.fullmatch(r"(to_latent|from_latent)\.([01])\.(.+)", key)
    if m:
        head = "before_latent_layer" if m[1] == "to_latent" else "decoder_input"
        return _with_bn(head, int(m[2]), m[3])
    return key


def _with_bn(head: str, sub: int, rest: str) -> str:
    """``head.rest`` for a layer (``sub`` 0), ``head.bn.rest`` for its tdBN (``sub`` 1)."""
    return f"{head}.bn.{rest}" if sub else f"{head}.{rest}"


def _check_readout(coef: Tensor, model: GenerativeModel) -> None:
    steps, decay = model.cfg.num_steps, model.cfg.readout_decay
    want = torch.pow(decay, torch.arange(steps - 1, -1, -1, dtype=torch.float64))
    got = coef.reshape(-1).double()
    if got.shape != want.shape or not torch.allclose(got, want):
        raise ImportMismatch(
            f"checkpoint: 'membrane_output_layer.coef' has {got.numel()} read-out weights "
            f"{[round(v, 4) for v in got.tolist()[:4]]}..., the config's model needs "
            f"num_steps={steps} weights {decay}^(T-1-t)"
        )


def convert(original: dict[str, Tensor], model: GenerativeModel) -> dict[str, Tensor]:
    """Map an original FSVAE state dict onto ``model``'s (an ``FSVAE``) keys and shapes."""
    levels = len(model.cfg.channels)
    out: dict[str, Tensor] = {}
    for key, value in original.items():
        key = key.removeprefix("module.")
        if key == "membrane_output_layer.coef":
            _check_readout(value, model)
        if key in _DROPPED:
            continue
        new = target_key(key, levels)
        if value.dim() == 5 and value.shape[-1] == 1:  # Conv3d / ConvTranspose3d (k, k, 1)
            value = value.squeeze(-1)
        out[new] = value
    out.setdefault("train_steps", model.state_dict()["train_steps"].clone())
    return out


__all__ = ["WEIGHT_KEYS", "convert", "original_key", "target_key"]
