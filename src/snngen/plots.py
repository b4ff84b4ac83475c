"""Looking inside a trained spiking generator: firing rates, spike rasters, membrane potentials,
denoising chains, codebook usage and training curves (PNG, matplotlib).

Each picture has a *data* function that returns plain numbers (what tests check) and a *draw*
function that turns them into a PNG with one shared look (:func:`style`):

==========================  =====================================  ============================
picture                     data                                   draw
==========================  =====================================  ============================
firing rate per layer       :func:`record_activity` ``.rates``     :func:`draw_firing_rates`
spike raster (one sample)   :func:`record_activity` ``.traces``    :func:`draw_raster`
membrane / threshold        :func:`record_activity` ``.traces``    :func:`draw_membranes`
denoising chain             :func:`denoising_chain`                :func:`draw_chain`
VQ codebook usage           :func:`codebook_counts`                :func:`draw_codebook`
training curves             :func:`training_curves`                :func:`draw_curves`
==========================  =====================================  ============================

:func:`plot_model` makes all that apply to a model; ``snngen plot RUN`` calls it. Activity is
measured as ``snngen info`` measures it (:func:`activity_call`: a reconstruction of test items,
or sampling for a model without one), so the bars are the numbers of its table.
"""

from __future__ import annotations

import csv
import math
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from snngen.diffusion import Trajectory
from snngen.errors import SnngenError
from snngen.files import atomic_output
from snngen.models import GenerativeModel
from snngen.spiking import kernels
from snngen.spiking.monitor import Monitor
from snngen.spiking.neurons import MultiStepNeuron

#: neurons drawn in a raster (evenly spaced over the layer's flattened neurons)
RASTER_NEURONS = 128
#: neurons per layer whose membrane potentials are kept (evenly spaced)
MEMBRANE_NEURONS = 8192
#: layers drawn by default (evenly spread over the network, first and last included)
DEFAULT_LAYERS = 4
DPI = 100
ACCENT = "#1f5f99"
PICTURES = ("rates", "raster", "membrane", "chain", "codebook", "curves")


# ----------------------------------------------------------------------------- activity


@dataclass
class LayerTrace:
    """One neuron layer during the first model call it took part in.

    ``spikes``: ``[T, K]`` of the first sample at the neurons ``neurons`` (K of the layer's
    ``n_neurons`` flattened neurons, evenly spaced: :func:`raster_neurons`); ``sample_rate``:
    the first sample's firing rate over all the layer's neurons; ``membrane``: ``[T, B, M]``
    charge before reset divided by the threshold (1 = threshold) at ``membrane_neurons`` (at
    most :data:`MEMBRANE_NEURONS`, evenly spaced); ``threshold``: the layer's ``v_threshold``.
    """

    name: str
    spikes: Tensor
    neurons: list[int]
    n_neurons: int
    sample_rate: float
    membrane: Tensor
    membrane_neurons: list[int]
    threshold: float

    def fractions(self) -> dict[str, float]:
        """Fractions of (neuron, sample) pairs that never reach the threshold ("dead") and that
        reach it at every time step ("saturated") during the call (of ``membrane_neurons``)."""
        fired = self.membrane >= 1.0
        return {"dead": float((~fired.any(0)).float().mean()),
                "saturated": float(fired.all(0).float().mean())}


@dataclass
class Activity:
    """``rates``: ``{layer: firing rate}`` of every neuron layer (the :class:`Monitor`'s);
    ``traces``: ``{layer: LayerTrace}`` of the chosen layers."""

    rates: dict[str, float]
    traces: dict[str, LayerTrace] = field(default_factory=dict)


def neuron_layers(model: nn.Module) -> list[str]:
    """Names of the spiking neuron modules of ``model`` in model order (as ``snngen info``)."""
    return [name or type(m).__name__ for name, m in model.named_modules()
            if isinstance(m, MultiStepNeuron)]


