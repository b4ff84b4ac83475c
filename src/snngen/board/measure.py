"""Measure one leaderboard row: sampler choice, sample quality, reconstruction, cost, FID curve.

Runs in its own single-threaded process (``python -m snngen.board.measure BOARD ROW``) and
writes ``BOARD/rows/<row>.json`` and the row's first 8 samples ``BOARD/rows/<row>_samples.npy``
(``[8, C, H, W]`` in [0, 1]). Every row is measured alike:

1. diffusion rows draw ``sweep_n`` samples with each (solver, steps) of the sweep and keep the
   one with the lowest classifier FID (same seed for every try);
2. ``n_samples`` samples (seed ``settings.seed``), their sampling CPU time per sample, FID, KID
   (mean and std over subsets) and precision/recall on the classifier features against the
   training images (protocol ``leaderboard``), Inception FID of the first ``inception_n``;
3. the row's output size and resolution floor (:mod:`snngen.board.floor`: the FID of the real
   test images at that size, measured once per size in ``BOARD/floors/``);
   reconstruction MSE of the 500 test images where the model reconstructs;
4. SOPs, MACs, energy and firing rate per sample, counted on drawing 8 samples;
5. classifier FID of ``curve_n`` samples at each CPU-budget snapshot of the row's last stage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snngen.board.entries import CONVERSION_TIMESTEPS, SNAPSHOTS, Entry, Stage, entry
from snngen.board.floor import FLOORS_DIR, cached_floor, floor_source
from snngen.board.settings import INCEPTION_PROTOCOL, PROTOCOL, Board, BoardSettings
from snngen.metrics.reference import DataSource
from snngen.training import snapshot_name

#: calibration images (training split) of the ANN-to-SNN conversion
CALIBRATION_IMAGES = 256
#: test images reconstructed for the MSE column
RECON_IMAGES = 500
#: samples the spike and operation counts are measured on
COST_SAMPLES = 8


def checkpoint_meta(run_dir: Path, name: str = "last.ckpt") -> dict[str, Any]:
    """The snngen metadata of a run's checkpoint (batches_seen, cpu_seconds, ...)."""
    from snngen.runs import read_checkpoint

    return read_checkpoint(run_dir / "checkpoints" / name)["snngen"]


#: checkpoint metadata already read for one row, by (stage key, checkpoint file name)
Metas = dict[tuple[str, str], dict[str, Any]]


def cached_meta(board: Board, key: str, name: str, metas: Metas) -> dict[str, Any]:
    """:func:`checkpoint_meta` of stage ``key``'s checkpoint ``name``, read once per ``metas``."""
    if (key, name) not in metas:
        metas[(key, name)] = checkpoint_meta(board.run_dir(key), name)
    return metas[(key, name)]


def stage_start_cpu(board: Board, stage: Stage, metas: Metas | None = None) -> float:
    """CPU seconds spent on a row before ``stage`` began: the stage-1 run of a prior, the
    inherited snapshot of SDM (``metas``: checkpoint metadata already read)."""
    metas = {} if metas is None else metas
    return sum(cached_meta(board, key, stage.from_snapshot or "last.ckpt", metas)
               ["cpu_seconds"] for key in stage.after)


def training_record(board: Board, e: Entry, metas: Metas | None = None) -> dict[str, Any]:
    """CPU seconds and steps of each of the row's stages, and the total CPU minutes
    (``metas``: checkpoint metadata already read, and where the ones read here are kept)."""
    metas = {} if metas is None else metas
    stage = e.final_stage
    meta = cached_meta(board, stage.key, "last.ckpt", metas)
    start = stage_start_cpu(board, stage, metas)
    stages = []
    for k in stage.after:
        parent = cached_meta(board, k, stage.from_snapshot or "last.ckpt", metas)
        stages.append({"stage": k, "checkpoint": stage.from_snapshot or "last.ckpt",
                       "cpu_seconds": round(parent["cpu_seconds"], 2),
                       "steps": parent["batches_seen"]})
    stages.append({"stage": stage.key, "cpu_seconds": round(meta["cpu_seconds"], 2),
                   "steps": meta["batches_seen"]})
    return {"cpu_minutes": round((start + meta["cpu_seconds"]) / 60, 3), "stages": stages}


