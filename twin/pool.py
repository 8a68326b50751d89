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

from twin.monitors import BusyTime


class FcfsPool:
    """``servers`` servers in FCFS order; waits, busy time and backlog are tracked."""

    def __init__(self, servers: int, busy: BusyTime | None = None,
                 count_from_s: float = 0.0, track_backlog: bool = False) -> None:
        self.servers = servers
        self.track_backlog = track_backlog  # only a pool that refuses on backlog needs it
        self._free = [0.0] * servers  # heap: when each server becomes free
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

    def book_many(self, arrivals: list[float], services: list[float]) -> list[float]:
        """Book jobs in the order given (their arrival order): what :meth:`book` would
        return for each, and the same waits and busy time, in one tight loop."""
        if self.busy is not None or self.track_backlog:
            raise ValueError("book_many: only for pools without a busy series or backlog")
        free, c = self._free, self.count_from_s
        starts: list[float] = []
        push = starts.append
        waited, busy_s = self.waited, self.busy_s
        for now, service_s in zip(arrivals, services, strict=True):
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
        return starts
