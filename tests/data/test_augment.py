"""data.augment: [hflip] - random horizontal flips of the training split, as the originals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from snngen.config import load_config
from snngen.data import get_dataset
from snngen.data.augment import RandomHFlip, augmented
from snngen.errors import ConfigError


def test_hflip_mirrors_about_half_of_the_items_left_right():
    base = get_dataset("mnist5k", split="test", image_size=16)
    flipped = augmented(base, ["hflip"])
    assert isinstance(flipped, RandomHFlip) and len(flipped) == len(base)
    torch.manual_seed(0)
    draws = torch.rand(200)  # what the wrapper draws, one number per item, in order
    torch.manual_seed(0)
    for i in range(200):
        x, y = flipped[i]
        original, label = base[i]
        assert y == label
        expected = original.flip(-1) if draws[i] < 0.5 else original
        assert torch.equal(x, expected)
        # a mirrored column order, not a transpose or an up-down flip
        if draws[i] < 0.5:
            assert torch.equal(x[..., 0], original[..., -1])
    assert 70 < int((draws < 0.5).sum()) < 130


def test_hflip_flips_event_frames_along_width():
    frames = torch.arange(2 * 2 * 3 * 4, dtype=torch.float32).view(2, 2, 3, 4)
    ds = RandomHFlip([(frames, 0)], p=1.0)
    assert torch.equal(ds[0][0], frames[..., [3, 2, 1, 0]])


def test_config_augment_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: sae}\ndata: {name: mnist5k, augment: [vflip]}\n"
                    "trainer: {max_steps: 1}\n")
    with pytest.raises(ConfigError, match="augment: unknown augmentation 'vflip'"):
        load_config(path)
    path.write_text("model: {name: sae}\ndata: {name: mnist5k, augment: hflip}\n"
                    "trainer: {max_steps: 1}\n")
    with pytest.raises(ConfigError, match="augment"):
        load_config(path)


def test_training_split_only_is_augmented(tmp_path):
    from snngen.preflight import prepare_training

    path = tmp_path / "c.yaml"
    path.write_text(f"model: {{name: sae, channels: [4, 8]}}\nout_dir: {tmp_path / 'runs'}\n"
                    "data: {name: mnist5k, image_size: 16, augment: [hflip]}\n"
                    "trainer: {max_steps: 1}\neval: {metrics: []}\n")
    plan = prepare_training(path, evaluate=False)
    assert isinstance(plan.train_set, RandomHFlip)
    assert not isinstance(plan.test_set, RandomHFlip)


@pytest.mark.parametrize("name", ["sddpm_cifar10", "fsvae_cifar10", "fsvae_celeba",
                                  "sddpm_celeba", "vqvae_celeba", "sdm_tsm_cifar10"])
def test_paper_configs_flip_like_the_originals(name):
    root = Path(__file__).resolve().parents[2]
    assert load_config(root / "configs" / f"{name}.yaml").data.augment == ["hflip"]
