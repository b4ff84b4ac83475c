"""FSVAE training-step speed and compute cost, against its ReLU twin and the ANN VAE.

One training step = ``loss`` + backward + AdamW step, at batch 64 and T = 16 (MNIST 32x32, the
paper's network). Rows:

* ``fsvae``: FSVAE with LIF neurons (the fused LIF kernel; compiled unless SNNGEN_COMPILE=0);
* ``fsvae_relu``: the same network with every LIF replaced by ReLU, T folded into the batch,
  autoregressive loops included: the ratio ``fsvae / fsvae_relu`` is the neuron overhead
  (issue target <= 1.5);
* ``ann_vae``: the Gaussian ANN VAE of the same shapes (one time step).

Compute cost per image (``snngen.spiking.Monitor`` on ``reconstruct`` in eval mode, where the
posterior steps one frame at a time): SOPs (accumulates fed by spikes), MACs (fed by real
values), energy at 0.9 pJ / SOP and 4.6 pJ / MAC, and additions / multiplications counted as
the original code counts them (see :func:`cost`). The rows take turns step by step, so a
changing machine load hits them alike.

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
from snngen.spiking.monitor import Monitor
from snngen.spiking.neurons import MultiStepNeuron


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

    From the monitor: ``sops`` (accumulates fed by spikes), ``macs`` (multiply-accumulates fed
    by real values), ``energy_pj``, ``firing_rate``. As the original code counts them
    (``CountMulAddSNN`` / ``CountMulAddANN``, biases left out): ``adds`` = SOPs + MACs + one add
    per neuron update, ``mults`` = MACs + one leak multiply per neuron update without a spike.
    """
    model.eval()
    steps = {"all": 0, "silent": 0}

    def count(_m, _args, out):
        s = out[0] if isinstance(out, tuple) else out
        steps["all"] += s.numel()
        steps["silent"] += int((s == 0).sum())

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, MultiStepNeuron)]
    with Monitor(model, n_samples=x.shape[0]) as mon:
        model.reconstruct(x, generator=torch.Generator().manual_seed(0))
    for h in hooks:
        h.remove()
    t = mon.totals()
    n = x.shape[0]
    return {
        **{k: t[k] for k in ("sops", "macs", "energy_pj", "firing_rate")},
        "adds": t["sops"] + t["macs"] + steps["all"] / n,
        "mults": t["macs"] + steps["silent"] / n,
    }


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
              f"{r['macs']:>13,.0f}{r['adds']:>13,.0f}{r['mults']:>13,.0f}"
              f"{r['energy_pj'] / 1e6:>10.2f}{rate:>7}")
    if "lif_over_relu" in result:
        print(f"LIF / ReLU step time: {result['lif_over_relu']:.2f} (target <= 1.5)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
