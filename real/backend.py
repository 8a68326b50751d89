"""The real backend: every planned call placed in real time through a real SIP stack.

``siplab run --backend real`` hands each :class:`lab.plan.CallPlan` to
:func:`run_calls`, which builds the local system under test on 127.0.0.1 only::

    pjsua2 UAC workers ──INVITE──► Kamailio (tm, rr, dialog) ──► SIPp UAS (agent)
       (callers)        ◄─18x/200─  trunk channels + cps_limit  ◄─ 180, 200 after answer_ms

Process model, and why
----------------------
- **Kamailio** (:mod:`real.kamailio`) is the SIP edge: a stateful, record-routing
  proxy whose ``children`` are ``deployment.proxy.workers``; it enforces the trunk's
  channel cap with dialog profiles (``503 Channels Exhausted``) and its call rate with
  a counter per time window (``503 CPS Limit``).
- **SIPp** (:mod:`real.agent`) is the answering agent: 100, 180, then 200 OK after
  ``deployment.agent.answer_ms``; it answers the caller's BYE.
- **pjsua2 UAC workers** (:mod:`real.uac`, :mod:`real.uac_worker`) are the callers.
  The pjsua2-python wheel is built with PJSUA_MAX_CALLS = 4 and its Endpoint is a
  per-process singleton that must only be called from its own registered thread,
  so each worker is a separate process with one Endpoint, at most 4 calls, and a
  single-threaded event loop (``libHandleEvents`` between reads of its command
  pipe). The pool has ``ceil(min(peak concurrent calls, real.max_concurrent) / 4)``
  workers.
- **This coordinator** (the calling process, one thread) starts each call at
  ``run_start + plan.start_s`` on ``time.monotonic()`` -- one clock shared by all
  processes of the machine, so the workers' timestamps need no translation --
  and turns each worker report into a record for ``on_record`` the moment the call
  ends, so a crash or Ctrl-C keeps every finished call.

Every child runs in its own process group, is stopped in a ``finally`` (also on
KeyboardInterrupt), and dies with the coordinator if that is killed (see
:mod:`real.process`). Each also bounds itself: workers and SIPp exit at the run's
deadline (last planned start + longest hold + a margin) on their own.

Measured values (per call, from the SIP messages the worker sent and received):
``setup_ms`` INVITE sent → 200 OK, ``pdd_ms`` INVITE → first 18x (post-dial delay),
``invite_tx`` INVITE transmissions (RFC 3261 Timer A retransmissions included),
``duration_s`` 200 OK → BYE sent, ``end_s`` BYE's 200 (or the failure response).
``final_code`` 0 means no final response: the call was never sent (no free UAC
slot) or was abandoned at the run deadline.
"""

from __future__ import annotations

import heapq
import importlib.util
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.plan import CallPlan, Talk, Turn
from lab.spec import Experiment, Media
from loadgen.sipp import sipp_binary
from real.agent import Agent
from real.kamailio import Kamailio, kamailio_binary, kamailio_version, module_dir
from real.ports import free_udp_port
from real.relay import Relay
from real.rtcp import quality
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


class RealUnavailable(RuntimeError):
    """A component of the real stack is missing; the message says how to install it."""


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


def pool_size(plan: list[CallPlan], answer_s: float, max_concurrent: int) -> int:
    """UAC worker processes needed: ``ceil(min(peak, max_concurrent) / 4)``, at least 1."""
    spans = [(p.start_s, p.start_s + answer_s + p.talk_s + SLOT_MARGIN_S) for p in plan]
    peak = min(peak_concurrency(spans), max_concurrent)
    return max(1, math.ceil(peak / CALLS_PER_WORKER))


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


