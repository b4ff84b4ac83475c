"""The training harness shared by every model: one Lightning module, one Trainer set-up.

* Data order is a pure function of ``(seed, batch number)`` (:class:`StepBatchSampler`), and
  the batch counter, optimiser state, EMA weights and RNG states are in every checkpoint, so
  ``N steps + resume + N steps`` gives the same weights as ``2N steps``.
* Checkpoints are written atomically (temporary file, fsync, rename: :mod:`snngen.files`) every
  ``trainer.ckpt_every_n_steps`` steps and at the end, to ``checkpoints/last.ckpt``, and read
  back as data only (``weights_only``) on resume: :class:`SafeCheckpointIO`.
* A non-finite loss stops training before the optimiser step with :class:`NonFiniteLossError`;
  the message says which checkpoint is kept (or that none was written yet), and the metrics
  logged so far are flushed to the CSV log.
* Ctrl-C lets the running optimiser step finish, writes ``last.ckpt`` there and raises
  :class:`TrainingInterrupted` (a KeyboardInterrupt saying where to continue from); a second
  Ctrl-C stops at once (:class:`GracefulInterrupt`).
* The same code path runs on CPU or GPU, one device or DDP (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import copy
import math
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from snngen.config import RunConfig, to_dict
from snngen.errors import SnngenError
from snngen.files import load_checkpoint, save_torch
from snngen.models import DataInfo, GenerativeModel, build_model
from snngen.runs import CKPT_DIR, LAST_CKPT, load_model_parts
from snngen.spiking.checkpointing import enable_activation_checkpointing

#: the clock of ``trainer.max_cpu_minutes``: CPU time of this process, every thread (seconds)
cpu_clock = time.process_time


class NonFiniteLossError(SnngenError):
    """The loss became NaN or infinite; training stopped before corrupting the weights."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C (SIGINT); the message says at which step, which checkpoint is
    kept and how to continue. A :class:`KeyboardInterrupt`, so code that stops on Ctrl-C still
    does; ``step``: optimiser steps done, ``saved_step``: the step of ``last.ckpt`` (None: none).
    """

    def __init__(self, step: int, saved_step: int | None, run_dir: Path) -> None:
        if saved_step is None:
            kept = "no checkpoint was written yet; start again with snngen train"
        else:
            kept = (f"last checkpoint at step {saved_step}; continue with "
                    f"snngen train --resume {run_dir}")
        super().__init__(f"stopped at step {step}; {kept}")
        self.step, self.saved_step, self.run_dir = step, saved_step, Path(run_dir)


# ----------------------------------------------------------------------------- data order


class StepBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Infinite batches of indices; batch ``k`` depends only on ``(seed, k)``.

    Epoch ``e = k // steps_per_epoch`` uses the permutation ``randperm(n, seed + e)``; with
    ``world_size`` ranks each global batch of ``batch_size * world_size`` indices is split into
    contiguous per-rank slices. Iteration starts at batch ``start`` (set on resume).
    """

    def __init__(
        self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0
    ) -> None:
        if n < batch_size * world_size:
            raise SnngenError(
                f"dataset has {n} items, fewer than one global batch "
                f"({batch_size} x {world_size} devices); lower data.batch_size"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.start = rank, world_size, start

    @property
    def steps_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world_size)

    def batch_indices(self, k: int) -> list[int]:
        """Return this rank's indices of global batch ``k``."""
        epoch, j = divmod(k, self.steps_per_epoch)
        gen = torch.Generator().manual_seed(self.seed + epoch)
        perm = torch.randperm(self.n, generator=gen)
        begin = (j * self.world_size + self.rank) * self.batch_size
        return perm[begin : begin + self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        k = self.start
        while True:
            yield self.batch_indices(k)
            k += 1


def steps_per_epoch(n_items: int, batch_size: int, world_size: int) -> int:
    """Return the number of optimiser steps in one pass over ``n_items``."""
    return max(1, n_items // (batch_size * world_size))


#: the step budget of a run limited by CPU time alone (``max_cpu_minutes``, no step count)
UNLIMITED_STEPS = 2**62


def total_steps(cfg: RunConfig, n_items: int, world_size: int) -> int:
    """Return the run's step budget: ``trainer.max_steps`` or epochs x steps per epoch
    (:data:`UNLIMITED_STEPS` when only ``trainer.max_cpu_minutes`` bounds the run)."""
    if cfg.trainer.max_steps is not None:
        return cfg.trainer.max_steps
    if cfg.trainer.max_epochs is None:
        if cfg.trainer.max_cpu_minutes is not None:
            return UNLIMITED_STEPS
        raise SnngenError("set trainer.max_steps or trainer.max_epochs")
    spe = steps_per_epoch(n_items, cfg.data.batch_size, world_size)
    return max(1, math.ceil(cfg.trainer.max_epochs * spe))


def batch_to_input(batch) -> Tensor:
    """Return the model input of a loader batch: images ``[B, C, H, W]`` or events ``[T, B, ...]``.

    Labels are dropped; event batches ``[B, T, 2, H, W]`` are made time-first.
    """
    x = batch[0] if isinstance(batch, (list, tuple)) else batch
    if x.dim() == 5:
        x = x.transpose(0, 1).contiguous()
    return x


# ----------------------------------------------------------------------------- module


class EMA(nn.Module):
    """Exponential moving average of a model's parameters (buffers copied as they are).

    Update ``k`` (1-based, counted in the ``num_updates`` buffer, so it is in every checkpoint
    and resumes exactly) sets ``ema = d_k * ema + (1 - d_k) * weights`` with ``d_k`` =
    :meth:`decay_at` of ``k``: ``decay`` at every step, or with ``warmup`` the ramp of diffusers'
    ``EMAModel`` (``use_ema_warmup``, ``inv_gamma``, ``power``), capped at ``decay``.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False,
                 inv_gamma: float = 1.0, power: float = 2 / 3) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise SnngenError(f"trainer.ema_decay must be in (0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.inv_gamma, self.power = inv_gamma, power
        self.model = copy.deepcopy(model).requires_grad_(False).eval()
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))

    def decay_at(self, k: int) -> float:
        """The decay of update ``k`` (1-based). With warm-up, diffusers' ``EMAModel.get_decay``
        (src/diffusers/training_utils.py; ``step`` is incremented before the call, and
        ``update_after_step`` is 0): ``t = k - 1``; ``0`` at ``t = 0`` (the first update copies
        the weights), else ``min(decay, 1 - (1 + t / inv_gamma) ** -power)``."""
        if not self.warmup:
            return self.decay
        t = k - 1
        if t <= 0:
            return 0.0
        return min(self.decay, 1.0 - (1.0 + t / self.inv_gamma) ** -self.power)

    @torch.no_grad()
    def update(self, model: nn.Module, k: int | None = None) -> None:
        """Update ``k`` (default: ``num_updates + 1``; the trainer passes its step count, so no
        GPU-to-CPU read of the count happens per step) towards ``model``'s weights."""
        k = int(self.num_updates) + 1 if k is None else k
        self.num_updates.fill_(k)
        weight = 1.0 - self.decay_at(k)
        for e, p in zip(self.model.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), weight)
        for e, b in zip(self.model.buffers(), model.buffers(), strict=True):
            e.copy_(b)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # checkpoints written before the count existed had no warm-up: the count is unused
        state_dict.setdefault(prefix + "num_updates", self.num_updates.clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def switch_on_checkpointing(model: nn.Module, name: str) -> None:
    """``trainer.checkpoint_activations``: checkpoint every block of ``model`` that can be
    (:func:`snngen.spiking.checkpointing.enable_activation_checkpointing`); a warning when it
    has none (the model then trains as without the switch)."""
    if not enable_activation_checkpointing(model):
        warnings.warn(
            f"trainer.checkpoint_activations: model {name!r} has no blocks that can be "
            "checkpointed; it trains without activation checkpointing", stacklevel=3,
        )


class LitGenerative(L.LightningModule):
    """Lightning wrapper of any :class:`GenerativeModel` (manual optimisation, one optimiser
    per entry of ``model.optimizer_groups()``)."""

    def __init__(self, cfg: RunConfig, info: DataInfo, model: GenerativeModel | None = None):
        super().__init__()
        self.automatic_optimization = False
        self.cfg, self.info = cfg, info
        if model is None:
            model = build_model(cfg.model, info, **load_model_parts(cfg.model))
        self.model = model
        if cfg.trainer.checkpoint_activations:
            switch_on_checkpointing(self.model, cfg.model.name)
        t = cfg.trainer
        self.ema = EMA(self.model, t.ema_decay, t.ema_warmup, t.ema_inv_gamma,
                       t.ema_power) if t.ema_decay else None
        self.batches_seen = 0
        self.max_batches = 0  # set by fit()
        self.steps_per_epoch = 1  # set by fit(): the ``epoch`` column of metrics.csv
        self.resumed_step: int | None = None  # the checkpoint's step, when resumed
        # CPU seconds (process time, every thread) spent training so far, across resumes
        self.cpu_seconds = 0.0
        self._cpu_mark: float | None = None
        self.train_set: Dataset | None = None
        self._rng_to_restore: dict | None = None

    @property
    def eval_model(self) -> GenerativeModel:
        """The model to sample and evaluate with: the EMA copy when there is one."""
        return self.ema.model if self.ema is not None else self.model

    # -- optimisers
    def configure_optimizers(self):
        """One optimiser per entry of ``model.optimizer_groups()`` (with ``optim.
        no_decay_bias_norm``, each split by :func:`no_decay_groups`), and, when ``optim`` asks
        for a warm-up or a cosine, one :func:`make_scheduler` per optimiser: Lightning keeps
        their states in every checkpoint; :meth:`training_step` steps them."""
        groups = param_groups(self.cfg, self.model)
        overrides = self.model.optimizer_overrides()
        self._group_names = list(groups)
        opts = [
            make_optimizer(self.cfg, groups[k], overrides.get(k, {}), self._world()) for k in groups
        ]
        if not has_schedule(self.cfg):
            return opts
        return opts, [make_scheduler(self.cfg, opt, self.max_batches) for opt in opts]

    def _world(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    # -- data
    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        sampler = StepBatchSampler(
            len(self.train_set),
            self.cfg.data.batch_size,
            self.cfg.trainer.seed,
            rank=self.global_rank,
            world_size=self.trainer.world_size,
            start=self.batches_seen,
        )
        return DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=self.cfg.data.num_workers,
            persistent_workers=self.cfg.data.num_workers > 0,
        )

    # -- training
    @property
    def cpu_budget_seconds(self) -> float | None:
        """``trainer.max_cpu_minutes`` in seconds (None: no CPU-time limit)."""
        m = self.cfg.trainer.max_cpu_minutes
        return None if m is None else 60.0 * m

    @property
    def finished(self) -> bool:
        """Whether the run has used its step budget or its CPU-time budget."""
        budget = self.cpu_budget_seconds
        return self.batches_seen >= self.max_batches or (
            budget is not None and self.cpu_seconds >= budget
        )

    def _count_cpu(self) -> None:
        now = cpu_clock()
        if self._cpu_mark is not None:
            self.cpu_seconds += now - self._cpu_mark
        self._cpu_mark = now

    def on_train_start(self) -> None:
        self._cpu_mark = cpu_clock()
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        if self.finished:  # resumed at (or past) its budget: not one more step
            self.trainer.should_stop = True

    def training_step(self, batch, batch_idx: int) -> None:
        x = batch_to_input(batch)
        losses = self.model.loss(x)
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        for name in self._group_names:
            value = losses[name]
            if not torch.isfinite(value.detach()).all():
                self._log_nonfinite(losses)
                raise NonFiniteLossError(
                    f"non-finite loss {name}={value.item()} at step {self.batches_seen + 1}; "
                    "training stopped before the optimiser step"
                )
        for name, opt in zip(self._group_names, opts, strict=True):
            opt.zero_grad(set_to_none=True)
            self.manual_backward(losses[name], retain_graph=name != self._group_names[-1])
            if self.cfg.trainer.grad_clip:
                self.clip_gradients(opt, self.cfg.trainer.grad_clip, "norm")
            opt.step()
        if has_schedule(self.cfg):
            scheds = self.lr_schedulers()
            for sched in scheds if isinstance(scheds, list) else [scheds]:
                sched.step()  # manual optimisation: Lightning steps none
            self.log("train/lr", opts[0].param_groups[0]["lr"], batch_size=1)
        if self.ema is not None:
            self.ema.update(self.model, self.batches_seen + 1)  # update k = optimiser step k
        self.batches_seen += 1
        self._count_cpu()  # before the callbacks look at the budget
        bs = x.shape[1] if x.dim() == 5 else x.shape[0]
        self.log_dict(
            {f"train/{k}": v.detach().float() for k, v in losses.items() if v.dim() == 0},
            prog_bar=False,
            batch_size=bs,
        )
        self.log(
            "loss", losses["loss"].detach().float(), prog_bar=True, logger=False, batch_size=bs
        )
        # Lightning's own epoch counter stays 0 (one endless loader); the epoch of this step,
        # counted from 0 as Lightning counts
        epoch = (self.batches_seen - 1) // max(1, self.steps_per_epoch)
        self.log("epoch", float(epoch), batch_size=bs)

    def _log_nonfinite(self, losses: dict[str, Tensor]) -> None:
        """Write the failing step's losses straight to the loggers (Lightning logs only every
        ``log_every_n_steps``), so the CSV log shows where training went wrong."""
        row = {f"train/{k}": float(v.detach().float()) for k, v in losses.items() if v.dim() == 0}
        for logger in self.loggers:
            logger.log_metrics(row, step=self.batches_seen)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.finished:
            self.trainer.should_stop = True

    # -- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["snngen"] = {
            "model_name": self.model.name,
            "batches_seen": self.batches_seen,
            "cpu_seconds": self.cpu_seconds,
            "world_size": self.trainer.world_size,
            "rng": get_rng_state(),
            "config": to_dict(self.cfg),
            "data_info": vars(self.info)
            if not hasattr(self.info, "__dataclass_fields__")
            else {k: getattr(self.info, k) for k in self.info.__dataclass_fields__},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get("snngen")
        if meta is None:
            raise SnngenError("checkpoint was not written by snngen (no 'snngen' entry)")
        if meta["model_name"] != self.model.name:
            raise SnngenError(
                f"checkpoint belongs to model {meta['model_name']!r}, not {self.model.name!r}"
            )
        self.batches_seen = self.resumed_step = int(meta["batches_seen"])
        self.cpu_seconds = float(meta.get("cpu_seconds", 0.0))
        self._rng_to_restore = meta["rng"]


def make_optimizer(cfg: RunConfig, params, override: dict, world: int) -> torch.optim.Optimizer:
    """Return the optimiser of ``cfg.optim`` (with ``override`` keys applied) over ``params``.

    With ``optim.lr_reference_batch`` set, lr is scaled by ``batch_size * world / reference``.
    """
    o = {**to_dict(cfg.optim), **override}
    lr = o["lr"]
    if o.get("lr_reference_batch"):
        lr = lr * cfg.data.batch_size * world / o["lr_reference_batch"]
    if o["name"] == "adam":
        return torch.optim.Adam(
            params, lr=lr, betas=tuple(o["betas"]), weight_decay=o["weight_decay"]
        )
    if o["name"] == "adamw":
        return torch.optim.AdamW(
            params, lr=lr, betas=tuple(o["betas"]), weight_decay=o["weight_decay"]
        )
    if o["name"] == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=o["betas"][0], weight_decay=o["weight_decay"]
        )
    raise SnngenError(f"optim.name: unknown optimiser {o['name']!r}; expected adam, adamw or sgd")


def no_decay_groups(params: list, module: nn.Module) -> list[dict]:
    """Split an optimiser's parameters (a list of tensors, or of param-group dicts) as
    nanoGPT's ``configure_optimizers``: a tensor with fewer than 2 dimensions (biases, norm
    weights, neuron constants) or the weight of an ``nn.Embedding`` of ``module`` (minGPT's
    rule; nanoGPT decays embeddings) gets ``weight_decay`` 0; the rest keep their group's decay.
    Each group gives its decay group, then its no-decay group (an empty one is left out)."""
    embeddings = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}

    def decays(p: Tensor) -> bool:
        return p.dim() >= 2 and id(p) not in embeddings

    groups = params if params and isinstance(params[0], dict) else [{"params": list(params)}]
    out = []
    for g in groups:
        keep = [p for p in g["params"] if decays(p)]
        free = [p for p in g["params"] if not decays(p)]
        out += [{**g, "params": keep}] if keep else []
        out += [{**g, "params": free, "weight_decay": 0.0}] if free else []
    return out


