"""The runner's journal: finished records read back after an interruption."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.runner import _Journal, _journalled
from lab.spec import validate

EXP = validate({"name": "journal", "duration_s": 10})


def _call(call_id: int) -> dict:
    return {"call_id": call_id, "scenario": "talk", "source_ip": "127.0.0.1",
            "start_s": float(call_id), "outcome": "answered", "final_code": 200,
            "rejected_by": None, "setup_ms": 1.0, "pdd_ms": 0.5, "invite_tx": 1,
            "duration_s": 2.0, "turns": 1, "mos": 4.3, "end_s": call_id + 3.0}


def _turn(call_id: int) -> dict:
    return {"call_id": call_id, "turn": 0, "voice_to_voice_ms": 900.0, "start_s": 1.0,
            "caller_speech_s": 1.0, "agent_speech_s": 1.0, "retries": 0, "failed": False,
            "barge_in": False, "cause": ""}


def _step(call_id: int) -> dict:
    return {"call_id": call_id, "step": 1, "kind": "message", "start_s": 2.0,
            "duration_ms": 3.0, "ok": True}


def test_turns_and_steps_are_read_back_with_the_calls(tmp_path: Path) -> None:
    journal = _Journal(tmp_path, 0)
    for k in range(2):
        journal("calls", _call(k))
        journal("turns", _turn(k))
        journal("steps", _step(k))
    rep = _journalled(tmp_path, 0, EXP)
    assert rep is not None and rep.interrupted
    assert rep.calls.call_id.tolist() == [0, 1]
    assert rep.turns.call_id.tolist() == [0, 1] and rep.turns.cause.tolist() == ["", ""]
    assert rep.steps.kind.tolist() == ["message", "message"]


def test_a_record_torn_by_the_interruption_is_left_out_and_said(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = _Journal(tmp_path, 0)
    journal("calls", _call(0))
    journal("turns", _turn(0))
    with journal.path("turns").open("a") as fh:
        fh.write('{"call_id": 1, "turn": 0, "voice_to')  # cut mid-write
    rep = _journalled(tmp_path, 0, EXP)
    assert rep is not None and rep.turns.call_id.tolist() == [0]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["siplab: warning: 1 turns record(s) of replication 0 were cut short by "
                   "the interruption and are left out"]
