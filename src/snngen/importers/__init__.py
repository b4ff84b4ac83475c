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
from collections.abc import Callable
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
    looked = tuple(dict.fromkeys((*weight_keys, "state_dict", "model")))
    for key in looked:
        inner = checkpoint.get(key)
        if isinstance(inner, dict) and inner:
            return find_weights(inner, weight_keys, f"{where}[{key!r}]")
    if checkpoint and all(isinstance(v, Tensor) for v in checkpoint.values()):
        return checkpoint
    if not checkpoint:
        raise ImportMismatch(f"{where}: holds an empty dict, no weights")
    keys = _some_keys(checkpoint)
    if not _has_tensor(checkpoint):
        raise ImportMismatch(f"{where}: holds no tensors at all, so no weights (its keys: {keys})")
    raise ImportMismatch(
        f"{where}: no weights found under {' or '.join(map(repr, looked))}, and it is not a "
        f"flat dict of tensors (its keys: {keys})"
    )


def _some_keys(mapping: dict, limit: int = 5) -> str:
    """The first ``limit`` keys of ``mapping`` for a message (each cut to 40 characters)."""
    shown = [r if len(r := repr(k)) <= 40 else r[:39] + "…" for k in list(mapping)[:limit]]
    more = f", ... ({len(mapping)} in all)" if len(mapping) > limit else ""
    return ", ".join(shown) + more


def _has_tensor(obj: Any, depth: int = 0) -> bool:
    """Whether ``obj`` (nested dicts, lists, tuples; 20 levels at most) holds any tensor."""
    if isinstance(obj, Tensor):
        return True
    if depth >= 20:
        return False
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    return any(_has_tensor(v, depth + 1) for v in items)


def check_converted(
    converted: dict[str, Tensor], model: nn.Module, where: str = "checkpoint",
    original_key: Callable[[str, nn.Module], str] | None = None,
) -> None:
    """Raise :class:`ImportMismatch` naming the first key of ``model``'s state dict that
    ``converted`` lacks or holds with another shape (and the first extra key, if any).

    ``original_key(key, model)``: the original's name of snngen's ``key`` (the family's inverse
    key map); messages name the weight as the original file does, and snngen's key after it."""
    def name(key: str) -> str:
        theirs = original_key(key, model) if original_key is not None else key
        return repr(theirs) if theirs == key else f"{theirs!r} (snngen {key!r})"

    expected = model.state_dict()
    for key, value in expected.items():
        if key not in converted:
            raise ImportMismatch(f"{where}: missing weight {name(key)}, shape "
                                 f"{tuple(value.shape)}")
        got = converted[key]
        if not isinstance(got, Tensor) or tuple(got.shape) != tuple(value.shape):
            shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
            raise ImportMismatch(
                f"{where}: weight {name(key)} has shape {shape}, the config's model needs "
                f"{tuple(value.shape)}"
            )
    extra = [k for k in converted if k not in expected]
    if extra:
        raise ImportMismatch(f"{where}: weight {name(extra[0])} has no place in the config's "
                             "model")


def load_original(model: nn.Module, original: dict[str, Tensor], family: str,
                  where: str = "checkpoint") -> nn.Module:
    """Load an original state dict into ``model`` through ``family``'s key map; return model."""
    module = importer(family)
    converted = module.convert(original, model)
    check_converted(converted, model, where, getattr(module, "original_key", None))
    model.load_state_dict(converted, strict=True)
    return model


__all__ = ["FAMILIES", "ImportMismatch", "check_converted", "find_weights", "importer",
           "load_original"]
