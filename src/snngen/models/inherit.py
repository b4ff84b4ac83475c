"""Weight inheritance: start a TSM U-Net (SDM) from a trained plain spiking U-Net (SDDPM).

SDM fine-tunes its temporal-wise spiking mechanism from SDDPM's weights: every tensor the two
networks share is copied, the per-step TSM scales (``*.tsm_scale``, shape ``(T, 1, 1, 1, 1)``)
start at 1, and the TSM net then computes exactly what the source computed. In snngen a TSM
conv keeps ``nn.Conv2d``'s keys (``weight``, ``bias``), so "shared" means "same key".

:func:`inherit_weights` does this for any pair of modules and returns an
:class:`InheritanceReport` listing the target keys it **mapped** (copied from the source), the
target keys it left **initialised** fresh (no source tensor, e.g. the TSM scales) and the source
keys it **dropped** (no place in the target). A shared key whose shapes differ is refused with an
:class:`InheritanceError` naming the key and both shapes (nothing is copied then).

Sources: a module, a state dict or a loaded training checkpoint (the run layer reads a
``.ckpt`` file or a run folder: :func:`snngen.runs.read_weights_source`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from snngen.errors import SnngenError
from snngen.files import is_state_dict

__all__ = ["InheritanceError", "InheritanceReport", "inherit_weights", "load_source_state"]


class InheritanceError(SnngenError, ValueError):
    """A source tensor cannot be inherited (its shape differs from the target's)."""


@dataclass
class InheritanceReport:
    """What :func:`inherit_weights` did; key lists are sorted."""

    mapped: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: the three counts, and the fresh / dropped keys when there are few."""

        def show(keys: list[str]) -> str:
            return ", ".join(keys) if len(keys) <= 6 else ", ".join(keys[:6]) + ", ..."

        return (
            f"inherited {len(self.mapped)} tensors; initialised {len(self.initialised)} "
            f"[{show(self.initialised)}]; dropped {len(self.dropped)} [{show(self.dropped)}]"
        )

    def to_dict(self) -> dict[str, list[str]]:
        return {"mapped": self.mapped, "initialised": self.initialised, "dropped": self.dropped}


def _strip(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_source_state(source: nn.Module | Mapping, *, ema: bool = False) -> dict:
    """Return a plain state dict from a module, a state dict or a loaded training checkpoint.

    Training checkpoints hold ``model.<key>`` (and ``ema.model.<key>`` with EMA); the raw model
    weights are taken (the EMA copy when ``ema=True`` and present), as SDM fine-tunes from the
    trained, not the averaged, network. Files and run folders are read by the run layer
    (:func:`snngen.runs.read_weights_source`), never here.
    """
    if isinstance(source, nn.Module):
        return dict(source.state_dict())
    if not isinstance(source, Mapping):
        raise SnngenError(f"cannot inherit weights from a {type(source).__name__}")
    state = source.get("state_dict", source)
    if not is_state_dict(state):
        raise SnngenError("cannot inherit weights: the source holds no state dict of named tensors")
    if ema and any(k.startswith("ema.model.") for k in state):
        return _strip(state, "ema.model.")
    if any(k.startswith("model.") for k in state) and "snngen" in source:
        return _strip(state, "model.")
    return dict(state)


def _align_prefix(source: dict[str, Tensor], target_keys: set[str]) -> dict[str, Tensor]:
    """Match a source saved one module level up/down (e.g. ``unet.`` of a diffusion model)."""
    if set(source) & target_keys:
        return source
    for prefix in sorted({k.split(".", 1)[0] + "." for k in source if "." in k}):
        stripped = _strip(source, prefix)
        if set(stripped) & target_keys:  # keys outside the prefix stay, to be reported dropped
            return {**{k: v for k, v in source.items() if not k.startswith(prefix)}, **stripped}
    for prefix in sorted({k.split(".", 1)[0] + "." for k in target_keys if "." in k}):
        added = {prefix + k: v for k, v in source.items()}
        if set(added) & target_keys:
            return added
    return source


@torch.no_grad()
def inherit_weights(
    target: nn.Module,
    source: nn.Module | Mapping,
    *,
    ema: bool = False,
    allow_dropped: bool = True,
) -> InheritanceReport:
    """Copy every tensor of ``source`` whose key ``target`` also has into ``target``.

    Parameters and buffers (batch-norm statistics included) are copied in place; target tensors
    without a source (the TSM scales) keep their initial values. A key prefix that differs by one
    module level (``unet.`` of a :class:`~snngen.models.diffusion_model.DiffusionModel`) is
    aligned automatically.

    Raises :class:`InheritanceError` if a shared key has different shapes (naming the key and
    both shapes; ``target`` is left untouched), if no key is shared at all, or, with
    ``allow_dropped=False``, if some source key has no place in the target.
    """
    target_state = target.state_dict()
    src = _align_prefix(load_source_state(source, ema=ema), set(target_state))
    shared = sorted(set(src) & set(target_state))
    bad = [  # in the target's module order, so the first named is the first layer that differs
        f"{key!r}: source shape {tuple(src[key].shape)} != target shape "
        f"{tuple(target_state[key].shape)}"
        for key in target_state
        if key in src and tuple(src[key].shape) != tuple(target_state[key].shape)
    ]
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise InheritanceError(
            f"cannot inherit {'; '.join(bad[:3])}{more}: were both networks built with the same "
            f"ch, ch_mult, num_res_blocks, attn, in_channels and, for TSM, timesteps?"
        )
    if not shared:
        raise InheritanceError("the source shares no key with the target: nothing to inherit")
    report = InheritanceReport(
        mapped=shared,
        initialised=sorted(set(target_state) - set(src)),
        dropped=sorted(set(src) - set(target_state)),
    )
    if report.dropped and not allow_dropped:
        raise InheritanceError(f"source keys with no place in the target: {report.dropped}")
    for key in shared:
        target_state[key].copy_(src[key].to(target_state[key].dtype))
    return report
