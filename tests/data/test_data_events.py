"""N-MNIST binary files, AEDAT files (CIFAR10-DVS), denoising and binning into [T, 2, H, W]:
files with known events written here, bin counts worked out by hand."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from snngen.data import DataError, denoise, get_dataset, read_aedat, read_nmnist, to_frames
from snngen.data.events import make_events

pytest.importorskip("tonic")


def nmnist_bytes(events) -> bytes:
    """Encode (x, y, p, t) tuples as 40-bit N-MNIST events, from the format's definition."""
    out = bytearray()
    for x, y, p, t in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


# (x, y, p, t): with T = 4 the bins are t // 25 for t in [0, 100): (100 - 0) // 4 = 25 us wide;
# the last event (t = 100) falls past the 4th bin and is dropped, as tonic's ToFrame does
EVENTS = [(0, 0, 1, 0), (0, 0, 1, 10), (33, 5, 0, 25), (2, 33, 1, 40), (2, 33, 1, 49),
          (7, 8, 0, 99), (9, 9, 1, 100)]


def expected_frames(events, t_bins=4, width=25, size=34):
    f = np.zeros((t_bins, 2, size, size))
    for x, y, p, t in events:
        if t // width < t_bins:
            f[t // width, p, y, x] += 1
    return f


def write_nmnist(root, per_digit=None, split="Train"):
    per_digit = per_digit or {3: [EVENTS], 7: [EVENTS[:3], EVENTS[3:]]}
    for digit, samples in per_digit.items():
        d = root / "nmnist" / split / str(digit)
        d.mkdir(parents=True, exist_ok=True)
        for i, ev in enumerate(samples):
            (d / f"{i:05d}.bin").write_bytes(nmnist_bytes(ev))


def test_read_nmnist_exact(tmp_path):
    path = tmp_path / "a.bin"
    # a large timestamp (all 23 bits used) and an overflow marker (y = 240) before the last one
    events = [(1, 2, 1, 0x7FFFFF), (3, 4, 0, 5)]
    path.write_bytes(nmnist_bytes(events[:1]) + nmnist_bytes([(0, 240, 0, 0)])
                     + nmnist_bytes(events[1:]))
    ev = read_nmnist(path)
    assert ev["x"].tolist() == [1, 3] and ev["y"].tolist() == [2, 4]
    assert ev["p"].tolist() == [1, 0]
    assert ev["t"].tolist() == [0x7FFFFF, 5 + 2**13]  # + 2**13 after the marker (Orchard's reader)


def test_nmnist_frames_exact(tmp_path):
    write_nmnist(tmp_path)
    ds = get_dataset("nmnist", root=tmp_path, split="train", denoise_us=None)
    assert len(ds) == 3 and [ds[i][1] for i in range(3)] == [3, 7, 7]
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (4, 2, 34, 34) and y == 3
    assert np.array_equal(x.numpy(), expected_frames(EVENTS))
    assert x[0, 1, 0, 0] == 2 and x[1, 0, 5, 33] == 1 and x[1, 1, 33, 2] == 2 and x.sum() == 6
    # second file: events t = 0, 10, 25 -> width 25 // 4 = 6 us; bins 0, 1 (t 10 // 6), 4 -> dropped
    x1 = ds[1][0]
    assert x1.sum() == 2 and x1[0, 1, 0, 0] == 1 and x1[1, 1, 0, 0] == 1
    x2 = get_dataset("nmnist", root=tmp_path, denoise_us=None, time_bins=2)[0][0]
    assert x2.shape == (2, 2, 34, 34)
    assert np.array_equal(x2.numpy(), expected_frames(EVENTS, t_bins=2, width=50))
    big = get_dataset("nmnist", root=tmp_path, denoise_us=None, image_size=64)[0][0]
    assert big.shape == (4, 2, 64, 64) and big.min() >= 0


def test_nmnist_denoise_option(tmp_path):
    # two neighbours firing 1 ms apart survive a 5 ms filter; a lone far pixel at 50 ms does not
    events = [(5, 5, 1, 0), (5, 6, 1, 1000), (20, 20, 0, 50000), (5, 5, 1, 60000)]
    write_nmnist(tmp_path, {1: [events]})
    ev = get_dataset("nmnist", root=tmp_path, denoise_us=5000).events(0)
    assert list(zip(ev["x"].tolist(), ev["t"].tolist(), strict=True)) == [(5, 0), (5, 1000)]
    assert get_dataset("nmnist", root=tmp_path, denoise_us=None).events(0).size == 4
    assert get_dataset("nmnist", root=tmp_path).denoise_us == 10000  # the VQ-VAE's default


def test_denoise_matches_tonic():
    from tonic.functional import denoise_numpy

    rng = np.random.default_rng(1)
    for _ in range(15):
        n = int(rng.integers(1, 200))
        ev = make_events(rng.integers(0, 6, n), rng.integers(0, 5, n),
                         np.sort(rng.integers(0, 20000, n)), rng.integers(0, 2, n))
        ft = float(rng.choice([500, 3000, 10000]))
        assert np.array_equal(denoise(ev, ft), denoise_numpy(ev.copy(), ft))


def test_to_frames_empty_and_hand_counts():
    assert to_frames(make_events([], [], [], []), (3, 2), 5).shape == (5, 2, 2, 3)
    ev = make_events([0, 2, 2, 1], [1, 0, 0, 1], [0, 3, 5, 9], [0, 1, 1, 0])
    f = to_frames(ev, (3, 2), 3)  # width 9 // 3 = 3: bins t 0-2, 3-5, 6-8; t = 9 dropped
    expect = np.zeros((3, 2, 2, 3))
    expect[0, 0, 1, 0] = 1
    expect[1, 1, 0, 2] = 2
    assert np.array_equal(f, expect)


def test_nmnist_errors(tmp_path):
    with pytest.raises(DataError) as err:
        get_dataset("nmnist", root=tmp_path)
    msg = str(err.value)
    assert "nmnist" in msg and "Train/" in msg and ".bin" in msg and str(tmp_path) in msg
    write_nmnist(tmp_path)
    bad = tmp_path / "nmnist" / "Train" / "3" / "00000.bin"
    good = bad.read_bytes()
    bad.write_bytes(good[:-2])
    with pytest.raises(DataError, match="00000.bin") as err:  # refused when the set is opened
        get_dataset("nmnist", root=tmp_path)
    assert "truncated" in str(err.value) and f"{len(good) - 2} bytes" in str(err.value)
    bad.write_bytes(b"")
    with pytest.raises(DataError, match="00000.bin.* is empty"):
        get_dataset("nmnist", root=tmp_path)
    bad.write_bytes(good)
    ds = get_dataset("nmnist", root=tmp_path)
    bad.write_bytes(good[:-2])  # cut after opening: refused when read
    with pytest.raises(DataError, match="truncated"):
        ds[0]
    bad.write_bytes(bytes([0, 240, 0, 0, 0]))  # only an overflow marker: no events
    with pytest.raises(DataError, match="holds no events"):
        ds[0]
    bad.write_bytes(nmnist_bytes([(40, 1, 1, 5)]))  # x outside the 34 x 34 sensor
    with pytest.raises(DataError, match="00000.bin"):
        ds[0]
    with pytest.raises(DataError, match="time_bins"):
        get_dataset("nmnist", root=tmp_path, time_bins=0)
    with pytest.raises(DataError, match="already an event"):
        get_dataset("nmnist", root=tmp_path, saccade=True)


# ----------------------------------------------------------------------------- AEDAT


def aedat2_bytes(raw_events) -> bytes:
    """AEDAT 2.0 from a DVS128: header lines, then big-endian (address, timestamp) uint32 with
    address = y_raw << 8 | x_raw << 1 | off_bit."""
    head = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n# created by a test\r\n"
    body = b"".join(struct.pack(">II", (yr << 8) | (xr << 1) | bit, t)
                    for xr, yr, bit, t in raw_events)
    return head + body


def aedat31_bytes(events) -> bytes:
    """AEDAT 3.1: one polarity packet (type 1, 8-byte events, little-endian) of
    (x, y, p, t, valid) tuples."""
    body = b"".join(struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | v, t)
                    for x, y, p, t, v in events)
    head = struct.pack("<hhiiiiii", 1, 1, 8, 4, 0, len(events), len(events), len(events))
    return b"#!AER-DAT3.1\r\n#Format: RAW\r\n#!END-HEADER\r\n" + head + body


