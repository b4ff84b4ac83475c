"""Optional compiled C++ CPU backend of the fused multi-step LIF (:mod:`snngen.spiking.kernels`).

The whole time loop runs per element in one pass: the forward reads ``x`` [T, N] once and writes
the spikes and the membrane ``h`` (each [T, N]) once; the backward is one reverse pass over the
saved ``h`` (plus ``x`` where a derivative needs it) and the output gradients, writing ``dL/dx``.
Elements are processed in blocks of 2048 whose state stays in L1-resident rows, the blocks
spread over the intra-op threads with ``at::parallel_for``; the inner loops are written so that
gcc vectorises them (``-O3 -march=native``). Outputs (spikes, ``h``, ``dL/dx``) are computed
into those rows and then written with non-temporal (streaming) stores where the CPU has AVX or
AVX-512: a [T, N] output is far larger than the caches and is not read back by the kernel, and
an ordinary store would first read each cache line in (read-for-ownership), doubling the
write traffic. At T=8 on the benchmark tensor (snnTorch form, one thread) that took the forward
from ~3.9 to ~2.3 ms and the backward from ~4.5 to ~3.6 ms. Compiled with
``-DSNNGEN_STREAM=0`` (not a default flag), the rows are copied out with plain stores.
The backward computes the surrogate derivative inside its one loop over a block (a type per
surrogate, ``SurGrad``; the float32 sigmoid with the kernel's own vectorisable ``exp``, a
Cody-Waite reduction and Cephes' polynomial, ~1 ulp, since gcc does not vectorise ``std::exp``:
its backward went from ~25 to ~5.5 ms at T=8; only the float64 sigmoid keeps a scalar pass of its
own) and leaves the membrane-gradient term out when no membrane gradient is given, rather
than reading a row of zeros: on the AMD EPYC VM of this project, T=8, one thread, that took the
backward kernel from ~4.9 to ~3.3 ms (forward + backward from 1.72x to 1.35x a ReLU's two
calls, measured back to back), with bit-identical gradients.

Exactness: the forward performs, element by element, the very operations ATen performs for the
eager step primitives on this machine's vector units (``torch.add(x, v, alpha=a)`` and
``addcmul`` with a 0-dim tensor are a fused multiply-add ``fma(v, a, x)``; ``torch.lerp`` is
``fma(w, end - v, v)`` for ``|w| < 0.5`` else ``fma(w - 1, end - v, end)``), with the same
constants rounded the same way (computed in Python by :func:`forward_constants`), and is built
with ``-ffp-contract=off`` so that gcc adds no other contraction: spikes and membranes are
bit-identical to :func:`snngen.spiking.kernels.lif_reference` (tested). The backward follows the
same BPTT as the eager fused loop, with the surrogate derivatives of
:mod:`snngen.spiking.surrogate` written out (agreeing to rounding, tested within 1e-5).

Building: :func:`load` compiles ``lif_kernel.cpp`` (beside this module) with
``torch.utils.cpp_extension.load_inline``
(gcc, ~30-60 s once) into the torch extensions directory (``TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions/py<version>_<cpu|cu...>``) under a name carrying a hash of the
source, flags, torch version and the CPU's instruction-set features (:func:`cpu_features`), so a
changed source never loads a stale library, and a node of a cluster sharing its home folder with
nodes of another CPU never loads a library built with ``-march=native`` for an instruction set
it lacks (an illegal instruction). :func:`is_built` says, without building, whether
that library is already there; :func:`load` with ``build=False`` only imports it. Build ahead
of time with ``python -m snngen.spiking._lif_cpp``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from snngen.spiking.surrogate import ATan, FastSigmoid, Rectangular, Sigmoid, Triangle

# form codes shared with the C++ source
_FORM_CODES = {("spikingjelly", True): 0, ("spikingjelly", False): 1, ("snntorch", True): 2,
               ("snntorch", False): 2, ("fsvae", True): 3, ("fsvae", False): 3, ("if", True): 4,
               ("if", False): 4}
# surrogate codes: exact types only (a subclass may override ``grad``: it runs eagerly)
_SURROGATE_CODES = {ATan: 0, Sigmoid: 1, Rectangular: 2, Triangle: 3, FastSigmoid: 4}
DTYPES = (torch.float32, torch.float64)

#: the kernel's C++ source (``lif_kernel.cpp`` beside this module)
CPP_SOURCE = Path(__file__).with_name("lif_kernel.cpp").read_text(encoding="utf-8")

_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]


def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's instruction-set features, which ``-march=native`` code generation depends on.

    On Linux the sorted ``flags`` of the first processor in ``cpuinfo`` (x86; ``Features`` on
    ARM) plus ``platform.machine()``; elsewhere (or when that file is unreadable)
    ``platform.machine()`` and ``platform.processor()``. Two CPUs with different features give
    different strings (hence different extension names, :func:`extension_name`).
    """
    machine = platform.machine()
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("flags", "Features"):
                    return machine + " " + " ".join(sorted(set(value.split())))
    except OSError:
        pass
    return f"{machine} {platform.processor()}"


