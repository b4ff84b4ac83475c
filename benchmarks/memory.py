"""Training memory against the number of SNN steps T, with and without activation checkpointing.

The SDDPM CIFAR-10 network (``configs/sddpm_cifar10.yaml``: spiking U-Net ch 128, ch_mult
[1, 2, 2, 4], 2 residual blocks per level, IF neurons) at a small batch, T = 2, 4, 8: one
training step (the eps-MSE loss and its backward pass; the optimiser step is left out, it is the
same with and without checkpointing) with ``trainer.checkpoint_activations`` off and on
(:func:`snngen.spiking.checkpointing.enable_activation_checkpointing`: every residual block,
down- and up-sampling recomputed in the backward pass).

Columns, in MB above what was allocated before the step (the weights and the input batch):
``held`` is what autograd keeps between the forward and the backward pass (allocated at the end
of the forward), ``peak`` the most allocated at any time of the step (backward, recomputation
and the weights' gradients included); ``s/step`` the median wall time of ``--repeat`` steps after
a first one, and ``x`` the checkpointed step's time over the plain one (the recomputation's cost).

How memory is measured: on CUDA, the caching allocator's statistics
(``torch.cuda.memory_allocated`` / ``max_memory_allocated``). On the CPU, under
``torch.profiler`` with ``profile_memory=True``: every allocation and free of torch's CPU
allocator is recorded with the allocator's running total of allocated bytes, whose maximum over
the step is the peak and whose value at the start of the backward pass (a ``record_function``
mark) is what the forward left held. This counts every tensor (activations, autograd's saved
tensors, temporaries, gradients), not an estimate from shapes; memory outside torch's allocator
(oneDNN scratch buffers, the Python heap) is not counted, and is the same with and without
checkpointing. The first step of each row runs under the profiler (it is also the warm-up; the
profiler slows it, so it is not timed); on CUDA a warm-up step comes before the measured one.

    python benchmarks/memory.py            # full width, batch 2, T = 2 4 8 (CPU: ~20 min)
    python benchmarks/memory.py --quick    # ch 32: the same table in ~1 min on a CPU
    python benchmarks/memory.py --device cuda --batch 4 --repeat 3

Prints a table and writes JSON (default ``benchmarks/results/memory.json``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from snngen.config import load_config
from snngen.importers.run_folder import config_data_info
from snngen.runs import build_checked_model
from snngen.spiking.checkpointing import enable_activation_checkpointing

sys.path.append(str(Path(__file__).resolve().parent))  # bench_common, also when loaded by path
from bench_common import write_timings  # noqa: E402
from neurons import processor_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sddpm_cifar10.yaml"
MARK = "snngen::backward"
MB = 2**20


def _walk(nodes):
    for node in nodes:
        yield node
        yield from _walk(node.children)


def cpu_memory(forward: Callable[[], torch.Tensor]) -> tuple[int, int]:
    """``(held, peak)`` bytes above the start of one ``forward().backward()`` on the CPU, from
    the CPU allocator's running total recorded by the profiler (module docstring)."""
    from torch._C._profiler import _EventType  # private: imported only where it is needed

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss = forward()
        with record_function(MARK):
            pass
        loss.backward()
        del loss
    events = list(_walk(prof.profiler.kineto_results.experimental_event_tree()))
    mark = min(e.start_time_ns for e in events if e.name == MARK)
    allocs = sorted(
        (e.start_time_ns, e.typed[1].alloc_size, e.typed[1].total_allocated)
        for e in events
        if e.typed[0] == _EventType.Allocation and e.typed[1].device.type == "cpu"
    )
    if not allocs:
        raise RuntimeError("the profiler recorded no CPU allocations")
    _, size0, total0 = allocs[0]
    base = total0 - size0  # allocated before the first allocation of the step
    before = [total for t, _, total in allocs if t < mark]
    held = before[-1] if before else base
    return held - base, max(total for _, _, total in allocs) - base


def cuda_memory(forward: Callable[[], torch.Tensor], device: torch.device) -> tuple[int, int]:
    """``(held, peak)`` bytes above the start of one ``forward().backward()`` on ``device``."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    loss = forward()
    held = torch.cuda.memory_allocated(device) - base
    loss.backward()
    del loss
    torch.cuda.synchronize(device)
    return held, torch.cuda.max_memory_allocated(device) - base


def measure(timesteps: int, checkpointing: bool, args, device: torch.device) -> dict:
    """One row: memory of a first (profiled) step, then the median time of ``args.repeat``."""
    overrides = [f"model.timesteps={timesteps}"] + ([f"model.ch={args.ch}"] if args.ch else [])
    cfg = load_config(CONFIG, overrides)
    info = config_data_info(cfg)
    torch.manual_seed(0)
    model = build_checked_model(cfg.model, info).to(device).train()
    enable_activation_checkpointing(model, checkpointing)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, info.channels, info.image_size, info.image_size, generator=gen)
    x = x.to(device)

    def forward() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same diffusion times and noise in every row
        return model.loss(x)["loss"]

    if device.type == "cuda":
        forward().backward()  # warm-up (kernel compilation, cuDNN/cuBLAS workspaces)
        held, peak = cuda_memory(forward, device)
    else:
        held, peak = cpu_memory(forward)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        forward().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return {"timesteps": timesteps, "checkpointing": checkpointing, "held_mb": held / MB,
            "peak_mb": peak / MB, "s_per_step": statistics.median(times)}


def print_table(rows: list[dict]) -> None:
    print(f"{'T':>3} {'held MB':>9} {'ckpt':>9} {'ratio':>6} {'peak MB':>9} {'ckpt':>9} "
          f"{'ratio':>6} {'s/step':>8} {'ckpt':>8} {'x':>6}")
    for t in sorted({r["timesteps"] for r in rows}):
        off, on = (next(r for r in rows if r["timesteps"] == t and r["checkpointing"] is c)
                   for c in (False, True))
        print(f"{t:>3} {off['held_mb']:>9.1f} {on['held_mb']:>9.1f} "
              f"{on['held_mb'] / off['held_mb']:>6.2f} {off['peak_mb']:>9.1f} "
              f"{on['peak_mb']:>9.1f} {on['peak_mb'] / off['peak_mb']:>6.2f} "
              f"{off['s_per_step']:>8.2f} {on['s_per_step']:>8.2f} "
              f"{on['s_per_step'] / off['s_per_step']:>6.2f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--timesteps", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="timed steps per row (median)")
    ap.add_argument("--ch", type=int, default=None, help="U-Net width (default the config's)")
    ap.add_argument("--quick", action="store_true", help="--ch 32 (a smaller U-Net)")
    ap.add_argument("--threads", type=int, default=None,
                    help="intra-op threads (default 1 on the CPU: steady times on a shared "
                         "machine; the memory does not depend on it)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory.json"))
    args = ap.parse_args(argv)
    if args.quick and args.ch is None:
        args.ch = 32
    device = torch.device(args.device)
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    cuda = device.type == "cuda"
    processor = torch.cuda.get_device_name(device) if cuda else processor_model()
    threads = None if cuda else torch.get_num_threads()
    print(f"SDDPM CIFAR-10 U-Net (ch {args.ch or 128}), batch {args.batch}, {processor}"
          + ("" if cuda else f", {threads} thread(s)"))
    rows = []
    for t in args.timesteps:
        for on in (False, True):
            rows.append(measure(t, on, args, device))
    print_table(rows)
    write_timings(args.out, device, processor=processor, threads=threads, torch=torch.__version__,
                  config="sddpm_cifar10", batch=args.batch, ch=args.ch or 128, rows=rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
