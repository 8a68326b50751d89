"""Non-INVITE client transactions through the stateful proxy (RFC 3261 section 17.1.2).

A BYE, MESSAGE, re-INVITE-as-timed-here, REFER or NOTIFY is sent by one side and
retransmitted on Timer E (T1 doubling, capped at T2) until its final response
arrives or Timer F (64·T1) ends the wait. The proxy's server transaction forwards
the first copy that reaches it; later copies are absorbed — one worker service
each — and answered with the stored final response once there is one.

Both the call flow (BYE) and the call features use this one implementation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import Any

import simpy

from twin.network import Link
from twin.proxy import WorkerPool
from twin.sip import Timers

INF = math.inf
Gen = Generator[simpy.Event, Any, float]


class NonInvite:
    """Runs non-INVITE transactions between the caller and the agent, via the proxy."""

    def __init__(self, env: simpy.Environment, proxy: WorkerPool, up: Link, down: Link,
                 timers: Timers, send: Callable[[Link], float | None]) -> None:
        self.env = env
        self.proxy = proxy
        self.up = up
        self.down = down
        self.timers = timers
        self.send = send
        self.far_rx = INF  # when the far end received the last transaction's request

    def from_caller(self, sent_at: float,
                    on_forward: Callable[[float], None] | None = None) -> Gen:
        """Caller → proxy → agent, 200 back. Returns when the caller got the final
        response (INF on Timer F). ``on_forward(t)`` runs once, when the proxy has
        passed the request on (a BYE frees the trunk channel then)."""
        env, proxy = self.env, self.proxy
        forwarded = False
        for off in self.timers.non_invite:
            d = self.send(self.up)
            if d is None:
                continue
            yield from self._wait_until(sent_at + off + d)
            fin = proxy.book(env.now)
            assert fin is not None
            if not forwarded:  # the agent answers at once; its 200 crosses the proxy
                yield from self._wait_until(fin)
                self.far_rx = fin
                forwarded = True
                if on_forward is not None:
                    on_forward(fin)
                fin = proxy.book(env.now)
                assert fin is not None
            d = self.send(self.down)  # the (stored) final response to this copy
            if d is not None:
                return fin + d
        yield from self._wait_until(sent_at + self.timers.timer_f_s)
        return INF

    def from_agent(self, sent_at: float) -> Gen:
        """Agent → proxy → caller, the caller's answer back. Returns when the agent got
        the final response (INF on Timer F)."""
        env, proxy = self.env, self.proxy
        for off in self.timers.non_invite:
            yield from self._wait_until(sent_at + off)
            fin = proxy.book(env.now)
            assert fin is not None
            d = self.send(self.down)
            if d is None:
                continue
            self.far_rx = fin + d
            d2 = self.send(self.up)  # the caller answers at once
            if d2 is None:
                continue
            yield from self._wait_until(fin + d + d2)
            back = proxy.book(env.now)
            assert back is not None
            return back
        yield from self._wait_until(sent_at + self.timers.timer_f_s)
        return INF

    def _wait_until(self, t: float) -> Generator[simpy.Event, Any, None]:
        if t > self.env.now:
            yield self.env.timeout(t - self.env.now)
