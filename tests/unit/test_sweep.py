"""`siplab sweep`: the grid's product × replications as one tidy table, the same on Dask
as in one process, bad grids refused before anything is written, failures and Ctrl-C
said and kept."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lab import sweep as S
from lab.cli import main
from tests.conftest import hear_ctrl_c

ROOT = Path(__file__).resolve().parents[2]

SMALL = """
name: sweep-small
seed: 5
duration_s: 300
warmup_s: 30
replications: 2
load:
  arrivals: {kind: poisson, rate_cps: 0.4}
  mix: [{scenario: agent, weight: 1.0}]
scenarios:
  agent:
    turns: 3
    caller_speech_s: 1.0
    agent_speech_s: 2.0
deployment:
  network: {delay_ms: 20, jitter_ms: 2, loss: 0.01}
  trunk: {channels: 6}
  ai:
    llm: {concurrency: 3}
"""


@pytest.fixture
def exp_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return path


def sweep(*args: str) -> int:
    return main(["sweep", *args, "--quiet"])


def test_dask_sweep_equals_the_serial_sweep_bit_for_bit(exp_file: Path, tmp_path: Path,
                                                        capsys) -> None:
    grid = ["--grid", "deployment.trunk.channels=4,8",
            "--grid", "deployment.ai.llm.concurrency=1,3"]
    serial, dask = tmp_path / "serial.parquet", tmp_path / "dask.parquet"
    assert sweep(str(exp_file), *grid, "--serial", "--out", str(serial)) == 0
    assert sweep(str(exp_file), *grid, "--workers", "2", "--out", str(dask)) == 0
    assert capsys.readouterr().out.split() == [str(serial), str(dask)]
    a, b = pd.read_parquet(serial), pd.read_parquet(dask)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert len(a) == 2 * 2 * 2 and (a["error"] == "").all()
    assert a["offered"].gt(0).all() and a["turns"].gt(0).all()


def test_the_table_is_the_grids_product_times_replications(exp_file: Path) -> None:
    grid = S.parse_grid(["deployment.trunk.channels=2,4,30", "load.arrivals.rate_cps=0.2,0.5"])
    res = S.sweep(exp_file, grid, replications=2, where=S.Tasks(serial=True,
                                                                 show_progress=False))
    t = res.table
    keys = ["deployment.trunk.channels", "load.arrivals.rate_cps"]
    assert list(t.columns) == ["point", *keys, "replication",
                               *(name for name, _ in S.HEADLINE), "error"]
    assert len(t) == 3 * 2 * 2 and not res.failed and not res.interrupted
    expected = [(c, r, rep) for c, r in itertools.product([2, 4, 30], [0.2, 0.5])
                for rep in (0, 1)]
    assert list(t[[*keys, "replication"]].itertuples(index=False, name=None)) == expected
    assert t["point"].tolist() == [p for p in range(6) for _ in (0, 1)]
    # the figures follow the grid: the same callers (common random numbers) at each
    # channel count, and fewer channels block more
    for _, rows in t.groupby(["load.arrivals.rate_cps", "replication"]):
        assert rows["offered"].nunique() == 1
        by_channels = rows.sort_values("deployment.trunk.channels")["blocking"].tolist()
        assert by_channels[0] > by_channels[-1] == 0.0
    c = t["offered"] == t["answered"] + t["blocked"] + t["failed"] + t["rejected"]
    assert c.all()


def test_a_row_is_what_siplab_run_reports_for_that_point(exp_file: Path, tmp_path: Path,
                                                         capsys) -> None:
    grid = S.parse_grid(["deployment.trunk.channels=3"])
    row = S.sweep(exp_file, grid, replications=1,
                  where=S.Tasks(serial=True, show_progress=False)).table.iloc[0]
    out = tmp_path / "run"
    assert main(["run", str(exp_file), "--set", "deployment.trunk.channels=3",
                 "--replications", "1", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    s = json.loads((out / "summary.json").read_text())
    for name, path in S.HEADLINE:
        if name in ("sim_s",):
            continue
        want: Any = s
        for part in path:
            want = want[part]
        got = row[name]
        assert (pd.isna(got) and want is None) or got == want, name


@pytest.mark.parametrize(("grid", "key"), [
    ("deployment.trunk.channels=4,-3", "deployment.trunk.channels: must be an integer > 0"),
    ("deployment.trunk.chanels=4", "deployment.trunk.chanels: unknown key"),
    ("deployment.trunk.channels=4,,5", "--grid deployment.trunk.channels: an empty value"),
    ("deployment.trunk.channels=4,4", "--grid deployment.trunk.channels: a value is given"),
    ("deployment.trunk.channels", "--grid: needs KEY=V1,V2"),
    ("deployment..channels=4", "--grid deployment..channels: not a dotted key path"),
    ("replications=1,2", "--grid replications: replications are not a grid axis"),
    ("load.arrivals.rate_cps=fast", "load.arrivals.rate_cps: must be a number"),
    ("deployment.ai.llm.concurrency=[1", "deployment.ai.llm.concurrency: value is not a YAML"),
])
def test_a_bad_grid_is_exit_2_naming_the_key_and_writes_nothing(
        exp_file: Path, tmp_path: Path, capsys, grid: str, key: str) -> None:
    out = tmp_path / "t.parquet"
    assert sweep(str(exp_file), "--grid", grid, "--serial", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err, err
    assert not out.exists() and list(tmp_path.iterdir()) == [exp_file]


def test_the_grid_is_given_twice_or_not_at_all(exp_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "t.parquet"
    assert sweep(str(exp_file), "--grid", "seed=1,2", "--grid", "seed=3", "--serial",
                 "--out", str(out)) == 2
    assert "--grid seed: given twice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        sweep(str(exp_file), "--serial", "--out", str(out))
    assert exc.value.code == 2 and not out.exists()


def test_flow_values_stay_whole_and_become_text_columns(exp_file: Path) -> None:
    grid = S.parse_grid(["scenarios.agent.caller_speech_s={dist: exponential, mean: 1},2.5"])
    assert grid.raws == (("{dist: exponential, mean: 1}", "2.5"),)
    t = S.sweep(exp_file, grid, replications=1,
                where=S.Tasks(serial=True, show_progress=False)).table
    assert t["scenarios.agent.caller_speech_s"].tolist() == ["{dist: exponential, mean: 1}",
                                                             "2.5"]


def _failing_at(monkeypatch, fail: set[tuple[int, int]], exc: BaseException) -> None:
    real = S.replication_summary
    calls = itertools.count()

    def fake(exp, rep, base_dir=None, backend="twin"):
        if (next(calls), rep) in fail:
            raise exc
        return real(exp, rep, base_dir, backend)

    monkeypatch.setattr(S, "replication_summary", fake)


def test_a_failing_run_is_counted_said_and_kept_as_a_row(exp_file: Path, tmp_path: Path,
                                                        capsys, monkeypatch) -> None:
    _failing_at(monkeypatch, {(1, 1)}, ValueError("the model broke"))
    out = tmp_path / "t.parquet"
    assert sweep(str(exp_file), "--grid", "deployment.trunk.channels=4,8", "--serial",
                 "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "1 of 4 runs" in err and "ValueError: the model broke" in err
    t = pd.read_parquet(out)
    assert len(t) == 4
    bad = t[t["error"] != ""]
    assert bad[["point", "replication"]].values.tolist() == [[0, 1]]
    assert bad["offered"].isna().all() and t.loc[t["error"] == "", "offered"].notna().all()


def test_ctrl_c_keeps_the_finished_rows_and_says_how_many(exp_file: Path, tmp_path: Path,
                                                         capsys, monkeypatch) -> None:
    _failing_at(monkeypatch, {(2, 0)}, KeyboardInterrupt())
    out = tmp_path / "t.parquet"
    assert sweep(str(exp_file), "--grid", "deployment.trunk.channels=4,8,12", "--serial",
                 "--out", str(out)) == 130
    assert "kept 2 of 6 runs" in capsys.readouterr().err
    t = pd.read_parquet(out)
    assert t[["point", "replication"]].values.tolist() == [[0, 0], [0, 1]]


@pytest.mark.parametrize(("args", "message"), [
    (["--out", "t.csv"], "--out: must name a .parquet file"),
    (["--replications", "0", "--out", "t.parquet"], "--replications: must be an integer > 0"),
    (["--workers", "0", "--out", "t.parquet"], "--workers: must be an integer > 0"),
])
def test_bad_options_are_exit_2(exp_file: Path, tmp_path: Path, capsys, monkeypatch,
                                args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert sweep(str(exp_file), "--grid", "seed=1,2", *args) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [exp_file]


def test_a_real_ctrl_c_on_the_dask_sweep_writes_what_finished(tmp_path: Path) -> None:
    """SIGINT to the whole process group (a terminal's Ctrl-C), the coordinator and the
    Dask workers alike: exit 130, the finished rows written, their count said."""
    out = tmp_path / "t.parquet"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", "sweep", str(ROOT / "lab/experiments/voice-agent.yaml"),
         "--grid", "deployment.ai.llm.concurrency=5,6,7,8",
         "--grid", "load.arrivals.rate_cps=0.2,0.3,0.4", "--replications", "12",
         "--workers", "2", "--quiet", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=hear_ctrl_c)
    # the cluster is up and some of the 144 runs are done (about 80 s in all on a quiet
    # host, longer under load, so the Ctrl-C always lands mid-sweep)
    time.sleep(9.0)
    assert proc.poll() is None, "the sweep ended before the Ctrl-C"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    m = re.search(r"kept (\d+) of 144 runs", err)
    assert m, err
    t = pd.read_parquet(out)
    assert len(t) == int(m.group(1)) < 144
    assert not t.duplicated(["point", "replication"]).any() and (t["error"] == "").all()
