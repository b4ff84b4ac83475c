"""Build the golden fixtures by running the original systems' own code.

Usage::

    python tests/golden/make_fixtures.py               # rebuild every fixture
    python tests/golden/make_fixtures.py --only fsvae  # one family
    python tests/golden/make_fixtures.py --check       # rebuild in memory, compare with the files

Each family has a builder module ``build_FAMILY.py`` beside this script with

* ``ORIGINALS``: ``{"key": ("owner/name", "commit sha")}`` - the public repositories it runs;
* ``build(sources: dict[str, Path]) -> dict[str, dict]``: fixture name -> payload (tensors and
  plain containers), computed by the original code checked out at ``sources[key]``.

The originals are cloned at the pinned commit into a temporary folder that is deleted
afterwards; nothing of them is committed. A clone comes from ``https://github.com/owner/name``,
or from a local mirror when ``SNNGEN_ORIGINALS`` names a folder holding ``owner+name/repo`` git
directories (the layout of this project's ``fetch`` tool) or ``owner+name`` checkouts. Each
builder runs in its own interpreter, so originals with clashing module names do not meet.
Fixtures record the repository and commit they came from under ``meta``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
FAMILIES = ["sae", "fsvae", "diffusion", "vqvae", "prior"]
MAX_FIXTURE_BYTES = 1_000_000
MAX_TOTAL_BYTES = 10_000_000


def clone_source(repo: str) -> str:
    """Return what to ``git clone`` for ``owner/name`` (a local mirror if one is configured)."""
    mirror = os.environ.get("SNNGEN_ORIGINALS")
    if mirror:
        base = Path(mirror) / repo.replace("/", "+")
        for candidate in (base / "repo", base):
            if candidate.exists():
                return str(candidate)
    return f"https://github.com/{repo}"


def checkout(repo: str, commit: str, into: Path) -> Path:
    """Clone ``repo`` into ``into`` and check out ``commit``; return the work tree."""
    into.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", clone_source(repo), str(into)],
                   check=True)
    git = ["git", "-C", str(into)]
    if subprocess.run([*git, "checkout", "--quiet", commit], capture_output=True).returncode:
        # a partial mirror lists some large files without their contents: check out the rest
        tree = subprocess.run([*git, "ls-tree", "-r", "-z", commit], check=True,
                              capture_output=True, text=True).stdout
        entries = [e.split("\t", 1) for e in tree.split("\0") if e]
        shas = "".join(info.split()[2] + "\n" for info, _ in entries)
        status = subprocess.run([*git, "cat-file", "--batch-check"], input=shas, check=True,
                                capture_output=True, text=True).stdout.splitlines()
        present = [path for (_, path), line in zip(entries, status, strict=True)
                   if not line.endswith(" missing")]
        subprocess.run([*git, "checkout", commit, "--pathspec-from-file=-",
                        "--pathspec-file-nul"], input="\0".join(present), check=True, text=True)
        print(f"{repo}: {len(entries) - len(present)} files absent from the mirror, not checked "
              "out")
    return into


def run_builder(family: str, out_dir: Path) -> None:
    """(child process) check out the family's originals, run its builder, save its fixtures."""
    sys.path.insert(0, str(HERE))
    builder = importlib.import_module(f"build_{family}")
    with tempfile.TemporaryDirectory(prefix=f"snngen-original-{family}-") as tmp:
        sources = {
            key: checkout(repo, commit, Path(tmp) / key)
            for key, (repo, commit) in builder.ORIGINALS.items()
        }
        fixtures = builder.build(sources)
    meta = {key: {"repo": repo, "commit": commit}
            for key, (repo, commit) in builder.ORIGINALS.items()}
    for name, payload in fixtures.items():
        payload = dict(payload)
        payload["meta"] = {"originals": meta, "builder": f"build_{family}.py"}
        torch.save(payload, out_dir / f"{name}.pt")


def build_family(family: str, out_dir: Path) -> list[Path]:
    """Run ``family``'s builder in a fresh interpreter; return the fixture files written."""
    before = set(out_dir.glob("*.pt"))
    subprocess.run([sys.executable, __file__, "--child", family, "--out", str(out_dir)], check=True)
    return sorted(set(out_dir.glob("*.pt")) - before)


def same(a, b, where: str) -> list[str]:
    """Return the differences between two loaded fixtures (empty when identical)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return [f"{where}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}"]
        if not torch.equal(a, b):
            diff = (a.double() - b.double()).abs().max().item() if a.is_floating_point() else "int"
            return [f"{where}: values differ (max {diff})"]
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(set(a) ^ set(b))} differ"]
        return [d for k in a for d in same(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: lengths {len(a)} vs {len(b)}"]
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in same(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", action="append", choices=FAMILIES, help="build only this family")
    parser.add_argument("--check", action="store_true", help="rebuild and compare, write nothing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_builder(args.child, args.out)
        return 0
    families = args.only or FAMILIES
    FIXTURES.mkdir(exist_ok=True)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="snngen-fixtures-") as tmp:
        for family in families:
            out = Path(tmp) / family
            out.mkdir()
            for path in build_family(family, out):
                size = path.stat().st_size
                if size > MAX_FIXTURE_BYTES:
                    print(f"{path.name}: {size} bytes, over the {MAX_FIXTURE_BYTES} limit")
                    failures += 1
                target = FIXTURES / path.name
                if args.check:
                    if not target.exists():
                        print(f"{path.name}: not committed")
                        failures += 1
                        continue
                    diffs = same(torch.load(path, weights_only=True),
                                 torch.load(target, weights_only=True), path.stem)
                    print(f"{path.name}: {'identical' if not diffs else 'DIFFERENT'}")
                    for d in diffs[:20]:
                        print("   ", d)
                    failures += bool(diffs)
                else:
                    target.write_bytes(path.read_bytes())
                    print(f"wrote {target.relative_to(HERE.parent.parent)} ({size} bytes)")
    total = sum(p.stat().st_size for p in FIXTURES.glob("*.pt"))
    if total > MAX_TOTAL_BYTES:
        print(f"fixtures total {total} bytes, over the {MAX_TOTAL_BYTES} limit")
        failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
