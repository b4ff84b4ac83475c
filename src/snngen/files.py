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
import inspect
import io
import os
import pickletools
import re
import secrets
import shutil
import sys
import warnings
import zipfile
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
    runs (torch's warnings while it reads such a file are not shown). Raises
    :class:`CheckpointError` naming the file if it is missing, unreadable, not a torch
    checkpoint, truncated, unsafe, or does not hold a dict: one whole sentence, torch's own text
    shortened (with an ellipsis) where it is quoted.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(len(_LEGACY_MAGIC))
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {describe_os_error(err)}") from None
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4" before a refusal
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure is the same user error
        raise CheckpointError(f"{path} is not a valid checkpoint ({_why_not(path, head, err)})"
                              ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path} is not a valid checkpoint (holds a {type(obj).__name__}, not a dict)"
        )
    return obj


#: how every file ``torch.save`` writes begins: a zip archive, or (before torch 1.6, and with
#: ``_use_new_zipfile_serialization=False``) a protocol-2 pickle of torch's magic number
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
#: pickle opcodes that import a global or call one: what a checkpoint of data never needs
_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}
_CODE = "it asks to run code or build objects that a checkpoint never holds"


def _why_not(path: Path, head: bytes, err: Exception) -> str:
    """Why ``torch.load`` refused ``path`` (first bytes ``head``), as the end of a sentence."""
    text = str(err)
    found = re.search(r"unsupported GLOBAL (\S+)|Unsupported global: GLOBAL (\S+)", text, re.I)
    if found:
        name = found.group(1) or found.group(2)
        if _exists(name):
            return f"{_CODE}: {name}"
        return f"it is truncated or damaged: it names {name!r}, which does not exist"
    if not head:
        return "the file is empty"
    if len(head) < len(_LEGACY_MAGIC) and _LEGACY_MAGIC.startswith(head):
        return f"it is truncated: {len(head)} bytes of torch's older format"
    if head.startswith(_ZIP_MAGIC) or head.startswith(_LEGACY_MAGIC):
        if head.startswith(_ZIP_MAGIC) and not _zip_complete(path):
            return "it is truncated: a torch zip archive without its closing directory"
        if head.startswith(_ZIP_MAGIC) and not _has_data_pkl(path):
            return ("it is not a torch checkpoint: a zip archive without the data.pkl that "
                    "torch.save writes")
        return f"it is damaged: torch says {_quote(text or type(err).__name__)}"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # a pickle's PROTO opcode
        code = _pickle_global(path)
        if code is not None:
            return f"{_CODE}: {code}"
        return "it is not a torch checkpoint: a Python pickle that torch.save did not write"
    return ("it is not a torch checkpoint: neither the zip archive torch.save writes nor its "
            "older pickle format")


#: lines of torch's weights-only refusal that say nothing about this file
_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _quote(text: str, limit: int = 120) -> str:
    """The line of torch's message ``text`` that says what is wrong, in quotes, cut to
    ``limit`` characters with an ellipsis."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = next((ln for ln in lines if not ln.startswith(_BOILERPLATE)), lines[0] if lines
                else text)
    return repr(line if len(line) <= limit else line[: limit - 1].rstrip() + "…")


def _exists(name: str) -> bool:
    """Whether the global ``module.attr`` a pickle names exists in a module already imported
    (never imports one: the name comes from an untrusted file). A truncated file names a cut
    one (``torch._utils._re``); a hostile one names something real (``posix.system``)."""
    if not all(name.split(".")):
        return False
    module, attr = name, ""
    while module and module not in sys.modules:
        module, _, last = module.rpartition(".")
        attr = f"{last}.{attr}" if attr else last
    obj: Any = sys.modules.get(module)
    for part in attr.split(".") if attr else ():  # no module __getattr__ hook is run
        obj = inspect.getattr_static(obj, part, None)
    return bool(module) and obj is not None


def _zip_complete(path: Path) -> bool:
    """Whether ``path`` ends with a zip archive's end-of-central-directory record (a copy
    that was cut short does not)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - 65_557))  # the record (22 bytes) plus the longest zip comment
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    # whole: its 22 bytes and the comment whose length it records end exactly at the file's end
    return at >= 0 and at + 22 <= len(tail) and (
        at + 22 + int.from_bytes(tail[at + 20:at + 22], "little") == len(tail))


def _has_data_pkl(path: Path) -> bool:
    """Whether the zip archive ``path`` holds a ``<name>/data.pkl`` (as every checkpoint
    ``torch.save`` writes does); only its directory is read. True when zipfile cannot read it
    (then torch's own words say what is damaged)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return True


def _pickle_global(path: Path) -> str | None:
    """The first global a pickle file imports or calls (``module.name``, or the opcode's name
    when the name is built on the stack), None if it has none or is not a whole pickle.
    The opcodes are only listed (:func:`pickletools.genops`), nothing is executed."""
    strings: list[str] = []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if isinstance(arg, str):
                    strings = [*strings[-1:], arg]
                if op.name == "GLOBAL":
                    return str(arg).replace(" ", ".")
                if op.name == "STACK_GLOBAL":
                    return ".".join(strings) if len(strings) == 2 else op.name
                if op.name in _CODE_OPCODES:
                    return op.name
    except Exception:  # noqa: BLE001 - not a whole pickle: random bytes that began like one
        return None
    return None


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
