"""Network layer: the caller-side path to the proxy, one direction at a time.

Each SIP message crossing the path gets a one-way delay (``delay_ms`` plus a
jitter term) and is lost with probability ``loss``. Jitter is a zero-mean normal
deviation with standard deviation ``jitter_ms``, clipped so a message never
arrives before it was sent.

Over UDP a lost message is simply gone: recovering it is the SIP transaction
layer's job (RFC 3261 section 17 timers). Over TCP/TLS the kernel recovers it:
each loss adds a retransmission timeout (RFC 6298, doubling; Linux's 200 ms
floor as the first RTO), and SIP does not retransmit at all.

A link may be given a fixed ``loss_pattern`` instead of random loss (as aiortc's
tests give their in-memory transports one): message ``i`` is lost when
``pattern[i % len(pattern)]`` is true, so loss behaviour can be tested without chance.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

from lab.dists import batched
from lab.spec import Network

BATCH = 4096
TCP_FIRST_RTO_S = 0.2  # Linux TCP_RTO_MIN; RFC 6298 doubles it after each loss
TCP_GIVE_UP_S = 64.0


class Link:
    """One direction of a lossy, jittery path, drawing from its own random stream.

    A link carries either SIP messages (:meth:`send`, :meth:`send_reliable`) or one
    media stream (:meth:`media_delays`), not both: the two draw from the stream in
    their own order.
    """

    def __init__(self, net: Network, rng: np.random.Generator,
                 loss_pattern: Sequence[bool] | None = None) -> None:
        self.delay_s = net.delay_ms / 1000.0
        self.jitter_s = net.jitter_ms / 1000.0
        self.loss = net.loss
        self.loss_pattern = tuple(bool(x) for x in loss_pattern) if loss_pattern else None
        self._rng = rng
        self._delays = self._delay_draws()
        self._losses = self._loss_draws()
        if self.loss_pattern is None and self.loss == 0.0:
            # nothing is ever lost: a send is the next delay draw, a direct call (the
            # twin sends millions of messages; the loss iterator draws no random number)
            self.send = self.send_reliable = self._delays.__next__  # type: ignore[method-assign]

    @property
    def lossless(self) -> bool:
        return (self.loss_pattern is None and self.loss == 0.0) or (
            self.loss_pattern is not None and not any(self.loss_pattern))

    def _delay_draws(self) -> Iterator[float]:
        if self.jitter_s == 0.0:
            return itertools.repeat(self.delay_s)
        return self._batches(0.0)

    def _batches(self, extra_s: float) -> Iterator[float]:
        """Jittered delays ``max(delay + jitter·Z, 0) + extra_s``, a batch at a time."""
        def draw() -> list[float]:
            draws = np.maximum(self.delay_s + self.jitter_s * self._rng.standard_normal(BATCH),
                               0.0)
            return (draws + extra_s).tolist() if extra_s else draws.tolist()
        return batched(draw)

    def _loss_draws(self) -> Iterator[bool]:
        if self.loss_pattern is not None:
            return itertools.cycle(self.loss_pattern)
        if self.loss == 0.0:
            return itertools.repeat(False)
        return batched(lambda: (self._rng.random(BATCH) < self.loss).tolist())

    def send(self) -> float | None:
        """Seconds until the message arrives, or None when it is lost (datagram)."""
        if next(self._losses):
            return None
        return next(self._delays)

    def send_reliable(self) -> float | None:
        """Seconds until a message sent over TCP arrives (None if TCP gives up)."""
        extra, rto = 0.0, TCP_FIRST_RTO_S
        while next(self._losses):
            extra += rto
            rto *= 2.0
            if extra > TCP_GIVE_UP_S:
                return None
        return extra + next(self._delays)

    def media_delays(self, ptime_s: float) -> Callable[[], float]:
        """A draw of one-way media delay: network delay plus one packetisation ``ptime_s``.

        A lost packet's audio arrives with the next one, one ptime later:
        ``delay + ptime + ptime``. Draws are those :meth:`send` would make, in order.
        """
        if self.loss_pattern is None and self.loss == 0.0:
            if self.jitter_s == 0.0:
                value = self.delay_s + ptime_s
                return lambda: value
            return self._batches(ptime_s).__next__
        return self._media_lossy(ptime_s).__next__

    def media_array(self, n: int, ptime_s: float) -> NDArray[np.float64]:
        """``n`` packets' one-way media delay, network delay plus one packetisation
        ``ptime_s``; a lost packet's audio arrives with the next one, one ptime later.

        Drawn at once: the loss flags first (random, or the fixed pattern), then the
        jittered delays, from this link's stream.
        """
        if self.loss_pattern is not None:
            lost = np.resize(np.array(self.loss_pattern, dtype=bool), n)
        elif self.loss > 0.0:
            lost = self._rng.random(n) < self.loss
        else:
            lost = np.zeros(n, dtype=bool)
        if self.jitter_s > 0.0:
            delay = np.maximum(self.delay_s + self.jitter_s * self._rng.standard_normal(n), 0.0)
        else:
            delay = np.full(n, self.delay_s)
        return np.where(lost, self.delay_s + ptime_s + ptime_s, delay + ptime_s)

    def _media_lossy(self, ptime_s: float) -> Iterator[float]:
        losses, delays = self._losses, self._delays
        lost_s = self.delay_s + ptime_s + ptime_s
        for lost in losses:
            yield lost_s if lost else next(delays) + ptime_s
