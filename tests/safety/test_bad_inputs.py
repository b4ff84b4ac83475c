"""Validate, then write: every bad input a user can give is one line, exit 2, and the folder is
byte-for-byte as it was (listing and checksums compared before and after)."""

from __future__ import annotations

import os

import pytest
import torch
from fs_helpers import assert_one_line_exit2, snapshot

from snngen.cli import main

TRAIN_CASES = {
    # override(s)                       fragments the one line must contain
    "batch_size_0": (["data.batch_size=0"], ["data.batch_size", ">= 1", "got 0"]),
    "batch_size_neg": (["data.batch_size=-4"], ["data.batch_size", "got -4"]),
    "lr_neg": (["optim.lr=-1"], ["optim.lr", "> 0", "got -1"]),
    "lr_nan": (["optim.lr=.nan"], ["optim.lr", "finite", "nan"]),
    "betas": (["optim.betas=[0.9, 1.5]"], ["optim.betas", "[0, 1)"]),
    "precision": (["trainer.precision=banana"], ["trainer.precision", "32-true", "'banana'"]),
    "devices_0": (["trainer.devices=0"], ["trainer.devices", ">= 1", "got 0"]),
    "devices_too_many": (["trainer.devices=100000"], ["trainer.devices=100000", "this machine"]),
    "devices_junk": (["trainer.devices=abc"], ["trainer.devices", "'abc'"]),
    "workers": (["data.num_workers=-1"], ["data.num_workers", ">= 0", "got -1"]),
    "ema_decay": (["trainer.ema_decay=2"], ["trainer.ema_decay", "(0, 1)", "2.0"]),
    "max_steps_0": (["trainer.max_steps=0"], ["trainer.max_steps", ">= 1", "got 0"]),
    "max_epochs_0": (["trainer.max_steps=null", "trainer.max_epochs=0"], ["trainer.max_epochs"]),
    "ckpt_every": (["trainer.ckpt_every_n_steps=0"], ["trainer.ckpt_every_n_steps"]),
    "seed": (["trainer.seed=-1"], ["trainer.seed", "got -1"]),
    "image_size": (["data.image_size=100000"], ["data.image_size", "4096"]),
    "batch_too_big": (["data.batch_size=4501"], ["data.batch_size=4501", "4500 training items"]),
    "unknown_dataset": (["data.name=nope"], ["nope"]),
    "model_build": (["model.hidden=-3"], ["model: cannot build 'tiny'"]),
    "fp16_on_cpu": (["trainer.precision=16-mixed"], ["trainer.precision=16-mixed", "GPU"]),
    "eval_metric": (["eval.metrics=[fid, nope]"], ["eval.metrics", "nope"]),
    "is_on_inception": (["eval.metrics=[is]", "eval.features=inception"],
                        ["eval.metrics", "'is'", "logits"]),
    "name_traversal": (["name=../../escape"], ["name", "'../../escape'"]),
    "override_no_eq": (["trainer.max_steps"], ["expected key=value"]),
    "override_bad_yaml": (["optim.betas=[0.9,"], ["not valid YAML"]),
    "override_not_section": (["data.name.x=1"], ["data.name.x=1", "not a section"]),
    "unknown_key": (["trainer.max_step=3"], ["trainer.max_step", "unknown key"]),
    "wrong_type": (["data.batch_size=big"], ["data.batch_size", "'big'"]),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_bad_train_value(case, config_dir, capsys):
    overrides, fragments = TRAIN_CASES[case]
    before = snapshot(config_dir)
    code = main(["train", "c.yaml", *overrides])
    assert_one_line_exit2(code, capsys.readouterr().err, *fragments)
    assert snapshot(config_dir) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_asked_where_none_exists(config_dir, capsys):
    before = snapshot(config_dir)
    code = main(["train", "c.yaml", "trainer.accelerator=gpu"])
    assert_one_line_exit2(code, capsys.readouterr().err, "trainer.accelerator=gpu", "no CUDA GPU")
    assert snapshot(config_dir) == before


@pytest.mark.parametrize(
    "content, fragment",
    [
        (bytes(range(256)) * 4, "not a YAML text file"),
        (b"model: [unclosed", "not valid YAML"),
        (b"- just\n- a list\n", "expected a mapping"),
        (b"[" * 5000 + b"]" * 5000, "c.yaml"),
        (b"model: {name: [1, 2]}\n", "model.name is required"),
        (b"a" * 2_000_000, "too large"),
    ],
    ids=["random_bytes", "bad_yaml", "list", "deep_nesting", "name_not_str", "huge"],
)
def test_bad_config_file(content, fragment, config_dir, capsys):
    (config_dir / "c.yaml").write_bytes(content)
    before = snapshot(config_dir)
    code = main(["train", "c.yaml"])
    assert_one_line_exit2(code, capsys.readouterr().err, fragment)
    assert snapshot(config_dir) == before


def write_idx(path, dims, data=b""):
    header = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    path.write_bytes(header + data)


def test_idx_with_zero_images(config_dir, capsys):
    root = config_dir / "data" / "mnist"
    root.mkdir(parents=True)
    for img, lab in (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                     ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")):
        write_idx(root / img, (0, 28, 28))
        write_idx(root / lab, (0,))
    before = snapshot(config_dir)
    code = main(["train", "c.yaml", "data.name=mnist", f"data.root={config_dir / 'data'}"])
    assert_one_line_exit2(code, capsys.readouterr().err, "train-images-idx3-ubyte",
                          "holds no images")
    assert snapshot(config_dir) == before


def test_empty_nmnist_file(config_dir, capsys):
    pytest.importorskip("tonic")
    for split in ("Train", "Test"):
        d = config_dir / "data" / "nmnist" / split / "3"
        d.mkdir(parents=True)
        (d / "00000.bin").write_bytes(bytes([1, 2, 128, 0, 5]) * 3)
    (config_dir / "data" / "nmnist" / "Train" / "3" / "00001.bin").write_bytes(b"")
    before = snapshot(config_dir)
    code = main(["train", "c.yaml", "data.name=nmnist", f"data.root={config_dir / 'data'}",
                 "data.batch_size=1"])
    assert_one_line_exit2(code, capsys.readouterr().err, "00001.bin", "is empty")
    assert snapshot(config_dir) == before


# ----------------------------------------------------------------------------- resume


def test_resume_with_another_models_config(run_copy, config_dir, capsys):
    (config_dir / "sae.yaml").write_text(
        "model: {name: sae}\ndata: {name: mnist5k, image_size: 8, batch_size: 500}\n"
        "trainer: {max_steps: 4, accelerator: cpu, progress_bar: false}\n"
    )
    before, run_before = snapshot(config_dir), snapshot(run_copy)
    code = main(["train", "sae.yaml", "--resume", str(run_copy)])
    assert_one_line_exit2(code, capsys.readouterr().err, "belongs to model 'tiny'",
                          "names model 'sae'")
    assert snapshot(config_dir) == before and snapshot(run_copy) == run_before


def test_resume_with_other_widths(run_copy, config_dir, capsys):
    run_before = snapshot(run_copy)
    code = main(["train", "c.yaml", "model.hidden=9", "--resume", str(run_copy)])
    assert_one_line_exit2(code, capsys.readouterr().err, "does not fit the config's model")
    assert snapshot(run_copy) == run_before


RESUME_REFUSED = {
    # override: (the run's value, the command's)   (the base run: batch 500, adamw lr 1e-3)
    "data.batch_size=250": ("data.batch_size=500", "data.batch_size=250"),
    "optim.lr=0.5": ("optim.lr=0.001", "optim.lr=0.5"),
    "trainer.seed=3": ("trainer.seed=0", "trainer.seed=3"),
    "model.noise=0.5": ("model.noise=0.1", "model.noise=0.5"),
    "data.augment=[hflip]": ("data.augment=[]", "data.augment=[hflip]"),
}


@pytest.mark.parametrize("with_config", [True, False], ids=["config", "run_config"])
@pytest.mark.parametrize("override", sorted(RESUME_REFUSED))
def test_resume_refuses_a_change_it_cannot_honour(override, with_config, run_copy, config_dir,
                                                  capsys):
    """Resume continues the run's data order and optimisation: another batch size, lr, seed or
    model setting is refused (naming the key and both values) before config.yaml is touched,
    whether the config is given again or taken from the run."""
    before, run_before = snapshot(config_dir), snapshot(run_copy)
    argv = ["train", *(["c.yaml"] if with_config else []), "--resume", str(run_copy),
            "trainer.max_steps=4", override]
    code = main(argv)
    assert_one_line_exit2(code, capsys.readouterr().err, f"cannot resume {run_copy}",
                          *RESUME_REFUSED[override])
    assert snapshot(config_dir) == before and snapshot(run_copy) == run_before


def test_resume_truncated_checkpoint(run_copy, config_dir, capsys):
    ckpt = run_copy / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    run_before = snapshot(run_copy)
    code = main(["train", "c.yaml", "--resume", str(run_copy)])
    assert_one_line_exit2(code, capsys.readouterr().err, "last.ckpt", "is not a valid checkpoint")
    assert snapshot(run_copy) == run_before


def test_checkpoint_without_model_name(run_copy, config_dir, capsys):
    ckpt = run_copy / "checkpoints" / "last.ckpt"
    data = torch.load(ckpt, weights_only=True)
    del data["snngen"]["model_name"]
    torch.save(data, ckpt)
    for argv in (["sample", str(run_copy), "--out", "s.png"], ["info", str(run_copy)],
                 ["train", "c.yaml", "--resume", str(run_copy)]):
        before = snapshot(config_dir)
        code = main(argv)
        assert_one_line_exit2(code, capsys.readouterr().err, "not a valid snngen checkpoint",
                              "model_name")
        assert snapshot(config_dir) == before


# ----------------------------------------------------------------------------- sample / eval


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["--threshold-scale", "0"], ["--threshold-scale", "> 0"]),
        (["--threshold-scale", "nan"], ["--threshold-scale", "finite"]),
        (["--temperature", "-1"], ["--temperature", ">= 0"]),
        (["--temperature", "inf"], ["--temperature", "finite"]),
        (["--top-k", "0"], ["--top-k", ">= 1"]),
        (["--steps", "0"], ["--steps", ">= 1"]),
        (["--batch-size", "0"], ["--batch-size", ">= 1"]),
        (["--seed", "-1"], ["--seed"]),
        (["--n", "100000000"], ["--n 100000000", "at most 4096"]),
        (["--out", "x.bmp"], ["--out", "'.bmp'"]),
        (["--solver", "ddpm"], ["--solver", "does not apply", "'tiny'"]),
    ],
)
def test_bad_sample_option(argv, fragments, run_copy, config_dir, capsys):
    before, run_before = snapshot(config_dir), snapshot(run_copy)
    try:
        code = main(["sample", str(run_copy), *argv])
    except SystemExit as exit_:  # argparse
        code = exit_.code
    assert_one_line_exit2(code, capsys.readouterr().err, *fragments)
    assert snapshot(config_dir) == before and snapshot(run_copy) == run_before


