"""The AI turn pipeline with constant latencies, where every number follows by hand.

Network delay 0 and a 20 ms ptime put one packetisation each way (20 + 20 ms) and the
40 ms jitter buffer on every turn: 80 ms of network; VAD 100 ms, STT 200 ms, LLM first
token 300 ms (its slot held for 40 tokens at 80 tokens/s more, 0.8 s in all), TTS first
byte 50 ms. A served turn is therefore heard 730 ms after the caller stops; a stage
refused with 429 and out of retries is skipped with every later stage (the canned
fallback), so a turn refused at STT is heard after 180 ms.

Rate limits are checked against a sliding 60 s window computed here; provider pools
against the FCFS recursion; backoff against the full-jitter bound: retry k waits at
most base·2^(k−1), so r retries wait at most base·(2^r − 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lab.plan import make_plan
from tests.conftest import experiment
from twin.ai import RateLimit
from twin.backend import run_replication

UP = DOWN = 0.020
JB = 0.040
VAD, STT, TTFT, HOLD, TTFB = 0.100, 0.200, 0.300, 0.800, 0.050


def run(ai: dict[str, Any], duration_s: float = 240, rate: float = 0.5,
        talk: dict[str, Any] | None = None):
    base = {"vad_ms": 100, "stt": {"latency_ms": 200},
            "llm": {"ttft_ms": 300, "tokens": 40, "tokens_per_s": 80}, "tts": {"ttfb_ms": 50}}
    for k, v in ai.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) else v
    exp = experiment(duration_s=duration_s,
                     load={"arrivals": {"kind": "poisson", "rate_cps": rate}},
                     scenarios={"talk": talk or {"turns": 3, "caller_speech_s": 2,
                                                 "agent_speech_s": 3}},
                     deployment={"ai": base, "trunk": {"channels": 1000}})
    return run_replication(exp, 0, make_plan(exp))


def window_admits(times: list[float], rpm: float) -> list[bool]:
    """Sliding-window admission, by a direct count over the last 60 s."""
    admitted: list[float] = []
    out = []
    for t in times:
        if sum(1 for a in admitted if a > t - 60.0) < rpm:
            admitted.append(t)
            out.append(True)
        else:
            out.append(False)
    return out


def fcfs_waits(times: list[float], hold: float, servers: int = 1) -> list[float]:
    free = [0.0] * servers
    waits = []
    for t in times:
        k = min(range(servers), key=lambda i: free[i])
        start = max(t, free[k])
        waits.append(start - t)
        free[k] = start + hold
    return waits


def test_rate_limit_window_directly() -> None:
    lim = RateLimit(2)
    got = [lim.admit(t) for t in (0.0, 10.0, 59.0, 60.0, 61.0, 70.0, 119.9, 120.0)]
    # 60.0: the one at 0.0 has just left the window (0 <= 60 - 60); 70: 60 and 61 inside
    assert got == [True, True, False, True, False, True, False, True]
    assert lim.refused == 3


@pytest.mark.parametrize(("stage", "before"), [("stt", VAD), ("llm", VAD + STT),
                                               ("tts", VAD + STT + TTFT)])
def test_a_refused_stage_skips_itself_and_every_later_stage(stage: str, before: float) -> None:
    res = run({stage: {"rate_limit_rpm": 3}, "max_retries": 0})
    t = res.turns.sort_values("start_s")
    asked = (t.start_s + UP + before).tolist()
    admitted = window_admits(asked, 3)
    assert t.failed.tolist() == [not a for a in admitted]
    assert 0 < sum(admitted) < len(admitted)
    assert (t.retries == 0).all() and (t.cause[t.failed] == "retries_exhausted").all()
    assert (t.cause[~t.failed] == "").all()
    served, failed = t[~t.failed], t[t.failed]
    assert served.voice_to_voice_ms.to_numpy() == pytest.approx(730.0)
    assert failed.voice_to_voice_ms.to_numpy() == pytest.approx((before + 0.08) * 1e3)
    assert (failed.stt_ms == (0.0 if stage == "stt" else 200.0)).all()
    assert (failed.llm_ms == (300.0 if stage == "tts" else 0.0)).all()
    assert (failed.tts_ms == 0.0).all()
    assert (t.network_ms.to_numpy() == pytest.approx(80.0))
    assert (t.queue_ms == 0.0).all()


@pytest.mark.parametrize("stage", ["llm", "tts"])
def test_backoff_is_full_jitter_and_retries_are_counted(stage: str) -> None:
    res = run({stage: {"rate_limit_rpm": 20}, "max_retries": 4, "retry_base_ms": 250},
              duration_s=300, rate=0.6)
    t = res.turns
    wait = f"{stage}_wait_ms"
    assert (t.retries >= 0).all()
    failed, served = t[t.failed], t[~t.failed]
    assert len(failed) > 0 and (failed.retries == 4).all()  # all four retries spent
    assert (served.retries <= 4).all()
    assert (served.retries == 1).any() and (served.retries >= 2).any()
    bound = 250.0 * (2.0 ** served.retries - 1.0)
    assert (served[wait] <= bound + 1e-6).all()
    assert (served[wait][served.retries == 0] == 0.0).all()
    assert (served[wait][served.retries > 0] > 0.0).all()
    # retry 1 waits U(0, base): among the turns served after one retry, some waited
    # more than base/2 (all of them waiting less has probability 2^-k for k such turns)
    once = served[wait][served.retries == 1]
    assert len(once) >= 8 and once.max() > 125.0
    # the other stages never wait and keep their latencies
    assert (t.stt_wait_ms == 0.0).all() and (t.stt_ms == 200.0).all()
    assert served.voice_to_voice_ms.to_numpy() == pytest.approx(730.0 + served[wait])


def fcfs_by_time(times: list[float], hold: float, servers: int) -> list[float]:
    """FCFS waits of requests made at ``times`` (any order), served in time order."""
    order = sorted(range(len(times)), key=lambda i: times[i])
    waits = fcfs_waits([times[i] for i in order], hold, servers)
    out = [0.0] * len(times)
    for i, w in zip(order, waits, strict=True):
        out[i] = w
    return out


def test_capped_provider_slots_are_fcfs_pools() -> None:
    # a huge RPM cap turns on the one-process-per-call path; nothing is refused
    ttfb = 0.4  # a slow TTS here, so that its one slot queues too
    res = run({"stt": {"concurrency": 1}, "llm": {"concurrency": 3, "rate_limit_rpm": 1e9},
               "tts": {"concurrency": 1, "ttfb_ms": 400}}, duration_s=200, rate=0.8)
    t = res.turns
    asked = (t.start_s + UP + VAD).tolist()
    w1 = fcfs_by_time(asked, STT, 1)
    transcript = [a + w + STT for a, w in zip(asked, w1, strict=True)]
    w2 = fcfs_by_time(transcript, HOLD, 3)
    first_token = [a + w + TTFT for a, w in zip(transcript, w2, strict=True)]
    w3 = fcfs_by_time(first_token, ttfb, 1)
    assert t.stt_wait_ms.to_numpy() == pytest.approx(np.array(w1) * 1e3, abs=1e-6)
    assert t.llm_wait_ms.to_numpy() == pytest.approx(np.array(w2) * 1e3, abs=1e-6)
    assert t.tts_wait_ms.to_numpy() == pytest.approx(np.array(w3) * 1e3, abs=1e-6)
    assert min(max(w1), max(w2), max(w3)) > 0.0  # every stage queued at some point
    assert t.queue_ms.to_numpy() == pytest.approx(
        (np.array(w1) + np.array(w2) + np.array(w3)) * 1e3, abs=1e-6)
    assert t.voice_to_voice_ms.to_numpy() == pytest.approx(1080.0 + t.queue_ms)
    assert (t.retries == 0).all() and not t.failed.any()
    # provider usage: slots, requests (every turn), busy slot-seconds (no warm-up here)
    n = len(t)
    assert res.usage == {
        "stt": {"servers": 1, "requests": n, "busy_s": pytest.approx(n * STT)},
        "llm": {"servers": 3, "requests": n, "busy_s": pytest.approx(n * HOLD)},
        "tts": {"servers": 1, "requests": n, "busy_s": pytest.approx(n * ttfb)},
    }
    assert (t.caller_speech_s == 2.0).all() and (t.agent_speech_s == 3.0).all()
    assert (t.llm_tokens == 40).all()
    assert (t.stt_ms == 200.0).all() and (t.llm_ms == 300.0).all() and (t.tts_ms == 400.0).all()
    assert (t.vad_ms == 100.0).all()
    assert np.issubdtype(t.turn.dtype, np.integer)
    per_call = t.groupby("call_id").turn.apply(list)
    assert all(v == [0, 1, 2] for v in per_call)  # each call's three turns, in order


def test_busy_slot_seconds_count_from_the_warm_up() -> None:
    """A capped provider's busy time counts only what it served after ``warmup_s``: a
    slot held across the warm-up's end counts its part after it (the utilisation in
    ``summary.json`` is that busy time over the counted stretch)."""
    warmup = 61.3  # not a turn boundary: some LLM slot is held across it
    exp = experiment(duration_s=200, warmup_s=warmup,
                     load={"arrivals": {"kind": "poisson", "rate_cps": 0.8}},
                     scenarios={"talk": {"turns": 3, "caller_speech_s": 2,
                                         "agent_speech_s": 3}},
                     deployment={"trunk": {"channels": 1000}, "ai": {
                         "vad_ms": 100, "stt": {"latency_ms": 200},
                         "llm": {"ttft_ms": 300, "tokens": 40, "tokens_per_s": 80,
                                 "concurrency": 2},
                         "tts": {"ttfb_ms": 50}}})
    res = run_replication(exp, 0, make_plan(exp))
    t = res.turns
    start = (t.start_s + UP + VAD + STT + t.llm_wait_ms / 1e3).to_numpy()
    after = np.clip(start + HOLD - warmup, 0.0, HOLD)
    assert after[(start < warmup) & (start + HOLD > warmup)].sum() > 0.0  # one straddles
    usage = res.usage["llm"]
    assert usage["servers"] == 2
    assert usage["busy_s"] == pytest.approx(float(after.sum()), rel=1e-9)
    assert usage["busy_s"] < len(t) * HOLD - 10.0  # the warm-up's 60 s are left out


def test_a_run_cut_short_keeps_exactly_the_turns_that_ran() -> None:
    """Stopped half-way (as Ctrl-C stops it), the turn table holds the turns that ran and
    nothing else, each exactly as the whole run records it."""
    import pandas as pd

    from twin.model import Twin

    exp = experiment(duration_s=100, load={"arrivals": {"kind": "poisson", "rate_cps": 0.5}},
                     scenarios={"talk": {"turns": 3, "caller_speech_s": 2,
                                         "agent_speech_s": 3}},
                     deployment={"trunk": {"channels": 1000}, "ai": {
                         "vad_ms": 100, "stt": {"latency_ms": 200},
                         "llm": {"ttft_ms": 300, "tokens": 40, "tokens_per_s": 80},
                         "tts": {"ttfb_ms": 50}}})
    whole = Twin(exp, 0, make_plan(exp, 0))
    whole.run(None)
    cut = Twin(exp, 0, make_plan(exp, 0))
    cut.env.start(cut._arrivals(cut.plan, None))
    cut.env.run(until=50.0)
    full = pd.DataFrame(whole.agent.frame_columns()).set_index(["call_id", "turn"])
    part = pd.DataFrame(cut.agent.frame_columns()).set_index(["call_id", "turn"])
    assert 0 < len(part) == int(cut.agent.done.sum()) < len(cut.agent.done) == len(full)
    assert part.voice_to_voice_ms.notna().all()
    pd.testing.assert_frame_equal(part, full.loc[part.index])


def test_uncapped_providers_report_no_slots_and_no_busy_time() -> None:
    res = run({"llm": {"rate_limit_rpm": 1e9}}, duration_s=60, rate=0.2)
    n = len(res.turns)
    assert n > 0
    assert res.usage == {name: {"servers": None, "requests": n, "busy_s": 0.0}
                         for name in ("stt", "llm", "tts")}


def test_barge_in_on_the_process_path() -> None:
    talk = {"turns": 3, "caller_speech_s": 2.0, "agent_speech_s": 6.0}
    cut_talk = {**talk, "barge_in": {"probability": 1.0, "after_s": 1.5}}
    ai = {"llm": {"rate_limit_rpm": 1e9}}
    full = run(ai, duration_s=200, rate=0.2, talk=talk)
    cut = run(ai, duration_s=200, rate=0.2, talk=cut_talk)
    assert cut.turns.barge_in.all() and not full.turns.barge_in.any()
    answered = full.calls.outcome.eq("answered") & cut.calls.outcome.eq("answered")
    shorter = (full.calls.duration_s - cut.calls.duration_s)[answered]
    assert answered.sum() > 10
    assert shorter.to_numpy() == pytest.approx(3 * (6.0 - 1.5))
