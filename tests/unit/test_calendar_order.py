"""The calendar resumes timeout-only processes in exactly SimPy's order.

The same processes -- each a list of delays, with ties, zero waits and waits far shorter
than a bucket -- are run twice: as SimPy processes yielding ``env.timeout(d)`` on a
plain :class:`simpy.Environment`, and as calendar processes yielding ``d`` on the twin's
:class:`twin.environment.Environment`, with buckets from much narrower to much wider
than the waits. Every resume (who, when) must come in the same order at the same time.
This holds the calendar's shortcuts to SimPy: a process whose next wake-up comes before
anything else due goes on at once, without a trip through the calendar.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.environment import Environment

DELAYS = st.sampled_from([0.0, 0.0001, 0.001, 0.01, 0.25, 0.5, 1.0, 3.0])
PROCS = st.lists(st.lists(DELAYS, min_size=1, max_size=12), min_size=1, max_size=8)


#: A started process's own waits: no sum of DELAYS lands on them, so they tie with nothing
#: (SimPy starts a process from its event queue, the calendar at once: at a tie the two
#: would order the newcomer's first wait differently, which the twin never relies on).
CHILD = [0.000123457, 0.0]


def simpy_log(procs: list[list[float]]) -> list[tuple[int, float]]:
    env = simpy.Environment()
    log: list[tuple[int, float]] = []

    def proc(i: int, delays: list[float]) -> Generator[Any, Any, None]:
        for d in delays:
            yield env.timeout(d)
            log.append((i, env.now))
            if d == 0.25 and i < 100:  # a process starting another, as calls do
                env.process(proc(100 + i, CHILD))

    for i, delays in enumerate(procs):
        env.process(proc(i, delays))
    env.run()
    return log


def calendar_log(procs: list[list[float]], bucket_s: float
                 ) -> tuple[list[tuple[int, float]], int]:
    env = Environment(bucket_s=bucket_s)
    log: list[tuple[int, float]] = []

    def proc(i: int, delays: list[float]) -> Generator[float, float, None]:
        for d in delays:
            now = yield d
            assert now == env.now
            log.append((i, now))
            if d == 0.25 and i < 100:
                env.start(proc(100 + i, CHILD))

    for i, delays in enumerate(procs):
        env.start(proc(i, delays))
    env.run()
    return log, env.waits


@settings(max_examples=300, deadline=None)
@given(procs=PROCS, bucket_s=st.sampled_from([0.0005, 0.02, 0.3, 10.0]))
def test_calendar_resumes_in_simpys_order(procs: list[list[float]], bucket_s: float) -> None:
    want = simpy_log(procs)
    got, waits = calendar_log(procs, bucket_s)
    assert got == want
    assert waits == len(want)  # every resume counted, shortcut or not


def test_a_lone_process_goes_on_without_the_calendar() -> None:
    """Nothing else due: each wait resumes at once, at the right time, and is counted."""
    env = Environment(bucket_s=1.0)
    seen: list[float] = []

    def lone() -> Generator[float, float, None]:
        for d in (0.1, 0.2, 0.3, 2.0, 0.05):
            seen.append((yield d))

    env.start(lone())
    env.run()
    assert seen == [0.1, 0.1 + 0.2, 0.1 + 0.2 + 0.3, 0.1 + 0.2 + 0.3 + 2.0,
                    0.1 + 0.2 + 0.3 + 2.0 + 0.05]
    assert env.waits == 5 and env.now == seen[-1]


def test_a_simpy_event_due_first_stops_the_shortcut() -> None:
    """A SimPy event due between two waits of a lone calendar process runs between them
    (and at an equal time, first)."""
    env = Environment(bucket_s=1.0)
    log: list[tuple[str, float]] = []

    def lone() -> Generator[float, float, None]:
        for d in (0.1, 0.1, 0.05):
            log.append(("calendar", (yield d)))

    def simpy_side() -> Generator[Any, Any, None]:
        for d in (0.15, 0.1):
            yield env.timeout(d)
            log.append(("simpy", env.now))

    env.start(lone())
    env.process(simpy_side())
    env.run()
    assert log == [("calendar", 0.1), ("simpy", 0.15), ("calendar", 0.2),
                   ("simpy", 0.25), ("calendar", 0.25)]
