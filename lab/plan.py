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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
class CallPlan:
    """Everything the caller side of one call will do. The INVITE opens it, a BYE ends it."""

    call_id: int
    start_s: float
    scenario: str
    source_ip: str
    steps: tuple[Step, ...]

    @property
    def turns(self) -> int:
        return sum(1 for s in self.steps if isinstance(s, Turn))

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


def make_plan(
    exp: Experiment, replication: int = 0, base_dir: Path | None = None
) -> list[CallPlan]:
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
    steps: list[tuple[Step, ...]] = [()] * n
    for k, name in enumerate(names):
        idx = np.flatnonzero(pick == k)
        if idx.size:
            scripts = _scripts(exp.scenarios[name], idx.size, streams, name)
            for i, script in zip(idx.tolist(), scripts, strict=True):
                steps[i] = script
    return [
        CallPlan(i, float(starts[i]), names[int(pick[i])], ips[int(ip_idx[i])], steps[i])
        for i in range(n)
    ]


def _scripts(sc: Scenario, n: int, streams: Streams, name: str) -> list[tuple[Step, ...]]:
    """The step scripts of ``n`` calls of one scenario.

    Every random quantity of a script step draws from its own stream, keyed by the
    scenario, the step's position and the quantity (``scenario.talk.script.2.talk_s``).
    """
    if sc.script is None:
        return _talk_or_turns(sc, n, streams, f"scenario.{name}", sc.turns, sc.hold_s)
    parts: list[list[tuple[Step, ...]]] = []
    for k, step in enumerate(sc.script):
        key = f"scenario.{name}.script.{k}"
        if isinstance(step, S.TalkStep):
            holds = step.talk_s.sample(streams.rng(f"{key}.talk_s"), n).tolist()
            parts.append([(Talk(h),) for h in holds])
        elif isinstance(step, S.TurnsStep):
            parts.append(_talk_or_turns(sc, n, streams, key, step.turns, None))
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
    return [tuple(s for part in parts for s in part[i]) for i in range(n)]


def _talk_or_turns(sc: Scenario, n: int, streams: Streams, key: str, turns_spec: int | Dist,
                   hold: Dist | None) -> list[tuple[Step, ...]]:
    """``turns`` AI turns per call, or (with no turns and a hold) one Talk of ``hold``."""
    if isinstance(turns_spec, int):
        turns = np.full(n, turns_spec, dtype=int)
    else:
        turns = np.rint(turns_spec.sample(streams.rng(f"{key}.turns"), n)).astype(int)
    holds = hold.sample(streams.rng(f"{key}.hold_s"), n).tolist() if hold is not None else None
    total = int(np.maximum(turns, 0).sum())
    caller = sc.caller_speech_s.sample(streams.rng(f"{key}.caller_speech_s"), total)
    agent = sc.agent_speech_s.sample(streams.rng(f"{key}.agent_speech_s"), total)
    barge: list[float | None] = [None] * total
    if sc.barge_in is not None and total:
        rng = streams.rng(f"{key}.barge_in")
        hit = rng.random(total) < sc.barge_in.probability
        after = sc.barge_in.after_s.sample(rng, total)
        barge = [float(a) if h and a < g else None
                 for h, a, g in zip(hit.tolist(), after.tolist(), agent.tolist(), strict=True)]
    out: list[tuple[Step, ...]] = []
    pos = 0
    for i in range(n):
        k = int(turns[i])
        if k <= 0:
            out.append((Talk(holds[i]),) if holds is not None else ())
            continue
        out.append(tuple(Turn(float(caller[pos + j]), float(agent[pos + j]), barge[pos + j])
                         for j in range(k)))
        pos += k
    return out
