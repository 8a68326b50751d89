"""Each twin layer on its own, with timelines worked out by hand: no chance involved.

As SimPy's own tests do, these drive one component with a fixed input and compare
the exact times it produces. Loss is injected as a fixed pattern (aiortc-style), so
retransmission behaviour is checked deterministically.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import pytest

from lab.spec import Network
from twin.environment import Environment
from twin.monitors import BusyTime
from twin.network import TCP_FIRST_RTO_S, Link
from twin.pool import FcfsPool
from twin.proxy import WorkerPool
from twin.sip import Timers
from twin.transaction import INF, NonInvite
from twin.trunk import Trunk


# --------------------------------------------------------------------------- FCFS pool
def test_fcfs_pool_two_servers_exact_starts() -> None:
    pool = FcfsPool(2)
    # arrivals and services chosen so that the third and fourth jobs wait
    jobs = [(0.0, 3.0), (1.0, 1.0), (1.5, 2.0), (1.8, 1.0), (10.0, 1.0)]
    starts = [pool.book(a, s) for a, s in jobs]
    # server A: 0-3; server B: 1-2, then job 3 at 2-4; job 4 at 3 (A frees) -4
    assert starts == [0.0, 1.0, 2.0, 3.0, 10.0]
    assert pool.waited == 2 and pool.jobs == 5
    assert pool.busy_s == pytest.approx(3 + 1 + 2 + 1 + 1)


def test_fcfs_pool_book_many_equals_book() -> None:
    """Batches book exactly as one booking at a time: windows where nobody waits (booked
    over the arrays), windows that start waiting part-way, saturated ones (the loop),
    and single bookings taking turns with batches on one pool."""
    rng = np.random.default_rng(1)
    # 12 servers, 1 s services; the load swings from 0 to 83 % and back every 200 s
    grid = np.arange(0.0, 4000.0, 0.01)
    rate = 5.0 * (1.0 - np.cos(2 * np.pi * grid / 200.0))
    arrivals = grid[rng.random(grid.size) < rate * 0.01]
    services = rng.exponential(1.0, arrivals.size)
    one, many = FcfsPool(12, count_from_s=20.0), FcfsPool(12, count_from_s=20.0)
    starts = [one.book(a, s) for a, s in zip(arrivals.tolist(), services.tolist(), strict=True)]
    got: list[float] = []
    cuts = np.cumsum(rng.integers(1, 400, 1000))
    cuts = cuts[cuts < arrivals.size - 100]
    for k, (lo, hi) in enumerate(zip(np.r_[0, cuts], np.r_[cuts, arrivals.size], strict=True)):
        if k % 7 == 3:  # now and then one by one
            got += [many.book(a, s) for a, s in zip(arrivals[lo:hi].tolist(),
                                                    services[lo:hi].tolist(), strict=True)]
        else:
            got += many.book_many(arrivals[lo:hi], services[lo:hi]).tolist()
    assert got == starts
    assert 2000 < one.waited < arrivals.size // 2
    assert (one.waited, one.jobs) == (many.waited, many.jobs)
    assert many.busy_s == pytest.approx(one.busy_s, rel=1e-12)  # summed in another order


def test_fcfs_pool_busy_counts_only_after_warm_up() -> None:
    pool = FcfsPool(1, count_from_s=5.0)
    pool.book(0.0, 2.0)  # entirely before the cut
    pool.book(4.0, 3.0)  # 4-7: two seconds after it
    pool.book(8.0, 1.0)
    assert pool.busy_s == pytest.approx(3.0)


def test_fcfs_pool_backlog_and_busy_series() -> None:
    busy = BusyTime()
    pool = FcfsPool(1, busy, track_backlog=True)
    for a in (0.0, 0.1, 0.2, 0.3):
        pool.book(a, 0.5)  # starts 0, 0.5, 1.0, 1.5
    assert [pool.backlog(t) for t in (0.3, 0.5, 1.0, 1.5)] == [3, 2, 1, 0]
    assert busy.array(4).tolist() == pytest.approx([1.0, 1.0, 0.0, 0.0])


# --------------------------------------------------------------------------- trunk
def test_trunk_channels_block_and_release() -> None:
    trunk = Trunk(channels=2, cps_limit=None)
    assert [trunk.admit(0.0), trunk.admit(0.1), trunk.admit(0.2)] == [None, None, Trunk.BLOCKED]
    assert trunk.active == 2
    trunk.release()
    assert trunk.admit(0.3) is None and trunk.active == 2


def test_trunk_cps_window_is_one_second_sliding() -> None:
    trunk = Trunk(channels=100, cps_limit=2)
    out = [trunk.admit(t) for t in (0.0, 0.5, 0.9, 1.0, 1.2, 1.49, 1.5)]
    # at 0.9 two admissions lie within the last second; at 1.0 the one at 0.0 has left
    # the window; at 1.2 and 1.49 those at 0.5 and 1.0 are inside; at 1.5 only 1.0 is
    assert out == [None, None, Trunk.CPS, None, Trunk.CPS, Trunk.CPS, None]
    assert trunk.active == 4  # refused attempts hold no channel


# --------------------------------------------------------------------------- proxy
def test_proxy_workers_serve_fcfs_and_refuse_new_calls_on_backlog() -> None:
    proxy = WorkerPool(workers=1, service_s=0.01, queue_limit=2, busy=BusyTime())
    ends = [proxy.book(0.0, new_call=True) for _ in range(3)]
    assert ends == pytest.approx([0.01, 0.02, 0.03])
    assert proxy.backlog(0.0) == 2
    assert proxy.book(0.0, new_call=True) is None  # a fourth INVITE: 503
    assert proxy.book(0.0) == pytest.approx(0.04)  # an in-dialog message still queues
    assert proxy.refused == 1 and proxy.messages == 4
    assert proxy.backlog(0.015) == 2  # the third and fourth wait for the worker


def test_proxy_books_exactly_as_the_fcfs_pool() -> None:
    # WorkerPool.book is FcfsPool.book written out for a fixed service time: the same
    # ends, backlog and busy series on bursty arrivals, across a fold of the series
    rng = np.random.default_rng(7)
    arrivals = np.cumsum(rng.exponential(0.004, 70_000)).tolist()
    proxy = WorkerPool(workers=3, service_s=0.011, queue_limit=None, busy=BusyTime())
    busy = BusyTime()
    pool = FcfsPool(3, busy, track_backlog=True)
    ends = [proxy.book(a) for a in arrivals]
    assert ends == [pool.book(a, 0.011) + 0.011 for a in arrivals]
    assert proxy.waited == pool.waited > 1000 and proxy.messages == pool.jobs
    proxy.flush()
    n = int(arrivals[-1]) + 2
    np.testing.assert_allclose(proxy.busy.array(n), busy.array(n), rtol=1e-12, atol=1e-9)
    limited = WorkerPool(workers=3, service_s=0.011, queue_limit=10**9, busy=BusyTime())
    tracked = FcfsPool(3, track_backlog=True)
    for a in arrivals[:5000]:
        limited.book(a)
        tracked.book(a, 0.011)
    later = arrivals[5000:5100]
    assert [limited.backlog(t) for t in later] == [tracked.backlog(t) for t in later]


def test_proxy_with_zero_service_is_transparent() -> None:
    proxy = WorkerPool(workers=1, service_s=0.0, queue_limit=0, busy=BusyTime())
    assert [proxy.book(t, new_call=True) for t in (0.0, 0.0, 0.5)] == [0.0, 0.0, 0.5]


# --------------------------------------------------------------------------- network
def _link(pattern: list[bool] | None = None, **net: Any) -> Link:
    return Link(Network(**net), np.random.default_rng(0), loss_pattern=pattern)


def test_link_loss_pattern_repeats() -> None:
    link = _link([False, True, True], delay_ms=20.0)
    got = [link.send() for _ in range(7)]
    assert got == [0.02, None, None, 0.02, None, None, 0.02]


def test_link_reliable_loss_adds_doubling_rto() -> None:
    link = _link([True, True, False], delay_ms=10.0)
    # two losses: 0.2 s + 0.4 s of retransmission timeouts, then the delay
    assert link.send_reliable() == pytest.approx(TCP_FIRST_RTO_S * 3 + 0.01)


def test_link_media_pattern_late_packets() -> None:
    link = _link([False, True], delay_ms=30.0)
    got = link.media_array(4, 0.02)
    # a lost packet's audio comes with the next one, a ptime later
    assert got.tolist() == pytest.approx([0.05, 0.07, 0.05, 0.07])


def test_link_random_loss_rate() -> None:
    link = _link(None, loss=0.25)
    lost = sum(link.send() is None for _ in range(20_000))
    assert lost / 20_000 == pytest.approx(0.25, abs=0.01)


# --------------------------------------------------------------------------- non-INVITE
def _run(env: Environment, gen: Generator[float, None, float]) -> list[float]:
    out: list[float] = []

    def proc() -> Generator[float, float, None]:
        out.append((yield from gen))  # type: ignore[misc]

    env.start(proc())
    env.run()
    return out


def _bye(up: list[bool], down: list[bool], service_s: float = 0.0
         ) -> tuple[NonInvite, WorkerPool, Environment]:
    env = Environment()
    proxy = WorkerPool(workers=1, service_s=service_s, queue_limit=None, busy=BusyTime())
    tx = NonInvite(env, proxy, _link(up, delay_ms=10.0), _link(down, delay_ms=10.0),
                   Timers(t1_s=0.5, t2_s=4.0, reliable=False))
    return tx, proxy, env


def test_bye_without_loss_one_round_trip() -> None:
    tx, proxy, env = _bye([False], [False], service_s=0.001)
    forwarded: list[float] = []
    (done,) = _run(env, tx.from_caller(0.0, list.append, forwarded))
    # up 10 ms, the BYE through a worker (1 ms), the 200 through it (1 ms), down 10 ms
    assert forwarded == [pytest.approx(0.011)] and tx.far_rx == pytest.approx(0.011)
    assert done == pytest.approx(0.022)
    assert proxy.messages == 2


def test_bye_first_two_copies_lost_timer_e_schedule() -> None:
    tx, proxy, env = _bye([True, True, False], [False])
    (done,) = _run(env, tx.from_caller(0.0))
    # copies at 0 and 0.5 s are lost; the one sent at 1.5 s arrives 10 ms later
    assert done == pytest.approx(1.5 + 0.02)
    assert proxy.messages == 2


def test_bye_lost_response_absorbed_retransmission() -> None:
    tx, proxy, env = _bye([False], [True, False])
    (done,) = _run(env, tx.from_caller(0.0))
    # the first 200 is lost; the retransmission at 0.5 s is absorbed by the proxy
    # and answered with the stored 200
    assert done == pytest.approx(0.5 + 0.02)
    assert proxy.messages == 3


def test_bye_timer_f_when_everything_is_lost() -> None:
    tx, _, env = _bye([True], [False])
    (done,) = _run(env, tx.from_caller(0.0))
    assert done == INF and env.now == pytest.approx(64 * 0.5)


def test_bye_from_agent_round_trip_and_loss() -> None:
    tx, _, env = _bye([False], [True, False])
    (done,) = _run(env, tx.from_agent(2.0))
    # the copy sent at 2.0 is lost towards the caller; the one at 2.5 gets through
    assert done == pytest.approx(2.5 + 0.02) and tx.far_rx == pytest.approx(2.51)


def test_reliable_transport_sends_once() -> None:
    env = Environment()
    proxy = WorkerPool(workers=1, service_s=0.0, queue_limit=None, busy=BusyTime())
    timers = Timers(t1_s=0.5, t2_s=4.0, reliable=True)
    tx = NonInvite(env, proxy, _link([True, False], delay_ms=10.0), _link([False], delay_ms=10.0),
                   timers, reliable=True)
    (done,) = _run(env, tx.from_caller(0.0))
    assert timers.non_invite == [0.0]
    assert done == pytest.approx(TCP_FIRST_RTO_S + 0.02)


@pytest.mark.parametrize("side", ["caller", "agent"])
def test_reliable_transport_recovers_losses_in_both_directions(side: str) -> None:
    """Over TCP a lost segment is resent by TCP after its RTO (0.2 s, then 0.4 s), in
    either direction: the transaction never loses a message and never retransmits it."""
    env = Environment()
    proxy = WorkerPool(workers=1, service_s=0.0, queue_limit=None, busy=BusyTime())
    timers = Timers(t1_s=0.5, t2_s=4.0, reliable=True)
    # the caller -> agent link is clean; agent -> caller loses twice, then delivers
    tx = NonInvite(env, proxy, _link([False], delay_ms=10.0),
                   _link([True, True, False], delay_ms=10.0), timers, reliable=True)
    gen = tx.from_caller(0.0) if side == "caller" else tx.from_agent(0.0)
    (done,) = _run(env, gen)
    assert timers.non_invite == [0.0]
    assert done == pytest.approx(TCP_FIRST_RTO_S * 3 + 0.02)


# --------------------------------------------------------------------------- environment
def test_calendar_and_simpy_share_one_clock() -> None:
    env = Environment(bucket_s=0.3)
    log: list[tuple[str, float]] = []

    def fast(name: str, delays: list[float]) -> Generator[float, float, None]:
        for d in delays:
            now = yield d
            log.append((name, now))

    def slow() -> Generator[Any, Any, None]:
        for d in (0.25, 0.25, 1.0):
            yield env.timeout(d)
            log.append(("simpy", env.now))

    env.start(fast("a", [0.5, 0.5, 0.01]))
    env.process(slow())
    env.start(fast("b", [0.25, 0.75]))
    env.run()
    # at equal times SimPy's event goes first (as in step()), then the calendar's
    assert log == [("simpy", 0.25), ("b", 0.25), ("simpy", 0.5), ("a", 0.5),
                   ("b", 1.0), ("a", 1.0), ("a", 1.01), ("simpy", 1.5)]
    assert env.waits == 5 and env.now == 1.5


def test_calendar_equal_times_resume_in_waiting_order() -> None:
    env = Environment(bucket_s=10.0)
    order: list[int] = []

    def proc(i: int, d: float) -> Generator[float, float, None]:
        yield d
        order.append(i)

    for i, d in enumerate([3.0, 1.0, 3.0, 1.0, 2.0]):
        env.start(proc(i, d))
    env.run()
    assert order == [1, 3, 4, 0, 2]


def test_calendar_step_and_peek() -> None:
    env = Environment()
    seen: list[float] = []

    def proc() -> Generator[float, float, None]:
        seen.append((yield 2.0))

    env.start(proc())
    env.timeout(1.0)
    assert env.peek() == 1.0
    env.step()
    assert env.now == 1.0 and env.peek() == 2.0
    env.step()
    assert seen == [2.0] and env.peek() == float("inf")
