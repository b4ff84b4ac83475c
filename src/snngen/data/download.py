"""Downloads of a dataset's published files: resumable, checked, unpacked safely, placed whole.

:func:`download_dataset` (``snngen datasets download NAME``, ``data.download: true``):

1. takes a file lock ``<root>/.snngen/NAME.lock`` (``fcntl.flock``): processes asking for the
   same dataset at once (DDP ranks on one node) wait, and find it complete when they get it;
2. checks what is already placed (:func:`snngen.data.resources.check_placed`): nothing is
   fetched for a complete set, and a placed file that is *wrong* is never overwritten;
3. fetches each missing published file into ``<root>/.snngen/downloads/NAME/FILE.part`` over
   HTTP with ``Range`` requests (a cut, a Ctrl-C or a full disk leaves the ``.part``; the next
   run resumes it; a server that ignores ``Range`` answers 200 and the file restarts cleanly),
   trying the URLs in order (``--mirror`` / ``SNNGEN_DATA_MIRROR`` replace them), with one
   progress bar per file (size, rate). A copy placed by hand in ``<root>/<folder>/`` or
   ``<root>/`` is used instead of a download;
4. checks each file's published size and md5/sha256 *before* unpacking: a wrong copy is deleted
   and the next URL tried;
5. unpacks into a temporary folder inside ``<root>/.snngen`` (tar and zip members may only be
   files and folders with relative paths inside it), moves the result into place, checks the
   whole dataset again, and removes what it placed if that fails.

HTTP goes through the standard library's ``urllib``: no new dependency, and resuming is one
``Range`` header and the ``206 Partial Content`` answer, which ``urllib`` passes through.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import IO

from snngen.console import progress_bar
from snngen.data.base import DataError, resolve_root
from snngen.data.resources import (
    NO_DOWNLOAD,
    SOURCES,
    STATE_DIR,
    Digests,
    Remote,
    Source,
    check_placed,
    file_digest,
    file_problem,
    format_size,
    source_of,
)
from snngen.errors import SnngenError
from snngen.files import FileWriteError, check_writable_folder, describe_os_error

#: environment variable: base URL(s) (space-separated) serving the published file names;
#: ``{name}`` in one is replaced by the dataset's name
MIRROR_ENV = "SNNGEN_DATA_MIRROR"
CHUNK = 1 << 16
TIMEOUT_S = 60.0
#: tries per URL while each try makes progress (a cut connection resumes)
ATTEMPTS = 3
RETRY_DELAY_S = 1.0
USER_AGENT = "snngen-datasets (Python urllib)"
MIRROR_SCHEMES = ("http", "https", "file")

try:  # POSIX; elsewhere concurrent downloads of one dataset are not serialised
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class _Cut(Exception):
    """The connection ended before the whole file arrived."""


def _say(message: str) -> None:
    print(f"snngen: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- entry points


def get_source(name: str) -> Source:
    """The :class:`Source` of a downloadable dataset; :class:`DataError` (one line: why not, and
    how to get the files) for any other name."""
    if not isinstance(name, str):
        raise DataError(f"dataset name {name!r} must be a string")
    base = name.removesuffix("_saccade")
    if base in NO_DOWNLOAD:
        raise DataError(f"dataset '{name}' {NO_DOWNLOAD[base]}: nothing to download")
    source = source_of(name)
    if source is None:
        raise DataError(f"unknown dataset {name!r}; datasets with published files: "
                        f"{', '.join(SOURCES)}")
    if not source.remotes:
        raise DataError(f"dataset '{name}': {source.manual}")
    return source


def env_mirrors() -> list[str]:
    """The base URLs in ``$SNNGEN_DATA_MIRROR`` (space-separated), in order."""
    return os.environ.get(MIRROR_ENV, "").split()


def check_mirrors(mirrors: Sequence[str], name: str) -> list[str]:
    """``mirrors`` with ``{name}`` filled in, each checked to be an http(s):// or file:// URL."""
    out = []
    for m in mirrors:
        url = m.replace("{name}", name)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in MIRROR_SCHEMES or (parts.scheme != "file" and not parts.netloc):
            raise DataError(f"mirror {m!r} is not an http://, https:// or file:// base URL "
                            "(the published file names are fetched under it)")
        out.append(url.rstrip("/") + "/")
    return out


