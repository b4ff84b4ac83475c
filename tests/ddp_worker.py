"""Train the tiny model with ``fit`` from a script (Lightning's DDP launcher re-runs it per rank).

Usage: python tests/ddp_worker.py RUN_DIR DEVICES BATCH_PER_DEVICE[,BATCH...] STEPS
Writes the trained weights to RUN_DIR/b<BATCH>/weights.pt (rank 0), one run per batch size
(several only in one process: one interpreter start for the single-process runs).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import TinyConfig  # noqa: E402,F401  (registers model "tiny")

from snngen.config import build_run_config  # noqa: E402
from snngen.models import DataInfo  # noqa: E402
from snngen.training import fit  # noqa: E402


def main(run_dir: str, devices: int, batch: int, steps: int) -> None:
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(64, 1, 8, 8, generator=gen), torch.zeros(64, dtype=torch.long))
    cfg = build_run_config({
        "model": {"name": "tiny", "noise": 0.0, "dropout": 0.0},
        "data": {"batch_size": batch},
        "optim": {"name": "adam", "lr": 1e-2},
        "trainer": {"max_steps": steps, "accelerator": "cpu", "devices": devices,
                    "strategy": "ddp" if devices > 1 else "auto", "progress_bar": False,
                    "seed": 3, "ckpt_every_n_steps": 100},
    })
    lit = fit(cfg, run_dir, data, DataInfo(channels=1, image_size=8))
    if lit.global_rank == 0:
        torch.save({"weights": lit.model.state_dict(), "world": lit.trainer.world_size,
                    "batches_seen": lit.batches_seen}, Path(run_dir) / "weights.pt")


if __name__ == "__main__":
    for b in sys.argv[3].split(","):
        main(str(Path(sys.argv[1]) / f"b{b}"), int(sys.argv[2]), int(b), int(sys.argv[4]))
