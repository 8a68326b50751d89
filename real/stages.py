"""The agent's turn pipeline on real CPU: STT → reply ("LLM") → TTS, with provider slots.

The real counterpart of :mod:`twin.ai`. When the endpointer declares the end of
an utterance, the agent's main thread submits a :class:`TurnJob` to a worker
thread, which runs the three stages in order; each stage first takes a slot of
its provider (``deployment.ai.{stt,llm,tts}.concurrency``; ``null`` = no cap)
and the time spent waiting for slots is the turn's ``queue_ms``. The finished
reply audio goes straight into the call's :class:`real.media_ports.Playout`;
worker threads never call pjsua2.

Slots are shared by every agent process of the pool when a lock directory is
given: slot ``k`` of stage ``s`` is an exclusive ``flock`` on the file ``s.k``,
so a cap of 2 STT requests holds across four agent processes as it would at a
provider. Waiting is a poll (1 ms), so service is close to, not exactly, FCFS.

Times per stage, as logged: ``stt_ms`` the real PocketSphinx decode, ``llm_ms``
the emulated time to first token (or the external endpoint's round trip; see
:mod:`real.reply`), ``tts_ms`` the real eSpeak NG synthesis and resampling. As
in the twin, the LLM slot stays held for ``tokens / tokens_per_s`` after the
first token (the rest of the reply streaming).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from real import reply as replies
from real.media_ports import Playout
from real.stt import Recognizer
from real.tts import fit, synthesize_pcm

POLL_S = 0.001


class Slots:
    """At most ``limit`` holders at once (None: no limit), in-process or pool-wide.

    Parameters
    ----------
    name
        The stage (``stt``, ``llm``, ``tts``): names the lock files.
    limit
        Concurrent holders; None never waits.
    lock_dir
        Share the limit with every process using the same directory (flock files);
        None limits this process only.
    """

    def __init__(self, name: str, limit: int | None, lock_dir: Path | None = None) -> None:
        self.name, self.limit, self.lock_dir = name, limit, lock_dir
        self._sem = threading.BoundedSemaphore(limit) if limit and lock_dir is None else None
        self._paths = ([lock_dir / f"{name}.{k}" for k in range(limit)]
                       if limit and lock_dir is not None else [])
        for p in self._paths:
            p.touch(exist_ok=True)

    def acquire(self) -> tuple[float, Callable[[], None]]:
        """Wait for a slot; ``(seconds waited, release)``."""
        t0 = time.monotonic()
        if self._sem is not None:
            self._sem.acquire()
            return time.monotonic() - t0, self._sem.release
        if not self._paths:
            return 0.0, _nothing
        fds = [os.open(p, os.O_RDWR) for p in self._paths]
        try:
            while True:
                for i, fd in enumerate(fds):
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue
                    for other in fds[:i] + fds[i + 1:]:
                        os.close(other)
                    return time.monotonic() - t0, _closer(fd)
                time.sleep(POLL_S)
        except BaseException:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            raise

    @contextlib.contextmanager
    def held(self) -> Iterator[float]:
        """``with slots.held() as waited_s:`` hold a slot for the block."""
        waited, release = self.acquire()
        try:
            yield waited
        finally:
            release()


def _nothing() -> None:
    return None


def _closer(fd: int) -> Callable[[], None]:
    def release() -> None:
        os.close(fd)  # closing the descriptor drops its flock
    return release


@dataclass
class TurnJob:
    """One endpointed utterance to answer."""

    call_key: int
    sip_call_id: str
    turn: int
    pcm: bytes
    t_end_detected: float
    ttft_ms: float
    tokens: float
    agent_speech_s: float | None
    playout: Playout


class Pipeline:
    """The three stages of one agent process (shared slots, one recogniser).

    Parameters
    ----------
    slots
        ``{"stt": Slots, "llm": Slots, "tts": Slots}``.
    tokens_per_s
        The LLM's streaming rate: its slot is held ``tokens / tokens_per_s`` longer.
    """

    def __init__(self, slots: dict[str, Slots], tokens_per_s: float,
                 recognizer: Recognizer | None = None) -> None:
        self.slots = slots
        self.tokens_per_s = tokens_per_s
        self.recognizer = recognizer or Recognizer()
        self.url = replies.endpoint_url()

    def run(self, job: TurnJob) -> dict[str, Any]:
        """Answer one utterance; returns the turn's measurements (the clip is queued)."""
        rec: dict[str, Any] = {"t_job_start": time.monotonic()}
        waits = {}
        with self.slots["stt"].held() as waits["stt"]:
            t = time.monotonic()
            text = self.recognizer.transcribe(job.pcm)
            rec["stt_ms"] = (time.monotonic() - t) * 1e3
        waited, release = self.slots["llm"].acquire()
        waits["llm"] = waited
        t = time.monotonic()
        answer, error = self._reply(text, job)
        rec["llm_ms"] = (time.monotonic() - t) * 1e3
        streaming_s = max(0.0, job.tokens) / self.tokens_per_s
        if streaming_s > 0:
            threading.Timer(streaming_s, release).start()
        else:
            release()
        with self.slots["tts"].held() as waits["tts"]:
            t = time.monotonic()
            pcm = synthesize_pcm(answer)
            pcm = fit(pcm, job.agent_speech_s)
            rec["tts_ms"] = (time.monotonic() - t) * 1e3
        job.playout.play(("turn", job.turn), np.asarray(pcm, dtype="<i2").tobytes())
        rec["t_queued_for_playout"] = time.monotonic()
        rec.update(
            text=text, keywords=replies.keywords(text), reply=answer,
            queue_ms=sum(waits.values()) * 1e3,
            stt_wait_ms=waits["stt"] * 1e3, llm_wait_ms=waits["llm"] * 1e3,
            tts_wait_ms=waits["tts"] * 1e3, reply_s=len(pcm) / 8000.0,
        )
        if error:
            rec["llm_error"] = error
        return rec

    def _reply(self, text: str, job: TurnJob) -> tuple[str, str | None]:
        if self.url is not None:
            try:
                return replies.http_reply(self.url, text, job.sip_call_id, job.turn), None
            except (OSError, ValueError) as exc:
                return replies.rule_reply(text), type(exc).__name__
        time.sleep(max(0.0, job.ttft_ms) / 1000.0)
        return replies.rule_reply(text), None


def prompt_pcm(digits: str, prompt_s: float | None) -> bytes:
    """The IVR menu prompt for ``digits``, fitted to ``prompt_s`` (natural length if None)."""
    spoken = " ".join(digits.replace("*", " star ").replace("#", " pound ").split())
    text = f"You pressed {spoken}. Please hold while I look that up."
    pcm = fit(synthesize_pcm(text), prompt_s)
    return np.asarray(pcm, dtype="<i2").tobytes()
