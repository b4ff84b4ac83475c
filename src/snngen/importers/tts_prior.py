"""Key map of Brain-Cog-Lab/tts_vqvae's stage 2 (``Net2NetTransformer`` /
``Net2NetTransformerNonTE`` wrapping a ``SnnGPT``) onto :class:`snngen.models.prior.VQPrior`
(or a bare :class:`snngen.models.prior.SpikingGPT`).

The original's Lightning checkpoint holds ``transformer.*`` (the GPT), ``first_stage_model.*``
(the frozen stage 1) and nothing else with weights (``cond_stage_model`` is a start-token
provider, ``permuter`` the identity). GPT keys map one to one, except:

* ``attn.{key,query,value}.0.*`` (``Sequential(Linear, LIFNode)``) -> ``attn.{key,...}.*``;
  ``mlp.0.*`` -> ``fc.*``, ``mlp.2.*`` -> ``fc_out.*``;
* the causal ``mask`` buffers and the LIF neurons' ``threshold`` / surrogate ``act_fun.alpha``
  are not weights in snngen (thresholds other than the config's neuron threshold are refused);
* ``pos_emb`` ``[1, block_size, C]`` is cut to snngen's sequence length (the original's
  block size is 512 in every config, longer than its sequences; later positions are never
  used).

Stage-1 weights (``first_stage_model.*``) go through the ``tts-vqvae`` key map; a state dict
without them (the GPT alone) keeps the stage-1 weights the prior was built with (its
``stage1_run``).
"""

from __future__ import annotations

import re

from torch import Tensor, nn

from snngen.importers import ImportMismatch, importer

WEIGHT_KEYS: tuple[str, ...] = ("state_dict",)

GPT_PREFIX = "transformer."
STAGE1_PREFIX = "first_stage_model."
_IGNORED = re.compile(r"(^|\.)(mask|threshold|act_fun\.alpha)$")
# (original pattern, snngen replacement), and the inverse for error messages
_RENAMES = [
    (r"^(blocks\.\d+\.attn\.(?:key|query|value))\.0\.", r"\1."),
    (r"^(blocks\.\d+)\.mlp\.0\.", r"\1.fc."),
    (r"^(blocks\.\d+)\.mlp\.2\.", r"\1.fc_out."),
]
_INVERSE = [
    (r"^(blocks\.\d+\.attn\.(?:key|query|value))\.", r"\1.0."),
    (r"^(blocks\.\d+)\.fc\.", r"\1.mlp.0."),
    (r"^(blocks\.\d+)\.fc_out\.", r"\1.mlp.2."),
]


def rename(key: str) -> str | None:
    """snngen's name of the original ``SnnGPT`` key ``key`` (no ``transformer.`` prefix), or
    None for entries that are not weights in snngen (masks, LIF thresholds, surrogate alpha)."""
    if _IGNORED.search(key):
        return None
    for pattern, repl in _RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def original_name(key: str) -> str:
    """The original ``SnnGPT`` name of snngen's GPT key ``key`` (inverse of :func:`rename`)."""
    for pattern, repl in _INVERSE:
        key = re.sub(pattern, repl, key)
    return key


def original_key(key: str, model: nn.Module) -> str:
    """The original's name of snngen's key ``key`` of ``model`` (a ``VQPrior``: its ``gpt.*``
    and ``stage1.*``; a bare ``SpikingGPT``), for messages about a weight the file lacks."""
    _, prefix = _gpt_and_prefix(model)
    if not prefix:
        return original_name(key)
    if key.startswith("stage1."):
        return STAGE1_PREFIX + importer("tts-vqvae").original_key(key[len("stage1."):],
                                                                  model.stage1)
    if key.startswith("gpt."):
        return GPT_PREFIX + original_name(key[len("gpt."):])
    return key


def _gpt_and_prefix(model: nn.Module) -> tuple[nn.Module, str]:
    from snngen.models.prior import SpikingGPT

    if isinstance(model, SpikingGPT):
        return model, ""
    gpt = getattr(model, "gpt", None)
    if not isinstance(gpt, SpikingGPT):
        raise ImportMismatch(f"tts-prior weights fit a vq_prior model, not {type(model).__name__}")
    return gpt, "gpt."


def _threshold(gpt: nn.Module) -> float | None:
    neuron = gpt.cfg.neuron
    return float(neuron["v_threshold"]) if isinstance(neuron, dict) else None


def convert_gpt(original: dict[str, Tensor], gpt: nn.Module, where: str = GPT_PREFIX
                ) -> dict[str, Tensor]:
    """Map an original ``SnnGPT`` state dict (keys without prefix) onto ``gpt``'s keys."""
    threshold = _threshold(gpt)
    out: dict[str, Tensor] = {}
    for key, value in original.items():
        if key.endswith("threshold") and threshold is not None and value.numel() == 1:
            if abs(float(value) - threshold) > 1e-6:
                raise ImportMismatch(
                    f"{where}{key}: LIF threshold {float(value):g}, the config's neuron has "
                    f"v_threshold {threshold:g}"
                )
        new = rename(key)
        if new is not None:
            out[new] = value
    expected = gpt.state_dict()
    pos = out.get("pos_emb")
    if isinstance(pos, Tensor) and pos.ndim == 3 and pos.shape[1] > expected["pos_emb"].shape[1]:
        out["pos_emb"] = pos[:, : expected["pos_emb"].shape[1]]
    for key, value in expected.items():
        if key not in out:
            raise ImportMismatch(
                f"missing weight {where + original_name(key)!r} (snngen {key!r}, shape "
                f"{tuple(value.shape)})"
            )
        if tuple(out[key].shape) != tuple(value.shape):
            raise ImportMismatch(
                f"weight {where + original_name(key)!r} has shape {tuple(out[key].shape)}, the "
                f"config's model needs {tuple(value.shape)}"
            )
    return out


def convert(original: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """The original stage-2 state dict mapped onto ``model``'s keys (see the module doc)."""
    gpt, prefix = _gpt_and_prefix(model)
    if any(k.startswith(GPT_PREFIX) for k in original):
        sub = {k[len(GPT_PREFIX):]: v for k, v in original.items() if k.startswith(GPT_PREFIX)}
        where = GPT_PREFIX
    else:  # a bare SnnGPT state dict
        sub, where = dict(original), ""
    extra = [k for k in original if not k.startswith(
        (GPT_PREFIX, STAGE1_PREFIX, "cond_stage_model.", "permuter."))] if where else []
    if extra:
        raise ImportMismatch(f"weight {extra[0]!r} has no place in a tts_vqvae prior")
    out = {prefix + k: v for k, v in convert_gpt(sub, gpt, where).items()}
    if not prefix:
        return out
    stage1 = {k[len(STAGE1_PREFIX):]: v for k, v in original.items()
              if k.startswith(STAGE1_PREFIX)}
    if stage1:
        converted = importer("tts-vqvae").convert(stage1, model.stage1)
    else:  # the GPT alone: keep the stage-1 run's weights
        converted = model.stage1.state_dict()
    out.update({"stage1." + k: v for k, v in converted.items()})
    return out
