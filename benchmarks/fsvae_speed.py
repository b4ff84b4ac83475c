"""FSVAE training-step speed and compute cost, against its ReLU twin and the ANN VAE.

One training step = ``loss`` + backward + AdamW step, at batch 64 and T = 16 (MNIST 32x32, the
paper's network). Rows:

* ``fsvae``: FSVAE with LIF neurons (the fused LIF kernel; compiled unless SNNGEN_COMPILE=0);
* ``fsvae_relu``: the same network with every LIF replaced by ReLU, T folded into the batch,
  autoregressive loops included: the ratio ``fsvae / fsvae_relu`` is the neuron overhead
  (issue target <= 1.5);
* ``ann_vae``: the Gaussian ANN VAE of the same shapes (one time step).

Compute cost per image of ``reconstruct`` in eval mode (see :func:`cost`): from
``snngen.spiking.Monitor``, which counts each layer call and neuron update once, SOPs
(accumulates fed by spikes), MACs (fed by real values) and energy at 0.9 pJ / SOP and
4.6 pJ / MAC; and, for the spiking FSVAE, additions / multiplications counted as the original
code counts them (``snngen.models.fsvae_cost``, the same count as ``snngen info --count
original``; its posterior prefix re-runs make it larger than the monitor's online count). The
rows take turns step by step, so a changing machine load hits them alike.

    python benchmarks/fsvae_speed.py                      # table; --json out.json to save
    SNNGEN_COMPILE=0 python benchmarks/fsvae_speed.py     # eager LIF kernel
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from snngen.config import build_run_config
from snngen.models import DataInfo, build_model
from snngen.models.fsvae_cost import count_original
from snngen.spiking.monitor import Monitor


def make(name: str, **model) -> torch.nn.Module:
    cfg = build_run_config({"model": {"name": name, **model}})
    return build_model(cfg.model, DataInfo(channels=1, image_size=32))


def step_times(models: dict, x: torch.Tensor, warmup: int, repeats: int) -> dict[str, list]:
    """Seconds per training step (loss, backward, AdamW step) of each model, after ``warmup``
    steps. The models take turns step by step, so a changing machine load hits all alike."""
    opts = {n: torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=1e-3)
            for n, m in models.items()}
    times: dict[str, list] = {n: [] for n in models}
    for i in range(warmup + repeats):
        for name, model in models.items():
            model.train()
            t0 = time.perf_counter()
            losses = model.loss(x)
            opts[name].zero_grad(set_to_none=True)
            losses["loss"].backward()
            opts[name].step()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


@torch.no_grad()
def cost(model, x: torch.Tensor) -> dict:
    """Per-image compute of ``reconstruct(x)`` in eval mode.

    From the monitor (each layer and neuron update counted once, as an online SNN runs it):
    ``sops`` (accumulates fed by spikes), ``macs`` (multiply-accumulates fed by real values),
    ``energy_pj``, ``firing_rate``. For the spiking FSVAE also ``adds`` / ``mults`` as the
    original code counts them (:func:`snngen.models.fsvae_cost.count_original`, the one
    implementation behind ``snngen info --count original``: the posterior's O(T^2) prefix
    re-runs, the prior, transposed-conv additions x stride^2, biases and neuron updates
    included); ``None`` for the other rows.
    """
    model.eval()
    with Monitor(model, n_samples=x.shape[0]) as mon:
        model.reconstruct(x, generator=torch.Generator().manual_seed(0))
    t = mon.totals()
    out = {k: t[k] for k in ("sops", "macs", "energy_pj", "firing_rate")}
    out["adds"] = out["mults"] = None
    if model.name == "fsvae" and model.cfg.neuron == "lif":
        count = count_original(model, x, generator=torch.Generator().manual_seed(0))
        out["adds"], out["mults"] = count.additions, count.multiplications
    return out


def _num(value: float | None, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width},.0f}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=16, help="time steps T")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", default="fsvae,fsvae_relu,ann_vae")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, 32, 32)
    builders = {
        "fsvae": lambda: make("fsvae", num_steps=args.steps),
        "fsvae_relu": lambda: make("fsvae", num_steps=args.steps, neuron="relu"),
        "ann_vae": lambda: make("ann_vae"),
    }
    models = {name: builders[name]() for name in args.rows.split(",")}
    times = step_times(models, x, args.warmup, args.repeats)
    rows = {}
    for name, model in models.items():
        rows[name] = {
            "step_s": statistics.median(times[name]),
            "step_s_all": times[name],
            "params": sum(p.numel() for p in model.parameters()),
            **cost(model, x[:16]),
        }
    result = {
        "batch": args.batch,
        "T": args.steps,
        "threads": torch.get_num_threads(),
        "compile": os.environ.get("SNNGEN_COMPILE", "auto"),
        "load_avg": os.getloadavg(),
        "rows": rows,
    }
    if "fsvae" in rows and "fsvae_relu" in rows:
        result["lif_over_relu"] = rows["fsvae"]["step_s"] / rows["fsvae_relu"]["step_s"]
    print(f"batch {args.batch}, T {args.steps}, {result['threads']} threads, "
          f"SNNGEN_COMPILE={result['compile']}, load avg {result['load_avg'][0]:.1f}")
    print(f"{'model':<12}{'s/step':>8}{'params':>11}{'SOPs/img':>13}{'MACs/img':>13}"
          f"{'adds/img':>13}{'mults/img':>13}{'energy uJ':>10}{'rate':>7}")
    for name, r in rows.items():
        rate = "" if r["firing_rate"] is None else f"{r['firing_rate']:.3f}"
        print(f"{name:<12}{r['step_s']:>8.2f}{r['params']:>11,}{r['sops']:>13,.0f}"
              f"{r['macs']:>13,.0f}{_num(r['adds'], 13)}{_num(r['mults'], 13)}"
              f"{r['energy_pj'] / 1e6:>10.2f}{rate:>7}")
    if "lif_over_relu" in result:
        print(f"LIF / ReLU step time: {result['lif_over_relu']:.2f} (target <= 1.5)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
