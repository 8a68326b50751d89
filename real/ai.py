"""AI turns on real CPU: the voice agent's turn pipeline, and its join with the caller's ear.

The real counterpart of :mod:`twin.ai`. A turn is the caller speaking, the agent
deciding the caller has stopped (VAD endpointing, :mod:`real.vad`), transcribing
(STT, :mod:`real.stt`), thinking of a reply (the "LLM", :mod:`real.reply`) and
speaking it (TTS, :mod:`real.tts`). The agent is half-duplex: caller audio during
its own turn is not listened to (no barge-in).

The pipeline
------------
When the endpointer declares the end of an utterance, the agent's main thread
(:class:`Conversation`, one per call) submits a :class:`TurnJob` to a worker
thread, which runs the three stages in order (:class:`Pipeline`); each stage first
takes a slot of its provider (``deployment.ai.{stt,llm,tts}.concurrency``; ``null``
= no cap) and the time spent waiting for slots is the turn's ``queue_ms``. The
finished reply audio goes straight into the call's
:class:`real.media_ports.Playout`; worker threads never call pjsua2.

Slots are shared by every agent process of the pool when a lock directory is
given: slot ``k`` of stage ``s`` is an exclusive ``flock`` on the file ``s.k``,
so a cap of 2 STT requests holds across four agent processes as it would at a
provider. Waiting is a poll (1 ms), so service is close to, not exactly, FCFS.

Times per stage, as logged: ``stt_ms`` the real PocketSphinx decode, ``llm_ms``
the emulated time to first token (or the external endpoint's round trip; see
:mod:`real.reply`), ``tts_ms`` the real eSpeak NG synthesis and resampling. As
in the twin, the LLM slot stays held for ``tokens / tokens_per_s`` after the
first token (the rest of the reply streaming). The agent draws ``vad_ms``,
``ttft_ms`` and ``tokens`` from named streams ``real.agent.<name>.ai.*``
(:class:`Draws`).

The join
--------
Voice-to-voice latency is what the caller hears: from the end of its own speech to
the first audible frame of the agent's reply, both stamped by the caller process
(:mod:`loadgen.callers.turns`). The agent logs, per turn, where its share of that
time went -- ``vad_ms`` (the endpointer's hangover), ``stt_ms``, ``llm_ms``,
``tts_ms`` and ``queue_ms``. Both sides stamp ``time.monotonic()``, one clock for
every process of the machine, and name the turn by the plan's call id (the
``X-Siplab-Plan`` header, :mod:`real.plan_header`) and its index in the call, so
:func:`turn_rows` needs no translation. Whatever the agent's stages do not explain
is ``network_ms``: the media path both ways (RTP packetisation, the impairment
emulator, the caller's jitter buffer) and the VAD's own detection lag -- the
twin's ``network_ms`` plus what a real endpointer adds. A turn the agent never
answered keeps its row, with NaN parts, ``failed = True`` and ``cause = "no_reply"``
when no reply was heard; a turn whose external LLM request failed is ``failed`` with
``cause = "llm.<cause>"`` (:func:`real.reply.error_cause`) though the canned reply
was heard.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import fcntl
import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.proc.lines import read_file
from lab.records import LLM_CAUSE, NO_REPLY
from lab.spec import Ai
from lab.streams import Streams
from real import reply as replies
from real.tts import prompt_pcm, reply_pcm

if TYPE_CHECKING:
    from real.media_ports import Playout
    from real.stt import Recognizer
    from real.vad import Endpointer

POLL_S = 0.001
RATE_HZ = 8000
PARTS = ("vad_ms", "stt_ms", "llm_ms", "tts_ms", "queue_ms")
WAITS = ("stt_wait_ms", "llm_wait_ms", "tts_wait_ms")
AgentTurns = dict[tuple[int, int], dict[str, Any]]
Pending = tuple[str, int, "cf.Future[Any]", dict[str, Any]]  # kind, index, job, info


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
        if recognizer is None:  # PocketSphinx and scipy: the agent's, not the coordinator's
            from real.stt import Recognizer

            recognizer = Recognizer()
        self.recognizer = recognizer
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
            pcm = reply_pcm(answer, job.agent_speech_s)
            rec["tts_ms"] = (time.monotonic() - t) * 1e3
        job.playout.play(("turn", job.turn), pcm)
        rec["t_queued_for_playout"] = time.monotonic()
        rec.update(
            text=text, keywords=replies.keywords(text), reply=answer,
            queue_ms=sum(waits.values()) * 1e3,
            stt_wait_ms=waits["stt"] * 1e3, llm_wait_ms=waits["llm"] * 1e3,
            tts_wait_ms=waits["tts"] * 1e3, reply_s=len(pcm) / (2 * RATE_HZ),
        )
        if error:
            rec["llm_error"] = error
        return rec

    def prompt(self, playout: Playout, clip: Any, digits: str, prompt_s: float | None
               ) -> dict[str, Any]:
        """Speak the IVR menu prompt for ``digits`` (in a TTS slot) into ``playout``,
        interrupting whatever it plays; returns ``tts_ms``, ``queue_ms``, ``t_job_start``."""
        t = time.monotonic()
        with self.slots["tts"].held() as waited:
            t1 = time.monotonic()
            pcm = prompt_pcm(digits, prompt_s)
            tts_ms = (time.monotonic() - t1) * 1e3
        playout.play(clip, pcm, interrupt=True)
        return {"tts_ms": tts_ms, "queue_ms": waited * 1e3, "t_job_start": t}

    def _reply(self, text: str, job: TurnJob) -> tuple[str, str | None]:
        if self.url is not None:
            try:
                return replies.http_reply(self.url, text, job.sip_call_id, job.turn), None
            except Exception as exc:  # any failure: the canned reply is spoken, the turn counted
                return replies.rule_reply(text), replies.error_cause(exc)
        time.sleep(max(0.0, job.ttft_ms) / 1000.0)
        return replies.rule_reply(text), None


class Draws:
    """The agent process's random draws, one named stream each (``real.agent.<name>.ai.*``)."""

    def __init__(self, ai: Ai, name: str, seed: int) -> None:
        streams = Streams(seed)
        self._vad = ai.vad_ms.sampler(streams.rng(f"real.agent.{name}.ai.vad"))
        self._ttft = ai.llm.ttft_ms.sampler(streams.rng(f"real.agent.{name}.ai.llm.ttft"))
        self._tokens = ai.llm.tokens.sampler(streams.rng(f"real.agent.{name}.ai.llm.tokens"))

    def vad_ms(self) -> float:
        """The endpointer's hangover for the next utterance (at least one 20 ms frame)."""
        return max(20.0, float(self._vad()))

    def ttft_ms(self) -> float:
        return float(self._ttft())

    def tokens(self) -> float:
        return float(self._tokens())


