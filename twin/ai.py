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
from collections.abc import Generator
from typing import Any

import numpy as np
import pandas as pd
import simpy

from lab.spec import Deployment
from lab.streams import Streams
from twin.monitors import BusyTime
from twin.network import Link
from twin.pool import FcfsPool

STAGES = ("stt", "llm", "tts")
TURN_COLUMNS = (
    "call_id", "turn", "start_s", "voice_to_voice_ms", "vad_ms", "stt_ms", "llm_ms", "tts_ms",
    "network_ms", "queue_ms", "stt_wait_ms", "llm_wait_ms", "tts_wait_ms",
    "caller_speech_s", "agent_speech_s", "llm_tokens",
)  # fmt: skip


class Stage:
    """One AI provider: an optional FCFS pool of ``concurrency`` slots."""

    def __init__(self, name: str, concurrency: int | None) -> None:
        self.name = name
        self.busy = BusyTime()
        self.pool = FcfsPool(concurrency, self.busy) if concurrency else None
        self.requests = 0

    def start(self, env: simpy.Environment, at: float, hold_s: float
              ) -> Generator[simpy.Event, Any, float]:
        """Request a slot at ``at`` for ``hold_s``; return when service starts."""
        self.requests += 1
        if self.pool is None:
            return at
        if at > env.now:
            yield env.timeout(at - env.now)
        return self.pool.book(max(at, env.now), hold_s)


class Agent:
    """The voice agent of one replication: its media path and its three providers."""

    def __init__(self, dep: Deployment, streams: Streams) -> None:
        ai, media = dep.ai, dep.media
        self.up = Link(dep.network, streams.rng("media.up"))
        self.down = Link(dep.network, streams.rng("media.down"))
        self.ptime_s = media.ptime_ms / 1000.0
        self.jitter_buffer_s = media.jitter_buffer_ms / 1000.0
        self.tokens_per_s = ai.llm.tokens_per_s
        self.stages = {"stt": Stage("stt", ai.stt.concurrency),
                       "llm": Stage("llm", ai.llm.concurrency),
                       "tts": Stage("tts", ai.tts.concurrency)}
        # draws in milliseconds, as the spec gives them
        self.vad_ms = ai.vad_ms.sampler(streams.rng("ai.vad"))
        self.stt_ms = ai.stt.latency_ms.sampler(streams.rng("ai.stt"))
        self.ttft_ms = ai.llm.ttft_ms.sampler(streams.rng("ai.llm.ttft"))
        self.tokens = ai.llm.tokens.sampler(streams.rng("ai.llm.tokens"))
        self.ttfb_ms = ai.tts.ttfb_ms.sampler(streams.rng("ai.tts"))
        # compact columns: ~2 M turns fit in ~250 MB instead of ~2 GB of Python floats
        self.cols: dict[str, array[Any]] = {
            c: array("q" if c in ("call_id", "turn") else "d") for c in TURN_COLUMNS}

    def _media(self, link: Link) -> float:
        """One-way media delay; a lost packet's audio arrives with the next one (one ptime)."""
        d = link.send()
        return (d if d is not None else link.delay_s + self.ptime_s) + self.ptime_s

    def turn(self, env: simpy.Environment, call_id: int, index: int, spoke_until: float,
             caller_speech_s: float, agent_speech_s: float
             ) -> Generator[simpy.Event, Any, float]:
        """Run one turn; return when the agent's reply has finished playing at the caller."""
        stt, llm, tts = self.stages["stt"], self.stages["llm"], self.stages["tts"]
        up = self._media(self.up)
        vad = self.vad_ms() * 0.001
        asked = spoke_until + up + vad
        stt_s = self.stt_ms() * 0.001
        s1 = yield from stt.start(env, asked, stt_s)
        transcript = s1 + stt_s
        ttft, tokens = self.ttft_ms() * 0.001, max(0.0, self.tokens())
        s2 = yield from llm.start(env, transcript, ttft + tokens / self.tokens_per_s)
        first_token = s2 + ttft
        ttfb = self.ttfb_ms() * 0.001
        s3 = yield from tts.start(env, first_token, ttfb)
        down = self._media(self.down) + self.jitter_buffer_s
        heard = s3 + ttfb + down
        waits = (s1 - asked, s2 - transcript, s3 - first_token)
        row = (call_id, index, spoke_until, (heard - spoke_until) * 1e3, vad * 1e3,
               stt_s * 1e3, ttft * 1e3, ttfb * 1e3, (up + down) * 1e3, sum(waits) * 1e3,
               waits[0] * 1e3, waits[1] * 1e3, waits[2] * 1e3, caller_speech_s,
               agent_speech_s, tokens)
        for col, value in zip(self.cols.values(), row, strict=True):
            col.append(value)
        return heard + agent_speech_s

    def usage(self, after_s: float = 0.0) -> dict[str, dict[str, Any]]:
        """Per stage: slots (None = unlimited), requests and busy slot-seconds after ``after_s``."""
        first = int(after_s)
        return {name: {"servers": st.pool.servers if st.pool else None,
                       "requests": st.requests, "busy_s": sum(st.busy.bins[first:])}
                for name, st in self.stages.items()}


def turns_frame(cols: dict[str, array[Any]]) -> pd.DataFrame:
    """The turn columns as a DataFrame (zero-copy views of the arrays)."""
    return pd.DataFrame({k: np.frombuffer(v, dtype=np.int64 if v.typecode == "q" else float)
                         if len(v) else np.empty(0) for k, v in cols.items()})