def extension_name(source: str = CPP_SOURCE, features: str | None = None) -> str:
    """``snngen_lif_<hash>``: the hash of the source, flags, torch version and CPU features."""
    if features is None:
        features = cpu_features()
    key = "\0".join((source, " ".join(_FLAGS), torch.__version__, features))
    return "snngen_lif_" + hashlib.sha1(key.encode()).hexdigest()[:12]


#: this process's extension (and library) name
NAME = extension_name()

_lock = threading.Lock()
_module: ModuleType | None = None
_error: str | None = None  # why the last build / import failed (then no retry in this process)


def build_directory() -> Path:
    """Where the extension is (or would be) built: ``<torch extensions root>/<NAME>``.

    The root is ``TORCH_EXTENSIONS_DIR`` when set, else torch's default
    (:func:`torch.utils.cpp_extension.get_default_build_root`) under the folder torch itself
    uses, ``py<major><minor><abiflags>_<rocm.../cu.../cpu>``. Not created here (see :func:`load`).
    """
    return _extensions_root(os.environ.get("TORCH_EXTENSIONS_DIR")) / NAME


@functools.lru_cache(maxsize=4)
def _extensions_root(extensions_dir: str | None) -> Path:
    # is_built() runs on every auto-mode LIF call while the extension is not built: remember
    # the root per setting (only public torch APIs; the layout torch.utils.cpp_extension uses)
    if extensions_dir is not None:
        return Path(extensions_dir)
    from torch.utils.cpp_extension import get_default_build_root

    if torch.version.hip is not None:
        accelerator = "rocm" + torch.version.hip.replace(".", "")
    elif torch.version.cuda is not None:
        accelerator = "cu" + torch.version.cuda.replace(".", "")
    else:
        accelerator = "cpu"
    python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    return Path(get_default_build_root()) / f"{python}_{accelerator}"


def _library_path() -> Path:
    # the name torch.utils.cpp_extension gives the library it builds
    return build_directory() / (NAME + (".pyd" if sys.platform == "win32" else ".so"))


def is_built() -> bool:
    """Whether the compiled library for this source is already in the extensions cache."""
    try:
        return _module is not None or _library_path().is_file()
    except Exception:  # an unusable extensions directory
        return False


def last_error() -> str | None:
    """The error of the last failed build or import in this process, or None."""
    return _error


