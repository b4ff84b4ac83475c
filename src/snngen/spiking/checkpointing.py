"""Activation checkpointing: blocks that recompute their activations in the backward pass.

Backpropagation through time keeps every layer's activations for all ``T`` steps, so training
memory grows with ``T``. A checkpointed block keeps only its inputs; the backward pass runs the
block's forward again to get the rest (``torch.utils.checkpoint.checkpoint`` with
``use_reentrant=False``), trading about one extra forward pass for memory.

A model marks its blocks by deriving them from :class:`CheckpointedBlock`, or by building a flat
``nn.Sequential`` of stages (e.g. conv, norm, neuron; conv, norm, neuron; ...) as a
:class:`StagedSequential`. Nothing changes until :func:`enable_activation_checkpointing` switches
them on; the training harness does it for ``trainer.checkpoint_activations: true``, so model
constructors and configs know nothing about it. A block runs checkpointed only while gradients
are enabled: sampling and evaluation (``no_grad`` / ``inference_mode``) run it plainly.

The recomputation gives the forward's own values, so gradients are those without
checkpointing:

* random draws inside a block (dropout) repeat: the RNG states of the CPU and of the inputs'
  CUDA devices are saved before the block and restored for the recomputation
  (``preserve_rng_state``, torch's default);
* buffers are not updated twice: a block's buffers (BatchNorm running statistics and their
  counters) are saved before the recomputation and put back after it;
* autocast (mixed precision) is re-entered as in the forward (torch's checkpoint does this);
* custom autograd functions (the fused LIF kernels) save their tensors with
  ``ctx.save_for_backward``, which the checkpoint's saved-tensor hooks see.

Forward hooks of a checkpointed block and of its submodules run again during the
recomputation: a :class:`~snngen.spiking.Monitor` attached while training with checkpointing
counts those calls twice.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "CheckpointedBlock",
    "StagedSequential",
    "checkpointed_blocks",
    "enable_activation_checkpointing",
    "run_checkpointed",
]


@contextlib.contextmanager
def _buffers_kept(modules: tuple[nn.Module, ...]) -> Iterator[None]:
    """Put the buffers of ``modules`` back to their values at entry when leaving."""
    saved = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def _contexts(modules: tuple[nn.Module, ...]) -> tuple[contextlib.AbstractContextManager, ...]:
    """The checkpoint's (forward, recomputation) contexts: nothing in the forward; buffers
    restored after the recomputation (it would update BatchNorm statistics a second time)."""
    return contextlib.nullcontext(), _buffers_kept(modules)


def run_checkpointed(fn: Callable[..., Any], modules: tuple[nn.Module, ...], *args: Any,
                     **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with its activations recomputed in the backward pass; the
    buffers of ``modules`` (those ``fn`` runs) are left as one call of ``fn`` leaves them."""
    return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=True,
                      context_fn=functools.partial(_contexts, modules), **kwargs)


class CheckpointedBlock(nn.Module):
    """Base of a block that may recompute its activations in the backward pass.

    With ``checkpoint_activations`` True (set by :func:`enable_activation_checkpointing`) and
    gradients enabled, calling the block runs ``nn.Module.__call__`` (hooks and ``forward``)
    inside ``torch.utils.checkpoint.checkpoint``; otherwise it is an ordinary module. The
    block's ``forward`` and state-dict keys are unchanged.
    """

    checkpoint_activations: bool = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.checkpoint_activations and torch.is_grad_enabled():
            return run_checkpointed(super().__call__, (self,), *args, **kwargs)
        return super().__call__(*args, **kwargs)


class StagedSequential(nn.Sequential):
    """``nn.Sequential`` whose modules are stages of ``stage_size`` consecutive modules (e.g.
    conv, norm, neuron), each checkpointed on its own when switched on; modules left over at the
    end (fewer than ``stage_size``) run plainly. State-dict keys are those of ``nn.Sequential``.

    ``forward(x [T, B, ...])`` is ``nn.Sequential``'s.
    """

    checkpoint_activations: bool = False

    def __init__(self, *modules: nn.Module, stage_size: int) -> None:
        super().__init__(*modules)
        if stage_size < 1:
            raise ValueError(f"stage_size must be >= 1, got {stage_size}")
        self.stage_size = stage_size

    def forward(self, x: Tensor) -> Tensor:
        if not (self.checkpoint_activations and torch.is_grad_enabled()):
            return super().forward(x)
        modules = tuple(self)
        for i in range(0, len(modules), self.stage_size):
            stage = modules[i:i + self.stage_size]
            if len(stage) == self.stage_size:
                x = run_checkpointed(functools.partial(_run_stage, stage), stage, x)
            else:
                x = _run_stage(stage, x)
        return x


def _run_stage(stage: tuple[nn.Module, ...], x: Tensor) -> Tensor:
    for module in stage:
        x = module(x)
    return x


_CHECKPOINTABLE = (CheckpointedBlock, StagedSequential)


def checkpointed_blocks(model: nn.Module) -> list[nn.Module]:
    """The outermost checkpointable blocks of ``model`` (those inside one are not listed:
    the outer block's recomputation already covers them), in module order."""
    found: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, _CHECKPOINTABLE):
                found.append(child)
            else:
                visit(child)

    if isinstance(model, _CHECKPOINTABLE):
        return [model]
    visit(model)
    return found


def enable_activation_checkpointing(model: nn.Module, enabled: bool = True) -> int:
    """Switch activation checkpointing on (or off) in ``model``; return the number of blocks
    switched on (0 when turning it off, or when ``model`` has no checkpointable blocks).

    On: every outermost :class:`CheckpointedBlock` / :class:`StagedSequential` is checkpointed
    (blocks nested inside one stay off, so nothing is recomputed twice). Off: all of them off.
    """
    for module in model.modules():
        if isinstance(module, _CHECKPOINTABLE):
            module.checkpoint_activations = False
    if not enabled:
        return 0
    blocks = checkpointed_blocks(model)
    for block in blocks:
        block.checkpoint_activations = True
    return len(blocks)
