"""Seconds per training step of the paper configs, and what a whole paper run would cost.

For each config: the model at the config's full width is built, a batch of random inputs of the
config's shape (images in [0, 1], or event counts) goes through ``loss`` + backward + the
optimiser step, timed after one warm-up step (median of ``--repeat``). ``--batch N`` measures at
N items and scales to the config's batch linearly (cheaper on a CPU; say so when quoting).
Estimated hours = step time x the run's steps (``trainer.max_steps``, or epochs x steps per
epoch over the dataset's training split size). On a CUDA device the hours are GPU-hours; here,
CPU-hours. Priors (stage 2) are left out: they need a trained stage-1 run.

    python benchmarks/paper_step_times.py                       # every paper config
    python benchmarks/paper_step_times.py --batch 4 --configs sddpm_cifar10 fsvae_mnist
    python benchmarks/paper_step_times.py --device cuda --json out.json

Prints a table and writes JSON (default ``benchmarks/results/paper_step_times.json``).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from snngen.config import load_config
from snngen.importers.run_folder import config_data_info
from snngen.runs import build_checked_model
from snngen.training import make_optimizer, steps_per_epoch

sys.path.append(str(Path(__file__).resolve().parent))  # bench_common, also when loaded by path
from bench_common import write_timings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: training-split sizes of the paper datasets (the step count of epoch-based configs)
TRAIN_SIZES = {"mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000, "celeba": 162_770,
               "lsun_bedroom": 3_033_042, "nmnist": 60_000, "cifar10_dvs": 9_000}
PAPER_CONFIGS = ["fsvae_mnist", "fsvae_fashion_mnist", "fsvae_cifar10", "fsvae_celeba",
                 "sddpm_mnist", "sddpm_fashion_mnist", "sddpm_cifar10", "sddpm_celeba",
                 "sddpm_lsun_bedroom", "sdm_tsm_cifar10", "vqvae_celeba", "vqvae_lsun_bedroom",
                 "vqvae_nmnist"]


def run_steps(cfg, batch: int, device: torch.device) -> int:
    """Return the number of optimiser steps of the whole run ``cfg`` describes."""
    if cfg.trainer.max_steps is not None:
        return int(cfg.trainer.max_steps)
    n = TRAIN_SIZES[cfg.data.name]
    return int(cfg.trainer.max_epochs * steps_per_epoch(n, batch, 1))


def step_seconds(name: str, batch: int | None, repeat: int, device: torch.device,
                 overrides: list[str] | None = None) -> dict:
    """Time one training step of config ``name`` (with ``overrides``) on ``device``."""
    extra = ["model.init_from=null"] if name.startswith("sdm") else []
    cfg = load_config(ROOT / "configs" / f"{name}.yaml", extra + list(overrides or []))
    info = config_data_info(cfg)
    model = build_checked_model(cfg.model, info).to(device).train()
    full = cfg.data.batch_size
    b = batch or full
    gen = torch.Generator().manual_seed(0)
    if info.events:
        x = torch.poisson(torch.full((info.time_bins, b, 2, info.image_size, info.image_size),
                                     0.3), generator=gen)
    else:
        x = torch.rand(b, info.channels, info.image_size, info.image_size, generator=gen)
    x = x.to(device)
    groups, overrides = model.optimizer_groups(), model.optimizer_overrides()
    optims = {k: make_optimizer(cfg, p, overrides.get(k, {}), 1) for k, p in groups.items()}
    last = list(optims)[-1]

    def step() -> None:  # what the trainer's training_step does, one optimiser per loss key
        losses = model.loss(x)
        for key, opt in optims.items():
            opt.zero_grad(set_to_none=True)
            losses[key].backward(retain_graph=key != last)
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    measured = statistics.median(times)
    per_step = measured * full / b
    steps = run_steps(cfg, full, device)
    return {"config": name, "batch": full, "measured_batch": b, "s_per_step": per_step,
            "steps": steps, "hours": per_step * steps / 3600,
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="*", default=PAPER_CONFIGS)
    ap.add_argument("--batch", type=int, default=None, help="measure at this batch, scale up")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" /
                                          "paper_step_times.json"))
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    kind = "GPU" if device.type == "cuda" else "CPU"
    proc = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    rows = []
    print(f"{'config':<22}{'batch':>6}{'measured at':>12}{'s/step':>10}{'steps':>10}"
          f"{kind + '-hours':>12}{'params M':>10}")
    for name in args.configs:
        r = step_seconds(name, args.batch, args.repeat, device)
        rows.append(r)
        print(f"{r['config']:<22}{r['batch']:>6}{r['measured_batch']:>12}{r['s_per_step']:>10.2f}"
              f"{r['steps']:>10}{r['hours']:>12.0f}{r['params_M']:>10.1f}", flush=True)
    write_timings(args.json, device, processor=proc or platform.machine(),
                  threads=torch.get_num_threads(), torch=torch.__version__, rows=rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
