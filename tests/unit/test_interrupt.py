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
        # a shell without job control starts background jobs with SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
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
