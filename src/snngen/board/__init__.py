"""``snngen leaderboard``: every model family trained on mnist5k at the same CPU-time budget,
measured under one protocol, written up as a table and three pictures.

:func:`run_leaderboard` trains each stage (:mod:`snngen.board.entries`) in its own
single-threaded process for its share of ``budget_minutes`` CPU minutes, measures every row
(:mod:`snngen.board.measure`), then writes the Markdown table, the JSON and the pictures
(:mod:`snngen.board.report`). It resumes: a stage that reached its budget is not trained again,
a row already measured is not measured again; an interrupted stage continues from its checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from snngen.board.entries import ENTRIES, SNAPSHOTS, Entry, Stage, training_stages
from snngen.board.jobs import Job, python_module, run_jobs
from snngen.board.settings import Board, BoardSettings, default_board_dir
from snngen.errors import SnngenError

__all__ = ["ENTRIES", "Board", "BoardSettings", "plan_jobs", "run_leaderboard", "stage_budget",
           "train_overrides"]


def stage_budget(settings: BoardSettings, stage: Stage) -> float:
    """CPU minutes of one stage: its share of the row budget."""
    return settings.budget_minutes * stage.share


def train_overrides(board: Board, stage: Stage) -> list[str]:
    """The overrides that make a stage's config a board run: its budget, snapshots, folder."""
    return [
        f"name={stage.key}", f"out_dir={board.runs.resolve()}",
        "trainer.max_epochs=null", "trainer.max_steps=null",
        f"trainer.max_cpu_minutes={stage_budget(board.settings, stage)!r}",
        f"trainer.cpu_snapshots={SNAPSHOTS}", "trainer.progress_bar=false",
        "trainer.grids_every_epoch=false", "trainer.ckpt_every_n_steps=50",
        "trainer.accelerator=cpu", "trainer.devices=1", f"trainer.seed={board.settings.seed}",
        *stage.resolved_overrides(board.runs.resolve()),
    ]


def stage_state(board: Board, stage: Stage) -> tuple[str, dict | None]:
    """``("done" | "partial" | "new", checkpoint metadata)`` of a stage's run folder."""
    from snngen.board.measure import checkpoint_meta

    ckpt = board.run_dir(stage.key) / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        return "new", None
    meta = checkpoint_meta(board.run_dir(stage.key))
    budget = 60 * stage_budget(board.settings, stage)
    return ("done" if meta.get("cpu_seconds", 0.0) >= budget else "partial"), meta


def _config_path(config: str) -> Path:
    path = Path(config)
    if not path.is_file():
        raise SnngenError(f"{config}: not found; run snngen leaderboard from the snngen "
                          "repository root (it trains the configs in configs/)")
    return path.resolve()


def plan_jobs(board: Board, rows: list[Entry], *, remeasure: bool = False) -> list[Job]:
    """The jobs still to run: unfinished stages the rows need and unmeasured rows, each row's
    measurement right after the training it needs (:func:`row_major`)."""
    needed: dict[str, Stage] = {}
    for e in rows:
        for s in e.stages:
            for a in s.after:
                needed.setdefault(a, next(t for t in training_stages() if t.key == a))
            needed.setdefault(s.key, s)
    jobs: list[Job] = []
    retrained: set[str] = set()
    for s in needed.values():
        state, meta = stage_state(board, s)
        if state == "done":
            continue
        retrained.add(s.key)
        argv = ["train", str(_config_path(s.config)), *train_overrides(board, s), "--no-eval"]
        run_dir = board.run_dir(s.key)
        if state == "partial":
            argv += ["--resume", str(run_dir)]

        def clear(run_dir: Path = run_dir, state: str = state) -> None:
            if state == "new" and run_dir.exists():  # started but no checkpoint: start over
                shutil.rmtree(run_dir)

        def describe(s: Stage = s) -> str:
            _, m = stage_state(board, s)
            return "" if m is None else (f"{m['cpu_seconds'] / 60:.2f} CPU-min, "
                                         f"{m['batches_seen']} steps")

        jobs.append(Job(f"train:{s.key}", python_module("snngen", *argv),
                        board.log_file(f"train:{s.key}"),
                        after=tuple(f"train:{a}" for a in s.after if a in retrained),
                        before_start=clear, describe=describe))
    for e in rows:
        stale = remeasure or any(k in retrained for s in e.stages for k in (s.key, *s.after))
        if board.row_file(e.key).is_file() and not stale:
            continue
        if board.row_file(e.key).is_file():
            board.row_file(e.key).unlink()

        def describe_row(e: Entry = e) -> str:
            rec = json.loads(board.row_file(e.key).read_text())
            return f"classifier FID {rec['fid']:.1f}"

        after = tuple(f"train:{k}" for s in e.stages for k in (*s.after, s.key)
                      if k in retrained)
        jobs.append(Job(f"measure:{e.key}", python_module(
            "snngen.board.measure", str(board.root), e.key), board.log_file(f"measure:{e.key}"),
            after=after, describe=describe_row))
    return row_major(jobs)


