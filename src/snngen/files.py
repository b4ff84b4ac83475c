"""Files a user can hand in are data, never code; files snngen writes survive a crash.

* :func:`load_checkpoint` reads a checkpoint with ``torch.load(weights_only=True)``: a pickle
  that would import or call anything outside tensors and plain containers is refused with a
  :class:`CheckpointError` ("... is not a valid checkpoint"), nothing of it is executed.
* :func:`atomic_output` (and :func:`write_bytes`, :func:`write_text`, :func:`save_torch`)
  writes to a temporary file in the destination's folder, ``fsync``\\ s it, then renames it over
  the destination. A failed write removes the temporary file and leaves the previous file
  byte-identical; an ``OSError`` (no space left, read-only file system, permission denied)
  becomes a one-line :class:`FileWriteError` naming the file.
* :func:`check_writable_folder` checks, before a command writes anything, that a folder (or its
  nearest existing parent) is writable and has a given number of bytes free.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from snngen.errors import SnngenError

__all__ = [
    "CheckpointError",
    "FileWriteError",
    "atomic_output",
    "check_writable_folder",
    "describe_os_error",
    "is_state_dict",
    "load_checkpoint",
    "save_torch",
    "write_bytes",
    "write_text",
]

#: prefix of the temporary files :func:`atomic_output` creates (hidden, next to the target)
TMP_PREFIX = ".snngen-tmp-"


class CheckpointError(SnngenError):
    """A file handed in as a checkpoint is unreadable, not a checkpoint, or unsafe to load."""


class FileWriteError(SnngenError, OSError):
    """A file could not be written (no space, read-only file system, no permission, ...)."""


_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "folder does not exist",
    errno.ENOTDIR: "a parent is not a folder",
    errno.EISDIR: "it is a folder",
    errno.ENAMETOOLONG: "file name too long",
}


def describe_os_error(err: OSError) -> str:
    """Return a short reason for an ``OSError`` ("no space left on the device", ...)."""
    if err.errno in _REASONS:
        return _REASONS[err.errno]
    return err.strerror or str(err) or type(err).__name__


# ----------------------------------------------------------------------------- loading


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Return the dict stored in a checkpoint file, loaded as data only.

    ``torch.load(..., weights_only=True)``: tensors, numbers, strings and plain containers; a
    pickle that asks for any other global (``os.system``, a class) is refused before anything
    runs. Raises :class:`CheckpointError` naming the file if it is missing, unreadable,
    truncated, unsafe, or does not hold a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure is the same user error
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            reason = "it asks to run code or build objects that a checkpoint never holds"
        raise CheckpointError(f"{path} is not a valid checkpoint ({reason[:200]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path} is not a valid checkpoint (holds a {type(obj).__name__}, not a dict)"
        )
    return obj


def is_state_dict(obj: Any) -> bool:
    """Whether ``obj`` is a state dict: a mapping of string keys to tensors."""
    from collections.abc import Mapping

    return isinstance(obj, Mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


# ----------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path`` (creating its folder); on success fsync it and
    rename it onto ``path``.

    On any exception the temporary file is removed, ``path`` is left as it was, and an
    ``OSError`` is re-raised as :class:`FileWriteError` ("cannot write FILE: reason").
    """
    path = Path(path)
    fd, tmp_name = _make_temp(path)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError) and not isinstance(err, FileWriteError):
            raise FileWriteError(f"cannot write {path}: {describe_os_error(err)}") from None
        raise
    _fsync_folder(path.parent)


def _make_temp(path: Path) -> tuple[int, str]:
    """Create and open a new temporary file next to ``path``; return ``(fd, name)``.

    Created with mode 0666 and ``O_EXCL``, so the process umask (and a default ACL of the
    folder) gives it the permissions any new file there gets: 0644 under umask 022, 0664 under
    002 (``tempfile.mkstemp`` would make every file snngen writes 0600, unreadable to
    collaborators whatever the umask)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            name = path.parent / f"{TMP_PREFIX}{path.name}.{secrets.token_hex(4)}"
            try:
                return os.open(name, _TMP_FLAGS, 0o666), str(name)
            except FileExistsError:
                continue
        raise FileExistsError(errno.EEXIST, f"no free temporary name next to {path}")
    except OSError as err:
        raise FileWriteError(f"cannot write {path}: {describe_os_error(err)}") from None


#: how :func:`_make_temp` opens a temporary file: new only, never through a symlink
_TMP_FLAGS = (os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
              | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (best effort: some file systems refuse to fsync folders)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_output(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically; returns the path."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getbuffer())


# ----------------------------------------------------------------------------- checks


def nearest_existing(path: str | Path) -> Path:
    """Return ``path`` or its nearest existing parent folder."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable_folder(folder: str | Path, need_bytes: int = 0, what: str = "output") -> None:
    """Raise :class:`FileWriteError` unless ``folder`` can be created/written with
    ``need_bytes`` free. Touches nothing: checks the nearest existing parent."""
    folder = Path(folder)
    base = nearest_existing(folder)
    if not base.is_dir():
        raise FileWriteError(f"{what} folder {folder}: {base} is a file, not a folder")
    if _read_only(base):
        raise FileWriteError(f"{what} folder {folder}: {base} is on a read-only file system")
    if not os.access(base, os.W_OK | os.X_OK):
        raise FileWriteError(f"{what} folder {folder}: no permission to write in {base}")
    if need_bytes > 0:
        free = shutil.disk_usage(base).free
        if free < need_bytes:
            raise FileWriteError(
                f"{what} folder {folder}: {free / 1e6:.1f} MB free, needs about "
                f"{need_bytes / 1e6:.1f} MB"
            )


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # pragma: no cover - no statvfs on this platform
        return False


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 (first 16 hex digits) of the model's state dict: names, dtypes, shapes, bytes."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        if tensor.device.type != "meta":
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:16]
