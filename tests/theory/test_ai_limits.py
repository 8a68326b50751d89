"""Provider rate limits (429, backoff, retries) and barge-in in the twin's AI loop."""

from __future__ import annotations

import numpy as np
import pytest

from lab.plan import Turn, make_plan
from tests.conftest import experiment
from twin.backend import run_replication


def run(**ai) -> dict:
    exp = experiment(duration_s=600, load={"arrivals": {"kind": "poisson", "rate_cps": 0.5}},
                     scenarios={"talk": {"turns": 4, "caller_speech_s": 2, "agent_speech_s": 3}},
                     deployment={"ai": ai, "trunk": {"channels": 1000}})
    return run_replication(exp, 0, make_plan(exp))


def test_rate_limit_caps_admitted_requests_per_minute() -> None:
    res = run(llm={"rate_limit_rpm": 30}, max_retries=8, retry_base_ms=500)
    turns = res.turns
    # ~0.5 cps × 4 turns = 120 LLM requests a minute against a cap of 30: most retry
    assert turns.retries.mean() > 1 and turns.failed.any()
    served = turns[~turns.failed]
    assert len(served) > 0
    # an admitted LLM request starts at: speech end + media up (one 20 ms ptime on a
    # lossless path) + VAD + STT + the waits; in any 60 s window at most 30 start
    llm_start = np.sort((served.start_s + 0.02 + (served.vad_ms + served.stt_ms
                                                  + served.stt_wait_ms + served.llm_wait_ms)
                         / 1000).to_numpy())
    windows = np.searchsorted(llm_start, llm_start + 60.0 - 1e-9) - np.arange(llm_start.size)
    assert windows.max() <= 30
    # waiting for the limit shows up as queueing at the LLM stage
    assert served.llm_wait_ms.mean() > 1000


def test_no_retries_means_failed_turns_get_the_fallback() -> None:
    res = run(llm={"rate_limit_rpm": 10}, max_retries=0)
    turns = res.turns
    failed = turns[turns.failed]
    assert len(failed) > len(turns) / 2
    assert (failed.llm_ms == 0).all() and (failed.retries == 0).all()


def test_unlimited_providers_never_retry() -> None:
    turns = run().turns
    assert (turns.retries == 0).all() and not turns.failed.any()


def test_barge_in_cuts_the_reply_short() -> None:
    base = {"turns": 3, "caller_speech_s": 2.0, "agent_speech_s": 6.0}
    exp_full = experiment(duration_s=300, scenarios={"talk": base},
                          load={"arrivals": {"kind": "poisson", "rate_cps": 0.2}})
    exp_cut = experiment(duration_s=300, scenarios={"talk": {
        **base, "barge_in": {"probability": 1.0, "after_s": 1.5}}},
        load={"arrivals": {"kind": "poisson", "rate_cps": 0.2}})
    plan = make_plan(exp_cut)
    assert all(isinstance(s, Turn) and s.barge_in_s == 1.5 for p in plan for s in p.steps)
    full = run_replication(exp_full, 0, make_plan(exp_full))
    cut = run_replication(exp_cut, 0, plan)
    assert cut.turns.barge_in.all() and not full.turns.barge_in.any()
    # each of the 3 turns is 6 − 1.5 = 4.5 s shorter
    shorter = full.calls.duration_s - cut.calls.duration_s
    answered = full.calls.outcome.eq("answered") & cut.calls.outcome.eq("answered")
    assert shorter[answered].to_numpy() == pytest.approx(4.5 * 3)