def test_read_aedat2_exact(tmp_path):
    path = tmp_path / "a.aedat"
    # 0x23 = '#' as the first data byte must not be taken for a header line
    raw = [(5, 0x23, 0, 100), (0, 0, 1, 200), (127, 127, 0, 300)]
    path.write_bytes(aedat2_bytes(raw))
    ev = read_aedat(path)
    # spikingjelly's orientation for CIFAR10-DVS: x = 127 - y_raw, y = 127 - x_raw, ON = bit 0
    assert ev["x"].tolist() == [127 - 0x23, 127, 0]
    assert ev["y"].tolist() == [122, 127, 0]
    assert ev["p"].tolist() == [1, 0, 1] and ev["t"].tolist() == [100, 200, 300]
    path.write_bytes(aedat2_bytes(raw)[:-3])
    with pytest.raises(DataError, match="a.aedat"):
        read_aedat(path)
    path.write_bytes(b"\x00\x01 no header")
    with pytest.raises(DataError, match="AER-DAT"):
        read_aedat(path)


def test_read_aedat31_exact(tmp_path):
    path = tmp_path / "b.aedat"
    path.write_bytes(aedat31_bytes([(3, 4, 1, 10, 1), (9, 9, 0, 20, 0), (100, 7, 0, 30, 1)]))
    ev = read_aedat(path)  # the invalid second event is skipped
    assert ev["x"].tolist() == [3, 100] and ev["y"].tolist() == [4, 7]
    assert ev["p"].tolist() == [1, 0] and ev["t"].tolist() == [10, 30]
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="b.aedat"):
        read_aedat(path)