def download_hint(name: str, root) -> str:
    """What a "files not found" message adds: the download command, or how to get the files."""
    source = source_of(name)
    if source is None:
        return ""
    where = str(resolve_root(root))
    if not source.remotes:
        return source.manual.replace("<root>", where)
    return (f"or run 'snngen datasets download {name} --root {where}' (or set data.download: "
            "true in the config)")


def download_dataset(name: str, root=None, mirrors: Sequence[str] | None = None, *,
                     progress: bool | None = None) -> str:
    """Fetch, check and place dataset ``name`` under ``root`` (see the module docstring).

    Args:
        name: a dataset with published files (``snngen datasets`` lists them).
        root: the data root (default ``$SNNGEN_DATA``, else ``./data``).
        mirrors: base URLs serving the published file names, tried in order instead of the
            table's URLs (default ``$SNNGEN_DATA_MIRROR``; none: the table's).
        progress: show a progress bar per file (default: when stderr is a terminal, so a log
            file gets no bar, and an error stays one line).

    Returns:
        One line saying what was done. Raises :class:`DataError` / ``FileWriteError`` (one line)
        for a file that cannot be fetched, a wrong checksum, a wrong file in the way, a full
        disk. A request that cannot succeed (a wrong file in the way, no URL for a file not
        placed by hand) is refused before anything is written.
    """
    base = resolve_root(root)
    progress = sys.stderr.isatty() if progress is None else progress
    try:
        source = get_source(name)
    except DataError as err:
        raise DataError(str(err).replace("<root>", str(base))) from None
    bases = check_mirrors(env_mirrors() if mirrors is None else mirrors, source.name)
    check_writable_folder(base, 0, what="data root")
    digests = Digests(base)  # cached by size + mtime: files changed meanwhile are hashed again
    if _plan(source, base, bases, digests) is None:  # read-only: refuse before writing
        return f"{source.name}: already complete in '{base}' (as published)"
    with data_lock(base, source.name):
        plan = _plan(source, base, bases, digests)  # again: another process may have finished
        if plan is None:
            digests.save()
            return f"{source.name}: already complete in '{base}' (as published)"
        return _download(source, base, plan, digests, progress)


@contextlib.contextmanager
def data_lock(base: Path, name: str) -> Iterator[None]:
    """Hold ``<root>/.snngen/<name>.lock`` exclusively (waiting, with a message, if another
    process holds it)."""
    path = base / STATE_DIR / f"{name}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise FileWriteError(f"cannot create the lock '{path}': {describe_os_error(err)}") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _say(f"waiting for another process downloading {name} (lock '{path}')")
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# ----------------------------------------------------------------------------- the steps


@dataclass
class _Plan:
    """What a download has to do: the published files missing (``needed``), a copy of each
    already at hand (or None), the URLs to try for each."""

    needed: list[Remote]
    local: dict[str, Path | None]
    urls: dict[str, list[str]]
    staging: Path


def _plan(source: Source, base: Path, bases: list[str], digests: Digests) -> _Plan | None:
    """None when the dataset is complete; else the plan. Raises (writing nothing) for a wrong
    file in the way or a missing file with no URL and no copy placed by hand."""
    problems = check_placed(source.name, base, digests)
    if not problems:
        return None
    wrong = next((p for p in problems if not p.missing), None)
    if wrong is not None:
        raise DataError(f"dataset '{source.name}': {wrong.text}; move or delete it, then run "
                        "the download again")
    wanted = {p.remote for p in problems}
    needed = [r for r in source.remotes if r.file in wanted]
    staging = base / STATE_DIR / "downloads" / source.name
    local = {r.file: _copy_at_hand(r, base, staging) for r in needed}
    urls = {r.file: [b + urllib.parse.quote(r.file) for b in bases] or list(r.urls)
            for r in needed}
    if any(local[r.file] is None and not urls[r.file] for r in needed):
        raise DataError(f"dataset '{source.name}': " + source.manual.replace("<root>", str(base)))
    return _Plan(needed, local, urls, staging)