class AgentAI:
    """The AI side of one agent process: the pipeline, its threads and its draws.

    Parameters
    ----------
    ai
        ``deployment.ai``.
    name, seed
        Name the process's random streams.
    lock_dir
        Shares the providers' slots with the other agent processes (see :class:`Slots`).
    threads
        Worker threads for the stages (two per call the process carries).
    endpointer
        Makes a fresh endpointer for a ``vad_ms`` (:class:`real.vad.Endpointer`).
    """

    def __init__(self, ai: Ai, name: str, seed: int, lock_dir: Path | None, threads: int,
                 endpointer: Callable[[float], Endpointer]) -> None:
        self.draws = Draws(ai, name, seed)
        self.pipeline = Pipeline({s: Slots(s, getattr(ai, s).concurrency, lock_dir)
                                  for s in ("stt", "llm", "tts")}, ai.llm.tokens_per_s)
        self.pipeline.recognizer.warm_up(2)
        self.executor = cf.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stage")
        self.endpointer = endpointer

    def conversation(self, key: int, turn_plan: list[tuple[float, float]], playout: Playout
                     ) -> Conversation:
        """The turn-taking of a new call."""
        return Conversation(self, key, turn_plan, playout)

    def shutdown(self) -> None:
        """Let running stages finish; drop queued ones."""
        self.executor.shutdown(wait=True, cancel_futures=True)


