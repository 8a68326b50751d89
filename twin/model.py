"""The assembled twin: callers, the network, the proxy, the trunk and the answering agent.

Topology (one experiment, one replication)::

    caller UA ──network (delay, jitter, loss)── proxy workers ── trunk ── agent UAS

Every call is one SimPy process that follows a real SIP call flow and touches the
shared layers exactly when its messages reach them:

1. INVITE, retransmitted on Timer A until any response (Timer B → 408);
   the proxy answers 100 Trying, checks the trunk (channels → 503 blocked,
   CPS cap → 503 rejected) and forwards to the agent;
2. the agent sends 180 Ringing at once and 200 OK after ``answer_ms``; the 200 is
   retransmitted (T1 doubling, capped at T2) until the ACK reaches the agent;
3. both sides talk for the scenario's time — or hold a conversation with the AI
   agent, turn by turn (:mod:`twin.ai`) — then the caller sends BYE
   (Timer E / F); the channel is released when the BYE passes the trunk.

Between shared resources the process computes times arithmetically and yields
only when it must be at a given time to book a shared resource, which keeps a
lossless call to about five simulation events.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any

import numpy as np

from lab.memory import sparse_gc
from lab.plan import CallPlan, Dtmf, Message, OnHold, Talk, Transfer, Turn, Turns
from lab.spec import Experiment
from lab.streams import Streams
from twin.ai import Pipeline
from twin.environment import Environment, Proc
from twin.features import Features
from twin.media import MediaPath
from twin.monitors import BusyTime, CallLog
from twin.network import Link
from twin.overload import REJECTED_BY, throttle
from twin.proxy import WorkerPool
from twin.sip import Timers
from twin.transaction import NonInvite
from twin.trunk import Trunk
from twin.turns import Block

INF = math.inf
_TALK = frozenset((Talk, Turn, Turns))  # script steps that send no SIP message


class Twin:
    """One replication of the SIP/trunk twin, assembled from an experiment."""

    def __init__(self, exp: Experiment, replication: int = 0,
                 plan: Sequence[CallPlan] = ()) -> None:
        dep = exp.deployment
        self.plan = plan
        streams = Streams(exp.seed, replication)
        self.exp = exp
        # calendar buckets of ~32 wake-ups (a call waits ~8 times)
        self.env = Environment(bucket_s=min(1.0, max(1e-3, 32.0 * exp.duration_s / max(
            1, 8 * len(plan)))))
        self.up = Link(dep.network, streams.rng("network.up"))
        self.down = Link(dep.network, streams.rng("network.down"))
        self.reliable = dep.sip.transport != "udp"
        self.timers = Timers(dep.sip.t1_ms / 1000.0, dep.sip.t2_ms / 1000.0, self.reliable)
        self.proxy_busy = BusyTime()
        ctl = dep.proxy.overload_control
        self.proxy = WorkerPool(dep.proxy.workers, dep.proxy.service_ms / 1000.0,
                                dep.proxy.queue_limit, self.proxy_busy,
                                reject_cost=dep.proxy.reject_cost,
                                retransmission_cost=dep.proxy.retransmission_cost,
                                measure_wait=ctl is not None and ctl.kind == "loss")
        # the senders' overload control (None: they send every call)
        self.throttle = throttle(ctl, self.proxy, streams.rng("proxy.overload")
                                 ) if ctl is not None else None
        self.trunk = Trunk(dep.trunk.channels, dep.trunk.cps_limit)
        self.media = MediaPath(dep.media, dep.network)
        self.media_cap = self.media.max_calls  # the RTP relay's or the link's call limit
        self.media_rng = streams.rng("media")
        self.media_active = 0
        self.answer_s = dep.agent.answer_ms / 1000.0
        self.agent = Pipeline(self.env, dep, streams, plan, exp.warmup_s)
        self.tx = NonInvite(self.env, self.proxy, self.up, self.down, self.timers,
                            self.reliable)
        self._send_up, self._send_down = self.tx.send_up, self.tx.send_down
        self.features = Features(self.tx, (dep.media.ptime_ms + dep.media.jitter_buffer_ms)
                                 / 1000.0)
        self.log = CallLog()
        self._log_add = self.log.add
        self.rated: array[int] = array("q")  # call log rows of answered calls, in hang-up order
        self._invite = self.timers.invite
        self._response = self.timers.response
        self._runs_of = self.agent.runs.of
        self._turns = self.agent.runs.total > 0  # any AI turns in the plan at all
        self._timer_b = self.timers.timer_b_s  # read several times a call: not a property
        self._blank: dict[str, Any] = dict(  # a call's record before anything happened
            call_id=0, scenario="", source_ip="", start_s=0.0, rejected_by=None,
            setup_ms=math.nan, pdd_ms=math.nan, duration_s=0.0, turns=0, admit_s=math.nan,
            release_s=math.nan, mos=math.nan, rtp_loss=math.nan, mouth_to_ear_ms=math.nan)

    # ------------------------------------------------------------------ driving
    def run(self, progress: Any = None) -> None:
        """Run every planned call to its end (on Ctrl-C, rate what finished, re-raise)."""
        self.env.start(self._arrivals(self.plan, progress))
        try:
            with sparse_gc():
                self.env.run()
        finally:
            self.proxy.flush()  # its busy series is complete from here on
            self.log.complete()  # a Ctrl-C between two appends leaves a ragged row
            self.features.complete()
            self.rate_media()

    def _arrivals(self, plan: Iterable[CallPlan], progress: Any) -> Proc:
        env = self.env
        process = env.start
        call = self._call
        admit = self.throttle
        next_tick = 0.0
        for c in plan:
            if c.start_s > env.now:
                yield c.start_s - env.now
            if admit is not None and not admit(env.now):
                self._held_back(c)
                continue
            process(call(c))
            if progress is not None and env.now >= next_tick:
                progress(env.now)
                next_tick = env.now + 60.0

    def rate_media(self) -> None:
        """Each answered call's voice quality, in hang-up order, into the call log.

        Each call's rating takes one draw of the ``media`` stream (its first packet's
        delay) in the order the calls hung up; rating them all at once at the end gives
        the same values as rating each one as it hangs up, and is vectorised.
        """
        if not self.rated:
            return
        rows = np.frombuffer(self.rated, dtype=np.int64).copy()
        rows = rows[rows < len(self.log)]  # not a row an interruption cut short
        self.rated = array("q")
        talk = self.log.column("duration_s")[rows]  # each call's talk time
        q = self.media.qualities(talk, self.media_rng.standard_normal(rows.size))
        self.log.fill(rows, mos=q["MOS"], rtp_loss=q["loss"], mouth_to_ear_ms=q["delay_ms"])

    def _held_back(self, c: CallPlan) -> None:
        """A call its sender refused under overload control: never sent, logged 503."""
        rec = self._blank.copy()
        rec["call_id"], rec["scenario"], rec["source_ip"], rec["start_s"] = (
            c.call_id, c.scenario, c.source_ip, self.env.now)
        rec["rejected_by"] = REJECTED_BY
        self._end(rec, "rejected", 503, 0, self.env.now)

    # ------------------------------------------------------------------ one call
    def _call(self, c: CallPlan) -> Proc:
        env, proxy = self.env, self.proxy
        t0 = env.now
        runs = self._runs_of(c.call_id) if self._turns else None
        rec = self._blank.copy()
        rec["call_id"], rec["scenario"], rec["source_ip"], rec["start_s"] = (
            c.call_id, c.scenario, c.source_ip, t0)
        if runs:
            rec["turns"] = sum(r.n for r in runs)
        timer_b = self._timer_b
        # --- INVITE client transaction: find the first copy that reaches the proxy
        offsets = self._invite
        arrival, first = INF, len(offsets)
        for k, off in enumerate(offsets):
            d = self._send_up()
            if d is not None:
                arrival, first = t0 + off + d, k
                break
        if arrival >= t0 + timer_b:
            yield t0 + timer_b - env.now
            self._end(rec, "failed", 408, len(offsets), env.now)
            return
        yield arrival - env.now
        f = proxy.book(arrival, new_call=True)
        if f is None:  # proxy backlog full: 503, statelessly, once a worker has read it
            rec["rejected_by"] = "proxy"
            sent = proxy.reject(arrival)
            yield from self._final_failure(rec, t0, sent, first, 503, "rejected")
            return
        if f > env.now:
            yield f - env.now
        refused = self.trunk.admit(f)
        if refused is None and self.media_cap is not None:
            if self.media_active >= self.media_cap:  # no relay/link room: 503 at once
                self.trunk.release()
                by_relay = self.media.relay_calls == self.media_cap
                refused = "media.relay" if by_relay else "media.link"
            else:
                self.media_active += 1
        d = self._send_down()  # 100 Trying at the caller
        prov = INF if d is None else f + d
        if refused is not None:  # the proxy answers 503 (a worker's reject_cost)
            rec["rejected_by"] = refused
            outcome = "blocked" if refused == Trunk.BLOCKED else "rejected"
            sent = proxy.reject(f)
            yield from self._final_failure(rec, t0, sent, first, 503, outcome, prov)
            return
        rec["admit_s"] = f
        # --- the agent rings at once and answers after answer_s
        f180 = proxy.book(f)
        assert f180 is not None
        d = self._send_down()
        ring = INF if d is None else f180 + d
        if ring < t0 + timer_b:  # (later, Timer B has ended the caller's transaction)
            rec["pdd_ms"] = (ring - t0) * 1000.0
        answered_at = f + self.answer_s
        if answered_at > env.now:
            yield answered_at - env.now
        features = False
        for s in c.script:
            if type(s) not in _TALK:
                features = True
        talk = _Talk(self, c, rec, runs or ()) if runs or features else None
        on_rx = None
        if talk is not None and runs and runs[0].first == 0:
            # the caller talks to the agent once it hears the 200 OK

            def on_rx(rx: float) -> None:
                if rx < t0 + timer_b or min(prov, ring) < INF:  # answered
                    talk.converse(runs[0], rx)
        got_200 = yield from self._deliver_2xx(answered_at, ack_aside=features, on_rx=on_rx)
        tx = self._invite_copies(t0, first, min(prov, ring, got_200))
        if got_200 >= t0 + timer_b and min(prov, ring) >= t0 + timer_b:
            # no response at all before Timer B (an overloaded proxy's come too late):
            # the caller gives up; the agent's
            # channel is freed when its Timer H ends the unacknowledged 2xx
            wake = answered_at + self.timers.timer_h_s
            if wake > self.env.now:
                yield wake - self.env.now
            self._release(rec, env.now)
            self._end(rec, "failed", 408, tx, t0 + timer_b)
            return
        if got_200 == INF:  # every 2xx lost: Timer H at the agent, call failed
            self._release(rec, env.now)
            self._end(rec, "failed", 408, tx, env.now)
            return
        rec["setup_ms"] = (got_200 - t0) * 1000.0
        if math.isnan(rec["pdd_ms"]):
            rec["pdd_ms"] = rec["setup_ms"]  # 180 lost: the 200 is the first ringback
        # --- talk (and converse with the AI agent), then BYE
        if talk is not None:
            talk.tx, talk.got_200 = tx, got_200
            yield from talk.run(0, 0, got_200)
            return
        t = got_200  # talk only: no AI turns, no features
        for step in c.script:
            t += step.hold_s  # type: ignore[union-attr]
        done = yield from self._bye(rec, t)
        rec["duration_s"] = t - got_200
        self.rated.append(len(self.log))
        self._end(rec, "answered", 200, tx, done)

    # ------------------------------------------------------------------ pieces
    def _arrive_down(self, sent_at: float) -> float:
        """When a message the proxy sends at ``sent_at`` reaches the caller (INF: lost)."""
        d = self._send_down()
        return INF if d is None else sent_at + d

    def _arrive_up(self, sent_at: float) -> float:
        """When a message the caller sends at ``sent_at`` reaches the proxy (INF: lost)."""
        d = self._send_up()
        return INF if d is None else sent_at + d


    def _invite_copies(self, t0: float, first: int, response_at: float) -> int:
        """INVITE transmissions: every scheduled copy sent before a response arrived.

        Copies after the first to reach the proxy are absorbed by its transaction
        layer; each costs a worker's service, booked at its arrival time.
        """
        offsets = self._invite
        limit = min(response_at, t0 + self._timer_b)
        n = first + 1
        while n < len(offsets) and t0 + offsets[n] < limit:  # mostly: no copy at all
            d = self._send_up()
            if d is not None:
                self.env.start(self._absorb(t0 + offsets[n] + d))
            n += 1
        return n

    def _absorb(self, at: float) -> Proc:
        """A retransmission reaching the proxy: a worker recognises it and resends
        (``retransmission_cost`` x ``service_ms``)."""
        if at > self.env.now:
            yield at - self.env.now
        self.proxy.absorb(max(at, self.env.now))

    def _cross(self, at: float) -> Proc:
        """A message reaching the proxy at ``at`` that a worker forwards."""
        if at > self.env.now:
            yield at - self.env.now
        self.proxy.book(max(at, self.env.now))

    def _deliver_2xx(self, sent_at: float, ack_aside: bool = False,
                     on_rx: Callable[[float], None] | None = None
                     ) -> Generator[float, None, float]:
        """The agent's 200 OK, retransmitted until the ACK arrives; when the caller got it.

        ``ack_aside`` returns as soon as the caller has a 2xx and leaves its ACK (and the
        agent's retransmissions while ACKs are lost) to a side process, for calls whose
        next step (a feature) may act before the ACK reaches the proxy.
        ``on_rx(t)`` learns when the caller first received a 2xx, as soon as that is
        known (the caller starts talking then, whatever becomes of its ACK).
        """
        env, proxy = self.env, self.proxy
        send_up, send_down = self._send_up, self._send_down
        first_rx = INF
        for off in self._response:
            t = sent_at + off
            if t > self.env.now:
                yield t - self.env.now
            fin = proxy.book(max(t, env.now))
            assert fin is not None
            d = send_down()
            if d is None:
                continue
            rx = fin + d
            if first_rx == INF and on_rx is not None:
                on_rx(rx)
            first_rx = min(first_rx, rx)
            if ack_aside:
                # the caller goes on as soon as it has the 2xx, whatever becomes of its
                # ACK: the ACK, and the agent's retransmissions while ACKs are lost,
                # run aside (the caller's next step does not wait for them)
                env.start(self._ack_aside(sent_at, off, rx))
                return first_rx
            d = send_up()  # the caller ACKs each 2xx it receives
            if d is None:
                continue
            ack = rx + d
            if ack > self.env.now:
                yield ack - self.env.now
            proxy.book(max(ack, env.now))
            return first_rx
        wake = sent_at + self.timers.timer_h_s
        if wake > self.env.now:
            yield wake - self.env.now
        return first_rx

    def _ack_aside(self, sent_at: float, off: float, rx: float) -> Proc:
        """The caller's ACK of the 2xx (sent at ``sent_at + off``) it received at ``rx``.

        While the ACKs are lost the agent goes on retransmitting its 2xx (the rest of the
        Timer G schedule, until Timer H) and the caller ACKs each copy it receives; the
        first ACK to arrive crosses the proxy and ends the retransmissions."""
        env, proxy = self.env, self.proxy
        later = iter([o for o in self._response if o > off])
        while True:
            d = self._send_up()
            if d is not None:  # this ACK arrives: it crosses the proxy like any message
                yield from self._cross(rx + d)
                return
            while True:  # the next retransmitted 2xx that reaches the caller
                nxt = next(later, None)
                if nxt is None:
                    return  # Timer H: the agent stops retransmitting
                t = sent_at + nxt
                if t > env.now:
                    yield t - env.now
                fin = proxy.book(max(t, env.now))
                assert fin is not None
                d = self._send_down()
                if d is not None:
                    rx = fin + d
                    break

    def _final_failure(self, rec: dict[str, Any], t0: float, sent_at: float, first: int,
                       code: int, outcome: str, prov: float = INF) -> Proc:
        """A final non-2xx answer from the proxy (Timer G until the hop-by-hop ACK)."""
        env = self.env
        got = INF
        for off in self._response:
            rx = self._arrive_down(sent_at + off)
            if rx < INF:
                got = rx
                break
        tx = self._invite_copies(t0, first, min(prov, got))
        if got == INF or min(got, prov) >= t0 + self._timer_b:
            # every copy lost, or nothing before Timer B ended the caller's wait
            wake = t0 + self._timer_b
            if wake > self.env.now:
                yield wake - self.env.now
            self._end(rec, "failed", 408, tx, env.now)
            return
        ack = self._arrive_up(got)
        if ack < INF:
            if ack > self.env.now:
                yield ack - self.env.now
            self.proxy.book(max(ack, env.now))
        self._end(rec, outcome, code, tx, got)

    def _bye(self, rec: dict[str, Any], sent_at: float) -> Generator[float, None, float]:
        """BYE client transaction; returns when the caller's transaction ended.

        The trunk channel is freed when the proxy passes the BYE on; if no copy ever
        gets there, when Timer F ends the caller's wait (the dialog is gone anyway).
        """
        done = yield from self.tx.from_caller(sent_at, self._release, rec)
        if done < INF:
            return done
        end = self.env.now  # Timer F
        if math.isnan(rec["release_s"]):  # never forwarded
            self._release(rec, end)
        return end

    def _release(self, rec: dict[str, Any], at: float) -> None:
        self.trunk.release()
        if self.media_cap is not None:
            self.media_active -= 1
        rec["release_s"] = at

    def _end(self, rec: dict[str, Any], outcome: str, code: int, tx: int, end: float) -> None:
        r = rec
        self._log_add(r["call_id"], r["scenario"], r["source_ip"], r["start_s"], outcome, code,
                     r["rejected_by"], r["setup_ms"], r["pdd_ms"], tx, r["duration_s"],
                     r["turns"], r["mos"], end, r["admit_s"], r["release_s"], r["rtp_loss"],
                     r["mouth_to_ear_ms"])


class _Talk:
    """The talk phase of one answered call: its script from the 200 OK to the BYE.

    A run of AI turns is handed to the agent (:meth:`twin.ai.Pipeline.converse`) and the
    call goes on where the conversation ends: at once if the call's process is waiting
    for it, else when the process gets there (the first run starts when the caller
    hears the 200 OK, while its ACK may still be on the way).
    """

    __slots__ = ("c", "ended", "got_200", "handed", "next", "rec", "runs", "twin", "tx")

    def __init__(self, twin: Twin, c: CallPlan, rec: dict[str, Any],
                 runs: Sequence[Block]) -> None:
        self.twin, self.c, self.rec, self.runs = twin, c, rec, runs
        self.tx = 0
        self.got_200 = INF
        self.handed: int | None = None  # script item of the run handed to the agent
        self.ended: float | None = None  # when that conversation ended, once it has
        self.next: tuple[int, int] | None = None  # (script item, step) to resume at

    def converse(self, run: Block, t: float) -> None:
        self.handed, self.ended = run.first, None
        self.twin.agent.converse(run.g0, run.n, t, self._ended)

    def _ended(self, t: float) -> None:
        if self.next is None:  # the call's process has not reached this point yet
            self.ended = t
            return
        pos, k = self.next
        self.next = self.handed = None
        self.twin.env.start(self._resume(pos, k, t))

    def _resume(self, pos: int, k: int, t: float) -> Proc:
        env = self.twin.env
        if t > env.now:
            yield t - env.now
        yield from self.run(pos, k, t)

    def run(self, pos: int, k: int, t: float) -> Proc:
        """Play the script from item ``pos`` (expanded step ``k``), talking from ``t``."""
        twin, c, env = self.twin, self.c, self.twin.env
        script = c.script
        while pos < len(script):
            step = script[pos]
            if type(step) is Turns or type(step) is Turn:
                run = self.runs[0]  # mostly the only one
                if run.first != pos:
                    run = next(r for r in self.runs if r.first == pos)
                if self.handed != pos:
                    self.converse(run, max(t, env.now))
                if self.ended is None:  # the conversation goes on: resume when it ends
                    self.next = (run.last, k + run.n)
                    return
                t, self.ended, self.handed = self.ended, None, None
                if t > env.now:
                    yield t - env.now
                pos, k = run.last, k + run.n
                continue
            if type(step) is Talk:
                t += step.hold_s
            else:
                assert isinstance(step, (Dtmf, Message, OnHold, Transfer))
                t = yield from twin.features.run(c.call_id, k, step, t)
            pos += 1
            k += 1
        rec = self.rec
        talk_s = t - self.got_200
        done = yield from twin._bye(rec, t)
        rec["duration_s"] = talk_s
        twin.rated.append(len(twin.log))  # rated at the end (Twin.rate_media)
        twin._end(rec, "answered", 200, self.tx, done)
