"""Validate a training command completely before it writes anything.

:func:`prepare_training` resolves and checks, in order: the config (every value's type and
range), the hardware it asks for, the data set (found, non-empty, at least one global batch),
the model build, the resume target (same model, readable checkpoint that fits), the evaluation
to run at the end (its protocol, feature network and weights, the reference split present and
large enough, a model that samples where samples are compared), and the output folder
(writable, room for one checkpoint). Any problem is a one-line
:class:`~snngen.errors.SnngenError` and the file system is exactly as before; only then does
``snngen train`` create or touch the run folder.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import Tensor
from torch.utils.data import Dataset

from snngen.config import (
    EVAL_FLAGS,
    RESUMABLE_KEYS,
    RUN_OWN_KEYS,
    RunConfig,
    device_list,
    load_config,
    to_dict,
)
from snngen.errors import ConfigError, SnngenError
from snngen.files import check_writable_folder
from snngen.models import DataInfo, GenerativeModel
from snngen.training import (
    UNLIMITED_STEPS,
    _expected_world_size,
    has_schedule,
    param_groups,
    seed_run,
    steps_per_epoch,
    total_steps,
)

#: bytes a checkpoint needs per parameter: weights, two Adam moments, an EMA copy, headroom
CKPT_BYTES_PER_PARAM = 4 * 5
#: fixed headroom for a checkpoint's metadata, logs and pictures
CKPT_HEADROOM_BYTES = 2_000_000


@dataclass
class TrainingPlan:
    """Everything ``snngen train`` needs, resolved and checked; nothing written yet."""

    cfg: RunConfig
    run_dir: Path
    train_set: Dataset
    test_set: Dataset
    info: DataInfo
    fixed_batch: Tensor  # the first test items, for per-epoch reconstruction grids
    model: GenerativeModel  # built right after seeding; fit() trains this one
    resume: bool
    start_step: int = 0  # the resumed checkpoint's step
    #: a resumed run already at its budget: the line saying so (nothing is to be done)
    nothing_to_do: str | None = None


def prepare_training(
    config: str | Path | None,
    overrides: list[str] | None = None,
    resume: str | Path | None = None,
    evaluate: bool = True,
    run_dir: Path | None = None,
) -> TrainingPlan:
    """Return the checked :class:`TrainingPlan` of ``snngen train [CONFIG] [overrides]``.

    ``resume``: the run folder to continue (``config`` None: its own ``config.yaml``; a changed
    key other than :data:`~snngen.config.RESUMABLE_KEYS` is refused, :func:`check_resume_config`;
    a run already at its budget gets ``nothing_to_do`` set and no evaluation check);
    ``evaluate``: whether the end-of-run evaluation will run (then it is checked too);
    ``run_dir``: a folder fixed by the caller (DDP children).
    Raises :class:`SnngenError` naming the first bad value or file; writes nothing.
    """
    from snngen.data.augment import augmented
    from snngen.runs import (
        CONFIG_FILE,
        build_checked_model,
        check_run_dir,
        data_info,
        new_run_dir,
        open_datasets,
    )

    if resume:
        run_dir = check_run_dir(resume)
        config = run_dir / CONFIG_FILE if config is None else config
    elif config is None:
        raise ConfigError("no config: give a YAML config file, or a run folder to resume "
                          "(which brings its own config.yaml)")
    cfg = load_config(config, overrides)
    check_hardware(cfg)
    train_set, test_set = open_datasets(cfg)
    check_data(cfg, train_set, test_set)
    train_set = augmented(train_set, cfg.data.augment)
    info = data_info(train_set)
    fixed = fixed_test_batch(test_set)
    model_cfg = cfg.model
    if resume and getattr(model_cfg, "init_from", None):  # the checkpoint has the weights
        model_cfg = dataclasses.replace(model_cfg, init_from=None)
    seed_run(cfg)  # the model is built once, here, with the seed's initial weights
    model = build_checked_model(model_cfg, info)
    start, done = 0, None
    if resume:
        meta = check_resume_target(run_dir, cfg, info, model)
        cfg = check_resume_config(run_dir, cfg)
        start = meta["batches_seen"]
        done = finished_message(cfg, len(train_set), start, float(meta.get("cpu_seconds", 0)))
    if evaluate and done is None:
        check_evaluation(cfg, model, test_set)
    if run_dir is None:
        run_dir = new_run_dir(cfg)
    params = sum(p.numel() for p in model.parameters())
    check_writable_folder(
        run_dir, params * CKPT_BYTES_PER_PARAM + CKPT_HEADROOM_BYTES, what="run"
    )
    return TrainingPlan(cfg, Path(run_dir), train_set, test_set, info, fixed, model, bool(resume),
                        start, done)


def check_resume_config(run_dir: Path, cfg: RunConfig) -> RunConfig:
    """Return ``cfg`` to continue the run in ``run_dir`` with: its ``name``, ``out_dir`` and
    ``model.init_from`` (:data:`~snngen.config.RUN_OWN_KEYS`) are the run's own. A key outside
    :data:`~snngen.config.RESUMABLE_KEYS` whose value differs from the run's ``config.yaml``
    (``data.batch_size``, ``optim.lr``, the model, ...) is a one-line :class:`ConfigError`
    naming the key and both values: resume continues the run's data order and optimisation and
    cannot honour it."""
    from snngen.runs import CONFIG_FILE

    run_cfg = load_config(Path(run_dir) / CONFIG_FILE, check_eval=False)
    before, after = _flat(to_dict(run_cfg)), _flat(to_dict(cfg))
    for key in [*after, *(k for k in before if k not in after)]:
        if key in RUN_OWN_KEYS or key in RESUMABLE_KEYS or key.startswith(
                tuple(k for k in RESUMABLE_KEYS if k.endswith("."))):
            continue
        old, new = before.get(key, "(absent)"), after.get(key, "(absent)")
        if old != new:
            raise ConfigError(
                f"cannot resume {run_dir} with {key}={_show(new)}: the run was trained with "
                f"{key}={_show(old)}, and resume continues its data order and optimisation; "
                f"keep {key}={_show(old)} or start a new run")
    model = cfg.model
    if hasattr(model, "init_from"):
        model = dataclasses.replace(model, init_from=run_cfg.model.init_from)
    return dataclasses.replace(cfg, name=run_cfg.name, out_dir=run_cfg.out_dir, model=model)


def _flat(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _show(value) -> str:
    """A config value as it is written on the command line (``null``, ``true``, ``[4, 8]``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return str(value)


def finished_message(cfg: RunConfig, n_train: int, step: int, cpu_seconds: float) -> str | None:
    """The line ``snngen train --resume`` prints for a run that has nothing left to do at
    ``step`` (with ``cpu_seconds`` of CPU time used) under ``cfg``'s budget, or None when
    training goes on. E.g. ``already trained 3 of 3 steps; nothing to do (...)``."""
    t = cfg.trainer
    if t.max_cpu_minutes is not None and cpu_seconds >= 60 * t.max_cpu_minutes:
        return (f"already trained {step} steps in {cpu_seconds / 60:.3g} of "
                f"{t.max_cpu_minutes:g} CPU minutes; nothing to do (to train on, give a larger "
                "trainer.max_cpu_minutes)")
    total = total_steps(cfg, n_train, _expected_world_size(cfg))
    if total >= UNLIMITED_STEPS or step < total:
        return None
    key = "trainer.max_steps" if t.max_steps is not None else "trainer.max_epochs"
    epochs = "" if t.max_steps is not None else f" ({t.max_epochs:g} epochs)"
    if step == total:
        return (f"already trained {step} of {total} steps{epochs}; nothing to do "
                f"(to train on, give a larger {key})")
    return (f"already trained {step} steps, more than the {total}{epochs} of "
            f"{key}={getattr(t, key.split('.')[1])}; nothing to do")


def fixed_test_batch(test_set: Dataset, n: int = 8) -> Tensor:
    """Return the model input of the first ``n`` test items (images ``[n, C, H, W]``, events
    ``[T, n, 2, H, W]``): the fixed batch of the per-epoch reconstruction grids."""
    from snngen.training import batch_to_input

    items = [test_set[i][0] for i in range(min(n, len(test_set)))]
    return batch_to_input(torch.stack(items))


def check_hardware(cfg: RunConfig) -> None:
    """Refuse accelerators and device counts this machine does not have."""
    t = cfg.trainer
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if t.accelerator in ("gpu", "cuda") and gpus == 0:
        raise ConfigError(
            f"trainer.accelerator={t.accelerator}: no CUDA GPU on this machine; "
            "use trainer.accelerator=cpu (or auto)"
        )
    if t.accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator=mps: no Apple MPS device on this machine")
    on_gpu = t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and gpus > 0)
    available = gpus if on_gpu else (os.cpu_count() or 1)
    kind = "GPUs" if on_gpu else "CPU cores (one process each)"
    if isinstance(t.devices, int):
        wanted = t.devices
        if wanted > available:
            raise ConfigError(
                f"trainer.devices={wanted}: this machine has {available} {kind}"
            )
    elif t.devices != "auto":
        ids = device_list(str(t.devices))
        if on_gpu and max(ids) >= gpus:
            raise ConfigError(
                f"trainer.devices={t.devices}: GPU {max(ids)} does not exist "
                f"(this machine has {gpus})"
            )
        if not on_gpu:
            raise ConfigError(
                f"trainer.devices={t.devices}: a device list needs GPUs; on CPU give a number"
            )
    if t.max_cpu_minutes is not None:
        from snngen.training import _expected_world_size

        if _expected_world_size(cfg) > 1:
            raise ConfigError(
                "trainer.max_cpu_minutes: a CPU-time budget needs one process (each process "
                "would stop at a different step); use trainer.max_steps with several devices"
            )
    if t.precision in ("16-mixed", "16", "16-true") and not on_gpu:
        raise ConfigError(
            f"trainer.precision={t.precision}: float16 needs a GPU; on CPU use 32-true or "
            "bf16-mixed"
        )