def choose_layers(model: nn.Module, layers: Sequence[str] | None = None,
                  k: int = DEFAULT_LAYERS, among: Sequence[str] | None = None,
                  what: str = "--layers") -> list[str]:
    """``layers`` checked against the model's neuron layers (one-line error naming a bad one),
    or, when None, ``k`` of ``among`` (default: all neuron layers) evenly spread, first and last
    included."""
    names = neuron_layers(model)
    if layers is None:
        pool = list(names if among is None else among)
        if len(pool) <= k:
            return pool
        return [pool[round(i * (len(pool) - 1) / (k - 1))] for i in range(k)]
    bad = [name for name in layers if name not in names]
    if bad:
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        sep = "" if what.endswith("=") else " "
        raise SnngenError(f"{what}{sep}{bad[0]}: not a spiking layer of model "
                          f"{getattr(model, 'name', type(model).__name__)!r}; "
                          f"its {len(names)} layers are {shown or 'none'}")
    return list(layers)


def _trace(name: str, mod: MultiStepNeuron, x: Tensor, out: Any) -> LayerTrace:
    """The :class:`LayerTrace` of one call of a neuron layer (input ``x`` ``[T, B, ...]``)."""
    spikes = (out[0] if isinstance(out, tuple) else out).detach()
    first = spikes[:, 0].reshape(spikes.shape[0], -1).float()
    n = first.shape[1]
    keep, keep_mem = raster_neurons(n), raster_neurons(n, MEMBRANE_NEURONS)
    _, mem = kernels.lif_reference(x.detach().float(), mod.decay(), mod.spec)
    thr = mod.spec.v_threshold
    mem = mem.reshape(mem.shape[0], mem.shape[1], -1)[:, :, keep_mem] / thr
    return LayerTrace(name, first[:, keep].cpu(), keep, n, float(first.mean()), mem.cpu(),
                      keep_mem, thr)


@contextmanager
def _taps(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, LayerTrace]]:
    """Forward hooks on ``layers`` recording their first call (:class:`LayerTrace`)."""
    traces: dict[str, LayerTrace] = {}
    modules = dict(model.named_modules())
    handles = []
    for name in layers:
        def hook(mod: MultiStepNeuron, args: tuple, out: Any, name: str = name) -> None:
            if name not in traces and args:
                with torch.no_grad():
                    traces[name] = _trace(name, mod, args[0], out)
        handles.append(modules[name].register_forward_hook(hook))
    try:
        yield traces
    finally:
        for h in handles:
            h.remove()


def activity_call(model: GenerativeModel, x: Tensor, seed: int = 0,
                  n: int | None = None) -> tuple[Callable, str]:
    """What ``snngen info`` runs to measure ``model``: ``reconstruct(x)`` (``x`` ``[n, C, H, W]``
    test items, or events ``[T, n, ...]`` with ``n`` given), or ``sample(n)`` with a generator
    seeded ``seed`` for a model without reconstruction. Returns ``(call, description)``."""
    n = x.shape[0] if n is None else n
    if model.can_reconstruct:
        return (lambda: model.reconstruct(x)), f"reconstruct({n} test items)"
    gen = torch.Generator().manual_seed(seed)
    return (lambda: model.sample(n, generator=gen)), f"sample({n})"


@torch.no_grad()
def record_activity(model: nn.Module, call: Callable[[], Any],
                    layers: Sequence[str] | None = None, n_samples: int | None = None) -> Activity:
    """Run ``call()`` once with a :class:`Monitor` on ``model`` (firing rates of every neuron
    layer, per ``n_samples`` samples) and taps on ``layers`` (default: :func:`choose_layers`
    among the layers that ran, so a layer the call does not use is not picked)."""
    tapped = neuron_layers(model) if layers is None else choose_layers(model, layers)
    was_training = model.training
    model.eval()
    try:
        with Monitor(model, n_samples=n_samples) as mon, _taps(model, tapped) as traces:
            call()
    finally:
        model.train(was_training)
    chosen = choose_layers(model, layers, among=[k for k in tapped if k in traces])
    return Activity(mon.firing_rates(), {k: traces[k] for k in chosen if k in traces})


# ----------------------------------------------------------------------------- diffusion, VQ


