"""Where a run's numbers came from: snngen's version, the git commit (and whether the tree was
dirty) when snngen runs from a checkout, torch's version, the device and the command or call.

:func:`collect` returns a small JSON-ready dict; ``config.yaml``'s header and ``metrics.json``
record it and ``snngen info RUN`` shows it. Nothing here fails: a value that cannot be found
(no git, not a checkout, no /proc/cpuinfo) is ``None``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

#: the command or API call being run (set by the CLI and the API; None: unknown)
_INVOCATION: list[str] = []

KEYS = ("snngen", "git_commit", "git_dirty", "torch", "python", "device", "command")


@contextlib.contextmanager
def invocation(text: str) -> Iterator[None]:
    """Record ``text`` (``"snngen train cfg.yaml"``, ``"snngen.train('cfg.yaml')"``) as the
    command of everything collected inside; the outermost one wins (the CLI over the API it
    calls)."""
    _INVOCATION.append(text)
    try:
        yield
    finally:
        _INVOCATION.pop()


def command_line(argv: list[str]) -> str:
    """``argv`` as one shell-quoted line."""
    return shlex.join(str(a) for a in argv)


def _command() -> str:
    if _INVOCATION:
        return _INVOCATION[0]
    argv = list(sys.argv) or ["python"]
    return "python " + command_line([Path(argv[0]).name, *argv[1:]])


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("snngen")
    except Exception:  # noqa: BLE001 - not installed: read the package's own
        text = (Path(__file__).parent / "__init__.py").read_text()
        return next((ln.split('"')[1] for ln in text.splitlines()
                     if ln.startswith("__version__")), "unknown")


def _git(*args: str) -> str | None:
    """``git -C <snngen's folder> args`` output, or None (git missing, not a checkout)."""
    try:
        done = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), *args],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


@lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the checkout snngen runs from, ``(None, None)`` outside one."""
    head = _git("rev-parse", "HEAD")
    if not head:
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return head.strip(), None if status is None else bool(status.strip())


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else :func:`platform.processor`)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: Any = None) -> str:
    """``"cpu: <CPU model>"`` or ``"cuda:0: <GPU name>"`` for a torch device (None: the CPU)."""
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index}: {torch.cuda.get_device_name(index)}"
    if dev.type == "cpu":
        return f"cpu: {cpu_name()}"
    return str(dev)


def collect(device: Any = None) -> dict[str, Any]:
    """The provenance of work done now on ``device`` (a torch device or name; None: CPU):
    ``{"snngen", "git_commit", "git_dirty", "torch", "python", "device", "command"}``."""
    import torch

    commit, dirty = git_state()
    return {
        "snngen": _version(),
        "git_commit": commit,
        "git_dirty": dirty,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device_name(device),
        "command": _command(),
    }


def header(record: dict[str, Any]) -> str:
    """``record`` as YAML comment lines (``# snngen: 0.1.0``), for a config file's top."""
    lines = ["# written by snngen; provenance of this run:"]
    for key in KEYS:
        if key in record:
            value = record[key]
            text = "null" if value is None else str(value).replace(os.linesep, " ")
            lines.append(f"#   {key}: {text}")
    return "\n".join(lines) + "\n"


def read_header(text: str) -> dict[str, str]:
    """The provenance of a config file written with :func:`header` (``{}`` if it has none)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        key, sep, value = line[1:].strip().partition(": ")
        if sep and key in KEYS:
            out[key] = value
    return out


def describe(record: dict[str, Any]) -> str:
    """A few lines for people: version, commit, torch, device, command."""
    commit = record.get("git_commit")
    if commit:
        commit = str(commit)[:12] + (" (dirty tree)" if str(record.get("git_dirty")) in
                                     ("True", "true") else "")
    commit = commit or "unknown (not a checkout)"
    return "\n".join([
        f"made by: snngen {record.get('snngen', '?')}, commit {commit}, "
        f"torch {record.get('torch', '?')}",
        f"device:  {record.get('device', '?')}",
        f"command: {record.get('command', '?')}",
    ])
