"""Dataset downloads against a local HTTP server (127.0.0.1 only): resume, mirrors, checksums,
full disk, Ctrl-C, a lock between processes, safe unpacking, verification.

The server (``http.server`` in a thread) serves tiny stand-ins in the real formats: MNIST's IDX
``.gz`` files, a CIFAR-10 python-pickle tarball, a CelebA-like zip with its partition file and
N-MNIST-like zips, written by ``tests/configs/standins.py`` from each format's definition. The
resource table is pointed at it with ``monkeypatch`` (other processes are forks, which inherit
it). Checksums in the table are computed here
with ``hashlib`` from the served bytes, as a published table is from the published files.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
import signal
import sys
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "configs"))
from standins import write_celeba, write_cifar10, write_idx, write_nmnist  # noqa: E402

from snngen.cli import main  # noqa: E402
from snngen.data import DataError, download, get_dataset, resources  # noqa: E402
from snngen.data.resources import FileSum, Remote, Source  # noqa: E402

IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


# ----------------------------------------------------------------------------- the server


class Server:
    """Files by URL path; honours ``Range: bytes=N-`` (206) unless ``honour_range`` is off.

    ``cut[path] = k``: the next response for ``path`` stops after ``k`` body bytes and closes.
    ``hold[path] = k``: responses for ``path`` stop after ``k`` bytes until ``release`` is set.
    ``log``: one ``[path, range header, status, body bytes sent]`` per request.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.honour_range = True
        self.cut: dict[str, int] = {}
        self.hold: dict[str, int] = {}
        self.holding, self.release = threading.Event(), threading.Event()
        self.log: list[list] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        path, rng = h.path, h.headers.get("Range")
        entry = [path, rng, 404, 0]
        with self.lock:
            self.log.append(entry)
        if path not in self.files:
            h.send_error(404)
            return
        data, start = self.files[path], 0
        if rng and self.honour_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
        body = data[start:]
        entry[2] = 206 if start else 200
        h.send_response(entry[2])
        h.send_header("Content-Length", str(len(body)))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        with self.lock:
            stop = self.cut.pop(path, None)
        limit = len(body) if stop is None else min(stop, len(body))
        held = self.hold.get(path)
        try:
            pos = 0
            while pos < limit:
                if held is not None and pos >= held and not self.release.is_set():
                    self.holding.set()
                    self.release.wait(60)
                n = min(4096, limit - pos, (held - pos) if held and pos < held else limit)
                h.wfile.write(body[pos:pos + n])
                h.wfile.flush()
                pos += n
                entry[3] = pos
        except (BrokenPipeError, ConnectionResetError):
            pass
        h.close_connection = True

    def sent(self, path: str) -> int:
        return sum(e[3] for e in self.log if e[0] == path)

    def requests(self, path: str) -> list[list]:
        return [e for e in self.log if e[0] == path]


@pytest.fixture
def server():
    s = Server()
    yield s
    s.release.set()
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    """No pause between retries; no mirror from the environment."""
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0.0)
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)


# ----------------------------------------------------------------------------- stand-ins


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def idx_files(tmp: Path, n: int = 16, seed: int = 0) -> dict[str, bytes]:
    """The four MNIST ``.gz`` files of a stand-in with ``n`` items per split."""
    write_idx(tmp, "src", n=n, seed=seed)
    return {name: (tmp / "src" / name).read_bytes() for name in IDX_NAMES}


def serve_idx(server: Server, monkeypatch, files: dict[str, bytes], prefix: str = "/mnist/",
              urls: tuple[str, ...] | None = None) -> tuple[Remote, ...]:
    """Serve ``files`` under ``prefix`` and make them the published MNIST files."""
    for name, data in files.items():
        server.files[prefix + name] = data
    remotes = tuple(Remote(n, md5=md5(d), size=len(d), into="mnist",
                           urls=urls or (server.url + prefix + n,)) for n, d in files.items())
    monkeypatch.setitem(resources.SOURCES, "mnist",
                        Source("mnist", remotes, resources._check_idx("mnist", remotes)))
    return remotes


