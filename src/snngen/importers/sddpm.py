"""Key map of SDDPM's spiking U-Net (AndyCao1125/SDDPM ``model/SpikingUNet.py`` ``Spk_UNet``)
and SDM's TSM U-Net (AndyCao1125/SDM ``SDM/TSM.py`` ``Spk_UNet_TSM``) onto
:class:`snngen.models.unet.SpikingUNet`.

Checkpoints: SDDPM's ``main_SDDPM.py`` saves ``{"net_model", "optim", "step", "x_T"}``; SDM's
released TSM checkpoints also hold ``"ema_model"`` (SDM's ``sample.py`` can load either; it loads
``net_model`` by default). :data:`WEIGHT_KEYS` prefers the EMA copy where there is one; pass
the checkpoint's ``net_model`` dict itself to import the raw weights. A ``module.`` prefix
(DataParallel) is stripped.

Renames (original -> snngen, under ``unet.`` in a :class:`DiffusionModel`):

* ``time_embedding.timembedding.1`` / ``.3`` -> ``time_embedding.mlp.0`` / ``.2`` (the fixed
  sinusoid table ``timembedding.0.weight`` is dropped: snngen computes the same sinusoids; its
  width must equal the config's ``ch``);
* ``tail_bn``, ``tail_conv``, ``T_output_layer``, ``last_bn`` -> ``head.tail_bn``,
  ``head.tail_conv``, ``head.t_output_layer``, ``head.last_bn``;
* TSM convs: ``X.tsmconv.weight`` / ``.bias`` -> ``X.weight`` / ``.bias``, ``X.tsmp`` ->
  ``X.tsm_scale``;
* everything else (``conv``, ``bn``, ``conv_identity``, ``downblocks.*``, ``middleblocks.*``,
  ``upblocks.*`` with ``conv1``/``bn1``/``temb_proj.1``/``conv2``/``bn2``/``shortcut``) keeps its
  name.
"""

from __future__ import annotations

from torch import Tensor, nn

from snngen.importers import ImportMismatch

#: where an original checkpoint keeps its weights, preferred first
WEIGHT_KEYS: tuple[str, ...] = ("ema_model", "net_model")

_TABLE = "time_embedding.timembedding.0.weight"
_RENAMES = (
    ("time_embedding.timembedding.1.", "time_embedding.mlp.0."),
    ("time_embedding.timembedding.3.", "time_embedding.mlp.2."),
    ("tail_bn.", "head.tail_bn."),
    ("tail_conv.", "head.tail_conv."),
    ("T_output_layer.", "head.t_output_layer."),
    ("last_bn.", "head.last_bn."),
)


def snngen_key(key: str) -> str:
    """The snngen U-Net key of an original ``Spk_UNet`` / ``Spk_UNet_TSM`` state-dict key."""
    for old, new in _RENAMES:
        if key.startswith(old):
            key = new + key[len(old):]
            break
    key = key.replace(".tsmconv.", ".")
    if key.endswith(".tsmp"):
        key = key[: -len("tsmp")] + "tsm_scale"
    return key


def convert(original: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Map an original U-Net state dict onto ``model``'s (a ``DiffusionModel`` or a bare
    ``SpikingUNet``); the model's own non-U-Net buffers are kept. Raises
    :class:`ImportMismatch` naming the original key that is missing, extra or mis-shaped."""
    prefix = "unet." if hasattr(model, "unet") else ""
    unet = model.unet if prefix else model
    target = model.state_dict()
    original = {k[len("module."):] if k.startswith("module.") else k: v
                for k, v in original.items()}
    out = {k: v for k, v in target.items() if not k.startswith(prefix)} if prefix else {}
    for key, value in original.items():
        if key == _TABLE:
            ch = unet.cfg.ch
            if value.ndim != 2 or value.shape[1] != ch:
                raise ImportMismatch(
                    f"checkpoint: {key!r} has shape {tuple(value.shape)}, the config's U-Net "
                    f"has ch={ch} (a table [diffusion_steps, {ch}])")
            continue
        name = prefix + snngen_key(key)
        if name not in target:
            raise ImportMismatch(f"checkpoint: weight {key!r} has no place in the config's "
                                 f"model (as {name!r})")
        if tuple(value.shape) != tuple(target[name].shape):
            raise ImportMismatch(
                f"checkpoint: weight {key!r} has shape {tuple(value.shape)}, the config's "
                f"model needs {tuple(target[name].shape)} (for {name!r})")
        out[name] = value
    for name, value in target.items():
        if name.startswith(prefix) and name not in out:
            raise ImportMismatch(f"checkpoint: missing weight for {name!r} (shape "
                                 f"{tuple(value.shape)}); the original names it "
                                 f"{_original_key(name[len(prefix):], unet)!r}")
    return out


def _original_key(key: str, unet: nn.Module) -> str:
    """The original's name of a snngen U-Net key (for error messages)."""
    path, _, leaf = key.rpartition(".")
    try:
        tsm_conv = hasattr(unet.get_submodule(path), "tsm_scale")
    except AttributeError:
        tsm_conv = False
    if tsm_conv:
        key = f"{path}.tsmp" if leaf == "tsm_scale" else f"{path}.tsmconv.{leaf}"
    for old, new in _RENAMES:
        if key.startswith(new):
            return old + key[len(new):]
    return key


__all__ = ["WEIGHT_KEYS", "convert", "snngen_key"]
