"""Serving the conversations' provider requests in arrival order, a window at a time.

An FCFS pool (:mod:`twin.pool`) must be booked in the order its requests arrive: a
request that reaches the STT provider at 12.300 s must be booked after every request
that reached it earlier. The straightforward way -- each conversation a process that
waits until each of its requests arrives -- costs one simulation wait per request, and
with ten thousand conversations in progress a wait is a cache miss on a cold process
(about 5 µs, measured): most of a busy hour.

The lanes do the same bookings without waits, and in batches. Every capped provider
has a *lane* of pending requests ``(arrival, order, turn)``. Nothing about a request is
random once the turn's draws are made (:class:`twin.ai.TurnInputs`), so a request's
arrival is known as soon as the step before it is booked. Time is cut into windows
``[k·L, (k + 1)·L)``; window ``k`` is served when the clock reaches ``k·L``: first every
STT request arriving in it, in arrival order, then every LLM request arriving before
``(k + 1)·L`` (they come only from STT bookings, so all of them are known by then), then
every TTS request. Each lane's bookings are one tight loop
(:meth:`twin.pool.FcfsPool.book_many`); everything between bookings -- a transcript's
time, a reply's first byte, when the caller hears it, the next turn -- is numpy
arithmetic over the whole batch, the same operations as one turn at a time.

That is exact -- the same bookings in the same order as a process per conversation
(:meth:`twin.ai.Pipeline._converse`; a test compares the two) -- as long as no STT
request becomes known at or after ``k·L`` and still arrives before ``(k + 1)·L``. The
window length ``L`` is the shortest time a turn of the plan takes from its start to its
STT request -- the caller's utterance, the audio's way to the agent and the VAD's
end-of-turn wait: a turn's STT request becomes known when its call is answered or its
previous turn's reply is booked, and arrives that much later at the earliest
(:attr:`twin.ai.TurnInputs.lookahead_s`). A request submitted before the next scheduled
window brings that window forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from heapq import heappop, heappush
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from twin.ai import Pipeline
    from twin.pool import FcfsPool

INF = math.inf
Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


class _Lane:
    """Pending requests of one provider: arrival times, submission order, turn numbers."""

    __slots__ = ("chunks", "first", "one")

    def __init__(self) -> None:
        self.chunks: list[tuple[Floats, Ints, Ints]] = []
        self.one: list[tuple[float, int, int]] = []  # single requests, from outside a window
        self.first = INF  # the earliest arrival pending

    def __bool__(self) -> bool:
        return bool(self.chunks or self.one)

    def add(self, at: Floats, order: Ints, g: Ints) -> None:
        if at.size:
            self.chunks.append((at, order, g))
            lo = float(at.min())
            if lo < self.first:
                self.first = lo

    def add_one(self, at: float, order: int, g: int) -> None:
        self.one.append((at, order, g))
        if at < self.first:
            self.first = at

    def _arrays(self) -> tuple[Floats, Ints, Ints]:
        parts = list(self.chunks)
        if self.one:
            a, o, g = zip(*self.one, strict=True)
            parts.append((np.array(a, dtype=float), np.array(o, dtype=np.int64),
                          np.array(g, dtype=np.int64)))
        self.chunks, self.one = [], []
        if len(parts) == 1:
            return parts[0]
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]))

    def take(self, horizon: float) -> tuple[Floats, Ints]:
        """The requests arriving before ``horizon``, in arrival order: (arrivals, turns)."""
        at, order, g = self._arrays()
        due = at < horizon
        self.first = INF
        if not due.all():
            keep = ~due
            kept = at[keep]
            self.chunks.append((kept, order[keep], g[keep]))
            self.first = float(kept.min())
            at, order, g = at[due], order[due], g[due]
        idx = np.lexsort((order, at))
        return at[idx], g[idx]


class _Buckets:
    """A :class:`_Lane` cut by arrival into buckets of ``width_s``: the STT lane, whose
    requests are known many windows ahead, so a window only looks at its own bucket."""

    __slots__ = ("buckets", "keys", "per_s")

    def __init__(self, width_s: float) -> None:
        self.per_s = 1.0 / width_s
        self.buckets: dict[int, _Lane] = {}
        self.keys: list[int] = []  # heap of the buckets' numbers

    def _bucket(self, c: int) -> _Lane:
        lane = self.buckets.get(c)
        if lane is None:
            lane = self.buckets[c] = _Lane()
            heappush(self.keys, c)
        return lane

    @property
    def first(self) -> float:
        return self.buckets[self.keys[0]].first if self.keys else INF

    def add_one(self, at: float, order: int, g: int) -> None:
        self._bucket(int(at * self.per_s)).add_one(at, order, g)

    def add(self, at: Floats, order: Ints, g: Ints) -> None:
        if not at.size:
            return
        c = (at * self.per_s).astype(np.int64)
        lo, hi = int(c.min()), int(c.max())
        if lo == hi:
            self._bucket(lo).add(at, order, g)
            return
        idx = np.argsort(c, kind="stable")
        cs, at, order, g = c[idx], at[idx], order[idx], g[idx]
        cut = np.flatnonzero(np.diff(cs)) + 1
        starts = np.concatenate(([0], cut))
        ends = np.concatenate((cut, [cs.size])).tolist()
        lows = np.minimum.reduceat(at, starts).tolist()
        for k, lo, hi, first in zip(cs[starts].tolist(), starts.tolist(), ends, lows,
                                    strict=True):
            lane = self._bucket(k)  # each bucket's run of the sorted arrays: views
            lane.chunks.append((at[lo:hi], order[lo:hi], g[lo:hi]))
            if first < lane.first:
                lane.first = first

    def take(self, horizon: float) -> tuple[Floats, Ints]:
        """The requests arriving before ``horizon``, in arrival order: (arrivals, turns)."""
        parts: list[tuple[Floats, Ints]] = []
        while self.keys and self.keys[0] / self.per_s < horizon:
            c = self.keys[0]
            lane = self.buckets[c]
            parts.append(lane.take(horizon))
            if lane:
                break
            heappop(self.keys)
            del self.buckets[c]
        if len(parts) == 1:
            return parts[0]
        at = np.concatenate([p[0] for p in parts]) if parts else np.empty(0)
        g = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, dtype=np.int64)
        return at, g  # buckets in order, each sorted: the whole is sorted


class Lanes:
    """The capped providers of one :class:`twin.ai.Pipeline`, served window by window."""

    def __init__(self, pipeline: Pipeline, lookahead_s: float) -> None:
        self.p = pipeline
        self.env = pipeline.env
        self.lookahead_s = lookahead_s
        self._per_window = 1.0 / lookahead_s
        stages = pipeline.stages
        self.pools: tuple[FcfsPool | None, ...] = (
            stages["stt"].pool, stages["llm"].pool, stages["tts"].pool)
        self._stt = _Buckets(16 * lookahead_s)
        self._llm, self._tts = _Lane(), _Lane()
        self._order = 0
        self.inp = pipeline.inputs
        n = self.inp.n
        self.last = np.zeros(n, dtype=bool)  # the last turn of its conversation
        _, _, last = pipeline.runs.numbering()
        self.last[last] = True
        self.ends: dict[int, Callable[[float], None]] = {}  # last turn -> on_end
        self.per_token = pipeline.tokens_per_s
        self.jitter_buffer_s = pipeline.jitter_buffer_s
        self.next_window: float = INF  # the window whose wake-up is scheduled
        self.serving = -1  # the window being served (-1: none)
        self.windows = 0

    def _orders(self, m: int) -> Ints:
        start = self._order
        self._order += m
        return np.arange(start, start + m, dtype=np.int64)

    # ------------------------------------------------------------------ conversations
    def submit(self, g0: int, n: int, t: float, on_end: Callable[[float], None]) -> None:
        """The caller of turns ``g0 .. g0 + n - 1`` starts speaking at ``t`` (>= now)."""
        self.ends[g0 + n - 1] = on_end
        inp, p = self.inp, self.p
        spoke = t + float(inp.caller_s[g0])
        p.spoke[g0] = spoke
        asked = spoke + float(inp.up_s[g0]) + float(inp.vad_ms[g0]) * 0.001
        order = self._order
        self._order += 1
        if self.pools[0] is None:
            self._stt_started(np.array([g0], dtype=np.int64), np.array([asked]))
            if self.serving < 0:
                self._reschedule()
            return
        self._stt.add_one(asked, order, g0)
        if self.serving < 0:
            # the scheduled window is the earliest of every pending request's, so only
            # this one can bring it forward (what _reschedule finds, without the scan)
            k = int(asked * self._per_window)
            if k < self.next_window:
                self._schedule(k)

    def _begin(self, g: Ints, t: Floats) -> tuple[Ints, Floats] | None:
        """Turns ``g`` start: their callers start speaking at ``t``; STT requests follow.
        Returns the turns and TTS start times when no capped provider lies between
        (:meth:`_tts_started` goes on with them), else ``None``."""
        inp = self.inp
        spoke = t + inp.caller_s[g]
        self.p.spoke[g] = spoke
        asked = spoke + inp.up_s[g] + inp.vad_ms[g] * 0.001
        if self.pools[0] is None:
            return self._after_stt(g, asked)
        self._stt.add(asked, self._orders(g.size), g)
        return None

    def _after_stt(self, g: Ints, s1: Floats) -> tuple[Ints, Floats] | None:
        self.p.s1[g] = s1
        transcript = s1 + self.inp.stt_ms[g] * 0.001
        if self.pools[1] is not None:
            self._llm.add(transcript, self._orders(g.size), g)
            return None
        return self._after_llm(g, transcript)

    def _after_llm(self, g: Ints, s2: Floats) -> tuple[Ints, Floats] | None:
        self.p.s2[g] = s2
        first_token = s2 + self.inp.ttft_ms[g] * 0.001
        if self.pools[2] is not None:
            self._tts.add(first_token, self._orders(g.size), g)
            return None
        return g, first_token

    def _stt_started(self, g: Ints, s1: Floats) -> None:
        if (nxt := self._after_stt(g, s1)) is not None:
            self._tts_started(*nxt)

    def _llm_started(self, g: Ints, s2: Floats) -> None:
        if (nxt := self._after_llm(g, s2)) is not None:
            self._tts_started(*nxt)

    def _tts_started(self, g: Ints, s3: Floats) -> None:
        # a loop, not a recursion: with no capped provider a conversation's turns follow
        # one another here synchronously, and a 300-turn call would overflow the stack
        inp, p = self.inp, self.p
        while True:
            heard = s3 + inp.ttfb_ms[g] * 0.001 + (inp.down_s[g] + self.jitter_buffer_s)
            p.s3[g] = s3
            p.heard[g] = heard
            p.done[g] = True
            barge = inp.barge_s[g]
            t = heard + np.where(np.isnan(barge), inp.agent_s[g], barge)
            last = self.last[g]
            if last.any():
                for gi, ti in zip(g[last].tolist(), t[last].tolist(), strict=True):
                    self.ends.pop(gi)(ti)
                more = ~last
                g, t = g[more], t[more]
            if not g.size or (nxt := self._begin(g + 1, t)) is None:
                return
            g, s3 = nxt

    # ------------------------------------------------------------------ windows
    def _window(self, at: float) -> int:
        return int(at * self._per_window)

    def _reschedule(self) -> None:
        first = min(self._stt.first, self._llm.first, self._tts.first)
        if first < INF and (k := self._window(first)) < self.next_window:
            self._schedule(max(k, self.serving + 1))

    def _schedule(self, k: int) -> None:
        self.next_window = k
        self.env.start(self._wake(k))

    def _wake(self, k: int) -> Generator[float, float, None]:
        at = max(k * self.lookahead_s, self.env.now)
        if at > self.env.now:
            yield at - self.env.now
        if k == self.next_window:  # not superseded by an earlier window
            self.serve(k)

    def serve(self, k: int) -> None:
        """Serve window ``k``: every request arriving in it, lane by lane, in arrival order."""
        self.windows += 1
        self.next_window = INF
        self.serving = k
        horizon = (k + 1) * self.lookahead_s
        stt, llm, tts = self.pools
        if stt is not None and self._stt.first < horizon:
            at, g = self._stt.take(horizon)
            self._stt_started(g, stt.book_many(at, self.inp.stt_ms[g] * 0.001))
        if llm is not None and self._llm.first < horizon:
            at, g = self._llm.take(horizon)
            if at.size:
                hold = self.inp.ttft_ms[g] * 0.001 + self.inp.tokens[g] / self.per_token
                self._llm_started(g, llm.book_many(at, hold))
        if tts is not None and self._tts.first < horizon:
            at, g = self._tts.take(horizon)
            if at.size:
                self._tts_started(g, tts.book_many(at, self.inp.ttfb_ms[g] * 0.001))
        self.serving = -1
        if min(self._stt.first, self._llm.first, self._tts.first) < horizon:
            raise RuntimeError("twin.lanes: a request arrived inside a served window; "
                               "the lookahead does not hold")
        self._reschedule()
