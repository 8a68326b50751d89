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

from twin.environment import Environment
from twin.network import Link
from twin.proxy import WorkerPool
from twin.sip import Timers

INF = math.inf
Gen = Generator[float, None, float]


class NonInvite:
    """Runs non-INVITE transactions between the caller and the agent, via the proxy."""

    def __init__(self, env: Environment, proxy: WorkerPool, up: Link, down: Link,
                 timers: Timers, reliable: bool = False) -> None:
        self.env = env
        self.proxy = proxy
        self.up = up
        self.down = down
        self.timers = timers
        # a message's delay to the far end (None: lost), each direction
        self.send_up = up.send_reliable if reliable else up.send
        self.send_down = down.send_reliable if reliable else down.send
        self.far_rx = INF  # when the far end received the last transaction's request

    def from_caller(self, sent_at: float,
                    on_forward: Callable[[Any, float], None] | None = None,
                    arg: Any = None) -> Gen:
        """Caller → proxy → agent, 200 back. Returns when the caller got the final
        response (INF on Timer F). ``on_forward(arg, t)`` runs once, when the proxy has
        passed the request on (a BYE frees the trunk channel then)."""
        env, proxy = self.env, self.proxy
        forwarded = False
        for off in self.timers.non_invite:
            d = self.send_up()
            if d is None:
                continue
            wake = sent_at + off + d
            if wake > self.env.now:
                yield wake - self.env.now
            if forwarded:  # a later copy: the server transaction absorbs it
                fin = proxy.absorb(env.now)
            else:  # the agent answers at once; its 200 crosses the proxy
                out = proxy.book(env.now)
                assert out is not None
                if out > self.env.now:
                    yield out - self.env.now
                self.far_rx = out
                forwarded = True
                if on_forward is not None:
                    on_forward(arg, out)
                back = proxy.book(env.now)
                assert back is not None
                fin = back
            d = self.send_down()  # the (stored) final response to this copy
            if d is not None:
                return fin + d
        wake = sent_at + self.timers.timer_f_s
        if wake > self.env.now:
            yield wake - self.env.now
        return INF

    def from_agent(self, sent_at: float) -> Gen:
        """Agent → proxy → caller, the caller's answer back. Returns when the agent got
        the final response (INF on Timer F)."""
        env, proxy = self.env, self.proxy
        for off in self.timers.non_invite:
            wake = sent_at + off
            if wake > self.env.now:
                yield wake - self.env.now
            fin = proxy.book(env.now)
            assert fin is not None
            d = self.send_down()
            if d is None:
                continue
            self.far_rx = fin + d
            d2 = self.send_up()  # the caller answers at once
            if d2 is None:
                continue
            wake = fin + d + d2
            if wake > self.env.now:
                yield wake - self.env.now
            back = proxy.book(env.now)
            assert back is not None
            return back
        wake = sent_at + self.timers.timer_f_s
        if wake > self.env.now:
            yield wake - self.env.now
        return INF

