"""The AI agent's turn loop: VAD → STT → LLM → TTS, each stage a provider with limited slots.

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
sentence while the rest is generated), and its slot is held for the time to
first byte.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Generator
from typing import Any

import numpy as np
import pandas as pd
import simpy

from lab.spec import Deployment
from lab.streams import Streams
from twin.network import Link
from twin.pool import FcfsPool

STAGES = ("stt", "llm", "tts")
TURN_COLUMNS = (
    "call_id", "turn", "start_s", "voice_to_voice_ms", "vad_ms", "stt_ms", "llm_ms", "tts_ms",
    "network_ms", "queue_ms", "stt_wait_ms", "llm_wait_ms", "tts_wait_ms",
    "caller_speech_s", "agent_speech_s", "llm_tokens", "retries", "failed", "barge_in",
)  # fmt: skip


INT_COLUMNS = ("call_id", "turn", "retries", "failed", "barge_in")


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


class Agent:
    """The voice agent of one replication: its media path and its three providers."""

    def __init__(self, dep: Deployment, streams: Streams, warmup_s: float = 0.0) -> None:
        ai, media = dep.ai, dep.media
        self.up = Link(dep.network, streams.rng("media.up"))
        self.down = Link(dep.network, streams.rng("media.down"))
        self.ptime_s = media.ptime_ms / 1000.0
        self.jitter_buffer_s = media.jitter_buffer_ms / 1000.0
        self.tokens_per_s = ai.llm.tokens_per_s
        self.stages = {name: Stage(name, cfg.concurrency, cfg.rate_limit_rpm, warmup_s)
                       for name, cfg in (("stt", ai.stt), ("llm", ai.llm), ("tts", ai.tts))}
        self.limited = any(st.limit is not None for st in self.stages.values())
        self.retry_base_s = ai.retry_base_ms / 1000.0
        self.max_retries = ai.max_retries
        self._jitter = streams.rng("ai.retry")
        self.turns = 0
        # draws in milliseconds, as the spec gives them
        self.vad_ms = ai.vad_ms.sampler(streams.rng("ai.vad"))
        self.stt_ms = ai.stt.latency_ms.sampler(streams.rng("ai.stt"))
        self.ttft_ms = ai.llm.ttft_ms.sampler(streams.rng("ai.llm.ttft"))
        self.tokens = ai.llm.tokens.sampler(streams.rng("ai.llm.tokens"))
        self.ttfb_ms = ai.tts.ttfb_ms.sampler(streams.rng("ai.tts"))
        # one flat array of doubles, a row of len(TURN_COLUMNS) per turn: ~2 M turns fit in
        # ~300 MB instead of ~2 GB of Python floats, and a row is one extend, not 19 appends
        self.rows: array[float] = array("d")

    def _media(self, link: Link) -> float:
        """One-way media delay; a lost packet's audio arrives with the next one (one ptime)."""
        d = link.send()
        return (d if d is not None else link.delay_s + self.ptime_s) + self.ptime_s

    def turn(self, env: simpy.Environment, call_id: int, index: int, spoke_until: float,
             caller_speech_s: float, agent_speech_s: float, barge_in_s: float | None = None
             ) -> Generator[simpy.Event, Any, float]:
        """Run one turn; return when the caller starts its next utterance.

        That is when the agent's reply has finished playing at the caller — or, if the
        caller barges in ``barge_in_s`` into the reply, right then (the agent falls
        silent once its VAD hears the caller, overlapping the caller's first words).
        """
        if self.limited:
            return (yield from self._turn_limited(env, call_id, index, spoke_until,
                                                  caller_speech_s, agent_speech_s, barge_in_s))
        # The bookings are written out rather than delegated: this is the twin's hottest
        # loop (two million turns in a busy hour), and a provider only costs a
        # simulation event when its slots are capped.
        stt, llm, tts = self.stages["stt"].pool, self.stages["llm"].pool, self.stages["tts"].pool
        up = self._media(self.up)
        vad = self.vad_ms() * 0.001
        asked = spoke_until + up + vad
        stt_s = self.stt_ms() * 0.001
        s1 = asked
        if stt is not None:
            if asked > env.now:
                yield env.timeout(asked - env.now)
            s1 = stt.book(env.now, stt_s)  # now = asked, or later if asked already passed
        transcript = s1 + stt_s
        ttft, tokens = self.ttft_ms() * 0.001, max(0.0, self.tokens())
        s2 = transcript
        if llm is not None:
            if transcript > env.now:
                yield env.timeout(transcript - env.now)
            s2 = llm.book(env.now, ttft + tokens / self.tokens_per_s)
        first_token = s2 + ttft
        ttfb = self.ttfb_ms() * 0.001
        s3 = first_token
        if tts is not None:
            if first_token > env.now:
                yield env.timeout(first_token - env.now)
            s3 = tts.book(env.now, ttfb)
        down = self._media(self.down) + self.jitter_buffer_s
        heard = s3 + ttfb + down
        self._log(call_id, index, spoke_until, heard, vad, stt_s, ttft, ttfb, up + down,
                  (s1 - asked, s2 - transcript, s3 - first_token), caller_speech_s,
                  agent_speech_s, tokens, 0, False, barge_in_s is not None)
        return heard + (agent_speech_s if barge_in_s is None else barge_in_s)

    def _turn_limited(self, env: simpy.Environment, call_id: int, index: int,
                      spoke_until: float, caller_speech_s: float, agent_speech_s: float,
                      barge_in_s: float | None) -> Generator[simpy.Event, Any, float]:
        """The same turn when a provider has a rate limit: 429s, backoff and retries.

        A request still refused after ``max_retries`` makes the agent play a canned
        fallback ("sorry, one moment") without that stage: the turn is ``failed``.
        """
        up = self._media(self.up)
        vad = self.vad_ms() * 0.001
        asked = spoke_until + up + vad
        stt_s = self.stt_ms() * 0.001
        s1, r1, ok1 = yield from self._request(env, self.stages["stt"], asked, stt_s)
        stt_s = stt_s if ok1 else 0.0
        transcript = s1 + stt_s
        ttft, tokens = self.ttft_ms() * 0.001, max(0.0, self.tokens())
        s2, r2, ok2 = yield from self._request(env, self.stages["llm"], transcript,
                                               ttft + tokens / self.tokens_per_s, ok1)
        ttft = ttft if ok2 else 0.0
        first_token = s2 + ttft
        ttfb = self.ttfb_ms() * 0.001
        s3, r3, ok3 = yield from self._request(env, self.stages["tts"], first_token, ttfb,
                                               ok2)
        ttfb = ttfb if ok3 else 0.0
        down = self._media(self.down) + self.jitter_buffer_s
        heard = s3 + ttfb + down
        self._log(call_id, index, spoke_until, heard, vad, stt_s, ttft, ttfb, up + down,
                  (s1 - asked, s2 - transcript, s3 - first_token), caller_speech_s,
                  agent_speech_s, tokens, r1 + r2 + r3, not (ok1 and ok2 and ok3),
                  barge_in_s is not None)
        return heard + (agent_speech_s if barge_in_s is None else barge_in_s)

    def _request(self, env: simpy.Environment, st: Stage, at: float, hold_s: float,
                 needed: bool = True) -> Generator[simpy.Event, Any, tuple[float, int, bool]]:
        """Ask a provider at ``at``; return (service start, retries, served)."""
        if not needed:
            return at, 0, False  # the turn already fell back to the canned reply
        retries, t = 0, at
        while True:
            if t > env.now:
                yield env.timeout(t - env.now)
            now = max(t, env.now)
            if st.limit is None or st.limit.admit(now):
                break
            if retries >= self.max_retries:
                return now, retries, False
            retries += 1
            t = now + float(self._jitter.random()) * self.retry_base_s * 2.0 ** (retries - 1)
        start = st.pool.book(now, hold_s) if st.pool is not None else now
        return start, retries, True

    def _log(self, call_id: int, index: int, spoke_until: float, heard: float, vad: float,
             stt_s: float, ttft: float, ttfb: float, network: float,
             waits: tuple[float, float, float], caller_speech_s: float, agent_speech_s: float,
             tokens: float, retries: int, failed: bool, barged: bool) -> None:
        w1, w2, w3 = waits
        self.rows.extend((call_id, index, spoke_until, (heard - spoke_until) * 1e3, vad * 1e3,
                          stt_s * 1e3, ttft * 1e3, ttfb * 1e3, network * 1e3,
                          (w1 + w2 + w3) * 1e3, w1 * 1e3, w2 * 1e3, w3 * 1e3,
                          caller_speech_s, agent_speech_s, tokens, retries, failed, barged))
        self.turns += 1

    def usage(self) -> dict[str, dict[str, Any]]:
        """Per stage: slots (None = unlimited), requests, busy slot-seconds after warm-up."""
        return {name: {"servers": st.pool.servers if st.pool else None,
                       "requests": self.turns,
                       "busy_s": st.pool.busy_s if st.pool else 0.0}
                for name, st in self.stages.items()}


def turns_frame(rows: array[float]) -> pd.DataFrame:
    """The turn rows as a DataFrame (a zero-copy view of the array, then typed columns)."""
    flat = np.frombuffer(rows, dtype=float) if len(rows) else np.empty(0)
    table = flat.reshape(-1, len(TURN_COLUMNS))
    out = pd.DataFrame(table, columns=list(TURN_COLUMNS))
    for col in INT_COLUMNS:
        out[col] = out[col].astype(np.int64)
    for flag in ("failed", "barge_in"):
        out[flag] = out[flag].astype(bool)
    return out
