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
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from snngen.errors import ConfigError

#: Lightning precision names snngen accepts (``trainer.precision``)
PRECISIONS = (
    "32-true", "32", "64-true", "64", "16-mixed", "16", "bf16-mixed", "bf16", "16-true",
    "bf16-true",
)
#: accelerator names (``trainer.accelerator``); "gpu"/"cuda" need a CUDA device at train time
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
#: the largest ``data.image_size`` (pixels per side) a run may ask for
MAX_IMAGE_SIZE = 4096
#: metric names of ``eval.metrics`` and feature networks of ``eval.features``
EVAL_METRICS = ("mse", "fid", "kid", "is", "pr", "aefd")
#: what ``eval.metrics: null`` (the default) measures: those of these that apply to the model
#: (mse where it reconstructs, fid and kid where it samples)
DEFAULT_EVAL_METRICS = ("mse", "fid", "kid")
EVAL_FEATURES = ("classifier", "inception")
#: the largest float32 (``torch.finfo(torch.float32).max``): every float key ends up in float32
#: tensors or an optimiser step on float32 weights, where a larger value cannot be converted
FLOAT32_MAX = 3.4028234663852886e38


def _check_number(
    obj: Any, key: str, low: float, *, inclusive: bool = True, optional: bool = False
) -> None:
    """Raise ``ValueError("key: ...")`` unless ``obj.key`` is a finite number >= ``low``
    (> ``low`` when not ``inclusive``); ``optional``: null is allowed too."""
    value = getattr(obj, key)
    if value is None and optional:
        return
    if value is None or not math.isfinite(value) or value < low or (
        value == low and not inclusive
    ):
        allowed = f"a number {'>=' if inclusive else '>'} {low:g}" + (
            " or null" if optional else ""
        )
        raise ValueError(f"{key}: must be {allowed}, got {value!r}")


def _at_least(obj: Any, key: str, low: float, optional: bool = False) -> None:
    _check_number(obj, key, low, optional=optional)


def _positive(obj: Any, key: str, optional: bool = False) -> None:
    _check_number(obj, key, 0, inclusive=False, optional=optional)


@dataclass
class DataConfig:
    """Which dataset, and how batches are made."""

    name: str = "mnist5k"
    root: str | None = None
    image_size: int | None = 32
    batch_size: int = 64
    num_workers: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    #: training-split augmentation, e.g. ``[hflip]`` (see :mod:`snngen.data.augment`)
    augment: list[str] = field(default_factory=list)
    #: fetch the published files when the dataset is missing (``snngen datasets download``)
    download: bool = False
    #: check the files against the published sizes/checksums/counts (once; cached in the root)
    verify: bool = True

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("name: must name a dataset (see 'snngen datasets'), got ''")
        _at_least(self, "image_size", 1, optional=True)
        if self.image_size is not None and self.image_size > MAX_IMAGE_SIZE:
            raise ValueError(f"image_size: must be <= {MAX_IMAGE_SIZE}, got {self.image_size}")
        _at_least(self, "batch_size", 1)
        _at_least(self, "num_workers", 0)
        from snngen.data.augment import check_augment

        self.augment = check_augment(self.augment)


