"""``metrics.json``: every evaluation of a run kept, keyed by what was measured and how.

An evaluation never replaces the file: :func:`record_evaluation` merges its result into it
(read, modify, write atomically, under a lock on the folder where the platform has one). The
file (format :data:`FORMAT`) holds

* at the top level, **the newest evaluation's own result**, exactly the dict
  :func:`snngen.evaluate` returns (``model``, ``dataset``, ``protocol``, ``mse``, ``fid``, ...,
  ``seed``, ``weights``, ``measured_at``, ``seconds``), so readers of the older flat file
  (``metrics["fid"]["value"]``, :func:`snngen.console.describe_finish`) keep working and
  :func:`latest` gives it back;
* ``"results"``: every metric ever measured, ``{key: {metric: entry}}``. The key says what was
  measured (:func:`result_key`): the protocol's name, and for sample metrics the sampler
  options (``"snngen"``, ``"snngen/ddim-50"``, ``"sddpm/dpm-solver-20"``); reconstruction
  error (``mse``) does not depend on the sampler and is kept under the protocol's name alone.
  An entry is the metric's own record (value, sample counts, feature network) plus
  ``measured_at`` (UTC, ``2025-01-31T12:00:00Z``) and ``how`` (protocol name and version,
  sample count, seed, sampler options, weights fingerprint, and the ``provenance`` of
  :func:`snngen.provenance.collect`: snngen's version, git commit and dirty flag, torch, device,
  command). Measuring the same metric under
  the same key again replaces that entry (the newest measurement of the same thing); every
  other entry stays.

A file of the older flat layout (a single result, no ``"results"``) is migrated on the next
write: its metrics become entries under their key, with the file's modification time as
``measured_at`` and ``how.migrated`` true.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from snngen.errors import SnngenError
from snngen.files import write_text

#: layout version of ``metrics.json`` (the older flat file has none)
FORMAT = 2
#: top-level keys that are not part of the newest evaluation's result
FILE_KEYS = ("format", "results")


def utc_now() -> str:
    """The time now in UTC, ISO 8601 to the second: ``2025-01-31T12:00:00Z``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sampler_label(options: dict[str, Any] | None) -> str:
    """A file-name-safe label of sampler options: ``""`` for none (the model's configured
    sampler), ``{"solver": "ddim", "steps": 50}`` -> ``"ddim-50"``, ``{"steps": 20}`` ->
    ``"steps-20"``, ``{"temperature": 0.5, "top_k": 10}`` -> ``"temperature-0.5-top_k-10"``.
    The solver comes first, then its steps, then the other options in name order."""
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    parts: list[str] = []
    if "solver" in opts:
        parts.append(str(opts.pop("solver")))
        if "steps" in opts:
            parts.append(_label_value(opts.pop("steps")))
    for key in sorted(opts):
        parts += [key, _label_value(opts[key])]
    return "-".join(parts)


def _label_value(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def result_key(protocol: str, options: dict[str, Any] | None, metric: str = "") -> str:
    """The ``results`` key of ``metric`` measured under ``protocol`` with sampler ``options``:
    ``protocol`` for ``mse`` or default options, else ``protocol/<sampler_label>``."""
    label = "" if metric == "mse" else sampler_label(options)
    return f"{protocol}/{label}" if label else protocol


def latest(document: dict) -> dict:
    """The newest evaluation's result of a ``metrics.json`` document (its top level)."""
    return {k: v for k, v in document.items() if k not in FILE_KEYS}


def metric_entries(result: dict) -> dict[str, dict]:
    """The metrics of one evaluation result: its entries that are dicts with a ``value``."""
    return {k: v for k, v in result.items() if isinstance(v, dict) and "value" in v}


def read_metrics_file(path: str | Path) -> dict | None:
    """The ``metrics.json`` at ``path`` (None when absent). Raises a one-line
    :class:`SnngenError` if it is not a JSON object, so an evaluation is refused before it
    starts rather than after."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        reason = " ".join(str(err).split())[:200]
        raise SnngenError(f"{path}: cannot read the earlier results ({reason}); move the file "
                          "away or write the metrics elsewhere") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results", {}), dict):
        raise SnngenError(f"{path}: not a snngen metrics file (expected a JSON object); move "
                          "it away or write the metrics elsewhere")
    return doc


def _how(result: dict) -> dict:
    protocol = result.get("protocol") if isinstance(result.get("protocol"), dict) else {}
    return {
        "protocol": protocol.get("name", "snngen"),
        "protocol_version": protocol.get("version"),
        "n_samples": protocol.get("n_samples"),
        "seed": result.get("seed"),
        "sample_options": dict(result.get("sample_options") or {}),
        "weights": result.get("weights"),
        "provenance": result.get("provenance"),
    }


def _entries(result: dict, measured_at: str, **extra: Any) -> dict[str, dict[str, dict]]:
    """``{key: {metric: entry}}`` of one evaluation result."""
    how = {**_how(result), **extra}
    out: dict[str, dict[str, dict]] = {}
    for name, record in metric_entries(result).items():
        key = result_key(how["protocol"], how["sample_options"], name)
        out.setdefault(key, {})[name] = {**record, "measured_at": measured_at, "how": how}
    return out


def _kept_results(old: dict | None, path: Path) -> dict[str, dict[str, dict]]:
    """The ``results`` of an earlier file; a flat (older) file migrated into them."""
    if old is None:
        return {}
    if "results" in old:
        return {k: dict(v) for k, v in old["results"].items() if isinstance(v, dict)}
    stamp = _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc)
    return _entries(old, stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), migrated=True)


def record_evaluation(result: dict, path: str | Path) -> dict:
    """Merge one evaluation ``result`` (with its ``measured_at``) into the ``metrics.json`` at
    ``path`` and return the new document (see the module docstring). The read and the atomic
    write happen under an exclusive lock of the folder (POSIX), so two evaluations finishing
    together both keep their results."""
    path = Path(path)
    measured_at = result.get("measured_at") or utc_now()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _folder_lock(path.parent):
        results = _kept_results(read_metrics_file(path), path)
        for key, entries in _entries(result, measured_at).items():
            results[key] = {**results.get(key, {}), **entries}
        document = {"format": FORMAT, **latest(result), "results": results}
        write_text(path, json.dumps(document, indent=2, default=_jsonable))
    return document


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` while inside (nothing where there is no fcntl)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # tensors, numpy arrays and numbers
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)