@torch.no_grad()
def denoising_chain(model: GenerativeModel, n: int = 4, frames: int = 8, seed: int = 0,
                    **sample_options: Any) -> tuple[Tensor, Trajectory]:
    """``(images [n, C, H, W] in [0, 1], chain)``: ``model.sample(n, trajectory=True)`` with a
    generator seeded ``seed``; ``chain`` keeps about ``frames`` frames (first and output)."""
    if "trajectory" not in _parameters(model.sample):
        raise SnngenError(f"model {model.name!r} is not a diffusion model: it has no denoising "
                          "chain to plot")
    gen = torch.Generator(device=_device(model)).manual_seed(seed)
    images, chain = model.sample(n, generator=gen, trajectory=True, **sample_options)
    return images, chain.select(frames)


def quantizer_of(model: nn.Module) -> nn.Module | None:
    """The VQ-VAE whose codebook a model uses (itself, or a prior's stage 1), else None."""
    for candidate in (model, getattr(model, "stage1", None)):
        if candidate is not None and hasattr(candidate, "encode_tokens") and hasattr(
                candidate, "vocab_size"):
            return candidate
    return None


@torch.no_grad()
def codebook_counts(vq: nn.Module, batches: Sequence[Tensor]) -> tuple[Tensor, dict[str, float]]:
    """How often each code is chosen for the images of ``batches`` (``[b, C, H, W]`` each):
    ``(counts [K] int64, usage)`` with usage ``perplexity``, ``used``, ``dead``,
    ``dead_fraction`` (:func:`snngen.models.quantizers.codebook_usage`)."""
    from snngen.models.quantizers import codebook_usage

    dev = _device(vq)
    tokens = torch.cat([vq.encode_tokens(x.to(dev)).reshape(-1).cpu() for x in batches])
    k = int(vq.vocab_size)
    return torch.bincount(tokens, minlength=k), codebook_usage(tokens, k)


# ----------------------------------------------------------------------------- curves


def training_curves(run_dir: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """Every logged series of a run's ``logs/version_*/metrics.csv`` (versions in order, so a
    resumed run continues): ``{column: (steps, values)}``, rows without a value skipped."""
    files = sorted(Path(run_dir).glob("logs/version_*/metrics.csv"),
                   key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0))
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for path in files:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                step = row.get("step", "")
                if not step:
                    continue
                for key, value in row.items():
                    if key in ("step", "epoch") or value in ("", None):
                        continue
                    steps, values = curves.setdefault(key, ([], []))
                    steps.append(int(float(step)))
                    values.append(float(value))
    return curves


# ----------------------------------------------------------------------------- drawing


def style() -> Any:
    """matplotlib's pyplot with snngen's look (one style for every picture). Outside a
    notebook, and before anything else chose one, the backend is Agg (files only); in a
    Jupyter kernel the notebook's own backend is kept, so its figures still show."""
    try:
        import matplotlib
    except ImportError:
        raise SnngenError('plots need matplotlib: pip install matplotlib (or the "leaderboard" '
                          "extra)") from None
    if "matplotlib.pyplot" not in sys.modules and "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "figure.titlesize": 12,
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": False,
        "figure.dpi": DPI, "savefig.dpi": DPI, "image.interpolation": "nearest",
    })
    return plt


def _save(fig: Any, path: str | Path) -> Path:
    plt = style()
    path = Path(path)
    with atomic_output(path, "wb") as f:
        fig.savefig(f, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def draw_firing_rates(rates: dict[str, float], path: str | Path, title: str = "") -> Path:
    """Horizontal bars, one per layer in model order (top to bottom), rate on the x axis."""
    plt = style()
    names = list(rates)
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.22 * len(names) + 1.2)))
    ax.barh(range(len(names)), [rates[k] for k in names], color=ACCENT)
    ax.set_yticks(range(len(names)), [_short(k) for k in names],
                  fontsize=8 if len(names) > 20 else 9)
    ax.invert_yaxis()
    ax.set_xlabel("firing rate (spikes per neuron per time step)")
    ax.set_ylabel("spiking layer (model order)")
    ax.set_title(title or "Firing rate per layer")
    return _save(fig, path)


