"""Generative models, one module per family, all behind :class:`GenerativeModel`.

The registry maps a config ``model.name`` to the model's Config dataclass and its class:
snngen's own models, models registered in this process (:func:`register_model`) and models
that installed packages declare in the entry-point group ``snngen.models``. A package's model is
imported only when asked for, so a package that fails to import breaks no other model.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
from dataclasses import dataclass

from snngen.errors import ConfigError
from snngen.models.base import DataInfo, GenerativeModel, RunPart

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
    """A registered model: its name, config dataclass and model class."""

    name: str
    config_cls: type
    model_cls: type


#: the entry-point group through which an installed package declares its models
ENTRY_POINT_GROUP = "snngen.models"

_EXTRA: dict[str, ModelEntry] = {}


def register_model(name: str, config_cls: type, model_cls: type) -> None:
    """Register a model defined outside snngen.

    ``config_cls`` is a dataclass with a ``name`` field (default ``name``) and the model's keys;
    ``model_cls`` a :class:`GenerativeModel` built as ``model_cls(config, data_info)``. After
    this call ``model.name: <name>`` works in configs, in :func:`snngen.train` and on the
    command line of the same process. An installed package makes a model known to every
    process (``snngen train`` included) through the entry-point group ``snngen.models``
    instead (see ``docs/extending.md``)."""
    _check_entry(name, config_cls, model_cls, f"register_model({name!r}, ...)")
    _EXTRA[name] = ModelEntry(name, config_cls, model_cls)


def _check_entry(name: str, config_cls: object, model_cls: object, where: str) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{where}: a model name must be an identifier, got {name!r}")
    if not dataclasses.is_dataclass(config_cls) or "name" not in {
        f.name for f in dataclasses.fields(config_cls)
    }:
        raise ConfigError(f"{where}: the config class must be a dataclass with a 'name' field")
    if not (isinstance(model_cls, type) and issubclass(model_cls, GenerativeModel)):
        raise ConfigError(f"{where}: the model class must subclass snngen.models.GenerativeModel")


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The installed packages' models, by name (read from package metadata, nothing imported)."""
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return {ep.name: ep for ep in found if ep.name not in _REGISTRY}


def _load_entry_point(ep: importlib.metadata.EntryPoint) -> ModelEntry:
    """Import a declared model: ``name = "package.module:ModelClass"``, the class naming its
    config dataclass in ``config_class``. A failure is one line naming the package."""
    package = ep.dist.name if ep.dist is not None else ep.value.split(":")[0]
    where = f"model {ep.name!r} from package {package} ({ENTRY_POINT_GROUP} entry point {ep.value})"
    try:
        model_cls = ep.load()
    except Exception as err:  # any import error of a third-party package: one line, not a trace
        raise ConfigError(f"{where} failed to import: {type(err).__name__}: {err}") from None
    config_cls = getattr(model_cls, "config_class", None)
    _check_entry(ep.name, config_cls, model_cls, where)
    return ModelEntry(ep.name, config_cls, model_cls)


def list_models() -> list[str]:
    """Return the model names: snngen's, registered ones and installed packages' (not imported)."""
    return sorted({*_REGISTRY, *_EXTRA, *_entry_points()})


def get_model_entry(name: str) -> ModelEntry:
    """Return the registry entry of ``name``; ``ConfigError`` listing known names otherwise."""
    if name in _EXTRA:
        return _EXTRA[name]
    if name in _REGISTRY:
        module_name, cfg_name, cls_name = _REGISTRY[name]
        module = importlib.import_module(module_name)
        return ModelEntry(name, getattr(module, cfg_name), getattr(module, cls_name))
    plugins = _entry_points()
    if name in plugins:
        return _load_entry_point(plugins[name])
    raise ConfigError(f"model.name: unknown model {name!r}; known models: {list_models()}")


def build_model(cfg, info: DataInfo, **parts) -> GenerativeModel:
    """Return the model described by a model config dataclass (with a ``name`` field).

    ``parts``: what the model's :attr:`~snngen.models.base.GenerativeModel.run_parts` name,
    loaded from other run folders by :func:`snngen.runs.load_model_parts`."""
    entry = get_model_entry(cfg.name)
    return entry.model_cls(cfg, info, **parts)


__all__ = [
    "ENTRY_POINT_GROUP",
    "DataInfo",
    "GenerativeModel",
    "ModelEntry",
    "RunPart",
    "build_model",
    "get_model_entry",
    "list_models",
    "register_model",
]
