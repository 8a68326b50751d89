"""Feature steps on the real caller: step records in the twin's steps.parquet shape.

Against the signalling-only SIPp agent the caller still runs every step and records
it (the agent answers no MESSAGE or DTMF, so those steps are recorded as not ok,
with NaN durations). Success against the pjsua2 voice agent is tested in
``test_voice_backend.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lab.plan import CallPlan, Dtmf, Message, Talk
from lab.results import STEP_COLUMNS
from lab.spec import Experiment
from real.backend import run_calls

pytestmark = pytest.mark.real
Leftovers = Callable[[Path], list[tuple[int, str]]]


def test_steps_are_recorded_per_call(real_stack: None, tmp_path: Path,
                                     leftovers: Leftovers) -> None:
    exp = Experiment.model_validate({"name": "steps", "duration_s": 1,
                                     "real": {"sip_port": 5082}})
    plan = [CallPlan(0, 0.0, "talk", "127.0.0.1",
                     (Talk(0.5), Dtmf("12", 0.5), Message("hello"), Talk(0.5)))]
    records: list[dict[str, Any]] = []
    facts = run_calls(exp, plan, tmp_path, records.append)
    assert records[0]["outcome"] == "answered"
    steps = facts["steps"]
    assert [s["kind"] for s in steps] == ["dtmf", "message"]
    assert [s["step"] for s in steps] == [1, 2]
    for s in steps:
        assert set(STEP_COLUMNS) - {"replication"} <= set(s)
        assert 0.4 < s["start_s"] < 15.0
        # the SIPp agent answers neither: each step is recorded, and as failed
        assert s["ok"] is False and math.isnan(s["duration_ms"])
    assert leftovers(tmp_path) == []
