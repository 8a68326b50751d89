"""The real backend: every planned call placed in real time through a real SIP stack.

``siplab run --backend real`` hands each :class:`lab.plan.CallPlan` to
:func:`run_calls`, which builds the local system under test on 127.0.0.1 only::

    pjsua2 UAC workers ──INVITE──► Kamailio (tm, rr, dialog) ──► agent: SIPp UAS, or the
       (callers)        ◄─18x/200─  trunk channels + cps_limit      voice-agent pool
           │                        user "human" ──────────────► SIPp UAS (transfer target)
           └──── RTP/RTCP ───► impairment relay ◄──── RTP/RTCP ───┘

Process model, and why
----------------------
- **Kamailio** (:mod:`real.kamailio`) is the SIP edge: a stateful, record-routing
  proxy whose ``children`` are ``deployment.proxy.workers``; it enforces the trunk's
  channel cap with dialog profiles (``503 Channels Exhausted``) and its call rate with
  a counter per time window (``503 CPS Limit``).
- **The agent** (:func:`real.agent.agent_kind`) is either one **SIPp UAS**
  (:class:`real.agent.Agent`: 100, 180, then 200 OK after ``deployment.agent.answer_ms``,
  echoing the caller's RTP) for pure signalling load, or, when a scenario has AI turns
  or feature steps, a **pool of voice agents** (:class:`real.agent_pool.AgentPool`,
  :mod:`real.voice_agent`: VAD, STT, reply, TTS, DTMF prompts, MESSAGE, hold, REFER),
  ``ceil(peak concurrent calls / 4)`` processes behind Kamailio's dispatcher. Each
  caller's INVITE carries its plan (``X-Siplab-Plan``, :mod:`real.plan_header`) so the
  agent plays the planned reply and prompt lengths.
- **The human** -- only when a call is transferred: a SIPp UAS that answers at once;
  Kamailio routes request user ``human`` to it (the agent's REFER names
  ``sip:human@<proxy>``), counting the new leg on the caller's trunk channel.
- **The relay** (:mod:`real.relay`) carries every call's RTP and RTCP and applies
  ``deployment.network`` (delay, jitter, loss) per direction.
- **pjsua2 UAC workers** (:mod:`real.uac`, :mod:`real.uac_worker`) are the callers:
  they speak planned utterances (:class:`real.uac.PromptBook`), hear and time the
  replies, run the feature steps, and follow a transfer onto its new leg.
  The pjsua2-python wheel is built with PJSUA_MAX_CALLS = 4 and its Endpoint is a
  per-process singleton that must only be called from its own registered thread,
  so each worker is a separate process with one Endpoint, at most 4 calls, and a
  single-threaded event loop (``libHandleEvents`` between reads of its command
  pipe). The pool has ``ceil(min(peak concurrent calls, real.max_concurrent) / 4)``
  workers.
- **This coordinator** (the calling process, one thread) starts each call at
  ``run_start + plan.start_s`` on ``time.monotonic()`` -- one clock shared by all
  processes of the machine, so the workers' and agents' timestamps need no
  translation -- and turns each worker report into a record for ``on_record`` the
  moment the call ends, so a crash or Ctrl-C keeps every finished call. At the end
  it joins the caller's turns to the agent's (:mod:`real.turns`).

Every child runs in its own process group, is stopped in a ``finally`` (also on
KeyboardInterrupt), and dies with the coordinator if that is killed (see
:mod:`real.process`). Each also bounds itself: workers, agents and SIPp exit at the run's
deadline (last planned start + longest call + a margin) on their own.

Measured values (per call, from the SIP messages the worker sent and received):
``setup_ms`` INVITE sent → 200 OK, ``pdd_ms`` INVITE → first 18x (post-dial delay),
``invite_tx`` INVITE transmissions (RFC 3261 Timer A retransmissions included),
``duration_s`` 200 OK → BYE sent, ``end_s`` BYE's 200 (or the failure response); a
transferred call lasts until the BYE of its new leg.
``final_code`` 0 means no final response: the call was never sent (no free UAC
slot) or was abandoned at the run deadline.
"""

from __future__ import annotations

