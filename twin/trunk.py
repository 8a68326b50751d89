"""The trunk: a group of ``channels`` concurrent calls and a carrier's calls-per-second cap.

A call holds one channel from the moment its INVITE is admitted until its BYE
passes; a call arriving when every channel is held is *blocked* (503) and holds
nothing — the Erlang loss system M/G/c/c, whose blocking probability is Erlang B
for any holding-time distribution with the same mean (insensitivity). A carrier
CPS cap counts admissions over the last second; an attempt beyond it is
*rejected* (503) whether or not channels are free.

The channel group is a counter, not a ``simpy.Resource``: releasing a user from a
resource is O(capacity) (PERF-NOTES), and a loss system never queues.
"""

from __future__ import annotations

from collections import deque


class Trunk:
    """Channel counter plus a sliding one-second CPS window."""

    BLOCKED = "trunk.channels"
    CPS = "trunk.cps_limit"

    def __init__(self, channels: int, cps_limit: float | None) -> None:
        self.channels = channels
        self.cps_limit = cps_limit
        self.active = 0
        self._recent: deque[float] = deque()

    def admit(self, now: float) -> str | None:
        """Take a channel at ``now``; return None on success or the refusing layer's name."""
        if self.cps_limit is not None:
            recent = self._recent
            while recent and recent[0] <= now - 1.0:
                recent.popleft()
            if len(recent) >= self.cps_limit:
                return self.CPS
            recent.append(now)
        if self.active >= self.channels:
            return self.BLOCKED
        self.active += 1
        return None

    def release(self) -> None:
        self.active -= 1
