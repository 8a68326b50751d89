"""Pure parts of the real backend: pool sizing, outcome classification, records."""

from __future__ import annotations

import math

import pytest

from lab.plan import CallPlan, Talk, Turn
from real.backend import (
    RECORD_KEYS,
    classify,
    make_record,
    peak_concurrency,
    pool_size,
)


def test_peak_concurrency_frees_before_it_starts() -> None:
    assert peak_concurrency([]) == 0
    assert peak_concurrency([(0, 1), (1, 2), (2, 3)]) == 1
    assert peak_concurrency([(0, 3), (0.5, 1), (0.7, 2), (2.5, 4)]) == 3


def test_pool_size_is_a_quarter_of_the_capped_peak() -> None:
    plan = [CallPlan(i, 0.1 * i, "talk", "198.51.100.1", (Talk(10.0),)) for i in range(9)]
    assert pool_size(plan, 0.0, max_concurrent=40) == 3  # 9 concurrent calls
    assert pool_size(plan, 0.0, max_concurrent=4) == 1
    assert pool_size([], 0.0, max_concurrent=40) == 1


def test_talk_time_sums_turns() -> None:
    plan = CallPlan(0, 0.0, "ai", "198.51.100.1", (Turn(1.5, 2.0), Turn(0.5, 1.0)))
    assert plan.talk_s == 5.0 and plan.turns == 2


@pytest.mark.parametrize(("code", "reason", "tag", "server", "expected"), [
    (200, "OK", None, "", ("answered", None)),
    (503, "Channels Exhausted", "trunk.channels", "siplab-kamailio", ("blocked", "trunk.channels")),
    (503, "Channels Exhausted", None, "", ("blocked", "trunk.channels")),
    (503, "CPS Limit", None, "siplab-kamailio", ("rejected", "trunk.cps_limit")),
    (403, "Forbidden", None, "siplab-kamailio", ("rejected", "proxy")),
    (408, "Request Timeout", None, "siplab-kamailio", ("failed", None)),
    (486, "Busy Here", None, "", ("failed", None)),
    (487, "Request Terminated", None, "", ("failed", None)),
])
def test_classify(code: int, reason: str, tag: str | None, server: str,
                  expected: tuple[str, str | None]) -> None:
    assert classify(code, reason, tag, server) == expected


def test_record_of_an_answered_call() -> None:
    plan = CallPlan(3, 1.0, "talk", "198.51.100.1", (Talk(2.0),))
    t0 = 100.0
    event = {"ev": "done", "id": 3, "error": None, "invite_t": 101.0, "invite_tx": 1,
             "t18x": 101.002, "final_t": 101.025, "final_code": 200, "reason": "OK",
             "rejected_by": None, "server": "", "bye_t": 103.025, "bye_ok_t": 103.027,
             "disc_t": 103.025}
    r = make_record(plan, event, t0)
    assert tuple(r) == RECORD_KEYS
    assert r["setup_ms"] == pytest.approx(25.0) and r["pdd_ms"] == pytest.approx(2.0)
    assert r["duration_s"] == pytest.approx(2.0) and r["end_s"] == pytest.approx(3.027)
    blocked = make_record(plan, {**event, "final_code": 503, "reason": "Channels Exhausted",
                                 "t18x": None, "bye_t": None, "bye_ok_t": None}, t0)
    assert blocked["outcome"] == "blocked" and math.isnan(blocked["setup_ms"])
    assert blocked["duration_s"] == 0.0 and blocked["end_s"] == pytest.approx(1.025)
