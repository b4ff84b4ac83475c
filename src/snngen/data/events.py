"""Event-camera datasets: N-MNIST (original binary files) and CIFAR10-DVS (AEDAT files), read
into event arrays and binned into frames ``[T, 2, H, W]`` with tonic's ``ToFrame``.

Events are numpy structured arrays with fields ``x``, ``y``, ``t`` (microseconds) and ``p``
(polarity: 1 = ON, brighter; 0 = OFF, darker). Frame channel ``c`` counts the events of
polarity ``c`` (tonic's convention): channel 0 = OFF, channel 1 = ON.

Binning follows ``tonic.transforms.ToFrame(n_time_bins=T)``: bins of width
``(t_last - t_first) // T`` from the first event; events past the ``T``-th bin (the remainder
of the integer division) are dropped, as in tonic. ``denoise_us`` applies tonic's ``Denoise``
filter first (an event is kept only if one of its 4 neighbours fired less than ``denoise_us``
before it); :func:`denoise` is a vectorised version that gives tonic's result exactly.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from snngen.data.base import (
    DataError,
    MissingDataError,
    check_split,
    natural_key,
    resolve_root,
    searched,
)

EVENT_DTYPE = np.dtype([("x", np.int32), ("y", np.int32), ("t", np.int64), ("p", np.int8)])
OFF, ON = 0, 1  # frame channels

NMNIST_SENSOR = (34, 34)  # (width, height)
NMNIST_SPLIT_FOLDERS = {"train": ("Train", "train"), "test": ("Test", "test")}
NMNIST_FOLDERS = ("nmnist", "NMNIST", "N-MNIST")
NMNIST_OVERFLOW_Y = 240  # a "timestamp overflow" marker event (Orchard's reader)
NMNIST_OVERFLOW_US = 2**13  # added to later timestamps per marker, as the original reader does

DVS_SENSOR = (128, 128)
CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                       "ship", "truck")
CIFAR10_DVS_FOLDERS = ("cifar10_dvs", "CIFAR10DVS", "cifar10-dvs", "CIFAR10-DVS")
CIFAR10_DVS_TEST_FRACTION = 10  # the first 1/10 of each class (files 0-99 of 1000) is test


def require_tonic():
    """Import and return ``tonic``; :class:`DataError` with the install hint if missing."""
    try:
        import tonic
        import tonic.transforms  # noqa: F401
    except ImportError:
        raise DataError("event datasets bin events with the tonic library, which is not "
                        "installed: pip install 'snngen[events]' (or pip install tonic)") from None
    return tonic


def make_events(x, y, t, p) -> np.ndarray:
    """Return a structured event array (:data:`EVENT_DTYPE`) from four equal-length arrays."""
    ev = np.empty(len(x), dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = x, y, t, p
    return ev


# ----------------------------------------------------------------------------- readers


def _check_nmnist_size(path: Path, size: int) -> None:
    """Refuse an N-MNIST file of ``size`` bytes that cannot hold whole events (or none)."""
    if size == 0:
        raise DataError(f"'{path}' is empty: an N-MNIST recording holds at least one event")
    if size % 5:
        raise DataError(f"'{path}' is truncated or corrupt: {size} bytes is not a whole "
                        "number of 5-byte N-MNIST events")


def read_nmnist(path: str | Path) -> np.ndarray:
    """Decode an N-MNIST ``.bin`` file: 40-bit events, 5 bytes each.

    Byte 0: x; byte 1: y; byte 2: bit 7 polarity (1 = ON), bits 6-0 timestamp bits 22-16;
    bytes 3-4: timestamp bits 15-0 (microseconds). An event with ``y == 240`` is a timestamp
    overflow marker: it is dropped and 2**13 is added to every later timestamp (as the
    dataset's own reader does). Returns events (:data:`EVENT_DTYPE`) in file order.
    """
    path = Path(path)
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DataError(f"cannot read '{path}': {err}") from None
    _check_nmnist_size(path, raw.size)
    raw = raw.reshape(-1, 5).astype(np.int64)
    x, y = raw[:, 0], raw[:, 1]
    p = raw[:, 2] >> 7
    t = ((raw[:, 2] & 127) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    overflow = y == NMNIST_OVERFLOW_Y
    t = t + np.cumsum(overflow) * NMNIST_OVERFLOW_US
    keep = ~overflow
    if not keep.any():
        raise DataError(f"'{path}' holds no events (only timestamp-overflow markers)")
    ev = make_events(x[keep], y[keep], t[keep], p[keep])
    _check_in_sensor(ev, NMNIST_SENSOR, path)
    return ev


def _check_in_sensor(ev: np.ndarray, sensor: tuple[int, int], path: Path) -> None:
    if len(ev) and (ev["x"].max() >= sensor[0] or ev["y"].max() >= sensor[1]
                    or ev["x"].min() < 0 or ev["y"].min() < 0):
        bad = int(np.argmax((ev["x"] >= sensor[0]) | (ev["y"] >= sensor[1])
                            | (ev["x"] < 0) | (ev["y"] < 0)))
        raise DataError(f"'{path}' is corrupt: event {bad} at x={ev['x'][bad]}, y={ev['y'][bad]} "
                        f"lies outside the {sensor[0]}x{sensor[1]} sensor")


def _aedat_header(data: bytes, path: Path) -> tuple[str | None, int]:
    """(version string such as ``"2.0"`` or None, offset of the binary data)."""
    pos, version = 0, None
    while pos < len(data) and data[pos:pos + 1] == b"#":
        end = data.find(b"\n", pos)
        line = data[pos:] if end < 0 else data[pos:end + 1]
        text = line.rstrip(b"\r\n")
        if not all(32 <= b < 127 or b == 9 for b in text):
            break  # binary data that happens to start with '#'
        text = text.decode("ascii")
        if text.startswith("#!AER-DAT"):
            version = text[len("#!AER-DAT"):].strip()
        pos += len(line)
        if text.startswith("#!END-HEADER") or end < 0:
            break
    return version, pos


def _read_aedat2_dvs128(body: bytes, path: Path) -> np.ndarray:
    """AEDAT 2.0 (jAER) from a DVS128: big-endian (address, timestamp) uint32 pairs.

    Address bits: 0 polarity (1 = OFF), 1-7 x, 8-14 y (sensor frame). As spikingjelly reads
    CIFAR10-DVS, the image is rotated by 180 degrees and transposed to upright:
    ``x = 127 - y_raw``, ``y = 127 - x_raw``, ``p = 1 - bit0`` (1 = ON).
    """
    if len(body) % 8:
        raise DataError(f"'{path}' is truncated or corrupt: {len(body)} data bytes is not a whole "
                        "number of 8-byte AEDAT 2.0 events")
    arr = np.frombuffer(body, dtype=">u4").reshape(-1, 2).astype(np.int64)
    addr, ts = arr[:, 0], arr[:, 1]
    x_raw, y_raw = (addr >> 1) & 0x7F, (addr >> 8) & 0x7F
    return make_events(127 - y_raw, 127 - x_raw, ts, 1 - (addr & 1))


_CAER_HEADER = struct.Struct("<hhiiiiii")  # type, source, size, tsOffset, tsOverflow, cap, n, valid
_CAER_POLARITY = 1


def _read_aedat31(body: bytes, path: Path) -> np.ndarray:
    """AEDAT 3.1 (cAER packets, little-endian): keeps valid polarity events.

    Polarity event: uint32 data (bit 0 valid, bit 1 polarity 1 = ON, bits 2-16 y, 17-31 x)
    and int32 timestamp, extended by the packet's overflow counter (``overflow << 31``).
    """
    parts, pos = [], 0
    while pos < len(body):
        if len(body) - pos < _CAER_HEADER.size:
            raise DataError(f"'{path}' is truncated: an AEDAT 3.1 packet header is cut off at "
                            f"byte {pos}")
        etype, _, size, _, overflow, capacity, _, _ = _CAER_HEADER.unpack_from(body, pos)
        pos += _CAER_HEADER.size
        nbytes = capacity * size
        if size <= 0 or capacity < 0 or pos + nbytes > len(body):
            raise DataError(f"'{path}' is truncated or corrupt: an AEDAT 3.1 packet of "
                            f"{capacity} x {size} bytes does not fit in the file")
        if etype == _CAER_POLARITY and size == 8:
            arr = np.frombuffer(body, dtype="<u4", count=2 * capacity, offset=pos)
            arr = arr.reshape(-1, 2).astype(np.int64)
            data, ts = arr[:, 0], arr[:, 1]
            valid = (data & 1) == 1
            data, ts = data[valid], ts[valid] | (int(overflow) << 31)
            parts.append(make_events((data >> 17) & 0x7FFF, (data >> 2) & 0x7FFF, ts,
                                     (data >> 1) & 1))
        pos += nbytes
    return np.concatenate(parts) if parts else make_events([], [], [], [])


def read_aedat(path: str | Path, sensor: tuple[int, int] = DVS_SENSOR) -> np.ndarray:
    """Decode an AEDAT file: 2.0 (jAER, DVS128, the original CIFAR10-DVS files), 3.1 (cAER
    polarity packets) or 4.0 (through the optional ``aedat`` package, as tonic does).

    Returns events (:data:`EVENT_DTYPE`), checked to lie on the ``sensor`` (width, height).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read '{path}': {err}") from None
    version, start = _aedat_header(data, path)
    if version is None:
        raise DataError(f"'{path}' has no '#!AER-DAT<version>' header line; not an AEDAT file")
    if version.startswith("2"):
        ev = _read_aedat2_dvs128(data[start:], path)
    elif version.startswith("3"):
        ev = _read_aedat31(data[start:], path)
    elif version.startswith("4"):
        ev = _read_aedat4(path)
    else:
        raise DataError(f"'{path}': AEDAT version {version!r} is not supported (2.0, 3.1, 4.0)")
    _check_in_sensor(ev, sensor, path)
    return ev


def _read_aedat4(path: Path) -> np.ndarray:
    try:
        import aedat  # noqa: F401
        from tonic.io import read_aedat4
    except ImportError:
        raise DataError(f"'{path}' is an AEDAT 4 file, which needs the aedat package: "
                        "pip install aedat tonic") from None
    try:
        raw = read_aedat4(str(path))
    except Exception as err:  # the decoder's own errors: a corrupt or truncated file
        raise DataError(f"cannot decode AEDAT 4 file '{path}': {err}") from None
    return make_events(raw["x"], raw["y"], raw["t"], np.asarray(raw["on"], dtype=np.int8))


# ----------------------------------------------------------------------------- processing


def denoise(events: np.ndarray, filter_time: float) -> np.ndarray:
    """tonic's ``Denoise(filter_time)``, vectorised; returns the kept events in order.

    An event at ``(x, y, t)`` is kept if one of its 4 neighbours (inside the sample's
    bounding box ``[0, max x] x [0, max y]``) had its latest earlier event (in stream order)
    at ``t' > t - filter_time``; a neighbour with no earlier event counts as ``t' = 0``
    (tonic's memory starts at ``filter_time``).
    """
    n = len(events)
    if n == 0:
        return events
    x, y = events["x"].astype(np.int64), events["y"].astype(np.int64)
    t = events["t"].astype(np.float64)
    w, h = int(x.max()) + 1, int(y.max()) + 1
    idx = np.arange(n, dtype=np.int64)
    keys = (x * h + y) * n + idx
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    keep = np.zeros(n, dtype=bool)
    for dx, dy, inside in ((-1, 0, x > 0), (1, 0, x < w - 1), (0, -1, y > 0), (0, 1, y < h - 1)):
        q = (x + dx) * h + (y + dy)
        pos = np.searchsorted(sorted_keys, q * n + idx) - 1  # latest event at q before this one
        posc = np.clip(pos, 0, None)
        same = (pos >= 0) & (sorted_keys[posc] // n == q)
        last = np.where(same, t[order[posc]], 0.0)
        keep |= inside & (last + filter_time > t)
    return events[keep]


def to_frames(events: np.ndarray, sensor: tuple[int, int], time_bins: int) -> np.ndarray:
    """Bin events into ``[T, 2, H, W]`` int16 counts with tonic's ``ToFrame(n_time_bins=T)``.

    ``sensor`` is ``(width, height)``; channel ``c`` counts polarity ``c``. No events give zeros.
    """
    w, h = sensor
    if len(events) == 0:
        return np.zeros((time_bins, 2, h, w), dtype=np.int16)
    tonic = require_tonic()
    frames = tonic.transforms.ToFrame(sensor_size=(w, h, 2), n_time_bins=time_bins)(events)
    return np.asarray(frames)


def check_time_bins(time_bins: int) -> int:
    if isinstance(time_bins, bool) or not isinstance(time_bins, int) or time_bins < 1:
        raise DataError(f"time_bins={time_bins!r} must be a positive integer")
    return time_bins


def resize_frames(frames: Tensor, size: int) -> Tensor:
    """Event frames ``[T, 2, H, W]`` resized to ``size x size`` as the spiking VQ-VAE's event
    pipelines do: ``F.interpolate(mode="bilinear", align_corners=True)``, no antialiasing."""
    if frames.shape[-2:] == (size, size):
        return frames
    return F.interpolate(frames.float(), size=(size, size), mode="bilinear", align_corners=True)


class EventFiles(Dataset):
    """Event recordings read and binned on access.

    Items ``(x, label)``: ``x`` float32 ``[T, 2, H, W]`` event counts (``H, W`` the sensor's,
    or ``image_size`` by :func:`resize_frames`, as the spiking VQ-VAE's N-MNIST pipeline does).
    """

    def __init__(self, files: list[Path], labels: list[int],
                 reader: Callable[[Path], np.ndarray], sensor: tuple[int, int], time_bins: int,
                 denoise_us: float | None = None, image_size: int | None = None,
                 name: str = "") -> None:
        self.files, self.labels, self.reader, self.sensor = files, labels, reader, sensor
        self.time_bins, self.denoise_us = check_time_bins(time_bins), denoise_us
        self.image_size, self.name = image_size, name
        if denoise_us is not None and (isinstance(denoise_us, bool) or denoise_us < 0):
            raise DataError(f"denoise_us={denoise_us!r} must be microseconds >= 0 or null")

    def __len__(self) -> int:
        return len(self.files)

    def events(self, index: int) -> np.ndarray:
        """The raw (denoised, if asked) events of item ``index``."""
        ev = self.reader(self.files[index])
        return denoise(ev, self.denoise_us) if self.denoise_us else ev

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        frames = to_frames(self.events(index), self.sensor, self.time_bins)
        x = torch.from_numpy(frames.astype(np.float32))
        if self.image_size is not None:
            x = resize_frames(x, self.image_size)
        return x, self.labels[index]

    def __repr__(self) -> str:
        w, h = self.sensor
        s = self.image_size
        shape = [self.time_bins, 2, s or h, s or w]
        return f"EventFiles({self.name!r}, n={len(self)}, item={shape})"


# ----------------------------------------------------------------------------- datasets


def load_nmnist(root=None, split: str = "train", image_size: int | None = None,
                time_bins: int = 4, denoise_us: float | None = 10000) -> EventFiles:
    """N-MNIST from the original files: ``<root>/nmnist/{Train,Test}/<digit>/*.bin``.

    Items ``(x [T, 2, 34, 34] event counts, digit)`` (``image_size`` resizes the frames).
    ``denoise_us`` (default 10000, the spiking VQ-VAE's pipeline; ``null`` turns it off).
    """
    require_tonic()
    base = resolve_root(root)
    folders = [base / f for f in NMNIST_FOLDERS] + [base]
    subs = NMNIST_SPLIT_FOLDERS[check_split(split)]
    split_dir = next((f / s for f in folders for s in subs if (f / s).is_dir()), None)
    if split_dir is None:
        raise MissingDataError(
            f"dataset 'nmnist' ({split}): folder {subs[0]}/ with digit subfolders 0/ ... 9/ of "
            f"*.bin files not found in any of {searched(folders)}; unzip the original N-MNIST "
            f"Train.zip and Test.zip into '{folders[0]}'")
    files, labels = [], []
    for digit in range(10):
        d = split_dir / str(digit)
        if d.is_dir():
            names = sorted((p.name for p in d.iterdir() if p.suffix == ".bin"), key=natural_key)
            files += [d / n for n in names]
            labels += [digit] * len(names)
    if not files:
        raise MissingDataError(f"dataset 'nmnist' ({split}): no *.bin files in digit subfolders "
                               f"0/ ... 9/ of '{split_dir}'")
    for f in files:  # sizes only (one stat each): an empty or cut file is refused up front
        _check_nmnist_size(f, f.stat().st_size)
    return EventFiles(files, labels, read_nmnist, NMNIST_SENSOR, time_bins, denoise_us,
                      image_size, name="nmnist")


def load_cifar10_dvs(root=None, split: str = "train", image_size: int | None = None,
                     time_bins: int = 4, denoise_us: float | None = 10000) -> EventFiles:
    """CIFAR10-DVS from AEDAT files: ``<root>/cifar10_dvs/<class>/*.aedat`` (or ``.aedat4``).

    ``denoise_us`` (default 10000, as the spiking VQ-VAE's pipeline filters both splits; ``null``
    turns it off).

    No official split exists; as in TEBN and spikingjelly's split, the first tenth of each
    class (files 0-99 of 1000, natural name order) is the test split, the rest train.
    Items ``(x [T, 2, 128, 128] event counts, class index)``.
    """
    require_tonic()
    base = resolve_root(root)
    folders = [base / f for f in CIFAR10_DVS_FOLDERS]
    folder = next((f for f in folders if any((f / c).is_dir() for c in CIFAR10_DVS_CLASSES)), None)
    if folder is None:
        raise MissingDataError(
            f"dataset 'cifar10_dvs': class folders {', '.join(CIFAR10_DVS_CLASSES[:3])}, ... "
            f"holding *.aedat files not found in any of {searched(folders)}; unzip the original "
            f"archives into '{folders[0]}'")
    files, labels = [], []
    for label, cls in enumerate(CIFAR10_DVS_CLASSES):
        d = folder / cls
        if not d.is_dir():
            continue
        names = sorted((p.name for p in d.iterdir() if p.suffix in (".aedat", ".aedat4")),
                       key=natural_key)
        n_test = len(names) // CIFAR10_DVS_TEST_FRACTION
        chosen = names[:n_test] if check_split(split) == "test" else names[n_test:]
        files += [d / n for n in chosen]
        labels += [label] * len(chosen)
    if not files:
        raise DataError(f"dataset 'cifar10_dvs' ({split}): no *.aedat files of this split in the "
                        f"class folders of '{folder}' (test = first tenth of each class)")
    return EventFiles(files, labels, read_aedat, DVS_SENSOR, time_bins, denoise_us, image_size,
                      name="cifar10_dvs")
