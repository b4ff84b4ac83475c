"""Turning the original systems' checkpoints into snngen weights.

One module per original family, each with the family's one key map:

* ``WEIGHT_KEYS``: nested keys under which an original checkpoint file may hold its weights,
  in preference order (an EMA copy first where the original keeps one);
* ``convert(original, model) -> dict[str, Tensor]``: the original state dict (keys as the
  original code names them) mapped onto ``model``'s state-dict keys and shapes.

The golden tests load the originals' weights through the same ``convert`` that
``snngen import`` uses.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from torch import Tensor, nn

from snngen.errors import ConfigError

#: ``snngen import`` family name -> importer module
FAMILIES: dict[str, str] = {
    "sae": "snngen.importers.sae",
    "fsvae": "snngen.importers.fsvae",
    "ann-vae": "snngen.importers.ann_vae",
    "sddpm": "snngen.importers.sddpm",
    "sdm": "snngen.importers.sdm",
    "tts-vqvae": "snngen.importers.tts_vqvae",
    "tts-prior": "snngen.importers.tts_prior",
}


class ImportMismatch(ConfigError):
    """An original checkpoint does not fit the model its config describes."""


def importer(family: str) -> ModuleType:
    """Return the importer module of ``family`` (one of :data:`FAMILIES`)."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown original family {family!r}; known: {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[family])


def find_weights(checkpoint: Any, weight_keys: tuple[str, ...], where: str = "checkpoint") -> dict:
    """Return the state dict inside ``checkpoint``: the first of ``weight_keys`` present (nested
    ``state_dict``/``model`` wrappers are looked through), or ``checkpoint`` itself when it is
    already a flat mapping of tensors."""
    if not isinstance(checkpoint, dict):
        raise ImportMismatch(f"{where}: holds a {type(checkpoint).__name__}, not a dict of weights")
    for key in (*weight_keys, "state_dict", "model"):
        inner = checkpoint.get(key)
        if isinstance(inner, dict) and inner:
            return find_weights(inner, weight_keys, f"{where}[{key!r}]")
    if checkpoint and all(isinstance(v, Tensor) for v in checkpoint.values()):
        return checkpoint
    raise ImportMismatch(
        f"{where}: no weights found (looked for keys {', '.join(map(repr, weight_keys))}, "
        "'state_dict', 'model' or a flat dict of tensors)"
    )


def check_converted(
    converted: dict[str, Tensor], model: nn.Module, where: str = "checkpoint"
) -> None:
    """Raise :class:`ImportMismatch` naming the first key of ``model``'s state dict that
    ``converted`` lacks or holds with another shape (and the first extra key, if any)."""
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in converted:
            raise ImportMismatch(f"{where}: missing weight {key!r} (shape {tuple(value.shape)})")
        got = converted[key]
        if not isinstance(got, Tensor) or tuple(got.shape) != tuple(value.shape):
            shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
            raise ImportMismatch(
                f"{where}: weight {key!r} has shape {shape}, the config's model needs "
                f"{tuple(value.shape)}"
            )
    extra = [k for k in converted if k not in expected]
    if extra:
        raise ImportMismatch(f"{where}: weight {extra[0]!r} has no place in the config's model")


def load_original(model: nn.Module, original: dict[str, Tensor], family: str,
                  where: str = "checkpoint") -> nn.Module:
    """Load an original state dict into ``model`` through ``family``'s key map; return model."""
    converted = importer(family).convert(original, model)
    check_converted(converted, model, where)
    model.load_state_dict(converted, strict=True)
    return model


__all__ = ["FAMILIES", "ImportMismatch", "check_converted", "find_weights", "importer",
           "load_original"]
