"""Locust's load shape from an experiment's profile: users = ceil(rate(t) x call length).

The pure shape (:class:`loadgen.shape.UserShape`) is checked here in-process; the
``LoadTestShape`` subclass of ``loadgen/locustfile.py`` only in a subprocess, because
``import locust`` monkey-patches this process with gevent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.spec import validate
from loadgen.shape import SIGNALLING_S, UserShape, mean_call_s, wants_shape

ROOT = Path(__file__).resolve().parents[2]
STEPS = {"name": "steps", "duration_s": 30,
         "load": {"arrivals": {"kind": "steps", "steps": [{"at_s": 0, "rate_cps": 1},
                                                          {"at_s": 10, "rate_cps": 4},
                                                          {"at_s": 20, "rate_cps": 0.5}]}},
         "scenarios": {"talk": {"hold_s": 2}}}
RAMP = {"name": "ramp", "duration_s": 20,
        "load": {"arrivals": {"kind": "ramp", "start_cps": 0, "end_cps": 10, "ramp_s": 10}},
        "scenarios": {"talk": {"hold_s": 2}}}
CALL_S = 2 + SIGNALLING_S  # a 2 s hold, answered at once


def test_a_call_lasts_its_hold_plus_the_signalling() -> None:
    assert mean_call_s(validate(STEPS)) == pytest.approx(CALL_S)


def test_steps_profile_gives_users_per_step_and_ends_with_it() -> None:
    shape = UserShape.of(validate(STEPS), spawn_rate=3.0)
    assert [shape.tick(t) for t in (0, 9.9, 10, 19.9, 20, 29.9)] == [
        (3, 3.0), (3, 3.0), (9, 3.0), (9, 3.0), (2, 3.0), (2, 3.0)]  # ceil(2.2 * rate)
    assert shape.tick(30) is None


def test_ramp_profile_grows_and_is_capped_by_users() -> None:
    shape = UserShape.of(validate(RAMP), max_users=15)
    assert [shape.users_at(t) for t in (0, 2.5, 5, 10, 19)] == [0, 6, 11, 15, 15]
    assert shape.tick(20) is None


def test_only_time_varying_profiles_ask_for_a_shape() -> None:
    assert wants_shape(validate(STEPS)) and wants_shape(validate(RAMP))
    assert not wants_shape(validate({"load": {"arrivals": {"kind": "poisson",
                                                           "rate_cps": 2}}}))


def test_the_locustfile_shape_class_follows_the_profile(tmp_path: Path) -> None:
    exp = tmp_path / "steps.yaml"
    exp.write_text(yaml.safe_dump(STEPS))
    script = """
import json, types
import loadgen.locustfile as lf
shape = lf.ExperimentShape()
opts = types.SimpleNamespace(num_users=8, spawn_rate=2.0)
shape.runner = types.SimpleNamespace(environment=types.SimpleNamespace(parsed_options=opts))
out = []
for t in (0, 15, 25, 31):
    shape.get_run_time = lambda t=t: t
    out.append(shape.tick())
print(json.dumps(out))
"""
    env = dict(os.environ, SIPLAB_EXPERIMENT=str(exp))
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[3, 2.0], [8, 2.0], [2, 2.0],
                                                                 None]


def test_a_constant_experiment_has_no_shape_class(tmp_path: Path) -> None:
    exp = tmp_path / "flat.yaml"
    exp.write_text(yaml.safe_dump({**STEPS, "load": {"arrivals": {"kind": "constant",
                                                                  "rate_cps": 1}}}))
    done = subprocess.run([sys.executable, "-c", "import loadgen.locustfile as lf; "
                           "print(hasattr(lf, 'ExperimentShape'))"], cwd=ROOT,
                          env=dict(os.environ, SIPLAB_EXPERIMENT=str(exp)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