@dataclass
class OptimConfig:
    """The optimiser of the model's parameters (models with several may override)."""

    name: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    lr_reference_batch: int | None = None  # if set, lr is scaled by batch_size * devices / this
    #: lr over the optimiser steps (:func:`snngen.training.lr_factor`): ``constant``, or
    #: ``cosine`` from lr down to ``min_lr`` over the run's step horizon (trainer.max_steps,
    #: else max_epochs in steps); both after ``warmup_steps`` of linear warm-up
    schedule: Literal["constant", "cosine"] = "constant"
    #: linear warm-up: step s (0-based) of the first ``warmup_steps`` uses lr * (s + 1) / warmup
    warmup_steps: int = 0
    #: the cosine schedule's floor, in the units of ``lr`` (each group gets min_lr / lr of its lr)
    min_lr: float = 0.0
    #: nanoGPT's no-decay groups: parameters with fewer than 2 dimensions (biases, norm
    #: weights) and nn.Embedding weights get weight_decay 0 (false: every parameter decays)
    no_decay_bias_norm: bool = False

    def __post_init__(self) -> None:
        _positive(self, "lr")
        if len(self.betas) != 2 or not all(math.isfinite(b) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: must be two numbers in [0, 1), got {self.betas!r}")
        _at_least(self, "weight_decay", 0)
        _at_least(self, "lr_reference_batch", 1, optional=True)
        _at_least(self, "warmup_steps", 0)
        _at_least(self, "min_lr", 0)
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr: must be <= lr ({self.lr:g}), got {self.min_lr!r}")
        check_optimizer_range(self, self.lr, "lr")


def check_optimizer_range(optim: OptimConfig, lr: float, key: str, scaled: bool = False
                          ) -> None:
    """Raise ``ValueError("key: ...")`` unless every scalar the optimiser ``optim`` with
    learning rate ``lr`` hands torch's float32 update kernels fits in float32.

    Adam's scalar is its bias-corrected step size ``lr / (1 - betas[0]^t)``, largest at step 1;
    AdamW also scales each weight by ``1 - lr * weight_decay``; SGD passes ``lr``. torch refuses
    a scalar beyond float32 ("value cannot be converted to type float without overflow") only
    at the first optimiser step, after the run folder exists, so it is refused here instead.
    """
    if optim.name in ("adam", "adamw"):
        step, what = lr / (1 - optim.betas[0]), "Adam's first step lr / (1 - betas[0])"
    else:
        step, what = lr, "SGD's step lr"
    if optim.name == "adamw" and lr * optim.weight_decay > step:
        step, what = lr * optim.weight_decay, "AdamW's decay lr * weight_decay"
    if step > FLOAT32_MAX:
        lr_text = f"{lr:g} after lr_reference_batch scaling" if scaled else f"{lr:g}"
        raise ValueError(
            f"{key}: too large: {what} is {step:.3g}, beyond float32's {FLOAT32_MAX:.3g}; "
            f"got lr {lr_text}"
        )


@dataclass
class TrainerConfig:
    """Training length, hardware and bookkeeping. Epochs are converted to steps."""

    max_epochs: float | None = 1.0
    max_steps: int | None = None  # wins over max_epochs when set
    # stop once training has used this much CPU time (process time, all threads; kept across
    # resumes); with max_steps and max_epochs both null, the CPU time alone ends the run
    max_cpu_minutes: float | None = None
    # with max_cpu_minutes: also keep checkpoints/cpu_K_of_N.ckpt at K/N of it (K = 1..N-1)
    cpu_snapshots: int = 0
    accelerator: str = "auto"  # cpu | gpu | auto
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | ddp_spawn | ...
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed | 64-true
    seed: int = 0
    ckpt_every_n_steps: int = 200
    log_every_n_steps: int = 10
    grad_clip: float | None = None
    #: decay of the EMA copy of the weights (null: no EMA); sampling and evaluation use the copy
    ema_decay: float | None = None
    #: ramp the EMA decay up with the step count, capped at ema_decay (diffusers' EMAModel
    #: use_ema_warmup: 1 - (1 + t / ema_inv_gamma) ** -ema_power, 0 at the first update;
    #: :meth:`snngen.training.EMA.decay_at`); false: ema_decay from the first step
    ema_warmup: bool = False
    ema_inv_gamma: float = 1.0
    ema_power: float = 2 / 3
    progress_bar: bool = True
    grids_every_epoch: bool = True
    # recompute each block's activations in the backward pass instead of keeping them (less
    # memory, about one more forward per step): snngen.spiking.checkpointing
    checkpoint_activations: bool = False

    def __post_init__(self) -> None:
        _positive(self, "max_epochs", optional=True)
        _at_least(self, "max_steps", 1, optional=True)
        _positive(self, "max_cpu_minutes", optional=True)
        _at_least(self, "cpu_snapshots", 0)
        if self.max_steps is None and self.max_epochs is None and self.max_cpu_minutes is None:
            raise ValueError(
                "max_steps: set trainer.max_steps, trainer.max_epochs or trainer.max_cpu_minutes"
            )
        if self.cpu_snapshots and self.max_cpu_minutes is None:
            raise ValueError("cpu_snapshots: needs trainer.max_cpu_minutes (snapshots are taken "
                             "at fractions of it)")
        if self.accelerator not in ACCELERATORS:
            raise ValueError(
                f"accelerator: must be one of {', '.join(ACCELERATORS)}, got {self.accelerator!r}"
            )
        if isinstance(self.devices, int):
            _at_least(self, "devices", 1)
        elif self.devices != "auto" and not device_list(self.devices):
            raise ValueError(
                "devices: must be a number >= 1, 'auto' or a list of device indices like "
                f"'0,1', got {self.devices!r}"
            )
        _at_least(self, "num_nodes", 1)
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision: must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed: must be an integer in [0, 2**32), got {self.seed}")
        _at_least(self, "ckpt_every_n_steps", 1)
        _at_least(self, "log_every_n_steps", 1)
        _positive(self, "grad_clip", optional=True)
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay: must be in (0, 1) or null, got {self.ema_decay!r}")
        if self.ema_warmup and self.ema_decay is None:
            raise ValueError("ema_warmup: needs trainer.ema_decay (the decay it ramps up to), "
                             "e.g. 0.999")
        _positive(self, "ema_inv_gamma")
        _positive(self, "ema_power")


def device_list(text: str) -> list[int]:
    """Return the indices of a device list string like ``"0,1"`` (empty if it is not one)."""
    parts = [p.strip() for p in text.strip().strip(",").split(",")]
    if not all(p.isdigit() for p in parts):
        return []
    return [int(p) for p in parts]


@dataclass
class EvalConfig:
    """What ``snngen train`` evaluates at the end and ``snngen eval`` by default.

    ``protocol``: the named metric protocol (:mod:`snngen.metrics.protocols`: snngen, sddpm,
    fsvae, tts_vqvae). ``n_samples`` / ``features``: ``null`` takes the protocol's (only the
    snngen protocol lets ``features`` choose). ``ref_stats``: a pytorch-fid / clean-fid
    statistics ``.npz`` to compare FID with; ``inception_logits``: the Inception logits file IS
    needs on Inception features (else ``$SNNGEN_INCEPTION_LOGITS``). ``metrics``: ``null``
    (the default) takes those of :data:`DEFAULT_EVAL_METRICS` that apply to the model
    (:func:`snngen.evaluation.configured_metrics`); a list names them, and one that does not
    apply (mse for a model without reconstruction, a sample metric for one that cannot sample)
    is refused before training.
    """

    n_samples: int | None = None
    metrics: list[str] | None = None
    features: str | None = None
    batch_size: int = 250
    protocol: str = "snngen"
    ref_stats: str | None = None
    inception_logits: str | None = None
    #: samples per shard file in RUN/samples/<protocol>/ (see :mod:`snngen.generation`)
    shard_size: int = 1000

    def __post_init__(self) -> None:
        from snngen.metrics.protocols import PROTOCOLS

        _at_least(self, "n_samples", 1, optional=True)
        _at_least(self, "batch_size", 1)
        _at_least(self, "shard_size", 1)
        bad = [m for m in self.metrics or () if m not in EVAL_METRICS]
        if bad:
            raise ValueError(f"metrics: unknown {bad}; choose from {', '.join(EVAL_METRICS)}")
        if self.features is not None and self.features not in EVAL_FEATURES:
            raise ValueError(
                f"features: must be one of {', '.join(EVAL_FEATURES)} or null, got "
                f"{self.features!r}"
            )
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"protocol: must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}"
            )
        if self.n_samples is None:  # the protocol's sample count, recorded in the run
            self.n_samples = PROTOCOLS[self.protocol].n_samples


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

    def __post_init__(self) -> None:
        if self.eval.features is None:  # the protocol's feature network on this dataset
            from snngen.metrics.protocols import PROTOCOLS

            self.eval.features = PROTOCOLS[self.eval.protocol].features_for(self.data.name)
        if self.optim.schedule == "cosine" and (
            self.trainer.max_steps is None and self.trainer.max_epochs is None
        ):
            raise ValueError(
                "optim.schedule: cosine decays over a known number of steps; a "
                "trainer.max_cpu_minutes budget alone has none: set trainer.max_steps (or "
                "max_epochs), or use optim.schedule: constant"
            )
        if self.optim.lr_reference_batch:
            check_optimizer_range(self.optim, scaled_lr(self), "optim.lr", scaled=True)
        if not self.out_dir.strip() or "\0" in self.out_dir:
            raise ValueError(f"out_dir: must be a folder path, got {self.out_dir!r}")
        if self.name is not None and (
            not self.name.strip() or self.name in (".", "..") or "\0" in self.name
            or "/" in self.name or "\\" in self.name
        ):
            raise ValueError(
                f"name: must be a plain folder name (no '/', not '.' or '..'), got {self.name!r}"
            )


