"""Monitors: the twin's records in typed arrays, and per-second time series.

Records are the flat rows of :mod:`lab.records` (one per call and feature step, as Ciw
keeps one per customer), appended inside the event loop to typed arrays -- 8 bytes a
number instead of a 32-byte Python float and its list slot -- and turned into a table
once at the end (turns are kept by the agent, :mod:`twin.ai`).

Time series are integrated exactly: busy intervals are added into one-second bins, so
a bin holds busy-seconds and dividing by the capacity gives utilisation.
"""

from __future__ import annotations

from array import array
from collections.abc import Collection, MutableSequence
from typing import Any

import numpy as np
import pandas as pd

from lab.records import CallRecord, StepRecord, arrow_schema, columns
from lab.series import occupancy_per_second

_CALLS = arrow_schema(CallRecord)
#: The call columns the twin fills (the runner adds the replication and the cost).
CALL_FIELDS = columns(CallRecord, without=("replication", "cost_usd"))
STEP_FIELDS = columns(StepRecord, without=("replication",))


def _typecode(name: str) -> str | None:
    """array typecode of a call column: ``d`` floats, ``q`` integers, None for strings."""
    t = _CALLS.field(name).type
    if str(t).startswith("int"):
        return "q"
    if str(t) == "double":
        return "d"
    return None


def trim_ragged(cols: Collection[MutableSequence[Any]]) -> None:
    """Cut every column to the rows all of them have.

    A Ctrl-C can land between two appends of one row: that half-written row is dropped,
    so the columns stay aligned and every finished record is kept.
    """
    n = min((len(c) for c in cols), default=0)
    for c in cols:
        del c[n:]


class CallLog:
    """Finished calls, a typed array (or, for strings, a list of shared strings) per column.

    :meth:`add` takes the values in :data:`CALL_FIELDS` order.
    """

    #: Rows kept as tuples before they go into the columns, a chunk at a time: one list
    #: append per call in the event loop instead of one per column. A small chunk is
    #: moved while its values are still in the cache: at 4,096 rows the move was a
    #: cache miss per value, 0.30 s of a 200,000-call hour; at 256, 0.18 s.
    CHUNK = 256

    def __init__(self) -> None:
        self.cols: list[array[float] | array[int] | list[str | None]] = [
            array(code) if (code := _typecode(name)) else [] for name in CALL_FIELDS]
        self._rows: list[tuple[object, ...]] = []

    def add(self, *values: object) -> None:
        rows = self._rows
        rows.append(values)  # one atomic append: an interruption leaves no half row
        if len(rows) >= self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        rows = self._rows
        n, width = len(rows), len(self.cols)
        if not n:
            return
        if any(len(r) != width for r in rows):
            raise ValueError(f"a call row has not {width} values")
        for col, values in zip(self.cols, zip(*rows, strict=True), strict=True):
            if isinstance(col, array):  # through an array: extend() from a tuple is 4x slower
                col.extend(array(col.typecode, values))
            else:
                col.extend(values)
        del rows[:n]  # last: an interrupted flush is redone whole by complete()

    def __len__(self) -> int:
        return len(self.cols[0]) + len(self._rows)

    def complete(self) -> None:
        """Finish the log: drop what an interrupted flush left ragged, then flush."""
        trim_ragged(self.cols)
        self._flush()

    def fill(self, rows: np.ndarray, **columns: np.ndarray) -> None:
        """Set ``column[rows] = values`` for float columns filled after the fact."""
        for name, values in columns.items():
            col = self.cols[CALL_FIELDS.index(name)]
            assert isinstance(col, array) and col.typecode == "d"
            np.frombuffer(col, dtype=float)[rows] = values

    def column(self, name: str) -> np.ndarray:
        """A numeric column as a numpy view (no copy)."""
        col = self.cols[CALL_FIELDS.index(name)]
        assert isinstance(col, array)
        return np.frombuffer(col, dtype=np.dtype(col.typecode))

    def frame(self, by_call_id: bool = False) -> pd.DataFrame:
        """The calls as a DataFrame; numeric columns are views of the log (no copy).

        ``by_call_id`` puts the rows (logged as calls end) in call id order, column by
        column before the frame exists (cheaper than sorting the frame).
        """
        order = None
        if by_call_id and len(self):
            ids = self.column("call_id")
            if (ids[1:] < ids[:-1]).any():
                order = np.argsort(ids, kind="stable")
        out = {}
        for name, col in zip(CALL_FIELDS, self.cols, strict=True):
            values = (np.frombuffer(col, dtype=np.dtype(col.typecode)) if isinstance(
                col, array) else np.array(col, dtype=object))
            out[name] = values if order is None else values[order]
        return pd.DataFrame(out, copy=False)


class BusyTime:
    """Busy-seconds per one-second bin from [start, end) intervals.

    Intervals are kept (two doubles each) and integrated into the bins by
    :func:`lab.series.occupancy_per_second` every :data:`FOLD` intervals, so memory
    stays flat however many messages a run has.
    """

    FOLD = 65536

    def __init__(self) -> None:
        self.starts: array[float] = array("d")
        self.ends: array[float] = array("d")
        self._bins = np.zeros(0)

    def add(self, start: float, end: float) -> None:
        self.starts.append(start)
        self.ends.append(end)
        if len(self.starts) >= self.FOLD:
            self.fold()

    def add_many(self, starts: np.ndarray, ends: np.ndarray) -> None:
        """Integrate many intervals into the bins at once."""
        if starts.size == 0:
            return
        n = int(np.ceil(ends.max())) + 1
        if n > self._bins.size:
            self._bins = np.concatenate([self._bins, np.zeros(n - self._bins.size)])
        self._bins[:n] += occupancy_per_second(starts, ends, n)

    def fold(self) -> None:
        """Integrate the kept intervals into the bins and forget them."""
        if not self.starts:
            return
        starts = np.frombuffer(self.starts, dtype=float)
        ends = np.frombuffer(self.ends, dtype=float)
        self.add_many(starts, ends)
        del starts, ends
        self.starts, self.ends = array("d"), array("d")

    def array(self, n: int) -> np.ndarray:
        self.fold()
        out = np.zeros(n)
        m = min(n, self._bins.size)
        out[:m] = self._bins[:m]
        return out