def test_cifar10_dvs_split_and_frames(tmp_path):
    for cls in ("cat", "ship"):
        d = tmp_path / "cifar10_dvs" / cls
        d.mkdir(parents=True)
        for i in range(10):  # natural order: 0, 1, ..., 9 (not 0, 1, 10, ...)
            # events at raw (x=i, y=1) for t 0 and 9, ON; bins of width 9 // 3 = 3
            raw = [(i, 1, 0, 0), (i, 1, 0, 5), (i, 1, 1, 9)]
            (d / f"cifar10_{cls}_{i}.aedat").write_bytes(aedat2_bytes(raw))
    test = get_dataset("cifar10_dvs", root=tmp_path, split="test", time_bins=3, denoise_us=None)
    train = get_dataset("cifar10_dvs", root=tmp_path, split="train", time_bins=3,
                        denoise_us=None)
    assert (len(test), len(train)) == (2, 18)
    # denoised by default (10 ms), as the VQ-VAE's pipeline filters both splits
    assert get_dataset("cifar10_dvs", root=tmp_path, split="test").denoise_us == 10000
    assert [test[i][1] for i in range(2)] == [3, 8]  # cat = 3, ship = 8
    x, _ = test[0]  # file 0 of "cat": raw x 0 -> y = 127, raw y 1 -> x = 126
    assert x.shape == (3, 2, 128, 128) and x.sum() == 2
    assert x[0, 1, 127, 126] == 1 and x[1, 1, 127, 126] == 1
    assert train[0][0][0, 1, 127 - 1, 126] == 1  # train starts at file 1 of "cat"
    with pytest.raises(DataError) as err:
        get_dataset("cifar10_dvs", root=tmp_path / "nothing")
    assert "cifar10_dvs" in str(err.value) and "aedat" in str(err.value)