def tree_bytes(folder: Path, kind: str) -> bytes:
    """``folder``'s content (paths relative to its parent) as a tar.gz or zip archive."""
    buf = io.BytesIO()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if kind == "tar":
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(folder, arcname=folder.name)
    else:
        with zipfile.ZipFile(buf, "w") as zf:
            for p in files:
                zf.write(p, p.relative_to(folder.parent).as_posix())
    return buf.getvalue()


def serve_cifar(server: Server, monkeypatch, tmp: Path) -> bytes:
    write_cifar10(tmp)
    archive = tree_bytes(tmp / "cifar-10-batches-py", "tar")
    server.files["/cifar/cifar-10-python.tar.gz"] = archive
    remote = Remote("cifar-10-python.tar.gz", md5=md5(archive), size=len(archive), unpack="tar",
                    urls=(server.url + "/cifar/cifar-10-python.tar.gz",))
    members = tuple(FileSum(p.name, md5=md5(p.read_bytes()))
                    for p in sorted((tmp / "cifar-10-batches-py").iterdir()))
    monkeypatch.setitem(resources.SOURCES, "cifar10",
                        Source("cifar10", (remote,), resources._check_cifar("cifar10", remote,
                                                                             members)))
    return archive


def visible(root: Path) -> list[str]:
    """What a user sees in the data root (snngen's hidden .snngen/ aside)."""
    return sorted(p.name for p in root.iterdir() if p.name != ".snngen") if root.exists() else []


def one_line_error(capsys, code: int, *fragments: str) -> str:
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for f in fragments:
        assert f in err, err
    return err


TINY_TRAIN = ("model: {{name: tiny, hidden: 8}}\n"
              "data: {{name: {name}, root: '{root}', image_size: 8, batch_size: 4{extra}}}\n"
              "trainer: {{max_steps: 2, accelerator: cpu, progress_bar: false, "
              "grids_every_epoch: false}}\nout_dir: '{out}'\n")


# ----------------------------------------------------------------------------- success


def test_mnist_download_then_train(tmp_path, server, monkeypatch, capsys):
    """Four IDX .gz files fetched, checked, placed where the loader reads them; then training
    (which verifies the set once and caches the digests) runs 2 steps on them."""
    files = idx_files(tmp_path)
    serve_idx(server, monkeypatch, files)
    root = tmp_path / "data"
    assert main(["datasets", "download", "mnist", "--root", str(root)]) == 0
    assert "4 published file(s)" in capsys.readouterr().out
    assert visible(root) == ["mnist"]
    for name, data in files.items():
        assert (root / "mnist" / name).read_bytes() == data
    assert not (root / ".snngen" / "downloads" / "mnist").exists()  # staging cleaned
    assert [e[2] for e in server.log] == [200] * 4

    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY_TRAIN.format(name="mnist", root=root, extra="", out=tmp_path / "runs"))
    assert main(["train", str(cfg), "--no-eval"]) == 0
    assert any((tmp_path / "runs").rglob("last.ckpt"))
    stamp = json.loads((root / ".snngen" / "verified.json").read_text())["files"]
    assert sorted(stamp) == sorted(f"mnist/{n}" for n in IDX_NAMES)
    assert main(["datasets", "download", "mnist", "--root", str(root)]) == 0
    assert "already complete" in capsys.readouterr().out
    assert len(server.log) == 4  # nothing fetched again


