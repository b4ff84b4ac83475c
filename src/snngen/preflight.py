"""Validate a training command completely before it writes anything.

:func:`prepare_training` resolves and checks, in order: the config (every value's type and
range), the hardware it asks for, the data set (found, non-empty, at least one global batch),
the model build, the resume target (same model, readable checkpoint that fits), the evaluation
to run at the end (metrics available for the chosen features), and the output folder (writable,
room for one checkpoint). Any problem is a one-line :class:`~snngen.errors.SnngenError` and the
file system is exactly as before; only then does ``snngen train`` create or touch the run folder.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from snngen.config import RunConfig, device_list, load_config
from snngen.errors import ConfigError, SnngenError
from snngen.files import check_writable_folder
from snngen.models import DataInfo, GenerativeModel
from snngen.train import seed_run

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


def prepare_training(
    config: str | Path,
    overrides: list[str] | None = None,
    resume: str | Path | None = None,
    evaluate: bool = True,
    run_dir: Path | None = None,
) -> TrainingPlan:
    """Return the checked :class:`TrainingPlan` of ``snngen train CONFIG [overrides]``.

    ``resume``: the run folder to continue; ``evaluate``: whether the end-of-run evaluation will
    run (then it is checked too); ``run_dir``: a folder fixed by the caller (DDP children).
    Raises :class:`SnngenError` naming the first bad value or file; writes nothing.
    """
    from snngen.data.augment import augmented
    from snngen.runs import (
        build_checked_model,
        check_run_dir,
        data_info,
        new_run_dir,
        open_datasets,
    )

    cfg = load_config(config, overrides)
    check_hardware(cfg)
    train_set, test_set = open_datasets(cfg)
    check_data(cfg, train_set, test_set)
    train_set = augmented(train_set, cfg.data.augment)
    info = data_info(train_set)
    fixed = fixed_test_batch(test_set)
    if resume:
        run_dir = check_run_dir(resume)
        if getattr(cfg.model, "init_from", None):  # the checkpoint has the weights
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_from=None))
    seed_run(cfg)  # the model is built once, here, with the seed's initial weights
    model = build_checked_model(cfg.model, info)
    if resume:
        check_resume_target(run_dir, cfg, info, model)
    if evaluate:
        check_evaluation(cfg, model)
    if run_dir is None:
        run_dir = new_run_dir(cfg)
    params = sum(p.numel() for p in model.parameters())
    check_writable_folder(
        run_dir, params * CKPT_BYTES_PER_PARAM + CKPT_HEADROOM_BYTES, what="run"
    )
    return TrainingPlan(cfg, Path(run_dir), train_set, test_set, info, fixed, model, bool(resume))


def fixed_test_batch(test_set: Dataset, n: int = 8) -> Tensor:
    """Return the model input of the first ``n`` test items (images ``[n, C, H, W]``, events
    ``[T, n, 2, H, W]``): the fixed batch of the per-epoch reconstruction grids."""
    from snngen.train import batch_to_input

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
    if t.precision in ("16-mixed", "16", "16-true") and not on_gpu:
        raise ConfigError(
            f"trainer.precision={t.precision}: float16 needs a GPU; on CPU use 32-true or "
            "bf16-mixed"
        )


def check_data(cfg: RunConfig, train_set: Dataset, test_set: Dataset) -> None:
    """Refuse empty splits and a training split smaller than one global batch."""
    from snngen.train import _expected_world_size

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


def check_resume_target(
    run_dir: Path, cfg: RunConfig, info: DataInfo, model: GenerativeModel
) -> None:
    """Refuse a run to resume whose checkpoint is unreadable, of another model or data shape,
    or does not fit the model the config builds."""
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
    if not isinstance(meta.get("batches_seen"), int) or not isinstance(meta.get("rng"), dict):
        raise SnngenError(f"cannot resume {run_dir}: {ckpt_file} has no training state")
    load_model_weights(  # overwritten again by Lightning's restore
        model, ckpt["state_dict"], ema=False,
        problem=f"cannot resume {run_dir}: its checkpoint does not fit the config's model",
    )
    if not isinstance(ckpt.get("optimizer_states"), list) or not isinstance(
        ckpt.get("loops"), dict
    ):
        raise SnngenError(f"cannot resume {run_dir}: {ckpt_file} has no optimiser state")


def check_evaluation(cfg: RunConfig, model: GenerativeModel) -> None:
    """Refuse an end-of-run evaluation that would fail after training
    (:func:`snngen.evaluation.check_evaluation_request` on the ``eval`` section)."""
    from snngen.evaluation import check_evaluation_request

    e = cfg.eval
    check_evaluation_request(
        e.metrics, e.n_samples, e.features, model,
        metrics_flag="eval.metrics", n_flag="eval.n_samples", features_flag="eval.features",
    )
