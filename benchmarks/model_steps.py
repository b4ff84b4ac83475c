"""Whole-model training steps: spiking networks against the same networks with ReLU.

Rows (each a paper config, timed by ``paper_step_times.step_seconds``: loss, backward and
optimiser step at the config's full width, after one warm-up step):

* SDDPM CIFAR-10 (``configs/sddpm_cifar10.yaml``: ch 128, T=4) at batch 128, and the same U-Net
  with ReLU instead of IF neurons (``model.neuron=relu``, same T);
* FSVAE CelebA (``configs/fsvae_celeba.yaml``) at its batch, and with ``model.neuron=relu``.

The ratio spiking / ReLU is the cost of the neurons inside a whole model (issue 14's target on an
H100/H200: SDDPM <= 1.3x). Prints a table and writes JSON.

    python benchmarks/model_steps.py --device cuda
    python benchmarks/model_steps.py --batch 4          # a CPU smoke run, scaled to the batch
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import write_timings  # noqa: E402
from paper_step_times import step_seconds  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ROWS = [
    ("sddpm_cifar10", "spiking (IF)", ["data.batch_size=128"]),
    ("sddpm_cifar10", "ReLU", ["data.batch_size=128", "model.neuron=relu"]),
    ("fsvae_celeba", "spiking (LIF)", []),
    ("fsvae_celeba", "ReLU", ["model.neuron=relu"]),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=None, help="measure at this batch, scale up")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "model_steps.json"))
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    print(f"{'config':<16}{'neurons':<16}{'batch':>6}{'s/step':>10}{'x ReLU':>8}")
    for name, kind, overrides in ROWS:
        r = step_seconds(name, args.batch, args.repeat, device, overrides)
        r["neurons"] = kind
        rows.append(r)
    for r in rows:
        relu = next(x for x in rows if x["config"] == r["config"] and x["neurons"] == "ReLU")
        r["ratio_to_relu"] = r["s_per_step"] / relu["s_per_step"]
        print(f"{r['config']:<16}{r['neurons']:<16}{r['batch']:>6}{r['s_per_step']:>10.3f}"
              f"{r['ratio_to_relu']:>8.2f}")
    write_timings(args.json, device, torch=torch.__version__, rows=rows,
                  gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