def test_config_download_true_fetches_cifar10_tarball_then_trains(tmp_path, server,
                                                                  monkeypatch, capsys):
    """data.download: true -> the CIFAR tarball is fetched, its md5 checked, unpacked into
    cifar-10-batches-py/ (each batch's md5 checked) and the run trains on it."""
    serve_cifar(server, monkeypatch, tmp_path / "src")
    root = tmp_path / "data"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY_TRAIN.format(name="cifar10", root=root, extra="", out=tmp_path / "runs"))
    capsys.readouterr()
    code = main(["train", str(cfg), "--no-eval"])  # download is false by default
    one_line_error(capsys, code, "dataset 'cifar10'",
                   f"snngen datasets download cifar10 --root {root}", "data.download: true")
    assert not root.exists() and not (tmp_path / "runs").exists()
    assert main(["train", str(cfg), "data.download=true", "--no-eval"]) == 0
    assert visible(root) == ["cifar-10-batches-py"]
    assert sorted(p.name for p in (root / "cifar-10-batches-py").iterdir()) == \
        sorted(p.name for p in (tmp_path / "src" / "cifar-10-batches-py").iterdir())
    assert len(server.log) == 1
    assert not [p for p in (root / ".snngen").iterdir() if p.name.startswith("unpack-")]


def test_celeba_zip_by_hand_and_nmnist_zips(tmp_path, server, monkeypatch, capsys):
    """CelebA has no direct link: the command says where to get the files; placed by hand it
    checks and unpacks them. N-MNIST's Train.zip/Test.zip are fetched and unpacked."""
    src = tmp_path / "src"
    write_celeba(src, n=4)
    zip_bytes = tree_bytes(src / "celeba" / "img_align_celeba", "zip")
    part_bytes = (src / "celeba" / "list_eval_partition.txt").read_bytes()
    images = Remote("img_align_celeba.zip", md5=md5(zip_bytes), size=len(zip_bytes),
                    unpack="zip", into="celeba")
    partition = Remote("list_eval_partition.txt", md5=md5(part_bytes), size=len(part_bytes),
                       into="celeba")
    real = resources.SOURCES["celeba"]
    monkeypatch.setitem(resources.SOURCES, "celeba", Source(
        "celeba", (images, partition), resources._check_celeba(images, partition), real.manual))
    monkeypatch.setattr(resources, "CELEBA_COUNT", 12)
    root = tmp_path / "data"
    capsys.readouterr()
    code = main(["datasets", "download", "celeba", "--root", str(root)])
    one_line_error(capsys, code, "drive.google.com", f"'{root}/celeba/'", "img_align_celeba.zip")
    assert not root.exists()
    (root / "celeba").mkdir(parents=True)
    (root / "celeba" / "img_align_celeba.zip").write_bytes(zip_bytes)
    (root / "celeba" / "list_eval_partition.txt").write_bytes(part_bytes)
    assert main(["datasets", "download", "celeba", "--root", str(root)]) == 0
    assert len(get_dataset("celeba", root=root, split="valid", image_size=8)) == 4
    assert (root / "celeba" / "img_align_celeba.zip").exists()  # the user's copy is kept

    write_nmnist(src, n=6)
    remotes = []
    for split in ("Train", "Test"):
        data = tree_bytes(src / "nmnist" / split, "zip")
        server.files[f"/n/{split}.zip"] = data
        remotes.append(Remote(f"{split}.zip", md5=md5(data), unpack="zip", into="nmnist",
                              urls=(f"{server.url}/n/{split}.zip",)))
    monkeypatch.setitem(resources.SOURCES, "nmnist",
                        Source("nmnist", tuple(remotes), resources._check_nmnist(*remotes)))
    monkeypatch.setattr(resources, "NMNIST_COUNTS", {"train": 6, "test": 6})
    assert main(["datasets", "download", "nmnist", "--root", str(root)]) == 0
    ds = get_dataset("nmnist", root=root, split="test")
    assert len(ds) == 6 and tuple(ds[0][0].shape) == (4, 2, 34, 34)


# ----------------------------------------------------------------------------- failures


