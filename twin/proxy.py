"""The SIP proxy (Kamailio-like): a pool of worker processes, one message each at a time.

Kamailio runs ``children`` worker processes per UDP socket; each SIP message
(request or response) occupies one worker for its service time. Messages wait
first come, first served. When the backlog is long a protecting proxy answers
new INVITEs with 503 Service Unavailable instead of queueing them; in-dialog
requests and responses are always queued.

The workers are an exact FCFS pool (:mod:`twin.pool`) booked at arrival time.
"""

from __future__ import annotations

from array import array
from collections import deque
from heapq import heapreplace

import numpy as np

from twin.monitors import BusyTime


class WorkerPool:
    """The proxy's workers: an FCFS pool with a fixed service time per message.

    Every SIP message of every call books a worker, so :meth:`book` is the twin's
    hottest function: it is :meth:`twin.pool.FcfsPool.book` written out for a fixed
    service time, keeping only each message's start for the busy series (its end is
    ``start + service_s``). A test holds it to the pool's answers.
    """

    def __init__(self, workers: int, service_s: float, queue_limit: int | None,
                 busy: BusyTime) -> None:
        self.workers = workers
        self.service_s = service_s
        self.queue_limit = queue_limit
        self._free = [0.0] * workers  # heap: when each worker becomes free
        self._queued: deque[float] = deque()  # starts of messages still waiting (queue_limit)
        self.busy = busy
        self._starts: array[float] = array("d")  # service starts not yet in ``busy``
        self.messages = 0
        self.refused = 0
        self.waited = 0
        if service_s > 0.0 and queue_limit is None:  # the usual proxy: no 503 on backlog
            self.book = self._book_queued  # type: ignore[method-assign]

    def backlog(self, now: float) -> int:
        """Messages that arrived but have not started service at ``now``."""
        q = self._queued
        while q and q[0] <= now:
            q.popleft()
        return len(q)

    def book(self, now: float, new_call: bool = False) -> float | None:
        """Serve a message arriving now; return when its service ends.

        Returns None when ``new_call`` (an initial INVITE) meets a full backlog: 503.
        """
        service_s = self.service_s
        if service_s == 0.0:
            self.messages += 1
            return now
        limit = self.queue_limit
        if limit is not None and new_call and self.backlog(now) >= limit:
            self.refused += 1
            return None
        self.messages += 1
        free = self._free
        start = free[0]
        if start < now:
            start = now
        elif start > now:
            self.waited += 1
            if limit is not None:
                self._queued.append(start)
        finish = start + service_s
        heapreplace(free, finish)
        starts = self._starts
        starts.append(start)
        if len(starts) >= BusyTime.FOLD:
            self.flush()
        return finish

    def _book_queued(self, now: float, new_call: bool = False) -> float:
        """:meth:`book` for a proxy that never refuses and takes time per message."""
        self.messages += 1
        free = self._free
        start = free[0]
        if start < now:
            start = now
        elif start > now:
            self.waited += 1
        finish = start + self.service_s
        heapreplace(free, finish)
        starts = self._starts
        starts.append(start)
        if len(starts) >= BusyTime.FOLD:
            self.flush()
        return finish

    def flush(self) -> None:
        """Hand the kept service starts to the busy series."""
        starts = np.frombuffer(self._starts, dtype=float)
        if starts.size:
            self.busy.add_many(starts, starts + self.service_s)
        del starts
        self._starts = array("d")
