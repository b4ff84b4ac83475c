"""Generative models, one module per family, all behind :class:`GenerativeModel`.

The registry maps a config ``model.name`` to the model's Config dataclass and its class.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from snngen.errors import ConfigError
from snngen.models.base import DataInfo, GenerativeModel

# name -> (module, config class, model class); modules are imported on first use
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "sae": ("snngen.models.sae", "SAEConfig", "SpikingAutoencoder"),
    "vqvae": ("snngen.models.vqvae", "VQVAEConfig", "VQVAE"),
    "vq_prior": ("snngen.models.prior", "PriorConfig", "VQPrior"),
    "sddpm": ("snngen.models.diffusion_model", "SDDPMConfig", "DiffusionModel"),
    "ddpm": ("snngen.models.diffusion_model", "DDPMConfig", "DiffusionModel"),
    "fsvae": ("snngen.models.fsvae", "FSVAEConfig", "FSVAE"),
    "ann_vae": ("snngen.models.ann_vae", "ANNVAEConfig", "ANNVAE"),
}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config_cls: type
    model_cls: type


_EXTRA: dict[str, ModelEntry] = {}


def register_model(name: str, config_cls: type, model_cls: type) -> None:
    """Register a model defined outside snngen (its config dataclass needs a ``name`` field)."""
    _EXTRA[name] = ModelEntry(name, config_cls, model_cls)


def list_models() -> list[str]:
    """Return the registered model names."""
    return sorted({*_REGISTRY, *_EXTRA})


def get_model_entry(name: str) -> ModelEntry:
    """Return the registry entry of ``name``; ``ConfigError`` listing known names otherwise."""
    if name in _EXTRA:
        return _EXTRA[name]
    if name not in _REGISTRY:
        raise ConfigError(f"model.name: unknown model {name!r}; known models: {list_models()}")
    module_name, cfg_name, cls_name = _REGISTRY[name]
    module = importlib.import_module(module_name)
    return ModelEntry(name, getattr(module, cfg_name), getattr(module, cls_name))


def build_model(cfg, info: DataInfo, **parts) -> GenerativeModel:
    """Return the model described by a model config dataclass (with a ``name`` field).

    ``parts``: what the model's :attr:`~snngen.models.base.GenerativeModel.run_parts` name,
    loaded from other run folders by :func:`snngen.runs.load_model_parts`."""
    entry = get_model_entry(cfg.name)
    return entry.model_cls(cfg, info, **parts)


__all__ = [
    "DataInfo",
    "GenerativeModel",
    "ModelEntry",
    "build_model",
    "get_model_entry",
    "list_models",
    "register_model",
]