import heapq
import importlib.util
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lab.backend import BackendUnavailable, Journal, Progress, Replication
from lab.errors import SpecError
from lab.plan import CallPlan, Talk, Transfer, Turn
from lab.records import CALL_SCHEMA, STEP_SCHEMA, TURN_SCHEMA
from lab.results import conform, timeseries
from lab.spec import Agent as AgentSpec
from lab.spec import Experiment, Media
from loadgen.sipp import sipp_binary
from real import plan_header
from real.agent import Agent, agent_kind
from real.agent_pool import AgentPool, voice_agent_available
from real.agent_pool import pool_size as agent_pool_size
from real.kamailio import Kamailio, kamailio_binary, kamailio_version, module_dir
from real.ports import free_udp_port
from real.relay import Relay
from real.rtcp import quality
from real.turns import turn_rows
from real.uac import CALLS_PER_WORKER, PromptBook, UacPool, UacWorker, job_steps

log = logging.getLogger(__name__)

SOURCE_IP = "127.0.0.1"
MARGIN_S = 10.0  # beyond the last planned start + longest hold + answer delay
SLOT_MARGIN_S = 0.5  # a UAC slot is held this long beyond answer + hold (setup, BYE)
START_LEAD_S = 0.2  # the run clock starts this long after every process is ready
REPLY_BOUND_S = 12.0  # per non-talk step: the longest a reply/prompt/transaction may add
RECORD_KEYS = ("call_id", "scenario", "source_ip", "start_s", "outcome", "final_code",
               "rejected_by", "setup_ms", "pdd_ms", "invite_tx", "duration_s", "end_s",
               "turns", "mos", "rtp_loss", "rtp_jitter_ms", "rtt_ms", "mouth_to_ear_ms",
               "burst_r", "relay_loss_up", "relay_loss_down", "sip_call_id")
MEDIA_KEYS = ("mos", "rtp_loss", "rtp_jitter_ms", "rtt_ms", "mouth_to_ear_ms", "burst_r")


class RealUnavailable(BackendUnavailable):
    """A component of the real stack is missing; the message says how to install it."""


class RealBackend:
    """The real stack on loopback: Kamailio, the agents, the RTP relay and pjsua2 callers.

    Replications run one after another (each owns ports and runs in wall-clock time).
    """

    name = "real"
    parallel = False

    def check(self, exp: Experiment, plans: Sequence[Sequence[CallPlan]], *,
              force: bool = False) -> None:
        """The run caps (``real.max_calls``, ``real.max_duration_s``; ``--force`` lifts
        them) and the components: Kamailio, SIPp, pjsua2 (and the voice agent's)."""
        if not force:
            n = max((len(p) for p in plans), default=0)
            if n > exp.real.max_calls:
                raise SpecError("real.max_calls", f"the plan has {n} calls, over the cap of "
                                f"{exp.real.max_calls} (raise it or pass --force)")
            if exp.duration_s > exp.real.max_duration_s:
                raise SpecError("real.max_duration_s", f"duration_s {exp.duration_s:g} is "
                                f"over the cap of {exp.real.max_duration_s:g} s (raise it "
                                "or pass --force)")
        check_available()
        if agent_kind(exp) == "voice" and (missing := voice_agent_available()) is not None:
            raise RealUnavailable(missing)

    def run(self, exp: Experiment, replication: int, plan: Sequence[CallPlan], *,
            progress: Progress | None = None, journal: Journal | None = None) -> Replication:
        """Place the plan's calls on the local system under test, in real time.

        Each call's record reaches the journal as soon as it ends (a crash keeps it).
        Turns and feature steps come back from :func:`run_calls` with the run's facts.
        """
        import tempfile

        records: list[dict[str, Any]] = []

        def keep(record: dict[str, Any]) -> None:
            record = {**record, "replication": replication}
            records.append(record)
            if journal is not None:
                journal("calls", record)

        def fraction_done(frac: float) -> None:
            if progress is not None:
                progress(frac * exp.duration_s)

        wall0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="siplab-real-") as work:
            facts = dict(run_calls(exp, list(plan), Path(work), keep, fraction_done) or {})
        facts["wall_s"] = time.perf_counter() - wall0
        calls = conform(pd.DataFrame(records), CALL_SCHEMA)
        calls = calls.sort_values("call_id", kind="stable").reset_index(drop=True)
        turns = pd.DataFrame(facts.pop("turns", None) or [])
        if len(turns):
            turns = turns.sort_values(["call_id", "turn"], kind="stable")
        steps = pd.DataFrame(facts.pop("steps", None) or [])
        sim_s = float(calls["end_s"].max()) if len(calls) else 0.0
        facts.update(sim_s=sim_s, events=0)
        return Replication(
            calls=calls, turns=conform(turns.assign(replication=replication), TURN_SCHEMA),
            steps=conform(steps.assign(replication=replication), STEP_SCHEMA),
            timeseries=timeseries(calls, sim_s, exp.deployment.trunk.channels), facts=facts)


