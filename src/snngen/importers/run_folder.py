"""``snngen import``: an original system's checkpoint -> a snngen run folder.

The folder it writes (``config.yaml`` and ``checkpoints/last.ckpt``) is what ``snngen train``
leaves behind, so ``sample``, ``eval`` and ``info`` accept it. Every input is checked before
anything is written: the checkpoint is loaded as data only (``weights_only``), the config must
describe the family's model, and the weights must fit that model key by key.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from snngen.config import RunConfig, load_config, save_config, to_dict
from snngen.errors import ConfigError, SnngenError
from snngen.files import check_writable_folder, load_checkpoint, save_torch
from snngen.importers import find_weights, importer, load_original
from snngen.models import DataInfo

#: ``snngen import`` family -> the snngen model names its config may use
FAMILY_MODELS: dict[str, tuple[str, ...]] = {
    "sae": ("sae",),
    "fsvae": ("fsvae",),
    "ann-vae": ("ann_vae",),
    "sddpm": ("sddpm",),
    "sdm": ("sddpm",),
    "tts-vqvae": ("vqvae",),
    "tts-prior": ("vq_prior",),
}


def config_data_info(cfg: RunConfig) -> DataInfo:
    """The :class:`DataInfo` a run of ``cfg`` would have, without needing the dataset's files:
    read off the test split when it is present, else from the dataset's declared item shape."""
    from snngen.data import get_dataset
    from snngen.data.base import DataError
    from snngen.data.registry import SPECS, _saccade_base
    from snngen.runs import data_info

    d = cfg.data
    try:
        return data_info(get_dataset(d.name, root=d.root, split="test",
                                     image_size=d.image_size, **d.options))
    except DataError:
        spec = SPECS.get(_saccade_base(d.name) or d.name)
        if spec is None:
            raise
    dims = [int(n) for n in re.findall(r"\d+", spec.item)]
    size = d.image_size or dims[-1]
    if spec.kind == "events" or "saccade" in d.name or d.options.get("saccade"):
        return DataInfo(channels=2, image_size=size, events=True,
                        time_bins=int(d.options.get("time_bins", 4)))
    return DataInfo(channels=dims[0], image_size=size)


def import_original(family: str, checkpoint: str | Path, config: str | Path, out: str | Path,
                    overrides: list[str] | None = None, ema: bool = True) -> Path:
    """Turn an original checkpoint into a snngen run folder ``out``; returns its path.

    ``ema``: take the original's EMA copy where it keeps one. Raises :class:`SnngenError` (one
    line) naming the bad input: an unsafe or unreadable file, a config of another model, the
    first missing or mis-shaped weight, an existing ``out``.
    """
    from snngen.runs import CONFIG_FILE, build_checked_model, checkpoint_path

    module = importer(family)
    cfg = load_config(config, overrides)
    if cfg.model.name not in FAMILY_MODELS[family]:
        raise ConfigError(f"{config}: model.name is {cfg.model.name!r}; importing {family} needs "
                          f"a config of model {' or '.join(map(repr, FAMILY_MODELS[family]))}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SnngenError(f"--out {out} already exists; choose a new run folder")
    raw = load_checkpoint(checkpoint)
    keys = module.WEIGHT_KEYS if ema else tuple(k for k in module.WEIGHT_KEYS if "ema" not in k)
    original = find_weights(raw, keys, where=str(checkpoint))
    info = config_data_info(cfg)
    model_cfg = cfg.model
    if getattr(model_cfg, "init_from", None):
        import dataclasses

        model_cfg = dataclasses.replace(model_cfg, init_from=None)
    model = build_checked_model(model_cfg, info)
    load_original(model, original, family, where=str(checkpoint))
    params = sum(p.numel() for p in model.parameters())
    check_writable_folder(out, params * 8 + 1_000_000, what="--out")

    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    state = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    save_torch({
        "state_dict": state,
        "snngen": {
            "model_name": model.name,
            "batches_seen": 0,
            "config": to_dict(cfg),
            "data_info": {k: getattr(info, k) for k in info.__dataclass_fields__},
            "imported_from": {"family": family, "file": str(checkpoint), "sha256": digest,
                              "ema": ema},
        },
    }, checkpoint_path(out))
    save_config(cfg, out / CONFIG_FILE)
    return out


__all__ = ["FAMILY_MODELS", "config_data_info", "import_original"]