class Conversation:
    """One call's turn-taking at the agent (main thread): listen, endpoint, answer, play.

    ``busy`` while a reply or IVR prompt is being produced or played: the agent
    does not listen then (half-duplex).
    """

    def __init__(self, ai: AgentAI, key: int, turn_plan: list[tuple[float, float]],
                 playout: Playout) -> None:
        self.ai, self.key, self.turn_plan, self.playout = ai, key, turn_plan, playout
        self.endpointer = ai.endpointer(ai.draws.vad_ms())
        self.turn = 0
        self.busy = False
        self.pending: list[Pending] = []
        self.replies_done = 0
        self.prompts_done = 0

    def listen(self, inbox: deque[tuple[float, bytes]], held: bool, sip_call_id: str) -> None:
        """Feed the caller's frames to the endpointer; start a turn when one ends."""
        while inbox:
            t, frame = inbox.popleft()
            if self.busy or held:
                continue
            utt = self.endpointer.feed(frame, t)
            if utt is None:
                continue
            planned = self.turn_plan[self.turn][1] if self.turn < len(self.turn_plan) else None
            draws = self.ai.draws
            job = TurnJob(self.key, sip_call_id, self.turn, utt.pcm, utt.t_end_detected,
                          draws.ttft_ms(), draws.tokens(), planned, self.playout)
            info = {"turn": self.turn, "t_speech_start": utt.t_start,
                    "t_last_speech": utt.t_last_speech,
                    "t_end_of_speech_detected": utt.t_end_detected,
                    "vad_ms": self.endpointer.vad_ms, "planned_agent_speech_s": planned,
                    "llm_tokens": job.tokens}
            fut = self.ai.executor.submit(self.ai.pipeline.run, job)
            self.pending.append(("turn", self.turn, fut, info))
            self.turn += 1
            self.busy = True
            self.endpointer = self.ai.endpointer(draws.vad_ms())
            inbox.clear()

    def prompt(self, step: int, digits: str, prompt_s: float | None, info: dict[str, Any]
               ) -> None:
        """Speak the IVR menu prompt of DTMF step ``step`` (interrupting any reply)."""
        fut = self.ai.executor.submit(self.ai.pipeline.prompt, self.playout, ("prompt", step),
                                      digits, prompt_s)
        self.pending.append(("prompt", step, fut, info))
        self.busy = True

    def collect(self) -> list[tuple[str, dict[str, Any]]]:
        """Finished turns and prompts whose first frame has been played, as log records
        ``(ev, fields)``: ``turn``, ``prompt``, or ``error`` for a stage that raised."""
        out: list[tuple[str, dict[str, Any]]] = []
        keep = []
        for kind, k, fut, info in self.pending:
            started = self.playout.started.get((kind, k))
            if not fut.done() or started is None:
                if fut.done() and fut.exception() is not None:
                    out.append(("error", {"what": kind, "index": k,
                                          "error": repr(fut.exception())}))
                    continue
                keep.append((kind, k, fut, info))
                continue
            rec = {**info, **fut.result()}
            if kind == "turn":
                rec["t_reply_start"] = started
                rec["agent_ms"] = (started - info["t_end_of_speech_detected"]) * 1e3
            else:
                rec["t_prompt_start"] = started
            out.append((kind, rec))
        self.pending = keep
        if not self.pending and not self.playout.busy:
            # idle: every clip that started has been played out (``finished`` is only
            # stamped at the media tick after a clip's last frame, so count ``started``)
            played = list(self.playout.started)
            self.replies_done = sum(1 for c in played if c[0] == "turn")
            self.prompts_done = sum(1 for c in played if c[0] == "prompt")
            self.busy = False
        return out


