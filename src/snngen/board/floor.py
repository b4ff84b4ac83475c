"""A row's resolution floor: the FID that real images get under the board's protocol once
brought to the row's output resolution.

The board scores every row at one common resolution: the protocol brings each sample to the
classifier's 32 px, whatever size the model draws at, and compares it with the training digits
as published. A model that draws at 16 px loses the detail of the 28-px digits before any
learning happens; the floor measures that loss. It is the classifier FID (protocol
``leaderboard``, reference: the training split) of the dataset's **test** images opened as the
row's training data is (its name, root and options such as ``fit``) at the row's output size:
what a model drawing perfect samples at that size would score. It is computed once per size
(and data options) and kept in ``BOARD/floors/<key>.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from snngen.board.entries import Entry
from snngen.board.settings import PROTOCOL
from snngen.errors import SnngenError
from snngen.metrics.measure import Measurement, measure, prepare_measurement
from snngen.metrics.plan import plan_evaluation
from snngen.metrics.protocols import get_protocol
from snngen.metrics.reference import DataSource, ReferenceImages, reference_source

#: the board folder's sub-folder of cached floors
FLOORS_DIR = "floors"
#: the split whose images make the floor (the board's reference is the training split)
FLOOR_SPLIT = "test"


def floor_source(data: DataSource, size: int | None) -> DataSource:
    """The images a row of output size ``size`` is measured against at best: ``data``'s dataset,
    root and options (a run's data section, :meth:`DataSource.of`) opened at ``size``."""
    return DataSource(data.name, data.root, size, data.options)


def row_data(e: Entry) -> DataSource:
    """The data section of a row's last stage (its config with the board's overrides; the
    size is the row's output size)."""
    from snngen.config import load_config

    stage = e.final_stage
    cfg = load_config(stage.config, stage.resolved_overrides(Path("runs")), check_eval=False)
    return DataSource.of(cfg.data)


def floor_measurement(source: DataSource, batch_size: int = 250) -> Measurement:
    """The board's FID measurement (protocol ``leaderboard``: classifier features at 32 px,
    reference: the training split as published) for a dataset; reads the cached reference."""
    plan = plan_evaluation(source.name, ["fid"], None, protocol=PROTOCOL)
    ref = reference_source(get_protocol(PROTOCOL), source)
    return prepare_measurement(plan, ref, batch_size=batch_size, progress=False)


def resolution_floor(ready: Measurement, source: DataSource, *, n: int | None = None,
                     seed: int = 0, batch_size: int = 250) -> float:
    """FID under ``ready`` of the first ``n`` (default all) test images of ``source``
    (``[n, C, S, S]`` in [0, 1], ``S`` = ``source.image_size``), scored as samples are."""
    images = ReferenceImages(source, FLOOR_SPLIT, n, batch_size)
    return measure(ready, images, seed=seed, batch_size=batch_size, progress=False)["fid"].value


def floor_key(source: DataSource) -> str:
    """``<dataset>_<size>px[_<option>-<value>...]``: the file name of a cached floor."""
    opts = "".join(f"_{k}-{v}" for k, v in source.options)
    key = f"{source.name}_{source.image_size or 'native'}px{opts}"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in key)


def cached_floor(folder: Path, source: DataSource, *, ready: Measurement | None = None,
                 seed: int = 0, batch_size: int = 250) -> dict[str, Any]:
    """``{"output_px", "resolution_floor_fid", ...}`` of ``source``, read from ``folder`` or
    computed (:func:`resolution_floor`) and written there; a file measured under another
    protocol or reference is measured again. ``ready``: the measurement, if already made."""
    from snngen.files import write_text

    ready = ready if ready is not None else floor_measurement(source, batch_size)
    protocol = {k: ready.record.get(k) for k in ("name", "version", "features", "reference")}
    path = Path(folder) / f"{floor_key(source)}.json"
    if path.is_file():
        try:
            rec = json.loads(path.read_text())
            if rec.get("protocol") == protocol:
                return rec
        except (OSError, ValueError):
            pass  # unreadable: measured again
    fid = resolution_floor(ready, source, seed=seed, batch_size=batch_size)
    rec = {"output_px": source.image_size, "resolution_floor_fid": fid,
           "images": f"{source.name} {FLOOR_SPLIT} split at {source.image_size} px, options "
                     f"{dict(source.options)}", "protocol": protocol}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(rec, indent=2))
    return rec


def add_floors(rows: list[dict[str, Any]], folder: Path, entries: dict[str, Entry],
               batch_size: int = 250) -> None:
    """Fill ``output_px`` and ``resolution_floor_fid`` into rows measured before floors
    existed (their row's config gives the size), computing each floor once (in ``folder``)."""
    for r in rows:
        if "resolution_floor_fid" in r:
            continue
        if r["row"] not in entries:
            raise SnngenError(f"row {r['row']!r}: not a leaderboard row; cannot find its size")
        rec = cached_floor(folder, row_data(entries[r["row"]]), batch_size=batch_size)
        r["output_px"], r["resolution_floor_fid"] = rec["output_px"], rec["resolution_floor_fid"]
