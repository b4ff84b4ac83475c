"""The key map of tts_vqvae stage 1 (Brain-Cog-Lab/tts_vqvae ``SVQModelTE`` / ``SVQModel`` /
``SVQModelTEEpochDVS``, a Lightning module) onto :class:`snngen.models.vqvae.VQVAE`.

Original keys (Lightning checkpoints hold them under ``state_dict``)::

    encoder.conv_in | encoder.down.{i}.block.{j}.{norm1,conv1,norm2,conv2,nin_shortcut}
    encoder.down.{i}.attn.{j}.{norm,q,k,v,proj_out} | encoder.down.{i}.downsample.conv
    encoder.mid.{block_1,attn_1,block_2} | encoder.{norm_out,conv_out}
    decoder.conv_in | decoder.mid.* | decoder.up.{i}.block.{j} | decoder.up.{i}.attn.{j}
    decoder.up.{i}.upsample.conv | decoder.{norm_out,conv_out}
    quant_conv | quantize.embedding | post_quant_conv
    loss.discriminator.main.{n} | loss.perceptual_loss.{net.slice{k}.{n},lin{i}.model.1,...}
    ... .lif{1,2,3}.{threshold,act_fun.alpha}, ... .{q,k}_lif.*  (braincog's neuron constants)

snngen keeps a level's blocks and its resampling as consecutive entries of one ``Sequential``
(``encoder.down.{2i}`` the blocks of level ``i``, ``encoder.down.{2i+1}`` its down-sampling;
the decoder's ``up`` runs from the lowest resolution, so the original's ``up.{i}`` is
``up.{2 (L-1-i)}``). The neuron constants are not weights in snngen: they are checked against
the config (threshold) and dropped. LPIPS weights are mapped when the model has a perceptual
term and dropped otherwise.
"""

from __future__ import annotations

import re

from torch import Tensor

from snngen.importers import ImportMismatch
from snngen.models.base import GenerativeModel

#: where a checkpoint file may hold the weights (Lightning: ``state_dict``)
WEIGHT_KEYS: tuple[str, ...] = ("state_dict",)

_BLOCK = {"nin_shortcut": "shortcut", "conv_shortcut": "shortcut"}
_MID = {"block_1": "0", "attn_1": "1", "block_2": "2"}
_NEURON = re.compile(r"\.(lif\d|q_lif|k_lif)\.(threshold|act_fun\.alpha)$")
_LPIPS_SLICE = re.compile(r"^loss\.perceptual_loss\.net\.slice\d\.(\d+)\.(weight|bias)$")
_LPIPS_LIN = re.compile(r"^loss\.perceptual_loss\.lin(\d)\.model\.1\.weight$")


def _block_part(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_BLOCK.get(head, head)}.{tail}"


def map_key(key: str, levels: int) -> str | None:
    """snngen's key for the original ``key`` (``None``: dropped), for ``levels`` resolutions."""
    if _NEURON.search(key):
        return None
    m = re.match(r"^(encoder|decoder)\.mid\.(block_1|attn_1|block_2)\.(.+)$", key)
    if m:
        part, name, rest = m.groups()
        return f"{part}.mid.{_MID[name]}.{_block_part(rest) if 'block' in name else rest}"
    m = re.match(r"^encoder\.down\.(\d+)\.(block|attn|downsample)\.(.+)$", key)
    if m:
        return _level_key("encoder.down", 2 * int(m.group(1)), m.group(2), m.group(3))
    m = re.match(r"^decoder\.up\.(\d+)\.(block|attn|upsample)\.(.+)$", key)
    if m:
        return _level_key("decoder.up", 2 * (levels - 1 - int(m.group(1))), m.group(2),
                          m.group(3))
    if key.startswith("loss.discriminator."):
        return "discriminator." + key[len("loss.discriminator."):]
    m = _LPIPS_SLICE.match(key)
    if m:
        return f"perceptual.features.{m.group(1)}.{m.group(2)}"
    m = _LPIPS_LIN.match(key)
    if m:
        return f"perceptual.lins.{m.group(1)}.weight"
    if key.startswith("loss.perceptual_loss.scaling_layer."):
        return "perceptual." + key.rsplit(".", 1)[1]
    return key


def _level_key(prefix: str, index: int, kind: str, rest: str) -> str:
    if kind in ("downsample", "upsample"):
        return f"{prefix}.{index + 1}.{rest}"
    j, _, tail = rest.partition(".")
    if kind == "block":
        return f"{prefix}.{index}.blocks.{j}.{_block_part(tail)}"
    return f"{prefix}.{index}.attns.{j}.{tail}"


def key_map(original_keys, model: GenerativeModel) -> dict[str, str]:
    """``{original key: snngen key}`` for the keys that are kept."""
    levels = len(model.cfg.ch_mult)
    out = {}
    for key in original_keys:
        new = map_key(key, levels)
        if new is not None:
            out[key] = new
    return out


def _check_neuron_constants(original: dict[str, Tensor], model: GenerativeModel) -> None:
    neuron = model.cfg.neuron
    if not isinstance(neuron, dict) or "v_threshold" not in neuron:
        return
    for key, value in original.items():
        if key.endswith(".threshold") and _NEURON.search(key):
            if abs(float(value) - float(neuron["v_threshold"])) > 1e-6:
                raise ImportMismatch(
                    f"checkpoint: neuron threshold {key!r} is {float(value)}, the config's "
                    f"model.neuron.v_threshold is {neuron['v_threshold']}"
                )


def convert(original: dict[str, Tensor], model: GenerativeModel) -> dict[str, Tensor]:
    """Map an original stage-1 state dict onto ``model``'s keys (see the module docstring)."""
    _check_neuron_constants(original, model)
    own = model.state_dict()
    has_lpips = getattr(model, "perceptual", None) is not None
    out: dict[str, Tensor] = {}
    for key, new in key_map(original, model).items():
        if new.startswith("perceptual.") and not has_lpips:
            continue
        out[new] = original[key]
    if "step" in own and "step" not in out:
        out["step"] = own["step"].clone()  # snngen's batch counter; not in the original
    return out


__all__ = ["WEIGHT_KEYS", "convert", "key_map", "map_key"]