def scaled_lr(cfg: RunConfig) -> float:
    """The learning rate after ``optim.lr_reference_batch`` scaling, for the devices the config
    names (``trainer.devices`` x ``num_nodes``; ``auto`` counts as one device)."""
    o, t = cfg.optim, cfg.trainer
    if not o.lr_reference_batch:
        return o.lr
    devices = t.devices if isinstance(t.devices, int) else len(device_list(t.devices)) or 1
    return o.lr * cfg.data.batch_size * devices * t.num_nodes / o.lr_reference_batch


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
        out_of_range = [e for e in errors if isinstance(e, _OutOfRange)]
        if out_of_range:  # a number of the right type, but not one float32 can hold
            raise ConfigError(str(out_of_range[0])) from None
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
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            return _float32_range(value, where)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


class _OutOfRange(ConfigError):
    """A number of the declared type that float32 cannot hold (kept through unions)."""


def _float32_range(value: int | float | str, where: str) -> float:
    """``value`` as a float (YAML 1.1 reads "1e-4" as a string), refusing NaN, infinities and
    magnitudes beyond float32 (a float key ends up in float32 tensors or optimiser steps)."""
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float64
        number = math.inf
    except ValueError:
        raise ConfigError(f"{where}: expected float, got {value!r}") from None
    if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
        raise _OutOfRange(
            f"{where}: must be a finite number within float32's range "
            f"(magnitude <= {FLOAT32_MAX:.4g}), got {value}"
        )
    return number


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
    except ValueError as err:  # __post_init__ checks: "key: what is wrong"
        msg = str(err)
        key = msg.split(":", 1)[0]
        if where and key in names:
            raise ConfigError(f"{where}.{msg}") from None
        if key in names or key.split(".", 1)[0] in names:  # a key, or "optim.schedule: ..."
            raise ConfigError(msg) from None
        raise ConfigError(f"{where or 'config'}: {msg}") from None


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
        value = _parse_yaml(text, f"override {item!r}: value")
        node = raw
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: expected key=value, e.g. trainer.max_steps=100")
        for part in parts[:-1]:
            if node.get(part) is None:  # absent, or an empty section in the file (``trainer:``)
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = value
    return raw


