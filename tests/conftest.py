"""Shared fixtures: a tiny registered model so harness tests do not depend on real models."""

from __future__ import annotations

import os

# Triton reads TRITON_INTERPRET when it is first imported and launched; any test (or library
# code such as torch.compile) may import it first, so on a machine without CUDA the whole session
# runs Triton kernels in its CPU interpreter (tests/spiking/test_triton_kernels.py needs it).
if not os.environ.get("CUDA_VISIBLE_DEVICES") and not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch
from tiny_model import TinyAutoencoder, TinyConfig  # noqa: F401  (registers model "tiny")
from torch.utils.data import TensorDataset

from snngen.models import DataInfo


@pytest.fixture
def tiny_data():
    """(dataset of 64 random 1x8x8 images with labels, its DataInfo)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=gen)
    return TensorDataset(x, torch.zeros(64, dtype=torch.long)), DataInfo(channels=1, image_size=8)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests use tiny tensors: one intra-op thread is faster, and immune to a busy machine
    (session-wide, so module-scoped fixtures that train run on one thread too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
