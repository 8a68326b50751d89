"""The real backend with the voice agent, end to end: turns, feature steps, transfer.

``siplab run --backend real`` on an experiment with AI turns runs the whole loopback
system -- pjsua2 callers, the RTP impairment emulator, Kamailio's dispatcher and the
voice-agent pool -- and writes the same tables as the twin. The caller measures
voice-to-voice at its own ear; the agent says where the time went; the join must
leave only a small media-path remainder (``network_ms``).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lab.plan import CallPlan, Dtmf, Message, OnHold, Transfer, Turn
from lab.runner import run_experiment
from lab.spec import Experiment, validate
from real.agent import voice_agent_available
from real.backend import run_calls
from tests.conftest import missing

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("real_stack"),
              pytest.mark.timeout(90)]
Leftovers = Callable[[Path], list[tuple[int, str]]]
PARTS = ["vad_ms", "stt_ms", "llm_ms", "tts_ms", "queue_ms", "network_ms"]


@pytest.fixture(autouse=True)
def voice_agent() -> None:
    """The voice agent's parts (eSpeak NG, PocketSphinx, WebRTC VAD) are there, or the
    test skips -- and fails under CI, where a missing component is a failure."""
    why = voice_agent_available()
    if why is not None:
        missing(why, "voice agent")


def test_turns_end_to_end_match_the_twin_tables(tmp_path: Path, leftovers: Leftovers,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Two calls of two turns each, a known 500 ms time to first token and a known 100 ms
    one-way network delay (the impairment emulator's, each way).

    ``network_ms`` is what voice-to-voice leaves after the agent's parts, so summing the
    parts back would prove nothing; it is checked against the path as configured
    instead: at least the delay and a 20 ms packet each way (the twin's media path of
    the same experiment less its 40 ms jitter buffer), at most 450 ms more (jitter
    buffer, the VAD's own lag, the agent's hand-offs: 120-360 ms seen on a loaded
    2-core machine). The caller's mouth-to-ear delay, measured from its own stream
    (RTCP or the emulator), must hold the 100 ms too: a path that lost its delay fails."""
    delay_ms = 100.0
    exp = validate({
        "name": "voice", "seed": 3, "duration_s": 1.0, "warmup_s": 0,
        "load": {"arrivals": {"kind": "constant", "rate_cps": 2.0}},
        "scenarios": {"talk": {"turns": 2, "caller_speech_s": 1.5, "agent_speech_s": 1.0}},
        "deployment": {"agent": {"answer_ms": 50}, "network": {"delay_ms": delay_ms},
                       "ai": {"vad_ms": 300, "llm": {"ttft_ms": 500, "tokens": 20}}},
        "real": {"max_calls": 10, "max_duration_s": 60},
    })
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))  # the run's processes live here
    out = {b: tmp_path / b for b in ("twin", "real")}
    for backend, path in out.items():
        run_experiment(exp, backend=backend, out_dir=path, show_progress=False)
    tables = {(b, t): pd.read_parquet(p / f"{t}.parquet")
              for b, p in out.items() for t in ("calls", "turns", "steps")}
    for t in ("calls", "turns", "steps"):
        assert list(tables["real", t].columns) == list(tables["twin", t].columns), t

    calls = tables["real", "calls"]
    assert calls.call_id.tolist() == [0, 1] and (calls.outcome == "answered").all()
    # MOS measured from each call's RTCP (the mouth-to-ear delay is measured, too)
    assert calls.mos.between(4.2, 4.5).all() and calls.mouth_to_ear_ms.notna().all()

    turns = tables["real", "turns"]
    assert list(zip(turns.call_id, turns.turn, strict=True)) == [(0, 0), (0, 1), (1, 0),
                                                                  (1, 1)]
    assert turns[[*PARTS, "voice_to_voice_ms"]].notna().all().all(), turns
    assert (turns.voice_to_voice_ms >= 300 + 500 + 2 * delay_ms).all()  # VAD, TTFT, path
    assert turns.llm_ms.between(490, 560).all() and (turns.vad_ms == 300).all()
    # what the agent's stages leave is the media path both ways plus the VAD's lag:
    # against the configured delay (the twin's path: 2 · (100 + 20) + 40 ms buffer)
    twin_net = tables["twin", "turns"].network_ms
    assert twin_net.tolist() == pytest.approx([2 * (delay_ms + 20) + 40] * len(twin_net))
    net = turns.network_ms
    least = 2 * (delay_ms + 20)
    assert net.between(least, least + 450).all(), net.tolist()
    # and the caller's stream measured the one-way delay on its own (RTCP, or the
    # emulator): mouth-to-ear is that plus its jitter buffer and a 20 ms packet
    m2e = calls.mouth_to_ear_ms
    assert m2e.between(delay_ms + 20, delay_ms + 20 + 100).all(), m2e.tolist()
    assert (turns.caller_speech_s == 1.5).all() and (turns.agent_speech_s == 1.0).all()
    assert (~turns.failed).all() and (turns.retries == 0).all() and (~turns.barge_in).all()
    starts = turns.groupby("call_id").start_s.min()
    assert (starts > calls.set_index("call_id").start_s + 1.5).all()  # speech ends after
    print("real voice-to-voice p50 ms:", turns.voice_to_voice_ms.median(),
          "parts:", turns[PARTS].median().round(1).to_dict())
    assert leftovers(work) == []


def test_feature_steps_against_the_voice_agent(tmp_path: Path, leftovers: Leftovers) -> None:
    """DTMF, MESSAGE, hold/resume and a blind transfer to the human: all ok, all timed."""
    exp = Experiment.model_validate({
        "name": "steps-voice", "duration_s": 1,
        "deployment": {"agent": {"answer_ms": 20, "kind": "voice"}},
    })
    plan = [CallPlan(0, 0.0, "talk", "127.0.0.1", (
        Turn(1.2, 0.8), Dtmf("12", 1.0), Message("where is my order"), OnHold(1.0),
        Transfer("sip:human@example.com", 1.5)))]
    records: list[dict[str, Any]] = []
    facts = run_calls(exp, plan, tmp_path, records.append)
    (rec,) = records
    assert rec["outcome"] == "answered", rec
    steps = {s["kind"]: s for s in facts["steps"]}
    assert list(steps) == ["dtmf", "message", "on_hold", "transfer"]
    assert all(s["ok"] for s in steps.values()), facts["steps"]
    assert [s["step"] for s in facts["steps"]] == [1, 2, 3, 4]
    ms = {k: s["duration_ms"] for k, s in steps.items()}
    print("step durations ms:", {k: round(v, 1) for k, v in ms.items()})
    assert ms["dtmf"] < 1000  # first digit sent -> the IVR prompt's onset
    assert ms["message"] < 100  # MESSAGE -> 200 through the proxy on loopback
    assert 1000 <= ms["on_hold"] < 1200  # hold re-INVITE, 1 s held, resume's 200
    assert ms["transfer"] < 200  # REFER -> NOTIFY(200) answered
    # the caller talked to the human, then hung that leg up: the call lasted that long
    (turn,) = facts["turns"]
    assert not math.isnan(turn["voice_to_voice_ms"])
    xfer_end = steps["transfer"]["start_s"] + ms["transfer"] / 1000
    assert rec["end_s"] >= xfer_end + 1.5
    assert facts["human_stats"].get("SuccessfulCall(C)") == "1", facts["human_stats"]
    assert facts["agent_records"]["refer"] == 1
    assert leftovers(tmp_path) == []