def _download(source: Source, base: Path, plan: _Plan, digests: Digests, progress: bool) -> str:
    """Fetch what ``plan`` lacks, check it, install it; remove snngen's own copies after."""
    # free space: each file to fetch, plus about its size again for an archive's content
    need = sum((r.size or 0) * ((plan.local[r.file] is None) + (r.unpack != ""))
               for r in plan.needed)
    check_writable_folder(base, need, what="data root")
    files: dict[str, Path] = {}
    try:
        for r in plan.needed:
            files[r.file] = _usable_copy(r, plan.local[r.file], digests, plan.staging) or \
                _fetch(source.name, r, plan.urls[r.file], plan.staging, progress)
        total = sum(_size(path) for path in files.values())
        _install(source, plan.needed, files, base, digests)
        for path in files.values():
            if path.parent == plan.staging:  # snngen's own download; one placed by hand stays
                with contextlib.suppress(OSError):
                    path.unlink()
    finally:
        with contextlib.suppress(OSError):
            plan.staging.rmdir()  # only if empty: a .part or a checked file stays for next time
    return (f"{source.name}: {len(files)} published file(s) ({format_size(total)}) checked and "
            f"placed in '{base}'; the dataset is complete")


def _copy_at_hand(r: Remote, base: Path, staging: Path) -> Path | None:
    """A complete copy of ``r`` already here: from an earlier run, or placed by hand."""
    for path in (staging / r.file, base / r.into / r.file, base / r.file):
        if path.is_file():
            return path
    return None


def _usable_copy(r: Remote, path: Path | None, digests: Digests, staging: Path) -> Path | None:
    """``path`` if it is the published file; a bad earlier download is deleted (None), a bad
    copy placed by hand refused."""
    if path is None:
        return None
    problem = file_problem(path, r, digests)
    if problem is None:
        return path
    if path.parent == staging:
        path.unlink()
        return None
    raise DataError(f"{problem.text}; delete it or replace it with the published file")


# ----------------------------------------------------------------------------- HTTP


def _fetch(name: str, r: Remote, urls: list[str], staging: Path, progress: bool) -> Path:
    """Download ``r`` from the first of ``urls`` that gives the published file; returns it."""
    part, final = staging / f"{r.file}.part", staging / r.file
    if not urls:
        raise DataError(f"dataset '{name}': no URL for {r.file}; place the published file in "
                        f"'{staging.parents[2] / r.into}' or give --mirror URL")
    try:
        staging.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FileWriteError(f"cannot write '{staging}': {describe_os_error(err)}") from None
    failures = []
    for url in urls:
        attempt = 0
        while attempt < ATTEMPTS:
            attempt += 1
            before = _size(part)
            try:
                _get(url, part, r, progress)
            except urllib.error.HTTPError as err:
                failures.append(f"{url}: HTTP {err.code} {err.reason}")
                with contextlib.suppress(Exception):
                    err.close()
                break
            except FileWriteError:
                raise  # the disk, not the network: the .part stays for the next run
            except (OSError, HTTPException, _Cut) as err:  # URLError, timeouts, resets, TLS
                failures.append(f"{url}: {_reason(err)}")
                if _size(part) <= before:
                    break  # no progress: the next URL
                time.sleep(RETRY_DELAY_S)
                continue  # progress: resume from here
            problem = file_problem(part, r, _Uncached(part.parent))
            if problem is None:
                os.replace(part, final)
                return final
            part.unlink()
            failures.append(f"{url}: {problem.text.replace(str(part), r.file)}; deleted")
            if before == 0:
                break  # a whole download was wrong: this URL serves another file
    kept = (f"; the partial download '{part}' ({_size(part):,} bytes) is kept: run the same "
            "command to resume" if _size(part) else "; nothing was kept")
    raise DataError(f"dataset '{name}': could not download {r.file}: {' | '.join(failures)}"
                    f"{kept}")


