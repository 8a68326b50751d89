"""Every built-in experiment validates, plans and runs on the twin; loopback ones fit the
real backend's caps."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.plan import make_plan
from lab.runner import prepare
from lab.spec import load_experiment

EXPERIMENTS = sorted((Path(__file__).parents[2] / "lab" / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_builtin_experiment_validates_and_plans(path: Path) -> None:
    exp = load_experiment(path)
    _, plans = prepare(exp, "twin", path.parent, force=False)
    assert len(plans) == exp.replications and all(len(p) > 0 for p in plans)


@pytest.mark.parametrize("name", ["loopback-small", "voice-loopback"])
def test_loopback_examples_fit_the_real_caps(name: str) -> None:
    path = next(p for p in EXPERIMENTS if p.stem == name)
    exp = load_experiment(path)
    prepare(exp, "real", path.parent, force=False)  # raises SpecError over a cap
    assert len(make_plan(exp, 0, path.parent)) <= exp.real.max_calls
