"""Every code example in README.md and docs/*.md works as written.

- ```python blocks run in order, one namespace per page (README: per section), in a scratch
  folder whose ``configs`` is the repository's; a block after ``<!-- not-run ... -->`` is only
  compiled. docs pages whose prose names a network (``unet``, ``ann_unet``, ...) get tiny
  stand-ins of that name (``STAND_INS``).
- every ``snngen ...`` line of a shell block (```bash or a plain fence) is parsed by snngen's
  own argument parser, a config it trains must exist, and every ``python benchmarks/...`` or
  ``bash scripts/...`` it names must exist.
- README's shell blocks marked ``<!-- tests: run ... -->`` (the quick start and the five
  commands) run for real, through ``snngen.cli.main``, with ``FAST`` appended to each command
  (a 2-step budget, 50 samples); ``snngen leaderboard`` is only parsed (minutes even --quick).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import re
import shlex
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from test_api import feature_cache, keep_classifiers

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
NOT_RUN = "<!-- not-run"
RUN_FAST = "<!-- tests: run"
# what the tests append to a command of a block marked RUN_FAST; None: parse only
FAST = {
    "train": ["trainer.max_steps=2", "eval.n_samples=50"],
    "eval": ["--n", "50"],
    "sample": [],
    "info": [],
    "leaderboard": None,
}
FENCE = re.compile(r"```([\w-]*)\n(.*?)```", flags=re.S)


def section(title: str, path: Path = README) -> str:
    """The text of the page's ``## title`` section (up to the next ``## `` heading)."""
    text = path.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def marker_before(text: str, pos: int) -> str:
    """The line just above position ``pos`` (a block's marker comment, if any)."""
    before = text[:pos].rstrip().splitlines()
    return before[-1].strip() if before else ""


def python_blocks(text: str) -> list[tuple[str, bool]]:
    """``(code, run)`` of each ```python block; ``run`` is False after ``<!-- not-run -->``."""
    return [
        (m.group(2), not marker_before(text, m.start()).startswith(NOT_RUN))
        for m in FENCE.finditer(text)
        if m.group(1) == "python"
    ]


def exec_blocks(text: str, name: str, ns: dict | None = None) -> tuple[dict, str]:
    """Execute the text's runnable python blocks in one namespace; returns it and their stdout."""
    # a real module, so that code defining dataclasses (which look their module up) runs too
    module = types.ModuleType("__readme__")
    module.__dict__.update(ns or {})
    ns = module.__dict__
    out = io.StringIO()
    with contextlib.redirect_stdout(out), _registered(module):
        for i, (code, run) in enumerate(python_blocks(text)):
            compiled = compile(code, f"{name} block {i}", "exec")
            if run:
                exec(compiled, ns)
    return ns, out.getvalue()


@contextlib.contextmanager
def _registered(module: types.ModuleType):
    """``module`` in ``sys.modules`` while the blocks run."""
    sys.modules[module.__name__] = module
    try:
        yield
    finally:
        sys.modules.pop(module.__name__, None)


def run_blocks(title: str) -> tuple[dict, str]:
    return exec_blocks(section(title), f"README.md ## {title}")


def shell_commands(text: str) -> list[tuple[list[str], str]]:
    """``(argv, marker)`` of every command line in the text's shell and plain fenced blocks;
    continuation lines are joined, comments and ``nice -n N`` / ``VAR=value`` prefixes dropped."""
    out = []
    for m in FENCE.finditer(text):
        if m.group(1) not in ("", "bash", "sh", "console"):
            continue
        marker = marker_before(text, m.start())
        for line in m.group(2).replace("\\\n", " ").splitlines():
            try:
                argv = shlex.split(line, comments=True)
            except ValueError:  # a diagram, not a command
                continue
            while argv and (re.fullmatch(r"[A-Z_]+=\S*", argv[0]) or argv[0] == "nice"):
                argv = argv[3:] if argv[0] == "nice" and argv[1:2] == ["-n"] else argv[1:]
            if argv:
                out.append((argv, marker))
    return out


@pytest.fixture
def scratch(tmp_path, monkeypatch, tmp_path_factory, request):
    """A working folder with the repository's configs and a private feature cache."""
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    cache = feature_cache(tmp_path_factory, request)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SNNGEN_CACHE", str(cache))
    yield tmp_path
    keep_classifiers(cache, request)


def test_python_api_section_runs(scratch):
    ns, out = run_blocks("Python API")
    lines = out.splitlines()
    assert "runs/sae_mnist5k 2" in lines
    trained = ns["run"].metrics  # what training measured (the evaluate() after it rewrites
    assert trained["fid"]["n_fake"] == 50 and trained["mse"]["n"] == 50  # RUN/metrics.json)
    assert f"{trained['mse']['value']} {trained['fid']['value']}" in lines
    images, same = ns["images"], ns["same_as_cli"]
    assert images.shape == same.shape == (16, 1, 32, 32)
    # README's comment: the same images as `snngen sample RUN --n 16 --seed 0`
    from snngen.cli import main

    assert main(["sample", "runs/sae_mnist5k", "--n", "16", "--seed", "0", "--out", "x.npy"]) == 0
    assert torch.equal(same, torch.from_numpy(np.load(scratch / "x.npy")))
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    assert ns["metrics"]["protocol"]["name"] == "snngen"
    assert ns["metrics"]["fid"]["n_fake"] == ns["metrics"]["kid"]["n_fake"] == 50


