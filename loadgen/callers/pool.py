"""The caller pool: pjsua2 caller processes driven over pipes.

pjsua2-python carries at most 4 calls per process and one Endpoint per process,
so concurrency comes from processes: each :class:`UacWorker` is a
``python -m loadgen.callers.worker`` child in its own process group
(:class:`lab.proc.child.ChildProcess`), speaking JSON lines over its stdin/stdout
(:class:`lab.proc.lines.ChildChannel`). The :class:`UacPool` hands each call to
the worker with the fewest calls in progress (ties: the one used least recently),
which also spreads call starts across processes; a worker spaces its own call
starts by ``gap_ms`` because pjsua2 aborts when ~30 calls start within half a
second in one process.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import sys
import time
from pathlib import Path
from typing import Any

from lab.proc.child import ChildProcess
from lab.proc.lines import ChildChannel

CALLS_PER_WORKER = 4
Event = dict[str, Any]


class UacWorker:
    """Parent-side handle of one caller process.

    Parameters
    ----------
    index
        Its number in the pool (names its log, ``uac<index>.log``).
    workdir
        The run's directory; also written on the command line to identify the run.
    deadline
        ``time.monotonic()`` after which the worker hangs up and exits by itself.
    gap_ms
        Minimum spacing of its call starts.
    """

    def __init__(self, index: int, workdir: Path, deadline: float, gap_ms: float) -> None:
        self.index = index
        self.name = f"uac{index}"
        argv = [sys.executable, "-m", "loadgen.callers.worker", "--name", self.name,
                "--deadline", f"{deadline:.3f}", "--gap-ms", str(gap_ms),
                "--run", str(workdir)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = ChildProcess(argv, workdir / f"{self.name}.log", pipes=True, env=env)
        self.channel = ChildChannel(self.proc)
        self.active: set[int] = set()
        self.last_assigned = 0.0
        self.port = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def closed(self) -> bool:
        """True once the worker's event pipe has reached end of file."""
        return self.channel.closed

    def usable(self) -> bool:
        """Running, with its pipe open."""
        return not self.closed and self.proc.alive()

    def send(self, obj: Event) -> None:
        """One command to the worker."""
        self.channel.send(obj)

    def read_events(self) -> list[Event]:
        """Whole JSON lines available now (non-blocking)."""
        return self.channel.read()

    def stop(self) -> None:
        self.proc.stop(grace_s=1.0)


class UacPool:
    """``size`` caller processes on 127.0.0.1.

    Parameters
    ----------
    size
        Number of worker processes (each carries up to 4 calls).
    workdir
        Logs go here (``uac<i>.log``).
    deadline
        ``time.monotonic()`` bound that every worker enforces on its own.
    gap_ms
        Minimum spacing of call starts within one worker.
    """

    def __init__(self, size: int, workdir: Path, deadline: float, gap_ms: float = 20.0
                 ) -> None:
        self.size, self.workdir, self.deadline, self.gap_ms = size, workdir, deadline, gap_ms
        self.workers: list[UacWorker] = []
        self.selector = selectors.DefaultSelector()

    def start(self, ready_timeout_s: float = 20.0) -> None:
        """Start every worker, then wait until each reports ``ready`` with its SIP port."""
        for i in range(self.size):
            worker = UacWorker(i, self.workdir, self.deadline, self.gap_ms)
            self.workers.append(worker)
            self.selector.register(worker.channel.fd, selectors.EVENT_READ, worker)
        end = time.monotonic() + ready_timeout_s
        waiting = set(range(self.size))
        while waiting and time.monotonic() < end:
            for worker, event in self.poll(0.1):
                if event.get("ev") == "ready":
                    worker.port = int(event["port"])
                    waiting.discard(worker.index)
            for i in list(waiting):
                if not self.workers[i].usable():
                    raise RuntimeError(f"UAC worker {i} exited at start; see "
                                       f"{self.workers[i].proc.log_path}")
        if waiting:
            raise RuntimeError(f"UAC workers {sorted(waiting)} not ready after "
                               f"{ready_timeout_s:g} s")

    def free_worker(self) -> UacWorker | None:
        """The worker to take the next call, or None when all slots are busy."""
        free = [w for w in self.workers if len(w.active) < CALLS_PER_WORKER and w.usable()]
        if not free:
            return None
        return min(free, key=lambda w: (len(w.active), w.last_assigned))

    def dial(self, worker: UacWorker, call_id: int, uri: str, hold_s: float, *,
             steps: list[list[Any]] | None = None, relay: dict[str, int] | None = None,
             headers: dict[str, str] | None = None, record: str | None = None) -> None:
        """Have ``worker`` call ``uri`` now.

        Without ``steps`` it hangs up ``hold_s`` after the 200 OK; with them it runs
        the call's script (:func:`loadgen.callers.jobs.job_steps`) and hangs up at its
        end. ``relay`` holds the impairment emulator's ``agent_port``/``caller_port``
        for this call, ``headers`` extra INVITE headers, ``record`` a WAV path for
        what the caller hears.
        """
        worker.active.add(call_id)
        worker.last_assigned = time.monotonic()
        job: Event = {"op": "call", "id": call_id, "uri": uri, "hold_s": hold_s}
        if steps is not None:
            job["steps"] = steps
        if relay is not None:
            job["relay"] = relay
        if headers:
            job["headers"] = headers
        if record:
            job["record"] = record
        worker.send(job)

    def poll(self, timeout_s: float) -> list[tuple[UacWorker, Event]]:
        """Events from any worker, waiting up to ``timeout_s`` for the first."""
        out: list[tuple[UacWorker, Event]] = []
        for key, _ in self.selector.select(max(0.0, timeout_s)):
            worker: UacWorker = key.data
            for event in worker.read_events():
                if event.get("ev") == "done":
                    worker.active.discard(int(event["id"]))
                out.append((worker, event))
            if worker.closed:
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(worker.channel.fd)
        return out

    def busy(self) -> int:
        """Calls in progress over the pool."""
        return sum(len(w.active) for w in self.workers)

    def rss_mb(self) -> list[float]:
        """Resident memory of each worker process, MB."""
        return [round(w.proc.rss_mb(), 1) for w in self.workers]

    def quit(self, drain_s: float = 6.0) -> list[tuple[UacWorker, Event]]:
        """Ask every worker to finish (hang up what is left) and collect its last events."""
        for worker in self.workers:
            with contextlib.suppress(OSError, ValueError):
                worker.send({"op": "quit"})
        out: list[tuple[UacWorker, Event]] = []
        end = time.monotonic() + drain_s
        while time.monotonic() < end and any(not w.closed for w in self.workers):
            out += self.poll(0.05)
        return out

    def stop(self) -> None:
        """Stop every worker process (SIGTERM, then SIGKILL of its group)."""
        for worker in self.workers:
            worker.stop()
        self.selector.close()