def param_groups(cfg: RunConfig, model: GenerativeModel) -> dict[str, list]:
    """``model.optimizer_groups()``, each split by :func:`no_decay_groups` with
    ``optim.no_decay_bias_norm``: what each optimiser is made over."""
    groups = model.optimizer_groups()
    if cfg.optim.no_decay_bias_norm:
        groups = {k: no_decay_groups(v, model) for k, v in groups.items()}
    return groups


def has_schedule(cfg: RunConfig) -> bool:
    """Whether ``cfg.optim`` changes lr over the steps (a warm-up or a cosine)."""
    return cfg.optim.schedule != "constant" or cfg.optim.warmup_steps > 0


def lr_factor(step: int, *, schedule: str, warmup: int, horizon: int, floor: float) -> float:
    """lr of optimiser step ``step`` (0-based: the ``step + 1``-th update) over the base lr.

    Warm-up: ``(step + 1) / warmup`` for ``step < warmup`` (no step at lr 0, and the last
    warm-up step at lr; nanoGPT's ``train.py get_lr`` uses ``(it + 1) / (warmup_iters + 1)``).
    Then ``constant``: 1; ``cosine``: ``floor + (1 - floor) * (1 + cos(pi * p)) / 2`` with
    ``p = (step - warmup) / (horizon - warmup)`` clipped to [0, 1] (nanoGPT's cosine with
    ``lr_decay_iters = horizon``): 1 at the end of the warm-up, ``floor`` (``min_lr / lr``)
    from step ``horizon`` on, so the run's last step is just above it."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    p = min(1.0, (step - warmup) / max(1, horizon - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))


def make_scheduler(cfg: RunConfig, opt: torch.optim.Optimizer, horizon: int):
    """A ``LambdaLR`` of :func:`lr_factor` on every param group of ``opt`` (``horizon``: the
    run's step budget, :func:`total_steps`). Its state (``last_epoch`` = steps taken) is in
    every checkpoint; the schedule itself comes from the config."""
    o = cfg.optim
    if o.schedule == "cosine" and horizon >= UNLIMITED_STEPS:
        raise SnngenError("optim.schedule: cosine needs trainer.max_steps or max_epochs")
    floor = o.min_lr / o.lr

    def factor(step: int) -> float:
        return lr_factor(step, schedule=o.schedule, warmup=o.warmup_steps, horizon=horizon,
                         floor=floor)

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def get_rng_state() -> dict:
    """Return the CPU (and CUDA, if used) RNG states."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore RNG states saved by :func:`get_rng_state`."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- callbacks


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, made safe: saves are atomic (:func:`snngen.files.save_torch`:
    temporary file, fsync, rename; a failed write leaves the previous file as it was) and loads
    are data only (:func:`snngen.files.load_checkpoint`, ``weights_only=True``)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        save_torch(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_checkpoint(path, map_location=map_location)


def snapshot_name(k: int, n: int) -> str:
    """File name (in ``checkpoints/``) of the snapshot at ``k / n`` of a CPU-time budget."""
    return f"cpu_{k}_of_{n}.ckpt"


class AtomicCheckpoint(L.Callback):
    """Write ``checkpoints/last.ckpt`` every ``every`` steps and at the end (atomically, through
    :class:`SafeCheckpointIO`); :attr:`saved_step` is the step of the newest one written.

    With ``snapshots = N`` (and a CPU-time budget) it also keeps ``checkpoints/cpu_K_of_N.ckpt``,
    written at the first step where the CPU time reaches ``K / N`` of the budget."""

    def __init__(self, run_dir: Path, every: int, snapshots: int = 0) -> None:
        self.path = Path(run_dir) / CKPT_DIR / LAST_CKPT
        self.every = max(1, every)
        self.snapshots = snapshots
        self.saved_step: int | None = None

    def _due_snapshots(self, pl_module: LitGenerative) -> list[Path]:
        budget = pl_module.cpu_budget_seconds
        if not self.snapshots or budget is None:
            return []
        n = self.snapshots
        return [
            p for k in range(1, n)
            if pl_module.cpu_seconds >= budget * k / n
            and not (p := self.path.parent / snapshot_name(k, n)).is_file()
        ]

    @staticmethod
    def write(trainer: L.Trainer, path: Path) -> None:
        """Write a resumable checkpoint to ``path``. This writes, it loads nothing: Lightning's
        ``weights_only=False`` asks it to include the optimiser, loop and RNG state (what exact
        resume needs); every read (resume: :class:`SafeCheckpointIO`; ``snngen.runs``) goes through
        :func:`snngen.files.load_checkpoint`, data only. Every rank calls it, rank 0 writes."""
        trainer.save_checkpoint(path, weights_only=False)

    def save(self, trainer: L.Trainer, step: int) -> None:
        self.write(trainer, self.path)
        self.saved_step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        k = pl_module.batches_seen
        for snap in self._due_snapshots(pl_module):
            self.write(trainer, snap)
        if k % self.every == 0 or pl_module.finished:
            self.save(trainer, k)


class GracefulInterrupt(L.Callback):
    """Ctrl-C (SIGINT) during training, made safe: the first one lets the running optimiser step
    finish, then ``last.ckpt`` is written (atomically, by ``saver``) and training stops at that
    step boundary; a second one interrupts at once (the newest checkpoint is kept).

    Use as a context manager around ``trainer.fit``: it installs the handler only in the main
    thread of a one-process run (under DDP each rank would stop at a step of its own, so there
    Ctrl-C interrupts at once, Lightning's way), and restores the handler found on entry on
    exit (Lightning leaves SIGINT ignored after an interrupt). :attr:`requested`: a Ctrl-C was
    deferred; :attr:`interrupted`: Lightning caught a KeyboardInterrupt (it then raises
    ``SystemExit(1)``, which :func:`fit` turns into :class:`TrainingInterrupted`)."""

    def __init__(self, saver: AtomicCheckpoint, world_size: int) -> None:
        self.saver, self.world_size = saver, world_size
        self.requested = self.interrupted = False
        self._previous = None

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            if self.world_size == 1:
                signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum, frame) -> None:
        if self.requested:  # pressed again: stop now
            raise KeyboardInterrupt
        self.requested = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.requested and not self.interrupted:
            k = pl_module.batches_seen
            if self.saver.saved_step != k:
                self.saver.save(trainer, k)
            trainer.should_stop = True

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.interrupted = True


class GridCallback(L.Callback):
    """Save reconstruction (and sample) grids of a fixed held-out batch once per epoch."""

    def __init__(self, run_dir: Path, fixed_batch: Tensor, steps_per_epoch: int) -> None:
        self.dir = Path(run_dir) / "grids"
        self.fixed = fixed_batch
        self.spe = steps_per_epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        k = pl_module.batches_seen
        if not trainer.is_global_zero or (k % self.spe and not pl_module.finished):
            return
        from snngen.report import save_grids

        epoch = math.ceil(k / self.spe)
        model = pl_module.eval_model
        was_training = model.training
        model.eval()
        save_grids(model, self.fixed.to(pl_module.device), self.dir, tag=f"epoch{epoch:03d}")
        model.train(was_training)


class StepProgressBar(L.pytorch.callbacks.ProgressBar):
    """The ``train`` bar: optimiser steps ``k / total`` (a resumed run starts at ``k``), time
    left, steps/s and the loss, drawn once per step by rank 0 (:func:`snngen.console.progress_bar`).

    It replaces Lightning's bars (``Training``, then ``Epoch N`` per epoch of a loader whose
    length Lightning cannot know) instead of relabelling them, so one bar is ever drawn.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self.bar = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module) -> None:
        from snngen.console import progress_bar

        total = pl_module.max_batches
        self.bar = progress_bar(
            desc="train", unit="step", total=total if total < UNLIMITED_STEPS else None,
            initial=pl_module.batches_seen, enabled=self._enabled, leave=True,
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.bar is None or self.bar.disable:
            return
        postfix = {}
        loss = trainer.progress_bar_metrics.get("loss")
        if loss is not None:
            postfix["loss"] = f"{float(loss):.4g}"
        budget = getattr(pl_module, "cpu_budget_seconds", None)
        if budget is not None:
            postfix["cpu"] = f"{pl_module.cpu_seconds / 60:.1f}/{budget / 60:g} min"
        self.bar.set_postfix(postfix, refresh=False)  # drawn by update(), once
        self.bar.update(pl_module.batches_seen - self.bar.n)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_train_end(self, trainer, pl_module) -> None:
        self._close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._close()  # the error message starts on a line of its own


# ----------------------------------------------------------------------------- fit


def make_trainer(cfg: RunConfig, run_dir: Path, callbacks: list[L.Callback]) -> L.Trainer:
    """Return the Lightning Trainer of a run (loggers: CSV and TensorBoard in ``run_dir/logs``)."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    t = cfg.trainer
    strategy = t.strategy
    if strategy == "ddp" and t.accelerator == "cpu":
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="gloo")
    # one new logs/version_N folder per fit() call, both loggers in it: resuming never
    # overwrites earlier logs
    csv_logger = CSVLogger(run_dir, name="logs")
    loggers = [
        csv_logger,
        TensorBoardLogger(run_dir, name="logs", version=csv_logger.version,
                          default_hp_metric=False),
    ]
    from snngen.console import configure_lightning

    configure_lightning()  # Lightning's banners and warnings only with --verbose
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=t.precision,
        max_epochs=-1,
        max_steps=-1,
        logger=loggers,
        callbacks=callbacks,
        plugins=[SafeCheckpointIO()],
        enable_checkpointing=False,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=t.log_every_n_steps,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        default_root_dir=run_dir,
    )