def _get(url: str, part: Path, r: Remote, progress: bool) -> None:
    """One request for ``url`` into ``part``: resumed with ``Range`` when ``part`` has bytes.

    A ``206`` answer starting at the ``.part``'s size is appended; any other success (a server
    or ``file://`` that ignores ``Range``) restarts the file. ``416`` (asked past the end) means
    the ``.part`` is whole; its checksum decides. Raises :class:`_Cut` for a short body.
    """
    have = _size(part)
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            return
        raise
    with response:
        status = getattr(response, "status", None)
        if have and (status != 206 or _range_start(response.headers) != have):
            have = 0  # the server sent the whole file (or another range): start again
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else r.size
        bar = progress_bar(desc=f"download {r.file}", total=total, unit="B", initial=have,
                           enabled=progress, unit_scale=True)
        read = getattr(response, "read1", response.read)  # what has arrived, up to CHUNK
        with bar, _writing(part, "ab" if have else "wb") as f:
            while chunk := read(CHUNK):
                write_chunk(f, chunk, part)
                bar.update(len(chunk))
    got = _size(part)
    if total is not None and got < total:
        raise _Cut(f"the connection closed after {got:,} of {total:,} bytes")


def _range_start(headers) -> int | None:
    """The first byte of a ``Content-Range: bytes START-END/TOTAL`` header, or None."""
    value = headers.get("Content-Range", "")
    unit, _, rest = value.partition(" ")
    start = rest.partition("-")[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.URLError) and not isinstance(err.reason, str):
        err = err.reason  # type: ignore[assignment]
    text = str(err) or type(err).__name__
    return " ".join(text.split())


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class _Uncached(Digests):
    """Digests of a ``.part`` file: computed every time, never cached."""

    def __init__(self, root: Path) -> None:  # noqa: D107 - no cache to load
        self.root, self.entries, self.changed = root, {}, False

    def of(self, path: Path, algorithm: str) -> str:
        return file_digest(path, algorithm)


# ----------------------------------------------------------------------------- writing


def write_chunk(handle: IO[bytes], chunk: bytes, path: Path) -> None:
    """Write ``chunk`` to ``handle`` (the file ``path``); an ``OSError`` (full disk, ...)
    becomes a one-line ``FileWriteError``."""
    try:
        handle.write(chunk)
    except OSError as err:
        raise _write_error(path, err) from None


def _write_error(path: Path, err: OSError) -> FileWriteError:
    hint = ("; free some space and run the same command again" if path.suffix == ".part"
            else "; free some space and run the same command again (nothing was placed)")
    if path.suffix == ".part":
        hint += f": the download resumes from the {_size(path):,} bytes kept"
    return FileWriteError(f"cannot write '{path}': {describe_os_error(err)}{hint}")


@contextlib.contextmanager
def _writing(path: Path, mode: str) -> Iterator[IO[bytes]]:
    """Open ``path`` for writing; every ``OSError`` (open, close) becomes a ``FileWriteError``,
    and a failure inside closes the file without hiding the first error."""
    try:
        handle = open(path, mode)  # noqa: SIM115 - closed below on every path
    except OSError as err:
        raise _write_error(path, err) from None
    try:
        yield handle
    except BaseException:
        with contextlib.suppress(OSError):
            handle.close()
        raise
    try:
        handle.close()
    except OSError as err:
        raise _write_error(path, err) from None


# ----------------------------------------------------------------------------- unpacking


