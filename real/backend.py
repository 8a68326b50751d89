"""The real backend: every planned call placed in real time through a real SIP stack.

``siplab run --backend real`` hands each :class:`lab.plan.CallPlan` to
:func:`run_calls`, which builds the local system under test on 127.0.0.1 only::

    pjsua2 callers ──INVITE──► Kamailio (tm, rr, dialog) ──► agent: SIPp UAS, or the
    (loadgen.callers) ◄─18x/200─ trunk channels + cps_limit     voice-agent pool
           │                      user "human" ──────────────► SIPp UAS (transfer target)
           └──── RTP/RTCP ───► impairment emulator ◄──── RTP/RTCP ───┘

Modules are named after the twin's layers: :mod:`real.proxy` (Kamailio),
:mod:`real.trunk` (its admission control), :mod:`real.agent` (SIPp, the voice-agent
pool), :mod:`real.ai` (the agent's turn pipeline), :mod:`real.features` (the agent's
DTMF, MESSAGE, hold, transfer), :mod:`real.network` (the impairment emulator),
:mod:`real.media` (RTCP → MOS), :mod:`real.sip` (outcome and timing from the SIP
trace); :mod:`real.system` starts the answering side.

Process model, and why
----------------------
- **Kamailio** is the SIP edge: a stateful, record-routing proxy whose ``children``
  are ``deployment.proxy.workers``; it enforces the trunk's channel cap
  (``503 Channels Exhausted``) and its call rate (``503 CPS Limit``).
- **The agent** (:func:`real.agent.agent_kind`) is either one **SIPp UAS**
  (:class:`real.agent.SippAgent`: 100, 180, then 200 OK after
  ``deployment.agent.answer_ms``, echoing the caller's RTP) for pure signalling load,
  or, when a scenario has AI turns or feature steps, a **pool of voice agents**
  (:class:`real.agent.VoiceAgentPool`, :mod:`real.voice_agent`),
  ``ceil(peak concurrent calls / 4)`` processes behind Kamailio's dispatcher. Each
  caller's INVITE carries its plan (``X-Siplab-Plan``, :mod:`real.plan_header`) so the
  agent plays the planned reply and prompt lengths.
- **The human** -- only when a call is transferred: a SIPp UAS that answers at once.
- **The impairment emulator** (:class:`real.network.NetworkEmulator`) carries every
  call's RTP and RTCP and applies ``deployment.network`` (delay, jitter, loss) per
  direction.
- **The callers** (:mod:`loadgen.callers`) are pjsua2 processes: they speak planned
  utterances (:class:`loadgen.callers.jobs.PromptBook`), hear and time the replies,
  run the feature steps, and follow a transfer onto its new leg. The pjsua2-python
  wheel is built with PJSUA_MAX_CALLS = 4 and its Endpoint is a per-process
  singleton that must only be called from its own registered thread, so each caller
  process has one Endpoint, at most 4 calls, and a single-threaded event loop. The
  pool has ``ceil(min(peak concurrent calls, real.max_concurrent) / 4)`` processes
  (:func:`caller_processes`).
- **This coordinator** (the calling process, one thread) starts each call at
  ``run_start + plan.start_s`` on ``time.monotonic()`` -- one clock shared by all
  processes of the machine, so the callers' and agents' timestamps need no
  translation -- and turns each caller report into a record for ``on_record`` the
  moment the call ends (:func:`make_record`), so a crash or Ctrl-C keeps every
  finished call. At the end it joins the caller's turns to the agent's
  (:func:`real.ai.turn_rows`).

Every child runs in its own process group, is stopped in a ``finally`` (also on
KeyboardInterrupt), and dies with the coordinator if that is killed (see
:mod:`lab.proc.child`). Each also bounds itself: callers, agents and SIPp exit at the
run's deadline (last planned start + longest call + a margin) on their own. The
coordinator watches them all while calls run: one dying fails the calls it carried
and stops the run (:mod:`real.watchdog`). Children start with every credential
withheld from their environment; only the voice agents get the LLM key
(:mod:`real.credentials`). A call's turns and steps, like its record, are handed on
(``on_row``, the runner's journal) the moment it ends.

Importing this module loads no pjsua2: only the caller and agent processes do.
"""

from __future__ import annotations

