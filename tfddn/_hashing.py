"""Deterministic per-key noise: a vectorised splitmix64 hash on numpy uint64 arrays.

`tfddn.marketplace` draws the data noise `z` of a (pair, day) from a hash of its key
instead of a random stream, so every log level and chunking of one seed sees the same
`z` (Zeldes et al. 2018, Sec. 4: one realised CTR per pair and day).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

__all__ = ["hash_columns", "normal_from_hash"]

_U64 = np.uint64


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    z = x + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def hash_columns(seed: int, *columns: np.ndarray) -> np.ndarray:
    """A 64-bit hash per row of equally long integer columns, vectorised."""
    size = len(columns[0])
    h = _splitmix64(np.full(size, seed, dtype=_U64))
    for col in columns:
        h = _splitmix64(h ^ np.asarray(col).astype(np.int64).astype(_U64))
    return h


def normal_from_hash(h: np.ndarray) -> np.ndarray:
    """Maps uint64 hashes to standard normals: top 53 bits -> (0, 1) -> ndtri."""
    u = ((h >> _U64(11)).astype(np.float64) + 0.5) * 2.0 ** -53
    return ndtri(u)