def test_sample_to_read_only_place(run_copy, config_dir, capsys, monkeypatch):
    import snngen.files

    monkeypatch.setattr(snngen.files, "_read_only", lambda path: True)
    before = snapshot(config_dir)
    code = main(["sample", str(run_copy), "--n", "4", "--out", "ro/s.png"])
    assert_one_line_exit2(code, capsys.readouterr().err, "--out", "read-only file system")
    assert snapshot(config_dir) == before


def test_sample_too_little_disk(run_copy, config_dir, capsys, monkeypatch):
    import shutil

    import snngen.files

    usage = shutil.disk_usage(config_dir)
    monkeypatch.setattr(snngen.files.shutil, "disk_usage",
                        lambda p: usage._replace(free=1000))
    before = snapshot(config_dir)
    code = main(["sample", str(run_copy), "--n", "1000", "--out", "big.npy"])
    assert_one_line_exit2(code, capsys.readouterr().err, "--out", "MB free")
    assert snapshot(config_dir) == before


def test_eval_huge_n_refused_before_sampling(run_copy, config_dir, capsys):
    before = snapshot(config_dir)
    code = main(["eval", str(run_copy), "--metrics", "fid", "--n", str(10**11)])
    assert_one_line_exit2(code, capsys.readouterr().err, "--n", "GB of memory")
    assert snapshot(config_dir) == before


