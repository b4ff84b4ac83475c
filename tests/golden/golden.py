"""Loading golden fixtures and comparing snngen's outputs with the original code's.

A fixture is ``tests/golden/fixtures/NAME.pt``: a dict of tensors and plain containers written
by ``make_fixtures.py`` from the original system's own code (loaded here with
``weights_only=True``). Tolerances: 1e-6 in float64, 1e-4 in float32, relative to the size of
the expected values (``max|actual - expected| <= tol * max(1, max|expected|)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

FIXTURES = Path(__file__).parent / "fixtures"
TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4}


def load_fixture(name: str) -> dict[str, Any]:
    """Return the fixture ``NAME.pt`` (a dict); skip the test if it has not been built."""
    path = FIXTURES / f"{name}.pt"
    if not path.exists():  # pragma: no cover - fixtures are committed
        pytest.fail(f"golden fixture {path} missing: run python tests/golden/make_fixtures.py")
    return torch.load(path, map_location="cpu", weights_only=True)


def max_difference(actual: Tensor, expected: Tensor) -> float:
    """Largest absolute difference (shapes must match exactly)."""
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"shape {tuple(actual.shape)} != original {tuple(expected.shape)}"
    )
    if actual.numel() == 0:
        return 0.0
    return (actual.detach().double() - expected.detach().double()).abs().max().item()


def assert_matches(actual: Tensor, expected: Tensor, what: str, tol: float | None = None) -> None:
    """Assert ``actual`` equals the original's ``expected`` within the dtype's tolerance."""
    if tol is None:
        tol = TOLERANCE.get(expected.dtype, 1e-4)
    scale = max(1.0, expected.detach().double().abs().max().item()) if expected.numel() else 1.0
    diff = max_difference(actual, expected)
    assert diff <= tol * scale, (
        f"{what}: differs from the original by {diff:.3g} (tol {tol * scale:.3g})"
    )
