"""Sample quality and speed of the four diffusion samplers on one trained run.

For each solver (DDPM, DDIM, Analytic-DPM, DPM-Solver) at 10, 20, 50 and the full number of
diffusion steps, draw ``--n`` samples (default 1,000) from the same seeds, time them (images per
second; Analytic-DPM's one-off Gamma estimate is timed apart as ``setup_s``) and score them with
FID and KID under the ``snngen`` metric protocol (the 32-px in-package classifier and its cached
reference set, the scale ``snngen eval`` reports on) against the run's test split. Prints a
table and writes JSON to ``benchmarks/results/``.

    python benchmarks/diffusion_solvers.py runs/sddpm_mnist5k_small
    python benchmarks/diffusion_solvers.py runs/sddpm_mnist5k_small --n 200 --steps 10,20
    python benchmarks/diffusion_solvers.py --quick        # untrained tiny model, < 1 min

``--quick`` is a smoke test of the whole path (an untrained tiny U-Net, 32 samples, an untrained
feature network): its numbers mean nothing. Without ``snngen.metrics`` only throughput is given.
"""

from __future__ import annotations

import inspect
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from snngen.evaluation import generate
from snngen.models import DataInfo, build_model
from snngen.models.diffusion_model import SOLVERS, DiffusionModel, SDDPMConfig

sys.path.append(str(Path(__file__).resolve().parent))  # bench_common, also when loaded by path
from bench_common import parse_run_args, run_parser, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_STEPS = "10,20,50,full"


@dataclass
class Entry:
    """One (solver, steps) cell of the table."""

    solver: str
    steps: int
    n: int
    seconds: float
    images_per_s: float
    setup_s: float = 0.0
    fid: float | None = None
    kid: float | None = None
    kid_std: float | None = None


def parse_steps(text: str, full: int) -> list[int]:
    """``"10,20,50,full"`` -> sorted distinct step counts, each at most ``full``."""
    out = set()
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        value = full if item == "full" else int(item)
        if value < 1:
            raise SystemExit(f"--steps: {item!r} must be a whole number >= 1 or 'full'")
        out.add(min(value, full))
    return sorted(out)


def parse_solvers(text: str) -> list[str]:
    names = [s.strip().lower().replace("_", "-") for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in SOLVERS]
    if bad or not names:
        raise SystemExit(f"--solvers: unknown {bad or names}; choose from {','.join(SOLVERS)}")
    return names


# ------------------------------------------------------------------------------ the model


def quick_model() -> tuple[DiffusionModel, str]:
    """An untrained tiny spiking diffusion model (16x16, 50 diffusion steps)."""
    torch.manual_seed(0)
    cfg = SDDPMConfig(ch=8, ch_mult=[1, 2], num_res_blocks=1, timesteps=2, diffusion_steps=50,
                      beta_1=2e-3, beta_T=0.4, gamma_images=32)  # fmt: skip
    model = build_model(cfg, DataInfo(channels=1, image_size=16))
    model.loss(torch.rand(32, 1, 16, 16))  # fills the images Analytic-DPM estimates Gamma on
    return model.eval(), "mnist5k"


def load_model(run: str) -> tuple[DiffusionModel, str, object]:
    from snngen.runs import load_run

    opened = load_run(run)
    if not isinstance(opened.model, DiffusionModel):
        raise SystemExit(f"{run} holds a {opened.model.name!r} model, not a diffusion model")
    return opened.model, opened.cfg.data.name, opened.cfg


def reference_images(dataset: str, cfg, n: int, split: str, image_size: int) -> Tensor | None:
    """The first ``n`` images of ``split`` (``[n, C, H, W]`` in [0, 1]), or None if missing."""
    from snngen.data import get_dataset

    try:
        if cfg is not None:
            d = cfg.data
            data = get_dataset(d.name, root=d.root, split=split, image_size=d.image_size,
                               **d.options)  # fmt: skip
        else:
            data = get_dataset(dataset, split=split, image_size=image_size)
    except Exception as err:  # noqa: BLE001 - the benchmark still reports throughput
        print(f"note: no reference images ({err}); FID/KID skipped", file=sys.stderr)
        return None
    n = min(n, len(data))
    return torch.stack([data[i][0] for i in range(n)])


# ------------------------------------------------------------------------------ metrics


class Scorer:
    """FID/KID of sample sets against one reference set (features of it computed once)."""

    def __init__(self, real: Tensor, dataset: str, quick: bool, cfg=None, split: str = "test"):
        from snngen.metrics import ClassifierNet, extract_features
        from snngen.metrics.measure import protocol_reference
        from snngen.metrics.reference import DataSource

        self.extract = extract_features
        if quick:  # an untrained network: exercises the code, trains nothing
            torch.manual_seed(0)
            self.net = ClassifierNet(in_channels=real.shape[1], image_size=32).eval()
            self.real = extract_features(real, self.net, progress=False)
        else:  # snngen eval's scale: the snngen protocol's network and (cached) reference set
            source = DataSource.of(cfg.data) if cfg is not None else DataSource(dataset)
            self.net, _, self.real = protocol_reference("snngen", source, split=split,
                                                        progress=False)
        self.n_real = self.real.n

    def __call__(self, fake: Tensor) -> dict:
        from snngen.metrics import fid, kid

        f_fake = self.extract(fake, self.net, progress=False)
        size = min(1000, fake.shape[0], self.n_real)
        k = kid(f_fake, self.real, subsets=100, subset_size=size)
        return {"fid": fid(f_fake, self.real).value, "kid": k.value, "kid_std": k.std}


