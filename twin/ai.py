"""The AI agent's turn pipeline: VAD → STT → LLM → TTS, each stage a provider with limited slots.

One conversational turn, as the caller lives it::

    caller stops speaking
      └─ audio reaches the agent            network up + packetisation (one ptime)
         └─ VAD declares end of speech      endpointing delay (vad_ms)
            └─ STT final transcript         queue for a slot, then latency_ms
               └─ LLM first token           queue for a slot, then ttft_ms
                  │                         (the slot stays held while the rest
                  │                          of the reply streams: tokens / tokens_per_s)
                  └─ TTS first audio byte   queue for a slot, then ttfb_ms
                     └─ heard by the caller network down + packetisation + jitter buffer

Voice-to-voice latency is the whole chain: caller stops speaking → first agent
audio at the caller's ear. Each provider with a ``concurrency`` cap is an FCFS
pool (:mod:`twin.pool`) — with exponential service times that is an M/M/c queue,
whose wait is Erlang C. ``concurrency: null`` means the provider never queues.
The TTS starts on the LLM's first tokens (streaming pipelines speak the first
sentence while the rest is generated), and its slot is held for the time to first
byte. A provider over its ``rate_limit_rpm`` answers 429: the agent backs off (full
jitter, exponential) and retries, and after ``max_retries`` plays a canned fallback
without that stage (the turn is ``failed``). A caller may barge in: the turn then ends
``barge_in_s`` into the reply, when the agent's VAD hears the caller and it falls silent.

Random numbers: every turn's own draws -- endpointing, STT latency, time to first
token, tokens, time to first byte, media delay each way -- are drawn up front, in turn
order, each quantity from its own named stream (:class:`TurnInputs`). A turn's draws
therefore never depend on the order in which the simulation happens to serve turns:
the same seed gives every turn the same latencies whatever the providers' caps, so
comparing two deployments compares the deployments, not two samples (common random
numbers, Law & Kelton ch. 11).

How it runs: a call's run of consecutive turns is a *conversation*
(:meth:`Pipeline.converse`). With no rate limit, the conversations' requests to capped
providers are served by :class:`twin.lanes.Lanes` in arrival order, a window at a time,
without a simulation wait per request; otherwise each conversation is a timeout-only
process that waits where it books (:meth:`Pipeline._converse`). Both give the same
results; tests check it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lab.plan import CallPlan
from lab.spec import Deployment
from lab.streams import Streams
from twin.environment import Environment
from twin.pool import FcfsPool
from twin.turns import TurnInputs, TurnRuns

STAGES = ("stt", "llm", "tts")
#: Shortest lookahead for which the lanes serve requests (their window is the shortest
#: time from a turn's start to its STT request: none arrives sooner after it is known).
MIN_LOOKAHEAD_S = 1e-3


class RateLimit:
    """A provider's requests-per-minute cap over a sliding 60 s window (then 429)."""

    def __init__(self, rpm: float) -> None:
        self.rpm = rpm
        self._recent: deque[float] = deque()
        self.refused = 0

    def admit(self, now: float) -> bool:
        recent = self._recent
        while recent and recent[0] <= now - 60.0:
            recent.popleft()
        if len(recent) >= self.rpm:
            self.refused += 1
            return False
        recent.append(now)
        return True


class Stage:
    """One AI provider: an optional FCFS pool of ``concurrency`` slots, an optional RPM cap."""

    def __init__(self, name: str, concurrency: int | None, rpm: float | None,
                 count_from_s: float) -> None:
        self.name = name
        self.pool = FcfsPool(concurrency, count_from_s=count_from_s) if concurrency else None
        self.limit = RateLimit(rpm) if rpm else None


