"""Call features in the twin: exact lossless timelines and their records."""

from __future__ import annotations

import pandas as pd
import pytest

from twin.features import DTMF_GAP_S, DTMF_TONE_S

D, SVC, PTIME, JB = 25.0, 1.0, 20.0, 40.0  # ms


def run(twin_run, script: list, **deployment) -> dict:
    dep = {"network": {"delay_ms": D}, "proxy": {"service_ms": SVC},
           "media": {"ptime_ms": int(PTIME), "jitter_buffer_ms": JB}}
    dep.update(deployment)
    return twin_run(duration_s=30, load={"arrivals": {"kind": "poisson", "rate_cps": 0.2}},
                    scenarios={"talk": {"script": script}}, deployment=dep)


def first(steps: pd.DataFrame, kind: str) -> pd.Series:
    return steps[steps.kind == kind].duration_ms


def test_dtmf_prompt_is_heard_after_the_digits_and_one_media_round_trip(twin_run) -> None:
    res = run(twin_run, [{"dtmf": "123", "prompt_s": 2}])
    keyed_ms = (3 * DTMF_TONE_S + 2 * DTMF_GAP_S) * 1000
    assert first(res.steps, "dtmf").tolist() == pytest.approx(
        [keyed_ms + D + D + PTIME + JB] * len(res.steps))
    assert len(res.steps) > 0 and res.steps.ok.all()
    calls = res.calls
    assert calls.duration_s.tolist() == pytest.approx(
        [(keyed_ms + 2 * D + PTIME + JB) / 1000 + 2.0] * len(calls))


def test_message_is_one_transaction_through_the_proxy(twin_run) -> None:
    res = run(twin_run, [{"message": "order 42"}])
    # caller → proxy (D + svc) → agent → 200 → proxy (svc) → caller (D)
    assert first(res.steps, "message").tolist() == pytest.approx(
        [2 * D + 2 * SVC] * len(res.steps))
    assert len(res.steps) > 0 and res.steps.ok.all()


def test_hold_and_resume_are_two_reinvites(twin_run) -> None:
    res = run(twin_run, [{"on_hold_s": 4}])
    assert first(res.steps, "on_hold").tolist() == pytest.approx(
        [2 * (2 * D + 2 * SVC) + 4000] * len(res.steps))
    assert len(res.steps) > 0 and res.steps.ok.all()


def test_transfer_is_refer_invite_notify(twin_run) -> None:
    res = run(twin_run, [{"transfer": "sip:human@127.0.0.1", "talk_s": 3}])
    # REFER agent → proxy → caller (svc + D); the caller sends 202 and at once the
    # INVITE to the target, then the NOTIFY: each caller → proxy → far end → back
    assert first(res.steps, "transfer").tolist() == pytest.approx(
        [SVC + D + 2 * (2 * D + 2 * SVC)] * len(res.steps))
    assert res.steps.ok.all()


def test_features_survive_loss_and_are_recorded(twin_run) -> None:
    res = run(twin_run, [{"message": "hi"}, {"on_hold_s": 1}, {"dtmf": "9"}],
              network={"delay_ms": D, "loss": 0.2})
    steps = res.steps
    assert set(steps.kind) == {"message", "on_hold", "dtmf"}
    msg = first(steps, "message")
    # a lost MESSAGE or 200 costs Timer E retransmissions of 500 ms and more
    assert msg.max() >= 500 + 2 * D and msg.min() == pytest.approx(2 * D + 2 * SVC)
    assert steps.ok.mean() > 0.9