def check_data(cfg: RunConfig, train_set: Dataset, test_set: Dataset) -> None:
    """Refuse empty splits and a training split smaller than one global batch."""
    from snngen.training import _expected_world_size

    for split, ds in (("train", train_set), ("test", test_set)):
        if len(ds) == 0:
            raise SnngenError(f"dataset {cfg.data.name!r} ({split} split) has no items")
    world = _expected_world_size(cfg)
    need = cfg.data.batch_size * world
    if len(train_set) < need:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size}: dataset {cfg.data.name!r} has "
            f"{len(train_set)} training items, fewer than one global batch ({need}); "
            "lower data.batch_size"
        )
    check_step_budget(cfg, len(train_set), world)


def check_step_budget(cfg: RunConfig, n_train: int, world: int) -> None:
    """Refuse a ``trainer.max_steps`` / ``max_epochs`` of 2**62 steps or more: the step counter
    keeps that for runs that CPU time alone bounds (:data:`~snngen.training.UNLIMITED_STEPS`)."""
    from snngen.training import UNLIMITED_STEPS, total_steps

    t = cfg.trainer
    if t.max_steps is None and t.max_epochs is None:
        return
    steps = total_steps(cfg, n_train, world)
    if steps >= UNLIMITED_STEPS:
        key, value = ("max_steps", t.max_steps) if t.max_steps is not None else (
            "max_epochs", t.max_epochs)
        raise ConfigError(
            f"trainer.{key}={value}: {steps:.3g} steps is more than a run can count "
            f"(fewer than 2**62 = {UNLIMITED_STEPS:.3g})"
        )


