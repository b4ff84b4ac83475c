"""The leaderboard's resolution floor: the FID of the real test images brought to a row's output
size, against independent computations on a tiny synthetic set; its cache; its table columns."""

import json

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from test_board import row
from torch import nn

from snngen.board import floor as board_floor
from snngen.board.entries import entry
from snngen.board.floor import add_floors, cached_floor, floor_key, floor_source, row_data
from snngen.board.report import markdown_table
from snngen.data.base import ArrayDataset
from snngen.metrics.measure import prepare_measurement
from snngen.metrics.plan import plan_evaluation
from snngen.metrics.reference import DataSource
from snngen.metrics.scores import fid

# a tiny synthetic "dataset": 12 x 12 uint8 blobs, 40 test and 60 training images
_GEN = torch.Generator().manual_seed(0)
_SPLITS = {s: (torch.rand(n, 1, 12, 12, generator=_GEN) ** 3 * 255).round().to(torch.uint8)
           for s, n in (("test", 40), ("train", 60))}


def _open(self, split):  # DataSource.open on the synthetic set
    return ArrayDataset(_SPLITS[split], torch.zeros(len(_SPLITS[split])), self.image_size,
                        dict(self.options).get("fit", "resize"))


class _Net(nn.Module):
    """A fixed feature network for any image size, sensitive to fine detail: the mean and the
    mean absolute Laplacian of each image quadrant (8 numbers), projected to 5-d."""

    def __init__(self) -> None:
        super().__init__()
        lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])
        self.register_buffer("lap", lap.view(1, 1, 3, 3))
        self.proj = nn.Linear(8, 5)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(5, 8, generator=torch.Generator().manual_seed(1)))
            self.proj.bias.zero_()

    def forward(self, x):
        edges = nn.functional.conv2d(x, self.lap).abs()
        pool = nn.functional.adaptive_avg_pool2d
        return self.proj(torch.cat([pool(x, 2).flatten(1), pool(edges, 2).flatten(1)], 1))


@pytest.fixture
def ready(monkeypatch):
    """A prepared FID measurement on :class:`_Net` with the synthetic training split as the
    reference, and the synthetic set as every DataSource's images."""
    monkeypatch.setattr(DataSource, "open", _open)
    plan = plan_evaluation("mnist5k", ["fid"], 40, protocol="leaderboard")
    real = _SPLITS["train"].float() / 255
    return prepare_measurement(plan, DataSource("synthetic"), features=_Net(), real=real)


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    """pytorch-fid's formula with scipy's matrix square root, in float64."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _features(x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return _Net()(x).double().numpy()


def test_floor_at_the_native_size_is_the_fid_of_the_test_images(ready):
    src = DataSource("synthetic")
    got = board_floor.resolution_floor(ready, floor_source(src, 12))
    test, train = _SPLITS["test"].float() / 255, _SPLITS["train"].float() / 255
    want = fid(torch.from_numpy(_features(test)), torch.from_numpy(_features(train))).value
    # float32 features of the same network, two float64 Frechet codes: 1e-6 relative is
    # rounding; the downsized floor below is 10x larger
    assert got == pytest.approx(want, rel=1e-6)
    assert got == pytest.approx(_frechet(_features(test), _features(train)), rel=1e-6)


def test_floor_at_a_smaller_size_brings_the_test_images_down_as_training_data(ready):
    got = board_floor.resolution_floor(ready, floor_source(DataSource("synthetic"), 7))
    # by hand: PIL's bilinear resize of each 8-bit test image to 7 x 7 (what torchvision's
    # Resize does to the training data of a 7-px row), then the network, then the distance
    small = np.stack([np.asarray(Image.fromarray(im[0].numpy(), mode="L").resize(
        (7, 7), Image.BILINEAR)) for im in _SPLITS["test"]])[:, None]
    want = _frechet(_features(torch.from_numpy(small).float() / 255),
                    _features(_SPLITS["train"].float() / 255))
    native = board_floor.resolution_floor(ready, floor_source(DataSource("synthetic"), 12))
    assert want > 10 * native  # the test can tell the two sizes apart
    # scipy's sqrtm vs snngen's eigenvalue route, float32 features: 1e-6 relative
    assert got == pytest.approx(want, rel=1e-6)


def test_a_floor_is_measured_once_per_size_and_options(ready, tmp_path, monkeypatch):
    src = floor_source(DataSource("synthetic", None, 32, (("fit", "resize"),)), 7)
    assert floor_key(src) == "synthetic_7px_fit-resize"
    first = cached_floor(tmp_path, src, ready=ready)
    assert first["output_px"] == 7 and (tmp_path / "synthetic_7px_fit-resize.json").is_file()
    monkeypatch.setattr(board_floor, "resolution_floor", lambda *a, **k: pytest.fail("re-run"))
    assert cached_floor(tmp_path, src, ready=ready) == first  # read back, not measured again
    ready.record["reference"] = {"n": 1}  # another reference: measured again
    with pytest.raises(pytest.fail.Exception, match="re-run"):
        cached_floor(tmp_path, src, ready=ready)


def test_rows_get_their_configs_size_and_the_table_shows_the_floor(tmp_path, monkeypatch):
    assert row_data(entry("sddpm")).image_size == 16
    assert row_data(entry("fsvae")) == DataSource("mnist5k", None, 32, (("fit", "resize"),))
    asked = []

    def fake(folder, source, **_):
        asked.append(source)
        return {"output_px": source.image_size, "resolution_floor_fid": 10.0 * source.image_size}

    monkeypatch.setattr(board_floor, "cached_floor", fake)
    rows = [row("sddpm", 300.0), row("fsvae", 180.0),
            row("sae", 400.0, output_px=32, resolution_floor_fid=2.8)]  # measured with it
    add_floors(rows, tmp_path, {k: entry(k) for k in ("sddpm", "fsvae", "sae")})
    assert [(r["output_px"], r["resolution_floor_fid"]) for r in rows] == [
        (16, 160.0), (32, 320.0), (32, 2.8)]
    assert [s.image_size for s in asked] == [16, 32]
    table = markdown_table(rows)
    assert "| FID ↓ | output px | resolution floor FID |" in table
    assert "| FSVAE | yes | 180.0 | 32 | 320.0 |" in table
    assert "| SDDPM | yes | 300.0 | 16 | 160.0 |" in table
    assert "One common scoring resolution" in table
    json.dumps(rows)  # the filled rows still write as JSON
