"""Call features in the twin: exact lossless timelines and their records."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy.stats import binomtest

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
    assert len(res.steps) > 0 and res.steps.ok.all()


# RFC 3261 17.1.2.2: a non-INVITE request is resent at T1 = 0.5 s, doubling to T2 = 4 s,
# until Timer F (64·T1 = 32 s); these are the copies' send offsets, in ms
TIMER_E_MS = (0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500)


def test_features_survive_loss_as_rfc_3261_and_4733_say(twin_run) -> None:
    """About 580 calls over a path losing 20 % of packets each way, independently: MESSAGE,
    hold/resume and one DTMF digit per call, each step's outcome and time checked against
    what the loss allows.

    - MESSAGE is the first step after the 200 OK. It ends on the first copy whose request
      and response both get through (p = 0.8² = 0.64 a copy), at that copy's Timer E
      offset plus one round trip (2D) plus the proxy's service, twice if that copy was
      the first to arrive (the proxy forwards it) and once otherwise (its stored response
      goes back). So every duration is offset + 2D + SVC or + 2 SVC; 64 % are exactly
      2D + 2 SVC (binomial test); none fails before Timer F (0.36^11 a step).
    - hold/resume: two such transactions, both first time for 0.64² of the calls.
    - DTMF: the end event is sent three times (RFC 4733 2.5.1.4), so a digit is lost with
      probability 0.2³ = 0.008; a heard digit takes exactly the keyed time plus a round
      trip and the caller's packetisation and jitter buffer; a lost one has no duration.
    """
    res = twin_run(duration_s=2900, load={"arrivals": {"kind": "poisson", "rate_cps": 0.2}},
                   scenarios={"talk": {"script": [{"message": "hi"}, {"on_hold_s": 1},
                                                  {"dtmf": "9"}]}},
                   deployment={"network": {"delay_ms": D, "loss": 0.2},
                               "proxy": {"service_ms": SVC},
                               "media": {"ptime_ms": int(PTIME), "jitter_buffer_ms": JB}})
    steps = res.steps
    n = int((res.calls.outcome == "answered").sum())
    assert n > 500 and steps.groupby("kind").size().to_dict() == {
        "dtmf": n, "message": n, "on_hold": n}

    msg = steps[steps.kind == "message"]
    assert msg.ok.all()
    allowed = sorted({off + 2 * D + k * SVC for off in TIMER_E_MS for k in (1, 2)})
    assert [a for a in msg.duration_ms.round(6).unique() if a not in allowed] == []
    first_time = int((msg.duration_ms.round(6) == 2 * D + 2 * SVC).sum())
    assert binomtest(first_time, n, 0.64).pvalue > 0.001, (first_time, n)

    hold = steps[steps.kind == "on_hold"]
    assert hold.ok.all()
    both_first = int((hold.duration_ms.round(6) == 2 * (2 * D + 2 * SVC) + 1000).sum())
    assert binomtest(both_first, n, 0.64**2).pvalue > 0.001, (both_first, n)

    dtmf = steps[steps.kind == "dtmf"]
    heard = dtmf[dtmf.ok]
    keyed_ms = DTMF_TONE_S * 1000
    assert heard.duration_ms.tolist() == pytest.approx([keyed_ms + 2 * D + PTIME + JB]
                                                       * len(heard))
    assert dtmf[~dtmf.ok].duration_ms.isna().all()
    assert binomtest(int((~dtmf.ok).sum()), n, 0.2**3).pvalue > 0.001
