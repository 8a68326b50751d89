"""The caller side: a pool of pjsua2 UAC worker processes, driven over pipes.

pjsua2-python carries at most 4 calls per process and one Endpoint per process,
so concurrency comes from processes: each :class:`UacWorker` is a
``python -m real.uac_worker`` child (see that module) in its own process group,
speaking JSON lines over its stdin/stdout. The :class:`UacPool` hands each call
to the worker with the fewest calls in progress (ties: the one used least
recently), which also spreads call starts across processes; a worker spaces its
own call starts by ``gap_ms`` because pjsua2 aborts when ~30 calls start within
half a second in one process.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import sys
import time
from pathlib import Path
from typing import Any

from lab.plan import CallPlan, Dtmf, Message, OnHold, Talk, Transfer, Turn
from real.process import ChildProcess

CALLS_PER_WORKER = 4


class PromptBook:
    """The caller's spoken prompts: one WAV per planned utterance length (10 ms steps).

    Speech is espeak-ng's (via :mod:`real.tts`), synthesised once per run and cut to
    each length, followed by the trailing silence the agent's endpointer needs.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._speech: Any = None

    def prompt(self, seconds: float) -> tuple[str, int]:
        """``(wav path, speech ms)`` of an utterance of ``seconds``."""
        import numpy as np

        from real import tts

        ms = max(10, round(seconds * 100) * 10)
        path = self.directory / f"caller_{ms:06d}ms.wav"
        if not path.exists():
            if self._speech is None:
                self._speech = tts.synthesize_pcm(tts.CALLER_TEXT, 8000)
            speech = self._speech
            need = round(ms * 8)
            if speech.size < need:
                speech = np.tile(speech, need // speech.size + 1)
            pcm = np.concatenate([tts.fit(speech, ms / 1000.0, 8000), np.zeros(
                round(tts.TRAILING_SILENCE_S * 8000), dtype=np.int16)])
            self.directory.mkdir(parents=True, exist_ok=True)
            tts.write_wav(path, pcm, 8000)
        return str(path), ms


def job_steps(plan: CallPlan, prompts: PromptBook | None) -> list[list[Any]]:
    """The call's script as the worker's JSON steps (times in ms, see :mod:`real.uac_worker`).

    Without ``prompts`` a turn is a silent wait of its planned length (no speech).
    """
    out: list[list[Any]] = []
    for step in plan.steps:
        if isinstance(step, Talk):
            out.append(["talk", step.hold_s * 1000.0])
        elif isinstance(step, Turn):
            if prompts is None:
                out.append(["talk", (step.caller_speech_s + step.agent_speech_s) * 1000.0])
                continue
            wav, speech_ms = prompts.prompt(step.caller_speech_s)
            out.append(["turn", step.caller_speech_s * 1000.0, step.agent_speech_s * 1000.0,
                        wav, speech_ms])
        elif isinstance(step, Dtmf):
            out.append(["dtmf", step.digits, step.prompt_s * 1000.0])
        elif isinstance(step, Message):
            out.append(["msg", step.text])
        elif isinstance(step, OnHold):
            out.append(["hold", step.hold_s * 1000.0])
        elif isinstance(step, Transfer):
            out.append(["xfer", step.target, step.talk_s * 1000.0])
    return out


class UacWorker:
    """Parent-side handle of one UAC worker process.

    Parameters
    ----------
    index
        Its number in the pool (names its log, ``uac<index>.log``).
    workdir
        The run's directory; also written on the command line to identify the run.
    deadline
        ``time.monotonic()`` after which the worker hangs up and exits by itself.
    """

    def __init__(self, index: int, workdir: Path, deadline: float, gap_ms: float) -> None:
        self.index = index
        self.name = f"uac{index}"
        argv = [sys.executable, "-m", "real.uac_worker", "--name", self.name,
                "--deadline", f"{deadline:.3f}", "--gap-ms", str(gap_ms),
                "--run", str(workdir)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = ChildProcess(argv, workdir / f"{self.name}.log", pipes=True, env=env)
        assert self.proc.popen.stdout is not None and self.proc.popen.stdin is not None
        self.out_fd = self.proc.popen.stdout.fileno()
        os.set_blocking(self.out_fd, False)
        self._buf = bytearray()
        self.active: set[int] = set()
        self.last_assigned = 0.0
        self.port = 0
        self.closed = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, obj: dict[str, Any]) -> None:
        stdin = self.proc.popen.stdin
        assert stdin is not None
        stdin.write((json.dumps(obj) + "\n").encode())
        stdin.flush()

    def read_events(self) -> list[dict[str, Any]]:
        """Whole JSON lines available now (non-blocking); marks the worker closed at EOF."""
        while True:
            try:
                chunk = os.read(self.out_fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.closed = True
                break
            self._buf.extend(chunk)
        events = []
        while b"\n" in self._buf:
            line, _, rest = bytes(self._buf).partition(b"\n")
            self._buf[:] = rest
            if line.strip():
                events.append(json.loads(line))
        return events

    def stop(self) -> None:
        self.proc.stop(grace_s=1.0)


class UacPool:
    """``size`` UAC workers on 127.0.0.1.

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
            self.selector.register(worker.out_fd, selectors.EVENT_READ, worker)
        end = time.monotonic() + ready_timeout_s
        waiting = set(range(self.size))
        while waiting and time.monotonic() < end:
            for worker, event in self.poll(0.1):
                if event.get("ev") == "ready":
                    worker.port = int(event["port"])
                    waiting.discard(worker.index)
            for i in list(waiting):
                if self.workers[i].closed or not self.workers[i].proc.alive():
                    raise RuntimeError(f"UAC worker {i} exited at start; see "
                                       f"{self.workers[i].proc.log_path}")
        if waiting:
            raise RuntimeError(f"UAC workers {sorted(waiting)} not ready after "
                               f"{ready_timeout_s:g} s")

    def free_worker(self) -> UacWorker | None:
        """The worker to take the next call, or None when all slots are busy."""
        free = [w for w in self.workers
                if len(w.active) < CALLS_PER_WORKER and not w.closed and w.proc.alive()]
        if not free:
            return None
        return min(free, key=lambda w: (len(w.active), w.last_assigned))

    def dial(self, worker: UacWorker, call_id: int, uri: str, hold_s: float, *,
             steps: list[list[Any]] | None = None, relay: dict[str, int] | None = None,
             headers: dict[str, str] | None = None, record: str | None = None) -> None:
        """Have ``worker`` call ``uri`` now.

        Without ``steps`` it hangs up ``hold_s`` after the 200 OK; with them it runs
        the call's script (see :mod:`real.uac_worker`) and hangs up at its end.
        ``relay`` holds the RTP relay's ``agent_port``/``caller_port`` for this call,
        ``headers`` extra INVITE headers, ``record`` a WAV path for what the caller hears.
        """
        worker.active.add(call_id)
        worker.last_assigned = time.monotonic()
        job: dict[str, Any] = {"op": "call", "id": call_id, "uri": uri, "hold_s": hold_s}
        if steps is not None:
            job["steps"] = steps
        if relay is not None:
            job["relay"] = relay
        if headers:
            job["headers"] = headers
        if record:
            job["record"] = record
        worker.send(job)

    def poll(self, timeout_s: float) -> list[tuple[UacWorker, dict[str, Any]]]:
        """Events from any worker, waiting up to ``timeout_s`` for the first."""
        out: list[tuple[UacWorker, dict[str, Any]]] = []
        for key, _ in self.selector.select(max(0.0, timeout_s)):
            worker: UacWorker = key.data
            for event in worker.read_events():
                if event.get("ev") == "done":
                    worker.active.discard(int(event["id"]))
                out.append((worker, event))
            if worker.closed:
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(worker.out_fd)
        return out

    def busy(self) -> int:
        return sum(len(w.active) for w in self.workers)

    def rss_mb(self) -> list[float]:
        """Resident memory of each worker process, MB."""
        return [round(w.proc.rss_mb(), 1) for w in self.workers]

    def quit(self, drain_s: float = 6.0) -> list[tuple[UacWorker, dict[str, Any]]]:
        """Ask every worker to finish (hang up what is left) and collect its last events."""
        for worker in self.workers:
            with contextlib.suppress(OSError, ValueError):
                worker.send({"op": "quit"})
        out: list[tuple[UacWorker, dict[str, Any]]] = []
        end = time.monotonic() + drain_s
        while time.monotonic() < end and any(not w.closed for w in self.workers):
            out += self.poll(0.05)
        return out

    def stop(self) -> None:
        """Stop every worker process (SIGTERM, then SIGKILL of its group)."""
        for worker in self.workers:
            worker.stop()
        self.selector.close()