def agent_turns(workdir: Path) -> AgentTurns:
    """The voice agents' turn records (``agent<k>.jsonl``, ``ev: "turn"``) of a run,
    keyed by (plan call id, turn index)."""
    out: AgentTurns = {}
    for path in sorted(Path(workdir).glob("agent*.jsonl")):
        for rec in read_file(path):
            if rec.get("ev") != "turn":
                continue
            if rec.get("call") is not None and rec.get("turn") is not None:
                out[(int(rec["call"]), int(rec["turn"]))] = rec
    return out


class AgentTurnLog:
    """The voice agents' turn records of a run as they are written, read incrementally.

    Each agent flushes a record per line (``agent<k>.jsonl``); :meth:`update` reads
    only what was appended since the last call (a partial last line waits for its
    newline), so the coordinator can join a call's turns the moment the call ends.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.turns: AgentTurns = {}
        self._pos: dict[Path, int] = {}
        self._part: dict[Path, bytes] = {}

    def update(self) -> AgentTurns:
        """Every turn record logged so far, keyed by (plan call id, turn index)."""
        for path in sorted(self.workdir.glob("agent*.jsonl")):
            try:
                with path.open("rb") as fh:
                    fh.seek(self._pos.get(path, 0))
                    data = fh.read()
            except OSError:
                continue
            self._pos[path] = self._pos.get(path, 0) + len(data)
            *lines, self._part[path] = (self._part.get(path, b"") + data).split(b"\n")
            for line in lines:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if (isinstance(rec, dict) and rec.get("ev") == "turn"
                        and rec.get("call") is not None and rec.get("turn") is not None):
                    self.turns[(int(rec["call"]), int(rec["turn"]))] = rec
        return self.turns


def _num(value: Any) -> float:
    return float(value) if value is not None else math.nan


def turn_row(caller: dict[str, Any], agent: dict[str, Any] | None, run_start: float
             ) -> dict[str, Any]:
    """One turns.parquet row from the caller's turn and the agent's record of it.

    Parameters
    ----------
    caller
        The caller's turn: ``call_id``, ``turn``, ``t_speech_end``,
        ``voice_to_voice_ms`` (None when no reply was heard), ``caller_speech_s``,
        ``agent_speech_s``.
    agent
        The agent's ``turn`` record, or None.
    run_start
        ``time.monotonic()`` of the run's time 0.
    """
    a = agent or {}
    v2v = _num(caller.get("voice_to_voice_ms"))
    parts = {k: _num(a.get(k)) for k in PARTS}
    network = v2v - sum(parts.values())  # NaN unless every part is known
    cause = f"{LLM_CAUSE}{a['llm_error']}" if a.get("llm_error") else (
        NO_REPLY if math.isnan(v2v) else "")
    return {
        "call_id": int(caller["call_id"]), "turn": int(caller["turn"]),
        "start_s": float(caller["t_speech_end"]) - run_start,
        "voice_to_voice_ms": v2v, **parts, "network_ms": network,
        **{k: _num(a.get(k)) for k in WAITS},
        "caller_speech_s": float(caller["caller_speech_s"]),
        "agent_speech_s": float(caller["agent_speech_s"]),
        "llm_tokens": _num(a.get("llm_tokens")),
        "retries": 0, "failed": bool(cause), "barge_in": False, "cause": cause,
    }


def turn_rows(caller_turns: list[dict[str, Any]], workdir: Path, run_start: float
              ) -> list[dict[str, Any]]:
    """Every caller turn joined to the agent's record of it (by plan call id, turn)."""
    agent = agent_turns(workdir)
    return [turn_row(t, agent.get((int(t["call_id"]), int(t["turn"]))), run_start)
            for t in caller_turns]