def test_cut_half_way_resumes_without_fetching_bytes_twice(tmp_path, server, monkeypatch):
    files = idx_files(tmp_path)
    serve_idx(server, monkeypatch, files)
    path = "/mnist/train-images-idx3-ubyte.gz"
    half = len(files[IDX_NAMES[0]]) // 2
    server.cut[path] = half
    assert main(["datasets", "download", "mnist", "--root", str(tmp_path / "d")]) == 0
    first, second = server.requests(path)
    assert first[1:] == [None, 200, half]
    assert second[1] == f"bytes={half}-" and second[2] == 206
    assert server.sent(path) == len(files[IDX_NAMES[0]])  # every byte served exactly once
    assert (tmp_path / "d" / "mnist" / IDX_NAMES[0]).read_bytes() == files[IDX_NAMES[0]]


def test_server_ignoring_range_restarts_the_file_cleanly(tmp_path, server, monkeypatch):
    files = idx_files(tmp_path)
    serve_idx(server, monkeypatch, files)
    server.honour_range = False
    path = "/mnist/train-images-idx3-ubyte.gz"
    size = len(files[IDX_NAMES[0]])
    server.cut[path] = size // 2
    assert main(["datasets", "download", "mnist", "--root", str(tmp_path / "d")]) == 0
    assert [e[2] for e in server.requests(path)] == [200, 200]  # asked to resume, sent it all
    assert server.requests(path)[1][1] == f"bytes={size // 2}-"
    assert (tmp_path / "d" / "mnist" / IDX_NAMES[0]).read_bytes() == files[IDX_NAMES[0]]


def test_first_mirror_404_then_second(tmp_path, server, monkeypatch, capsys):
    files = idx_files(tmp_path)
    remotes = serve_idx(server, monkeypatch, files, prefix="/b/")
    monkeypatch.setitem(resources.SOURCES, "mnist", Source("mnist", tuple(
        Remote(r.file, md5=r.md5, size=r.size, into="mnist",
               urls=(f"{server.url}/a/{r.file}", f"{server.url}/b/{r.file}")) for r in remotes),
        resources._check_idx("mnist", remotes)))
    assert main(["datasets", "download", "mnist", "--root", str(tmp_path / "d")]) == 0
    assert [(e[0][:3], e[2]) for e in server.log] == [("/a/", 404), ("/b/", 200)] * 4
    # --mirror replaces the published URLs ({name}: the dataset); the same checksums apply
    capsys.readouterr()
    code = main(["datasets", "download", "mnist", "--root", str(tmp_path / "e"),
                 "--mirror", f"{server.url}/nope/", "--mirror", server.url + "/b"])
    assert code == 0 and [e[0][:3] for e in server.log[8:]] == ["/no", "/b/"] * 4
    monkeypatch.setenv(download.MIRROR_ENV, f"{server.url}/{{name}}-copy/ {server.url}/b/")
    assert main(["datasets", "download", "mnist", "--root", str(tmp_path / "f")]) == 0
    assert [e[0] for e in server.log[16:18]] == [f"/mnist-copy/{IDX_NAMES[0]}",
                                                 f"/b/{IDX_NAMES[0]}"]
    capsys.readouterr()
    code = main(["datasets", "download", "mnist", "--mirror", "ftp://x/"])
    one_line_error(capsys, code, "mirror 'ftp://x/'", "http://")


