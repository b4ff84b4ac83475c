"""Temporal vs vanilla codebook: the spiking VQ-VAE's comparison table (issue 6).

Given trained run folders, stage-1 ``vqvae`` runs and/or stage-2 ``vq_prior`` runs (a prior
brings its stage-1 model with it, read from ``model.stage1_run``), print one row per stage-1
model:

* ``recon MSE``: reconstruction error of ``--n-recon`` test items (images in [0, 1]; event
  runs: event counts, :func:`snngen.evaluation.reconstruction_mse`);
* ``perplexity``, ``used``, ``dead``: codebook usage over the codes of the same test items
  (``exp`` of the entropy of the code frequencies; codes never chosen are dead);
* ``bits/token``: the prior's test cross-entropy on those codes (prior runs only);
* ``FID`` / ``KID``: ``--n`` stage-2 samples against as many test items, on the feature network
  ``--features`` (default: snngen's in-package classifier of the run's dataset; event samples are
  compared as time-summed count images), exactly as ``snngen eval`` computes them;
* ``s/sample``: wall seconds per stage-2 sample (key/value-cached sampling and decoding), timed
  on one batch of ``--batch-size`` samples.

A stage-1 run that a listed prior already covers is not repeated. ``--json`` writes the rows.

    python benchmarks/vqvae_compare.py --runs runs/vq_prior_temporal_mnist5k_small \\
        runs/vq_prior_vanilla_mnist5k_small --json benchmarks/results/vqvae_mnist5k.json
    python benchmarks/vqvae_compare.py --runs runs/vqvae_*_saccade_small   # stage 1 only
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from snngen.errors import SnngenError
from snngen.evaluation import evaluate_model, generate, reconstruction_mse, test_batches
from snngen.runs import load_run, open_datasets

COLUMNS = [
    ("run", "run", "{}"),
    ("codebook", "codebook", "{}"),
    ("tokens", "tokens", "{}"),
    ("recon_mse", "recon MSE", "{:.5f}"),
    ("perplexity", "perplexity", "{:.1f}"),
    ("codes_used", "used", "{}"),
    ("dead_codes", "dead", "{}"),
    ("bits_per_token", "bits/token", "{:.3f}"),
    ("fid", "FID", "{:.2f}"),
    ("kid", "KID", "{:.4f}"),
    ("seconds_per_sample", "s/sample", "{:.4f}"),
]


def _same(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


@torch.no_grad()
def stage1_metrics(stage1: nn.Module, test_set: Dataset, n: int, batch_size: int) -> dict:
    """Reconstruction MSE and codebook usage of a stage-1 ``VQVAE`` on ``n`` test items."""
    stage1.eval()
    usage = stage1.codebook_stats(test_batches(test_set, n, batch_size))
    return {
        "codebook": stage1.cfg.codebook,
        "n_embed": stage1.cfg.n_embed,
        "time_steps": stage1.cfg.time_steps,
        "tokens": stage1.tokens_per_sample,
        "recon_mse": reconstruction_mse(stage1, test_set, n, batch_size)["value"],
        "n_recon": min(n, len(test_set)),
        "perplexity": usage["perplexity"],
        "codes_used": usage["used"],
        "dead_codes": usage["dead"],
    }


@torch.no_grad()
def prior_bits_per_token(prior: nn.Module, test_set: Dataset, n: int, batch_size: int) -> float:
    """Mean test cross-entropy of the prior in bits per token over ``n`` test items."""
    prior.eval()
    total, count = 0.0, 0
    for x in test_batches(test_set, n, batch_size):
        b = x.shape[1] if x.dim() == 5 else x.shape[0]
        total += float(prior.loss(x)["bits_per_token"]) * b
        count += b
    return total / max(count, 1)


def compare(
    run_dirs: list[str | Path],
    n: int = 1000,
    n_recon: int = 500,
    features: str | nn.Module = "classifier",
    seed: int = 0,
    batch_size: int = 250,
    test_set: Dataset | None = None,
) -> list[dict]:
    """Return one row (a dict, keys of :data:`COLUMNS` and more) per stage-1 model.

    ``test_set`` replaces the runs' own test split (for tests); ``features`` is passed to
    :func:`snngen.evaluation.evaluate_model` (a name or a feature module).
    """
    runs = [load_run(d) for d in run_dirs]
    for run in runs:
        if run.model.name not in ("vqvae", "vq_prior"):
            raise SnngenError(
                f"{run.path} holds a {run.model.name!r} run; vqvae_compare takes vqvae and "
                "vq_prior run folders"
            )
    covered = [r.cfg.model.stage1_run for r in runs if r.model.name == "vq_prior"]
    rows = []
    for run in runs:
        is_prior = run.model.name == "vq_prior"
        if not is_prior and any(_same(run.path, c) for c in covered):
            continue  # reported with its prior
        data = test_set if test_set is not None else open_datasets(run.cfg)[1]
        stage1 = run.model.stage1 if is_prior else run.model
        row: dict = {
            "run": run.path.name,
            "path": str(run.path),
            "stage1_run": str(run.cfg.model.stage1_run) if is_prior else str(run.path),
            "dataset": run.cfg.data.name,
            "events": run.info.events,
        }
        row.update(stage1_metrics(stage1, data, n_recon, batch_size))
        if is_prior:
            row["bits_per_token"] = prior_bits_per_token(run.model, data, n_recon, batch_size)
            k = min(n, batch_size)  # one batch, timed on its own
            t0 = time.perf_counter()
            generate(run.model, k, batch_size, seed=seed + 1)
            row["seconds_per_sample"] = (time.perf_counter() - t0) / k
            result = evaluate_model(
                run.model, run.cfg, data, ["fid", "kid"], n, features, seed=seed,
                batch_size=batch_size,
            )
            row["fid"], row["kid"] = result["fid"]["value"], result["kid"]["value"]
            row["kid_std"] = result["kid"].get("std")
            row["n_samples"] = result["fid"].get("n_fake")
            row["features"] = result["fid"].get("features")
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table (``-`` where a value does not apply)."""
    def cell(row: dict, key: str, fmt: str) -> str:
        v = row.get(key)
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "-"
        return fmt.format(v) if not isinstance(v, str) or fmt == "{}" else v

    table = [[title for _, title, _ in COLUMNS]]
    table += [[cell(r, key, fmt) for key, _, fmt in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(line, widths, strict=True))) for line in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="vqvae and/or vq_prior run folders")
    p.add_argument("--n", type=int, default=1000, help="stage-2 samples for FID/KID (1000)")
    p.add_argument("--n-recon", type=int, default=500, help="test items for MSE and usage (500)")
    p.add_argument("--features", default="classifier", help="classifier (default) | inception")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    rows = compare(args.runs, args.n, args.n_recon, args.features, args.seed, args.batch_size)
    print(format_table(rows))
    if args.json:
        out = {
            "benchmark": "vqvae_compare",
            "command": " ".join(sys.argv),
            "n_samples": args.n,
            "n_recon": args.n_recon,
            "features": args.features,
            "seed": args.seed,
            "torch": torch.__version__,
            "rows": rows,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