class Pipeline:
    """The voice agent of one replication: its providers, its turns' inputs and results.

    Results are kept per turn ``g`` in arrays: when the caller stopped speaking
    (``spoke``), when each stage started (``s1``, ``s2``, ``s3``), when the reply was
    heard (``heard``), retries, whether a stage failed, and whether the turn ran.
    """

    def __init__(self, env: Environment, dep: Deployment, streams: Streams,
                 plan: Sequence[CallPlan], warmup_s: float = 0.0) -> None:
        ai = dep.ai
        self.env = env
        self.jitter_buffer_s = dep.media.jitter_buffer_ms / 1000.0
        self.tokens_per_s = ai.llm.tokens_per_s
        self.stages = {name: Stage(name, cfg.concurrency, cfg.rate_limit_rpm, warmup_s)
                       for name, cfg in (("stt", ai.stt), ("llm", ai.llm), ("tts", ai.tts))}
        self.limited = any(st.limit is not None for st in self.stages.values())
        self.retry_base_s = ai.retry_base_ms / 1000.0
        self.max_retries = ai.max_retries
        self._jitter = streams.rng("ai.retry")
        self.runs = TurnRuns(plan)
        self.inputs = TurnInputs(plan, self.runs, dep, streams)
        n = self.inputs.n
        self.spoke, self.s1, self.s2, self.s3, self.heard = (np.full(n, math.nan)
                                                             for _ in range(5))
        self.done = np.zeros(n, dtype=bool)
        self.retries = np.zeros(n, dtype=np.int32) if self.limited else None
        self.failed = np.zeros(n, dtype=bool) if self.limited else None
        self.lanes: Any = None
        if not self.limited and self.inputs.lookahead_s >= MIN_LOOKAHEAD_S:
            from twin.lanes import Lanes

            self.lanes = Lanes(self, self.inputs.lookahead_s)

    @property
    def turns(self) -> int:
        return int(self.done.sum())

    def converse(self, g0: int, n: int, t: float, on_end: Callable[[float], None]) -> None:
        """Start the turns ``g0 .. g0 + n - 1`` of one call: the caller starts speaking at
        ``t``; ``on_end(t_end)`` is called (at ``t_end``, or at once if that has passed)
        when the caller starts talking again after the last turn."""
        if self.lanes is not None:
            self.lanes.submit(g0, n, t, on_end)
        else:
            self.env.start(self._converse(g0, n, t, on_end))

    # ------------------------------------------------------------------ one process per call
    def _converse(self, g0: int, n: int, t: float, on_end: Callable[[float], None]
                  ) -> Generator[float, float, None]:
        """The conversation as a process that waits for each capped provider."""
        for g in range(g0, g0 + n):
            t = yield from self._turn(g, t)
        if t > self.env.now:
            yield t - self.env.now
        on_end(t)

    def _turn(self, g: int, t: float) -> Generator[float, float, float]:
        inp = self.inputs
        spoke = t + float(inp.caller_s[g])
        asked = spoke + float(inp.up_s[g]) + float(inp.vad_ms[g]) * 0.001
        stt_s = float(inp.stt_ms[g]) * 0.001
        s1, r1, ok1 = yield from self._request(self.stages["stt"], asked, stt_s)
        transcript = s1 + (stt_s if ok1 else 0.0)
        ttft = float(inp.ttft_ms[g]) * 0.001
        hold = ttft + float(inp.tokens[g]) / self.tokens_per_s
        s2, r2, ok2 = yield from self._request(self.stages["llm"], transcript, hold, ok1)
        first_token = s2 + (ttft if ok2 else 0.0)
        ttfb = float(inp.ttfb_ms[g]) * 0.001
        s3, r3, ok3 = yield from self._request(self.stages["tts"], first_token, ttfb, ok2)
        heard = s3 + (ttfb if ok3 else 0.0) + (float(inp.down_s[g]) + self.jitter_buffer_s)
        self.spoke[g], self.s1[g], self.s2[g], self.s3[g], self.heard[g] = (
            spoke, s1, s2, s3, heard)
        if self.retries is not None and self.failed is not None:
            self.retries[g] = r1 + r2 + r3
            self.failed[g] = not (ok1 and ok2 and ok3)
            for ok, col in ((ok1, inp.stt_ms), (ok2, inp.ttft_ms), (ok3, inp.ttfb_ms)):
                if not ok:
                    col[g] = 0.0  # the stage did not run: it took no time
        self.done[g] = True  # last: a turn an interruption cuts short is not kept
        barge = float(inp.barge_s[g])
        return heard + (barge if barge == barge else float(inp.agent_s[g]))

    def _request(self, st: Stage, at: float, hold_s: float, needed: bool = True
                 ) -> Generator[float, float, tuple[float, int, bool]]:
        """Ask a provider at ``at``; return (service start, retries, served)."""
        if not needed:
            return at, 0, False  # the turn already fell back to the canned reply
        if st.pool is None and st.limit is None:
            return at, 0, True
        env = self.env
        retries, t = 0, at
        while True:
            if t > env.now:
                yield t - env.now
            if st.limit is None or st.limit.admit(t):
                break
            if retries >= self.max_retries:
                return t, retries, False
            retries += 1
            t = t + float(self._jitter.random()) * self.retry_base_s * 2.0 ** (retries - 1)
        start = st.pool.book(t, hold_s) if st.pool is not None else t
        return start, retries, True

    # ------------------------------------------------------------------ results
    def frame_columns(self) -> dict[str, NDArray[Any]]:
        """The turns that ran, as the columns of :class:`lab.records.TurnRecord`.

        When every planned turn ran (the usual case) the input columns are the table's
        columns as they are, not copies; the per-stage start times are given up as the
        waits are derived from them, so a busy hour's turns are in memory about once.
        """
        inp, done = self.inputs, self.done
        every = bool(done.all())

        def ran(a: NDArray[Any]) -> NDArray[Any]:
            return a if every else a[done]

        call_of, step, _ = self.runs.numbering()
        call_of, step = ran(call_of), ran(step).astype(np.int32)
        spoke, up, vad, stt, ttft, ttfb = (ran(a) for a in (
            self.spoke, inp.up_s, inp.vad_ms, inp.stt_ms, inp.ttft_ms, inp.ttfb_ms))
        s1, s2 = ran(self.s1), ran(self.s2)
        w1 = s1 - (spoke + up + vad * 0.001)
        w2 = s2 - (s1 + stt * 0.001)
        del s1
        self.s1 = np.empty(0)
        w3 = ran(self.s3) - (s2 + ttft * 0.001)
        del s2
        self.s2 = self.s3 = np.empty(0)
        v2v = (ran(self.heard) - spoke) * 1e3
        self.heard = np.empty(0)
        network = (up + (ran(inp.down_s) + self.jitter_buffer_s)) * 1e3
        inp.up_s = inp.down_s = np.empty(0)
        del up
        queue = (w1 + w2 + w3) * 1e3
        for w in (w1, w2, w3):
            w *= 1e3  # in place: the same values as w * 1e3
        n = spoke.size
        failed = ran(self.failed) if self.failed is not None else np.zeros(n, bool)
        cause = np.full(n, "", dtype=object)  # one shared str object, not one per turn
        cause[failed] = "retries_exhausted"
        return {
            "call_id": call_of, "turn": step,
            "voice_to_voice_ms": v2v, "vad_ms": vad, "stt_ms": stt,
            "llm_ms": ttft, "tts_ms": ttfb, "network_ms": network,
            "queue_ms": queue, "start_s": spoke,
            "stt_wait_ms": w1, "llm_wait_ms": w2, "tts_wait_ms": w3,
            "caller_speech_s": ran(inp.caller_s), "agent_speech_s": ran(inp.agent_s),
            "llm_tokens": ran(inp.tokens),
            "retries": ran(self.retries) if self.retries is not None else np.zeros(
                n, dtype=np.int32),
            "failed": failed,
            "barge_in": ~np.isnan(ran(inp.barge_s)),
            # a stage refused with 429 until its retries ran out (canned fallback)
            "cause": cause,
        }

    def usage(self) -> dict[str, dict[str, Any]]:
        """Per stage: slots (None = unlimited), requests, busy slot-seconds after warm-up."""
        n = self.turns
        return {name: {"servers": st.pool.servers if st.pool else None, "requests": n,
                       "busy_s": st.pool.busy_s if st.pool else 0.0}
                for name, st in self.stages.items()}
