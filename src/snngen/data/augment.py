"""Training-time augmentation, named in a config's ``data.augment`` list.

* ``hflip``: each item is mirrored left-right with probability 1/2, drawn from torch's global
  generator (so a seeded run flips the same items) - torchvision's ``RandomHorizontalFlip()``,
  which the originals apply to CIFAR-10, CelebA and LSUN (SDDPM, FSVAE, tts_vqvae).

Augmentation applies to the training split only; evaluation and reference statistics use the
images as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

AUGMENTATIONS = ("hflip",)


def check_augment(names: Sequence[str]) -> list[str]:
    """Return ``names`` as a list; ``ValueError("augment: ...")`` naming the first unknown one
    (the config layer reports it with the config's path)."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"augment: must be a list of names, got {names!r}")
    for name in names:
        if name not in AUGMENTATIONS:
            raise ValueError(f"augment: unknown augmentation {name!r}; known: "
                             f"{', '.join(AUGMENTATIONS)}")
    return list(names)


class RandomHFlip(Dataset):
    """Wraps a dataset of ``(x, label)``; ``x`` (``[C, H, W]`` or events ``[T, 2, H, W]``) is
    flipped along its last (width) axis with probability ``p``."""

    def __init__(self, dataset: Dataset, p: float = 0.5) -> None:
        self.dataset, self.p = dataset, p

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x, label = self.dataset[index]
        if torch.rand(()) < self.p:
            x = x.flip(-1)
        return x, label

    def __repr__(self) -> str:
        return f"RandomHFlip({self.dataset!r}, p={self.p})"


def augmented(dataset: Dataset, names: Sequence[str]) -> Dataset:
    """Return ``dataset`` wrapped by the augmentations ``names`` (in order)."""
    for name in check_augment(names):
        if name == "hflip":
            dataset = RandomHFlip(dataset)
    return dataset