def test_python_guide_runs(scratch):
    page = ROOT / "docs" / "python.md"
    ns, out = exec_blocks(page.read_text(), "docs/python.md")
    lines = out.splitlines()
    assert "runs/sae_mnist5k 2" in lines
    images, same = ns["images"], ns["same_as_cli"]
    assert images.shape == same.shape == (16, 1, 16, 16)
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    metrics = ns["metrics"]
    assert metrics["protocol"]["name"] == "snngen" and metrics["fid"]["n_fake"] == 50
    ddpm = scratch / "runs" / "ddpm_mnist5k_small"
    assert json.loads((ddpm / "metrics.json").read_text())["kid"] == metrics["kid"]
    # the error line the page shows is the one printed
    shown = re.search(r"print\(err\)\s+# (.*)", page.read_text()).group(1)
    assert shown in lines
    assert ns["spikes"].shape == (8, 32, 64, 16, 16)
    assert set(torch.unique(ns["spikes"]).tolist()) <= {0.0, 1.0}


def test_not_run_python_blocks_are_the_leaderboard():
    skipped = [
        code
        for page in [README, *PAGES]
        for code, run in python_blocks(page.read_text())
        if not run
    ]
    assert len(skipped) == 1 and "snngen.leaderboard(" in skipped[0]
    try:
        from snngen.board import run_leaderboard
    except ImportError:  # the board is not in this checkout
        return
    # the page's call fits run_leaderboard's signature
    call = re.search(r"snngen\.leaderboard\((.*)\)", skipped[0]).group(1)
    kwargs = eval(f"dict({call})")
    inspect.signature(run_leaderboard).bind(**kwargs)


def stand_ins() -> dict:
    """Tiny networks and batches under the names docs/diffusion.md's prose gives them."""
    from snngen.models.unet import SpikingUNet, UNetConfig

    torch.manual_seed(0)
    small = dict(ch=2, ch_mult=[1], num_res_blocks=1)  # the smallest U-Net: seconds
    unet = SpikingUNet(UNetConfig(**small, timesteps=2, in_channels=3)).eval()
    ann = SpikingUNet(UNetConfig(**small, timesteps=1, neuron="relu", in_channels=1)).eval()
    gen = torch.Generator().manual_seed(0)

    def batches(k: int) -> list:
        return [
            (torch.randn(4, 1, 16, 16, generator=gen), torch.randint(0, 1000, (4,), generator=gen))
            for _ in range(k)
        ]

    return dict(
        unet=unet, ann_unet=ann, calibration_batches=batches(2), heldout_batches=batches(1)
    )


STAND_INS = {"diffusion.md": stand_ins}


@pytest.mark.parametrize("page", [p.name for p in PAGES if python_blocks(p.read_text())])
def test_docs_python_blocks_run(page, scratch, monkeypatch):
    if page == "python.md":  # run, with its outputs checked, by test_python_guide_runs
        return
    monkeypatch.setenv("SNNGEN_COMPILE", "0")  # tiny tensors: the eager kernel is fastest
    text = (ROOT / "docs" / page).read_text()
    ns, _ = exec_blocks(text, f"docs/{page}", STAND_INS.get(page, dict)())
    if page == "diffusion.md":
        assert ns["x"].shape == (16, 1, 16, 16) and torch.isfinite(ns["x"]).all()
        assert "4" in ns["report"].table()


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_shell_commands_parse_and_name_real_files(page):
    from snngen.cli import build_parser

    parser = build_parser()
    for argv, _ in shell_commands(page.read_text()):
        if argv[0] == "snngen":
            args = parser.parse_args(argv[1:])  # SystemExit on an option the CLI lacks
            if argv[1] == "train":
                assert (ROOT / args.config).is_file(), f"{page.name}: {argv}"
        elif argv[0] in ("python", "python3", "bash") and len(argv) > 1:
            if argv[1].startswith(("benchmarks/", "scripts/", "tests/")):
                assert (ROOT / argv[1]).is_file(), f"{page.name}: {argv}"


def test_readme_commands_run_with_a_small_budget(scratch, capsys):
    from snngen.cli import main

    ran = []
    for argv, marker in shell_commands(README.read_text()):
        if not marker.startswith(RUN_FAST) or argv[0] != "snngen":
            continue
        extra = FAST[argv[1]]
        if extra is None:
            continue
        assert main([*argv[1:], *extra]) == 0, argv
        ran.append(argv[1])
    assert ran == ["train", "train", "sample", "eval", "info"]
    for run in ("quickstart_mnist5k", "sae_mnist5k"):
        assert (scratch / "runs" / run / "metrics.json").is_file()
    assert (scratch / "samples.png").stat().st_size > 0