def check_resume_target(
    run_dir: Path, cfg: RunConfig, info: DataInfo, model: GenerativeModel
) -> dict:
    """Refuse a run to resume whose checkpoint is unreadable, of another model or data shape,
    or does not fit the model the config builds; return the checkpoint's ``snngen`` metadata
    (``batches_seen``: its step, ``cpu_seconds``)."""
    from snngen.runs import checkpoint_path, load_model_weights, read_checkpoint

    ckpt_file = checkpoint_path(run_dir)
    ckpt = read_checkpoint(ckpt_file)
    meta = ckpt["snngen"]
    if meta["model_name"] != cfg.model.name:
        raise SnngenError(
            f"cannot resume {run_dir}: its checkpoint belongs to model {meta['model_name']!r}, "
            f"but the config names model {cfg.model.name!r}"
        )
    if DataInfo(**meta["data_info"]) != info:
        raise SnngenError(
            f"cannot resume {run_dir}: it was trained on data {meta['data_info']}, the config's "
            f"data gives {dataclasses.asdict(info)}"
        )
    steps, cpu = meta.get("batches_seen"), meta.get("cpu_seconds", 0.0)
    if (not isinstance(steps, int) or isinstance(steps, bool) or steps < 0
            or not isinstance(meta.get("rng"), dict)
            or not isinstance(cpu, (int, float)) or not 0 <= cpu < float("inf")):
        raise SnngenError(f"cannot resume {run_dir}: {ckpt_file} has no training state")
    load_model_weights(  # overwritten again by Lightning's restore
        model, ckpt["state_dict"], ema=False,
        problem=f"cannot resume {run_dir}: its checkpoint does not fit the config's model",
    )
    if not isinstance(ckpt.get("optimizer_states"), list) or not isinstance(
        ckpt.get("loops"), dict
    ):
        raise SnngenError(f"cannot resume {run_dir}: {ckpt_file} has no optimiser state")
    check_optimiser_layout(run_dir, ckpt, cfg, model)
    return meta


