"""The twin's simulation clock: SimPy's environment plus a calendar for processes that only wait.

Almost every process of the twin -- a call, an absorbed retransmission, an AI turn --
interacts with the shared layers in one way only: it must *be* at a given simulated
time to book a shared resource (a proxy worker, an AI provider slot, a trunk channel;
see :mod:`twin.pool`), and in between it computes times arithmetically. Such a process
never waits for another process, a store or a condition; it only waits for time to pass.

SimPy gives each such wait a :class:`simpy.Timeout`: an event object with a callback
list, scheduled on SimPy's heap, resumed through ``Process._resume``. That is the right
tool for processes that wait on each other, and costs two to three times what the wait
itself needs (``make bench`` measures both). So this environment keeps a second, lighter
calendar for *timeout-only* processes: a generator started with :meth:`start` yields the
delay it wants to wait, as a plain float (where a SimPy process would yield
``env.timeout(delay)``); the value of the ``yield`` expression is the time it resumes at.
The two calendars form one simulation: :meth:`step` always runs the earlier of SimPy's
next event and the calendar's next wake-up (SimPy's first at equal times), so SimPy
processes, resources and stores keep working beside the fast processes, on one clock.

At equal times calendar processes resume in the order they started waiting, as SimPy
timeouts do. A process started with :meth:`start` runs at once up to its first wait.

The calendar is a calendar queue (Brown 1988): wake-ups ``(time, order, process)`` go
into buckets of :data:`BUCKET_S` simulated seconds, unsorted; a bucket is sorted when
the clock reaches it. With ten thousand calls in progress a binary heap of their
wake-ups is deep and scattered in memory, and popping it was a fifth of the twin's time;
appending to a bucket and walking a sorted one is cheaper, and yields the same order.
A process whose next wake-up is due before anything else (a worker's 0.2 ms service
with nothing else due meanwhile) goes on at once, without a trip through the calendar:
the same order, the same times, one wake-up counted.

Example
-------
>>> env = Environment()
>>> log = []
>>> def ring(name, period):
...     while env.now < 3:
...         log.append((name, env.now))
...         yield period
>>> env.start(ring("a", 1.0)); env.start(ring("b", 1.5))
>>> env.run()
>>> log
[('a', 0.0), ('b', 0.0), ('a', 1.0), ('b', 1.5), ('a', 2.0)]
>>> def clock():
...     now = yield 0.25
...     log.append(("clock", now))
>>> env.start(clock()); env.run(); log[-1]
('clock', 3.25)
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Generator
from heapq import heappop, heappush
from itertools import count
from typing import Any

import simpy
from simpy.events import NORMAL

__all__ = ["BUCKET_S", "Environment", "Proc"]

#: A timeout-only process: yields delays in seconds, is sent the time it resumes at.
Proc = Generator[float, float, Any]
Wake = tuple[float, int, Proc]

#: Width of a calendar bucket, simulated seconds (tens of wake-ups a bucket in a busy hour).
BUCKET_S = 0.02
INF = float("inf")


class Environment(simpy.Environment):
    """A :class:`simpy.Environment` that also runs timeout-only processes from a calendar."""

    #: The current time as a plain attribute, kept equal to SimPy's ``_now``: it shadows
    #: SimPy's ``now`` property, read millions of times a run (a property call each).
    now: float = 0.0

    def __init__(self, initial_time: float = 0.0, bucket_s: float = BUCKET_S) -> None:
        super().__init__(initial_time)
        self.now = self._now
        self._per_s = 1.0 / bucket_s
        self._buckets: dict[int, list[Wake]] = {}  # future buckets, unsorted
        self._keys: list[int] = []  # heap of the future buckets' numbers
        self._cur: list[Wake] = []  # the bucket being walked, sorted
        self._pos = 0  # next wake-up in _cur
        self._cur_key = -(2**62)
        self._order = count()
        self.waits = 0  # calendar wake-ups so far
        self.scheduled = 0  # SimPy events scheduled so far

    # ------------------------------------------------------------------ the calendar
    def _push(self, wake: Wake) -> None:
        k = int(wake[0] * self._per_s)
        if k <= self._cur_key:  # due within the bucket being walked
            insort(self._cur, wake, self._pos)
            return
        bucket = self._buckets.get(k)
        if bucket is None:
            self._buckets[k] = [wake]
            heappush(self._keys, k)
        else:
            bucket.append(wake)

    def _next_time(self) -> float:
        """When the calendar's next wake-up is due (inf when it is empty)."""
        if self._pos == len(self._cur):
            if not self._keys:
                return INF
            k = heappop(self._keys)
            cur = self._buckets.pop(k)
            cur.sort()
            self._cur, self._pos, self._cur_key = cur, 0, k
        return self._cur[self._pos][0]

    def start(self, proc: Proc) -> None:
        """Run ``proc`` now, up to its first wait (the running process then goes on)."""
        try:
            delay = next(proc)
        except StopIteration:
            return
        self._push((self.now + delay, next(self._order), proc))

    @property
    def events(self) -> int:
        """Calendar wake-ups plus SimPy events scheduled, so far."""
        return self.waits + self.scheduled

    def schedule(self, event: simpy.Event, priority: int = NORMAL, delay: float = 0) -> None:
        self.scheduled += 1
        self._now = self.now  # the calendar's loop moves only ``now``
        super().schedule(event, priority, delay)  # type: ignore[arg-type]

    def peek(self) -> float:
        """Time of the next wake-up of either calendar (inf when both are empty)."""
        return min(self._next_time(), super().peek())

    def step(self) -> None:
        """Process the earlier of SimPy's next event and the calendar's next wake-up."""
        t = self._next_time()
        if t < INF and (not self._queue or t < self._queue[0][0]):
            self._wake()
        else:
            self._simpy_step()

    def _simpy_step(self) -> None:
        """SimPy's next event; ``now`` moves first, so its callbacks read the new time."""
        if self._queue:
            self.now = self._queue[0][0]
        super().step()

    def _wake(self) -> None:
        t, _, proc = self._cur[self._pos]
        self._pos += 1
        self._now = self.now = t
        self.waits += 1
        try:
            delay = proc.send(t)
        except StopIteration:
            return
        self._push((t + delay, next(self._order), proc))

    def run(self, until: Any = None) -> Any:
        """Run until both calendars are empty (or as :meth:`simpy.Environment.run`)."""
        if until is not None:
            return super().run(until)
        queue, order, per_s = self._queue, self._order, self._per_s
        buckets, keys = self._buckets, self._keys
        waits = 0
        try:
            while True:
                if self._pos == len(self._cur) and self._next_time() == INF:
                    if not queue:
                        return None
                    self._simpy_step()
                    continue
                cur, pos, key = self._cur, self._pos, self._cur_key
                try:
                    while pos < len(cur):  # walk the bucket while SimPy has nothing earlier
                        t, _, proc = cur[pos]
                        if queue and queue[0][0] <= t:
                            break
                        pos += 1
                        # self._pos may lag behind pos here: a process starting another
                        # one inserts it after everything due by now, past pos either way
                        while True:
                            self.now = t  # SimPy's _now follows in schedule()
                            waits += 1
                            try:
                                delay = proc.send(t)
                            except StopIteration:
                                break
                            due = t + delay
                            k = int(due * per_s)
                            if k <= key:
                                if ((pos == len(cur) or due < cur[pos][0])
                                        and not (queue and queue[0][0] <= due)):
                                    t = due  # nothing else is due before it: go on at once
                                    continue
                                insort(cur, (due, next(order), proc), pos)
                            elif (bucket := buckets.get(k)) is None:
                                buckets[k] = [(due, next(order), proc)]
                                heappush(keys, k)
                            else:
                                bucket.append((due, next(order), proc))
                            break
                finally:
                    self._pos = pos
                    self._now = self.now
                if pos < len(cur):
                    self._simpy_step()
        finally:
            self.waits += waits
