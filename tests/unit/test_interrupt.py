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
duration_s: 20000
replications: 2
load:
  arrivals: {kind: poisson, rate_cps: 20}
deployment:
  trunk: {channels: 5000}
  network: {delay_ms: 10}
"""


@pytest.mark.parametrize("target", ["group", "coordinator"])
def test_ctrl_c_keeps_every_parallel_replications_calls(tmp_path: Path, target: str) -> None:
    exp = tmp_path / "long.yaml"
    exp.write_text(LONG)
    out = tmp_path / "o"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", "run", str(exp), "--out", str(out), "--jobs", "2",
         "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        preexec_fn=hear_ctrl_c)
    deadline = time.time() + 90
    while not (out / "experiment.resolved.yaml").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(5.0)  # both workers simulate a while (400,000 calls each)
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
    assert (per_rep > 1000).all() and (per_rep < 390_000).all()  # some, not all
    assert not calls.duplicated(["replication", "call_id"]).any()
    assert summary["calls"]["offered"] == len(calls)


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
