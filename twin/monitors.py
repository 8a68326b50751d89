"""Monitors: per-call records in columns and per-second time series.

Records are kept as columns of plain Python lists (one flat record per call, as
Ciw does), cheap to append inside the event loop and turned into a table once.
Time series are integrated exactly: busy intervals are added into one-second
bins, so a bin holds busy-seconds and dividing by the capacity gives utilisation.
"""

from __future__ import annotations

import numpy as np

CALL_COLUMNS = (
    "call_id", "scenario", "source_ip", "start_s", "outcome", "final_code", "rejected_by",
    "setup_ms", "pdd_ms", "invite_tx", "duration_s", "end_s", "turns", "admit_s", "release_s",
    "mos", "rtp_loss", "mouth_to_ear_ms",
)  # fmt: skip


class CallLog:
    """Columns of finished calls."""

    def __init__(self) -> None:
        self.cols: dict[str, list[object]] = {c: [] for c in CALL_COLUMNS}

    def add(self, **rec: object) -> None:
        for key, col in self.cols.items():
            col.append(rec.get(key))

    def __len__(self) -> int:
        return len(self.cols["call_id"])


class BusyTime:
    """Busy-seconds per one-second bin from [start, end) intervals."""

    def __init__(self) -> None:
        self.bins: list[float] = []

    def add(self, start: float, end: float) -> None:
        bins = self.bins
        i = int(start)
        last = int(end)
        if last >= len(bins):
            bins.extend([0.0] * (last + 1 - len(bins)))
        if i == last:
            bins[i] += end - start
            return
        bins[i] += i + 1 - start
        for k in range(i + 1, last):
            bins[k] += 1.0
        bins[last] += end - last

    def array(self, n: int) -> np.ndarray:
        out = np.zeros(n)
        m = min(n, len(self.bins))
        out[:m] = self.bins[:m]
        return out