def _start_sut(exp: Experiment, workdir: Path, timeout_s: float,
               started: list[Any]) -> tuple[Kamailio, Agent]:
    """Start the agent and the proxy on free loopback ports (retrying on a port race)."""
    last: Exception | None = None
    for _ in range(3):
        taken: set[int] = set()
        agent_port = free_udp_port(avoid=taken)
        taken.add(agent_port)
        control_port = free_udp_port(avoid=taken)
        taken.add(control_port)
        media_port = free_udp_port(avoid=taken | {control_port + 1})
        taken |= {media_port, media_port + 1, media_port + 2, media_port + 3}
        sip_port = free_udp_port(exp.real.sip_port, avoid=taken)
        try:
            agent = Agent(exp.deployment.agent, workdir, sip_port=agent_port,
                          control_port=control_port, media_port=media_port,
                          timeout_s=timeout_s)
            # echo the caller's RTP (and its RTCP port + 2 twin) so every call has
            # audio flowing back to the caller's ear, which pjsua2 then measures
            agent.sipp.extra_args.append("-rtp_echo")
            started.append(agent)
            agent.start()
            proxy = Kamailio(exp.deployment, workdir, sip_port=sip_port,
                             agent_port=agent_port)
            started.append(proxy)
            proxy.start()
            return proxy, agent
        except RuntimeError as exc:
            last = exc
            for proc in reversed(started):
                proc.stop()
            started.clear()
    raise RuntimeError(f"could not start the local SIP stack: {last}")


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
    n_workers = pool_size(plan, answer_s, exp.real.max_concurrent)
    started: list[Any] = []
    facts: dict[str, Any] = {"backend": "real", "calls_planned": len(plan),
                             "uac_workers": n_workers, "kamailio_version": kamailio_version()}
    session = _Session(exp, plan, workdir, on_record)
    try:
        proxy, agent = _start_sut(exp, workdir, span_s + 60.0, started)
        relay = Relay(exp.deployment.network, exp.seed, workdir,
                      deadline=time.monotonic() + 60.0 + span_s)
        started.append(relay)
        relay.start()
        session.relay = relay
        session.agent_media = ("127.0.0.1", agent.sipp.media_port)
        pool = UacPool(n_workers, workdir, deadline=time.monotonic() + 30.0 + span_s)
        started.append(pool)
        pool.start()
        facts.update(sip_port=proxy.sip_port, agent_port=agent.sip_port,
                     uac_ports=[w.port for w in pool.workers])
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
        facts["agent_stats"] = {k: v for k, v in agent.stop().items()
                                if k.endswith("(C)") and v not in ("", "0")}
        facts["proxy_alive_at_end"] = proxy.alive()
    finally:
        for proc in reversed(started):
            proc.stop()
    facts["turns"] = session.turn_rows()
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
        try:
            from real import plan_header

            headers[plan_header.HEADER] = plan_header.encode(cp)
        except ImportError:  # the voice agent's side is optional
            pass
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

    def turn_rows(self) -> list[dict[str, Any]]:
        """Turns with the agent's parts joined in (by SIP Call-ID and turn index)."""
        agent = agent_turn_log(self.workdir)
        rows = []
        for t in self.turns:
            a = agent.get((t.get("sip_call_id"), int(t["turn"])), {})
            v2v = t.get("voice_to_voice_ms")
            parts = {k: _num(a.get(k)) for k in ("vad_ms", "stt_ms", "llm_ms", "tts_ms",
                                                 "queue_ms")}
            known = [v for v in parts.values() if not math.isnan(v)]
            network = (v2v - sum(known)) if v2v is not None and known else float("nan")
            rows.append({
                "call_id": t["call_id"], "turn": int(t["turn"]),
                "voice_to_voice_ms": _num(v2v), **parts, "network_ms": network,
                "start_s": t["t_speech_end"] - self.run_start,
                "caller_speech_s": t["caller_speech_s"], "agent_speech_s": t["agent_speech_s"],
            })
        return rows


def _num(value: Any) -> float:
    return float(value) if value is not None else float("nan")


def agent_turn_log(workdir: Path) -> dict[tuple[str | None, int], dict[str, Any]]:
    """The voice agent's per-turn JSON lines (``agent*turns*.jsonl`` in ``workdir``),
    keyed by (SIP Call-ID, turn index)."""
    out: dict[tuple[str | None, int], dict[str, Any]] = {}
    for path in sorted(workdir.glob("**/*turns*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            cid = row.get("Call-ID") or row.get("call_id") or row.get("sip_call_id")
            if cid is not None and row.get("turn") is not None:
                out[(str(cid), int(row["turn"]))] = row
    return out


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