def check_available() -> None:
    """Raise :class:`RealUnavailable` unless Kamailio, SIPp and pjsua2 are usable."""
    if kamailio_binary() is None:
        raise RealUnavailable("kamailio not found: apt-get install kamailio")
    try:
        module_dir()
    except FileNotFoundError as exc:
        raise RealUnavailable(str(exc)) from None
    if sipp_binary() is None:
        raise RealUnavailable("sipp not found: apt-get install sip-tester")
    if importlib.util.find_spec("pjsua2") is None:
        raise RealUnavailable("pjsua2 not importable: pip install pjsua2-python")


def peak_concurrency(intervals: list[tuple[float, float]]) -> int:
    """Most intervals ``(start, end)`` open at one time (an end frees before a start)."""
    ends: list[float] = []
    peak = 0
    for start, end in sorted(intervals):
        while ends and ends[0] <= start:
            heapq.heappop(ends)
        heapq.heappush(ends, end)
        peak = max(peak, len(ends))
    return peak


def pool_size(plan: list[CallPlan], answer_s: float, max_concurrent: int,
              busy_s: Callable[[CallPlan], float] | None = None) -> int:
    """UAC worker processes needed: ``ceil(min(peak, max_concurrent) / 4)``, at least 1.

    A call holds its slot from its start for ``answer_s``, then ``busy_s(call)``
    (default: its planned talk time), then :data:`SLOT_MARGIN_S`.
    """
    busy = busy_s or (lambda p: p.talk_s)
    spans = [(p.start_s, p.start_s + answer_s + busy(p) + SLOT_MARGIN_S) for p in plan]
    peak = min(peak_concurrency(spans), max_concurrent)
    return max(1, math.ceil(peak / CALLS_PER_WORKER))


def _busy_s(exp: Experiment) -> Callable[[CallPlan], float]:
    """A call's expected length from answer to BYE: its talk time plus, per turn, the
    reply latency (VAD hangover, mean time to first token, ~0.5 s of STT, TTS and media)
    and the silence that ends the reply (0.6 s), and ~1 s per other feature step."""
    ai = exp.deployment.ai
    turn_s = (ai.vad_ms.mean + ai.llm.ttft_ms.mean) / 1000.0 + 1.1

    def busy(cp: CallPlan) -> float:
        return cp.talk_s + sum(turn_s if isinstance(s, Turn) else 1.0
                               for s in cp.steps if not isinstance(s, Talk))
    return busy


def _peak(plan: list[CallPlan], answer_s: float, exp: Experiment) -> int:
    """Peak concurrent calls at the agent (the voice-agent pool is sized for it)."""
    busy = _busy_s(exp)
    return min(peak_concurrency([(p.start_s, p.start_s + answer_s + busy(p) + SLOT_MARGIN_S)
                                 for p in plan]), exp.real.max_concurrent)