def open_model(board: Board, e: Entry, checkpoint: str | None = None):
    """The row's model (from ``checkpoint`` of its last stage, default ``last.ckpt``), its run
    and, for the converted row, the conversion's CPU seconds."""
    from snngen.runs import load_run

    run = load_run(board.run_dir(e.final_stage.key), checkpoint=checkpoint)
    model, seconds = run.model, None
    if e.convert:
        from snngen.conversion import convert_model
        from snngen.runs import open_datasets

        t0 = time.process_time()
        train, _ = open_datasets(run.cfg)
        images = torch.stack([train[i][0] for i in range(min(CALIBRATION_IMAGES, len(train)))])
        model = convert_model(model, images, timesteps=CONVERSION_TIMESTEPS)
        seconds = time.process_time() - t0
    return model.eval(), run, seconds


def draw(model, n: int, settings: BoardSettings, options: dict) -> tuple[torch.Tensor, float]:
    """``n`` samples ``[n, C, H, W]`` (seed ``settings.seed``) and the CPU ms per sample."""
    from snngen.evaluation import generate

    t0 = time.process_time()
    x = generate(model, n, settings.batch_size, settings.seed, progress=False, **options)
    return x, 1000 * (time.process_time() - t0) / n


def fid_only(ready, images: torch.Tensor, settings: BoardSettings) -> float:
    from snngen.metrics.measure import measure

    return measure(ready, images, seed=settings.seed, batch_size=settings.batch_size,
                   progress=False)["fid"].value


def plans(cfg, settings: BoardSettings) -> dict[str, Any]:
    """The prepared measurements: full (fid, kid, pr on n_samples), sweep and curve (fid), and
    Inception FID. Every one reads the reference the board's protocol reads
    (:func:`~snngen.metrics.reference.reference_source`: for ``leaderboard`` the dataset as
    published, the 28-px digits, whatever a row's config pads or resizes), so every row, at 16
    or 32 px, is measured against the same images; the Inception column too."""
    from snngen.metrics.measure import prepare_measurement
    from snngen.metrics.plan import plan_evaluation
    from snngen.metrics.protocols import get_protocol
    from snngen.metrics.reference import reference_source

    source = reference_source(get_protocol(PROTOCOL), cfg.data)

    def ready(metrics, n, protocol=PROTOCOL, features=None):
        plan = plan_evaluation(cfg.data.name, metrics, n, protocol=protocol, features=features)
        return prepare_measurement(plan, source, batch_size=settings.batch_size, progress=False)

    out = {"full": ready(["fid", "kid", "pr"], settings.n_samples),
           "sweep": ready(["fid"], settings.sweep_n), "curve": ready(["fid"], settings.curve_n)}
    if settings.inception_n:
        out["inception"] = ready(["fid"], settings.inception_n, INCEPTION_PROTOCOL, "inception")
    return out


def choose_sampler(model, ready, settings: BoardSettings) -> tuple[dict, list[dict]]:
    """The sweep's (solver, steps) with the lowest classifier FID, and every try."""
    tries = []
    for solver, steps in settings.sweep:
        x, ms = draw(model, settings.sweep_n, settings, {"solver": solver, "steps": steps})
        tries.append({"solver": solver, "steps": steps, "fid": fid_only(ready, x, settings),
                      "sample_cpu_ms": round(ms, 2)})
    best = min(tries, key=lambda r: r["fid"])
    return {"solver": best["solver"], "steps": best["steps"]}, tries


@torch.no_grad()
def sample_cost(model, options: dict) -> dict[str, Any]:
    """SOPs, MACs, energy (uJ) and firing rate per sample, counted on drawing 8 samples."""
    from snngen.spiking.monitor import Monitor

    with Monitor(model, n_samples=COST_SAMPLES) as mon:
        model.sample(COST_SAMPLES, generator=torch.Generator().manual_seed(0), **options)
    t = mon.totals()
    return {"sops": t["sops"], "macs": t["macs"], "energy_uj": t["energy_pj"] / 1e6,
            "firing_rate": t["firing_rate"]}


def curve(board: Board, e: Entry, ready, options: dict, final_fid: float,
          final_minutes: float, metas: Metas | None = None) -> list[dict]:
    """Classifier FID of ``curve_n`` samples at each snapshot of the last stage, and the end
    (``metas``: checkpoint metadata already read; a snapshot's own comes with its model)."""
    settings = board.settings
    stage = e.final_stage
    start = stage_start_cpu(board, stage, metas)
    points = []
    for k in range(1, SNAPSHOTS):
        name = snapshot_name(k, SNAPSHOTS)
        if not (board.run_dir(stage.key) / "checkpoints" / name).is_file():
            continue  # the run ended before reaching it (a budget of a few steps)
        model, snap, _ = open_model(board, e, checkpoint=name)
        x, _ = draw(model, settings.curve_n, settings, options)
        cpu = start + snap.meta["cpu_seconds"]
        points.append({"cpu_minutes": round(cpu / 60, 3), "fid": fid_only(ready, x, settings)})
    points.append({"cpu_minutes": final_minutes, "fid": final_fid})
    return points