def make_scorer(
    real: Tensor | None, dataset: str, quick: bool, cfg=None, split: str = "test"
) -> Scorer | None:
    if real is None:
        return None
    try:
        return Scorer(real, dataset, quick, cfg, split)
    except ImportError as err:
        print(f"note: snngen.metrics is not usable ({err}); throughput only", file=sys.stderr)
        return None


# ------------------------------------------------------------------------------ main


def run_one(model: DiffusionModel, solver: str, steps: int, n: int, batch: int,
            seed: int) -> tuple[Tensor, Entry]:  # fmt: skip
    setup = 0.0
    if solver == "analytic-dpm":  # the one-off Gamma estimate, cached for the timed run
        t0 = time.perf_counter()
        model.analytic_gamma(steps)
        setup = time.perf_counter() - t0
    quiet = {"progress": False} if "progress" in inspect.signature(generate).parameters else {}
    t0 = time.perf_counter()
    x = generate(model, n, batch, seed=seed, solver=solver, steps=steps, **quiet)
    seconds = time.perf_counter() - t0
    entry = Entry(solver, steps, n, round(seconds, 3), round(n / seconds, 2), round(setup, 3))
    return x, entry


def format_table(entries: list[Entry]) -> str:
    head = (f"{'solver':<13} {'steps':>5} {'n':>6} {'img/s':>8} {'setup s':>8} "
            f"{'FID':>9} {'KID':>9} {'KID std':>9}")  # fmt: skip
    rows = [head, "-" * len(head)]

    def num(v: float | None, fmt: str) -> str:
        return format(v, fmt) if v is not None else "-"

    for e in entries:
        rows.append(
            f"{e.solver:<13} {e.steps:>5} {e.n:>6} {e.images_per_s:>8.2f} {e.setup_s:>8.1f} "
            f"{num(e.fid, '9.3f'):>9} {num(e.kid, '9.4f'):>9} {num(e.kid_std, '9.4f'):>9}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = run_parser(__doc__, "trained diffusion run folder (sddpm / ddpm)",
                   "smoke test on an untrained tiny model")
    p.add_argument("--n", type=int, default=None, help="samples per cell (default 1000; quick 32)")
    p.add_argument("--steps", default=None, help=f"comma list (default {DEFAULT_STEPS!r})")
    p.add_argument("--solvers", default=",".join(SOLVERS), help="comma list of solvers")
    p.add_argument("--batch-size", type=int, default=250, help="images per sampling batch")
    p.add_argument("--reference", default="test", choices=["test", "train"],
                   help="reference split of the snngen protocol (default test; --quick: its "
                   "first n images)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (same for every cell)")
    p.add_argument("--no-metrics", action="store_true", help="throughput only")
    args = parse_run_args(p, argv)

    cfg = None
    if args.quick:
        model, dataset = quick_model()
        name = "quick"
    else:
        model, dataset, cfg = load_model(args.run)
        name = Path(args.run).resolve().name
    n = args.n or (32 if args.quick else 1000)
    full = model.schedule.num_steps
    steps = parse_steps(args.steps or ("2,5,full" if args.quick else DEFAULT_STEPS), full)
    solvers = parse_solvers(args.solvers)

    scorer = None
    if not args.no_metrics:
        real = reference_images(dataset, cfg, n, args.reference, model.info.image_size)
        scorer = make_scorer(real, dataset, args.quick, cfg, args.reference)

    print(f"{name}: {model.name}, T={model.unet.cfg.timesteps}, {full} diffusion steps, "
          f"n={n}, threads={torch.get_num_threads()}", flush=True)  # fmt: skip
    entries: list[Entry] = []
    for solver in solvers:
        for s in steps:
            x, entry = run_one(model, solver, s, n, args.batch_size, args.seed)
            for key, value in (scorer(x) if scorer is not None else {}).items():
                setattr(entry, key, value)
            entries.append(entry)
            print(format_table([entry]).splitlines()[-1], flush=True)

    print()
    print(format_table(entries))
    record = {
        "benchmark": "diffusion_solvers",
        "run": str(Path(args.run).resolve()) if args.run else "quick (untrained)",
        "model": model.name,
        "snn_timesteps": model.unet.cfg.timesteps,
        "diffusion_steps": full,
        "n_samples": n,
        "n_reference": scorer.n_real if scorer else None,
        "reference_split": args.reference,
        "features": getattr(scorer.net, "name", None) if scorer else None,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "entries": [asdict(e) for e in entries],
    }
    write_results(args.out, RESULTS / f"diffusion_solvers_{name}.json", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