def build_run_config(raw: dict, source: str = "config", check_eval: bool = True) -> RunConfig:
    """Validate a raw mapping into a :class:`RunConfig`; errors name ``source`` and the key.

    ``check_eval``: also refuse an ``eval`` section that could not run
    (:func:`check_eval_section`); off when re-opening a finished run's config."""
    from snngen.models import get_model_entry

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    raw = dict(raw)
    model_raw = raw.pop("model", None)
    if not isinstance(model_raw, dict) or not isinstance(model_raw.get("name"), str):
        raise ConfigError(f"{source}: model.name is required (e.g. model: {{name: sae}})")
    try:
        entry = get_model_entry(model_raw["name"])
        model_cfg = build_dataclass(entry.config_cls, model_raw, "model")
        cfg = build_dataclass(RunConfig, {**raw, "model": None}, "")
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    cfg.model = model_cfg
    if check_eval:
        check_eval_section(cfg, source)
    return cfg


def check_eval_section(cfg: RunConfig, source: str = "config") -> None:
    """Refuse an ``eval`` section that could not run, at load time (before any training): a
    feature choice the protocol does not allow, IS on Inception features without the logits
    file, a missing or malformed ``ref_stats`` file. Raises a one-line :class:`ConfigError`."""
    from snngen.errors import SnngenError
    from snngen.metrics.plan import plan_evaluation

    e = cfg.eval
    try:
        metrics = list(DEFAULT_EVAL_METRICS) if e.metrics is None else e.metrics
        plan_evaluation(
            cfg.data.name, metrics, e.n_samples, protocol=e.protocol, features=e.features,
            ref_stats=e.ref_stats, inception_logits=e.inception_logits, load_files=False,
            flags=EVAL_FLAGS,
        )
    except SnngenError as err:
        raise ConfigError(f"{source}: {err}") from None


