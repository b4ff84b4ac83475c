"""The C++ LIF backend: == reference (spikes, membranes bit-identical; gradients to 1e-5), switch.

Tests that need the compiled extension use it when it is already built (``python -m
snngen.spiking._lif_cpp``) and skip otherwise; the one that builds it (~30-60 s) is marked
``slow``. Switch and fallback tests stub the extension and always run.
"""

import sys
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_helpers import SURROGATES, assert_matches_reference, backend, forced_fused

from snngen.spiking import _lif_cpp, kernels
from snngen.spiking.kernels import NeuronSpec, lif_fused, lif_reference
from snngen.spiking.surrogate import ATan, Rectangular, Sigmoid, Triangle

GEN = torch.Generator().manual_seed(0)  # the global RNG is left alone (other tests use it)


@pytest.fixture(scope="module")
def cpp():
    """The extension module when already built; else skip (test_cpp_builds_and_matches builds)."""
    if not _lif_cpp.is_built():
        pytest.skip("C++ LIF extension not built (python -m snngen.spiking._lif_cpp, or -m slow)")
    module = _lif_cpp.load(build=False)
    if module is None:
        pytest.skip(f"C++ LIF extension unavailable: {_lif_cpp.last_error()}")
    return module



def cpp_fused(x, decay, spec):
    """lif_fused forced onto the C++ backend."""
    return forced_fused(x, decay, spec, "cpp", "_CppLIF")


def assert_same(x, decay, spec, grad_s, grad_h, learn):
    assert_matches_reference(cpp_fused, x, decay, spec, grad_s, grad_h, learn)


shapes = st.tuples(
    st.integers(1, 6),  # T
    st.integers(1, 3),  # B
    st.lists(st.integers(1, 7), min_size=0, max_size=2),  # feature dims (N up to 147)
)


@settings(max_examples=6, deadline=None)
@given(
    shape=shapes,
    seed=st.integers(0, 2**31 - 1),
    detach=st.booleans(),
    decay=st.sampled_from([0.5, 0.25, 0.8, 0.3, 0.7]),
    threshold=st.sampled_from([1.0, 0.5, 0.2]),
    outputs=st.sampled_from(["spikes", "membrane", "both"]),
    learn=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_cpp_matches_reference(
    cpp, lif_form, lif_reset, shape, seed, detach, decay, threshold, outputs, learn, dtype
):
    """Every form x reset (the ``lif_form`` / ``lif_reset`` fixtures) x surrogate (x detach,
    dtype, learnable decay): bit-identical spikes and membranes, gradients within 1e-5."""
    (form, decay_input), reset = lif_form, lif_reset
    t, b, feats = shape
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(t, b, *feats, generator=gen) * 0.8 + 0.4).to(dtype)
    grad_s = torch.randn(x.shape, generator=gen).to(dtype) if outputs != "membrane" else None
    grad_h = torch.randn(x.shape, generator=gen).to(dtype) if outputs != "spikes" else None
    for sur in SURROGATES:
        spec = NeuronSpec(form, threshold, reset, detach, decay_input, sur)
        assert_same(x, decay, spec, grad_s, grad_h, learn)


@pytest.mark.parametrize("alpha", [4.0, 0.5])
def test_cpp_sigmoid_float32_across_the_exp_range(cpp, alpha):
    """The float32 sigmoid derivative uses the kernel's own vectorised exp: membranes from
    -150 to 150 (alpha (h - thr) beyond +-88, where it clamps, and every octave between)
    give the reference's gradients within 1e-5."""
    t = torch.linspace(-150.0, 150.0, 3 * 1201).reshape(3, 1201)
    x = t[torch.randperm(3, generator=torch.Generator().manual_seed(2))]
    g = torch.randn(x.shape, generator=GEN)
    for form, reset in (("spikingjelly", 0.0), ("snntorch", None)):
        assert_same(x, 0.5, NeuronSpec(form, 1.0, reset, False, True, Sigmoid(alpha)), g, None,
                    True)


