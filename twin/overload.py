"""SIP overload control: the senders hold back new calls before the proxy collapses.

A SIP proxy over UDP that is past its capacity does not just queue: its late answers
draw INVITE retransmissions (Timer A) and 2xx retransmissions, and each 503 it sends
costs about as much as serving the call (Shen, Schulzrinne & Nahum, "Session
Initiation Protocol (SIP) server overload control: design and evaluation", IPTComm
2008). Answering 503 cannot save it, so goodput falls towards zero beyond capacity
(RFC 5390 asks that it stay near capacity; RFC 6357 discusses designs). The cure is to
have the *upstream senders* refuse the excess before it is sent:

* :class:`RateThrottle` -- RFC 7415, rate-based: the senders together send at most
  ``limit_cps`` new INVITEs, by the leaky bucket of its section 7.3 (increment
  ``T = 1/limit_cps``, tolerance ``TAU = tau_s``);
* :class:`LossFeedback` -- RFC 7339, loss-based: the proxy tells the senders (the
  Via ``oc`` parameter) the fraction of new calls to drop, which it recomputes every
  ``interval_ms`` from its own measured queueing delay; the senders drop each new
  call with that probability.

Only initial INVITEs are refused (in-dialog requests and responses never are), the
refused calls are logged as ``rejected`` with ``rejected_by: proxy.overload_control``
and cost the proxy nothing: they were never sent. The feedback reaches the senders
without delay here (a real ``oc`` value rides on the next response, one network
trip later, and holds for its ``oc-validity``). The real counterpart of ``rate`` is
Kamailio's ``ratelimit`` module in :mod:`real.proxy` (the proxy refuses the excess
itself there, paying for each 503).
"""

from __future__ import annotations

import numpy as np

from lab.spec import LossControl, RateControl
from twin.proxy import WorkerPool

#: ``rejected_by`` of a call its sender refused under overload control.
REJECTED_BY = "proxy.overload_control"


class RateThrottle:
    """RFC 7415 section 7.3: a leaky bucket in front of the proxy (GCRA, ITU-T I.371)."""

    def __init__(self, spec: RateControl) -> None:
        self.t_s = 1.0 / spec.limit_cps  # the bucket's increment per INVITE sent
        self.tau_s = spec.tau_s
        self.x = 0.0  # bucket content (seconds) after the last INVITE sent
        self.lct = 0.0  # when the last INVITE was sent
        self.refused = 0

    def __call__(self, now: float) -> bool:
        """May a new INVITE be sent at ``now``?"""
        x = self.x - (now - self.lct)
        if x > self.tau_s:
            self.refused += 1
            return False
        self.x = (x if x > 0.0 else 0.0) + self.t_s
        self.lct = now
        return True


class LossFeedback:
    """RFC 7339: the proxy's drop fraction from its queueing delay, applied by the senders.

    Every ``interval_ms`` (read at the first new call after each boundary) the proxy
    takes ``q``, the mean queueing delay of the messages that reached it since the last
    reading, and scales the accepted fraction ``a`` by ``target_delay_ms / q`` kept in
    ``[1 / max_step, max_step]``; ``a`` stays in ``[1 - max_loss, 1]``. It is the
    occupancy controller (Cyr et al. 1988, evaluated by Shen et al. 2008) on delay
    rather than utilisation; the bounded step keeps it from overshooting, since a call
    admitted now loads the proxy for its whole life (180, 200, ACK, later the BYE).
    A sender lets a new call through when a uniform draw of the ``proxy.overload``
    stream is below ``a`` (RFC 7339 section 7.3's random drop).
    """

    BATCH = 4096

    def __init__(self, spec: LossControl, pool: WorkerPool, rng: np.random.Generator) -> None:
        self.pool = pool
        self.rng = rng
        self.interval_s = spec.interval_ms / 1000.0
        self.target_s = spec.target_delay_ms / 1000.0
        self.max_step = spec.max_step
        self.min_accept = 1.0 - spec.max_loss
        self.accept = 1.0
        self.next_s = self.interval_s
        self._draws: list[float] = []
        self.refused = 0

    def __call__(self, now: float) -> bool:
        """May a new INVITE be sent at ``now``?"""
        if now >= self.next_s:
            self._update(now)
        if self.accept >= 1.0:
            return True
        draws = self._draws
        if not draws:
            draws.extend(self.rng.random(self.BATCH)[::-1].tolist())
        if draws.pop() < self.accept:
            return True
        self.refused += 1
        return False

    def _update(self, now: float) -> None:
        pool = self.pool
        q = pool.wait_sum_s / pool.wait_n if pool.wait_n else 0.0
        pool.wait_sum_s, pool.wait_n = 0.0, 0
        step = self.max_step  # the factor is target / q, kept in [1/step, step]
        if q * step <= self.target_s:
            phi = step
        elif q >= self.target_s * step:
            phi = 1.0 / step
        else:
            phi = self.target_s / q
        a = self.accept * phi
        self.accept = 1.0 if a > 1.0 else (self.min_accept if a < self.min_accept else a)
        n = (now - self.next_s) // self.interval_s + 1.0
        self.next_s += n * self.interval_s


def throttle(spec: RateControl | LossControl | None, pool: WorkerPool,
             rng: np.random.Generator) -> RateThrottle | LossFeedback | None:
    """The senders' overload control for ``deployment.proxy.overload_control``."""
    if spec is None:
        return None
    if isinstance(spec, RateControl):
        return RateThrottle(spec)
    return LossFeedback(spec, pool, rng)