def test_checksum_mismatch_refused_and_nothing_left(tmp_path, server, monkeypatch, capsys):
    files = idx_files(tmp_path)
    serve_idx(server, monkeypatch, files)
    bad = bytearray(files[IDX_NAMES[2]])
    bad[len(bad) // 2] ^= 0xFF  # same size, one byte flipped
    server.files["/mnist/" + IDX_NAMES[2]] = bytes(bad)
    root = tmp_path / "d"
    capsys.readouterr()
    code = main(["datasets", "download", "mnist", "--root", str(root)])
    one_line_error(capsys, code, IDX_NAMES[2], f"md5 {md5(bytes(bad))}",
                   f"published file {md5(files[IDX_NAMES[2]])}", "nothing was kept")
    assert visible(root) == []
    assert not list((root / ".snngen").rglob("*.part"))
    with pytest.raises(DataError, match="snngen datasets download mnist"):
        get_dataset("mnist", root=root)


@pytest.mark.parametrize("where", ["download", "unpack"])
def test_full_disk_one_line_and_nothing_placed(tmp_path, server, monkeypatch, capsys, where):
    """ENOSPC while writing the .part (it is kept, to resume) or while unpacking (the temporary
    folder is removed): exit 2, one line, no dataset folder in the root."""
    serve_cifar(server, monkeypatch, tmp_path / "src")
    real = download.write_chunk

    class Full:  # a file whose writes fail as on a full disk
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    calls = []

    def full(handle, chunk, path):
        if (path.suffix == ".part") == (where == "download"):
            calls.append(path)
            if len(calls) > 1:  # the second write: some bytes are already on disk
                handle = Full()
        real(handle, chunk, path)

    monkeypatch.setattr(download, "write_chunk", full)
    root = tmp_path / "d"
    capsys.readouterr()
    code = main(["datasets", "download", "cifar10", "--root", str(root)])
    one_line_error(capsys, code, "no space left on the device", "run the same command again")
    assert visible(root) == []
    state = sorted(p.relative_to(root).as_posix() for p in (root / ".snngen").rglob("*"))
    kept = ("cifar-10-python.tar.gz.part" if where == "download" else "cifar-10-python.tar.gz")
    assert state == [".snngen/cifar10.lock", ".snngen/downloads", ".snngen/downloads/cifar10",
                     f".snngen/downloads/cifar10/{kept}"]
    monkeypatch.setattr(download, "write_chunk", real)
    assert main(["datasets", "download", "cifar10", "--root", str(root)]) == 0
    assert visible(root) == ["cifar-10-batches-py"]


def test_verify_names_a_bad_file_and_caches_digests(tmp_path, server, monkeypatch, capsys):
    """verify names a truncated file (size); training refuses a different but well-formed file
    the loader would read (md5); digests are cached by size + mtime."""
    files = idx_files(tmp_path)
    serve_idx(server, monkeypatch, files)
    root = tmp_path / "d"
    assert main(["datasets", "download", "mnist", "--root", str(root)]) == 0
    hashed = []
    real = resources.file_digest
    monkeypatch.setattr(resources, "file_digest", lambda p, a: hashed.append(p.name) or real(p, a))
    assert main(["datasets", "verify", "mnist", "--root", str(root)]) == 0
    assert hashed == []  # the download's digests are cached (size + mtime)
    target = root / "mnist" / IDX_NAMES[1]
    target.write_bytes(files[IDX_NAMES[1]][:-7])
    capsys.readouterr()
    code = main(["datasets", "verify", "mnist", "--root", str(root)])
    one_line_error(capsys, code, f"'{target}'", f"{len(files[IDX_NAMES[1]]) - 7:,} bytes",
                   f"published file {len(files[IDX_NAMES[1]]):,}", "data.verify: false")
    target.write_bytes(files[IDX_NAMES[1]])
    other = idx_files(tmp_path / "other", seed=1)  # well-formed, same shape, other pixels
    images = root / "mnist" / IDX_NAMES[0]
    images.write_bytes(other[IDX_NAMES[0]])
    assert len(get_dataset("mnist", root=root)) == 16  # the loader reads it fine
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY_TRAIN.format(name="mnist", root=root, extra="", out=tmp_path / "runs"))
    capsys.readouterr()
    code = main(["train", str(cfg), "--no-eval"])
    one_line_error(capsys, code, f"'{images}'", "a different file", "data.verify: false")
    assert not (tmp_path / "runs").exists()
    images.write_bytes(files[IDX_NAMES[0]])
    hashed.clear()
    assert main(["datasets", "verify", "mnist", "--root", str(root)]) == 0
    assert main(["datasets", "verify", "mnist", "--root", str(root)]) == 0
    assert sorted(hashed) == sorted(IDX_NAMES[:2])  # the two rewritten files, hashed once