def test_eval_is_on_inception_refused(run_copy, config_dir, capsys):
    before = snapshot(run_copy)
    code = main(["eval", str(run_copy), "--metrics", "is", "--features", "inception"])
    assert_one_line_exit2(code, capsys.readouterr().err, "--metrics is", "logits")
    assert snapshot(run_copy) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_out_in_unwritable_folder(run_copy, config_dir, capsys):  # pragma: no cover - non-root
    locked = config_dir / "locked"
    locked.mkdir(mode=0o500)
    code = main(["sample", str(run_copy), "--out", str(locked / "s.png")])
    assert_one_line_exit2(code, capsys.readouterr().err, "no permission")


def test_evaluation_request_needs_a_sampling_model():
    """Sample metrics on a model without sample() are refused before training; mse is fine."""
    from tiny_model import TinyAutoencoder, TinyConfig

    from snngen.errors import SnngenError
    from snngen.evaluation import check_evaluation_request
    from snngen.models import DataInfo, GenerativeModel

    class NoSampler(GenerativeModel):
        name = "no_sampler"

        def reconstruct(self, x):  # mse applies (it is refused for a model without this)
            return x

    tiny = TinyAutoencoder(TinyConfig(), DataInfo(channels=1, image_size=8))
    assert tiny.can_sample and not NoSampler().can_sample
    check_evaluation_request(["fid"], 10, "classifier", tiny)
    check_evaluation_request(["mse"], 10, "classifier", NoSampler())
    with pytest.raises(SnngenError, match=r"eval.metrics: \['fid'\] compare samples.*no_sampler"):
        check_evaluation_request(["mse", "fid"], 10, "classifier", NoSampler(),
                                 metrics_flag="eval.metrics")
