"""LIF forward + backward speed and memory: snngen's fused kernel against its peers.

Every method runs forward and backward on the same ``[T, B, C, H, W]`` tensor (B=32, C=64,
16x16) with the same dense upstream gradient, for T = 4, 8, 16 in one run:

* ``relu``: ``torch.relu`` on the whole tensor (the floor: one elementwise op each way);
* ``snngen fused``: :class:`snngen.spiking.LIF` (spikingjelly form, tau 2, hard reset, atan),
  the fused backend's eager loops (``compile=False``); ``snngen fused (snntorch form)``:
  ``LIF(beta=0.5, v_reset=None)``, eager too;
* ``snngen fused (cpp)`` and ``snngen fused (cpp, snntorch form)``: the same neurons on the
  compiled C++ backend (``compile="cpp"``; built first if missing, ~30-60 s, reported; skipped
  with the build error if it cannot be built);
* ``snngen reference``: the same LIF through the plain-autograd time loop;
* ``spikingjelly torch``: ``LIFNode(step_mode='m')`` with its plain-autograd torch path
  (``backend='torch'`` where the installed version has that argument; in spikingjelly 2.x,
  whose CPU default is a fused op, the torch path is what a Python surrogate selects);
  ``spikingjelly 2.x CPU op``: its default CPU path, listed for information;
* ``snntorch``: ``snntorch.Leaky`` (beta 0.5, subtract reset, atan) stepped over time;
* ``snngen triton`` and ``snngen triton (snntorch form)`` (``--device cuda`` only, when Triton
  imports): the same neurons on the Triton kernels (``compile="triton"``).

``--device cuda`` runs every method on the GPU (the C++ rows, CPU-only, are left out) and times
wall clock around a ``torch.cuda.synchronize()``.

Times are medians over repeats of this thread's CPU time (with one intra-op thread that is all
the work, and unlike wall time it does not count time other processes hold the core; wall
medians are listed too); the methods run round-robin inside each repeat so that load from
other processes falls on all of them alike. Memory is the bytes autograd saves between
forward and backward (``torch.autograd.graph.saved_tensors_hooks``, unique storages): that is
what grows with depth x T in training, and it is exact and repeatable, whereas CPU peak memory
cannot be read from torch (no CPU allocator statistics; tracemalloc does not see torch's
allocations). Peers that are not installed are skipped with a line saying how to install them.

Allocator: by default glibc is told to keep freed memory (``mallopt``: no trimming, no mmap
for large blocks), as a training loop using tcmalloc/jemalloc would. Otherwise every 16 MB
output is returned to the OS when freed and page-faulted back in on the next call, and on a
virtual machine those faults (a few us per 4 KiB page) cost more than the arithmetic and depend
on glibc's heuristics rather than on the method. ``--malloc system`` keeps glibc's defaults.

Columns ``x fused`` / ``x cpp``: times slower than the eager / C++ fused kernel (the snnTorch
row and the snnTorch-form rows against the matching snnTorch form).

Usage: ``python benchmarks/neurons.py [--quick] [--threads N] [--malloc tuned|system]
[--compile] [--no-cpp] [--device cpu|cuda]``; prints a table (headed by the processor model,
:func:`processor_model`) and writes ``benchmarks/results/neurons.json`` (the model in
``config.processor``).
"""

from __future__ import annotations

import argparse
import ctypes
import inspect
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from snngen.spiking import LIF, _lif_cpp
from snngen.spiking.kernels import lif_fused

RESULTS = Path(__file__).parent / "results" / "neurons.json"
SHAPE = (32, 64, 16, 16)  # B, C, H, W

Method = Callable[[Tensor], Tensor]  # x [T, B, ...] -> spikes (or activations) [T, B, ...]


# --------------------------------------------------------------------------- methods


def snngen_methods() -> dict[str, Method]:
    """snngen's neurons and the ReLU floor."""
    fused, ref = LIF(tau=2.0, compile=False), LIF(tau=2.0, backend="reference")
    snn_form = LIF(beta=0.5, v_reset=None, compile=False)
    return {
        "relu": torch.relu,
        "snngen fused": fused,
        "snngen fused (snntorch form)": snn_form,
        "snngen reference": ref,
    }


