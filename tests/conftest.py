"""Shared test helpers."""

from __future__ import annotations

from typing import Any

import pytest

from lab.plan import make_plan
from lab.spec import Experiment, validate


def experiment(**over: Any) -> Experiment:
    """A validated experiment: the given top-level keys over a quiet lossless base."""
    base: dict[str, Any] = {"name": "t", "seed": 1, "duration_s": 1000, "warmup_s": 0}
    base.update(over)
    return validate(base)


@pytest.fixture
def twin_run():
    """Run one twin replication of a raw experiment mapping."""
    from twin.backend import run_replication

    def run(rep: int = 0, **over: Any) -> dict[str, Any]:
        exp = experiment(**over)
        return run_replication(exp, rep, make_plan(exp, rep))

    return run


def hear_ctrl_c() -> None:
    """``preexec_fn`` of a child that a test stops with SIGINT: a shell without job
    control (CI's, nohup's) starts background jobs with SIGINT ignored, and a child
    inherits that; restore the default so the child hears the test's Ctrl-C."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def strict_ci() -> bool:
    """CI runs must not skip: a missing component there is a failure."""
    import os

    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(message: str, what: str = "real stack") -> None:
    """Skip the test for want of a component, or fail it under CI."""
    if strict_ci():
        pytest.fail(f"{what} missing under CI: {message}")
    pytest.skip(message)


def need_real_stack() -> None:
    """Kamailio, SIPp and pjsua2 are usable, or the test skips (fails under CI)."""
    from real.backend import RealUnavailable, check_available

    try:
        check_available()
    except RealUnavailable as exc:
        missing(f"real backend not installed: {exc}")
