"""``siplab burst``: headless Locust bursts on the loopback SUT, one process and two.

24 users call back to back (4 s calls) into a trunk of 20 channels, so at least 20
calls are up at once and the calls beyond are refused with ``503 Channels
Exhausted``: Locust's ``locust_stats.csv`` counts ``setup`` requests and their
failures, ``locust_failures.csv`` names the SIP code, and siplab's own records
(``calls.parquet``, ``summary.json``) of the same calls land in the same directory.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from lab.records import CALL_COLUMNS
from tests.conftest import hear_ctrl_c
from tests.real.conftest import processes_of

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("real_stack"),
              pytest.mark.timeout(180)]
SIPLAB = Path(sys.executable).with_name("siplab")
USERS, CHANNELS = 24, 20
EXPERIMENT = {
    "name": "burst", "seed": 11, "duration_s": 60,
    "load": {"arrivals": {"kind": "constant", "rate_cps": 5}},
    "scenarios": {"talk": {"hold_s": 4}},
    "deployment": {"trunk": {"channels": CHANNELS}, "proxy": {"workers": 4}},
}


def burst(tmp: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    exp = tmp / "burst.yaml"
    exp.write_text(yaml.safe_dump(EXPERIMENT))
    out = tmp / "out"
    done = subprocess.run([str(SIPLAB), "burst", str(exp), "--users", str(USERS),
                           "--spawn-rate", "12", "--run-time", "14s", "--out", str(out),
                           *extra], capture_output=True, text=True, timeout=170)
    log = (out / "locust.log").read_text() if (out / "locust.log").exists() else ""
    assert done.returncode == 0, (done.stderr, log[-3000:])
    return done, out


def rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def peak_answered(calls: pd.DataFrame) -> int:
    """Most answered calls up at once (INVITE to BYE)."""
    a = calls[calls["outcome"] == "answered"]
    edges = sorted([(s, 1) for s in a["start_s"]] + [
        (s + d / 1e3 + t, -1) for s, d, t in zip(a["start_s"], a["setup_ms"], a["duration_s"],
                                                 strict=True)])
    peak = cur = 0
    for _, step in edges:
        cur += step
        peak = max(peak, cur)
    return peak


def check(out: Path) -> dict[str, Any]:
    """What every burst must show; returns Locust's ``setup`` row and the records."""
    stats = {r["Name"]: r for r in rows(out / "locust_stats.csv") if r["Type"] == "SIP"}
    setup = stats["setup"]
    assert int(setup["Request Count"]) > 0
    failures = [r for r in rows(out / "locust_failures.csv") if r["Name"] == "setup"]
    assert int(setup["Failure Count"]) == sum(int(r["Occurrences"]) for r in failures)
    assert int(setup["Failure Count"]) > 0  # 24 callers on 20 channels
    assert all("SIP 503" in r["Error"] for r in failures), failures
    assert "bye" in stats and int(stats["bye"]["Request Count"]) > 0

    calls = pd.read_parquet(out / "calls.parquet")
    assert set(CALL_COLUMNS) <= set(calls.columns)
    assert calls["call_id"].is_unique
    assert len(calls) >= int(setup["Request Count"])
    outcomes = calls["outcome"].value_counts().to_dict()
    assert outcomes.get("answered", 0) > 0 and outcomes.get("blocked", 0) > 0, outcomes
    assert set(calls.loc[calls["outcome"] == "blocked", "final_code"]) == {503}
    assert peak_answered(calls) >= CHANNELS
    summary = json.loads((out / "summary.json").read_text())
    assert summary["calls"]["offered"] == len(calls)
    assert summary["setup_ms"]["count"] == outcomes["answered"]
    assert (out / "locust.html").is_file()
    assert processes_of(out) == []  # nothing of the burst left running
    print(f"\nlocust setup p50/p95 {setup['50%']}/{setup['95%']} ms; siplab "
          f"{summary['setup_ms']['p50']:.2f}/{summary['setup_ms']['p95']:.2f} ms; "
          f"{len(calls)} calls, peak {peak_answered(calls)} up, "
          f"{float(setup['Requests/s']):.1f} calls/s")
    return {"setup": setup, "calls": calls}


def test_a_headless_burst_reports_in_locust_and_siplab_files(tmp_path: Path) -> None:
    done, out = burst(tmp_path)
    assert done.stdout.strip().endswith("summary.json")
    check(out)
    assert len(list((out / "burst").glob("calls.*.jsonl"))) == 1


def test_the_same_burst_on_two_locust_workers(tmp_path: Path) -> None:
    _, out = burst(tmp_path, "--processes", "2")
    check(out)
    reports = sorted(p.name for p in (out / "burst").glob("calls.*.jsonl"))
    assert [r.split("-")[0] for r in reports] == ["calls.w0", "calls.w1"]


@pytest.mark.parametrize("args, key", [
    (["--users", "0"], "--users"),
    (["--run-time", "soon"], "--run-time"),
    (["--set", "deployment.trunk.channels=-3"], "deployment.trunk.channels"),
])
def test_bad_input_is_exit_2_and_writes_nothing(tmp_path: Path, args: list[str],
                                                key: str) -> None:
    exp = tmp_path / "burst.yaml"
    exp.write_text(yaml.safe_dump(EXPERIMENT))
    base = {"--users": "2", "--spawn-rate": "1", "--run-time": "5s"}
    for flag in args[::2]:
        base.pop(flag, None)
    argv = [a for kv in base.items() for a in kv] + args
    done = subprocess.run([str(SIPLAB), "burst", str(exp), *argv, "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert key in done.stderr
    assert not (tmp_path / "out").exists()


def test_ctrl_c_keeps_the_finished_calls_and_leaves_nothing(tmp_path: Path) -> None:
    exp = tmp_path / "burst.yaml"
    exp.write_text(yaml.safe_dump({**EXPERIMENT, "scenarios": {"talk": {"hold_s": 1}}}))
    out = tmp_path / "out"
    proc = subprocess.Popen([str(SIPLAB), "burst", str(exp), "--users", "8", "--spawn-rate",
                             "8", "--run-time", "60s", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=hear_ctrl_c)
    reports = out / "burst"
    end = time.monotonic() + 90
    while time.monotonic() < end and not any(  # some calls have ended
            p.stat().st_size > 0 for p in reports.glob("calls.*.jsonl")):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["calls"]["answered"] > 0
    assert len(pd.read_parquet(out / "calls.parquet")) == summary["calls"]["offered"]
    time.sleep(0.5)
    assert processes_of(out) == []
