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


#: the last ``features`` index of each slice of LPIPS's VGG16 (``lpips.pretrained_networks.
#: vgg16``: slice1 = features[0:4], slice2 = [4:9], slice3 = [9:16], slice4 = [16:23],
#: slice5 = [23:30])
_LPIPS_SLICE_ENDS = (4, 9, 16, 23, 30)
_MID_NAMES = {v: k for k, v in _MID.items()}


def original_key(key: str, model: GenerativeModel) -> str:
    """The original's name of snngen's key ``key`` (the inverse of :func:`map_key`, for
    messages about a weight the original file lacks); other keys are returned unchanged."""
    levels = len(model.cfg.ch_mult)
    m = re.match(r"^(encoder|decoder)\.mid\.([012])\.(.+)$", key)
    if m:
        name = _MID_NAMES[m.group(2)]
        rest = _original_block_part(m.group(3), key, model) if "block" in name else m.group(3)
        return f"{m.group(1)}.mid.{name}.{rest}"
    m = re.match(r"^(encoder\.down|decoder\.up)\.(\d+)\.(.+)$", key)
    if m:
        level, resample = divmod(int(m.group(2)), 2)
        part, kind = ("encoder.down", "downsample") if m.group(1) == "encoder.down" else (
            "decoder.up", "upsample")
        if part == "decoder.up":
            level = levels - 1 - level
        if resample:
            return f"{part}.{level}.{kind}.{m.group(3)}"
        b = re.match(r"^(blocks|attns)\.(\d+)\.(.+)$", m.group(3))
        if b is None:
            return key
        if b.group(1) == "attns":
            return f"{part}.{level}.attn.{b.group(2)}.{b.group(3)}"
        return f"{part}.{level}.block.{b.group(2)}.{_original_block_part(b.group(3), key, model)}"
    if key.startswith("discriminator."):
        return "loss." + key
    m = re.match(r"^perceptual\.features\.(\d+)\.(weight|bias)$", key)
    if m:
        n = int(m.group(1))
        k = next((i + 1 for i, end in enumerate(_LPIPS_SLICE_ENDS) if n < end), 5)
        return f"loss.perceptual_loss.net.slice{k}.{n}.{m.group(2)}"
    m = re.match(r"^perceptual\.lins\.(\d)\.weight$", key)
    if m:
        return f"loss.perceptual_loss.lin{m.group(1)}.model.1.weight"
    m = re.match(r"^perceptual\.(shift|scale)$", key)
    if m:
        return f"loss.perceptual_loss.scaling_layer.{m.group(1)}"
    return key


def _original_block_part(rest: str, key: str, model: GenerativeModel) -> str:
    """A ResnetBlock's part under its original name: snngen's ``shortcut`` is the original's
    ``nin_shortcut`` (a 1x1 conv) or ``conv_shortcut`` (3x3)."""
    head, _, tail = rest.partition(".")
    if head != "shortcut":
        return rest
    weight = model.state_dict().get(key.rsplit(".", 1)[0] + ".weight")
    conv3 = weight is not None and weight.dim() == 4 and weight.shape[-1] > 1
    return f"{'conv_shortcut' if conv3 else 'nin_shortcut'}.{tail}"


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


__all__ = ["WEIGHT_KEYS", "convert", "key_map", "map_key", "original_key"]
