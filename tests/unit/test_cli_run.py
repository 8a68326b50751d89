"""`siplab run`: results of CONTRACT.md, determinism, and bad input (exit 2, nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from lab.cli import main
from lab.results import CALL_COLUMNS, TURN_COLUMNS
from tests.conftest import hear_ctrl_c

SMALL = """
name: small
seed: 3
duration_s: 600
warmup_s: 60
replications: 2
load:
  arrivals: {kind: poisson, rate_cps: 0.5}
scenarios:
  talk:
    hold_s: {dist: exponential, mean: 30}
deployment:
  network: {delay_ms: 20, jitter_ms: 2, loss: 0.01}
  trunk: {channels: 15}
  proxy: {workers: 4, service_ms: 0.2}
"""


@pytest.fixture
def exp_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return path


def run(*args: str) -> int:
    return main(["run", *args, "--quiet"])


def test_run_writes_every_contract_file(exp_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert run(str(exp_file), "--out", str(out)) == 0
    assert capsys.readouterr().out.strip() == str(out / "summary.json")
    summary = json.loads((out / "summary.json").read_text())
    for key in ("backend", "calls", "blocking_probability", "setup_ms", "pdd_ms",
                "voice_to_voice_ms", "mos", "ai", "security", "cost", "run"):
        assert key in summary
    assert summary["backend"] == "twin"
    assert set(summary["calls"]) == {"offered", "answered", "blocked", "failed", "rejected"}
    c = summary["calls"]
    assert c["offered"] == c["answered"] + c["blocked"] + c["failed"] + c["rejected"] > 0
    assert set(summary["setup_ms"]) == {"mean", "p50", "p95", "p99", "count"}
    assert summary["setup_ms"]["p50"] >= 40.0  # one 20 ms round trip at least
    assert set(summary["cost"]) >= {"total_usd", "per_minute_usd", "breakdown"}
    assert summary["run"]["events"] > 0 and summary["run"]["events_per_s"] > 0
    calls = pd.read_parquet(out / "calls.parquet")
    assert list(calls.columns)[: len(CALL_COLUMNS)] == list(CALL_COLUMNS)
    assert set(calls.replication) == {0, 1}
    assert set(calls.outcome) <= {"answered", "blocked", "failed", "rejected"}
    assert c["offered"] == int((calls.start_s >= 60).sum())
    # the blocking CI, recomputed from calls.parquet with scipy: each replication's
    # blocked fraction after the warm-up, Student's t over the two (clipped at 0)
    counted = calls[calls.start_s >= 60]
    per_rep = counted.groupby("replication").outcome.apply(lambda o: (o == "blocked").mean())
    assert per_rep.min() > 0  # 15 E on 15 channels: both replications block
    want = stats.t.interval(0.95, 1, loc=per_rep.mean(), scale=stats.sem(per_rep))
    bp = summary["blocking_probability"]
    assert bp["mean"] == pytest.approx(per_rep.mean(), rel=1e-12)
    assert bp["ci95"] == pytest.approx([max(0.0, want[0]), want[1]], rel=1e-9)
    turns = pd.read_parquet(out / "turns.parquet")
    assert list(turns.columns) == list(TURN_COLUMNS)
    ts = pd.read_parquet(out / "timeseries.parquet")
    assert {"t_s", "active_calls", "arrivals", "blocked", "rejected"} <= set(ts.columns)
    assert ts.active_calls.max() <= 15
    resolved = (out / "experiment.resolved.yaml").read_text()
    assert "queue_limit: 1000" in resolved and "t1_ms: 500.0" in resolved


def test_same_seed_same_files_different_seed_different(exp_file: Path, tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert run(str(exp_file), "--out", str(a)) == 0
    assert run(str(exp_file), "--out", str(b), "--jobs", "1") == 0
    assert run(str(exp_file), "--out", str(c), "--seed", "4") == 0
    for name in ("calls.parquet", "turns.parquet", "timeseries.parquet"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    sa.pop("run"), sb.pop("run")
    assert sa == sb
    assert (a / "calls.parquet").read_bytes() != (c / "calls.parquet").read_bytes()


def test_set_overrides_a_nested_key(exp_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert run(str(exp_file), "--out", str(out), "--set", "deployment.trunk.channels=2",
               "--replications", "1") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["blocking_probability"]["mean"] > 0.5
    assert "channels: 2" in (out / "experiment.resolved.yaml").read_text()


@pytest.mark.parametrize(("args", "key"), [
    (["--set", "deployment.trunk.channels=-3"],
     "deployment.trunk.channels: must be an integer > 0, got -3"),
    (["--set", "deployment.trunk.chanels=3"], "deployment.trunk.chanels: unknown key"),
    (["--set", "deployment.trunk.channels=many"], "deployment.trunk.channels: must be an integer"),
    (["--set", "load.arrivals.rate_cps=-1"], "load.arrivals.rate_cps: must be a number > 0"),
    (["--set", "deployment.network.loss=1.5"], "deployment.network.loss: must be a number <= 1"),
    (["--set", "scenarios.talk.hold_s.dist=nosuch"], "scenarios.talk.hold_s: unknown distribution"),
    (["--set", "real.target=sip:bot@192.0.2.1"], "real.target: must be one of"),
    (["--set", "deployment.security.pike.reqs_density_per_unit=30"],
     "deployment.security.pike: the security layer is not modelled yet"),
    (["--backend", "quantum"], "--backend: unknown backend"),
    (["--replications", "0"], "--replications: must be an integer > 0"),
])
def test_bad_input_exit_2_one_line_nothing_written(exp_file: Path, tmp_path: Path,
                                                   args: list[str], key: str) -> None:
    out = tmp_path / "never"
    proc = subprocess.run([sys.executable, "-m", "lab.cli", "run", str(exp_file), "--out",
                           str(out), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], proc.stderr
    assert not out.exists()
    assert proc.stdout == ""


def test_missing_files_exit_2(tmp_path: Path, capsys) -> None:
    assert run(str(tmp_path / "absent.yaml"), "--out", str(tmp_path / "x")) == 2
    assert "experiment file not found" in capsys.readouterr().err
    exp = tmp_path / "e.yaml"
    exp.write_text("scenarios:\n  talk:\n    hold_s: {dist: empirical, file: holds.csv, "
                   "column: hold_s}\n")
    assert run(str(exp), "--out", str(tmp_path / "y")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("siplab: scenarios.talk.hold_s: empirical: file not found: holds.csv")
    assert not (tmp_path / "y").exists()


def test_empirical_and_replay_files_relative_to_the_experiment(tmp_path: Path) -> None:
    (tmp_path / "holds.csv").write_text("hold_s\n10\n20\n30\n")
    (tmp_path / "arrivals.csv").write_text("start_s\n0.5\n1.0\n4.0\n9.5\n")
    exp = tmp_path / "e.yaml"
    exp.write_text("duration_s: 20\nload:\n  arrivals: {kind: replay, file: arrivals.csv}\n"
                   "scenarios:\n  talk:\n    hold_s: {dist: empirical, file: holds.csv, "
                   "column: hold_s}\n")
    out = tmp_path / "o"
    assert run(str(exp), "--out", str(out)) == 0
    calls = pd.read_parquet(out / "calls.parquet")
    assert calls.start_s.tolist() == [0.5, 1.0, 4.0, 9.5]
    assert set(calls.duration_s.round(6)) <= {10.0, 20.0, 30.0}


def test_erlang_and_emodel_commands_print_json(capsys) -> None:
    assert main(["erlang-b", "--channels", "10", "--erlangs", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["blocking"] == pytest.approx(0.018385, abs=1e-5)
    assert main(["erlang-c", "--agents", "2", "--erlangs", "1", "--mean-service-ms", "1000"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["wait_probability"] == pytest.approx(1 / 3)
    assert out["mean_wait_ms"] == pytest.approx(1000 / 3)  # P(wait)·S/(N−A)
    assert main(["emodel", "--codec", "G711", "--delay-ms", "0", "--loss", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["R"] == pytest.approx(93.2, abs=0.05)
    assert main(["erlang-b", "--channels", "-1", "--erlangs", "5"]) == 2
    assert main(["emodel", "--delay-ms", "10", "--loss", "3"]) == 2


def test_ctrl_c_keeps_finished_calls(tmp_path: Path) -> None:
    """SIGINT mid-run: exit 130, every call finished so far is in calls.parquet."""
    import signal
    import time

    exp = tmp_path / "long.yaml"
    exp.write_text("name: long\nduration_s: 40000\nload:\n  arrivals: {kind: poisson, "
                   "rate_cps: 20}\ndeployment:\n  trunk: {channels: 5000}\n"
                   "  network: {delay_ms: 10}\n")
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "lab.cli", "run", str(exp), "--out", str(out),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=hear_ctrl_c)
    deadline = time.time() + 60
    while not (out / "experiment.resolved.yaml").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(3.0)  # the simulation runs a while (800k calls planned)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "finished calls kept" in stderr
    calls = pd.read_parquet(out / "calls.parquet")
    assert len(calls) > 0
    assert calls.call_id.is_unique
    assert calls.outcome.isin(["answered", "blocked", "failed", "rejected"]).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["calls"]["offered"] == len(calls)
