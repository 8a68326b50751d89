"""Call plans: the scenario script of every call, drawn once, run by either backend.

A call scenario is written once as a script of abstract steps; each backend
interprets the steps (the twin as SimPy processes, ``real/`` as pjsua2
operations). The plan for a replication fixes every random draw that belongs to
the caller — arrival time, scenario, source address, hold time, utterance
lengths — from named streams, so the twin and the real backend dial the very
same calls (common random numbers) and their results can be compared call by call.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np
from numpy.typing import NDArray

from lab import spec as S
from lab.dists import Dist
from lab.profiles import Profile
from lab.spec import Experiment, Scenario
from lab.streams import Streams


@dataclass(frozen=True, slots=True)
class Talk:
    """Both parties talk for ``hold_s`` seconds (a call with no AI turns)."""

    hold_s: float


@dataclass(frozen=True, slots=True)
class Turn:
    """One AI conversation turn: the caller speaks, the agent replies."""

    caller_speech_s: float
    agent_speech_s: float
    barge_in_s: float | None = None  # the caller talks over the reply this far into it


@dataclass(frozen=True, slots=True)
class Dtmf:
    """The caller keys ``digits`` (RFC 4733); the IVR answers with a ``prompt_s`` prompt."""

    digits: str
    prompt_s: float


@dataclass(frozen=True, slots=True)
class Message:
    """An in-dialog SIP MESSAGE (RFC 3428) carrying ``text``."""

    text: str


@dataclass(frozen=True, slots=True)
class OnHold:
    """Hold (re-INVITE a=sendonly) for ``hold_s``, then resume (re-INVITE a=sendrecv)."""

    hold_s: float


@dataclass(frozen=True, slots=True)
class Transfer:
    """Blind transfer to ``target`` (RFC 3515 REFER); then ``talk_s`` with the target."""

    target: str
    talk_s: float


Step = Talk | Turn | Dtmf | Message | OnHold | Transfer


@dataclass(frozen=True, slots=True)
class TurnTable:
    """Every AI turn of a plan as columns, a row per turn; each call's turns are contiguous.

    A busy hour plans millions of turns: as three float arrays they take 24 bytes a
    turn, as :class:`Turn` objects about six times that.
    """

    caller_speech_s: NDArray[np.float64]
    agent_speech_s: NDArray[np.float64]
    barge_in_s: NDArray[np.float64]  # NaN: the caller lets the reply play out


@dataclass(frozen=True, slots=True, eq=False)
class Turns:
    """Rows ``start:stop`` of a :class:`TurnTable`: one call's run of consecutive AI turns."""

    table: TurnTable
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def columns(self) -> tuple[list[float], list[float], list[float]]:
        """Caller speech, agent speech and barge-in (NaN: none) of each turn, as lists."""
        t, a, b = self.table, self.start, self.stop
        return (t.caller_speech_s[a:b].tolist(), t.agent_speech_s[a:b].tolist(),
                t.barge_in_s[a:b].tolist())

    def __iter__(self) -> Iterator[Turn]:
        for caller, agent, barge in zip(*self.columns(), strict=True):
            yield Turn(caller, agent, None if math.isnan(barge) else barge)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Turns) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class CallPlan:
    """Everything the caller side of one call will do. The INVITE opens it, a BYE ends it.

    ``script`` holds the steps in order; a run of AI turns may be one :class:`Turns`
    block (columnar, as :func:`make_plan` draws them), which :attr:`steps` expands.
    """

    call_id: int
    start_s: float
    scenario: str
    source_ip: str
    script: tuple[Step | Turns, ...]

    @property
    def steps(self) -> tuple[Step, ...]:
        """The script with every :class:`Turns` block expanded into :class:`Turn` steps."""
        if not any(isinstance(s, Turns) for s in self.script):
            return self.script  # type: ignore[return-value]
        out: list[Step] = []
        for s in self.script:
            if isinstance(s, Turns):
                out.extend(s)
            else:
                out.append(s)
        return tuple(out)

    @property
    def turns(self) -> int:
        n = 0
        for s in self.script:
            if type(s) is Turns:
                n += s.stop - s.start
            elif type(s) is Turn:
                n += 1
        return n

    @property
    def talk_s(self) -> float:
        """Seconds of planned media from answer to hang-up, not counting signalling and
        agent latency: holds, every turn's speech, IVR prompts, time on hold."""
        total = 0.0
        for step in self.steps:
            if isinstance(step, Talk):
                total += step.hold_s
            elif isinstance(step, Turn):
                reply = step.agent_speech_s
                if step.barge_in_s is not None:
                    reply = min(reply, step.barge_in_s)
                total += step.caller_speech_s + reply
            elif isinstance(step, Dtmf):
                total += step.prompt_s
            elif isinstance(step, OnHold):
                total += step.hold_s
            elif isinstance(step, Transfer):
                total += step.talk_s
        return total


