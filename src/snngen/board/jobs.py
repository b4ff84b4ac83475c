"""Run the board's jobs (train a stage, measure a row) as single-threaded processes, in parallel.

Each job is a ``python -m ...`` process with ``OMP_NUM_THREADS=1`` whose output goes to
``BOARD/logs/<job>.log``. A job starts when the jobs it depends on have finished; a failed job
fails its dependants, the others go on. :func:`run_jobs` prints one line per job started and
finished, with the elapsed time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Job:
    """``argv`` to run once every job in ``after`` has succeeded; ``describe`` says what it
    did (called after a success: e.g. the CPU time and steps of a training run)."""

    name: str
    argv: list[str]
    log: Path
    after: tuple[str, ...] = ()
    before_start: Callable[[], None] | None = None
    describe: Callable[[], str] | None = None
    state: str = "pending"  # pending | running | done | failed
    started: float = 0.0
    process: subprocess.Popen | None = field(default=None, repr=False)


def single_thread_env() -> dict[str, str]:
    """The environment of a job: one intra-op thread, unbuffered output."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _fmt(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def run_jobs(jobs: list[Job], workers: int, *, echo: Callable[[str], None] = print,
             poll_seconds: float = 0.5) -> list[Job]:
    """Run ``jobs`` (a dependency order is not needed) with at most ``workers`` at once.

    Returns the failed jobs (their own failures and those whose dependencies failed).
    """
    by_name = {j.name: j for j in jobs}
    t0 = time.perf_counter()
    total, finished = len(jobs), 0
    env = single_thread_env()
    try:
        while any(j.state in ("pending", "running") for j in jobs):
            for j in jobs:  # dependants of failures fail without running
                if j.state == "pending" and any(by_name[a].state == "failed" for a in j.after
                                                if a in by_name):
                    j.state = "failed"
                    finished += 1
                    echo(f"[{finished:>2}/{total}] {j.name}: skipped (a job it needs failed)")
            running = [j for j in jobs if j.state == "running"]
            for j in jobs:
                if len(running) >= workers:
                    break
                if j.state != "pending" or any(by_name[a].state != "done" for a in j.after
                                               if a in by_name):
                    continue
                if j.before_start is not None:
                    j.before_start()
                j.log.parent.mkdir(parents=True, exist_ok=True)
                with open(j.log, "w") as log:
                    j.process = subprocess.Popen(j.argv, stdout=log, stderr=subprocess.STDOUT,
                                                 env=env)
                j.state, j.started = "running", time.perf_counter()
                running.append(j)
                echo(f"        {j.name}: started ({_fmt(j.started - t0)} into the board)")
            for j in running:
                assert j.process is not None
                rc = j.process.poll()
                if rc is None:
                    continue
                finished += 1
                took = _fmt(time.perf_counter() - j.started)
                if rc == 0:
                    j.state = "done"
                    more = f", {j.describe()}" if j.describe is not None else ""
                    echo(f"[{finished:>2}/{total}] {j.name}: done in {took}{more}")
                else:
                    j.state = "failed"
                    echo(f"[{finished:>2}/{total}] {j.name}: FAILED (exit {rc}) after {took}; "
                         f"see {j.log}")
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        for j in jobs:
            if j.state == "running" and j.process is not None:
                j.process.terminate()
        raise
    return [j for j in jobs if j.state == "failed"]


def python_module(module: str, *args: str) -> list[str]:
    """``argv`` running ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]
