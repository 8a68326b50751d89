"""Pure parts of the real backend: pool sizing, outcome classification, records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lab.plan import CallPlan, Talk, Turn
from real.backend import RECORD_KEYS, caller_processes, make_record, peak_concurrency
from real.sip import classify


def test_peak_concurrency_frees_before_it_starts() -> None:
    assert peak_concurrency([]) == 0
    assert peak_concurrency([(0, 1), (1, 2), (2, 3)]) == 1
    assert peak_concurrency([(0, 3), (0.5, 1), (0.7, 2), (2.5, 4)]) == 3


def test_pool_size_is_a_quarter_of_the_capped_peak() -> None:
    plan = [CallPlan(i, 0.1 * i, "talk", "198.51.100.1", (Talk(10.0),)) for i in range(9)]
    assert caller_processes(plan, 0.0, max_concurrent=40) == 3  # 9 concurrent calls
    assert caller_processes(plan, 0.0, max_concurrent=4) == 1
    assert caller_processes([], 0.0, max_concurrent=40) == 1


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


def test_turn_join_leaves_the_media_path_as_network_ms(tmp_path: Path) -> None:
    from real.ai import turn_rows

    agent = {"ev": "turn", "call": 4, "turn": 1, "vad_ms": 300.0, "stt_ms": 80.0,
             "llm_ms": 500.0, "tts_ms": 20.0, "queue_ms": 5.0, "stt_wait_ms": 5.0,
             "llm_wait_ms": 0.0, "tts_wait_ms": 0.0, "llm_tokens": 60}
    (tmp_path / "agent0.jsonl").write_text(
        json.dumps({"ev": "call", "call": 4}) + "\n" + json.dumps(agent) + "\n")
    heard = {"call_id": 4, "turn": 1, "t_speech_end": 102.5, "voice_to_voice_ms": 1080.0,
             "caller_speech_s": 1.5, "agent_speech_s": 1.0}
    unheard = {**heard, "turn": 2, "voice_to_voice_ms": None}
    row, lost = turn_rows([heard, unheard], tmp_path, run_start=100.0)
    assert row["network_ms"] == pytest.approx(1080 - 905) and row["start_s"] == 2.5
    assert row["stt_wait_ms"] == 5.0 and row["llm_tokens"] == 60 and not row["failed"]
    assert row["retries"] == 0 and row["barge_in"] is False
    assert lost["failed"] and math.isnan(lost["vad_ms"]) and math.isnan(lost["network_ms"])


def test_transfer_target_is_reached_through_the_proxy() -> None:
    from real.features import loopback_target, steps_before

    assert loopback_target("sip:human@example.com", "127.0.0.1:5070") == \
        "sip:human@127.0.0.1:5070"
    assert loopback_target("sip:human@example.com", "") == "sip:human@example.com"
    plan = {"steps": [["msg"], ["hold", 1000], ["msg"], ["xfer", "sip:h@x", 0], ["msg"]]}
    assert steps_before(plan, "msg", "xfer") == 2 and steps_before(plan, "hold", "xfer") == 1
