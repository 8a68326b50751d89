"""The SIP proxy (Kamailio-like): a pool of worker processes, one message each at a time.

Kamailio runs ``children`` worker processes per UDP socket; each SIP message
(request or response) occupies one worker for its service time. Messages wait
first come, first served. When the backlog is long a protecting proxy answers
new INVITEs with 503 Service Unavailable instead of queueing them; in-dialog
requests and responses are always queued.

The pool is exact FCFS with ``c`` servers kept as a heap of the times each worker
becomes free: a message arriving at ``a`` starts at ``max(a, earliest free)``.
That needs no simulation events of its own — the caller's process only has to be
at time ``a`` when it books — which is what makes the twin fast
(``../shared/PERF-NOTES.md``: yield only where a call touches a shared resource).
"""

from __future__ import annotations

import heapq
from collections import deque

from twin.monitors import BusyTime


class WorkerPool:
    """FCFS multi-server pool booked at arrival time."""

    def __init__(self, workers: int, service_s: float, queue_limit: int | None,
                 busy: BusyTime) -> None:
        self.workers = workers
        self.service_s = service_s
        self.queue_limit = queue_limit
        self._free = [0.0] * workers  # heap of the times each worker becomes free
        self._queued_starts: deque[float] = deque()  # start times of messages still waiting
        self._busy = busy
        self.messages = 0
        self.refused = 0

    def backlog(self, now: float) -> int:
        """Messages that arrived but have not started service at ``now``."""
        q = self._queued_starts
        while q and q[0] <= now:
            q.popleft()
        return len(q)

    def book(self, now: float, new_call: bool = False) -> float | None:
        """Serve a message arriving now; return when its service ends.

        Returns None when ``new_call`` (an initial INVITE) meets a full backlog: 503.
        """
        if self.service_s == 0.0:
            self.messages += 1
            return now
        if new_call and self.queue_limit is not None and self.backlog(now) >= self.queue_limit:
            self.refused += 1
            return None
        start = self._free[0]
        if start < now:
            start = now
        finish = start + self.service_s
        heapq.heapreplace(self._free, finish)
        if start > now:
            self._queued_starts.append(start)
        self._busy.add(start, finish)
        self.messages += 1
        return finish