def row_floor(board: Board, cfg, size: int, ready) -> dict[str, Any]:
    """The resolution floor of a row whose run's config is ``cfg`` and whose samples are
    ``size`` px (cached in ``BOARD/floors/``; ``ready``: a prepared FID measurement of the
    board's protocol)."""
    source = floor_source(DataSource.of(cfg.data), size)
    return cached_floor(board.root / FLOORS_DIR, source, ready=ready,
                        seed=board.settings.seed, batch_size=board.settings.batch_size)


def measure_row(board: Board, row: str) -> dict[str, Any]:
    """Measure row ``row`` of ``board``; writes and returns its record."""
    from snngen.evaluation import reconstruction_mse
    from snngen.files import write_text
    from snngen.runs import open_datasets

    settings = board.settings
    e = entry(row)
    t_wall = time.perf_counter()
    model, run, conversion_s = open_model(board, e)
    # every checkpoint file is read once per row: the last stage's came with its model
    metas: Metas = {(e.final_stage.key, "last.ckpt"): run.meta}
    ready = plans(run.cfg, settings)
    options: dict = {}
    sweep = None
    if e.diffusion:
        options, sweep = choose_sampler(model, ready["sweep"], settings)
    x, ms = draw(model, settings.n_samples, settings, options)
    from snngen.metrics.measure import measure

    scores = measure(ready["full"], x, seed=settings.seed, batch_size=settings.batch_size,
                     progress=False)
    rec: dict[str, Any] = {
        "row": e.key, "label": e.label, "family": e.family, "spiking": e.spiking,
        "budget_minutes": settings.budget_minutes, "settings": settings.record(),
        "protocol": ready["full"].record, "notes": e.notes,
        "training": training_record(board, e, metas),
        "sampler": options or None, "sweep": sweep,
        "fid": scores["fid"].value,
        "kid": scores["kid"].value, "kid_std": scores["kid"].std,
        "precision": scores["precision"].value, "recall": scores["recall"].value,
        "sample_cpu_ms": round(ms, 2),
    }
    if conversion_s is not None:
        rec["conversion"] = {"timesteps": CONVERSION_TIMESTEPS, "calibration_images":
                             CALIBRATION_IMAGES, "cpu_seconds": round(conversion_s, 2)}
    if "inception" in ready:
        rec["inception_fid"] = fid_only(ready["inception"], x[: settings.inception_n], settings)
        rec["inception_protocol"] = ready["inception"].record
    floor = row_floor(board, run.cfg, int(x.shape[-1]), ready["curve"])
    rec["output_px"], rec["resolution_floor_fid"] = floor["output_px"], floor[
        "resolution_floor_fid"]
    if model.can_reconstruct:
        _, test = open_datasets(run.cfg)
        rec["mse"] = reconstruction_mse(model, test, RECON_IMAGES, settings.batch_size)["value"]
    rec["cost"] = sample_cost(model, options)
    head = fid_only(ready["curve"], x[: settings.curve_n], settings)
    rec["curve"] = curve(board, e, ready["curve"], options, head,
                         rec["training"]["cpu_minutes"], metas)
    rec["measure_wall_seconds"] = round(time.perf_counter() - t_wall, 1)
    board.row_samples(e.key).parent.mkdir(parents=True, exist_ok=True)
    np.save(board.row_samples(e.key), x[:8].numpy().astype(np.float32))
    write_text(board.row_file(e.key), json.dumps(rec, indent=2))
    return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="measure one leaderboard row (run by the board)")
    p.add_argument("board", help="board folder (with board.json)")
    p.add_argument("row", help="row key")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(args.board)
    record = json.loads((root / "board.json").read_text())
    fields = {k: record[k] for k in BoardSettings.__dataclass_fields__}
    fields["sweep"] = tuple(tuple(s) for s in fields["sweep"])
    board = Board(root, BoardSettings(**fields))
    rec = measure_row(board, args.row)
    print(json.dumps({k: rec[k] for k in ("row", "fid", "kid", "sampler")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
