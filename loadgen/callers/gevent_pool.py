"""The caller pool inside a Locust process: pjsua2 caller processes read by greenlets.

Locust runs on gevent, which monkey-patches sockets, pipes and sleeps so that one
OS thread serves every user. pjsua2's own threads and its blocking C calls cannot
be patched: a pjsua2 Endpoint in a Locust process would stall every user. So the
Locust process never loads pjsua2; it starts the same caller processes as the real
backend (``python -m loadgen.callers.worker``, :class:`loadgen.callers.pool.UacWorker`,
at most 4 calls each) and talks to them over their pipes, one reader greenlet per
process waiting on its stdout (:func:`gevent.socket.wait_read`) so no user ever
blocks the hub.

A Locust user asks for a call with :meth:`GeventCallerPool.call`: the pool picks the
process with the fewest calls (starting a new one when every slot is taken), sends
the job, and parks the user's greenlet on an :class:`gevent.event.AsyncResult`
until the process reports the call ``done``; ``on_done`` sees every report, also
of calls whose user has been stopped meanwhile.

Import this module only in a gevent (Locust) process.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.socket

from loadgen.callers.pool import CALLS_PER_WORKER, UacWorker

Event = dict[str, Any]


class GeventCallerPool:
    """Caller processes started on demand, each carrying up to 4 calls.

    Parameters
    ----------
    workdir
        The processes' logs (``uac<i>.log``).
    deadline
        ``time.monotonic()`` at which every process hangs up and exits by itself.
    on_done
        Called (in a greenlet of its own) with ``(meta, event)`` for every finished
        call: ``meta`` as given to :meth:`call`, ``event`` the ``done`` event.
    gap_ms
        Minimum spacing of call starts within one process.
    """

    def __init__(self, workdir: Path, deadline: float,
                 on_done: Callable[[dict[str, Any], Event], None] | None = None,
                 gap_ms: float = 20.0) -> None:
        self.workdir, self.deadline, self.gap_ms = workdir, deadline, gap_ms
        self.on_done = on_done
        self.workers: list[UacWorker] = []
        self.ready: dict[int, gevent.event.Event] = {}
        self.waiting: dict[int, gevent.event.AsyncResult] = {}
        self.meta: dict[int, dict[str, Any]] = {}
        self.readers: list[gevent.Greenlet] = []
        self.slot_freed = gevent.event.Event()
        self.closed = False
        self.started = self.started_done = 0  # processes whose start began / returned
        self.wanting = 0  # callers waiting for a slot

    def _start_worker(self) -> UacWorker:
        index = self.started  # counted first: starting the process lets other greenlets run
        self.started += 1
        self.ready[index] = gevent.event.Event()
        try:
            worker = UacWorker(index, self.workdir, self.deadline, self.gap_ms)
        finally:
            self.started_done += 1
        self.workers.append(worker)
        self.readers.append(gevent.spawn(self._read, worker))
        return worker

    def short(self) -> bool:
        """Fewer slots (in live or starting processes) than calls up and callers waiting."""
        processes = (self.started - self.started_done) + sum(w.usable() for w in self.workers)
        demand = sum(len(w.active) for w in self.workers) + self.wanting
        return processes * CALLS_PER_WORKER < demand

    def _read(self, worker: UacWorker) -> None:
        """The reader greenlet of one process: its events, until its pipe closes."""
        while not worker.closed:
            with contextlib.suppress(OSError, ValueError):
                gevent.socket.wait_read(worker.channel.fd, timeout=1.0)
            try:
                events = worker.read_events()
            except (OSError, ValueError):
                break
            for event in events:
                if event.get("ev") == "ready":
                    worker.port = int(event["port"])
                    self.ready[worker.index].set()
                    self.slot_freed.set()
                elif event.get("ev") == "done":
                    self._done(worker, event)
            if not worker.proc.alive() and not events:
                break
        for call_id in list(worker.active):  # the process is gone: its calls with it
            self._done(worker, {"ev": "done", "id": call_id,
                                "error": f"caller {worker.name} exited"})
        self.slot_freed.set()

    def _done(self, worker: UacWorker, event: Event) -> None:
        call_id = int(event["id"])
        worker.active.discard(call_id)
        meta = self.meta.pop(call_id, {})
        if self.on_done is not None:
            self.on_done(meta, event)
        result = self.waiting.pop(call_id, None)
        if result is not None:
            result.set(event)
        self.slot_freed.set()

    def _free(self) -> UacWorker | None:
        live = [w for w in self.workers if w.usable() and self.ready[w.index].is_set()]
        free = [w for w in live if len(w.active) < CALLS_PER_WORKER]
        return min(free, key=lambda w: (len(w.active), w.last_assigned)) if free else None

    def _slot(self, timeout_s: float) -> UacWorker:
        """A process with a free slot; a new one starts when every slot is taken."""
        end = time.monotonic() + timeout_s
        self.wanting += 1
        try:
            while (worker := self._free()) is None:
                if self.closed:
                    raise RuntimeError("the caller pool is closed")
                if time.monotonic() > end:
                    raise RuntimeError("no caller slot became free")
                if self.short():
                    self._start_worker()
                    continue
                self.slot_freed.clear()
                self.slot_freed.wait(min(1.0, max(0.0, end - time.monotonic())))
        finally:
            self.wanting -= 1
        return worker

    def call(self, call_id: int, uri: str, hold_s: float, *, timeout_s: float,
             meta: dict[str, Any] | None = None, job: dict[str, Any] | None = None) -> Event:
        """Place call ``call_id`` to ``uri`` and wait for its ``done`` event.

        ``job`` holds the worker's optional job fields (``steps``, ``relay``,
        ``headers``, ``record``; :meth:`loadgen.callers.pool.UacPool.dial`). Past
        ``timeout_s`` the event says ``error`` (the call may still end later; its
        report then still reaches ``on_done``).
        """
        worker = self._slot(timeout_s)
        worker.active.add(call_id)
        worker.last_assigned = time.monotonic()
        self.meta[call_id] = dict(meta or {})
        result = gevent.event.AsyncResult()
        self.waiting[call_id] = result
        worker.send({"op": "call", "id": call_id, "uri": uri, "hold_s": hold_s, **(job or {})})
        try:
            event: Event = result.get(timeout=timeout_s)
        except gevent.Timeout:
            self.waiting.pop(call_id, None)
            return {"ev": "done", "id": call_id, "error": "no report in time"}
        return event

    def quit(self, drain_s: float = 8.0) -> None:
        """Ask every process to finish its calls and leave; wait up to ``drain_s``."""
        self.closed = True
        for worker in self.workers:
            with contextlib.suppress(OSError, ValueError):
                worker.send({"op": "quit"})
        gevent.joinall(self.readers, timeout=drain_s)

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL of its group)."""
        self.closed = True
        for worker in self.workers:
            worker.stop()
        gevent.killall(self.readers, timeout=2.0)
