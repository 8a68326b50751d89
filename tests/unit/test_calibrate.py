"""``siplab calibrate``: the twin's inputs fitted back from a run's records.

A twin run with known inputs is the oracle: calibrating from its records must give the
inputs back (the families chosen by AIC pass their KS check, the parameters within a
few per cent), and the calibrated experiment must predict the run's latencies. A
sample no family fits must fall back to the sample itself, said on stderr.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lab.calibrate import KS_ALPHA, MIN_SAMPLES, calibrate, fit_sample
from lab.cli import main
from lab.dists import Dist
from lab.runner import run_experiment
from lab.spec import load_experiment, validate

KNOWN = {
    "name": "cal", "seed": 4, "duration_s": 900, "warmup_s": 30,
    "load": {"arrivals": {"kind": "poisson", "rate_cps": 1.0}},
    "scenarios": {"talk": {"turns": 3, "caller_speech_s": 2.0, "agent_speech_s": 2.0}},
    "deployment": {
        "network": {"delay_ms": 5}, "trunk": {"channels": 200},
        "proxy": {"workers": 4, "service_ms": 0.3}, "agent": {"answer_ms": 40},
        "ai": {"vad_ms": 300,
               "stt": {"latency_ms": {"dist": "lognormal", "median": 150, "p95": 350}},
               "llm": {"ttft_ms": {"dist": "gamma", "a": 4, "scale": 100}},
               "tts": {"ttfb_ms": {"dist": "uniform", "loc": 60, "scale": 100}}}},
}


@pytest.fixture(scope="module")
def known_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cal") / "run"
    run_experiment(validate(KNOWN), backend="twin", out_dir=out, show_progress=False)
    return out


def test_calibration_recovers_the_known_inputs(known_run: Path) -> None:
    out, fits = calibrate(known_run)
    by = {f.key: f for f in fits}
    assert out == known_run / "calibrated.yaml"
    assert by["deployment.ai.vad_ms"].spec == 300.0
    assert by["deployment.agent.answer_ms"].spec == pytest.approx(40.0, rel=1e-6)
    assert by["deployment.proxy.service_ms"].spec == pytest.approx(0.3, rel=1e-4)
    n = by["deployment.ai.stt.latency_ms"].n
    assert n > 2000
    for key in ("stt.latency_ms", "llm.ttft_ms", "tts.ttfb_ms"):
        f = by[f"deployment.ai.{key}"]
        assert f.ks_p is not None and f.ks_p >= KS_ALPHA, f.as_json()
        assert f.family != "empirical"
        # the chosen fit has the lowest AIC of the fits that pass
        passing = [c["aic"] for c in f.candidates if c["ks_p"] >= KS_ALPHA]
        assert f.aic == min(passing)
    stt = Dist.parse(by["deployment.ai.stt.latency_ms"].spec)
    llm = Dist.parse(by["deployment.ai.llm.ttft_ms"].spec)
    tts = Dist.parse(by["deployment.ai.tts.ttfb_ms"].spec)
    assert by["deployment.ai.stt.latency_ms"].family == "lognorm"
    assert float(stt.frozen().median()) == pytest.approx(150.0, rel=0.05)
    assert float(stt.frozen().ppf(0.95)) == pytest.approx(350.0, rel=0.08)
    assert llm.mean == pytest.approx(400.0, rel=0.04)
    assert llm.var ** 0.5 == pytest.approx(200.0, rel=0.08)
    assert tts.mean == pytest.approx(110.0, rel=0.03)
    assert float(tts.frozen().ppf(0.0)) == pytest.approx(60.0, abs=2.0)
    evidence = json.loads((known_run / "calibration.json").read_text())
    assert [f["key"] for f in evidence["fits"]] == list(by)
    assert evidence["check"]["key"] == "setup_ms"


def test_the_calibrated_experiment_predicts_the_run(known_run: Path, tmp_path: Path) -> None:
    out, _ = calibrate(known_run, tmp_path / "cal.yaml")
    exp = load_experiment(out)  # siplab run accepts it as it is
    assert exp.name == "cal-calibrated"
    again = tmp_path / "again"
    run_experiment(exp, backend="twin", out_dir=again, show_progress=False)
    was = json.loads((known_run / "summary.json").read_text())
    now = json.loads((again / "summary.json").read_text())
    for metric in ("voice_to_voice_ms", "setup_ms"):
        for q in ("p50", "p95"):
            assert now[metric][q] == pytest.approx(was[metric][q], rel=0.03), (metric, q)


def test_a_sample_no_family_fits_is_used_as_it_is(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    bimodal = np.concatenate([rng.normal(100, 5, 1500), rng.normal(400, 5, 1500)])
    fit = fit_sample("deployment.ai.stt.latency_ms", "test", bimodal, tmp_path, "cal")
    assert fit.family == "empirical"
    assert all(c["ks_p"] < KS_ALPHA for c in fit.candidates)
    dist = Dist.parse(fit.spec, tmp_path)
    assert dist.mean == pytest.approx(float(bimodal.mean()))
    assert "no family passes KS" in fit.note
    # and the experiment that uses it loads from its folder
    assert (tmp_path / fit.spec["file"]).is_file()


def test_lognormal_samples_pick_lognormal_by_aic(tmp_path: Path) -> None:
    x = np.random.default_rng(8).lognormal(np.log(200.0), 0.5, 4000)
    fit = fit_sample("deployment.ai.llm.ttft_ms", "test", x, tmp_path, "cal")
    assert fit.family == "lognorm" and fit.spec["dist"] == "lognormal"
    assert fit.spec["median"] == pytest.approx(200.0, rel=0.03)


def test_too_few_observations_keep_the_experiment_value(tmp_path: Path) -> None:
    fit = fit_sample("deployment.ai.vad_ms", "test", [300.0, 310.0, np.nan], tmp_path, "c")
    assert fit.spec is None and fit.n == 2 and str(MIN_SAMPLES) in fit.note


def test_a_kept_input_is_said_and_left_as_it_was(known_run: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "few"
    run.mkdir()
    for name in ("experiment.resolved.yaml", "calls.parquet"):
        (run / name).write_bytes((known_run / name).read_bytes())
    pd.read_parquet(known_run / "turns.parquet").tail(3).to_parquet(run / "turns.parquet")
    assert main(["calibrate", str(run)]) == 0
    err = capsys.readouterr().err
    assert "deployment.ai.stt.latency_ms: 3 observations" in err
    got = yaml.safe_load((run / "calibrated.yaml").read_text())
    assert got["deployment"]["ai"]["stt"]["latency_ms"] == {
        "dist": "lognormal", "median": 150.0, "p95": 350.0}


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_bad_run_dir_exits_2_and_writes_nothing(tmp_path: Path, make: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    if make == "empty":
        run.mkdir()
    assert main(["calibrate", str(run), "--out", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("siplab: RUN_DIR: ")
    assert not (tmp_path / "x.yaml").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["run"] if make == "empty" else [])
