"""How recognisable a run's digits are: the mnist5k classifier's verdict on its samples.

Draws ``--n`` samples (``snngen sample``'s, same seed), classifies them with the in-package
mnist5k classifier (97 % test accuracy on real digits) and prints the share of samples it
recognises with softmax confidence >= ``--confidence`` (real test digits give the reference
share), the mean confidence and the class histogram. For a model that reconstructs, the same
for its reconstructions of the 500 test digits: what its decoder can draw, so the gap to the
samples is what its prior (or sampler) loses. Writes JSON to ``benchmarks/results/``.

    python benchmarks/recognisable_digits.py runs/quickstart_mnist5k --n 1000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def verdict(net, images: torch.Tensor, confidence: float) -> dict:
    """Share of images classified with softmax >= ``confidence``, mean confidence, classes."""
    with torch.no_grad():
        probs = torch.cat([net.features_and_logits(x)[1].softmax(-1)
                           for x in images.split(250)])
    top, cls = probs.max(-1)
    return {"n": len(images), "recognised": float((top >= confidence).float().mean()),
            "mean_confidence": float(top.mean()),
            "classes": torch.bincount(cls, minlength=10).tolist()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("run", help="run folder of a model trained on mnist5k")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--confidence", type=float, default=0.9)
    p.add_argument("--checkpoint", default=None,
                   help="another checkpoint of RUN/checkpoints/ (e.g. cpu_2_of_4.ckpt)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import snngen
    from snngen.data import get_dataset
    from snngen.metrics.classifier import load_classifier
    from snngen.runs import load_run, open_datasets

    net = load_classifier("mnist5k").eval()
    run = load_run(args.run, checkpoint=args.checkpoint)
    fake = snngen.sample(run, args.n, seed=args.seed)
    test = get_dataset("mnist5k", split="test", image_size=32)
    real = torch.stack([test[i][0] for i in range(len(test))])
    rec = {"run": str(args.run), "checkpoint": args.checkpoint or "last.ckpt",
           "steps": run.meta.get("batches_seen"), "confidence": args.confidence,
           "samples": verdict(net, fake, args.confidence),
           "test_digits": verdict(net, real, args.confidence)}
    model = run.model.eval()
    if hasattr(model, "reconstruct"):
        _, test_run = open_datasets(run.cfg)  # as the run's data config has them
        inputs = torch.stack([test_run[i][0] for i in range(len(test_run))])
        g = torch.Generator().manual_seed(args.seed)
        with torch.no_grad():
            recon = torch.cat([model.reconstruct(x, generator=g) for x in inputs.split(250)])
        rec["test_reconstructions"] = verdict(net, recon.clamp(0, 1), args.confidence)
    print(json.dumps(rec, indent=2))
    tag = f"_{Path(args.checkpoint).stem}" if args.checkpoint else ""
    out = Path(args.out) if args.out else RESULTS / f"recognisable_{Path(args.run).name}{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
