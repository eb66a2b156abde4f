"""The compact storage format of metric sample batches (`samples/v1`)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import numpy.typing as npt

MAGIC = b"S1"
_HEADER = struct.Struct("<2sI")


def _shuffle(a: npt.NDArray[np.generic]) -> bytes:
    # Grouping the n-th byte of every value together turns small deltas into long zero runs.
    return a.view(np.uint8).reshape(-1, a.itemsize).T.tobytes()


def _unshuffle(raw: bytes, n: int, dtype: type[np.generic]) -> npt.NDArray[np.generic]:
    size = np.dtype(dtype).itemsize
    return np.frombuffer(raw, dtype=np.uint8).reshape(size, n).T.copy().view(dtype).reshape(n)


def encode(
    series_ids: npt.NDArray[np.int64], ts_us: npt.NDArray[np.int64], values: npt.NDArray[np.float64]
) -> bytes:
    """Delta-encode ids and timestamps, byte-shuffle all three columns, deflate."""
    n = int(values.shape[0])
    ids_d = np.diff(series_ids, prepend=np.int64(0)).astype("<i8")
    ts_d = np.diff(ts_us, prepend=np.int64(0)).astype("<i8")
    body = _shuffle(ids_d) + _shuffle(ts_d) + _shuffle(values.astype("<f8"))
    return _HEADER.pack(MAGIC, n) + zlib.compress(body, 1)


def decode(
    blob: bytes,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Invert `encode`: (series ids, timestamps in µs, values)."""
    magic, n = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise ValueError("not a samples/v1 blob")
    body = zlib.decompress(blob[_HEADER.size :])
    w = 8 * n
    ids = np.cumsum(_unshuffle(body[:w], n, np.int64), dtype=np.int64)
    ts = np.cumsum(_unshuffle(body[w : 2 * w], n, np.int64), dtype=np.int64)
    # _unshuffle already made a fresh native-order copy: asarray only fixes the static type.
    values = np.asarray(_unshuffle(body[2 * w :], n, np.float64), dtype=np.float64)
    return ids, ts, values
