"""The plan's AI turns as the twin's agent needs them: numbered runs and per-turn inputs.

Every planned turn gets a number ``g``, in call order, then script order. A call's
consecutive turns form a *run* (:class:`Block`) -- what the agent serves as one
conversation -- and each turn's inputs are columns indexed by ``g``: the plan's speech
(caller utterance, agent reply, barge-in) and the draws of every latency the turn meets
(:class:`TurnInputs`). A busy hour has two million turns, so both are arrays, built from
a columnar :class:`lab.plan.Plan` without touching the calls one by one (any other
sequence of :class:`lab.plan.CallPlan` works too, call by call).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from lab.plan import SCRIPT, TURNS, CallPlan, Plan, Turn, Turns
from lab.spec import Deployment
from lab.streams import Streams
from twin.network import Link

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


class Block(NamedTuple):
    """One call's run of consecutive AI turns: turns ``g0 .. g0 + n - 1``, starting at
    expanded step ``step`` of the call's script, spanning script items ``first .. last - 1``.
    """

    g0: int
    n: int
    step: int
    first: int
    last: int


def script_runs(script: Sequence[object], g: int) -> list[Block]:
    """The runs of one call's script whose first turn is number ``g``."""
    runs: list[Block] = []
    k = 0
    for pos, step in enumerate(script):
        n = len(step) if isinstance(step, Turns) else int(isinstance(step, Turn))
        if not n:
            k += 1
            continue
        prev = runs[-1] if runs else None
        if prev is not None and prev.last == pos:  # adjacent to the previous run
            runs[-1] = Block(prev.g0, prev.n + n, prev.step, prev.first, pos + 1)
        else:
            runs.append(Block(g, n, k, pos, pos + 1))
        g += n
        k += n
    return runs


class TurnRuns:
    """Every call's runs of turns: a call whose script is one block of turns (the common
    case) is two numbers in arrays; other calls keep a list of :class:`Block`."""

    def __init__(self, plan: Sequence[CallPlan]) -> None:
        self.g0: dict[int, int] | Ints = {}
        self.n: dict[int, int] | Ints = {}
        self.listed: dict[int, list[Block]] = {}
        self._g0_list: list[int] | None = None
        self._n_list: list[int] | None = None
        if isinstance(plan, Plan):
            self._from_plan(plan)
        else:
            self._from_calls(plan)

    def _from_plan(self, plan: Plan) -> None:
        counts = np.where(plan.kind == TURNS, plan.turn_hi - plan.turn_lo, 0)
        scripted = np.flatnonzero(plan.kind == SCRIPT).tolist()
        for i in scripted:  # their turns, in script order, are numbered in call order too
            counts[i] = sum(b.n for b in script_runs(plan.scripts[i], 0))
        g0 = np.cumsum(counts) - counts
        self.g0, self.n = g0, np.where(plan.kind == TURNS, counts, 0)
        # as lists for of(), asked once per call: a list index is cheaper than numpy's
        self._g0_list, self._n_list = g0.tolist(), self.n.tolist()
        for i in scripted:
            runs = script_runs(plan.scripts[i], int(g0[i]))
            if runs:
                self.listed[i] = runs
        self.total = int(counts.sum())

    def _from_calls(self, plan: Sequence[CallPlan]) -> None:
        g = 0
        for c in plan:
            runs = script_runs(c.script, g)
            if runs:
                self.listed[c.call_id] = runs
                g += sum(b.n for b in runs)
        self.total = g

    def of(self, call_id: int) -> list[Block] | None:
        """The runs of call ``call_id`` in script order (None: it has no AI turns)."""
        runs = self.listed.get(call_id)
        if runs is not None:
            return runs
        n, g0 = self._n_list, self._g0_list
        if n is not None and g0 is not None and 0 <= call_id < len(n) and n[call_id]:
            return [Block(g0[call_id], n[call_id], 0, 0, 1)]
        return None

    def numbering(self) -> tuple[Ints, Ints, Ints]:
        """Per turn ``g``: its call id, its step in the script, and the run's last turn."""
        ids, starts, lengths, steps = [], [], [], []
        if isinstance(self.n, np.ndarray):
            have = np.flatnonzero(self.n > 0)
            ids.append(have)
            starts.append(np.asarray(self.g0)[have])
            lengths.append(self.n[have])
            steps.append(np.zeros(have.size, dtype=np.int64))
        extra = [(call_id, b) for call_id, runs in self.listed.items() for b in runs]
        if extra:
            ids.append(np.array([c for c, _ in extra], dtype=np.int64))
            starts.append(np.array([b.g0 for _, b in extra], dtype=np.int64))
            lengths.append(np.array([b.n for _, b in extra], dtype=np.int64))
            steps.append(np.array([b.step for _, b in extra], dtype=np.int64))
        if not ids:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty
        call_ids, g0s, ns, step0 = (np.concatenate(x).astype(np.int64)
                                    for x in (ids, starts, lengths, steps))
        order = np.argsort(g0s, kind="stable")
        call_ids, g0s, ns, step0 = call_ids[order], g0s[order], ns[order], step0[order]
        call_of = np.repeat(call_ids, ns)
        first = np.repeat(g0s, ns)
        step = np.arange(self.total, dtype=np.int64) - first + np.repeat(step0, ns)
        last = np.repeat(g0s + ns - 1, ns)
        return call_of, step, last