@pytest.mark.parametrize("threads", [1, 2])
def test_cpp_blocks_and_threads(cpp, threads):
    """Many elements (several 512-element blocks, split over threads), strided upstream
    gradients and a learnable decay: still equal to the reference."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(7)
        x = torch.randn(3, 5, 2100, generator=gen) + 0.3
        grad_s = torch.randn(5, 3, 2100, generator=gen).transpose(0, 1)  # non-contiguous
        for spec in (NeuronSpec(), NeuronSpec("snntorch", 0.5, 0.0, False, True, Sigmoid())):
            assert_same(x, 0.3, spec, grad_s, None, learn=True)
    finally:
        torch.set_num_threads(previous)


def test_auto_uses_a_built_extension(cpp, monkeypatch):
    """With the extension built, ``auto`` runs it on CPU (silently) and ``0`` does not."""
    monkeypatch.delenv(kernels.COMPILE_ENV, raising=False)
    x = torch.randn(4, 2, 3, generator=GEN).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spikes, _ = lif_fused(x, 0.5, NeuronSpec())
    assert backend(spikes).startswith("_CppLIF")
    spikes, _ = lif_fused(x, 0.5, NeuronSpec(), compile=False)
    assert backend(spikes).startswith("_FusedLIF")


@pytest.mark.slow
def test_cpp_builds_and_matches():
    """Build the extension if missing (slow: ~30-60 s), then one spec against the reference."""
    if _lif_cpp.load(build=True) is None:
        pytest.skip(f"C++ LIF extension cannot be built here: {_lif_cpp.last_error()}")
    x = torch.randn(5, 3, 40, generator=torch.Generator().manual_seed(1)) + 0.5
    g = torch.randn(x.shape, generator=GEN)
    assert_same(x, 0.5, NeuronSpec("fsvae", 0.2, None, False, True, Rectangular()), g, g, True)


# --------------------------------------------------------------------------- cache name, folder


def test_cache_name_keys_cpu_features(monkeypatch):
    """-march=native libraries are per instruction set: different CPU features, different names
    (a shared home folder never hands a node another CPU's library); same features, same name;
    a changed source still changes it."""
    monkeypatch.setattr(_lif_cpp, "cpu_features", lambda: "x86_64 avx avx2 fma sse2")
    avx2 = _lif_cpp.extension_name()
    assert avx2 == _lif_cpp.extension_name()
    assert avx2.startswith("snngen_lif_")
    monkeypatch.setattr(_lif_cpp, "cpu_features", lambda: "x86_64 avx avx2 avx512f fma sse2")
    avx512 = _lif_cpp.extension_name()
    assert avx512 != avx2
    assert _lif_cpp.extension_name(_lif_cpp.CPP_SOURCE + "\n// changed") != avx512
    assert _lif_cpp.extension_name(features="x86_64 avx avx2 fma sse2") == avx2
    monkeypatch.undo()
    assert _lif_cpp.NAME == _lif_cpp.extension_name(features=_lif_cpp.cpu_features())


def test_cpu_features_reads_cpuinfo(tmp_path):
    """The flags of /proc/cpuinfo, sorted (order and repeats do not matter); a fallback
    without the file."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: sse2 avx fma avx\n\n"
                 "processor\t: 1\nflags\t\t: sse2 avx fma\n")
    b.write_text("processor\t: 0\nmodel name\t: Y\nflags\t\t: fma sse2 avx\n")
    assert _lif_cpp.cpu_features(str(a)) == _lif_cpp.cpu_features(str(b))
    assert _lif_cpp.cpu_features(str(a)).endswith(" avx fma sse2")
    b.write_text("processor\t: 0\nflags\t\t: fma sse2 avx avx512f\n")
    assert _lif_cpp.cpu_features(str(a)) != _lif_cpp.cpu_features(str(b))
    assert _lif_cpp.cpu_features(str(tmp_path / "missing"))  # platform fallback, not empty


