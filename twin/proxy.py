"""The SIP proxy (Kamailio-like): a pool of worker processes, one message each at a time.

Kamailio runs ``children`` worker processes per UDP socket; each SIP message
(request or response) occupies one worker for its service time. Messages wait
first come, first served. When the backlog is long a protecting proxy answers
new INVITEs with 503 Service Unavailable instead of queueing them; in-dialog
requests and responses are always queued.

The workers are an exact FCFS pool (:mod:`twin.pool`) booked at arrival time.
"""

from __future__ import annotations

from twin.monitors import BusyTime
from twin.pool import FcfsPool


class WorkerPool:
    """The proxy's workers: an FCFS pool with a fixed service time per message."""

    def __init__(self, workers: int, service_s: float, queue_limit: int | None,
                 busy: BusyTime) -> None:
        self.workers = workers
        self.service_s = service_s
        self.queue_limit = queue_limit
        self._pool = FcfsPool(workers, busy, track_backlog=queue_limit is not None)
        self.messages = 0
        self.refused = 0

    def backlog(self, now: float) -> int:
        """Messages that arrived but have not started service at ``now``."""
        return self._pool.backlog(now)

    def book(self, now: float, new_call: bool = False) -> float | None:
        """Serve a message arriving now; return when its service ends.

        Returns None when ``new_call`` (an initial INVITE) meets a full backlog: 503.
        """
        self.messages += 1
        if self.service_s == 0.0:
            return now
        if new_call and self.queue_limit is not None and self.backlog(now) >= self.queue_limit:
            self.refused += 1
            self.messages -= 1
            return None
        return self._pool.book(now, self.service_s) + self.service_s