def check_optimiser_layout(run_dir: Path, ckpt: dict, cfg: RunConfig,
                           model: GenerativeModel) -> None:
    """Refuse a resume whose config makes other param groups or lr schedulers than the
    checkpoint holds (``optim.no_decay_bias_norm``, ``schedule`` or ``warmup_steps`` changed):
    Lightning would fail mid-restore, or silently restart the schedule."""
    groups = param_groups(cfg, model)
    want = [len(g) if g and isinstance(g[0], dict) else 1 for g in groups.values()]
    have = [len(s.get("param_groups", [])) if isinstance(s, dict) else 0
            for s in ckpt["optimizer_states"]]
    scheds = len(groups) if has_schedule(cfg) else 0
    saved = ckpt.get("lr_schedulers")
    saved = len(saved) if isinstance(saved, list) else 0
    if have != want or saved != scheds:
        raise SnngenError(
            f"cannot resume {run_dir}: its checkpoint's optimisers have {have} param groups and "
            f"{saved} lr schedulers, the config's optim section makes {want} and {scheds}; keep "
            "optim.no_decay_bias_norm, schedule and warmup_steps as the run began"
        )


def check_evaluation(
    cfg: RunConfig, model: GenerativeModel, reference: Dataset | None = None
) -> None:
    """Refuse an end-of-run evaluation that would fail after training
    (:func:`snngen.evaluation.check_evaluation_request` on the ``eval`` section), and one whose
    reference split (the protocol's; ``reference``: the test split, already open) is absent or
    too small for its metrics (:data:`MIN_REFERENCE`) or, for classifier features, has no
    classes to train the feature classifier on."""
    from snngen.evaluation import check_evaluation_request, configured_metrics

    e = cfg.eval
    plan = check_evaluation_request(
        configured_metrics(cfg, model), e.n_samples, e.features, model,
        metrics_flag="eval.metrics", n_flag="eval.n_samples", features_flag="eval.features",
        protocol=e.protocol, dataset=cfg.data.name, ref_stats=e.ref_stats,
        inception_logits=e.inception_logits, flags=EVAL_FLAGS,
    )
    need = max((MIN_REFERENCE.get(m, 0) for m in plan.sample_metrics
                if not (m == "fid" and plan.ref_stats is not None)), default=0)
    if not plan.sample_metrics or (need == 0 and plan.kind != "classifier"):
        return
    from snngen.metrics.reference import DataSource, reference_source

    # the images the evaluation's reference will read (the protocol decides: the run's data, or
    # the dataset as published); the open test split serves when it is those very images
    source = reference_source(plan.protocol, cfg.data)
    if plan.split == "test" and reference is not None and source == DataSource.of(cfg.data):
        ref = reference
    else:
        ref = source.open(plan.split)
    if len(ref) < need:
        raise ConfigError(
            f"eval.protocol={plan.protocol.name}: {list(plan.sample_metrics)} need at least "
            f"{need} reference images, but the {plan.split} split of dataset "
            f"{cfg.data.name!r} has {len(ref)}"
        )
    if plan.kind == "classifier":
        check_classifier_data(cfg, ref, plan.protocol.classifier_size)


