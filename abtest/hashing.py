"""Deterministic assignment: FNV-1a 32-bit, GrowthBook hash version 2.

`bucket(seed, id) = fnv1a32(str(fnv1a32(seed + id))) % 10000 / 10000`. The same seed and id give
the same bucket on every machine and in every language that implements the same hash, so an
assignment can be recomputed (and audited) from the seed alone.

`buckets()` is the vectorised form used when an experiment starts: the strings are laid out as a
numpy array of UTF-32 code points and hashed one character column at a time, so 100,000 ids
cost a few dozen numpy passes instead of millions of Python operations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193
BUCKETS = 10_000  # bucket resolution: 0.01% of traffic
_MASK = 0xFFFFFFFF


def fnv1a32(text: str) -> int:
    """FNV-1a over the code points of `text`, modulo 2^32."""
    h = FNV_OFFSET
    for char in text:
        h = ((h ^ ord(char)) * FNV_PRIME) & _MASK
    return h


def bucket_index(seed: str, unit_id: str) -> int:
    """The bucket number in 0..9999 (integer form avoids float edges at range boundaries)."""
    return fnv1a32(str(fnv1a32(seed + unit_id))) % BUCKETS


def bucket(seed: str, unit_id: str) -> float:
    """The position of `unit_id` in [0, 1) for an experiment seeded with `seed`."""
    return bucket_index(seed, unit_id) / BUCKETS


def _fnv1a32_array(texts: np.ndarray) -> np.ndarray:
    """fnv1a32 of every string of a numpy unicode array, as uint64 values below 2^32."""
    n = texts.shape[0]
    width = texts.dtype.itemsize // 4
    if n == 0 or width == 0:
        return np.full(n, FNV_OFFSET, dtype=np.uint64)
    # '<U' arrays store each character as one little-endian UCS-4 code point, zero padded.
    codes = np.ascontiguousarray(texts).view(np.uint32).reshape(n, width).astype(np.uint64)
    lengths = np.char.str_len(texts)
    h = np.full(n, FNV_OFFSET, dtype=np.uint64)
    prime = np.uint64(FNV_PRIME)
    mask = np.uint64(_MASK)
    for col in range(width):
        live = lengths > col  # shorter strings stop hashing at their own end
        stepped = ((h ^ codes[:, col]) * prime) & mask
        h = np.where(live, stepped, h)
    return h


def buckets(seed: str, unit_ids: Sequence[str]) -> np.ndarray:
    """Vectorised `bucket_index` for many ids: int64 array of bucket numbers in 0..9999.

    numpy drops trailing NUL characters of its strings; ids are printable, so this never bites.
    """
    ids = np.asarray(list(unit_ids), dtype=str)
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    first = _fnv1a32_array(np.char.add(seed, ids))
    second = _fnv1a32_array(first.astype(str))
    return (second % np.uint64(BUCKETS)).astype(np.int64)


def arm_boundaries(weights: Sequence[float], holdout_share: float = 0.0) -> np.ndarray:
    """Upper bucket bounds (exclusive) of [holdout?, arm 0, arm 1, ...] over 0..10000.

    The holdout takes [0, holdout) first; the arms split the rest by their cumulative weights.
    """
    w = np.asarray(weights, dtype=float)
    if w.size == 0 or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"arm weights {list(weights)} must be non-negative and not all zero")
    if not 0.0 <= holdout_share < 1.0:
        raise ValueError(f"holdout share {holdout_share} must be in [0, 1)")
    start = round(holdout_share * BUCKETS)
    cumulative = np.cumsum(w / w.sum())
    bounds = start + np.rint(cumulative * (BUCKETS - start)).astype(np.int64)
    bounds[-1] = BUCKETS  # rounding never leaves the last bucket unassigned
    return np.concatenate([[start], bounds]).astype(np.int64)


def groups_for_buckets(bucket_numbers: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """Group index per bucket: 0 = holdout, 1.. = arms in the order of their weights."""
    return np.searchsorted(boundaries, bucket_numbers, side="right")
