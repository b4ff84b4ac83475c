"""YAML configs validated into typed dataclasses.

A run config has five sections::

    model:   {name: sae, ...}        # fields of the model's own Config dataclass
    data:    DataConfig
    optim:   OptimConfig
    trainer: TrainerConfig
    eval:    EvalConfig

An unknown or mistyped key is a :class:`ConfigError` naming the key and the file. Any key can be
overridden with ``a.b=c`` strings (the value is parsed as YAML: ``trainer.max_steps=5``,
``optim.betas=[0.5,0.9]``, ``data.root=null``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from snngen.errors import ConfigError


@dataclass
class DataConfig:
    """Which dataset, and how batches are made."""

    name: str = "mnist5k"
    root: str | None = None
    image_size: int | None = 32
    batch_size: int = 64
    num_workers: int = 0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """The optimiser of the model's parameters (models with several may override)."""

    name: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    lr_reference_batch: int | None = None  # if set, lr is scaled by batch_size * devices / this


@dataclass
class TrainerConfig:
    """Training length, hardware and bookkeeping. Epochs are converted to steps."""

    max_epochs: float | None = 1.0
    max_steps: int | None = None  # wins over max_epochs when set
    accelerator: str = "auto"  # cpu | gpu | auto
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | ddp_spawn | ...
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed | 64-true
    seed: int = 0
    ckpt_every_n_steps: int = 200
    log_every_n_steps: int = 10
    grad_clip: float | None = None
    ema_decay: float | None = None
    progress_bar: bool = True
    grids_every_epoch: bool = True


@dataclass
class EvalConfig:
    """What ``snngen train`` evaluates at the end and ``snngen eval`` by default."""

    n_samples: int = 1000
    metrics: list[str] = field(default_factory=lambda: ["mse", "fid", "kid"])
    features: str = "classifier"
    batch_size: int = 250


@dataclass
class RunConfig:
    """A whole run: the model's config (a dataclass with a ``name`` field) and the rest."""

    model: Any
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out_dir: str = "runs"
    name: str | None = None


# ----------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` checked (and mildly coerced: int -> float) against the type hint ``tp``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{where}: expected one of {list(get_args(tp))}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def build_dataclass(cls: type, data: Any, where: str = "") -> Any:
    """Return ``cls(**data)`` with every key known and every value of the declared type.

    Raises :class:`ConfigError` naming the full key path (``where``) of the first problem.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"{path}: unknown key; known keys here: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], path)
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field missing
        raise ConfigError(f"{where or 'config'}: {err}") from None
    except ValueError as err:  # __post_init__ checks
        raise ConfigError(f"{where or 'config'}: {err}") from None


def to_dict(obj: Any) -> Any:
    """Return plain dicts/lists for a (nested) dataclass config, ready for ``yaml.safe_dump``."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# ----------------------------------------------------------------------------- loading


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of ``raw`` with each ``a.b.c=value`` applied (value parsed as YAML)."""
    import copy

    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. trainer.max_steps=100")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from None
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = value
    return raw


def build_run_config(raw: dict, source: str = "config") -> RunConfig:
    """Validate a raw mapping into a :class:`RunConfig`; errors name ``source`` and the key."""
    from snngen.models import get_model_entry

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    raw = dict(raw)
    model_raw = raw.pop("model", None)
    if not isinstance(model_raw, dict) or "name" not in model_raw:
        raise ConfigError(f"{source}: model.name is required (e.g. model: {{name: sae}})")
    try:
        entry = get_model_entry(model_raw["name"])
        model_cfg = build_dataclass(entry.config_cls, model_raw, "model")
        cfg = build_dataclass(RunConfig, {**raw, "model": None}, "")
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    cfg.model = model_cfg
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config, apply ``key=value`` overrides, validate it.

    Raises :class:`ConfigError` for a missing file, bad YAML, or any invalid key or value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    raw = apply_overrides(raw, overrides or [])
    return build_run_config(raw, str(path))


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable again with :func:`load_config`)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
