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

    def __init__(self, name: str, concurrency: int | None, count_from_s: float) -> None:
        self.name = name
        self.pool = FcfsPool(concurrency, count_from_s=count_from_s) if concurrency else None


class Agent:
    """The voice agent of one replication: its media path and its three providers."""

    def __init__(self, dep: Deployment, streams: Streams, warmup_s: float = 0.0) -> None:
        ai, media = dep.ai, dep.media
        self.up = Link(dep.network, streams.rng("media.up"))
        self.down = Link(dep.network, streams.rng("media.down"))
        self.ptime_s = media.ptime_ms / 1000.0
        self.jitter_buffer_s = media.jitter_buffer_ms / 1000.0
        self.tokens_per_s = ai.llm.tokens_per_s
        self.stages = {"stt": Stage("stt", ai.stt.concurrency, warmup_s),
                       "llm": Stage("llm", ai.llm.concurrency, warmup_s),
                       "tts": Stage("tts", ai.tts.concurrency, warmup_s)}
        self.turns = 0
        # draws in milliseconds, as the spec gives them
        self.vad_ms = ai.vad_ms.sampler(streams.rng("ai.vad"))
        self.stt_ms = ai.stt.latency_ms.sampler(streams.rng("ai.stt"))
        self.ttft_ms = ai.llm.ttft_ms.sampler(streams.rng("ai.llm.ttft"))
        self.tokens = ai.llm.tokens.sampler(streams.rng("ai.llm.tokens"))
        self.ttfb_ms = ai.tts.ttfb_ms.sampler(streams.rng("ai.tts"))
        # compact columns: ~2 M turns fit in ~250 MB instead of ~2 GB of Python floats
        self.cols: dict[str, array[Any]] = {
            c: array("q" if c in ("call_id", "turn") else "d") for c in TURN_COLUMNS}
        self._col_list = list(self.cols.values())

    def _media(self, link: Link) -> float:
        """One-way media delay; a lost packet's audio arrives with the next one (one ptime)."""
        d = link.send()
        return (d if d is not None else link.delay_s + self.ptime_s) + self.ptime_s

    def turn(self, env: simpy.Environment, call_id: int, index: int, spoke_until: float,
             caller_speech_s: float, agent_speech_s: float
             ) -> Generator[simpy.Event, Any, float]:
        """Run one turn; return when the agent's reply has finished playing at the caller.

        The three stage bookings are written out rather than delegated: this is the
        twin's hottest loop (two million turns in a busy hour), and a provider only
        costs a simulation event when its slots are capped.
        """
        stt, llm, tts = self.stages["stt"].pool, self.stages["llm"].pool, self.stages["tts"].pool
        up = self._media(self.up)
        vad = self.vad_ms() * 0.001
        asked = spoke_until + up + vad
        stt_s = self.stt_ms() * 0.001
        s1 = asked
        if stt is not None:
            if asked > env.now:
                yield env.timeout(asked - env.now)
            s1 = stt.book(max(asked, env.now), stt_s)
        transcript = s1 + stt_s
        ttft, tokens = self.ttft_ms() * 0.001, max(0.0, self.tokens())
        s2 = transcript
        if llm is not None:
            if transcript > env.now:
                yield env.timeout(transcript - env.now)
            s2 = llm.book(max(transcript, env.now), ttft + tokens / self.tokens_per_s)
        first_token = s2 + ttft
        ttfb = self.ttfb_ms() * 0.001
        s3 = first_token
        if tts is not None:
            if first_token > env.now:
                yield env.timeout(first_token - env.now)
            s3 = tts.book(max(first_token, env.now), ttfb)
        down = self._media(self.down) + self.jitter_buffer_s
        heard = s3 + ttfb + down
        w1, w2, w3 = s1 - asked, s2 - transcript, s3 - first_token
        row = (call_id, index, spoke_until, (heard - spoke_until) * 1e3, vad * 1e3,
               stt_s * 1e3, ttft * 1e3, ttfb * 1e3, (up + down) * 1e3, (w1 + w2 + w3) * 1e3,
               w1 * 1e3, w2 * 1e3, w3 * 1e3, caller_speech_s, agent_speech_s, tokens)
        for col, value in zip(self._col_list, row, strict=True):
            col.append(value)
        self.turns += 1
        return heard + agent_speech_s

    def usage(self) -> dict[str, dict[str, Any]]:
        """Per stage: slots (None = unlimited), requests, busy slot-seconds after warm-up."""
        return {name: {"servers": st.pool.servers if st.pool else None,
                       "requests": self.turns,
                       "busy_s": st.pool.busy_s if st.pool else 0.0}
                for name, st in self.stages.items()}


def turns_frame(cols: dict[str, array[Any]]) -> pd.DataFrame:
    """The turn columns as a DataFrame (zero-copy views of the arrays)."""
    return pd.DataFrame({k: np.frombuffer(v, dtype=np.int64 if v.typecode == "q" else float)
                         if len(v) else np.empty(0) for k, v in cols.items()})