def test_build_directory_public_layout(tmp_path, monkeypatch):
    """TORCH_EXTENSIONS_DIR/<NAME> when set, else torch's default root/py<ver>_<accel>/<NAME>;
    asking creates nothing and a missing library is not built."""
    from torch.utils.cpp_extension import get_default_build_root

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    if _lif_cpp._module is None:
        assert not _lif_cpp.is_built()
    assert _lif_cpp.build_directory() == tmp_path / "ext" / _lif_cpp.NAME
    assert not (tmp_path / "ext").exists()
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    default = _lif_cpp.build_directory()
    assert default.name == _lif_cpp.NAME
    assert default.parent.parent == Path(get_default_build_root())
    assert default.parent.name.startswith(f"py{sys.version_info.major}{sys.version_info.minor}")


# --------------------------------------------------------------------------- switch, fallback
# (no extension needed: the extension is stubbed)


def test_cpp_switch_parsing(monkeypatch):
    monkeypatch.setenv(kernels.COMPILE_ENV, "cpp")
    assert kernels.parse_compile(None) == "cpp"
    assert kernels.parse_compile(" CPP ") == "cpp"
    assert kernels._resolve_compile("cpp", torch.device("cpu")) == (False, True)
    with pytest.raises(ValueError, match="0 \\(false\\), cpp or triton, got 'c'"):
        kernels.parse_compile("c")


def test_auto_never_builds(monkeypatch):
    """``auto`` with nothing built runs the eager loops, without building or warning."""
    monkeypatch.delenv(kernels.COMPILE_ENV, raising=False)
    calls = []
    monkeypatch.setattr(_lif_cpp, "is_built", lambda: False)
    monkeypatch.setattr(_lif_cpp, "load", lambda build=True, verbose=False: calls.append(build))
    x = torch.randn(3, 2, 4, generator=GEN).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spikes, _ = lif_fused(x, 0.5, NeuronSpec())
    assert not calls
    assert backend(spikes).startswith("_FusedLIF")
    assert torch.equal(spikes, lif_reference(x, 0.5, NeuronSpec())[0])


def test_cpp_build_failure_warns_once(monkeypatch):
    """An explicit ``cpp`` whose build fails warns once (naming the error), then runs eagerly;
    under ``auto`` (library present but unloadable) it is silent."""
    monkeypatch.setattr(kernels, "_CPP_WARNED", set())
    monkeypatch.setattr(_lif_cpp, "load", lambda build=True, verbose=False: None)
    monkeypatch.setattr(_lif_cpp, "last_error", lambda: "CalledProcessError: no gcc")
    x = torch.randn(3, 2, 4, generator=GEN)
    want = lif_reference(x, 0.5, NeuronSpec())[0]
    with pytest.warns(RuntimeWarning, match="could not be built.*no gcc"):
        got = lif_fused(x, 0.5, NeuronSpec(), compile="cpp")[0]
    assert torch.equal(got, want)
    monkeypatch.setattr(_lif_cpp, "is_built", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(lif_fused(x, 0.5, NeuronSpec(), compile="cpp")[0], want)  # once
        assert torch.equal(lif_fused(x, 0.5, NeuronSpec(), compile="auto")[0], want)


def test_cpp_unsupported_falls_back(monkeypatch):
    """A custom surrogate subclass or a half-precision input runs eagerly (one warning each)."""
    monkeypatch.setattr(kernels, "_CPP_WARNED", set())

    class Wider(ATan):
        def grad(self, x):
            return 2 * super().grad(x)

    spec = NeuronSpec(surrogate=Wider())
    assert "Wider" in _lif_cpp.unsupported(spec)
    assert _lif_cpp.unsupported(NeuronSpec(surrogate=Triangle(0.3))) is None
    x = torch.randn(3, 2, 4, generator=GEN).requires_grad_()
    with pytest.warns(RuntimeWarning, match="surrogate Wider has no C\\+\\+ derivative"):
        spikes, _ = lif_fused(x, 0.5, spec, compile="cpp")
    assert backend(spikes).startswith("_FusedLIF")
    with pytest.warns(RuntimeWarning, match="float32 and float64"):
        assert not kernels._use_cpp("cpp", x.detach().reshape(3, -1).half(), NeuronSpec())
