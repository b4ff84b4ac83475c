"""Run folders: create one for training, open one for sampling, evaluation and info.

A run folder holds ``config.yaml`` (the resolved config), ``checkpoints/last.ckpt``,
``logs/`` (CSV and TensorBoard), ``grids/`` (per-epoch reconstructions), ``samples.png``,
``recon.png``, ``metrics.json`` (every evaluation's results, :mod:`snngen.results`) and
``samples/`` (evaluation shards per protocol and sampler; ``snngen sample``'s grids).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from snngen.config import MAX_IMAGE_SIZE, RunConfig, load_config
from snngen.errors import ConfigError, SnngenError
from snngen.files import CheckpointError, is_state_dict, load_checkpoint
from snngen.models import DataInfo, GenerativeModel, build_model, get_model_entry

CONFIG_FILE = "config.yaml"
#: a run's checkpoints: RUN/checkpoints/last.ckpt (and the CPU-budget snapshots beside it)
CKPT_DIR = "checkpoints"
LAST_CKPT = "last.ckpt"


def new_run_dir(cfg: RunConfig) -> Path:
    """Return a fresh run folder path ``out_dir/<name>`` (not created); never an existing one."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.out_dir) / (cfg.name or f"{cfg.model.name}_{cfg.data.name}_{stamp}")
    path, i = base, 1
    while path.exists():
        path, i = base.with_name(f"{base.name}-{i}"), i + 1
    return path


def open_datasets(cfg: RunConfig) -> tuple[Dataset, Dataset]:
    """Return the (train, test) datasets of a run config.

    ``data.download``: missing files are fetched first; ``data.verify``: the files are then
    checked against the published table (hashed once, cached in the data root).
    """
    from snngen.data import get_dataset, verify_dataset

    d = cfg.data
    train = get_dataset(d.name, root=d.root, split="train", image_size=d.image_size,
                        download=d.download, **d.options)
    test = get_dataset(d.name, root=d.root, split="test", image_size=d.image_size, **d.options)
    if d.verify:
        verify_dataset(d.name, d.root)
    return train, test


def data_info(dataset: Dataset) -> DataInfo:
    """Return the :class:`DataInfo` of a dataset, read off its first item."""
    x = dataset[0][0]
    if x.dim() == 4:  # events [T, 2, H, W]
        return DataInfo(
            channels=x.shape[1], image_size=x.shape[-1], events=True, time_bins=x.shape[0]
        )
    return DataInfo(channels=x.shape[0], image_size=x.shape[-1])


@dataclass
class Run:
    """An opened run folder: its config, data info, model (eval mode) and checkpoint metadata."""

    path: Path
    cfg: RunConfig
    info: DataInfo
    model: GenerativeModel
    meta: dict
    #: the end-of-run metrics (``metrics.json``) when :func:`snngen.train` evaluated the run
    metrics: dict | None = None


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CKPT_DIR / LAST_CKPT


def check_run_dir(run_dir: str | Path) -> Path:
    """Return ``run_dir`` as a Path; ``SnngenError`` unless it holds a config and a checkpoint."""
    path = Path(run_dir)
    if not (path / CONFIG_FILE).is_file():
        raise SnngenError(f"{path} is not a snngen run folder (no {CONFIG_FILE} in it)")
    if not checkpoint_path(path).is_file():
        raise SnngenError(f"run folder {path} has no checkpoint at {CKPT_DIR}/{LAST_CKPT}")
    return path