import heapq
import importlib.util
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from lab.backend import BackendUnavailable, Journal, Progress, Replication
from lab.errors import SpecError
from lab.plan import CallPlan, Talk, Turn
from lab.records import CALL_SCHEMA, STEP_SCHEMA, TURN_SCHEMA
from lab.results import conform, llm_errors, timeseries
from lab.spec import Experiment, Media
from loadgen.callers.jobs import PromptBook, job_steps
from loadgen.callers.pool import CALLS_PER_WORKER, UacPool, UacWorker
from loadgen.sipp import sipp_binary
from real import plan_header
from real.agent import agent_kind, agent_processes, voice_agent_available
from real.ai import AgentTurnLog, turn_row, turn_rows
from real.credentials import KEY_ENV, withheld
from real.media import media_fields
from real.network import NetworkEmulator
from real.proxy import kamailio_binary, kamailio_version, module_dir, overload_defines
from real.sip import signalling, unplaced_record
from real.system import SystemUnderTest
from real.watchdog import Component, ComponentDied, components, died_record, first_dead

if TYPE_CHECKING:
    from real.sut import ServedSut

log = logging.getLogger(__name__)

MARGIN_S = 10.0  # beyond the last planned start + longest hold + answer delay
SLOT_MARGIN_S = 0.5  # a caller slot is held this long beyond answer + hold (setup, BYE)
START_LEAD_S = 0.2  # the run clock starts this long after every process is ready
REPLY_BOUND_S = 12.0  # per non-talk step: the longest a reply/prompt/transaction may add
RECORD_KEYS = ("call_id", "scenario", "source_ip", "start_s", "outcome", "final_code",
               "rejected_by", "setup_ms", "pdd_ms", "invite_tx", "duration_s", "end_s",
               "turns", "mos", "rtp_loss", "rtp_jitter_ms", "rtt_ms", "mouth_to_ear_ms",
               "burst_r", "relay_loss_up", "relay_loss_down", "sip_call_id")


class RealUnavailable(BackendUnavailable):
    """A component of the real stack is missing; the message says how to install it."""


class RealBackend:
    """The real stack on loopback: Kamailio, the agents, the impairment emulator, pjsua2 callers.

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
        overload_defines(exp.deployment.proxy)  # kind: loss is twin-only (SpecError)
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

        ended_turns: list[dict[str, Any]] = []

        def keep_row(table: str, row: dict[str, Any]) -> None:
            if table == "turns":
                ended_turns.append(row)
            if journal is not None:
                journal(table, {**row, "replication": replication})

        wall0 = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix="siplab-real-") as work:
                facts = dict(run_calls(exp, list(plan), Path(work), keep, progress,
                                       on_row=keep_row) or {})
        except BaseException:  # stopped early: still say what the kept turns met
            warn_llm_errors(pd.DataFrame(ended_turns))
            raise
        facts["wall_s"] = time.perf_counter() - wall0
        calls = conform(pd.DataFrame(records), CALL_SCHEMA)
        calls = calls.sort_values("call_id", kind="stable").reset_index(drop=True)
        turns = pd.DataFrame(facts.pop("turns", None) or [])
        if len(turns):
            turns = turns.sort_values(["call_id", "turn"], kind="stable")
        steps = pd.DataFrame(facts.pop("steps", None) or [])
        warn_llm_errors(turns)
        sim_s = float(calls["end_s"].max()) if len(calls) else 0.0
        facts.update(sim_s=sim_s, events=0)
        return Replication(
            calls=calls, turns=conform(turns.assign(replication=replication), TURN_SCHEMA),
            steps=conform(steps.assign(replication=replication), STEP_SCHEMA),
            timeseries=timeseries(calls, sim_s, exp.deployment.trunk.channels), facts=facts)

    def sut(self, exp: Experiment, workdir: Path, *, base_dir: Path | None = None,
            concurrent: int | None = None) -> ServedSut:
        """The loopback system under test alone (``siplab sut``, ``siplab burst``),
        not yet started: :class:`real.sut.ServedSut`. Raises :class:`RealUnavailable`
        when a component is missing."""
        from real.sut import ServedSut

        check_available()
        if agent_kind(exp) == "voice" and (missing := voice_agent_available()) is not None:
            raise RealUnavailable(missing)
        return ServedSut(exp, workdir, base_dir=base_dir, concurrent=concurrent)

    def burst_replication(self, exp: Experiment, calls: Sequence[dict[str, Any]],
                          run_start: float, workdir: Path, base_dir: Path | None = None
                          ) -> Replication:
        """A Locust burst's tables from its callers' reports (:mod:`real.sut`)."""
        from real.sut import burst_replication

        return burst_replication(exp, calls, run_start, workdir, base_dir)


def warn_llm_errors(turns: pd.DataFrame) -> None:
    """One warning line on stderr when turns' LLM requests failed (the canned reply was
    spoken instead), with the count of each cause."""
    errors = llm_errors(turns)
    if errors:
        counts = ", ".join(f"{cause}: {n}" for cause, n in errors.items())
        print(f"siplab: warning: {sum(errors.values())} of {len(turns)} AI turns failed at "
              f"the LLM endpoint and got the canned reply ({counts})", file=sys.stderr)


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


def caller_processes(plan: list[CallPlan], answer_s: float, max_concurrent: int,
                     busy_s: Callable[[CallPlan], float] | None = None) -> int:
    """Caller processes needed: ``ceil(min(peak, max_concurrent) / 4)``, at least 1.

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