def source_addresses(cidr: str, count: int) -> list[str]:
    """The first ``count`` host addresses of ``cidr`` (the callers' IPs)."""
    net = ipaddress.ip_network(cidr, strict=False)
    hosts = net.hosts() if net.num_addresses > 2 else iter(net)
    out: list[str] = []
    for addr in hosts:
        out.append(str(addr))
        if len(out) == count:
            break
    return out


#: The slots of CallPlan's fields, and Talk's, set directly by Plan.__iter__.
_SLOT_SETTERS = tuple(getattr(CallPlan, f).__set__
                      for f in ("call_id", "start_s", "scenario", "source_ip", "script"))
_TALK_HOLD = vars(Talk)["hold_s"].__set__
_TURNS_SETTERS = tuple(vars(Turns)[f].__set__ for f in ("table", "start", "stop"))
TALK, TURNS, SCRIPT, SILENT = 0, 1, 2, 3  # Plan.kind: how a call's script is kept


class Plan(Sequence[CallPlan]):
    """The calls of one replication, as columns; indexing or iterating makes each
    :class:`CallPlan` on the fly.

    A busy hour plans hundreds of thousands of calls: as objects each takes a few
    hundred bytes, as columns a few dozen. Call ``i`` (its ``call_id``) starts at
    ``start_s[i]`` from ``ips[source[i]]`` with scenario ``names[scenario[i]]``; its
    script is, by ``kind[i]``: ``TALK`` one :class:`Talk` of ``hold_s[i]``; ``TURNS`` one
    :class:`Turns` block, rows ``turn_lo[i]:turn_hi[i]`` of ``tables[table[i]]``;
    ``SCRIPT`` the explicit steps ``scripts[i]``; ``SILENT`` nothing.
    """

    def __init__(self, start_s: NDArray[np.float64], names: list[str],
                 scenario: NDArray[np.int64], ips: list[str], source: NDArray[np.int64]
                 ) -> None:
        n = start_s.size
        self.start_s = start_s
        self.names, self.scenario = names, scenario.astype(np.int32)
        self.ips, self.source = ips, source.astype(np.int32)
        self.kind = np.full(n, SILENT, dtype=np.int8)
        self.hold_s = np.full(n, math.nan)
        self.turn_lo = np.zeros(n, dtype=np.int64)
        self.turn_hi = np.zeros(n, dtype=np.int64)
        self.table = np.zeros(n, dtype=np.int32)
        self.tables: list[TurnTable] = []
        self.scripts: dict[int, tuple[Step | Turns, ...]] = {}

    def __len__(self) -> int:
        return int(self.start_s.size)

    def script(self, i: int) -> tuple[Step | Turns, ...]:
        kind = self.kind[i]
        if kind == TALK:
            return (Talk(float(self.hold_s[i])),)
        if kind == TURNS:
            return (Turns(self.tables[self.table[i]], int(self.turn_lo[i]),
                          int(self.turn_hi[i])),)
        if kind == SCRIPT:
            return self.scripts[i]
        return ()

    def _call(self, i: int) -> CallPlan:
        return CallPlan(i, float(self.start_s[i]), self.names[self.scenario[i]],
                        self.ips[self.source[i]], self.script(i))

    @overload
    def __getitem__(self, i: int) -> CallPlan: ...

    @overload
    def __getitem__(self, i: slice) -> list[CallPlan]: ...

    def __getitem__(self, i: int | slice) -> CallPlan | list[CallPlan]:
        if isinstance(i, slice):
            return [self._call(k) for k in range(len(self))[i]]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._call(i)

    def __iter__(self) -> Iterator[CallPlan]:
        start, scen, src, names, ips = (self.start_s.tolist(), self.scenario.tolist(),
                                        self.source.tolist(), self.names, self.ips)
        # lists, not numpy scalars, per call: the same values, cheaper to read
        kind, hold, tables = self.kind.tolist(), self.hold_s.tolist(), self.tables
        table, lo, hi = self.table.tolist(), self.turn_lo.tolist(), self.turn_hi.tolist()
        # The records are frozen: their __init__ sets each field through
        # object.__setattr__, a third of a signalling call's planning cost. Filled
        # through their slots instead, they are the same objects (equal, same hash,
        # still frozen), made in half the time. Nothing else is in their __init__s
        # (no __post_init__: a test compares them with their constructors' output).
        new = object.__new__
        set_id, set_start, set_scen, set_ip, set_script = _SLOT_SETTERS
        set_hold = _TALK_HOLD
        set_table, set_lo, set_hi = _TURNS_SETTERS
        for i in range(len(self)):
            k = kind[i]
            if k == TALK:
                talk = new(Talk)
                set_hold(talk, hold[i])
                script: tuple[Step | Turns, ...] = (talk,)
            elif k == TURNS:
                turns = new(Turns)
                set_table(turns, tables[table[i]])
                set_lo(turns, lo[i])
                set_hi(turns, hi[i])
                script = (turns,)
            else:
                script = self.script(i)
            c = new(CallPlan)
            set_id(c, i)
            set_start(c, start[i])
            set_scen(c, names[scen[i]])
            set_ip(c, ips[src[i]])
            set_script(c, script)
            yield c

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Plan):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other,
                                                                          strict=True))
        if isinstance(other, list):
            return list(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


def make_plan(
    exp: Experiment, replication: int = 0, base_dir: Path | None = None
) -> Plan:
    """Draw the calls of one replication, sorted by start time; call ids start at 0."""
    streams = Streams(exp.seed, replication)
    profile = Profile(exp.load.arrivals, exp.duration_s, base_dir)
    starts = profile.arrival_times(streams.rng("load.arrivals"))
    n = starts.size
    names = [m.scenario for m in exp.load.mix]
    weights = np.array([m.weight for m in exp.load.mix], dtype=float)
    pick = streams.rng("load.mix").choice(len(names), size=n, p=weights / weights.sum())
    ips = source_addresses(exp.load.sources.cidr, exp.load.sources.count)
    ip_idx = streams.rng("load.sources").integers(0, len(ips), size=n)
    plan = Plan(np.asarray(starts, dtype=float), names, pick, ips, ip_idx)
    for k, name in enumerate(names):
        idx = np.flatnonzero(pick == k)
        if idx.size:
            _scripts(exp.scenarios[name], idx, streams, name, plan)
    return plan


def _scripts(sc: Scenario, idx: NDArray[np.intp], streams: Streams, name: str,
             plan: Plan) -> None:
    """Fill in the scripts of the calls ``idx`` (all of one scenario) in ``plan``.

    Every random quantity of a script step draws from its own stream, keyed by the
    scenario, the step's position and the quantity (``scenario.talk.script.2.talk_s``).
    """
    n = idx.size
    if sc.script is None:
        _talk_or_turns(sc, idx, streams, f"scenario.{name}", sc.turns, sc.hold_s, plan)
        return
    parts: list[list[tuple[Step | Turns, ...]]] = []
    for k, step in enumerate(sc.script):
        key = f"scenario.{name}.script.{k}"
        if isinstance(step, S.TalkStep):
            holds = step.talk_s.sample(streams.rng(f"{key}.talk_s"), n).tolist()
            parts.append([(Talk(h),) for h in holds])
        elif isinstance(step, S.TurnsStep):
            parts.append(_turn_scripts(sc, n, streams, key, step.turns))
        elif isinstance(step, S.DtmfStep):
            prompts = step.prompt_s.sample(streams.rng(f"{key}.prompt_s"), n).tolist()
            parts.append([(Dtmf(step.dtmf, p),) for p in prompts])
        elif isinstance(step, S.MessageStep):
            parts.append([(Message(step.message),)] * n)
        elif isinstance(step, S.OnHoldStep):
            holds = step.on_hold_s.sample(streams.rng(f"{key}.on_hold_s"), n).tolist()
            parts.append([(OnHold(h),) for h in holds])
        else:
            talks = step.talk_s.sample(streams.rng(f"{key}.talk_s"), n).tolist()
            parts.append([(Transfer(step.transfer, t),) for t in talks])
    plan.kind[idx] = SCRIPT
    for j, i in enumerate(idx.tolist()):
        plan.scripts[i] = tuple(s for part in parts for s in part[j])


def _turn_counts(n: int, streams: Streams, key: str, turns_spec: int | Dist
                 ) -> NDArray[np.int64]:
    if isinstance(turns_spec, int):
        return np.full(n, turns_spec, dtype=np.int64)
    return np.rint(turns_spec.sample(streams.rng(f"{key}.turns"), n)).astype(np.int64)


def _turn_table(sc: Scenario, streams: Streams, key: str, total: int) -> TurnTable:
    """``total`` turns' speech: caller, agent and barge-in (NaN: none) lengths."""
    caller = sc.caller_speech_s.sample(streams.rng(f"{key}.caller_speech_s"), total)
    agent = sc.agent_speech_s.sample(streams.rng(f"{key}.agent_speech_s"), total)
    barge = np.full(total, np.nan)
    if sc.barge_in is not None and total:
        rng = streams.rng(f"{key}.barge_in")
        hit = rng.random(total) < sc.barge_in.probability
        after = sc.barge_in.after_s.sample(rng, total)
        cut = hit & (after < agent)
        barge[cut] = after[cut]
    return TurnTable(np.asarray(caller, dtype=float), np.asarray(agent, dtype=float), barge)


def _talk_or_turns(sc: Scenario, idx: NDArray[np.intp], streams: Streams, key: str,
                   turns_spec: int | Dist, hold: Dist | None, plan: Plan) -> None:
    """``turns`` AI turns per call, or (with no turns and a hold) one Talk of ``hold``."""
    n = idx.size
    turns = _turn_counts(n, streams, key, turns_spec)
    holds = hold.sample(streams.rng(f"{key}.hold_s"), n) if hold is not None else None
    total = int(np.maximum(turns, 0).sum())
    table = _turn_table(sc, streams, key, total)
    talking = turns > 0
    hi = np.cumsum(np.maximum(turns, 0))
    plan.tables.append(table)
    plan.kind[idx] = np.where(talking, TURNS, TALK if holds is not None else SILENT)
    plan.turn_lo[idx], plan.turn_hi[idx] = hi - np.maximum(turns, 0), hi
    plan.table[idx] = len(plan.tables) - 1
    if holds is not None:
        plan.hold_s[idx] = holds


def _turn_scripts(sc: Scenario, n: int, streams: Streams, key: str, turns_spec: int | Dist
                  ) -> list[tuple[Step | Turns, ...]]:
    """The turns of a script step, one :class:`Turns` block (or nothing) per call."""
    turns = _turn_counts(n, streams, key, turns_spec)
    total = int(np.maximum(turns, 0).sum())
    table = _turn_table(sc, streams, key, total)
    out: list[tuple[Step | Turns, ...]] = []
    pos = 0
    for k in turns.tolist():
        if k <= 0:
            out.append(())
            continue
        out.append((Turns(table, pos, pos + k),))
        pos += k
    return out
