"""Network layer: the caller-side path to the proxy, one direction at a time.

Each SIP message crossing the path gets a one-way delay (``delay_ms`` plus a
jitter term) and is lost with probability ``loss``. Jitter is a zero-mean normal
deviation with standard deviation ``jitter_ms``, clipped so a message never
arrives before it was sent.

Over UDP a lost message is simply gone: recovering it is the SIP transaction
layer's job (RFC 3261 section 17 timers). Over TCP/TLS the kernel recovers it:
each loss adds a retransmission timeout (RFC 6298, doubling; Linux's 200 ms
floor as the first RTO), and SIP does not retransmit at all.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from lab.spec import Network

BATCH = 4096
TCP_FIRST_RTO_S = 0.2  # Linux TCP_RTO_MIN; RFC 6298 doubles it after each loss
TCP_GIVE_UP_S = 64.0


class Link:
    """One direction of a lossy, jittery path, drawing from its own random stream."""

    def __init__(self, net: Network, rng: np.random.Generator) -> None:
        self.delay_s = net.delay_ms / 1000.0
        self.jitter_s = net.jitter_ms / 1000.0
        self.loss = net.loss
        self._rng = rng
        self._delays = self._delay_draws()
        self._losses = self._loss_draws()

    @property
    def lossless(self) -> bool:
        return self.loss == 0.0

    def _delay_draws(self) -> Iterator[float]:
        if self.jitter_s == 0.0:
            while True:
                yield self.delay_s
        while True:
            draws = self.delay_s + self.jitter_s * self._rng.standard_normal(BATCH)
            yield from np.maximum(draws, 0.0).tolist()

    def _loss_draws(self) -> Iterator[bool]:
        if self.loss == 0.0:
            while True:
                yield False
        while True:
            yield from (self._rng.random(BATCH) < self.loss).tolist()

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
