"""Build ``fixtures/dpm_solver_reference.npz``: the DPM-Solver reference code's own samples.

Original: LuChengTHU/dpm-solver, ``dpm_solver_pytorch.py`` at commit :data:`COMMIT` (its
``NoiseScheduleVP('discrete')``, ``model_wrapper(model_type="noise")`` and ``DPM_Solver.sample``).
The file is read from a clone made in a temporary folder (from ``SNNGEN_ORIGINALS``, a folder of
``owner+name/repo`` mirrors as ``tests/golden/make_fixtures.py`` uses, or from GitHub) and
deleted afterwards; nothing of it is committed. Run::

    SNNGEN_ORIGINALS=/work/.mirror python tests/diffusion/build_dpm_solver_reference.py

What it runs: a fixed, smooth, nonlinear eps network (:func:`tiny_eps`, a 1x1 channel mix
inside ``tanh`` plus a time term; its parameters are in the fixture) on DDPM's linear schedule
(``1e-4 .. 0.02``, 1000 steps: snngen's default and SDDPM's), from a fixed ``x_T``, in float64
(``torch.set_default_dtype(torch.float64)`` so the reference's ``linspace`` knots are float64 as
well). For this schedule the reference's ``numerical_clip_alpha`` (log-SNR clipped at -5.1)
removes nothing (``lambda`` at ``t = 1`` is -5.06), and its model time ``1000 (t - 1/N)`` equals
snngen's ``N t - 1``. Recorded for each configuration ``ALGORITHM_METHOD_oORDER_STEPS_SKIP``:
the sample, and for the single-step solver the outer grid (continuous times) and orders.
Each sample records the defaults of ``DPM_Solver.sample`` that snngen's call must mirror:
``lower_order_final=True``, ``solver_type='dpmsolver'``, no ``correcting_x0_fn``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = "LuChengTHU/dpm-solver"
COMMIT = "52bc3fbcd5de56d60917b826b15d2b69460fc2fa"
FILE = "dpm_solver_pytorch.py"
OUT = Path(__file__).resolve().parent / "fixtures" / "dpm_solver_reference.npz"

#: (algorithm, method, order, steps, skip_type, denoise_to_zero) of every recorded run
CONFIGS = [
    *[(alg, "singlestep", order, steps, "logSNR", False)
      for alg in ("dpmsolver", "dpmsolver++") for order in (2, 3) for steps in (6, 7, 8)],
    *[(alg, method, order, 6, skip, False)
      for method in ("singlestep", "multistep") for alg in ("dpmsolver", "dpmsolver++")
      for order in (2, 3) for skip in ("time_uniform", "time_quadratic")],
    *[(alg, "multistep", order, steps, "logSNR", False)
      for alg in ("dpmsolver", "dpmsolver++") for order in (2, 3) for steps in (6, 12)],
    ("dpmsolver++", "singlestep", 3, 7, "logSNR", True),
    ("dpmsolver++", "multistep", 2, 6, "logSNR", True),
]


def key(algorithm: str, method: str, order: int, steps: int, skip: str, denoise: bool) -> str:
    """The fixture key of one configuration."""
    return f"{algorithm}_{method}_o{order}_{steps}_{skip}" + ("_denoise" if denoise else "")


def tiny_eps(params: dict[str, torch.Tensor]):
    """``eps(x [B, C, H, W], t [B]) = 0.2 tanh(W x + b sin(t / 37) + c) + (t / 999) x`` (``W``
    [C, C] a 1x1 channel mix, ``b``, ``c`` [C]); ``t`` is the model time (fractional for
    DPM-Solver). The ``(t / 999) x`` term roughly follows the noise level, so that the samples
    stay of order one, as a trained network's would."""

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        mixed = torch.einsum("oc,bchw->bohw", params["W"].to(x.dtype), x)
        s = torch.sin(t.to(x.dtype) / 37.0).reshape(-1, 1, 1, 1)
        shift = params["b"].to(x.dtype).view(1, -1, 1, 1) * s + params["c"].to(x.dtype).view(
            1, -1, 1, 1)
        return 0.2 * torch.tanh(mixed + shift) + (t.to(x.dtype) / 999.0).reshape(-1, 1, 1, 1) * x

    return eps


def inputs() -> dict[str, torch.Tensor]:
    """The fixed network parameters and starting noise (seeded, float64)."""
    g = torch.Generator().manual_seed(20240521)
    c = 2
    return {
        "W": torch.randn(c, c, generator=g, dtype=torch.float64) * 0.8,
        "b": torch.randn(c, generator=g, dtype=torch.float64),
        "c": torch.randn(c, generator=g, dtype=torch.float64) * 0.3,
        "x_T": torch.randn(3, c, 4, 4, generator=g, dtype=torch.float64),
    }


def load_reference(workdir: Path):
    """Clone the pinned commit and import its ``dpm_solver_pytorch`` module."""
    mirror = os.environ.get("SNNGEN_ORIGINALS")
    source = f"https://github.com/{REPO}"
    if mirror:
        base = Path(mirror) / REPO.replace("/", "+")
        source = str(next((p for p in (base / "repo", base) if p.exists()), source))
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", source, str(workdir)], check=True)
    text = subprocess.run(["git", "-C", str(workdir), "show", f"{COMMIT}:{FILE}"], check=True,
                          capture_output=True, text=True).stdout
    (workdir / FILE).write_text(text)
    spec = importlib.util.spec_from_file_location("dpm_solver_pytorch", workdir / FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(ref) -> dict[str, np.ndarray]:
    """Run every configuration with the reference code; return the fixture's arrays: ``W``,
    ``b``, ``c``, ``x_T``, ``sample/KEY``, and for single-step runs ``grid/KEY`` (continuous
    times) and ``orders/KEY``; ``meta`` holds the repository, commit and file."""
    torch.set_default_dtype(torch.float64)
    params = inputs()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ns = ref.NoiseScheduleVP("discrete", betas=betas, dtype=torch.float64)
    fn = ref.model_wrapper(tiny_eps(params), ns, model_type="noise")
    out = {name: params[name].numpy() for name in ("W", "b", "c", "x_T")}
    for alg, method, order, steps, skip, denoise in CONFIGS:
        solver = ref.DPM_Solver(fn, ns, algorithm_type=alg)
        x = solver.sample(params["x_T"].clone(), steps=steps, order=order, skip_type=skip,
                          method=method, lower_order_final=True, denoise_to_zero=denoise)
        k = key(alg, method, order, steps, skip, denoise)
        out[f"sample/{k}"] = x.detach().numpy()
        if method == "singlestep":
            grid, orders = solver.get_orders_and_timesteps_for_singlestep_solver(
                steps=steps, order=order, skip_type=skip, t_T=1.0, t_0=1.0 / 1000,
                device="cpu")
            out[f"grid/{k}"] = grid.detach().numpy()
            out[f"orders/{k}"] = np.asarray(orders, dtype=np.int64)
    out["meta"] = np.array([REPO, COMMIT, FILE, "tests/diffusion/build_dpm_solver_reference.py"])
    return out


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="snngen-dpm-solver-") as tmp:
        payload = build(load_reference(Path(tmp) / "dpm-solver"))
    OUT.parent.mkdir(exist_ok=True)
    np.savez_compressed(OUT, **payload)
    n = sum(name.startswith("sample/") for name in payload)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {n} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