def spikingjelly_methods() -> tuple[dict[str, Method], str | None]:
    """spikingjelly's multi-step LIFNode; ``(methods, skip message or None)``."""
    try:
        from spikingjelly.activation_based import neuron, surrogate
    except ImportError as err:
        return {}, (
            f"spikingjelly skipped ({err}); install it without torchvision: "
            "pip install --no-deps spikingjelly==2.0.0 && pip install loguru"
        )
    if "torchvision" in sys.modules:
        return {}, "spikingjelly skipped: importing it pulled in torchvision"
    atan = surrogate.ATan()  # alpha 2, as snngen's default
    params = inspect.signature(neuron.LIFNode.__init__).parameters
    methods: dict[str, Method] = {}
    if "backend" in params:  # spikingjelly <= 0.0.0.0.14
        node = neuron.LIFNode(tau=2.0, step_mode="m", backend="torch", surrogate_function=atan)
        methods["spikingjelly torch"] = _stateless(node)
    else:  # 2.x: a Python surrogate selects the plain-autograd torch path
        node = neuron.LIFNode(tau=2.0, step_mode="m", surrogate_function=lambda z: atan(z))
        methods["spikingjelly torch"] = _stateless(node)
        default = neuron.LIFNode(tau=2.0, step_mode="m", surrogate_function=atan)
        methods["spikingjelly 2.x CPU op"] = _stateless(default)
    return methods, None


def _stateless(node) -> Method:
    """Call a stateful spikingjelly node from rest (reset its state after every call)."""

    def run(x: Tensor) -> Tensor:
        out = node(x)
        node.reset()
        return out

    return run


def snntorch_methods() -> tuple[dict[str, Method], str | None]:
    """snnTorch's Leaky stepped over time; ``(methods, skip message or None)``."""
    try:
        import snntorch
    except ImportError as err:
        return {}, f"snntorch skipped ({err}); install it: pip install snntorch==1.0.0 --no-deps"
    leaky = snntorch.Leaky(beta=0.5)  # subtract reset, threshold 1, atan surrogate

    def run(x: Tensor) -> Tensor:
        mem = leaky.init_leaky()
        spikes = []
        for t in range(x.shape[0]):
            spk, mem = leaky(x[t], mem)
            spikes.append(spk)
        return torch.stack(spikes)

    return {"snntorch": run}, None


def triton_methods(device: torch.device) -> tuple[dict[str, Method], str | None]:
    """snngen's Triton kernels (CUDA only); ``(methods, skip message or None)``."""
    if device.type != "cuda":
        return {}, "snngen triton skipped: a CPU run (the Triton kernels run with --device cuda)"
    try:
        from snngen.spiking import triton_lif  # noqa: F401
    except ImportError as err:
        return {}, f"snngen triton skipped ({err}); install triton"
    return {
        "snngen triton": LIF(tau=2.0, compile="triton"),
        "snngen triton (snntorch form)": LIF(beta=0.5, v_reset=None, compile="triton"),
    }, None


def cpp_methods() -> tuple[dict[str, Method], str | None, float]:
    """snngen's C++ backend (built here when missing); ``(methods, skip message, seconds)``."""
    start = time.perf_counter()
    module = _lif_cpp.load(build=True)
    took = time.perf_counter() - start
    if module is None:
        return {}, f"snngen fused (cpp) skipped: {_lif_cpp.last_error()}", took
    return {
        "snngen fused (cpp)": LIF(tau=2.0, compile="cpp"),
        "snngen fused (cpp, snntorch form)": LIF(beta=0.5, v_reset=None, compile="cpp"),
    }, None, took


# --------------------------------------------------------------------------- measuring


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse (see the module docstring); False if not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    big = 1 << 30
    return bool(libc.mallopt(m_trim_threshold, big)) and bool(libc.mallopt(m_mmap_threshold, big))


