"""The leaderboard's three pictures (matplotlib, the ``leaderboard`` extra), each < 300 KB.

* ``leaderboard_samples.png``: one row of 8 samples per model (same seed), ranked, labelled;
* ``fid_vs_budget.png``: classifier FID against training CPU-minutes, one line per model;
* ``fid_vs_energy.png``: classifier FID against energy per sample (log-log).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from snngen.errors import SnngenError

DPI = 90


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SnngenError('the leaderboard pictures need matplotlib: pip install -e '
                          '".[leaderboard]"') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(r: dict[str, Any]) -> str:
    return r["label"] + ("" if r["spiking"] else " [ANN]")


def plot_samples(board, rows: list[dict[str, Any]], path: Path) -> Path:
    """One row of 8 samples per model (``rows`` in rank order), model names on the left."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 8, figsize=(8 * 0.75 + 3.2, len(rows) * 0.78),
                             squeeze=False)
    for i, r in enumerate(rows):
        x = np.load(board.row_samples(r["row"]))  # [8, C, H, W] in [0, 1]
        for j in range(8):
            ax = axes[i, j]
            img = x[j].transpose(1, 2, 0) if j < len(x) else np.zeros((2, 2, 1))
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray",
                      vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(f"{i + 1}. {_label(r)}\nFID {r['fid']:.1f}", rotation=0,
                              ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=0.36, right=0.99, top=0.99, bottom=0.01, wspace=0.05, hspace=0.08)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_fid_vs_budget(rows: list[dict[str, Any]], path: Path) -> Path:
    """Classifier FID (log) against training CPU-minutes at the snapshots of every model."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for r in rows:
        pts = sorted(r["curve"], key=lambda p: p["cpu_minutes"])
        ax.plot([p["cpu_minutes"] for p in pts], [p["fid"] for p in pts], marker="o",
                ms=3, ls="-" if r["spiking"] else "--", label=_label(r))
    ax.legend(fontsize=7, loc="upper right", ncol=1)
    return _finish(plt, fig, ax, path, "training CPU-minutes (one thread)",
                   rows[0]["settings"]["curve_n"])


def plot_fid_vs_energy(rows: list[dict[str, Any]], path: Path) -> Path:
    """Classifier FID against energy per sample (µJ), both log scale, one point per model."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    for r in rows:
        e = max(r["cost"]["energy_uj"], 1e-6)
        ax.scatter([e], [r["fid"]], marker="o" if r["spiking"] else "s", s=30)
        ax.annotate(_label(r), (e, r["fid"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    ax.set_xscale("log")
    return _finish(plt, fig, ax, path, "energy per sample (µJ; 0.9 pJ/SOP, 4.6 pJ/MAC)",
                   rows[0]["settings"]["n_samples"])


def _finish(plt, fig, ax, path: Path, xlabel: str, n: int) -> Path:
    """Log FID axis, labels, grid; save at :data:`DPI` and close."""
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"classifier FID ({n:,} samples)")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
