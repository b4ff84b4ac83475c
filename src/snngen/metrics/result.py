"""The result record every metric returns."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class MetricResult:
    """One metric value with what it was computed on.

    ``value`` is the metric; ``std`` its spread over subsets or splits where the metric has one
    (KID, IS), else ``None``. ``n_real`` / ``n_fake`` are the number of samples of each set
    (``None`` where a metric does not use that set, e.g. IS has no real set). ``features`` names
    the feature network. ``params`` records the settings that change the value (k, subset size...).
    """

    name: str
    value: float
    std: float | None = None
    n_real: int | None = None
    n_fake: int | None = None
    features: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (non-finite floats become strings such as ``"nan"``)."""
        out = asdict(self)
        for key in ("value", "std"):
            v = out[key]
            if isinstance(v, float) and not math.isfinite(v):
                out[key] = str(v)
        return out

    def __str__(self) -> str:
        spread = f" ± {self.std:.4g}" if self.std is not None else ""
        return (
            f"{self.name} = {self.value:.4g}{spread} "
            f"(n_fake={self.n_fake}, n_real={self.n_real}, features={self.features})"
        )
