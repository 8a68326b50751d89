"""FCFS pools (twin.pool.FcfsPool, the proxy's twin.proxy.WorkerPool): exact answers
worked out by hand from the Kiefer–Wolfowitz recursion — a job starts at
max(arrival, earliest server-free time) and frees that server at start + service.

Conventions pinned here: a server freed exactly at an arrival serves it without a
wait (not counted as waited); busy time counts only after ``count_from_s``; the
backlog at ``now`` counts jobs whose start is still later than ``now``.
"""

from __future__ import annotations

import numpy as np
import pytest

from twin.monitors import BusyTime
from twin.pool import FcfsPool
from twin.proxy import WorkerPool


# ------------------------------------------------------------------------- FcfsPool.book
def test_one_server_queue_by_hand() -> None:
    pool = FcfsPool(1)
    # 0-2; 1 waits to 2-3; 3 arrives as the server frees: no wait, 3-4; 5-6
    starts = [pool.book(a, s) for a, s in [(0.0, 2.0), (1.0, 1.0), (3.0, 1.0), (5.0, 1.0)]]
    assert starts == [0.0, 2.0, 3.0, 5.0]
    assert pool.waited == 1 and pool.jobs == 4
    assert pool.busy_s == 5.0


def test_three_servers_by_hand() -> None:
    pool = FcfsPool(3)
    jobs = [(0.0, 4.0), (0.0, 1.0), (0.0, 2.0), (0.5, 1.0), (0.5, 1.0), (0.5, 5.0)]
    # free times 4, 1, 2 -> job 3 takes the one free at 1 (1-2), job 4 the one at 2
    # (2-3), job 5 the one at 2 (from job 3: 2-7)
    assert [pool.book(a, s) for a, s in jobs] == [0.0, 0.0, 0.0, 1.0, 2.0, 2.0]
    assert pool.waited == 3 and pool.servers == 3
    assert pool.busy_s == 4 + 1 + 2 + 1 + 1 + 5


def test_busy_time_is_cut_at_count_from() -> None:
    pool = FcfsPool(2, count_from_s=10.0)
    pool.book(0.0, 5.0)  # before the cut: 0
    pool.book(8.0, 4.0)  # 8-12: 2 s after it
    pool.book(9.0, 1.0)  # 9-10: ends on the cut: 0
    pool.book(10.0, 3.0)  # 10-13 on the server freed at 10: 3 s
    assert pool.busy_s == 5.0
    assert FcfsPool(1, count_from_s=0.0).count_from_s == 0.0


def test_backlog_counts_jobs_not_yet_started() -> None:
    pool = FcfsPool(1, track_backlog=True)
    for a in (0.0, 0.0, 0.0):
        pool.book(a, 1.0)  # starts 0, 1, 2
    assert pool.backlog(0.0) == 2
    assert pool.backlog(0.999) == 2
    assert pool.backlog(1.0) == 1  # the job starting at 1 has started
    assert pool.backlog(2.0) == 0
    untracked = FcfsPool(1)
    untracked.book(0.0, 1.0)
    untracked.book(0.0, 1.0)
    assert untracked.backlog(0.0) == 0  # only a pool asked to track a backlog keeps one


def test_busy_series_gets_each_interval() -> None:
    busy = BusyTime()
    pool = FcfsPool(1, busy)
    pool.book(0.0, 1.5)  # 0-1.5
    pool.book(0.5, 1.0)  # 1.5-2.5
    assert busy.array(3).tolist() == pytest.approx([1.0, 1.0, 0.5])


# -------------------------------------------------------------------- FcfsPool.book_many
def test_book_many_refuses_pools_with_a_series_or_backlog() -> None:
    a, s = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError, match=r"^book_many: only for pools without a busy series "
                                         r"or backlog$"):
        FcfsPool(1, BusyTime()).book_many(a, s)
    with pytest.raises(ValueError, match="book_many"):
        FcfsPool(1, track_backlog=True).book_many(a, s)


def test_book_many_small_window_by_hand() -> None:
    # fewer jobs than BATCH_MIN: booked one by one; a server freed exactly on an
    # arrival serves it without a wait; busy time counts from count_from_s = 1.5
    pool = FcfsPool(1, count_from_s=1.5)
    got = pool.book_many(np.array([0.0, 1.0, 1.0, 3.5]), np.array([1.0, 1.0, 0.5, 1.0]))
    assert got.tolist() == [0.0, 1.0, 2.0, 3.5]
    assert pool.waited == 1 and pool.jobs == 4
    assert pool.busy_s == pytest.approx(0.5 + 0.5 + 1.0)  # 1.5-2, 2-2.5, 3.5-4.5


def test_book_many_needs_one_service_per_arrival() -> None:
    with pytest.raises(ValueError):
        FcfsPool(1).book_many(np.arange(3.0), np.ones(2))  # one by one: zip(strict=True)
    with pytest.raises(ValueError):
        FcfsPool(1).book_many(np.arange(60.0), np.ones(59))  # over the arrays


def test_book_many_empty() -> None:
    pool = FcfsPool(2)
    got = pool.book_many(np.empty(0), np.empty(0))
    assert got.size == 0 and pool.jobs == 0