def raster_neurons(n: int, k: int = RASTER_NEURONS) -> list[int]:
    """``k`` neuron indices evenly spaced over ``0..n-1`` (all when ``n <= k``)."""
    return list(range(n)) if n <= k else sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def draw_raster(traces: dict[str, LayerTrace], path: str | Path, title: str = "") -> Path:
    """One panel per layer: neuron index (y) against time step (x), a dark cell per spike."""
    plt = style()
    fig, axes = plt.subplots(1, len(traces), figsize=(2.6 * len(traces) + 1, 4.2),
                             squeeze=False)
    for ax, tr in zip(axes[0], traces.values(), strict=True):
        steps, k = tr.spikes.shape
        ax.imshow(tr.spikes.T.numpy(), aspect="auto", cmap="Greys", vmin=0, vmax=1,
                  extent=(-0.5, steps - 0.5, k - 0.5, -0.5))
        ax.set_xlabel("time step")
        ax.set_xticks(range(steps) if steps <= 16 else range(0, steps, max(1, steps // 8)))
        ax.set_title(f"{_short(tr.name)}\nrate {tr.sample_rate:.3f}", fontsize=9)
        ax.set_ylabel(f"neuron ({k} of {tr.n_neurons}, evenly spaced)")
    fig.suptitle(title or "Spike raster (sample 0)")
    fig.tight_layout()
    return _save(fig, path)


def draw_membranes(traces: dict[str, LayerTrace], path: str | Path, title: str = "") -> Path:
    """One histogram per layer of membrane potential / threshold, the threshold marked."""
    plt = style()
    fig, axes = plt.subplots(1, len(traces), figsize=(3.0 * len(traces) + 1, 3.4),
                             squeeze=False)
    for ax, tr in zip(axes[0], traces.values(), strict=True):
        v = tr.membrane.reshape(-1).clamp(-2.0, 4.0).numpy()
        ax.hist(v, bins=60, range=(-2.0, 4.0), color=ACCENT)
        ax.axvline(1.0, color="#c0392b", linestyle="--", linewidth=1.2, label="threshold")
        f = tr.fractions()
        ax.set_title(f"{_short(tr.name)}\ndead {f['dead']:.0%}, saturated {f['saturated']:.0%}",
                     fontsize=9)
        ax.set_xlabel("membrane / threshold (clipped to [-2, 4])")
        ax.set_ylabel("count (neurons x steps x samples)")
        ax.set_yscale("log")
    axes[0][0].legend(loc="upper right", fontsize=8)
    fig.suptitle(title or "Membrane potential relative to threshold")
    fig.tight_layout()
    return _save(fig, path)


def draw_chain(chain: Trajectory, path: str | Path, title: str = "") -> Path:
    """Per sample two rows (``x_t``, predicted ``x0``), one column per recorded step."""
    plt = style()
    n, cols = chain.x[0].shape[0], len(chain)
    fig, axes = plt.subplots(2 * n, cols, figsize=(1.15 * cols + 1.2, 1.2 * 2 * n + 0.8),
                             squeeze=False)
    for j in range(cols):
        for i in range(n):
            for r, frames in enumerate((chain.x, chain.x0)):
                ax = axes[2 * i + r, j]
                ax.imshow(_as_image(frames[j][i]), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(f"#{i} " + ("x_t" if r == 0 else "pred. x0"), fontsize=9)
        t = chain.times[j]
        axes[0, j].set_title("output" if j == cols - 1 else f"step {chain.steps[j]}\nt={t:.0f}",
                             fontsize=9)
    fig.suptitle(title or "Denoising chain")
    fig.supxlabel("sampler step (noise on the left, output on the right)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def draw_codebook(counts: Tensor, usage: dict[str, float], path: str | Path,
                  title: str = "") -> Path:
    """Bars of code frequency by code index, perplexity and dead codes in the title."""
    plt = style()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.bar(range(len(counts)), counts.numpy(), width=1.0, color=ACCENT)
    ax.set_xlabel("code index")
    ax.set_ylabel("times chosen")
    ax.set_xlim(-0.5, len(counts) - 0.5)
    ax.set_title((title or "Codebook usage") + f"\nperplexity {usage['perplexity']:.1f} of "
                 f"{len(counts)}, dead codes {usage['dead']} ({usage['dead_fraction']:.0%})")
    return _save(fig, path)


def draw_curves(curves: dict[str, tuple[list[int], list[float]]], path: str | Path,
                title: str = "") -> Path:
    """One panel per logged series (value against step), losses first."""
    plt = style()
    names = sorted(curves, key=lambda k: (("loss" not in k), k))[:12]
    if not names:
        raise SnngenError(f"{path}: no training curves to draw (no logs/*/metrics.csv rows)")
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.9 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        steps, values = curves[name]
        ax.plot(steps, values, color=ACCENT, marker="." if len(steps) < 30 else None)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel(name.rsplit("/", 1)[-1])
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(title or "Training curves")
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------- all of them


def plot_model(model: GenerativeModel, x: Tensor, out_dir: str | Path, *,
               layers: Sequence[str] | None = None, run_dir: str | Path | None = None,
               chain_n: int = 4, seed: int = 0, which: Sequence[str] = PICTURES,
               n: int | None = None, **sample_options: Any) -> list[Path]:
    """Write every picture of ``which`` that applies to ``model`` into ``out_dir``; returns the
    paths. ``x``: test items ``[n, C, H, W]`` to measure activity on (as ``snngen info``);
    ``run_dir``: the run folder whose logs give the curves; ``n``: the number of items in ``x``
    (default ``x.shape[0]``; events ``[T, n, ...]`` need it); ``sample_options`` (``solver``,
    ``steps``, ...) go to the denoising chain."""
    out, name, paths = Path(out_dir), model.name, []
    n = x.shape[0] if n is None else n
    if {"rates", "raster", "membrane"} & set(which) and neuron_layers(model):
        call, what = activity_call(model, x, seed, n)
        act = record_activity(model, call, layers, n_samples=n)
        if "rates" in which:
            paths.append(draw_firing_rates(act.rates, out / "firing_rates.png",
                                           f"Firing rate per layer: {name}, {what}"))
        if "raster" in which and act.traces:
            paths.append(draw_raster(act.traces, out / "raster.png",
                                     f"Spike raster: {name}, {what}, sample 0"))
        if "membrane" in which and act.traces:
            paths.append(draw_membranes(act.traces, out / "membrane.png",
                                        f"Membrane potential / threshold: {name}, {what}"))
    if "chain" in which and "trajectory" in _parameters(model.sample):
        _, chain = denoising_chain(model, chain_n, seed=seed, **sample_options)
        solver = sample_options.get("solver") or getattr(model.cfg, "solver", "")
        paths.append(draw_chain(chain, out / "denoising_chain.png",
                                f"Denoising chain: {name}, {solver}"))
    vq = quantizer_of(model)
    if "codebook" in which and vq is not None:
        counts, usage = codebook_counts(vq, [x])
        paths.append(draw_codebook(counts, usage, out / "codebook.png",
                                   f"Codebook usage: {name}, {n} test items"))
    if "curves" in which and run_dir is not None and training_curves(run_dir):
        paths.append(draw_curves(training_curves(run_dir), out / "curves.png",
                                 f"Training curves: {Path(run_dir).name}"))
    return paths


# ----------------------------------------------------------------------------- helpers


def _short(name: str, width: int = 34) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]


def _as_image(x: Tensor) -> Any:
    """``[C, H, W]`` in the sampler's [-1, 1] as an ``[H, W]`` / ``[H, W, 3]`` array in [0, 1]."""
    img = ((x.float().clamp(-1, 1) + 1) / 2).cpu()
    return img[0].numpy() if img.shape[0] == 1 else img[:3].permute(1, 2, 0).numpy()


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _parameters(fn: Callable) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()
