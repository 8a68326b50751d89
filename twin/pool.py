"""A first-come-first-served pool of ``c`` identical servers, booked at arrival time.

This is the G/G/c queue in its plainest exact form (Kiefer–Wolfowitz): keep the
times at which each server becomes free in a heap; a job arriving at ``a`` with
service ``s`` starts at ``max(a, earliest free)`` and frees that server at
``start + s``. Booking needs no simulation events of its own — the caller's
process only has to *be* at time ``a`` when it books, so that jobs are booked
in arrival order — which is what keeps the twin fast (PERF-NOTES: yield only
where a call touches a shared resource). Proxy workers and AI provider
concurrency slots are both such pools.
"""

from __future__ import annotations

from collections import deque
from heapq import heapreplace

import numpy as np
from numpy.typing import NDArray

from twin.monitors import BusyTime


class FcfsPool:
    """``servers`` servers in FCFS order; waits, busy time and backlog are tracked."""

    def __init__(self, servers: int, busy: BusyTime | None = None,
                 count_from_s: float = 0.0, track_backlog: bool = False) -> None:
        self.servers = servers
        self.track_backlog = track_backlog  # only a pool that refuses on backlog needs it
        self._free = [0.0] * servers  # heap: when each server becomes free
        self._sorted: NDArray[np.float64] | None = None  # or those times sorted (book_many)
        self._skip = 0
        self._queued_starts: deque[float] = deque()  # start times of jobs still waiting
        self.busy = busy  # per-second busy time, when a time series is wanted
        self._busy_add = busy.add if busy is not None else None
        self.count_from_s = count_from_s
        self.busy_s = 0.0  # busy server-seconds after count_from_s
        self.jobs = 0
        self.waited = 0

    def backlog(self, now: float) -> int:
        """Jobs that arrived by ``now`` but have not started service (``track_backlog``)."""
        q = self._queued_starts
        while q and q[0] <= now:
            q.popleft()
        return len(q)

    def book(self, now: float, service_s: float) -> float:
        """Book a job arriving at ``now`` (the current simulated time); return its start."""
        if self._sorted is not None:  # a sorted list is a heap
            self._free, self._sorted = self._sorted.tolist(), None
        free = self._free
        start = free[0]
        if start < now:
            start = now
        elif start > now:
            if self.track_backlog:
                self._queued_starts.append(start)
            self.waited += 1
        finish = start + service_s
        heapreplace(free, finish)
        if self._busy_add is not None:
            self._busy_add(start, finish)
        c = self.count_from_s
        if finish > c:
            self.busy_s += finish - (start if start > c else c)
        self.jobs += 1
        return start

    def book_many(self, arrivals: NDArray[np.float64], services: NDArray[np.float64]
                  ) -> NDArray[np.float64]:
        """Book jobs in the order given (their arrival order): the starts :meth:`book`
        would return for each, with the same waits and busy time.

        Most windows of a pool with head-room have no job that waits; that is checked
        over the arrays (:meth:`_none_wait`) and such jobs start on arrival without a
        heap operation each. From the first job that would wait, the rest are booked
        one by one on the heap, in one tight loop.
        """
        if self.busy is not None or self.track_backlog:
            raise ValueError("book_many: only for pools without a busy series or backlog")
        m = arrivals.size
        if not m:
            return np.empty(0)
        if m < self.BATCH_MIN:  # the array check costs more than it saves
            n = 0
        elif self._skip:  # a recent window had waits early on: go straight to the loop
            self._skip -= 1
            n = 0
        else:
            n = self._none_wait(arrivals, services)
            if n == m:
                return arrivals.copy()
            if n < m // 2:
                self._skip = self.SKIP
        if self._sorted is not None:  # a sorted list is a heap
            self._free, self._sorted = self._sorted.tolist(), None
        free, c = self._free, self.count_from_s
        starts: list[float] = []
        push = starts.append
        waited, busy_s = self.waited, self.busy_s
        for now, service_s in zip(arrivals[n:].tolist(), services[n:].tolist(), strict=True):
            start = free[0]
            if start < now:
                start = now
            elif start > now:
                waited += 1
            finish = start + service_s
            heapreplace(free, finish)
            if finish > c:
                busy_s += finish - (start if start > c else c)
            push(start)
        self.waited, self.busy_s = waited, busy_s
        self.jobs += len(starts)
        return np.concatenate((arrivals[:n], starts)) if n else np.array(starts)

    #: windows booked one by one after a window whose jobs waited early on
    SKIP = 16
    #: fewer jobs than this are booked one by one (numpy's per-call cost)
    BATCH_MIN = 48

    def _none_wait(self, arrivals: NDArray[np.float64], services: NDArray[np.float64]
                   ) -> int:
        """Book the longest leading run of jobs that start on arrival; return its length.

        Job ``n`` (from 0) of a run in which none waited starts on arrival iff a server
        is free by then: iff at least ``n + 1`` of the server-free times before the run
        and the run's finishes ``a + s`` are ``<= a[n]`` (a job's own finish and later
        ones are later than ``a[n]`` when services are positive). Each job replaced the
        earliest free time, all of them earlier than any finish of the run, so the
        servers are then free at the ``c`` latest of those times.
        """
        if not services.min() > 0.0:
            return 0
        if self._sorted is None:
            self._sorted = np.sort(np.array(self._free))
        free = self._sorted
        finish = arrivals + services
        free_by = (np.searchsorted(free, arrivals, "right")
                   + np.searchsorted(np.sort(finish), arrivals, "right"))
        ok = free_by > np.arange(arrivals.size)
        n = arrivals.size if ok.all() else int(ok.argmin())
        if n:
            merged = np.concatenate((free, finish[:n]))
            merged.sort()
            self._sorted = merged[-self.servers:]
            c = self.count_from_s
            self.busy_s += float(np.maximum(finish[:n] - np.maximum(arrivals[:n], c),
                                            0.0).sum())
            self.jobs += n
        return n
