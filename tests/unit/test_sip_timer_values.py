"""RFC 3261 transaction timer values (section 17, Table 4) as the twin's schedules.

T1 = 500 ms (RTT estimate), T2 = 4 s (maximum non-INVITE / response interval);
Timer A doubles from T1 without cap, Timer E and G double from T1 capped at T2,
Timers B, F and H are 64·T1. Over a reliable transport A, E and G are not started
(RFC 3261 17.1.1.2, 17.1.2.2, 17.2.1). Expected lists are written out by hand.
"""

from __future__ import annotations

import pytest

from twin.sip import Timers, capped_offsets, invite_offsets

# RFC 3261 17.1.1.2: INVITE sent at 0, then after T1, 2·T1, 4·T1, ... until Timer B
RFC_INVITE = [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
# RFC 3261 17.1.2.2: intervals T1, 2·T1, 4·T1, then T2 = 4 s each, until Timer F
RFC_NON_INVITE = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]


def test_default_udp_timers_are_rfc_3261_table_4() -> None:
    t = Timers(t1_s=0.5, t2_s=4.0, reliable=False)
    assert t.timer_b_s == 32.0
    assert t.timer_f_s == 32.0 and t.timer_h_s == 32.0
    assert t.invite == RFC_INVITE
    assert t.non_invite == RFC_NON_INVITE
    assert t.response == RFC_NON_INVITE  # Timer G: the same T1-doubling, T2-capped rule


def test_timers_scale_with_t1() -> None:
    t = Timers(t1_s=0.25, t2_s=4.0, reliable=False)
    assert t.timer_b_s == 16.0 and t.timer_f_s == 16.0 and t.timer_h_s == 16.0
    assert t.invite == [0.0, 0.25, 0.75, 1.75, 3.75, 7.75, 15.75]
    # 0.25, 0.5, 1, 2, then capped at T2 = 4
    assert t.non_invite == [0.0, 0.25, 0.75, 1.75, 3.75, 7.75, 11.75, 15.75]


def test_t2_caps_the_non_invite_interval() -> None:
    t = Timers(t1_s=0.5, t2_s=1.0, reliable=False)
    assert t.non_invite[:5] == [0.0, 0.5, 1.5, 2.5, 3.5]
    assert len(t.non_invite) == 33  # 0, then every T2 = 1 s from 0.5 to 31.5
    assert t.invite == RFC_INVITE  # Timer A has no cap


def test_reliable_transport_sends_each_message_once() -> None:
    t = Timers(t1_s=0.5, t2_s=4.0, reliable=True)
    assert t.invite == [0.0] and t.non_invite == [0.0] and t.response == [0.0]
    assert t.timer_b_s == 32.0  # Timers B, F, H still bound the wait


@pytest.mark.parametrize(("t1", "limit", "want"), [
    (1.0, 7.0, [0.0, 1.0, 3.0]),  # the send due at 7 s coincides with Timer B: not sent
    (1.0, 7.5, [0.0, 1.0, 3.0, 7.0]),
    (2.0, 0.5, [0.0]),
])
def test_invite_schedule_stops_at_timer_b(t1: float, limit: float, want: list[float]) -> None:
    assert invite_offsets(t1, limit) == want


@pytest.mark.parametrize(("t1", "t2", "limit", "want"), [
    (1.0, 2.0, 7.0, [0.0, 1.0, 3.0, 5.0]),  # 1, 2, 2 (capped); 7 s is Timer F itself
    (1.0, 2.0, 7.5, [0.0, 1.0, 3.0, 5.0, 7.0]),
    (1.0, 8.0, 16.0, [0.0, 1.0, 3.0, 7.0, 15.0]),  # cap never reached: plain doubling
])
def test_capped_schedule(t1: float, t2: float, limit: float, want: list[float]) -> None:
    assert capped_offsets(t1, t2, limit) == want


# ------------------------------------------------ non-INVITE transactions (twin.transaction)
def _transaction(up: list[bool], down: list[bool], service_s: float = 0.0):
    import numpy as np

    from lab.spec import Network
    from twin.environment import Environment
    from twin.monitors import BusyTime
    from twin.network import Link
    from twin.proxy import WorkerPool
    from twin.transaction import NonInvite

    env = Environment()
    proxy = WorkerPool(workers=1, service_s=service_s, queue_limit=None, busy=BusyTime())

    def link(pattern: list[bool]) -> Link:
        return Link(Network(delay_ms=10.0), np.random.default_rng(0), loss_pattern=pattern)

    tx = NonInvite(env, proxy, link(up), link(down), Timers(t1_s=0.5, t2_s=4.0, reliable=False))
    return tx, proxy, env


def _at(env, start: float, make) -> list[float]:
    out: list[float] = []

    def proc():
        yield start
        out.append((yield from make()))

    env.start(proc())
    env.run()
    return out


@pytest.mark.parametrize("side", ["caller", "agent"])
def test_timer_f_ends_the_transaction_64_t1_after_its_first_send(side: str) -> None:
    from twin.transaction import INF

    # everything lost towards the far end: 11 copies (RFC 3261 Timer E), then Timer F
    tx, proxy, env = _transaction([True], [True])
    make = (lambda: tx.from_caller(5.0)) if side == "caller" else (lambda: tx.from_agent(5.0))
    assert _at(env, 5.0, make) == [INF]
    assert env.now == pytest.approx(5.0 + 32.0)
    # the caller's copies never reach the proxy; the agent's each cross it once
    assert proxy.messages == (0 if side == "caller" else len(RFC_NON_INVITE))


def test_bye_from_the_caller_later_in_the_call_by_hand() -> None:
    tx, proxy, env = _transaction([True, False], [False], service_s=0.002)
    forwarded: list[float] = []
    # sent at 5.0; the copy at 5.0 is lost, the one at 5.5 arrives at 5.51, is served
    # 5.51-5.512 and forwarded; the 200 crosses the proxy 5.512-5.514 and arrives 5.524
    got = _at(env, 5.0, lambda: tx.from_caller(5.0, lambda arg, t: arg.append(t), forwarded))
    assert got == [pytest.approx(5.524)]
    assert forwarded == [pytest.approx(5.512)] and tx.far_rx == pytest.approx(5.512)
    assert proxy.messages == 2


def test_bye_from_the_agent_later_in_the_call_by_hand() -> None:
    # agent -> proxy (at 5.0, served to 5.002) -> caller (lost once, resent at 5.5)
    tx, proxy, env = _transaction([False], [True, False], service_s=0.002)
    got = _at(env, 5.0, lambda: tx.from_agent(5.0))
    # the copy at 5.5: proxy 5.5-5.502, caller at 5.512, its 200 back at the proxy at
    # 5.522, served to 5.524
    assert got == [pytest.approx(5.524)] and tx.far_rx == pytest.approx(5.512)
    assert proxy.messages == 3