def seed_run(cfg: RunConfig) -> None:
    """Seed every RNG (torch, numpy, random, data-loader workers) with ``trainer.seed``; the
    model is built right after, so its initial weights depend on the seed alone."""
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)


def fit(
    cfg: RunConfig,
    run_dir: str | Path,
    train_set: Dataset,
    info: DataInfo,
    fixed_batch: Tensor | None = None,
    resume: bool = False,
    model: GenerativeModel | None = None,
) -> LitGenerative:
    """Train ``cfg``'s model in ``run_dir``; returns the trained Lightning module.

    ``resume=True`` continues from ``run_dir/checkpoints/last.ckpt`` up to the config's budget
    (a checkpoint already at the budget trains no further step).
    ``model``: the model of ``cfg.model``, built right after :func:`seed_run` (as
    :func:`snngen.preflight.prepare_training` does); by default it is seeded and built here.
    Raises :class:`NonFiniteLossError` saying which checkpoint is kept, or that none exists, and
    :class:`TrainingInterrupted` (a KeyboardInterrupt) on Ctrl-C (:class:`GracefulInterrupt`).
    """
    run_dir = Path(run_dir)
    (run_dir / CKPT_DIR).mkdir(parents=True, exist_ok=True)
    if model is None:
        seed_run(cfg)
    lit = LitGenerative(cfg, info, model=model)
    lit.train_set = train_set
    world = _expected_world_size(cfg)
    spe = lit.steps_per_epoch = steps_per_epoch(len(train_set), cfg.data.batch_size, world)
    lit.max_batches = total_steps(cfg, len(train_set), world)
    saver = AtomicCheckpoint(run_dir, cfg.trainer.ckpt_every_n_steps, cfg.trainer.cpu_snapshots)
    guard = GracefulInterrupt(saver, world)
    callbacks: list[L.Callback] = [saver, guard]
    if cfg.trainer.progress_bar:
        callbacks.append(StepProgressBar())
    if fixed_batch is not None and cfg.trainer.grids_every_epoch:
        callbacks.append(GridCallback(run_dir, fixed_batch, spe))
    trainer = make_trainer(cfg, run_dir, callbacks)
    ckpt = run_dir / CKPT_DIR / LAST_CKPT
    if resume and not ckpt.is_file():
        raise SnngenError(f"cannot resume: no checkpoint at {ckpt}")
    try:
        with guard:
            trainer.fit(lit, ckpt_path=str(ckpt) if resume else None, weights_only=True)
    except SystemExit:  # Lightning's answer to a KeyboardInterrupt it caught
        if not guard.interrupted:
            raise
    except NonFiniteLossError as err:
        if saver.saved_step is not None:
            kept = f"the last good checkpoint, {ckpt} (step {saver.saved_step}), is kept"
        elif resume:
            kept = f"the checkpoint it resumed from, {ckpt}, is kept"
        else:
            kept = (
                f"no checkpoint was written (the first was due at step {saver.every}); "
                f"logs are in {run_dir / 'logs'}"
            )
        raise NonFiniteLossError(f"{err}; {kept}") from None
    except Exception as err:  # e.g. DataLoader workers that the same Ctrl-C stopped
        if not guard.requested:
            raise
        raise _interrupted(lit, saver, run_dir) from err
    if guard.requested or guard.interrupted:
        raise _interrupted(lit, saver, run_dir) from None
    return lit


def _interrupted(lit: LitGenerative, saver: AtomicCheckpoint, run_dir: Path) -> TrainingInterrupted:
    """The :class:`TrainingInterrupted` of a run stopped by Ctrl-C: its step and newest
    checkpoint (written now, or the one it resumed from)."""
    saved = saver.saved_step if saver.saved_step is not None else lit.resumed_step
    return TrainingInterrupted(lit.batches_seen, saved, run_dir)


def _expected_world_size(cfg: RunConfig) -> int:
    d = cfg.trainer.devices
    n = d if isinstance(d, int) else (1 if d in ("auto", "1") else len(str(d).split(",")))
    return max(1, n) * cfg.trainer.num_nodes
