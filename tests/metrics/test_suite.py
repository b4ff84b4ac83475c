"""``evaluate`` and feature extraction: shared features, result records, errors."""

from __future__ import annotations

import pytest
import torch

from snngen.metrics import (
    METRICS,
    ClassifierNet,
    FeatureNet,
    Features,
    MetricsError,
    evaluate,
    extract_features,
    feature_network,
    fid,
    inception_score,
    kid,
    precision_recall,
)


@pytest.fixture
def net():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return ClassifierNet(1, 10, 8, width=4, name="tiny-clf").eval()


def images(n, seed):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_evaluate_equals_the_single_metrics_on_shared_features(net):
    fake, real = images(120, 0), images(100, 1)
    # the call snngen.evaluation.evaluate_model makes
    out = evaluate(fake, real, metrics=["fid", "kid", "is", "pr"], features=net, batch_size=32,
                   kid_subsets=10)
    assert list(out) == ["fid", "kid", "is", "precision", "recall"]
    ff, fr = extract_features(fake, net), extract_features(real, net)
    assert out["fid"].value == pytest.approx(fid(ff, fr).value)
    assert out["kid"].value == pytest.approx(kid(ff, fr, subsets=10).value)
    assert out["is"].value == pytest.approx(inception_score(ff).value)
    assert out["recall"].value == precision_recall(ff, fr)["recall"].value
    for key, result in out.items():
        assert result.features == "tiny-clf" and result.n_fake == 120
        assert result.n_real == (None if key == "is" else 100)
        assert result.to_dict()["name"] == key
    assert {k for keys in METRICS.values() for k in keys} >= set(out)


def test_evaluate_accepts_batches_and_precomputed_features(net):
    fake, real = images(64, 2), images(64, 3)
    batches = [(real[i : i + 10], torch.zeros(10)) for i in range(0, 64, 10)]
    a = evaluate(fake, batches, metrics=["fid"], features=net)
    b = evaluate(extract_features(fake, net), real, metrics=["fid"], features=net)
    assert a["fid"].value == pytest.approx(b["fid"].value, rel=1e-6)


def test_evaluate_errors(net):
    with pytest.raises(MetricsError, match="unknown metrics \\['lpips'\\]"):
        evaluate(images(4, 0), images(4, 1), metrics=["lpips"], features=net)
    with pytest.raises(MetricsError, match="pass real"):
        evaluate(images(4, 0), metrics=["fid"], features=net)
    # IS needs no real set
    assert evaluate(images(20, 0), metrics=["is"], features=net)["is"].n_real is None


def test_feature_network_names_and_errors(net):
    assert feature_network(net) is net
    wrapped = feature_network(torch.nn.Flatten())
    assert isinstance(wrapped, FeatureNet) and wrapped.name == "Flatten"
    assert wrapped(torch.ones(2, 1, 3, 3)).shape == (2, 9)
    with pytest.raises(MetricsError, match="needs a dataset name"):
        feature_network("classifier")
    with pytest.raises(MetricsError, match="unknown feature network 'vgg'"):
        feature_network("vgg")
    with pytest.raises(MetricsError, match="no classification head"):
        evaluate(images(20, 0), metrics=["is"], features=torch.nn.Flatten())


def test_extract_features_is_batch_invariant_and_saves(net, tmp_path):
    x = images(50, 4)
    a, b = extract_features(x, net, batch_size=7), extract_features(x, net, batch_size=50)
    assert torch.allclose(a.features, b.features, atol=1e-5)
    assert a.n == 50 and a.logits.shape == (50, 10)
    assert extract_features(a, net) is a
    back = Features.load(a.save(tmp_path / "f.pt"))
    assert torch.equal(back.features, a.features) and back.name == a.name
    assert net.training is False
    with pytest.raises(MetricsError, match="no images"):
        extract_features([], net)


def test_precomputed_features_must_come_from_the_network_in_use(net):
    other = Features(torch.randn(10, 128), None, "other-net")
    with pytest.raises(MetricsError, match="'other-net'"):
        evaluate(other, images(10, 0), metrics=["fid"], features=net)
