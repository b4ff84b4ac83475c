"""The FSVAE-style ANN autoencoder and the autoencoder Frechet distance."""

from __future__ import annotations

import pytest
import torch

from snngen.metrics import AutoencoderNet, ae_frechet_distance, evaluate, fid, load_autoencoder
from snngen.metrics.autoencoder import fit_autoencoder, heldout_mse, train_autoencoder
from snngen.metrics.features import MetricsError, extract_features


@pytest.mark.parametrize("size,levels", [(32, 4), (64, 5)])
def test_autoencoder_layout_follows_fsvae(size, levels):
    net = AutoencoderNet(in_channels=1, image_size=size).eval()
    convs = [m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32 * 2**i for i in range(levels)]
    assert net.latent_dim == 64 and AutoencoderNet(in_channels=3).latent_dim == 128
    x = torch.rand(2, 1, size, size)
    z = net(x)
    assert z.shape == (2, 64)
    out = net.decode(z)
    assert out.shape == (2, 1, size, size) and out.abs().max() <= 1


def test_autoencoder_rejects_sizes_that_do_not_halve_to_two():
    with pytest.raises(MetricsError, match="power of 2"):
        AutoencoderNet(image_size=28)


def test_fit_autoencoder_reduces_the_error(bars):
    x, _ = bars(128, 8)
    untrained = AutoencoderNet(1, 16, 8)
    net = fit_autoencoder(x, latent_dim=16, epochs=4, batch_size=32, lr=5e-3, progress=False)
    assert heldout_mse(net, x) < 0.5 * heldout_mse(untrained, x)


def test_ae_frechet_distance_is_fid_on_latents(bars):
    net = AutoencoderNet(1, 8, 8).eval()
    x, _ = bars(64, 8)
    y, _ = bars(64, 8, seed=3)
    assert ae_frechet_distance(x, x, net).value == pytest.approx(0, abs=1e-8)
    got = ae_frechet_distance(y, x, net)
    ref = fid(extract_features(y, net), extract_features(x, net))
    assert got.name == "ae_fd" and got.value == pytest.approx(ref.value) and got.value > 0
    assert got.features == "autoencoder" and got.n_fake == 64
    # any encoder module works, e.g. a plain flatten of the image
    flat = ae_frechet_distance(y, x, torch.nn.Flatten())
    assert flat.value == pytest.approx(fid(y.flatten(1), x.flatten(1)).value)


def test_train_autoencoder_caches_and_evaluate_uses_it(cache, bars_dataset, bars):
    path, mse = train_autoencoder("bars", image_size=8, epochs=2, progress=False)
    assert path.is_file() and train_autoencoder("bars", image_size=8) == (path, mse)
    net = load_autoencoder("bars", image_size=8)
    assert net.test_mse == mse
    x, _ = bars(32, 8)
    out = evaluate(x, x, metrics=["aefd"], autoencoder=net)
    assert set(out) == {"ae_fd"} and out["ae_fd"].value == pytest.approx(0, abs=1e-6)
