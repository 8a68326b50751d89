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
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.plan import CallPlan
from lab.spec import Experiment
from loadgen.sipp import sipp_binary
from real.agent import Agent
from real.kamailio import Kamailio, kamailio_binary, kamailio_version, module_dir
from real.ports import free_udp_port
from real.uac import CALLS_PER_WORKER, UacPool, UacWorker

log = logging.getLogger(__name__)

SOURCE_IP = "127.0.0.1"
MARGIN_S = 10.0  # beyond the last planned start + longest hold + answer delay
SLOT_MARGIN_S = 0.5  # a UAC slot is held this long beyond answer + hold (setup, BYE)
START_LEAD_S = 0.2  # the run clock starts this long after every process is ready
RECORD_KEYS = ("call_id", "scenario", "source_ip", "start_s", "outcome", "final_code",
               "rejected_by", "setup_ms", "pdd_ms", "invite_tx", "duration_s", "end_s",
               "turns")


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


def make_record(plan: CallPlan, event: dict[str, Any], run_start: float) -> dict[str, Any]:
    """The call record (CONTRACT.md, calls table) from a worker's ``done`` event."""
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
        "turns": plan.turns,
    }


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
        The experiment: ``deployment`` configures proxy, trunk and agent;
        ``real.sip_port`` is the preferred proxy port, ``real.max_concurrent`` caps
        the UAC pool.
    plan
        The calls to place (``start_s`` relative to the run start).
    workdir
        Configs, logs and statistics of every process go here.
    on_record
        Receives each call's record (keys :data:`RECORD_KEYS`) as soon as it ends.
    progress
        Receives the fraction of calls finished, now and then.

    Returns
    -------
    dict
        Facts of the run: versions, ports, pool size, worker memory, wall time.

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
    longest = max((p.talk_s for p in plan), default=0.0)
    span_s = (plan[-1].start_s if plan else 0.0) + longest + answer_s + MARGIN_S
    n_workers = pool_size(plan, answer_s, exp.real.max_concurrent)
    started: list[Any] = []
    facts: dict[str, Any] = {"backend": "real", "calls_planned": len(plan),
                             "uac_workers": n_workers, "kamailio_version": kamailio_version()}
    try:
        proxy, agent = _start_sut(exp, workdir, span_s + 60.0, started)
        pool = UacPool(n_workers, workdir, deadline=time.monotonic() + 30.0 + span_s)
        started.append(pool)
        pool.start()
        facts.update(sip_port=proxy.sip_port, agent_port=agent.sip_port,
                     uac_ports=[w.port for w in pool.workers])
        run_start = time.monotonic() + START_LEAD_S
        facts["setup_wall_s"] = round(run_start - t_wall, 3)
        uri = f"sip:agent@127.0.0.1:{proxy.sip_port}"
        done = _coordinate(plan, pool, uri, run_start, span_s, on_record, progress)
        facts["uac_rss_mb"] = pool.rss_mb()
        remaining = [p for p in plan if p.call_id not in done]
        by_id = {p.call_id: p for p in remaining}
        for _, event in pool.quit():
            cp = by_id.pop(int(event["id"]), None) if event.get("ev") == "done" else None
            if cp is not None:
                _emit(make_record(cp, event, run_start), done, on_record)
        for cp in by_id.values():
            log.warning("call %d: no result by the run deadline", cp.call_id)
            _emit(unplaced_record(cp, None, run_start), done, on_record)
        if progress is not None:
            progress(1.0)
        facts["agent_stats"] = {k: v for k, v in agent.stop().items()
                                if k.endswith("(C)") and v not in ("", "0")}
        facts["proxy_alive_at_end"] = proxy.alive()
    finally:
        for proc in reversed(started):
            proc.stop()
    facts["wall_s"] = round(time.monotonic() - t_wall, 3)
    return facts


def _emit(record: dict[str, Any], done: set[int], on_record: Callable[[dict[str, Any]], None]
          ) -> None:
    done.add(int(record["call_id"]))
    on_record(record)


def _coordinate(plan: list[CallPlan], pool: UacPool, uri: str, run_start: float,
                span_s: float, on_record: Callable[[dict[str, Any]], None],
                progress: Callable[[float], None] | None) -> set[int]:
    """Place each call at its planned time and record each as it ends; returns done ids."""
    by_id = {p.call_id: p for p in plan}
    done: set[int] = set()
    nxt = 0
    last_progress = 0.0
    while len(done) < len(plan):
        now = time.monotonic() - run_start
        if now > span_s:
            log.warning("real run deadline reached with %d calls open", len(plan) - len(done))
            break
        while nxt < len(plan) and plan[nxt].start_s <= now:
            cp = plan[nxt]
            nxt += 1
            worker: UacWorker | None = pool.free_worker()
            if worker is None:
                log.warning("call %d: no free UAC slot at %.3f s", cp.call_id, now)
                _emit(unplaced_record(cp, "real.uac_pool", run_start), done, on_record)
                continue
            pool.dial(worker, cp.call_id, uri, cp.talk_s)
        wait = 0.05 if nxt >= len(plan) else plan[nxt].start_s - now
        for _, event in pool.poll(min(max(wait, 0.0), 0.05)):
            if event.get("ev") == "done" and int(event["id"]) in by_id:
                _emit(make_record(by_id[int(event["id"])], event, run_start), done, on_record)
        if progress is not None and plan and time.monotonic() - last_progress > 0.5:
            last_progress = time.monotonic()
            progress(len(done) / len(plan))
    return done
