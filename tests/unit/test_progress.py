"""The run's progress bar: simulated seconds for the twin, calls for a real run."""

from __future__ import annotations

from typing import Any

import pytest

from lab.runner import _progress
from lab.spec import validate

EXP = validate({"name": "bar", "duration_s": 60})


def test_the_twin_reports_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    with _progress(EXP, 0, True, calls=30) as update:
        update(12.4)
        assert progress_bar(update).n == 12 and progress_bar(update).unit == "s"
        update(100.0)  # never past the end
        assert progress_bar(update).n == 60


def test_a_real_run_reports_calls_from_the_first_call(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    with _progress(EXP, 0, True, calls=30) as update:
        update(0.01, placed=1, finished=0)
        bar = progress_bar(update)
        assert (bar.unit, bar.total, bar.n) == ("call", 30, 0)
        shown = capsys.readouterr().err
        assert "0/30" in shown and "placed 1" in shown and "s/s" not in shown
        update(3.0, placed=5, finished=2)
        update(3.5)  # a clock-only report does not move a bar that counts calls
        assert bar.n == 2
        assert "2/30" in capsys.readouterr().err


@pytest.mark.parametrize("report", [{}, {"placed": 1, "finished": 0}])
def test_a_hidden_bar_takes_every_report(report: dict[str, int]) -> None:
    with _progress(EXP, 0, False, calls=3) as update:
        update(1.0, **report)
        update(2.0, **report)


def progress_bar(update: object) -> Any:
    """The tqdm bar behind an update callable (its closure's ``self``)."""
    cells = getattr(update, "__closure__", None) or ()
    owner = next(c.cell_contents for c in cells if isinstance(c.cell_contents, _progress))
    return owner.bar
