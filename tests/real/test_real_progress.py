"""A real run reports its progress in calls placed and finished, from the first call."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from lab.plan import make_plan
from lab.spec import validate
from real.backend import run_calls

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("real_stack"),
              pytest.mark.timeout(60)]


def test_progress_is_reported_from_the_first_call_placed(tmp_path: Path) -> None:
    exp = validate({
        "name": "progress", "seed": 2, "duration_s": 1.5,
        "load": {"arrivals": {"kind": "constant", "rate_cps": 2.0}},
        "scenarios": {"talk": {"hold_s": 1.0}},
        "real": {"max_calls": 10, "max_duration_s": 60},
    })
    plan = make_plan(exp, 0)
    assert len(plan) == 3
    reports: list[tuple[float, int | None, int | None]] = []
    ends: list[float] = []

    def progress(now_s: float, /, *, placed: int | None = None,
                 finished: int | None = None) -> None:
        reports.append((time.monotonic(), placed, finished))

    def record(rec: dict[str, Any]) -> None:
        ends.append(time.monotonic())

    run_calls(exp, list(plan), tmp_path, record, progress)
    assert len(ends) == 3
    assert reports[0][1:] == (1, 0), reports  # the first call placed, none finished yet
    assert reports[0][0] < ends[0]
    assert reports[-1][1:] == (3, 3)
    placed = [p for _, p, _ in reports]
    finished = [f for _, _, f in reports]
    assert placed == sorted(placed) and finished == sorted(finished)
    # a report per call placed and per call finished: the bar moves with every call
    assert len(reports) == 6
