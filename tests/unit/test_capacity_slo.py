"""`siplab capacity`: SLOs parsed strictly; the answer checked against Erlang B on a pure
trunk and, for a voice agent, against the twin itself: n slots meet the p95
voice-to-voice SLO and n - 1 do not, each per the twin's 95 % CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import slo as L
from lab.cli import main
from lab.erlang import channels_for_blocking, erlang_b
from lab.results import mean_ci95
from lab.spec import load_experiment
from lab.sweep import replication_summary

# A pure trunk: no network, no proxy delay, exponential holds, Poisson calls -- an
# M/M/c/c loss system. 1 call/s of 2 s offers 2 E: Erlang B blocks 3.7 % on 5 channels,
# 1.2 % on 6, so for "blocking <= 2 %" the answer is 6, and 5 misses clearly.
TRUNK = """
name: trunk-b
seed: 7
duration_s: 2000
warmup_s: 100
replications: 3
load:
  arrivals: {kind: poisson, rate_cps: 1.0}
scenarios:
  talk:
    hold_s: {dist: exponential, mean: 2}
deployment:
  trunk: {channels: 10}
"""

# A voice agent whose LLM slots bind: 2 turns/s, each holding an LLM slot ~1.45 s
# (2.9 E). With every stage unlimited the p95 voice-to-voice is ~1.3 s; 5 LLM slots keep
# it near 1.5 s, 4 push it to 2.5-3.3 s.
VOICE = """
name: voice-slo
seed: 3
duration_s: 900
warmup_s: 60
replications: 3
load:
  arrivals: {kind: poisson, rate_cps: 0.5}
  mix: [{scenario: agent, weight: 1.0}]
scenarios:
  agent:
    turns: 4
    caller_speech_s: 1.0
    agent_speech_s: 2.0
deployment:
  trunk: {channels: 40}
  ai:
    vad_ms: 300
    stt: {latency_ms: 100}
    llm: {ttft_ms: {dist: lognormal, median: 400, p95: 700}, tokens: 40, tokens_per_s: 40}
    tts: {ttfb_ms: 100}