def fwd_bwd(method: Method, x0: Tensor, grad: Tensor) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of one forward + backward of ``method`` on a leaf copy of ``x0``.

    ``cpu`` is this thread's CPU time: with one intra-op thread (and CPU autograd running on
    the calling thread) it is all the work done, and unlike wall time it does not count the
    time other processes hold the core.
    """
    x = x0.detach().requires_grad_()
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    wall, cpu = time.perf_counter(), time.thread_time()
    method(x).backward(grad)
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return time.perf_counter() - wall, time.thread_time() - cpu


def saved_bytes(method: Method, x0: Tensor) -> int:
    """Bytes of the unique storages autograd saves for backward during ``method(x0)``."""
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    x = x0.detach().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = method(x)
    del out
    return sum(storages.values())


def spike_mismatch(a: Method, b: Method, x: Tensor) -> float:
    """Fraction of spikes on which two neurons disagree (a correctness check of the peers)."""
    with torch.no_grad():
        return (a(x) != b(x)).float().mean().item()


def run(
    steps: list[int], repeats: int, warmup: int, compile_too: bool, malloc: str, clock: str,
    cpp_too: bool = True, device: torch.device | str = "cpu",
) -> dict:
    """Time every available method at every T; returns the JSON-able results.

    ``clock``: ``"cpu"`` (thread CPU time; ratios use it) or ``"wall"``.
    """
    device = torch.device(device)
    methods = snngen_methods()
    skipped = []
    for extra, message in (spikingjelly_methods(), snntorch_methods(), triton_methods(device)):
        methods.update(extra)
        if message:
            skipped.append(message)
    cpp_seconds = None
    if cpp_too and device.type == "cpu":
        extra, message, cpp_seconds = cpp_methods()
        methods.update(extra)
        if message:
            skipped.append(message)
    compile_info = {}
    if compile_too:
        spec = LIF(tau=2.0).spec
        methods["snngen fused (compiled)"] = lambda x: lif_fused(x, 0.5, spec, compile=True)[0]
    gen = torch.Generator().manual_seed(0)
    rows = []
    for t in steps:
        x0 = torch.randn(t, *SHAPE, generator=gen).to(device)
        grad = torch.randn(t, *SHAPE, generator=gen).to(device)
        for name, method in methods.items():  # warm-up (and compile, where asked)
            start = time.perf_counter()
            for _ in range(warmup):
                fwd_bwd(method, x0, grad)
            if "compiled" in name:
                compile_info[t] = time.perf_counter() - start
        walls: dict[str, list[float]] = {name: [] for name in methods}
        times: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(repeats):
            for name, method in methods.items():
                wall, cpu = fwd_bwd(method, x0, grad)
                walls[name].append(wall)
                times[name].append(cpu if clock == "cpu" else wall)
        relu = statistics.median(times["relu"])
        fused = statistics.median(times["snngen fused"])
        fused_snn = statistics.median(times["snngen fused (snntorch form)"])
        has_cpp = "snngen fused (cpp)" in times
        if has_cpp:
            cpp = statistics.median(times["snngen fused (cpp)"])
            cpp_snn = statistics.median(times["snngen fused (cpp, snntorch form)"])
        memory = {name: saved_bytes(m, x0) for name, m in methods.items()}
        for name in methods:
            med = statistics.median(times[name])
            snn_like = name == "snntorch" or "snntorch form" in name
            ours = fused_snn if snn_like else fused
            rows.append({
                "T": t,
                "method": name,
                "median_ms": 1e3 * med,
                "median_wall_ms": 1e3 * statistics.median(walls[name]),
                "x_relu": med / relu,
                "speedup_of_fused": med / ours,
                "speedup_of_cpp": (
                    med / (cpp_snn if snn_like else cpp) if has_cpp else None
                ),
                "saved_MB": memory[name] / 2**20,
                "saved_vs_reference": memory[name] / memory["snngen reference"],
            })
    checks = {}
    x = (torch.randn(8, 4, 8, 8, 8, generator=gen) * 1.5).to(device)
    if "spikingjelly torch" in methods:
        checks["spike mismatch fused vs spikingjelly"] = spike_mismatch(
            methods["snngen fused"], methods["spikingjelly torch"], x
        )
    if "snngen fused (cpp)" in methods:
        checks["spike mismatch fused (cpp) vs fused"] = spike_mismatch(
            methods["snngen fused (cpp)"], methods["snngen fused"], x
        )
    if "snntorch" in methods:
        checks["spike mismatch fused (snntorch form) vs snntorch"] = spike_mismatch(
            methods["snngen fused (snntorch form)"], methods["snntorch"], x
        )
    return {
        "config": {
            "shape": "T x " + "x".join(map(str, SHAPE)),
            "steps": steps,
            "repeats": repeats,
            "threads": torch.get_num_threads(),
            "malloc": malloc,
            "clock": clock,
            "torch": torch.__version__,
            "device": str(device),
            "machine": platform.processor() or platform.machine(),
            "processor": processor_model(),
            "peers": _versions(),
            "memory": "bytes autograd saves between forward and backward (unique storages)",
        },
        "skipped": skipped,
        "compile_seconds_first_calls": compile_info,
        "cpp_build_or_load_seconds": cpp_seconds,
        "checks": checks,
        "rows": rows,
    }


def processor_model() -> str:
    """The CPU model: ``model name`` in ``/proc/cpuinfo`` (Linux), else ``platform.processor()``
    (else ``platform.machine()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _versions() -> dict[str, str]:
    out = {}
    for name in ("spikingjelly", "snntorch"):
        try:
            from importlib.metadata import version

            out[name] = version(name)
        except Exception:  # not installed
            pass
    return out


def print_table(result: dict) -> None:
    """Print the results as a fixed-width table."""
    cfg = result["config"]
    print(
        f"LIF forward+backward, x = [T, {', '.join(map(str, SHAPE))}], median of "
        f"{cfg['repeats']} repeats, {cfg['threads']} thread(s), malloc {cfg['malloc']}, "
        f"torch {cfg['torch']}, device {cfg.get('device', 'cpu')}"
    )
    print(f"processor: {cfg.get('processor') or cfg.get('machine', 'unknown')}")
    print(
        f"ms = median {cfg['clock']} time of forward+backward (cpu: this thread's CPU time, "
        "immune to other processes' load; wall ms also shown)"
    )
    print(
        "saved MB = bytes autograd keeps from forward to backward (saved_tensors_hooks, unique "
        "storages; torch has no CPU peak-memory counter)"
    )
    print(
        "x fused / x cpp = times slower than snngen fused (eager) / fused (cpp) (snntorch and "
        "snntorch-form rows: vs the matching snntorch form)"
    )
    header = (
        f"{'T':>3}  {'method':34s} {'ms':>8} {'wall ms':>8} {'x relu':>7} {'x fused':>8} "
        f"{'x cpp':>7} {'saved MB':>9} {'vs ref':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in result["rows"]:
        x_cpp = "-" if r["speedup_of_cpp"] is None else f"{r['speedup_of_cpp']:.2f}"
        print(
            f"{r['T']:>3}  {r['method']:34s} {r['median_ms']:8.2f} {r['median_wall_ms']:8.2f} "
            f"{r['x_relu']:7.2f} {r['speedup_of_fused']:8.2f} {x_cpp:>7} "
            f"{r['saved_MB']:9.1f} {r['saved_vs_reference']:7.2f}"
        )
    for message in result["skipped"]:
        print(message)
    for name, value in result["checks"].items():
        print(f"{name}: {value:.2e}")
    if result.get("cpp_build_or_load_seconds") is not None:
        seconds = result["cpp_build_or_load_seconds"]
        print(f"fused (cpp): extension built or loaded in {seconds:.1f} s")
    for t, sec in result["compile_seconds_first_calls"].items():
        print(f"compiled fused: warm-up incl. compiling at T={t}: {sec:.1f} s")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T=8 only, 5 repeats")
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="intra-op threads (default 1: stable timings on a shared 2-core machine)",
    )
    parser.add_argument(
        "--malloc", choices=("tuned", "system"), default="tuned",
        help="tuned: glibc keeps freed memory (default); system: glibc defaults",
    )
    parser.add_argument(
        "--clock", choices=("cpu", "wall"), default=None,
        help="time to report and compare (default: cpu with 1 thread, else wall)",
    )
    parser.add_argument("--compile", action="store_true", help="also time compile=True")
    parser.add_argument(
        "--no-cpp", action="store_true", help="skip the C++ backend (which is built if missing)"
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu",
        help="where to run (cuda: adds the Triton rows, drops the C++ ones; wall clock)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    malloc = args.malloc
    if malloc == "tuned" and not keep_freed_memory():
        malloc = "system (mallopt unavailable)"
    steps, repeats = ([8], 5) if args.quick else (args.steps, args.repeats)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    clock = args.clock or ("cpu" if args.threads == 1 and args.device == "cpu" else "wall")
    result = run(
        steps, repeats, warmup=2, compile_too=args.compile, malloc=malloc, clock=clock,
        cpp_too=not args.no_cpp, device=args.device,
    )
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