#: the fewest reference images each sample metric is defined on: FID and KID need two (a
#: covariance, a pair of distinct images), precision/recall one more than its k = 3 neighbours
MIN_REFERENCE = {"fid": 2, "kid": 2, "pr": 4}


def _labels(dataset: Dataset) -> list[int] | None:
    """The class labels a dataset holds in memory (wrappers: those of the wrapped set)."""
    for ds in (dataset, getattr(dataset, "dataset", None)):
        labels = getattr(ds, "labels", None)
        if labels is not None:
            return [int(y) for y in labels]
    return None


def check_classifier_data(cfg: RunConfig, reference: Dataset, image_size: int) -> None:
    """Refuse classifier features on a dataset whose in-package classifier (at ``image_size``)
    is not cached yet and cannot be trained because its items carry no classes (a folder of
    images without class subfolders: every label 0)."""
    from snngen.metrics.classifier import classifier_path

    if classifier_path(cfg.data.name, image_size).is_file():
        return
    labels = _labels(reference)
    if labels is not None and len(set(labels)) < 2:
        raise ConfigError(
            f"eval.features=classifier: dataset {cfg.data.name!r} has no classes to train its "
            "feature classifier on (every label is 0); use eval.features=inception"
        )


def describe_training(plan: TrainingPlan, config: str | Path | None = None) -> str:
    """The first line of ``snngen train``: what is trained, on what data, for how long, where,
    and the run folder, e.g. ``snngen: training sae (configs/sae_mnist5k.yaml, 1.1M parameters)
    on mnist5k (4,500 train / 500 test images, 32x32x1); 700 steps of batch 64 (10 epochs) on
    cpu; run folder runs/sae_mnist5k``."""
    cfg, info = plan.cfg, plan.info
    t = cfg.trainer
    world = _expected_world_size(cfg)
    n_train, n_test = len(plan.train_set), len(plan.test_set)
    params = sum(p.numel() for p in plan.model.parameters())
    what = f"{cfg.model.name} ({config}, {_count(params)} parameters)" if config else (
        f"{cfg.model.name} ({_count(params)} parameters)")
    if info.events:
        shape = f"{info.time_bins or '?'} frames of 2x{info.image_size}x{info.image_size}"
        items = "event streams"
    else:
        shape = f"{info.image_size}x{info.image_size}x{info.channels}"
        items = "images"
    data = f"{cfg.data.name} ({n_train:,} train / {n_test:,} test {items}, {shape})"

    steps = total_steps(cfg, n_train, world)
    batch = f"batch {cfg.data.batch_size}" + (f" per device x {world}" if world > 1 else "")
    if steps >= UNLIMITED_STEPS:
        budget = f"as many steps of {batch} as {t.max_cpu_minutes:g} CPU minutes allow"
    else:
        epochs = steps / steps_per_epoch(n_train, cfg.data.batch_size, world)
        budget = f"{steps:,} steps of {batch} ({epochs:.3g} epochs)"
        if t.max_cpu_minutes is not None:
            budget += f" or {t.max_cpu_minutes:g} CPU minutes, whichever ends first"
    where = _device(t.accelerator, world)
    if t.precision not in ("32-true", "32"):
        where += f", {t.precision}"
    verb = "training"
    if plan.resume:
        verb = f"continuing to train (from step {plan.start_step:,})"
    return (f"snngen: {verb} {what} on {data}; {budget} on {where}; "
            f"run folder {plan.run_dir}")


def _count(n: int) -> str:
    """``1234567`` -> ``1.2M``; ``45600`` -> ``45.6k``."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return str(n)


def _device(accelerator: str, world: int) -> str:
    """The device(s) training runs on, in words (``cpu``, ``cuda``, ``2 x cuda``)."""
    kind = accelerator
    if accelerator in ("auto", "gpu"):
        import torch

        kind = "cuda" if torch.cuda.is_available() else (
            "cpu" if accelerator == "auto" else "gpu")
    return kind if world == 1 else f"{world} x {kind} processes"