"""


def _file(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def capacity(capsys, *args: str) -> tuple[int, dict, str]:
    rc = main(["capacity", *args, "--serial", "--quiet"])
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if out.out.strip() else {}), out.err


@pytest.mark.parametrize(("expr", "slo"), [
    ("blocking<=0.01", L.Slo("blocking", "<=", 0.01)),
    (" voice_to_voice_ms.p95 <= 1500 ", L.Slo("voice_to_voice_ms.p95", "<=", 1500.0)),
    ("setup_ms.p95<250", L.Slo("setup_ms.p95", "<", 250.0)),
    ("mos.mean>=4.0", L.Slo("mos.mean", ">=", 4.0)),
    ("blocking_probability<0.02", L.Slo("blocking", "<", 0.02)),
    ("ai.llm.wait_ms.p99>-1", L.Slo("ai.llm.wait_ms.p99", ">", -1.0)),
])
def test_slo_expressions_parse(expr: str, slo: L.Slo) -> None:
    assert L.parse_slo(expr) == slo


@pytest.mark.parametrize(("expr", "why"), [
    ("blocking=0.01", "is not METRIC OP NUMBER"),
    ("blocking==0.01", "is not METRIC OP NUMBER"),
    ("blocking<=", "is not METRIC OP NUMBER"),
    ("latency.p95<=1500", "unknown metric 'latency.p95'"),
    ("voice_to_voice_ms.p90<=1500", "unknown metric"),
    ("setup_ms.p95<=fast", "'fast' in 'setup_ms.p95<=fast' is not a number"),
    ("setup_ms.p95<=inf", "must be finite"),
    ("blocking<=1.5", "a blocking objective must be a fraction"),
])
def test_bad_slo_expressions_are_exit_2(tmp_path: Path, capsys, expr: str, why: str) -> None:
    rc, out, err = capacity(capsys, str(_file(tmp_path, TRUNK, "trunk")), "--slo", expr)
    assert rc == 2 and not out
    assert err.count("\n") == 1 and err.startswith("siplab: --slo: ") and why in err, err


def test_bad_options_and_impossible_slos_are_exit_2(tmp_path: Path, capsys) -> None:
    trunk = str(_file(tmp_path, TRUNK, "trunk"))
    for args, why in ((["--peak-cps", "0"], "--peak-cps: must be a finite number > 0"),
                      (["--replications", "1"], "--replications: must be an integer >= 2"),
                      (["--slo", "voice_to_voice_ms.p95<=1500"], "has no AI turns"),
                      (["--set", "deployment.trunk.channels=-1"],
                       "deployment.trunk.channels: must be an integer > 0")):
        rc, out, err = capacity(capsys, trunk, "--slo", "blocking<=0.01", *args)
        assert rc == 2 and not out and why in err, err


def test_a_pure_trunk_gets_erlang_bs_channels_confirmed(tmp_path: Path, capsys) -> None:
    rc, ans, _ = capacity(capsys, str(_file(tmp_path, TRUNK, "trunk")),
                          "--slo", "blocking<=0.02")
    assert rc == 0 and ans["confirmed"] is True
    assert ans["channels"] == channels_for_blocking(2.0, 0.02) == 6
    assert ans["ai"] == {} and ans["cost_per_minute_usd"] > 0
    assert ans["analytic"]["erlang_b_channels"] == 6
    assert ans["analytic"]["offered_erlangs"] == pytest.approx(2.0)
    (ev,) = ans["slo"]
    assert ev["slo"] == "blocking<=0.02" and ev["verdict"] == "meets"
    lo, hi = ev["ci95"]
    assert lo <= erlang_b(6, 2.0) <= hi <= 0.02  # Erlang B inside the twin's interval
    below = ans["below"]["channels"]
    assert below["channels"] == 5 and below["verdict"] == "misses"
    assert below["slo"][0]["ci95"][0] > 0.02
    assert below["slo"][0]["ci95"][0] <= erlang_b(5, 2.0) <= below["slo"][0]["ci95"][1]


def test_peak_cps_replaces_the_arrival_rate(tmp_path: Path, capsys) -> None:
    rc, ans, _ = capacity(capsys, str(_file(tmp_path, TRUNK, "trunk")),
                          "--slo", "blocking<=0.02", "--peak-cps", "2.5")
    first = channels_for_blocking(5.0, 0.02)
    assert rc == 0 and ans["analytic"]["rate_cps"] == 2.5
    assert ans["analytic"]["erlang_b_channels"] == first
    assert abs(ans["channels"] - first) <= 1
    assert ans["slo"][0]["verdict"] == "meets"
    assert ans["below"]["channels"]["verdict"] != "meets"


def _p95_ci(exp_path: Path, channels: int, ai: dict[str, int], reps: int) -> list[float]:
    """The twin's 95 % CI of the p95 voice-to-voice latency, computed afresh."""
    exp = L.configured(load_experiment(exp_path), channels, ai)
    p95 = [replication_summary(exp, rep, exp_path.parent)["voice_to_voice_ms"]["p95"]
           for rep in range(reps)]
    return mean_ci95(p95)["ci95"]


def test_a_voice_agents_llm_slots_are_where_the_p95_slo_binds(tmp_path: Path,
                                                              capsys) -> None:
    path = _file(tmp_path, VOICE, "voice")
    rc, ans, _ = capacity(capsys, str(path), "--slo", "voice_to_voice_ms.p95<=2000")
    assert rc == 0 and ans["confirmed"] is True
    assert set(ans["ai"]) == {"stt", "llm", "tts"}
    n = ans["ai"]["llm"]
    assert n == 5
    implied, v2v = ans["slo"]
    assert implied["slo"] == "blocking<=0.01" and implied["implied"] is True
    assert implied["verdict"] == v2v["verdict"] == "meets"
    # the analytic start came from Erlang B and C and the unlimited floor
    assert ans["analytic"]["erlang_b_channels"] >= 1
    assert ans["analytic"]["erlang_c"]["llm"]["slots"] >= 4
    assert ans["analytic"]["floor"]["slo"][1]["mean"] < 2000
    # n meets and n - 1 misses, each by the twin's own CI computed again here
    reps = ans["replications"]
    lo, hi = _p95_ci(path, ans["channels"], ans["ai"], reps)
    assert hi <= 2000 and [lo, hi] == pytest.approx(v2v["ci95"])
    below = ans["below"]["ai.llm"]
    assert below["ai"]["llm"] == n - 1
    fewer = dict(ans["ai"], llm=n - 1)
    lo, hi = _p95_ci(path, ans["channels"], fewer, below["replications"])
    assert lo > 2000
    assert below["slo"][1]["verdict"] == "misses"


def test_an_slo_no_capacity_can_meet_is_said_and_exit_1(tmp_path: Path, capsys) -> None:
    rc, ans, err = capacity(capsys, str(_file(tmp_path, TRUNK, "trunk")),
                            "--slo", "blocking<=0.02", "--slo", "mos.mean>=4.9")
    assert rc == 1 and ans["confirmed"] is False
    assert "mos.mean>=4.9" in ans["reason"] and "not confirmed" in err
