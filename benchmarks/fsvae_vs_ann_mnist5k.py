"""FSVAE against its ANN VAE twin on the bundled MNIST subset, same shapes and budget.

Trains ``configs/fsvae_mnist5k.yaml`` and ``configs/ann_vae_mnist5k.yaml`` with ``snngen train``
(each run ends with its evaluation: reconstruction MSE on the test split in [0, 1], FID and KID
of ``eval.n_samples`` samples on the configured feature network), then measures per-image
compute with the monitor (``snngen info``: SOPs, MACs, energy) and prints one Markdown table.

    python benchmarks/fsvae_vs_ann_mnist5k.py                       # full budget (5 epochs)
    python benchmarks/fsvae_vs_ann_mnist5k.py trainer.max_epochs=1  # overrides go to both runs
    python benchmarks/fsvae_vs_ann_mnist5k.py --json table.json --out-dir runs/bench
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

CONFIGS = ("configs/fsvae_mnist5k.yaml", "configs/ann_vae_mnist5k.yaml")


def train_and_measure(config: str, overrides: list[str], out_dir: str) -> dict:
    """Train one config, return its metrics, compute cost and wall time."""
    from snngen.cli import main as snngen
    from snngen.config import load_config
    from snngen.evaluation import model_info
    from snngen.runs import load_run, open_datasets

    name = load_config(config).name
    overrides = [*overrides, f"out_dir={out_dir}", f"name={name}"]
    t0 = time.perf_counter()
    if snngen(["train", config, *overrides]) != 0:
        raise RuntimeError(f"training {config} failed")
    seconds = time.perf_counter() - t0
    run_dir = Path(out_dir) / name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run = load_run(run_dir)
    _, test_set = open_datasets(run.cfg)
    info = model_info(run.model, test_set, n=16)
    return {"run": str(run_dir), "train_eval_s": seconds, "metrics": metrics,
            "totals": info["totals"], "parameters": info["parameters"]}


def _value(metrics: dict, key: str) -> str:
    entry = metrics.get(key)
    if isinstance(entry, dict) and "value" in entry:
        return f"{entry['value']:.4g}"
    return "-"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="key=value applied to both configs")
    ap.add_argument("--out-dir", default="runs/fsvae_vs_ann")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = {c: train_and_measure(c, args.overrides, args.out_dir) for c in CONFIGS}
    print("| model | recon MSE | FID | KID | SOPs / img | MACs / img | energy (uJ) "
          "| train+eval (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for config, r in rows.items():
        m, t = r["metrics"], r["totals"]
        print(f"| {Path(config).stem} | {_value(m, 'mse')} | {_value(m, 'fid')} | "
              f"{_value(m, 'kid')} | {t['sops']:,.0f} | {t['macs']:,.0f} | "
              f"{t['energy_pj'] / 1e6:.2f} | {r['train_eval_s']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))
    return rows


if __name__ == "__main__":
    main()
