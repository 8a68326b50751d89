"""Per-second series from event times and intervals, integrated exactly."""

from __future__ import annotations

import numpy as np


def occupancy_per_second(starts: np.ndarray, ends: np.ndarray, n: int) -> np.ndarray:
    """Time-average number of open intervals in each one-second bin (exact integration)."""
    if n <= 0:
        return np.zeros(0)
    diff = np.zeros(n + 2)
    # whole seconds covered: +1 from ceil(start) to floor(end)
    s = np.asarray(starts, float)
    e = np.asarray(ends, float)
    out = np.zeros(n)
    lo = np.ceil(s).astype(int)
    hi = np.floor(e).astype(int)
    full = hi > lo
    np.add.at(diff, np.clip(lo[full], 0, n + 1), 1.0)
    np.add.at(diff, np.clip(hi[full], 0, n + 1), -1.0)
    out += np.cumsum(diff)[:n]
    # partial seconds at both ends
    same = np.floor(s) == np.floor(e)
    bs = np.floor(s).astype(int)
    be = np.floor(e).astype(int)
    ok = same & (bs < n) & (bs >= 0)
    np.add.at(out, bs[ok], (e - s)[ok])
    head = ~same & (bs < n) & (bs >= 0)
    np.add.at(out, bs[head], (np.minimum(lo, e) - s)[head])
    tail = ~same & (be < n) & (be >= 0) & (e > hi)
    np.add.at(out, be[tail], (e - hi)[tail])
    return out


def count_per_second(times: np.ndarray, n: int) -> np.ndarray:
    """How many events fall in each one-second bin."""
    idx = np.floor(np.asarray(times, float)).astype(int)
    idx = idx[(idx >= 0) & (idx < n)]
    return np.bincount(idx, minlength=n)[:n].astype(np.int64)