# ----------------------------------------------------------------------------- archives


def malicious_tar(kind: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ok = tarfile.TarInfo("set/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        info = tarfile.TarInfo({"dotdot": "set/../../evil.txt", "absolute": "/tmp/evil.txt",
                                "symlink": "set/link", "hardlink": "set/hard"}[kind])
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "../../../etc/passwd"
        else:
            info.size = 4
        tar.addfile(info, io.BytesIO(b"evil") if info.size else None)
    return buf.getvalue()


def malicious_zip(kind: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("set/ok.txt", "ok")
        if kind == "symlink":
            info = zipfile.ZipInfo("set/link")
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
        else:
            zf.writestr({"dotdot": "set/../../evil.txt", "absolute": "/tmp/evil.txt",
                         "backslash": "set\\..\\..\\evil.txt", "drive": "C:/evil.txt"}[kind],
                        "evil")
    return buf.getvalue()


@pytest.mark.parametrize("fmt,kind", [("tar", k) for k in ("dotdot", "absolute", "symlink",
                                                           "hardlink")]
                         + [("zip", k) for k in ("dotdot", "absolute", "symlink", "backslash",
                                                 "drive")])
def test_malicious_archive_members_refused(tmp_path, fmt, kind):
    archive = tmp_path / f"a.{fmt}"
    archive.write_bytes(malicious_tar(kind) if fmt == "tar" else malicious_zip(kind))
    dest = tmp_path / "x" / "y" / "dest"
    with pytest.raises(DataError, match=r"member '.*' (is a|has an absolute|points outside)"):
        download.unpack(archive, fmt, dest)
    assert not list(tmp_path.rglob("evil.txt")) and not (tmp_path / "evil.txt").exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_symlink()]


def test_malicious_archive_in_a_download_places_nothing(tmp_path, server, monkeypatch, capsys):
    data = malicious_tar("dotdot")
    server.files["/c/cifar-10-python.tar.gz"] = data
    remote = Remote("cifar-10-python.tar.gz", md5=md5(data), size=len(data), unpack="tar",
                    urls=(server.url + "/c/cifar-10-python.tar.gz",))
    monkeypatch.setitem(resources.SOURCES, "cifar10", Source(
        "cifar10", (remote,), resources._check_cifar("cifar10", remote, (FileSum("ok.txt", "x"),))))
    root = tmp_path / "d"
    capsys.readouterr()
    code = main(["datasets", "download", "cifar10", "--root", str(root)])
    one_line_error(capsys, code, "set/../../evil.txt", "points outside")
    assert visible(root) == [] and not list(tmp_path.rglob("evil.txt"))
    assert not [p for p in (root / ".snngen").iterdir() if p.name.startswith("unpack-")]


def test_archive_with_another_layout_is_taken_back(tmp_path, server, monkeypatch, capsys):
    """An archive that passes its md5 but unpacks to less than the set (here without
    data_batch_5): the whole set is checked after the move, and what was moved is removed."""
    serve_cifar(server, monkeypatch, tmp_path / "src")
    (tmp_path / "src" / "cifar-10-batches-py" / "data_batch_5").unlink()
    data = tree_bytes(tmp_path / "src" / "cifar-10-batches-py", "tar")
    server.files["/cifar/cifar-10-python.tar.gz"] = data
    source = resources.SOURCES["cifar10"]
    remote = Remote(**{**source.remotes[0].__dict__, "md5": md5(data), "size": len(data)})
    monkeypatch.setitem(resources.SOURCES, "cifar10", Source(
        "cifar10", (remote,), resources._check_cifar("cifar10", remote, tuple(
            FileSum(p.name, md5=md5(p.read_bytes()))
            for p in (tmp_path / "src" / "cifar-10-batches-py").iterdir()) + (
            FileSum("data_batch_5", md5="0" * 32),))))
    root = tmp_path / "d"
    capsys.readouterr()
    code = main(["datasets", "download", "cifar10", "--root", str(root)])
    one_line_error(capsys, code, "after unpacking", "data_batch_5' is missing",
                   "nothing was placed")
    assert visible(root) == []


