"""ANN-to-SNN conversion of a trained ANN diffusion U-Net: error against the ANN per layer and T.

Loads a trained ``ddpm`` run (the ReLU twin of the spiking U-Net, e.g. from
``configs/ddpm_mnist5k_small.yaml``), balances the IF thresholds on noisy training images
(``x_t`` at uniform random diffusion times), converts, and reports for T in {4, 8, 16, 32}
the relative L2 error of every layer's spike rate against the ReLU output and of the predicted
noise against the ANN's. With ``--samples N`` it also samples N images from the ANN and from the
converted SNN at each T (same noise, ``--solver`` / ``--steps``) and gives FID/KID under the
snngen metric protocol (its 32-px classifier) against the ANN's own samples and the test split.
Prints tables and writes JSON to ``benchmarks/results/``.

    python benchmarks/diffusion_conversion.py runs/ddpm_mnist5k_small
    python benchmarks/diffusion_conversion.py runs/ddpm_mnist5k_small --samples 500 --steps 20
    python benchmarks/diffusion_conversion.py --quick     # a briefly trained tiny ANN, < 1 min
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from snngen.conversion import conversion_report, convert_unet, noisy_inputs
from snngen.diffusion import sample as run_sampler
from snngen.models import DataInfo, build_model
from snngen.models.diffusion_model import DDPMConfig, DiffusionModel

sys.path.append(str(Path(__file__).resolve().parent))  # bench_common, also when loaded by path
from bench_common import parse_run_args, run_parser, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def images(dataset: str, split: str, n: int, image_size: int, cfg=None) -> Tensor:
    """First ``n`` images of a split, ``[n, C, H, W]`` in [0, 1]."""
    from snngen.data import get_dataset

    if cfg is not None:
        d = cfg.data
        data = get_dataset(d.name, root=d.root, split=split, image_size=d.image_size, **d.options)
    else:
        data = get_dataset(dataset, split=split, image_size=image_size)
    return torch.stack([data[i][0] for i in range(min(n, len(data)))])


def quick_model(train_images: Tensor, steps: int = 40) -> DiffusionModel:
    """A tiny ReLU U-Net trained for ``steps`` Adam steps (seconds)."""
    torch.manual_seed(0)
    cfg = DDPMConfig(ch=8, ch_mult=[1, 2], num_res_blocks=1, diffusion_steps=100,
                     beta_1=1e-3, beta_T=0.2, gamma_images=8)  # fmt: skip
    model = build_model(cfg, DataInfo(channels=train_images.shape[1],
                                      image_size=train_images.shape[-1]))  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, train_images.shape[0], (32,), generator=gen)
        loss = model.loss(train_images[idx])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def sample_images(eps_model, model: DiffusionModel, noise: Tensor, solver: str, steps: int,
                  batch: int) -> Tensor:  # fmt: skip
    """Images in [0, 1] from fixed starting noise (the same for the ANN and every SNN)."""
    chunks = []
    for i, x_T in enumerate(noise.split(batch)):
        gen = torch.Generator().manual_seed(1000 + i)
        x = run_sampler(solver, eps_model, model.schedule, x_T, steps, generator=gen)
        chunks.append(((x.clamp(-1, 1) + 1) / 2).float())
    return torch.cat(chunks)


def main(argv: list[str] | None = None) -> int:
    p = run_parser(__doc__, "trained ANN diffusion run folder (model ddpm, relu)",
                   "smoke test: a briefly trained tiny ANN")
    p.add_argument("--train-steps", type=int, default=40, help="--quick: ANN training steps")
    p.add_argument("--steps-T", default="4,8,16,32", help="SNN time steps to report")
    p.add_argument("--percentile", type=float, default=99.9, help="threshold percentile")
    p.add_argument("--calib", type=int, default=256, help="calibration images (train split)")
    p.add_argument("--eval", type=int, default=128, help="images the errors are measured on")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--samples", type=int, default=0, help="also sample this many for FID/KID")
    p.add_argument("--solver", default="ddim", help="sampler for --samples (default ddim)")
    p.add_argument("--steps", type=int, default=20, help="sampler steps for --samples")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parse_run_args(p, argv)
    snn_steps = [int(s) for s in args.steps_T.split(",") if s.strip()]

    cfg = None
    if args.quick:
        dataset, name = "mnist5k", "quick"
        args.calib, args.eval = min(args.calib, 64), min(args.eval, 32)
        model = quick_model(images(dataset, "train", 512, 16), args.train_steps)
        size = 16
    else:
        from snngen.runs import load_run

        opened = load_run(args.run)
        model, cfg = opened.model, opened.cfg
        if not isinstance(model, DiffusionModel):
            raise SystemExit(f"{args.run} holds a {model.name!r} model, not a diffusion model")
        dataset, name, size = cfg.data.name, Path(args.run).resolve().name, model.info.image_size
    ann = model.unet.eval()

    t0 = time.perf_counter()
    calib = noisy_inputs(model, images(dataset, "train", args.calib, size, cfg),
                         args.batch_size, seed=1)  # fmt: skip
    heldout = noisy_inputs(model, images(dataset, "test", args.eval, size, cfg),
                           args.batch_size, seed=2)  # fmt: skip
    snn = convert_unet(ann, calib, timesteps=max(snn_steps), percentile=args.percentile)
    report = conversion_report(ann, snn, heldout, steps=snn_steps)
    seconds = time.perf_counter() - t0
    print(f"{name}: {len(report.thresholds)} converted layers, thresholds at the "
          f"{args.percentile} percentile of {args.calib} noisy training images; errors on "
          f"{args.eval} noisy test images ({seconds:.1f} s)\n")  # fmt: skip
    print(report.table())

    record = {
        "benchmark": "diffusion_conversion",
        "run": str(Path(args.run).resolve()) if args.run else "quick",
        "percentile": args.percentile,
        "n_calibration": args.calib,
        "n_eval": args.eval,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "report": report.to_dict(),
    }

    if args.samples > 0:
        record["sampling"] = sample_table(args, model, ann, snn, snn_steps, dataset, size, cfg)

    write_results(args.out, RESULTS / f"diffusion_conversion_{name}.json", record)
    return 0


def sample_table(args, model, ann, snn, snn_steps, dataset, size, cfg) -> list[dict]:
    """Sample from the ANN and the SNN at each T; FID/KID against the ANN and the test set."""
    gen = torch.Generator().manual_seed(0)
    shape = (args.samples, model.info.channels, size, size)
    noise = torch.randn(shape, generator=gen)
    try:
        from snngen.metrics import extract_features, fid, kid
    except ImportError as err:
        print(f"note: snngen.metrics not usable ({err}); sampling throughput only")
        extract_features = None
    rows = []
    sets = [("ANN", ann, None)] + [(f"SNN T={s}", snn, s) for s in snn_steps]
    feats = {}
    if extract_features is not None:  # the snngen protocol: snngen eval's network and scale
        from snngen.metrics.measure import protocol_reference
        from snngen.metrics.reference import DataSource

        source = DataSource.of(cfg.data) if cfg is not None else DataSource(dataset)
        net, _, feats["test"] = protocol_reference("snngen", source, progress=False)
    for label, eps_model, steps_t in sets:
        if steps_t is not None:
            snn.timesteps = steps_t
        t0 = time.perf_counter()
        x = sample_images(eps_model, model, noise, args.solver, args.steps, args.batch_size)
        row = {"net": label, "images_per_s": round(args.samples / (time.perf_counter() - t0), 2)}
        if extract_features is not None:
            f = extract_features(x, net, progress=False)
            if label == "ANN":
                feats["ann"] = f
            size_k = min(1000, args.samples, feats["test"].n)
            row["fid_test"] = fid(f, feats["test"]).value
            row["kid_test"] = kid(f, feats["test"], subset_size=size_k).value
            row["fid_ann"] = fid(f, feats["ann"]).value
        rows.append(row)
        print(json.dumps(row))
    return rows


if __name__ == "__main__":
    sys.exit(main())
