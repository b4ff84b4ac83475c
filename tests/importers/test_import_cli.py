"""``snngen import``: an original checkpoint becomes a run folder that sample/eval/info accept,
and the imported model computes what the original computed (golden fixture outputs)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "golden"))
from golden import assert_matches, load_fixture  # noqa: E402

from snngen.cli import main  # noqa: E402
from snngen.runs import load_run  # noqa: E402

#: a config describing the golden fixture's tiny SDDPM U-Net (CIFAR-10 at 8 px: the dataset's
#: files are not needed, its shape comes from the dataset's declaration)
SDDPM_TINY = """\
model: {name: sddpm, ch: 4, ch_mult: [1, 2], attn: [], num_res_blocks: 1, timesteps: 4}
data: {name: cifar10, image_size: 8, batch_size: 4}
trainer: {max_steps: 1}
eval: {metrics: []}
"""


@pytest.fixture(scope="module")
def original_file(tmp_path_factory) -> tuple[Path, dict]:
    """An SDDPM-style checkpoint file: the original's net_model plus an EMA copy."""
    fx = load_fixture("diffusion_unet")
    folder = tmp_path_factory.mktemp("original")
    ema = {k: v + 0.5 if k.endswith("conv.weight") else v for k, v in fx["state_dict"].items()}
    path = folder / "ckpt.pt"
    torch.save({"net_model": fx["state_dict"], "ema_model": ema, "step": 7}, path)
    (folder / "tiny.yaml").write_text(SDDPM_TINY)
    return path, fx


def test_import_then_the_run_computes_the_originals_outputs(original_file, tmp_path, capsys):
    path, fx = original_file
    config = path.parent / "tiny.yaml"
    out = tmp_path / "raw"
    assert main(["import", "sddpm", str(path), "--config", str(config), "--out", str(out),
                 "--no-ema"]) == 0
    assert "imported sddpm" in capsys.readouterr().out
    run = load_run(out)
    unet = run.model.unet.double()
    assert_matches(unet(fx["x"], fx["t"]), fx["eval_eps"], "imported U-Net, eval mode")
    # the EMA copy is preferred by default
    assert main(["import", "sddpm", str(path), "--config", str(config),
                 "--out", str(tmp_path / "ema")]) == 0
    ema_run = load_run(tmp_path / "ema")
    w = dict(ema_run.model.unet.named_parameters())["conv.weight"]
    assert torch.equal(w, fx["state_dict"]["conv.weight"].float() + 0.5)
    # and the folder is a run the other commands take
    assert main(["sample", str(out), "--n", "2", "--solver", "ddim", "--steps", "2",
                 "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0


def _assert_refused(capsys, argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_import_refuses_bad_inputs_before_writing(original_file, tmp_path, capsys):
    path, fx = original_file
    config = path.parent / "tiny.yaml"
    out = tmp_path / "never"
    base = ["import", "sddpm", str(path), "--config", str(config), "--out", str(out)]
    # a weight missing from the original
    broken = dict(fx["state_dict"])
    del broken["tail_conv.weight"]
    bad = tmp_path / "missing.pt"
    torch.save({"net_model": broken}, bad)
    _assert_refused(capsys, ["import", "sddpm", str(bad), "--config", str(config),
                             "--out", str(out)], "tail_conv.weight")
    # a config of another width: the first mis-shaped weight is named
    wide = tmp_path / "wide.yaml"
    wide.write_text(SDDPM_TINY.replace("ch: 4,", "ch: 6,"))
    _assert_refused(capsys, ["import", "sddpm", str(path), "--config", str(wide),
                             "--out", str(out)], "shape")
    # a config of another model
    other = tmp_path / "other.yaml"
    other.write_text(SDDPM_TINY.replace("name: sddpm, ch: 4, ch_mult: [1, 2], attn: [], "
                                        "num_res_blocks: 1, timesteps: 4", "name: sae"))
    _assert_refused(capsys, ["import", "sddpm", str(path), "--config", str(other),
                             "--out", str(out)], "model.name is 'sae'")
    # a checkpoint that would run code when unpickled
    evil = tmp_path / "evil.pt"

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"net_model": Exploit()}, evil)
    _assert_refused(capsys, ["import", "sddpm", str(evil), "--config", str(config),
                             "--out", str(out)], "not a valid checkpoint")
    # an existing, non-empty output folder
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("keep")
    _assert_refused(capsys, [*base[:-1], str(taken)], "already exists")
    assert not out.exists() and (taken / "x").read_text() == "keep"


def test_import_takes_overrides_after_its_options(original_file, tmp_path, capsys):
    """``snngen import ... --out RUN --no-ema key=value``: the override stands after the flags
    and lands in the run's config."""
    path, _ = original_file
    out = tmp_path / "over"
    assert main(["import", "sddpm", str(path), "--config", str(path.parent / "tiny.yaml"),
                 "--out", str(out), "--no-ema", "eval.batch_size=7"]) == 0
    assert load_run(out).cfg.eval.batch_size == 7
