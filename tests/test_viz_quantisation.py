"""PNGs are quantised as torchvision's ``save_image`` writes them (the files pytorch-fid reads):
``x.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)``, halves rounded up."""

import numpy as np
import torch

from snngen.viz import to_pil


def save_image_levels(x: torch.Tensor) -> np.ndarray:
    """torchvision.utils.save_image's expression, written out (torchvision is not a dependency)."""
    return x.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()


def test_half_levels_round_up_as_save_image():
    # every half level (k + 0.5) / 255, and values outside [0, 1], in float32 as samples are
    halves = (torch.arange(255, dtype=torch.float64) + 0.5) / 255
    x = torch.cat([halves, torch.tensor([-0.2, 0.0, 1.0, 1.3], dtype=torch.float64)]).float()
    got = np.asarray(to_pil(x.view(1, 1, -1)))[0]
    assert (got == save_image_levels(x.clone())).all()
    # round-half-to-even would differ from save_image on some of these exact halves
    even = (x * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    assert (even != got).any()
