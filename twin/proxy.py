"""The SIP proxy (Kamailio-like): a pool of worker processes, one message each at a time.

Kamailio runs ``children`` worker processes per UDP socket; each SIP message
(request or response) occupies one worker for its service time. Messages wait
first come, first served. When the backlog is long a protecting proxy answers
new INVITEs with 503 Service Unavailable instead of queueing them; in-dialog
requests and responses are always queued.

The workers are an exact FCFS pool (:mod:`twin.pool`) booked at arrival time.

Overload (RFC 5390, RFC 6357; Shen, Schulzrinne & Nahum 2008): a 503 is not free.
The proxy must read and parse an INVITE before it can refuse it, so a 503 it
generates occupies a worker for ``reject_cost`` x ``service_ms`` (:meth:`WorkerPool.reject`),
behind whatever is queued; and a retransmission its transaction layer recognises
and absorbs costs ``retransmission_cost`` x ``service_ms`` (:meth:`WorkerPool.absorb`).
Late answers draw retransmissions exactly when the workers are saturated, which is
how SIP over UDP collapses (:mod:`twin.overload` holds the remedies).
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
                 busy: BusyTime, reject_cost: float = 1.0, retransmission_cost: float = 1.0,
                 measure_wait: bool = False) -> None:
        self.workers = workers
        self.service_s = service_s
        self.queue_limit = queue_limit
        self.reject_s = reject_cost * service_s  # a 503 the proxy generates
        self.retransmission_s = retransmission_cost * service_s  # an absorbed copy
        self._free = [0.0] * workers  # heap: when each worker becomes free
        self._queued: deque[float] = deque()  # starts of messages still waiting (queue_limit)
        self.busy = busy
        self._starts: array[float] = array("d")  # service starts not yet in ``busy``
        self._xstarts: array[float] = array("d")  # messages of another service time
        self._xends: array[float] = array("d")
        self.messages = 0
        self.refused = 0
        self.waited = 0
        self.rejects = 0  # 503s the proxy generated (backlog, trunk, media)
        self.absorbed = 0  # retransmissions its transaction layer absorbed
        self.wait_sum_s = 0.0  # queueing delay of the messages since the last reading
        self.wait_n = 0  # (measure_wait: the loss-based overload control reads them)
        if service_s > 0.0 and queue_limit is None:  # the usual proxy: no 503 on backlog
            self.book = self._book_queued  # type: ignore[method-assign]
        if self.retransmission_s == service_s:  # the default: a copy costs a message
            self._absorb_s = None
        else:
            self._absorb_s = self.retransmission_s
        self._measure = measure_wait and service_s > 0.0
        if self._measure:
            self._book_unmeasured = self.book
            self.book = self._book_measured  # type: ignore[method-assign]

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

    def _book_measured(self, now: float, new_call: bool = False) -> float | None:
        """:meth:`book` that also sums the messages' queueing delays (loss-based control)."""
        wait = self._free[0] - now
        fin = self._book_unmeasured(now, new_call)
        if fin is not None:
            self.wait_n += 1
            if wait > 0.0:
                self.wait_sum_s += wait
        return fin

    def serve(self, now: float, service_s: float) -> float:
        """Serve a message of ``service_s`` (not the usual service time) arriving now;
        return when it ends. It queues like any message (never refused)."""
        self.messages += 1
        if service_s <= 0.0:
            return now
        free = self._free
        start = free[0]
        if self._measure:
            self.wait_n += 1
            if start > now:
                self.wait_sum_s += start - now
        if start < now:
            start = now
        elif start > now:
            self.waited += 1
            if self.queue_limit is not None:
                self._queued.append(start)
        finish = start + service_s
        heapreplace(free, finish)
        self._xstarts.append(start)
        self._xends.append(finish)
        if len(self._xstarts) >= BusyTime.FOLD:
            self.flush()
        return finish

    def reject(self, now: float) -> float:
        """A 503 the proxy generates for a message that arrived now; when it is sent.

        It occupies a worker for ``reject_cost`` x ``service_ms``, queued behind the
        backlog like any message (the proxy reads the INVITE before refusing it).
        """
        self.rejects += 1
        return self.serve(now, self.reject_s)

    def absorb(self, now: float) -> float:
        """A retransmission reaching the proxy now, recognised by its transaction and
        absorbed (or answered with the stored response); when its worker is done."""
        self.absorbed += 1
        cost = self._absorb_s
        if cost is None:
            fin = self.book(now)
            assert fin is not None
            return fin
        return self.serve(now, cost)

    def flush(self) -> None:
        """Hand the kept service starts to the busy series."""
        starts = np.frombuffer(self._starts, dtype=float)
        if starts.size:
            self.busy.add_many(starts, starts + self.service_s)
        del starts
        self._starts = array("d")
        xstarts = np.frombuffer(self._xstarts, dtype=float)
        xends = np.frombuffer(self._xends, dtype=float)
        if xstarts.size:
            self.busy.add_many(xstarts, xends)
        del xstarts, xends
        self._xstarts, self._xends = array("d"), array("d")