def _install(source: Source, needed: list[Remote], files: dict[str, Path], base: Path,
             digests: Digests) -> None:
    """Unpack ``files`` into a temporary folder, move the result into ``base``, check the whole
    dataset; on any failure remove what was moved (the data root is as before)."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"unpack-{source.name}-", dir=base / STATE_DIR))
    except OSError as err:
        raise FileWriteError(f"cannot write in '{base / STATE_DIR}': "
                             f"{describe_os_error(err)}") from None
    moved: list[Path] = []
    try:
        for r in needed:
            unpack(files[r.file], r.unpack, tmp / r.into)
        merge_into(tmp, base, moved)
        problems = check_placed(source.name, base, digests)
        if problems:
            raise DataError(f"dataset '{source.name}': after unpacking, {problems[0].text}; "
                            "nothing was placed")
        digests.save()
    except BaseException:
        for path in reversed(moved):
            _remove(path)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def merge_into(src: Path, dst: Path, moved: list[Path]) -> None:
    """Move the entries of folder ``src`` into folder ``dst``: an entry ``dst`` lacks is moved
    whole (one rename); a folder both have is merged; a file ``dst`` has is kept. Appends each
    path moved to ``moved`` as it goes (to undo the merge, also after a failure half-way)."""
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if not os.path.lexists(target):
            try:
                os.rename(entry, target)
            except OSError as err:
                raise FileWriteError(f"cannot move '{entry}' to '{target}': "
                                     f"{describe_os_error(err)}") from None
            moved.append(target)
        elif entry.is_dir() and target.is_dir():
            merge_into(entry, target, moved)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def unpack(archive: Path, kind: str, dest: Path) -> None:
    """Unpack ``archive`` (``kind`` ``"tar"``, ``"zip"``, or ``""``: the file itself) into
    folder ``dest``. Only regular files and folders with relative paths that stay inside
    ``dest`` are written; any other member (absolute path, ``..``, link, device) refuses the
    whole archive with a :class:`DataError` naming it."""
    _mkdir(dest)
    if kind == "":
        target = dest / archive.name
        try:
            os.link(archive, target)
        except OSError:
            with open(archive, "rb") as src:
                _copy_stream(src, target)
        return
    try:
        if kind == "tar":
            _untar(archive, dest)
        elif kind == "zip":
            _unzip(archive, dest)
        else:
            raise ValueError(f"unknown archive kind {kind!r}")
    except SnngenError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError, RuntimeError,
            NotImplementedError) as err:
        raise DataError(f"cannot unpack '{archive}': {_reason(err)} (corrupt archive)") from None


def member_path(dest: Path, name: str, archive: Path) -> Path | None:
    """The path inside ``dest`` of archive member ``name`` (None for the archive's root);
    :class:`DataError` for an absolute path or one that climbs out with ``..``."""
    text = name.replace("\\", "/")
    if "\x00" in text or text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise DataError(f"archive '{archive}': member '{name}' has an absolute path; refused "
                        "(nothing was placed)")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"archive '{archive}': member '{name}' points outside its folder; "
                        "refused (nothing was placed)")
    return dest.joinpath(*parts) if parts else None


def _refuse_member(archive: Path, name: str, what: str) -> DataError:
    return DataError(f"archive '{archive}': member '{name}' is {what}; snngen unpacks only files "
                     "and folders (refused, nothing was placed)")


def _untar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            target = member_path(dest, member.name, archive)
            if member.isdir():
                if target is not None:
                    _mkdir(target)
            elif member.isfile() and target is not None:
                _mkdir(target.parent)
                src = tar.extractfile(member)
                if src is None:
                    raise tarfile.TarError(f"member {member.name} has no data")
                with src:
                    _copy_stream(src, target)
            else:
                kind = ("a symbolic link" if member.issym() else "a hard link" if member.islnk()
                        else "a device or pipe")
                raise _refuse_member(archive, member.name, kind)


def _unzip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = member_path(dest, info.filename, archive)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise _refuse_member(archive, info.filename, "a symbolic link")
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise _refuse_member(archive, info.filename, "a device or pipe")
            if target is None:
                continue
            if info.is_dir():
                _mkdir(target)
                continue
            _mkdir(target.parent)
            with zf.open(info) as src:
                _copy_stream(src, target)


def _copy_stream(src: IO[bytes], target: Path) -> None:
    with _writing(target, "wb") as f:
        while chunk := src.read(CHUNK):
            write_chunk(f, chunk, target)


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _write_error(path, err) from None


# ----------------------------------------------------------------------------- listing


def describe_downloads() -> str:
    """The table ``snngen datasets`` prints under the datasets: which sets snngen can fetch,
    their published size and files."""
    rows = [("name", "download", "size", "published files")]
    for s in SOURCES.values():
        files = ", ".join(r.file for r in s.remotes) if len(s.remotes) <= 4 else \
            f"{len(s.remotes)} files: {s.remotes[0].file}, ..., {s.remotes[-1].file}"
        size = (s.size_note or format_size(s.size())) if s.remotes else "-"
        rows.append((s.name, s.availability(), size, files or "(see 'snngen datasets download "
                                                             f"{s.name}')"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join([
        "downloads: snngen datasets download NAME [--root DIR] [--mirror URL]; "
        "snngen datasets verify NAME [--root DIR]", *lines,
        "yes: fetched from the published URLs (or --mirror / $SNNGEN_DATA_MIRROR), checked "
        "against the published md5 before unpacking; by hand: no stable direct link, the "
        "command says where to get the files and checks and unpacks them; no: the command says "
        "how to get them.",
    ])