def row_major(jobs: list[Job]) -> list[Job]:
    """``jobs`` reordered so that each measurement follows the training it needs: the runner
    starts the first ready job in list order, so a row's measurement (the converted DDPM's takes
    most of an hour) starts as soon as its model is trained, not after every other training."""
    by_name = {j.name: j for j in jobs}
    order: list[Job] = []
    placed: set[str] = set()

    def place(j: Job) -> None:
        if j.name in placed:
            return
        placed.add(j.name)
        for a in j.after:
            if a in by_name:
                place(by_name[a])
        order.append(j)

    for j in jobs:
        if j.name.startswith("measure:"):
            place(j)
    for j in jobs:
        place(j)
    return order


def run_leaderboard(
    budget_minutes: float | None = None,
    *,
    quick: bool = False,
    out: str | Path | None = None,
    doc: str | Path | None = "docs/leaderboard.md",
    img_dir: str | Path | None = "docs/img",
    jobs: int | None = None,
    rows: list[str] | None = None,
    remeasure: bool = False,
    inception_samples: int | None = None,
    echo=print,
) -> dict[str, Any]:
    """Train and measure every row (or ``rows``) at ``budget_minutes`` CPU minutes per model,
    then write ``doc`` (Markdown table), ``<doc>.json`` and the pictures in ``img_dir``.

    ``quick``: seconds of training and a few hundred samples (a smoke test of the pipeline;
    writes into the board folder, not ``docs/``, unless ``doc`` is given). ``out``: the board
    folder (default ``runs/leaderboard/mnist5k_<budget>min``); ``jobs``: processes at once
    (default: the CPU count); ``inception_samples``: samples per row scored for Inception FID
    (default 1,000; 0 skips the column, the slowest part of measuring a fast row). Returns the
    board record (rows, settings, wall time).
    """
    from snngen.board.entries import entry
    from snngen.board.report import write_board

    if quick:
        if budget_minutes is not None:
            raise SnngenError("--quick fixes its own tiny budget; drop --budget-minutes")
        if inception_samples:
            raise SnngenError("--quick measures no Inception FID; drop --inception-samples")
        settings = BoardSettings.quick_settings()
    else:
        given = {"budget_minutes": budget_minutes, "inception_n": inception_samples}
        settings = BoardSettings(**{k: v for k, v in given.items() if v is not None})
    try:
        chosen = [entry(r) for r in rows] if rows else list(ENTRIES)
    except KeyError as err:
        raise SnngenError(f"--rows: {err.args[0]}") from None
    workers = jobs or os.cpu_count() or 1
    if workers < 1:
        raise SnngenError(f"--jobs: must be >= 1, got {workers}")
    for e in chosen:  # every config present before anything starts
        for s in e.stages:
            _config_path(s.config)
    board = Board(Path(out) if out else default_board_dir(settings), settings)
    board.open()
    todo = plan_jobs(board, chosen, remeasure=remeasure)
    echo(f"snngen leaderboard: {len(chosen)} model(s) on mnist5k, {settings.budget_minutes:g} "
         f"CPU-min of training each, {len(todo)} jobs to run ({workers} at once), board "
         f"folder {board.root}")
    t0 = time.perf_counter()
    failed = run_jobs(todo, workers, echo=echo)
    wall = time.perf_counter() - t0
    if failed:
        raise SnngenError(f"{len(failed)} leaderboard job(s) failed: "
                          + ", ".join(f"{j.name} (log {j.log})" for j in failed))
    if quick and doc == "docs/leaderboard.md":
        doc, img_dir = board.root / "leaderboard.md", board.root / "img"
    return write_board(board, chosen, wall_seconds=wall, doc=doc, img_dir=img_dir, echo=echo)
