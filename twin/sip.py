"""SIP transaction timers (RFC 3261 section 17) as transmission schedules.

Over an unreliable transport the client transaction retransmits:

* INVITE (Timer A): at T1, then doubling — offsets 0, 0.5, 1.5, 3.5, 7.5, 15.5,
  31.5 s with T1 = 500 ms — until any response arrives; Timer B = 64·T1 = 32 s
  ends it with a locally generated 408.
* non-INVITE, e.g. BYE (Timer E): at T1 doubling but capped at T2 (4 s) —
  0, 0.5, 1.5, 3.5, 7.5, 11.5, … — until a final response; Timer F = 64·T1.
* a UAS retransmits its 2xx to an INVITE (section 13.3.1.4), and a server
  transaction its non-2xx final response (Timer G), at T1 doubling capped at T2
  until the ACK arrives; Timer H = 64·T1 ends the wait.

Over TCP/TLS no SIP message is retransmitted (Timers A, E, G are not started);
Timers B, F and H still bound the wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


def invite_offsets(t1_s: float, timer_b_s: float) -> list[float]:
    """Send times (relative to the first) of every INVITE transmission before Timer B."""
    out, t, gap = [], 0.0, t1_s
    while t < timer_b_s:
        out.append(t)
        t += gap
        gap *= 2.0
    return out


def capped_offsets(t1_s: float, t2_s: float, limit_s: float) -> list[float]:
    """Send times of a request or response retransmitted at T1 doubling up to T2 (E, G)."""
    out, t, gap = [], 0.0, t1_s
    while t < limit_s:
        out.append(t)
        t += gap
        gap = min(gap * 2.0, t2_s)
    return out


@dataclass(frozen=True)
class Timers:
    """The transmission schedules of one deployment's SIP transport."""

    t1_s: float
    t2_s: float
    reliable: bool

    @property
    def timer_b_s(self) -> float:
        return 64.0 * self.t1_s

    timer_f_s = timer_b_s
    timer_h_s = timer_b_s

    @cached_property
    def invite(self) -> list[float]:
        return [0.0] if self.reliable else invite_offsets(self.t1_s, self.timer_b_s)

    @cached_property
    def non_invite(self) -> list[float]:
        return [0.0] if self.reliable else capped_offsets(self.t1_s, self.t2_s, self.timer_b_s)

    @cached_property
    def response(self) -> list[float]:
        """Timer G (and the UAS's 2xx retransmission) schedule."""
        return [0.0] if self.reliable else capped_offsets(self.t1_s, self.t2_s, self.timer_b_s)