def test_book_many_nobody_waits_window() -> None:
    pool = FcfsPool(1, count_from_s=10.0)
    arrivals = np.arange(60, dtype=float)  # one a second, 0.5 s each: nobody waits
    got = pool.book_many(arrivals, np.full(60, 0.5))
    assert got.tolist() == arrivals.tolist()
    assert pool.jobs == 60 and pool.waited == 0
    assert pool.busy_s == pytest.approx(50 * 0.5)  # jobs from 10 s on
    # the servers' state carries over: the next job finds the server free at 59.5
    assert pool.book(59.6, 1.0) == 59.6 and pool.waited == 0
    assert pool.book(59.7, 1.0) == pytest.approx(60.6) and pool.waited == 1


def test_book_many_window_that_starts_waiting_part_way() -> None:
    pool = FcfsPool(2)
    arrivals = np.arange(60, dtype=float)
    services = np.full(60, 0.5)
    services[50] = 100.0  # job 50 holds one server from 50 to 150
    arrivals[55:] = 55.0  # jobs 55-59 arrive together: one server for five 0.5 s jobs
    got = pool.book_many(arrivals, services)
    assert got[:55].tolist() == arrivals[:55].tolist()
    assert got[55:].tolist() == [55.0, 55.5, 56.0, 56.5, 57.0]
    assert pool.waited == 4 and pool.jobs == 60
    assert pool.busy_s == pytest.approx(59 * 0.5 + 100.0)


def test_book_many_after_a_busy_server_with_zero_services() -> None:
    pool = FcfsPool(1)
    pool.book(0.0, 100.0)  # the only server is busy until 100
    arrivals = np.arange(1.0, 51.0)
    got = pool.book_many(arrivals, np.zeros(50))  # instantaneous jobs: all start at 100
    assert got.tolist() == [100.0] * 50
    assert pool.waited == 50 and pool.jobs == 51


def test_book_many_equals_book_on_small_and_large_windows() -> None:
    rng = np.random.default_rng(3)
    arrivals = np.cumsum(rng.exponential(0.3, 3000))
    services = rng.exponential(1.0, 3000)
    one, many = FcfsPool(4, count_from_s=50.0), FcfsPool(4, count_from_s=50.0)
    want = [one.book(a, s) for a, s in zip(arrivals.tolist(), services.tolist(), strict=True)]
    got: list[float] = []
    for lo, hi in [(0, 10), (10, 60), (60, 61), (61, 500), (500, 547), (547, 3000)]:
        got += many.book_many(arrivals[lo:hi], services[lo:hi]).tolist()
    assert got == want
    assert (many.waited, many.jobs) == (one.waited, one.jobs)
    assert many.busy_s == pytest.approx(one.busy_s, rel=1e-12)


# ---------------------------------------------------------------------- proxy WorkerPool
def test_proxy_fixed_service_by_hand() -> None:
    proxy = WorkerPool(workers=2, service_s=0.5, queue_limit=None, busy=BusyTime())
    ends = [proxy.book(t) for t in (0.0, 0.0, 0.0, 0.5, 2.0)]
    # two workers 0-0.5; third waits to 0.5-1.0; fourth at 0.5 takes the other: 0.5-1.0
    assert ends == [0.5, 0.5, 1.0, 1.0, 2.5]
    assert proxy.waited == 1 and proxy.messages == 5 and proxy.refused == 0
    proxy.flush()
    # bin 0: four half-second services; bin 1: none; bin 2: the last one
    assert proxy.busy.array(3).tolist() == pytest.approx([2.0, 0.0, 0.5])


def test_proxy_queue_limit_refuses_only_new_calls() -> None:
    proxy = WorkerPool(workers=1, service_s=1.0, queue_limit=1, busy=BusyTime())
    assert proxy.book(0.0, new_call=True) == 1.0
    assert proxy.book(0.0, new_call=True) == 2.0  # waits: the backlog is now 1
    assert proxy.book(0.5, new_call=True) is None  # backlog 1 >= limit 1: 503
    assert proxy.book(0.5) == 3.0  # in-dialog messages queue regardless
    assert proxy.backlog(0.5) == 2
    assert proxy.book(1.0, new_call=True) is None  # the one starting at 1 has started
    assert proxy.backlog(2.0) == 0
    assert proxy.book(3.0, new_call=True) == 4.0
    assert (proxy.refused, proxy.messages, proxy.waited) == (2, 4, 2)


def test_proxy_zero_queue_limit_refuses_any_wait() -> None:
    proxy = WorkerPool(workers=1, service_s=1.0, queue_limit=0, busy=BusyTime())
    assert proxy.book(0.0, new_call=True) is None  # backlog 0 >= 0
    assert proxy.messages == 0 and proxy.refused == 1


def test_proxy_zero_service_passes_messages_at_once() -> None:
    proxy = WorkerPool(workers=1, service_s=0.0, queue_limit=None, busy=BusyTime())
    assert [proxy.book(t) for t in (1.0, 1.0, 2.0)] == [1.0, 1.0, 2.0]
    assert proxy.messages == 3 and proxy.waited == 0
    proxy.flush()
    assert proxy.busy.array(3).tolist() == [0.0, 0.0, 0.0]


def test_proxy_busy_series_survives_a_fold() -> None:
    n = BusyTime.FOLD + 10  # more than one fold of kept starts
    for limit in (None, 10**9):
        proxy = WorkerPool(workers=1, service_s=0.25, queue_limit=limit, busy=BusyTime())
        for k in range(n):
            proxy.book(k * 1.0)
        proxy.flush()
        series = proxy.busy.array(n)
        assert series.sum() == pytest.approx(0.25 * n)
        assert series[0] == 0.25 and series[-1] == 0.25
        assert proxy.messages == n and proxy.waited == 0