def _speech(plan: Sequence[CallPlan], runs: TurnRuns) -> tuple[Floats, Floats, Floats]:
    """The plan's turn speech, caller / agent / barge-in (NaN: none), in turn order:
    the plan's own arrays when its turns already are in that order, else gathered."""
    empty = np.empty(0)
    if isinstance(plan, Plan) and not np.any((plan.kind == TURNS) | (plan.kind == SCRIPT)):
        return empty, empty, empty  # talk only: no call has a turn
    if isinstance(plan, Plan) and not runs.listed:
        turns = np.flatnonzero(plan.kind == TURNS)
        if turns.size and np.all(plan.table[turns] == plan.table[turns[0]]):
            t = plan.tables[int(plan.table[turns[0]])]
            lo, hi = plan.turn_lo[turns], plan.turn_hi[turns]
            if lo[0] == 0 and hi[-1] == t.caller_speech_s.size and np.all(lo[1:] == hi[:-1]):
                return t.caller_speech_s, t.agent_speech_s, t.barge_in_s
    caller: list[Floats] = []
    agent: list[Floats] = []
    barge: list[Floats] = []
    for c in plan:
        for s in c.script:
            if isinstance(s, Turns):
                t = s.table
                caller.append(t.caller_speech_s[s.start:s.stop])
                agent.append(t.agent_speech_s[s.start:s.stop])
                barge.append(t.barge_in_s[s.start:s.stop])
            elif isinstance(s, Turn):
                caller.append(np.array([s.caller_speech_s]))
                agent.append(np.array([s.agent_speech_s]))
                barge.append(np.array([math.nan if s.barge_in_s is None else s.barge_in_s]))
    return (np.concatenate(caller) if caller else empty,
            np.concatenate(agent) if agent else empty,
            np.concatenate(barge) if barge else empty)


class TurnInputs:
    """Every planned turn's speech and draws, a column per quantity, indexed by ``g``.

    Speech comes from the plan: ``caller_s``, ``agent_s``, ``barge_s`` (NaN: the reply
    plays out). The draws are made here, each quantity from its named stream in turn
    order: ``vad_ms`` (ai.vad), ``stt_ms`` (ai.stt), ``ttft_ms`` (ai.llm.ttft), ``tokens``
    (ai.llm.tokens, at least 0), ``ttfb_ms`` (ai.tts), and the one-way media delays
    ``up_s``/``down_s`` (media.up, media.down: network delay plus one packetisation; a
    lost packet's audio arrives one ptime later). A turn's draws therefore never depend
    on the order in which the simulation serves turns (common random numbers).
    """

    def __init__(self, plan: Sequence[CallPlan], runs: TurnRuns, dep: Deployment,
                 streams: Streams) -> None:
        self.caller_s, self.agent_s, self.barge_s = _speech(plan, runs)
        n = self.n = self.caller_s.size
        ai, ptime_s = dep.ai, dep.media.ptime_ms / 1000.0
        self.vad_ms = ai.vad_ms.sample(streams.rng("ai.vad"), n)
        self.stt_ms = ai.stt.latency_ms.sample(streams.rng("ai.stt"), n)
        self.ttft_ms = ai.llm.ttft_ms.sample(streams.rng("ai.llm.ttft"), n)
        self.tokens = np.maximum(ai.llm.tokens.sample(streams.rng("ai.llm.tokens"), n), 0.0)
        self.ttfb_ms = ai.tts.ttfb_ms.sample(streams.rng("ai.tts"), n)
        self.up_s = Link(dep.network, streams.rng("media.up")).media_array(n, ptime_s)
        self.down_s = Link(dep.network, streams.rng("media.down")).media_array(n, ptime_s)
        # no STT request arrives sooner after it becomes known than its caller takes to
        # speak, the audio to reach the agent and the VAD to end the turn; less a
        # microsecond, far more than the rounding of the sums that time the requests
        self.lookahead_s = (float((self.caller_s + self.up_s + self.vad_ms * 0.001).min())
                            - 1e-6) if n else math.inf