def test_gzip_resources_kept_compressed_and_the_progress_bar(tmp_path, server, monkeypatch,
                                                             capsys):
    """MNIST's .gz files are placed as published (the loader reads them gzipped); the bar of a
    file shows its name, bytes with SI prefixes and a rate."""
    files = idx_files(tmp_path)
    serve_idx(server, monkeypatch, files)
    root = tmp_path / "d"
    download.download_dataset("mnist", root, progress=True)
    bars = capsys.readouterr().err
    size = len(files[IDX_NAMES[0]])
    # a bar per file: its name, the size with an SI prefix (tqdm: 3 significant digits), a rate
    assert f"download {IDX_NAMES[0]}:   0%|" in bars and "B/s]" in bars
    assert f"0.00/{size / 1000:.2f}k" in bars
    raw = gzip.decompress((root / "mnist" / IDX_NAMES[3]).read_bytes())
    assert raw[:4] == bytes([0, 0, 8, 1]) and len(raw) == 8 + 16  # IDX labels header + 16


# ----------------------------------------------------------------------------- processes


def big_files(size: int = 300_000) -> dict[str, bytes]:
    """Four files named as MNIST's (the check hashes them; it does not decode them)."""
    rnd = hashlib.sha256(b"seed").digest()
    blob = (rnd * (size // len(rnd) + 1))[:size]
    return {n: blob[: size // (i + 1)] + bytes([i]) for i, n in enumerate(IDX_NAMES)}


def spawn(argv: list[str], out: Path, err: Path) -> int:
    """A separate process (fork: the table patched here is inherited, and no interpreter start)
    running ``snngen ARGV`` with stdout/stderr into files and SIGINT as in a fresh Python."""
    out.write_text("")
    err.write_text("")
    pid = os.fork()
    if pid:
        return pid
    code = 99
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd, path in ((1, out), (2, err)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_APPEND), fd)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        code = main(argv)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def wait(pid: int, timeout: float = 60) -> int:
    """The exit status of process ``pid`` (killed after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"process {pid} did not finish in {timeout} s")


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@needs_fork
def test_sigint_keeps_the_part_and_the_next_call_resumes(tmp_path, server, monkeypatch):
    files = big_files()
    serve_idx(server, monkeypatch, files, prefix="/m/")
    path = "/m/" + IDX_NAMES[0]
    server.hold[path] = 100_000
    argv = ["datasets", "download", "mnist", "--root", str(tmp_path / "d")]
    pid = spawn(argv, tmp_path / "out1", tmp_path / "err1")
    assert server.holding.wait(60), (tmp_path / "err1").read_text()
    part = tmp_path / "d" / ".snngen" / "downloads" / "mnist" / (IDX_NAMES[0] + ".part")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not part.exists() or part.stat().st_size < 60_000):
        time.sleep(0.02)
    os.kill(pid, signal.SIGINT)
    code = wait(pid)
    server.release.set()
    err = (tmp_path / "err1").read_text()
    assert code == 130, err
    assert "interrupted" in err and "resume" in err and len(err.splitlines()) == 1
    kept = part.stat().st_size
    assert 60_000 <= kept <= 100_000
    assert visible(tmp_path / "d") == []
    assert sorted(p.name for p in part.parent.iterdir()) == [part.name]

    assert wait(spawn(argv, tmp_path / "out2", tmp_path / "err2")) == 0, \
        (tmp_path / "err2").read_text()
    resumed = server.requests(path)[-1]
    assert resumed[1] == f"bytes={kept}-" and resumed[2] == 206
    assert resumed[3] == len(files[IDX_NAMES[0]]) - kept  # only the missing bytes
    assert (tmp_path / "d" / "mnist" / IDX_NAMES[0]).read_bytes() == files[IDX_NAMES[0]]


@needs_fork
def test_two_processes_one_download(tmp_path, server, monkeypatch):
    files = big_files()
    serve_idx(server, monkeypatch, files, prefix="/m/")
    server.hold["/m/" + IDX_NAMES[0]] = 50_000
    argv = ["datasets", "download", "mnist", "--root", str(tmp_path / "d")]
    first = spawn(argv, tmp_path / "out1", tmp_path / "err1")
    assert server.holding.wait(60), (tmp_path / "err1").read_text()
    second = spawn(argv, tmp_path / "out2", tmp_path / "err2")
    deadline, waited = time.monotonic() + 60, False
    while not waited and time.monotonic() < deadline:
        waited = "waiting for another process downloading mnist" in \
            (tmp_path / "err2").read_text()
        time.sleep(0.02)
    server.release.set()
    assert waited, "the second process did not wait on the lock"
    assert wait(first) == 0, (tmp_path / "err1").read_text()
    assert wait(second) == 0, (tmp_path / "err2").read_text()
    assert "already complete" in (tmp_path / "out2").read_text()
    for name in IDX_NAMES:  # exactly one download of each file
        assert len(server.requests("/m/" + name)) == 1
    assert all((tmp_path / "d" / "mnist" / n).read_bytes() == d for n, d in files.items())


# ----------------------------------------------------------------------------- listing


def test_listing_and_refusals(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:4] for line in out.splitlines()
            if line.split() and line.split()[0] in resources.SOURCES}
    # sizes: the published bytes summed (9912422 + 28881 + 1648877 + 4542 = 11,594,722)
    assert rows["mnist"] == ["yes", "11.6", "MB"]
    assert rows["cifar10"] == ["yes", "170.5", "MB"]
    assert rows["celeba"] == ["by", "hand", "1.45"]
    assert rows["lsun_bedroom"][0] == "no"
    capsys.readouterr()
    code = main(["datasets", "download", "mnist5k"])
    one_line_error(capsys, code, "bundled", "nothing to download")
    capsys.readouterr()
    code = main(["datasets", "download", "lsun_church", "--root", "/nonexistent/r"])
    one_line_error(capsys, code, "church_outdoor", "data.py export",
                   "--out_dir /nonexistent/r/lsun_church")
    capsys.readouterr()
    code = main(["datasets", "verify", "nope"])
    one_line_error(capsys, code, "unknown dataset 'nope'")


def test_table_sizes_are_the_published_ones():
    """The table against the numbers as listed by the hosts (not recomputed from any file)."""
    mnist = {r.file: r.size for r in resources.SOURCES["mnist"].remotes}
    assert mnist == {"train-images-idx3-ubyte.gz": 9912422, "train-labels-idx1-ubyte.gz": 28881,
                     "t10k-images-idx3-ubyte.gz": 1648877, "t10k-labels-idx1-ubyte.gz": 4542}
    celeba = {r.file: (r.size, r.md5) for r in resources.SOURCES["celeba"].remotes}
    # 202,599 lines "000001.jpg 0\r\n" of 14 bytes
    assert celeba["list_eval_partition.txt"] == (14 * 202599, "d32c9cbf5e040fd4025c592c306e6668")
    assert all(len(r.md5) == 32 for s in resources.SOURCES.values() for r in s.remotes)
    assert resources.IDX_RAW_SIZES["train-images-idx3-ubyte"] == 47040016  # 16 + 60000*28*28
