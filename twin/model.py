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
from collections.abc import Generator, Iterable
from typing import Any

import simpy

from lab.plan import CallPlan, Talk, Turn
from lab.spec import Experiment
from lab.streams import Streams
from twin.ai import Agent
from twin.features import Features
from twin.media import MediaPath
from twin.monitors import BusyTime, CallLog
from twin.network import Link
from twin.proxy import WorkerPool
from twin.sip import Timers
from twin.transaction import NonInvite
from twin.trunk import Trunk

INF = math.inf
Proc = Generator[simpy.Event, Any, None]


class Twin:
    """One replication of the SIP/trunk twin, assembled from an experiment."""

    def __init__(self, exp: Experiment, replication: int = 0) -> None:
        dep = exp.deployment
        streams = Streams(exp.seed, replication)
        self.exp = exp
        self.env = simpy.Environment()
        self.up = Link(dep.network, streams.rng("network.up"))
        self.down = Link(dep.network, streams.rng("network.down"))
        self.reliable = dep.sip.transport != "udp"
        self.timers = Timers(dep.sip.t1_ms / 1000.0, dep.sip.t2_ms / 1000.0, self.reliable)
        self.proxy_busy = BusyTime()
        self.proxy = WorkerPool(dep.proxy.workers, dep.proxy.service_ms / 1000.0,
                                dep.proxy.queue_limit, self.proxy_busy)
        self.trunk = Trunk(dep.trunk.channels, dep.trunk.cps_limit)
        self.media = MediaPath(dep.media, dep.network)
        self.media_cap = self.media.max_calls  # the RTP relay's or the link's call limit
        self.media_rng = streams.rng("media")
        self.media_active = 0
        self.answer_s = dep.agent.answer_ms / 1000.0
        self.agent = Agent(dep, streams, exp.warmup_s)
        self.tx = NonInvite(self.env, self.proxy, self.up, self.down, self.timers, self._send)
        self.features = Features(self.tx, (dep.media.ptime_ms + dep.media.jitter_buffer_ms)
                                 / 1000.0)
        self.log = CallLog()
        self._invite = self.timers.invite
        self._response = self.timers.response

    # ------------------------------------------------------------------ driving
    def run(self, plan: Iterable[CallPlan], progress: Any = None) -> None:
        """Run every planned call to its end."""
        self.env.process(self._arrivals(plan, progress))
        self.env.run()

    def _arrivals(self, plan: Iterable[CallPlan], progress: Any) -> Proc:
        env = self.env
        process = env.process
        call = self._call
        next_tick = 0.0
        for c in plan:
            if c.start_s > env.now:
                yield env.timeout(c.start_s - env.now)
            process(call(c))
            if progress is not None and env.now >= next_tick:
                progress(env.now)
                next_tick = env.now + 60.0

    def _send(self, link: Link) -> float | None:
        return link.send_reliable() if self.reliable else link.send()

    # ------------------------------------------------------------------ one call
    def _call(self, c: CallPlan) -> Proc:
        env, proxy = self.env, self.proxy
        t0 = env.now
        rec: dict[str, Any] = dict(
            call_id=c.call_id, scenario=c.scenario, source_ip=c.source_ip, start_s=t0,
            rejected_by=None, setup_ms=math.nan, pdd_ms=math.nan, duration_s=0.0,
            turns=c.turns, admit_s=math.nan, release_s=math.nan,
        )
        # --- INVITE client transaction: find the first copy that reaches the proxy
        offsets = self._invite
        arrival, first = INF, len(offsets)
        for k, off in enumerate(offsets):
            d = self._send(self.up)
            if d is not None:
                arrival, first = t0 + off + d, k
                break
        if arrival >= t0 + self.timers.timer_b_s:
            yield env.timeout(t0 + self.timers.timer_b_s - env.now)
            self._end(rec, "failed", 408, len(offsets), env.now)
            return
        yield env.timeout(arrival - env.now)
        f = proxy.book(arrival, new_call=True)
        if f is None:  # proxy backlog full: 503 at once, statelessly
            rec["rejected_by"] = "proxy"
            yield from self._final_failure(rec, t0, arrival, first, 503, "rejected")
            return
        if f > env.now:
            yield env.timeout(f - env.now)
        refused = self.trunk.admit(f)
        if refused is None and self.media_cap is not None:
            if self.media_active >= self.media_cap:  # no relay/link room: 503 at once
                self.trunk.release()
                by_relay = self.media.relay_calls == self.media_cap
                refused = "media.relay" if by_relay else "media.link"
            else:
                self.media_active += 1
        prov = self._arrive(f, self.down)  # 100 Trying at the caller
        if refused is not None:
            rec["rejected_by"] = refused
            outcome = "blocked" if refused == Trunk.BLOCKED else "rejected"
            yield from self._final_failure(rec, t0, f, first, 503, outcome, prov)
            return
        rec["admit_s"] = f
        # --- the agent rings at once and answers after answer_s
        f180 = proxy.book(f)
        assert f180 is not None
        ring = self._arrive(f180, self.down)
        if ring < INF:
            rec["pdd_ms"] = (ring - t0) * 1000.0
        answered_at = f + self.answer_s
        if answered_at > env.now:
            yield env.timeout(answered_at - env.now)
        features = any(not isinstance(s, Talk | Turn) for s in c.steps)
        got_200 = yield from self._deliver_2xx(answered_at, ack_aside=features)
        tx = self._invite_copies(t0, first, min(prov, ring, got_200))
        if got_200 >= t0 + self.timers.timer_b_s and min(prov, ring) == INF:
            # no response at all before Timer B: the caller gives up; the agent's
            # channel is freed when its Timer H ends the unacknowledged 2xx
            yield from self._wait_until(answered_at + self.timers.timer_h_s)
            self._release(rec, env.now)
            self._end(rec, "failed", 408, tx, t0 + self.timers.timer_b_s)
            return
        if got_200 == INF:  # every 2xx lost: Timer H at the agent, call failed
            self._release(rec, env.now)
            self._end(rec, "failed", 408, tx, env.now)
            return
        rec["setup_ms"] = (got_200 - t0) * 1000.0
        if math.isnan(rec["pdd_ms"]):
            rec["pdd_ms"] = rec["setup_ms"]  # 180 lost: the 200 is the first ringback
        # --- talk (and converse with the AI agent), then BYE
        t = got_200
        for k, step in enumerate(c.steps):
            if isinstance(step, Turn):
                t = yield from self.agent.turn(env, c.call_id, k, t + step.caller_speech_s,
                                               step.caller_speech_s, step.agent_speech_s,
                                               step.barge_in_s)
            elif isinstance(step, Talk):
                t += step.hold_s
            else:
                t = yield from self.features.run(c.call_id, k, step, t)
        talk_s = t - got_200
        done = yield from self._bye(rec, t)
        rec["duration_s"] = talk_s
        q = self.media.quality(talk_s, self.media_rng)
        rec["mos"], rec["rtp_loss"], rec["mouth_to_ear_ms"] = q["MOS"], q["loss"], q["delay_ms"]
        self._end(rec, "answered", 200, tx, done)

    # ------------------------------------------------------------------ pieces
    def _arrive(self, sent_at: float, link: Link) -> float:
        """When a message sent at ``sent_at`` reaches the far end (INF when lost)."""
        d = self._send(link)
        return INF if d is None else sent_at + d

    def _wait_until(self, t: float) -> Proc:
        if t > self.env.now:
            yield self.env.timeout(t - self.env.now)

    def _invite_copies(self, t0: float, first: int, response_at: float) -> int:
        """INVITE transmissions: every scheduled copy sent before a response arrived.

        Copies after the first to reach the proxy are absorbed by its transaction
        layer; each costs a worker's service, booked at its arrival time.
        """
        offsets = self._invite
        limit = min(response_at, t0 + self.timers.timer_b_s)
        n = first + 1
        for off in offsets[first + 1 :]:
            if t0 + off >= limit:
                break
            n += 1
            d = self._send(self.up)
            if d is not None:
                self.env.process(self._absorb(t0 + off + d))
        return n

    def _absorb(self, at: float) -> Proc:
        """A retransmission reaching the proxy: a worker recognises it and resends."""
        yield from self._wait_until(at)
        self.proxy.book(max(at, self.env.now))

    def _deliver_2xx(self, sent_at: float, ack_aside: bool = False
                     ) -> Generator[simpy.Event, Any, float]:
        """The agent's 200 OK, retransmitted until the ACK arrives; when the caller got it.

        ``ack_aside`` books the ACK's pass through the proxy from a side process, for
        calls whose next step (a feature) may act before the ACK reaches the proxy.
        """
        env, proxy = self.env, self.proxy
        first_rx = INF
        for off in self._response:
            t = sent_at + off
            yield from self._wait_until(t)
            fin = proxy.book(max(t, env.now))
            assert fin is not None
            rx = self._arrive(fin, self.down)
            if rx == INF:
                continue
            first_rx = min(first_rx, rx)
            ack = self._arrive(rx, self.up)  # the caller ACKs each 2xx it receives
            if ack == INF:
                continue
            if ack_aside:
                env.process(self._absorb(ack))
                return first_rx
            yield from self._wait_until(ack)
            proxy.book(max(ack, env.now))
            return first_rx
        yield from self._wait_until(sent_at + self.timers.timer_h_s)
        return first_rx

    def _final_failure(self, rec: dict[str, Any], t0: float, sent_at: float, first: int,
                       code: int, outcome: str, prov: float = INF) -> Proc:
        """A final non-2xx answer from the proxy (Timer G until the hop-by-hop ACK)."""
        env = self.env
        got = INF
        for off in self._response:
            rx = self._arrive(sent_at + off, self.down)
            if rx < INF:
                got = rx
                break
        tx = self._invite_copies(t0, first, min(prov, got))
        if got == INF:
            yield from self._wait_until(t0 + self.timers.timer_b_s)
            self._end(rec, "failed", 408, tx, env.now)
            return
        ack = self._arrive(got, self.up)
        if ack < INF:
            yield from self._wait_until(ack)
            self.proxy.book(max(ack, env.now))
        self._end(rec, outcome, code, tx, got)

    def _bye(self, rec: dict[str, Any], sent_at: float) -> Generator[simpy.Event, Any, float]:
        """BYE client transaction; returns when the caller's transaction ended.

        The trunk channel is freed when the proxy passes the BYE on; if no copy ever
        gets there, when Timer F ends the caller's wait (the dialog is gone anyway).
        """
        freed: list[float] = []

        def release(at: float) -> None:
            self._release(rec, at)
            freed.append(at)

        done = yield from self.tx.from_caller(sent_at, release)
        if done < INF:
            return done
        end = self.env.now  # Timer F
        if not freed:
            self._release(rec, end)
        return end

    def _release(self, rec: dict[str, Any], at: float) -> None:
        self.trunk.release()
        if self.media_cap is not None:
            self.media_active -= 1
        rec["release_s"] = at

    def _end(self, rec: dict[str, Any], outcome: str, code: int, tx: int, end: float) -> None:
        rec["outcome"] = outcome
        rec["final_code"] = code
        rec["invite_tx"] = tx
        rec["end_s"] = end
        self.log.add(**rec)