#: how the eval section's keys are named in messages about a config
EVAL_FLAGS = {"metrics": "eval.metrics", "n": "eval.n_samples", "features": "eval.features",
              "protocol": "eval.protocol", "ref_stats": "eval.ref_stats",
              "inception_logits": "eval.inception_logits"}


#: the keys ``snngen train --resume`` may change (a trailing dot: the whole section): the budget,
#: bookkeeping, the device kind, where the data lies and the end-of-run evaluation. Any other key
#: (``data.batch_size``, ``optim.lr``, ``trainer.seed``, the model, ...) changes the data order or
#: the optimisation a resume continues, and is refused; :data:`RUN_OWN_KEYS` stay the run's.
RESUMABLE_KEYS = (
    "trainer.max_steps", "trainer.max_epochs", "trainer.max_cpu_minutes", "trainer.cpu_snapshots",
    "trainer.ckpt_every_n_steps", "trainer.log_every_n_steps", "trainer.progress_bar",
    "trainer.grids_every_epoch", "trainer.accelerator", "data.root", "eval.",
)
#: keys that choose where a new run goes and what it starts from: a resumed run keeps its own
RUN_OWN_KEYS = ("name", "out_dir", "model.init_from")


#: a config file larger than this is refused unread (a config is a few hundred bytes)
MAX_CONFIG_BYTES = 1_000_000


def _parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` with every failure (syntax, nesting too deep, ...) a ConfigError."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        first = " ".join(str(err).split())[:200]
        raise ConfigError(f"{where}: not valid YAML ({first})") from None
    except (RecursionError, ValueError, TypeError, OverflowError) as err:
        raise ConfigError(f"{where}: not a usable YAML config ({type(err).__name__})") from None


def load_config(
    path: str | Path, overrides: list[str] | None = None, check_eval: bool = True
) -> RunConfig:
    """Read a YAML run config, apply ``key=value`` overrides, validate it.

    Raises :class:`ConfigError` for a missing file, bad YAML, or any invalid key or value;
    with ``check_eval`` also for an end-of-run evaluation that could not run (IS on Inception
    features without the logits file, a bad ``eval.ref_stats``: :func:`check_eval_section`).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"config file {path}: cannot read it ({err.strerror or err})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: {len(data):,} bytes is too large for a config file "
            f"(at most {MAX_CONFIG_BYTES:,})"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not a YAML text file (byte {err.start} is not UTF-8)"
        ) from None
    raw = _parse_yaml(text, str(path))
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections (model:, data:, ...) at the top level, "
            f"got a {type(raw).__name__}"
        )
    raw = apply_overrides(raw, overrides or [])
    return build_run_config(raw, str(path), check_eval)


def save_config(cfg: RunConfig, path: str | Path, header: str = "") -> None:
    """Write the resolved config as YAML (loadable again with :func:`load_config`), atomically,
    after ``header`` (YAML comment lines, e.g. :func:`snngen.provenance.header`)."""
    from snngen.files import write_text

    write_text(path, header + yaml.safe_dump(to_dict(cfg), sort_keys=False))
