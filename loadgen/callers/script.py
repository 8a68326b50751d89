"""A call's script on the caller's side: steps as generators of waits.

A caller process runs up to four calls on one thread (pjsua2's callbacks arrive
inside ``libHandleEvents`` on that thread), so no step may block. Each step is a
generator that yields *waits* -- functions that say whether the step may go on
(the prompt has been played, a reply's onset was heard, the re-INVITE's 200 came
back) -- and the main loop calls :meth:`Script.advance` between event pumps,
which runs the script until it waits on something not yet true.

Every wait is bounded (:func:`until`): the agent's reply, prompt or REFER within
:data:`REPLY_TIMEOUT_S`, a non-INVITE transaction within :data:`NON_INVITE_TIMEOUT_S`
-- shorter than Timer F (64·T1 = 32 s, RFC 3261 section 17.1.2.2), so a step that
gets no answer is recorded as failed while the call goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

Wait = Callable[[], bool]

REPLY_TIMEOUT_S = 8.0  # longest wait for the agent's reply, IVR prompt or REFER to start
NON_INVITE_TIMEOUT_S = 8.0  # shorter than Timer F (32 s): a bounded wait for a 200


def until(t_end: float, cond: Wait) -> Wait:
    """A wait that is over when ``cond()`` holds or at ``t_end`` (monotonic)."""
    return lambda: cond() or time.monotonic() >= t_end


def at(t_end: float) -> Wait:
    """A wait that is over at ``t_end`` (monotonic)."""
    return lambda: time.monotonic() >= t_end


class Script:
    """A call's steps, run from the caller's main loop.

    Parameters
    ----------
    steps
        The generator of waits that plays the call's script.
    """

    def __init__(self, steps: Iterator[Wait]) -> None:
        self.steps = steps
        self.waiting: Wait | None = None
        self.done = False

    def advance(self) -> None:
        """Run the script until it waits on something not yet true (main thread only)."""
        if self.done:
            return
        while self.waiting is None or self.waiting():
            try:
                self.waiting = next(self.steps)
            except StopIteration:
                self.done = True
                return
