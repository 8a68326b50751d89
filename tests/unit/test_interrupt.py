"""Ctrl-C with replications in parallel worker processes: every finished call survives.

The run is stopped by SIGINT sent the way a terminal sends it (to the whole process
group) and the way ``kill -INT`` does (to the coordinator alone). Either way every
replication that was running hands back the calls it finished, ``summary.json`` says
``interrupted`` and which replications are partial, and the exit status is 130.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import hear_ctrl_c

LONG = """\
name: long-parallel
duration_s: 6000
replications: 2
load:
  arrivals: {kind: poisson, rate_cps: 20}
scenarios:
  talk: {turns: 2}
deployment:
  trunk: {channels: 5000}
  network: {delay_ms: 10}
"""
OFFERED = 20 * 6000  # calls a replication would offer if it ran to the end

# `siplab run` with the twin slowed to ~1 ms a call (a sleep as each call's record is
# kept) so that each replication runs for minutes, whatever machine runs the test; it
# marks ``rep<N>`` in a folder once replication N has finished 200 calls. Workers are
# forked from it, so they inherit both.
DRIVER = """\
import pathlib, sys, time
import twin.model
from lab.cli import main

marks = pathlib.Path(sys.argv[1])
real_init, real_end = twin.model.Twin.__init__, twin.model.Twin._end

def init(self, exp, replication=0, *a):
    real_init(self, exp, replication, *a)
    self.mark = marks / f"rep{replication}"

def end(self, *a):
    real_end(self, *a)
    if len(self.log) == 200:
        self.mark.touch()
    time.sleep(0.001)

twin.model.Twin.__init__, twin.model.Twin._end = init, end
raise SystemExit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("target", ["group", "coordinator"])
def test_ctrl_c_keeps_every_parallel_replications_calls(tmp_path: Path, target: str) -> None:
    exp = tmp_path / "long.yaml"
    exp.write_text(LONG)
    out = tmp_path / "o"
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(marks), "run", str(exp), "--out", str(out),
         "--jobs", "2", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        preexec_fn=hear_ctrl_c)
    deadline = time.time() + 120
    while not all((marks / f"rep{r}").exists() for r in (0, 1)):
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"both replications did not begin: {proc.communicate()[1]}")
        time.sleep(0.05)
    time.sleep(1.0)  # both simulate on, ~1,000 calls more each
    if target == "group":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 130, stderr
    calls = pd.read_parquet(out / "calls.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["replication_status"] == ["partial", "partial"], stderr
    assert set(calls.replication) == {0, 1}
    per_rep = calls.groupby("replication").size()
    assert (per_rep > 200).all() and (per_rep < 0.5 * OFFERED).all()  # some, not all
    assert not calls.duplicated(["replication", "call_id"]).any()
    assert summary["calls"]["offered"] == len(calls)
    turns = pd.read_parquet(out / "turns.parquet")
    assert set(turns.replication) == {0, 1}  # the finished turns came back too
    assert not turns.duplicated(["replication", "call_id", "turn"]).any()


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_replication_that_fails_keeps_its_finished_calls(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int) -> None:
    """A fault mid-run (here: the 300th call record of replication 1 raises) keeps every
    call finished before it, in every replication, and the run stops naming the fault.
    Parallel workers are forked, so they inherit the planted fault."""
    import twin.model
    from lab.runner import ReplicationFailed, RunInterrupted, run_experiment
    from lab.spec import validate

    real_init, real_end = twin.model.Twin.__init__, twin.model.Twin._end

    def init(self: twin.model.Twin, exp: object, replication: int = 0, *a: object) -> None:
        real_init(self, exp, replication, *a)  # type: ignore[arg-type]
        self.planted = replication  # type: ignore[attr-defined]

    def end(self: twin.model.Twin, *args: object) -> None:
        if self.planted == 1 and len(self.log) == 299:  # type: ignore[attr-defined]
            raise ZeroDivisionError("planted fault")
        real_end(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(twin.model.Twin, "__init__", init)
    monkeypatch.setattr(twin.model.Twin, "_end", end)
    exp = validate({"name": "faulty", "duration_s": 2000, "replications": 2,
                    "load": {"arrivals": {"kind": "poisson", "rate_cps": 1.0}},
                    "scenarios": {"talk": {"hold_s": 20}},
                    "deployment": {"trunk": {"channels": 100}}})
    out = tmp_path / "o"
    with pytest.raises(RunInterrupted) as info:
        run_experiment(exp, out_dir=out, jobs=jobs, show_progress=False)
    assert isinstance(info.value.cause, ReplicationFailed)
    assert "replication 1 failed: ZeroDivisionError: planted fault" in str(info.value)
    calls = pd.read_parquet(out / "calls.parquet")
    per_rep = calls.groupby("replication").size().to_dict()
    assert per_rep[1] == 299  # every call that ended before the fault
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["replication_status"][1] == "partial"
    if jobs == 1:  # one after another: replication 0 had finished
        assert summary["replication_status"][0] == "complete" and per_rep[0] > 1900
