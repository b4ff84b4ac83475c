"""The in-package classifier: learns, caches, reloads identically; tiny data so it runs fast."""

from __future__ import annotations

import pytest
import torch

from snngen.metrics import ClassifierNet, Features, feature_network, load_classifier
from snngen.metrics.classifier import accuracy, classifier_path, fit_classifier, train_classifier
from snngen.metrics.features import MetricsError, extract_features


def test_classifier_shapes_and_input_conversion():
    net = ClassifierNet(in_channels=1, num_classes=4, image_size=8, width=4).eval()
    f, logits = net.features_and_logits(torch.rand(3, 1, 8, 8))
    assert f.shape == (3, 128) and logits.shape == (3, 4) and (f >= 0).all()
    # RGB inputs of another size are converted to the net's grey 8x8
    assert net(torch.rand(2, 3, 16, 16)).shape == (2, 128)
    grey = torch.rand(2, 1, 8, 8)
    assert torch.allclose(net(grey.expand(-1, 3, -1, -1)), net(grey), atol=1e-6)
    with pytest.raises(MetricsError, match="B, C, H, W"):
        net(torch.rand(8, 8))


def test_fit_classifier_learns_and_is_seeded(bars):
    x, y = bars(128, 8)
    xt, yt = bars(64, 8, seed=1)
    net = fit_classifier(x, y, epochs=3, width=4, batch_size=16, progress=False)
    assert accuracy(net, xt, yt) > 0.9
    again = fit_classifier(x, y, epochs=3, width=4, batch_size=16, progress=False)
    assert torch.equal(net(xt), again(xt))
    with pytest.raises(MetricsError, match="at least 2"):
        fit_classifier(x, torch.zeros_like(y), epochs=1, progress=False)


def test_train_classifier_caches_and_reloads(cache, bars_dataset, bars):
    path, acc = train_classifier("bars", image_size=8, epochs=12, progress=False)
    assert path == classifier_path("bars", 8) and path.is_file() and str(cache) in str(path)
    assert acc > 0.9
    assert [c[1] for c in bars_dataset] == ["train", "test"]
    # a second call reads the cache instead of training
    assert train_classifier("bars", image_size=8) == (path, acc)
    assert len(bars_dataset) == 2
    net = load_classifier("bars", image_size=8)
    assert net.test_accuracy == acc and net.name == "classifier:bars"
    xt, yt = bars(64, 8, seed=1)
    assert accuracy(net, xt, yt) == pytest.approx(acc)
    # the feature-network registry gives the same network; features come with logits
    feats = extract_features(xt, feature_network("classifier", dataset="bars", image_size=8))
    assert isinstance(feats, Features) and feats.features.shape == (64, 128)
    assert feats.logits.shape == (64, 4) and feats.name == "classifier:bars"


def test_load_classifier_missing_or_corrupt(cache):
    with pytest.raises(FileNotFoundError, match="snngen classifier nothing"):
        load_classifier("nothing", train_if_missing=False)
    path = classifier_path("broken", 32)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    with pytest.raises(MetricsError, match="broken_32.pt"):
        load_classifier("broken")