def read_checkpoint(ckpt_file: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Return a snngen training checkpoint, loaded as data only and checked for its layout.

    The dict has ``state_dict`` (``{str: Tensor}``) and ``snngen`` metadata with ``model_name``
    and ``data_info``. Raises :class:`~snngen.files.CheckpointError` (one line naming the file)
    if the file is unreadable, unsafe, or not a snngen checkpoint.
    """
    ckpt = load_checkpoint(ckpt_file, map_location=map_location)
    meta = ckpt.get("snngen")
    problem = None
    if not isinstance(meta, dict):
        problem = "no 'snngen' metadata: not written by snngen"
    elif not isinstance(meta.get("model_name"), str):
        problem = "its metadata has no model_name"
    elif not _valid_data_info(meta.get("data_info")):
        problem = "its metadata has no valid data_info"
    elif not is_state_dict(ckpt.get("state_dict")):
        problem = "it has no state_dict of named tensors"
    if problem:
        raise CheckpointError(f"{ckpt_file} is not a valid snngen checkpoint ({problem})")
    return ckpt


def _valid_data_info(raw) -> bool:
    if not isinstance(raw, dict) or set(raw) != {f.name for f in dataclasses.fields(DataInfo)}:
        return False
    def whole(v, high: int) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= high

    return (
        whole(raw["channels"], MAX_CHANNELS)
        and whole(raw["image_size"], MAX_IMAGE_SIZE)
        and isinstance(raw["events"], bool)
        and (raw["time_bins"] is None or whole(raw["time_bins"], MAX_TIME_BINS))
    )


#: bounds on a checkpoint's data_info (a model is built from it before any weight is read)
MAX_CHANNELS = 64
MAX_TIME_BINS = 100_000


def load_run(
    run_dir: str | Path,
    map_location: str | torch.device = "cpu",
    ema: bool = True,
    checkpoint: str | None = None,
) -> Run:
    """Open a run folder and return its model with the checkpoint's weights (EMA ones if any).

    ``checkpoint``: the file name of another checkpoint in ``RUN/checkpoints/`` to read instead
    of ``last.ckpt`` (e.g. a CPU-budget snapshot ``cpu_1_of_4.ckpt``).

    The checkpoint is loaded as data only (``weights_only``): a file that would run code is
    refused. Raises :class:`SnngenError` if the folder is not a run, the checkpoint is not a valid
    snngen checkpoint, or it belongs to another model than the run's config names.
    """
    path = check_run_dir(run_dir)
    cfg = load_config(path / CONFIG_FILE, check_eval=False)  # its eval is chosen per command
    ckpt_file = checkpoint_path(path)
    if checkpoint is not None:
        if Path(checkpoint).name != checkpoint:
            raise SnngenError(f"checkpoint {checkpoint!r}: give a file name in {ckpt_file.parent}")
        ckpt_file = ckpt_file.parent / checkpoint
        if not ckpt_file.is_file():
            raise SnngenError(f"run folder {path} has no checkpoint {CKPT_DIR}/{checkpoint}")
    ckpt = read_checkpoint(ckpt_file, map_location=map_location)
    meta = ckpt["snngen"]
    if meta["model_name"] != cfg.model.name:
        raise SnngenError(
            f"checkpoint {ckpt_file} belongs to model {meta['model_name']!r}, but the run's "
            f"config names model {cfg.model.name!r}"
        )
    info = DataInfo(**meta["data_info"])
    model_cfg = cfg.model
    if getattr(model_cfg, "init_from", None):  # the checkpoint holds the weights: inherit nothing
        model_cfg = dataclasses.replace(model_cfg, init_from=None)
    model = build_checked_model(model_cfg, info)
    load_model_weights(model, ckpt["state_dict"], ema=ema,
                       problem=f"checkpoint {ckpt_file} does not fit model {cfg.model.name!r}")
    model.eval()
    return Run(path=path, cfg=cfg, info=info, model=model, meta=meta)


def model_weights(state: dict, ema: bool = True) -> dict:
    """Return the model's own weights from a training checkpoint's ``state_dict``: the EMA
    copy (``ema.model.<key>``) when ``ema`` and present, else the trained ``model.<key>``."""
    prefix = "ema.model." if ema and any(k.startswith("ema.model.") for k in state) else "model."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_model_weights(model: GenerativeModel, state: dict, *, ema: bool, problem: str) -> None:
    """Load :func:`model_weights` of a checkpoint's ``state_dict`` into ``model``; a missing,
    unexpected or mis-shaped key is a one-line :class:`SnngenError`: ``problem (first reason)``."""
    try:
        model.load_state_dict(model_weights(state, ema=ema))
    except RuntimeError as err:
        first = " ".join(str(err).split())[:300]
        raise SnngenError(f"{problem} ({first})") from None


def build_checked_model(model_cfg, info: DataInfo) -> GenerativeModel:
    """Build a model; a config the model cannot be built from is a one-line ConfigError.

    Config values pass their type and range checks one by one, but some combinations only fail
    when the layers are made (an image size the down-sampling cannot divide, widths that do not
    fit together); those become ``model: cannot build ...`` instead of a traceback.
    """
    parts = load_model_parts(model_cfg)
    try:
        return build_model(model_cfg, info, **parts)
    except SnngenError:
        raise
    except (ValueError, TypeError, RuntimeError, ZeroDivisionError, IndexError, KeyError,
            AssertionError, OverflowError, MemoryError) as err:
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        raise ConfigError(
            f"model: cannot build {model_cfg.name!r} for {info.channels}-channel "
            f"{info.image_size}px data with this config ({type(err).__name__}: {reason})"
        ) from None


def attach_training_set(run: Run) -> None:
    """Give a diffusion model its run's training set (opened only if Analytic-DPM's Gamma needs
    it: the reference estimates Gamma on the full training set)."""
    if hasattr(run.model, "set_gamma_data"):
        run.model.set_gamma_data(functools.partial(_training_set, run.cfg))


def _training_set(cfg) -> Dataset:
    """The training set of a run config (a module-level function: a model holding it pickles)."""
    return open_datasets(cfg)[0]


def read_weights_source(source: str | Path) -> dict:
    """The content of a checkpoint file, or of a run folder's ``checkpoints/last.ckpt``, read
    as data only (a file that would run code is refused); a one-line error if there is none."""
    path = Path(source)
    if path.is_dir():
        path = checkpoint_path(path)
    if not path.is_file():
        raise SnngenError(f"cannot inherit weights: no checkpoint at {path}")
    return load_checkpoint(path)


def load_model_parts(model_cfg) -> dict:
    """Load the parts a model is built with from the run folders its config names
    (:class:`~snngen.models.base.RunPart`): the keyword arguments of its constructor. A part
    that cannot be loaded is a one-line error naming the config key (``model.<field>``)."""
    parts = {}
    for part in get_model_entry(model_cfg.name).model_cls.run_parts:
        ref = getattr(model_cfg, part.field, None)
        if not ref:
            continue
        try:
            if part.kind == "model":
                ema = bool(getattr(model_cfg, part.ema_field)) if part.ema_field else True
                parts[part.keyword] = load_run(ref, ema=ema).model
            else:
                parts[part.keyword] = read_weights_source(ref)
        except SnngenError as err:
            raise SnngenError(f"model.{part.field} {ref}: {err}") from None
    return parts
