"""RFC 3261 section 17 timer schedules, checked as exact timelines."""

from __future__ import annotations

import pytest

from twin.sip import Timers, capped_offsets, invite_offsets


def test_invite_schedule_t1_doubling() -> None:
    assert invite_offsets(0.5, 32.0) == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]


def test_non_invite_schedule_capped_at_t2() -> None:
    assert capped_offsets(0.5, 4.0, 32.0) == [
        0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]


def test_reliable_transport_never_retransmits() -> None:
    t = Timers(0.5, 4.0, reliable=True)
    assert t.invite == [0.0] and t.non_invite == [0.0] and t.response == [0.0]
    assert t.timer_b_s == 32.0


def calls_of(twin_run, **deployment):
    return twin_run(duration_s=60, load={"arrivals": {"kind": "poisson", "rate_cps": 0.5}},
                    scenarios={"talk": {"hold_s": 5}}, deployment=deployment).calls


def test_all_lost_every_call_ends_408_after_32s_with_7_invites(twin_run) -> None:
    calls = calls_of(twin_run, network={"delay_ms": 10, "loss": 1.0})
    assert len(calls) > 10
    assert (calls.outcome == "failed").all()
    assert (calls.final_code == 408).all()
    assert (calls.invite_tx == 7).all()
    assert (calls.end_s - calls.start_s).tolist() == pytest.approx([32.0] * len(calls))


def test_all_lost_over_tcp_ends_408_with_a_single_invite(twin_run) -> None:
    calls = calls_of(twin_run, network={"delay_ms": 10, "loss": 1.0}, sip={"transport": "tcp"})
    assert (calls.final_code == 408).all() and (calls.invite_tx == 1).all()


def test_none_lost_none_retransmitted(twin_run) -> None:
    calls = calls_of(twin_run, network={"delay_ms": 40, "jitter_ms": 5, "loss": 0.0},
                     proxy={"service_ms": 0.5})
    assert (calls.outcome == "answered").all()
    assert (calls.invite_tx == 1).all()


@pytest.mark.parametrize(("workers", "setup", "pdd"), [
    (8, 25 + 2 + 2 + 25, 25 + 2 + 2 + 25),      # 180 and 200 served side by side
    (1, 25 + 2 + 2 + 2 + 25, 25 + 2 + 2 + 25),  # one worker: the 200 waits for the 180
])
def test_lossless_timeline_is_exact(twin_run, workers: int, setup: float, pdd: float) -> None:
    """INVITE→200 is one round trip plus the proxy's services of INVITE, 180 and 200."""
    calls = calls_of(twin_run, network={"delay_ms": 25},
                     proxy={"service_ms": 2.0, "workers": workers})
    quiet = calls.iloc[:3]  # the first calls meet an idle proxy
    assert quiet.setup_ms.tolist() == pytest.approx([setup] * 3)
    assert quiet.pdd_ms.tolist() == pytest.approx([pdd] * 3)
    # the caller's BYE transaction ends one round trip + two services after the hold
    end = quiet.start_s + quiet.setup_ms / 1000 + 5.0 + (25 + 2 + 2 + 25) / 1000
    assert quiet.end_s.tolist() == pytest.approx(end.tolist())


def test_retransmissions_grow_with_loss(twin_run) -> None:
    light = calls_of(twin_run, network={"delay_ms": 10, "loss": 0.05})
    heavy = calls_of(twin_run, network={"delay_ms": 10, "loss": 0.3})
    assert heavy.invite_tx.mean() > light.invite_tx.mean() > 1.0
    # INVITE is delivered unless all 7 copies are lost: P(failure) is tiny at 30 %
    assert (heavy.outcome == "answered").mean() > 0.95


def test_proxy_overload_answers_503(twin_run) -> None:
    res = twin_run(duration_s=30, load={"arrivals": {"kind": "poisson", "rate_cps": 400}},
                   scenarios={"talk": {"hold_s": 1}},
                   deployment={"proxy": {"workers": 1, "service_ms": 5.0, "queue_limit": 50},
                               "trunk": {"channels": 10000}})
    calls = res.calls
    refused = calls[calls.rejected_by == "proxy"]
    in_time = refused[refused.outcome == "rejected"]
    assert len(in_time) > 0 and (in_time.final_code == 503).all()
    # a 503 costs a worker (reject_cost) and queues: past Timer B it finds no transaction
    late = refused[refused.outcome != "rejected"]
    assert (late.outcome == "failed").all() and (late.final_code == 408).all()
    assert (late.end_s - late.start_s).tolist() == pytest.approx([32.0] * len(late))
    assert res.timeseries.proxy_utilization.max() == pytest.approx(1.0, abs=0.01)