def _import_built() -> ModuleType:
    path = _library_path()
    spec = importlib.util.spec_from_file_location(NAME, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the extension library {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(build: bool = True, verbose: bool = False) -> ModuleType | None:
    """The compiled extension module, or None when it is not available.

    ``build=False`` only imports an already built library (fast, never compiles); ``build=True``
    compiles it when missing (~30-60 s, once per source version and machine; concurrent
    processes wait on torch's file lock). A failure is remembered (see :func:`last_error`) and
    not retried in this process.
    """
    global _module, _error
    if _module is not None:
        return _module
    if _error is not None:
        return None
    with _lock:
        if _module is not None:
            return _module
        try:
            if _library_path().is_file():
                _module = _import_built()
            elif build:
                from torch.utils.cpp_extension import load_inline

                directory = build_directory()
                directory.mkdir(parents=True, exist_ok=True)
                _module = load_inline(
                    NAME, cpp_sources=[CPP_SOURCE], functions=["lif_forward", "lif_backward"],
                    extra_cflags=list(_FLAGS), build_directory=str(directory), verbose=verbose,
                )
        except Exception as err:  # no compiler, a bad toolchain, a partial library...
            _error = f"{type(err).__name__}: {str(err).strip()[-2000:]}"
    return _module


def unsupported(spec) -> str | None:
    """Why ``spec`` (a :class:`~snngen.spiking.kernels.NeuronSpec`) cannot run in C++, or None."""
    if type(spec.surrogate) not in _SURROGATE_CODES:
        return (
            f"surrogate {type(spec.surrogate).__name__} has no C++ derivative (supported: "
            f"{', '.join(c.__name__ for c in _SURROGATE_CODES)})"
        )
    return None


def _surrogate_params(sur) -> tuple[int, float, float]:
    code = _SURROGATE_CODES[type(sur)]
    if isinstance(sur, (ATan, Sigmoid)):
        return code, float(sur.alpha), 0.0
    if isinstance(sur, Rectangular):
        return code, float(sur.width), float(sur.offset)
    if isinstance(sur, Triangle):
        return code, float(sur.width), 0.0
    return code, float(sur.slope), 0.0


def forward_constants(spec, k: Tensor | float) -> tuple[float, float, float]:
    """``(k, 1 - k, k v_r)`` rounded exactly as the eager ops round them.

    A float decay stays a Python float (ATen rounds each to the tensor dtype); a 0-dim tensor
    decay gives tensor arithmetic in its dtype, as in :func:`kernels._charge`.
    """
    if isinstance(k, Tensor):
        return float(k), float(1.0 - k), float(k * spec.vr)
    return float(k), 1.0 - k, k * spec.vr


def forward(x: Tensor, k: Tensor | float, spec) -> tuple[Tensor, Tensor]:
    """Spikes and membranes ``(s, h)`` [T, N] of ``x`` [T, N] (contiguous, float32/64, CPU)."""
    module = load(build=False)
    assert module is not None, "call load() first"
    kf, a1, kvr = forward_constants(spec, k)
    form = _FORM_CODES[(spec.form, bool(spec.decay_input))]
    s, h = module.lif_forward(x, form, spec.hard, float(spec.v_threshold), spec.vr, kf, a1, kvr,
                              bool(spec.strict_threshold))
    return s, h


def backward(
    h: Tensor, x: Tensor | None, k: float, grad_s: Tensor | None, grad_h: Tensor | None, spec,
    need_k: bool,
) -> tuple[Tensor, Tensor | None]:
    """BPTT from the saved ``h`` [T, N]; returns ``(dL/dx [T, N], dL/dk as a float64 0-dim
    tensor, or None unless need_k)``. Gradients may have any strides (made contiguous)."""
    module = load(build=False)
    assert module is not None, "call load() first"
    form = _FORM_CODES[(spec.form, bool(spec.decay_input))]
    if spec.form == "spikingjelly":
        a, b = 1.0 - k, (k if spec.decay_input else 1.0)
    elif spec.form in ("fsvae", "snntorch"):
        a, b = k, 1.0
    else:
        a, b = 1.0, 1.0
    sur, p0, p1 = _surrogate_params(spec.surrogate)
    gs = None if grad_s is None else grad_s.contiguous()
    gh = None if grad_h is None else grad_h.contiguous()
    gx, gk = module.lif_backward(
        h, x, gs, gh, form, spec.hard, bool(spec.detach_reset), float(spec.v_threshold),
        spec.vr, k, a, b, sur, p0, p1, bool(need_k) and spec.form != "if",
        bool(spec.strict_threshold),
    )
    return gx, (gk if need_k else None)


def main() -> None:
    """``python -m snngen.spiking._lif_cpp``: build (or find) the extension, print where."""
    start = time.perf_counter()
    module = load(build=True, verbose="-v" in sys.argv)
    took = time.perf_counter() - start
    if module is None:
        print(f"snngen LIF C++ extension: build failed: {_error}")
        raise SystemExit(1)
    print(f"snngen LIF C++ extension {NAME} ready in {build_directory()} ({took:.1f} s)")


if __name__ == "__main__":
    main()