def make_record(plan: CallPlan, event: dict[str, Any], run_start: float,
                media: Media | None = None, counters: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """The call record (CONTRACT.md, calls table; keys :data:`RECORD_KEYS`) from a
    caller's ``done`` event: outcome and timing (:func:`real.sip.signalling`), and with
    ``media`` (``deployment.media``) an answered call's measured voice quality
    (:func:`real.media.media_fields`); ``counters`` are the impairment emulator's for
    the call (its drop fraction per direction, ``relay_loss_up``/``_down``).
    """
    record = signalling(plan, event, run_start)
    return {**record, **media_fields(event, record["outcome"] == "answered", media, counters)}


def run_calls(exp: Experiment, plan: list[CallPlan], workdir: Path,
              on_record: Callable[[dict[str, Any]], None],
              progress: Progress | None = None, *,
              on_row: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Start the local system under test, place every planned call in real time, stop everything.

    Parameters
    ----------
    exp
        The experiment: ``deployment`` configures proxy, trunk, agent, network (the
        impairment emulator) and media; ``real.sip_port`` is the preferred proxy port,
        ``real.max_concurrent`` caps the caller pool.
    plan
        The calls to place (``start_s`` relative to the run start).
    workdir
        Configs, logs, recordings and statistics of every process go here.
    on_record
        Receives each call's record (keys :data:`RECORD_KEYS`) as soon as it ends.
    progress
        Told the calls placed and finished (:class:`lab.backend.Progress`), from the
        first call placed on.
    on_row
        Receives ``("turns", row)`` and ``("steps", row)`` for each of a call's turns
        and feature steps as soon as the call ends (so a Ctrl-C keeps them too).

    Returns
    -------
    dict
        Facts of the run: versions, ports, pool sizes, caller memory, wall time; and
        ``turns`` and ``steps``, lists of row dicts (turns.parquet / steps.parquet).

    Raises
    ------
    RealUnavailable
        When Kamailio, SIPp or pjsua2 is missing.
    ComponentDied
        When a process of the run died mid-run (:mod:`real.watchdog`): the calls it
        carried have failed records, every other process has been stopped.
    """
    check_available()
    t_wall = time.monotonic()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    plan = sorted(plan, key=lambda p: (p.start_s, p.call_id))
    answer_s = exp.deployment.agent.answer_ms / 1000.0
    longest = max((_span_of(p) for p in plan), default=0.0)
    span_s = (plan[-1].start_s if plan else 0.0) + longest + answer_s + MARGIN_S
    n_workers = caller_processes(plan, answer_s, exp.real.max_concurrent, _busy_s(exp))
    started: list[Any] = []
    facts: dict[str, Any] = {"backend": "real", "calls_planned": len(plan),
                             "uac_workers": n_workers, "kamailio_version": kamailio_version()}
    session = _Session(exp, plan, workdir, on_record, on_row, progress)
    # every child is started with the secrets withheld; the voice agents get the LLM key
    with withheld() as secrets:
        sut = SystemUnderTest(exp, plan, workdir, span_s + 60.0, started,
                              secrets={k: v for k, v in secrets.items() if k == KEY_ENV})
        try:
            if sut.kind == "voice" and (missing := voice_agent_available()) is not None:
                raise RealUnavailable(missing)
            proxy = sut.start(agent_processes(_peak(plan, answer_s, exp)))
            network = sut.start_relay(deadline=time.monotonic() + 60.0 + span_s)
            session.network = network
            session.agent_media = sut.agent_media()
            pool = UacPool(n_workers, workdir, deadline=time.monotonic() + 30.0 + span_s)
            started.append(pool)
            pool.start()
            session.watch = components(sut, network, pool.workers)
            facts.update(sip_port=proxy.sip_port, uac_ports=[w.port for w in pool.workers],
                         agent_ports=sut.agent_ports)
            session.run_start = run_start = time.monotonic() + START_LEAD_S
            facts["setup_wall_s"] = round(run_start - t_wall, 3)
            uri = f"sip:agent@127.0.0.1:{proxy.sip_port}"
            _coordinate(session, pool, uri, span_s)
            facts["uac_rss_mb"] = pool.rss_mb()
            _drain(session, pool)
            facts["proxy_alive_at_end"] = proxy.alive()
            facts.update(sut.facts())
        finally:
            for proc in reversed(started):
                proc.stop()
    facts["turns"] = turn_rows(session.turns, workdir, session.run_start)
    facts["steps"] = session.steps
    facts["wall_s"] = round(time.monotonic() - t_wall, 3)
    return facts


def _drain(session: _Session, pool: UacPool) -> None:
    """Collect the callers' last reports; a call still without one gets a failed record."""
    for _, event in pool.quit():
        if event.get("ev") == "done":
            session.finish(event)
    for cp in session.by_id.values():
        if cp.call_id not in session.done:
            log.warning("call %d: no result by the run deadline", cp.call_id)
            session.emit(unplaced_record(cp, None, session.run_start))


DEATH_DRAIN_S = 3.0  # after a death, the other calls in progress get this long to end


def _after_death(session: _Session, pool: UacPool, dead: Component) -> ComponentDied:
    """End the dead component's calls as failed, let the others end briefly, and say so."""
    cause = f"{dead.layer} died"
    affected = dead.affected(session.placed - session.done)
    for call_id in sorted(affected):
        session.emit(died_record(session.by_id[call_id], cause, session.run_start))
    for _, event in pool.quit(drain_s=DEATH_DRAIN_S):
        if event.get("ev") == "done":
            session.finish(event)
    for call_id in sorted(session.placed - session.done):  # cut short by the stop
        session.emit(died_record(session.by_id[call_id], f"stopped: {cause}",
                                 session.run_start))
    return ComponentDied(dead, len(affected), time.monotonic() - session.run_start)


def _span_of(cp: CallPlan) -> float:
    """Upper bound of a call's length beyond its talk time (turn replies, prompts, waits)."""
    extra = sum(REPLY_BOUND_S for s in cp.steps if not isinstance(s, Talk))
    return cp.talk_s + extra


class _Session:
    """The run's bookkeeping: emulator ports per call, records, turns and steps."""

    def __init__(self, exp: Experiment, plan: list[CallPlan], workdir: Path,
                 on_record: Callable[[dict[str, Any]], None],
                 on_row: Callable[[str, dict[str, Any]], None] | None = None,
                 progress: Progress | None = None) -> None:
        self.exp = exp
        self.by_id = {p.call_id: p for p in plan}
        self.workdir = workdir
        self.on_record = on_record
        self.on_row = on_row
        self.progress = progress
        self.network: NetworkEmulator | None = None
        self.agent_media: tuple[str, int] | None = None
        self.watch: list[Component] = []
        self.run_start = 0.0
        self.placed: set[int] = set()
        self.done: set[int] = set()
        self.turns: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.agent_log = AgentTurnLog(workdir)
        needs_voice = any(isinstance(s, Turn) for p in plan for s in p.steps)
        self.prompts = PromptBook(workdir / "prompts") if needs_voice else None

    def job(self, cp: CallPlan) -> dict[str, Any]:
        """Keyword arguments of :meth:`UacPool.dial` for ``cp``: script, emulator ports,
        headers (the emulator's caller-facing port for the proxy; the agent's plan)."""
        headers: dict[str, str] = {}
        relay_ports = None
        if self.network is not None:
            relay_ports = self.network.open(cp.call_id, self.agent_media)
            headers["X-Siplab-Relay"] = str(relay_ports["caller_port"])
        headers[plan_header.HEADER] = plan_header.encode(cp)  # the agent's script
        rec = self.workdir / "recordings" / f"call{cp.call_id}.wav"
        rec.parent.mkdir(exist_ok=True)
        return {"steps": job_steps(cp, self.prompts), "relay": relay_ports,
                "headers": headers, "record": str(rec)}

    def placed_call(self, call_id: int) -> None:
        self.placed.add(call_id)
        self.report()

    def report(self) -> None:
        """Tell the progress callback the calls placed and finished."""
        if self.progress is not None:
            self.progress(time.monotonic() - self.run_start, placed=len(self.placed),
                          finished=len(self.done))

    def finish(self, event: dict[str, Any]) -> None:
        """Turn a caller's ``done`` event into the call's record, turns and steps (each
        handed on at once)."""
        cp = self.by_id.get(int(event["id"]))
        if cp is None or cp.call_id in self.done:
            return
        counters = None
        if self.network is not None and self.network.proc.alive():
            try:
                counters = self.network.close(cp.call_id)
            except RuntimeError:
                log.warning("call %d: impairment emulator counters lost", cp.call_id)
        self.emit(make_record(cp, event, self.run_start, self.exp.deployment.media, counters))
        sip_id = event.get("sip_call_id")
        caller_turns = [{"call_id": cp.call_id, "sip_call_id": sip_id, **t}
                        for t in event.get("turns") or []]
        self.turns += caller_turns
        if caller_turns and self.on_row is not None:
            agent = self.agent_log.update()
            for t in caller_turns:
                self.on_row("turns", turn_row(t, agent.get((cp.call_id, int(t["turn"]))),
                                              self.run_start))
        for st in event.get("steps") or []:
            end = st.get("t_end")
            row = {
                "call_id": cp.call_id, "step": int(st["step"]), "kind": st["kind"],
                "start_s": st["t_start"] - self.run_start,
                "duration_ms": (end - st["t_start"]) * 1e3 if end else float("nan"),
                "ok": bool(st["ok"])}
            self.steps.append(row)
            if self.on_row is not None:
                self.on_row("steps", row)

    def emit(self, record: dict[str, Any]) -> None:
        self.done.add(int(record["call_id"]))
        self.on_record(record)
        self.report()


def _coordinate(session: _Session, pool: UacPool, uri: str, span_s: float) -> None:
    """Place each call at its planned time and record each as it ends; on a component's
    death, end its calls and raise :class:`real.watchdog.ComponentDied`."""
    plan = sorted(session.by_id.values(), key=lambda p: (p.start_s, p.call_id))
    run_start = session.run_start
    nxt = 0
    while len(session.done) < len(plan):
        if (dead := first_dead(session.watch)) is not None:
            raise _after_death(session, pool, dead)
        now = time.monotonic() - run_start
        if now > span_s:
            log.warning("real run deadline reached with %d calls open",
                        len(plan) - len(session.done))
            break
        while nxt < len(plan) and plan[nxt].start_s <= now:
            cp = plan[nxt]
            worker: UacWorker | None = pool.free_worker()
            if worker is None:
                if (dead := first_dead(session.watch)) is not None:
                    raise _after_death(session, pool, dead)
                nxt += 1
                log.warning("call %d: no free caller slot at %.3f s", cp.call_id, now)
                session.emit(unplaced_record(cp, "real.uac_pool", run_start))
                continue
            try:
                pool.dial(worker, cp.call_id, uri, cp.talk_s, **session.job(cp))
            except (OSError, RuntimeError):  # the relay or the caller is gone
                if (dead := first_dead(session.watch)) is not None:
                    raise _after_death(session, pool, dead) from None
                raise
            nxt += 1
            session.placed_call(cp.call_id)
        wait = 0.05 if nxt >= len(plan) else plan[nxt].start_s - now
        for _, event in pool.poll(min(max(wait, 0.0), 0.05)):
            if event.get("ev") == "done":
                session.finish(event)