def classify(final_code: int, reason: str, rejected_by: str | None, server: str
             ) -> tuple[str, str | None]:
    """``(outcome, rejected_by)`` of a call from its final response to the INVITE.

    2xx is answered. The proxy marks its own trunk refusals (``X-Siplab-Rejected-By``
    and the reason phrase): 503 Channels Exhausted is *blocked* (the trunk is full,
    the Erlang-B event), 503 CPS Limit is *rejected*. Any other refusal generated by
    the proxy itself (``Server: siplab-kamailio``) is *rejected* by ``proxy``;
    timeouts (408) and everything else are *failed*.
    """
    if 200 <= final_code < 300:
        return "answered", None
    tag = rejected_by or {"channels exhausted": "trunk.channels",
                          "cps limit": "trunk.cps_limit"}.get(reason.strip().lower())
    if tag == "trunk.channels":
        return "blocked", tag
    if tag == "trunk.cps_limit":
        return "rejected", tag
    if "siplab-kamailio" in server and final_code not in (0, 408):
        return "rejected", "proxy"
    return "failed", None


def make_record(plan: CallPlan, event: dict[str, Any], run_start: float,
                media: Media | None = None, relay: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """The call record (CONTRACT.md, calls table) from a worker's ``done`` event.

    With ``media`` (``deployment.media``) an answered call also gets its measured voice
    quality (:func:`real.rtcp.quality`: ``mos``, ``rtp_loss``, ...); ``relay`` adds the
    RTP relay's drop fraction per direction (``relay_loss_up``/``_down``).
    """
    nan = float("nan")
    code = int(event.get("final_code") or 0)
    outcome, rejected_by = classify(code, str(event.get("reason") or ""),
                                    event.get("rejected_by"), str(event.get("server") or ""))
    if event.get("error"):
        outcome, rejected_by, code = "failed", "real.uac_pool", 0
    invite_t, t18x, final_t = event.get("invite_t"), event.get("t18x"), event.get("final_t")
    bye_t, bye_ok_t, disc_t = event.get("bye_t"), event.get("bye_ok_t"), event.get("disc_t")
    answered = outcome == "answered"
    setup_ms = (final_t - invite_t) * 1e3 if answered and invite_t and final_t else nan
    pdd_ms = (t18x - invite_t) * 1e3 if invite_t and t18x else nan
    duration_s = 0.0
    if answered and final_t:
        duration_s = max(0.0, (bye_t or disc_t or final_t) - final_t)
    end_t = (bye_ok_t or disc_t) if answered else (final_t or disc_t)
    return {
        "call_id": plan.call_id, "scenario": plan.scenario, "source_ip": SOURCE_IP,
        "start_s": plan.start_s, "outcome": outcome, "final_code": code,
        "rejected_by": rejected_by, "setup_ms": setup_ms, "pdd_ms": pdd_ms,
        "invite_tx": int(event.get("invite_tx") or 0), "duration_s": duration_s,
        "end_s": (end_t - run_start) if end_t else time.monotonic() - run_start,
        "turns": plan.turns, **_media_fields(event, answered, media, relay),
    }


def _media_fields(event: dict[str, Any], answered: bool, media: Media | None,
                  relay: dict[str, Any] | None) -> dict[str, Any]:
    nan = float("nan")
    out: dict[str, Any] = dict.fromkeys(MEDIA_KEYS, nan)
    if answered and media is not None:
        stats = dict(event.get("media") or {})
        down = (relay or {}).get("down") or {}
        if not stats.get("rtt_us") and down.get("tx"):
            # no RTCP reports from the far end: the relay's own one-way delay stands in
            stats["one_way_ms"] = float(down["delay_ms_total"]) / int(down["tx"])
        q = quality(stats, media)
        out.update({k: q[k] for k in MEDIA_KEYS})
    for direction in ("up", "down"):
        c = (relay or {}).get(direction) or {}
        rx = int(c.get("rx") or 0) - int(c.get("unrouted") or 0)
        out[f"relay_loss_{direction}"] = int(c.get("dropped") or 0) / rx if rx > 0 else nan
    out["sip_call_id"] = event.get("sip_call_id") or None
    return out


def unplaced_record(plan: CallPlan, rejected_by: str | None, run_start: float
                    ) -> dict[str, Any]:
    """The record of a call that got no final response (no UAC slot, or the deadline)."""
    nan = float("nan")
    return {
        "call_id": plan.call_id, "scenario": plan.scenario, "source_ip": SOURCE_IP,
        "start_s": plan.start_s, "outcome": "failed", "final_code": 0,
        "rejected_by": rejected_by, "setup_ms": nan, "pdd_ms": nan, "invite_tx": 0,
        "duration_s": 0.0, "end_s": time.monotonic() - run_start, "turns": plan.turns,
    }


class _Sut:
    """The processes that answer: Kamailio, the agent (SIPp or the voice-agent pool) and,
    when a call is transferred, the human's SIPp UAS; ``started`` holds each to stop."""

    def __init__(self, exp: Experiment, plan: list[CallPlan], workdir: Path,
                 timeout_s: float, started: list[Any]) -> None:
        self.exp, self.workdir, self.timeout_s, self.started = exp, workdir, timeout_s, started
        self.kind = agent_kind(exp)
        self.needs_human = any(isinstance(s, Transfer) for p in plan for s in p.steps)
        self.proxy: Kamailio | None = None
        self.sipp: Agent | None = None
        self.pool: AgentPool | None = None
        self.human: Agent | None = None

    def _sipp(self, spec: AgentSpec, name: str, taken: set[int]) -> Agent:
        """A SIPp UAS on free loopback ports that echoes the caller's RTP (and RTCP)."""
        sip_port = free_udp_port(avoid=taken)
        taken.add(sip_port)
        control_port = free_udp_port(avoid=taken)
        taken.add(control_port)
        media_port = free_udp_port(avoid=taken | {control_port + 1})
        taken |= {media_port, media_port + 1, media_port + 2, media_port + 3}
        agent = Agent(spec, self.workdir, sip_port=sip_port, control_port=control_port,
                      media_port=media_port, timeout_s=self.timeout_s, name=name)
        # echo the caller's RTP (and its RTCP port + 2 twin) so every call has audio
        # flowing back to the caller's ear, which pjsua2 then measures
        agent.sipp.extra_args.append("-rtp_echo")
        self.started.append(agent)
        agent.start()
        return agent

    def start(self, agent_processes: int) -> Kamailio:
        """Start the agent side, then the proxy in front of it (retrying on a port race)."""
        last: Exception | None = None
        if self.kind == "voice":
            self.pool = AgentPool(self.exp.deployment, self.workdir, processes=agent_processes,
                                  seed=self.exp.seed,
                                  deadline=time.monotonic() + self.timeout_s)
            self.started.append(self.pool)
            self.pool.start()
        base = list(self.started)
        ports = list(self.pool.ports) if self.pool else []
        for _ in range(3):
            taken = set(ports)
            self.sipp = self.human = None
            try:
                if self.pool is None:
                    self.sipp = self._sipp(self.exp.deployment.agent, "agent", taken)
                if self.needs_human:  # a person answers at once (the twin's target, too)
                    self.human = self._sipp(AgentSpec(answer_ms=0.0), "human", taken)
                sip_port = free_udp_port(self.exp.real.sip_port, avoid=taken)
                proxy = Kamailio(self.exp.deployment, self.workdir, sip_port=sip_port,
                                 agent_port=self.sipp.sip_port if self.sipp else ports[0],
                                 agent_ports=ports or None,
                                 human_port=self.human.sip_port if self.human else None)
                self.started.append(proxy)
                proxy.start()
                self.proxy = proxy
                return proxy
            except RuntimeError as exc:
                last = exc
                for proc in reversed(self.started[len(base):]):
                    proc.stop()
                del self.started[len(base):]
        raise RuntimeError(f"could not start the local SIP stack: {last}")

    def agent_media(self) -> tuple[str, int] | None:
        """Where the agent's RTP comes from, if known before the call (SIPp's media port);
        a voice agent's is learnt by the relay from its first packet."""
        return ("127.0.0.1", self.sipp.sipp.media_port) if self.sipp else None

    def facts(self) -> dict[str, Any]:
        """What the agent side did, once stopped."""
        out: dict[str, Any] = {"agent_kind": self.kind}
        if self.sipp is not None:
            out["agent_stats"] = {k: v for k, v in self.sipp.stop().items()
                                  if k.endswith("(C)") and v not in ("", "0")}
        if self.pool is not None:
            self.pool.stop()
            out["agent_processes"] = self.pool.n
            out["agent_records"] = {ev: len(self.pool.records(ev)) for ev in (
                "call", "turn", "prompt", "message", "refer", "error")}
        if self.human is not None:
            out["human_stats"] = {k: v for k, v in self.human.stop().items()
                                  if k.endswith("(C)") and v not in ("", "0")}
        return out


def run_calls(exp: Experiment, plan: list[CallPlan], workdir: Path,
              on_record: Callable[[dict[str, Any]], None],
              progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Start the local system under test, place every planned call in real time, stop everything.

    Parameters
    ----------
    exp
        The experiment: ``deployment`` configures proxy, trunk, agent, network (the
        RTP relay) and media; ``real.sip_port`` is the preferred proxy port,
        ``real.max_concurrent`` caps the UAC pool.
    plan
        The calls to place (``start_s`` relative to the run start).
    workdir
        Configs, logs, recordings and statistics of every process go here.
    on_record
        Receives each call's record (keys :data:`RECORD_KEYS`) as soon as it ends.
    progress
        Receives the fraction of calls finished, now and then.

    Returns
    -------
    dict
        Facts of the run: versions, ports, pool size, worker memory, wall time; and
        ``turns`` and ``steps``, lists of row dicts (turns.parquet / steps.parquet).

    Raises
    ------
    RealUnavailable
        When Kamailio, SIPp or pjsua2 is missing.
    """
    check_available()
    t_wall = time.monotonic()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    plan = sorted(plan, key=lambda p: (p.start_s, p.call_id))
    answer_s = exp.deployment.agent.answer_ms / 1000.0
    longest = max((_span_of(p) for p in plan), default=0.0)
    span_s = (plan[-1].start_s if plan else 0.0) + longest + answer_s + MARGIN_S
    n_workers = pool_size(plan, answer_s, exp.real.max_concurrent, _busy_s(exp))
    started: list[Any] = []
    facts: dict[str, Any] = {"backend": "real", "calls_planned": len(plan),
                             "uac_workers": n_workers, "kamailio_version": kamailio_version()}
    session = _Session(exp, plan, workdir, on_record)
    sut = _Sut(exp, plan, workdir, span_s + 60.0, started)
    try:
        if sut.kind == "voice" and (missing := voice_agent_available()) is not None:
            raise RealUnavailable(missing)
        proxy = sut.start(agent_pool_size(_peak(plan, answer_s, exp)))
        relay = Relay(exp.deployment.network, exp.seed, workdir,
                      deadline=time.monotonic() + 60.0 + span_s)
        started.append(relay)
        relay.start()
        session.relay = relay
        session.agent_media = sut.agent_media()
        pool = UacPool(n_workers, workdir, deadline=time.monotonic() + 30.0 + span_s)
        started.append(pool)
        pool.start()
        facts.update(sip_port=proxy.sip_port, uac_ports=[w.port for w in pool.workers],
                     agent_ports=sut.pool.ports if sut.pool else [sut.sipp.sip_port]
                     if sut.sipp else [])
        session.run_start = run_start = time.monotonic() + START_LEAD_S
        facts["setup_wall_s"] = round(run_start - t_wall, 3)
        uri = f"sip:agent@127.0.0.1:{proxy.sip_port}"
        _coordinate(session, pool, uri, span_s, progress)
        facts["uac_rss_mb"] = pool.rss_mb()
        for _, event in pool.quit():
            if event.get("ev") == "done":
                session.finish(event)
        for cp in plan:
            if cp.call_id not in session.done:
                log.warning("call %d: no result by the run deadline", cp.call_id)
                session.emit(unplaced_record(cp, None, run_start))
        if progress is not None:
            progress(1.0)
        facts["proxy_alive_at_end"] = proxy.alive()
        facts.update(sut.facts())
    finally:
        for proc in reversed(started):
            proc.stop()
    facts["turns"] = turn_rows(session.turns, workdir, session.run_start)
    facts["steps"] = session.steps
    facts["wall_s"] = round(time.monotonic() - t_wall, 3)
    return facts


def _span_of(cp: CallPlan) -> float:
    """Upper bound of a call's length beyond its talk time (turn replies, prompts, waits)."""
    extra = sum(REPLY_BOUND_S for s in cp.steps if not isinstance(s, Talk))
    return cp.talk_s + extra


class _Session:
    """The run's bookkeeping: relay ports per call, records, turns and steps."""

    def __init__(self, exp: Experiment, plan: list[CallPlan], workdir: Path,
                 on_record: Callable[[dict[str, Any]], None]) -> None:
        self.exp = exp
        self.by_id = {p.call_id: p for p in plan}
        self.workdir = workdir
        self.on_record = on_record
        self.relay: Relay | None = None
        self.agent_media: tuple[str, int] | None = None
        self.run_start = 0.0
        self.done: set[int] = set()
        self.turns: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        needs_voice = any(isinstance(s, Turn) for p in plan for s in p.steps)
        self.prompts = PromptBook(workdir / "prompts") if needs_voice else None

    def job(self, cp: CallPlan) -> dict[str, Any]:
        """Keyword arguments of :meth:`UacPool.dial` for ``cp``: script, relay, headers."""
        headers: dict[str, str] = {}
        relay_ports = None
        if self.relay is not None:
            relay_ports = self.relay.open(cp.call_id, self.agent_media)
            headers["X-Siplab-Relay"] = str(relay_ports["caller_port"])
        headers[plan_header.HEADER] = plan_header.encode(cp)  # the agent's script
        rec = self.workdir / "recordings" / f"call{cp.call_id}.wav"
        rec.parent.mkdir(exist_ok=True)
        return {"steps": job_steps(cp, self.prompts), "relay": relay_ports,
                "headers": headers, "record": str(rec)}

    def finish(self, event: dict[str, Any]) -> None:
        """Turn a worker's ``done`` event into the call's record, turns and steps."""
        cp = self.by_id.get(int(event["id"]))
        if cp is None or cp.call_id in self.done:
            return
        counters = None
        if self.relay is not None:
            try:
                counters = self.relay.close(cp.call_id)
            except RuntimeError:
                log.warning("call %d: relay counters lost", cp.call_id)
        self.emit(make_record(cp, event, self.run_start, self.exp.deployment.media, counters))
        sip_id = event.get("sip_call_id")
        for t in event.get("turns") or []:
            self.turns.append({"call_id": cp.call_id, "sip_call_id": sip_id, **t})
        for st in event.get("steps") or []:
            end = st.get("t_end")
            self.steps.append({
                "call_id": cp.call_id, "step": int(st["step"]), "kind": st["kind"],
                "start_s": st["t_start"] - self.run_start,
                "duration_ms": (end - st["t_start"]) * 1e3 if end else float("nan"),
                "ok": bool(st["ok"])})

    def emit(self, record: dict[str, Any]) -> None:
        self.done.add(int(record["call_id"]))
        self.on_record(record)

def _coordinate(session: _Session, pool: UacPool, uri: str, span_s: float,
                progress: Callable[[float], None] | None) -> None:
    """Place each call at its planned time and record each as it ends."""
    plan = sorted(session.by_id.values(), key=lambda p: (p.start_s, p.call_id))
    run_start = session.run_start
    nxt = 0
    last_progress = 0.0
    while len(session.done) < len(plan):
        now = time.monotonic() - run_start
        if now > span_s:
            log.warning("real run deadline reached with %d calls open",
                        len(plan) - len(session.done))
            break
        while nxt < len(plan) and plan[nxt].start_s <= now:
            cp = plan[nxt]
            nxt += 1
            worker: UacWorker | None = pool.free_worker()
            if worker is None:
                log.warning("call %d: no free UAC slot at %.3f s", cp.call_id, now)
                session.emit(unplaced_record(cp, "real.uac_pool", run_start))
                continue
            pool.dial(worker, cp.call_id, uri, cp.talk_s, **session.job(cp))
        wait = 0.05 if nxt >= len(plan) else plan[nxt].start_s - now
        for _, event in pool.poll(min(max(wait, 0.0), 0.05)):
            if event.get("ev") == "done":
                session.finish(event)
        if progress is not None and plan and time.monotonic() - last_progress > 0.5:
            last_progress = time.monotonic()
            progress(len(session.done) / len(plan))
