"""Voice-to-voice latency analysis: composition, tail attribution, SLO, windows, empty runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lab import latency
from lab.results import TURN_COLUMNS
from lab.spec import SpecError, load_experiment


def synthetic(n: int = 1000, *, slow: str = "llm", reps: int = 1, seed: int = 3) -> pd.DataFrame:
    """Turns with fixed small parts and one heavy-tailed part ``slow``."""
    rng = np.random.default_rng(seed)
    base = {"network_ms": 100.0, "vad_ms": 300.0, "stt_ms": 150.0, "llm_ms": 400.0,
            "tts_ms": 150.0, "queue_ms": 0.0}
    df = pd.DataFrame({col: np.full(n, v) for col, v in base.items()})
    df[f"{slow}_ms"] = df[f"{slow}_ms"] + rng.exponential(300.0, n)
    df["voice_to_voice_ms"] = df[list(base)].sum(axis=1)
    df["call_id"] = np.arange(n) // 8
    df["turn"] = np.arange(n) % 8
    df["replication"] = np.arange(n) % reps
    df["start_s"] = np.linspace(0.0, 600.0, n, endpoint=False)
    return df


def empty_turns() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float) for c in TURN_COLUMNS})


def test_parts_sum_to_voice_to_voice_on_the_twin() -> None:
    """The twin's parts account for every millisecond of voice-to-voice (``other`` = 0:
    the heard time and the parts agree), and ``network_ms`` -- drawn, not a remainder --
    is what the experiment's path gives; the waterfall's columns add up."""
    exp = latency.load("voice-agent", duration_s=400, replications=1)
    data = latency.simulate(exp)
    turns = data.counted_turns
    assert len(turns) > 100
    assert (turns["start_s"] >= exp.warmup_s).all()
    split = latency.parts(turns)
    np.testing.assert_allclose(split.sum(axis=1), turns["voice_to_voice_ms"], atol=1e-6)
    assert split["other"].abs().max() < 1e-6  # the twin attributes every millisecond
    # voice-agent.yaml's path, each way: 30 ms ± 5 (normal) plus one 20 ms packet, whose
    # audio comes a packet later when it is lost (0.5 %); then the 40 ms jitter buffer
    net = turns["network_ms"]
    per_way = 0.995 * (30 + 20) + 0.005 * (30 + 20 + 20)
    sd_way = math.sqrt(0.995 * 5.0**2 + 0.995 * 0.005 * 20.0**2)
    assert net.mean() == pytest.approx(2 * per_way + 40, abs=4 * sd_way * math.sqrt(2 / len(net)))
    assert net.std() == pytest.approx(math.sqrt(2) * sd_way, rel=0.15)
    table = latency.waterfall(turns)
    assert list(table.index) == list(latency.PARTS)  # no "other" row on the twin
    assert table["mean_ms"].sum() == pytest.approx(turns["voice_to_voice_ms"].mean())
    tail = turns["voice_to_voice_ms"] >= np.percentile(turns["voice_to_voice_ms"], 95)
    assert table["mean_of_slowest_5pct_ms"].sum() == pytest.approx(
        turns.loc[tail, "voice_to_voice_ms"].mean())
    assert "p95_ms" not in table  # a mean over the tail, not a percentile: named so
    assert list(table.columns) == ["mean_ms", "mean_share", "mean_of_slowest_5pct_ms",
                                   "slowest_5pct_share"]
    assert table["mean_share"].sum() == pytest.approx(1.0)
    assert data.summary["voice_to_voice_ms"]["count"] == len(turns)


def test_unattributed_time_becomes_other() -> None:
    turns = synthetic(200)
    turns["voice_to_voice_ms"] += 25.0  # e.g. a real backend's echo canceller
    turns.loc[0, "tts_ms"] = np.nan  # a part not measured counts as 0, lands in other
    split = latency.parts(turns)
    np.testing.assert_allclose(split.sum(axis=1), turns["voice_to_voice_ms"])
    assert split.loc[0, "other"] == pytest.approx(25.0 + 150.0)
    assert "other" in latency.waterfall(turns).index


@pytest.mark.parametrize("slow", ["llm", "stt", "queue", "network"])
def test_dominant_stage_is_the_slow_one(slow: str) -> None:
    turns = synthetic(2000, slow=slow)
    stage, share = latency.dominant_stage_at_p95(turns)
    assert stage == slow
    tail = turns[turns["voice_to_voice_ms"] >= np.percentile(turns["voice_to_voice_ms"], 95)]
    expected = tail[f"{slow}_ms"].mean() / tail["voice_to_voice_ms"].mean()
    assert share == pytest.approx(expected)
    assert 0.4 < share < 1.0


def test_tail_dominance_differs_from_the_mean() -> None:
    # The LLM is the biggest part on average, but a rare long queue makes the slow turns slow.
    turns = synthetic(2000, slow="llm")
    turns["llm_ms"] = 600.0
    turns.loc[turns.index % 20 == 0, "queue_ms"] = 3000.0  # 5 % of turns wait 3 s
    turns["voice_to_voice_ms"] = latency.parts(turns)[list(latency.PARTS)].sum(axis=1)
    table = latency.waterfall(turns)
    assert table["mean_ms"].idxmax() == "llm"
    assert latency.dominant_stage_at_p95(turns)[0] == "queue"


def test_slo_attainment_arithmetic() -> None:
    turns = pd.DataFrame({"voice_to_voice_ms": [800.0, 1200.0, 1600.0, 2000.0,
                                                900.0, 1000.0, 1100.0, 3000.0, np.nan],
                          "replication": [0, 0, 0, 0, 1, 1, 1, 1, 1]})
    att = latency.slo_attainment(turns, 1500)
    # replication 0: 2 of 4 within; replication 1: 3 of 4 (the NaN turn is not counted)
    assert att["fraction"] == pytest.approx((0.5 + 0.75) / 2)
    assert (att["turns"], att["within"], att["replications"]) == (8, 5, 2)
    # t with 1 d.o.f.: sem = |0.75 - 0.5| / 2 = 0.125, half-width 12.706 · 0.125 = 1.588,
    # so 0.625 ± 1.588 is clipped to [0, 1] on both sides
    assert att["ci95"] == [0.0, 1.0]
    assert latency.slo_attainment(turns, 1600)["fraction"] == pytest.approx((0.75 + 0.75) / 2)
    one = latency.slo_attainment(turns[turns["replication"] == 0], 1500)
    assert one["fraction"] == 0.5 and one["replications"] == 1
    # Wilson on 2 of 4 turns, z = 1.96: centre 0.5, half-width
    # z / (2 (4 + z²)) · sqrt(4 · 4 · 0.25 + z²) = 0.124974 · 2.800260 = 0.349961
    assert one["ci95"] == pytest.approx([0.150039, 0.849961], abs=2e-6)
    with pytest.raises(SpecError, match="slo_ms"):
        latency.slo_attainment(turns, 0)


def test_slo_ci_narrows_with_replications() -> None:
    wide = latency.slo_attainment(synthetic(400, reps=2), 1300)
    narrow = latency.slo_attainment(synthetic(8000, reps=8), 1300)
    assert np.diff(narrow["ci95"])[0] < np.diff(wide["ci95"])[0]


def test_percentiles_over_time_windows() -> None:
    turns = pd.DataFrame({"start_s": [0.0, 10.0, 59.9, 60.0, 61.0, 200.0],
                          "voice_to_voice_ms": [100.0, 200.0, 300.0, 1000.0, 3000.0, 50.0]})
    over = latency.percentiles_over_time(turns, 60)
    assert list(over["t_s"]) == [0.0, 60.0, 180.0]  # the empty window [120, 180) is left out
    assert list(over["turns"]) == [3, 2, 1]
    assert over["p50_ms"].tolist() == pytest.approx([200.0, 2000.0, np.nan], nan_ok=True)
    # a p95 of 2 turns is just the larger one: left out below MIN_TURNS
    assert over["p95_ms"].isna().all() and over["p99_ms"].isna().all()
    assert latency.percentiles_over_time(turns, 1000)["turns"].tolist() == [6]
    with pytest.raises(SpecError, match="window_s"):
        latency.percentiles_over_time(turns, 0)


def test_percentiles_over_time_with_enough_turns() -> None:
    rng = np.random.default_rng(3)
    v2v = rng.uniform(500, 1500, 300)
    turns = pd.DataFrame({"start_s": np.repeat([0.0, 60.0, 120.0], 100), "voice_to_voice_ms": v2v})
    over = latency.percentiles_over_time(turns, 60)
    assert list(over["turns"]) == [100, 100, 100]
    for i, chunk in enumerate(np.split(v2v, 3)):
        assert over.loc[i, "p95_ms"] == pytest.approx(np.percentile(chunk, 95))
        assert over.loc[i, "p99_ms"] == pytest.approx(np.percentile(chunk, 99))
    assert (over["p50_ms"] <= over["p95_ms"]).all() and (over["p95_ms"] <= over["p99_ms"]).all()


def test_percentiles_over_time_of_a_short_real_run() -> None:
    # A 20 s real voice run: 5 calls x 3 turns, every turn with a start time. The old plot
    # kept only 60 s windows with >= 20 turns, so a real run showed nothing.
    turns = pd.DataFrame({"start_s": np.linspace(3.0, 24.0, 15),
                          "voice_to_voice_ms": np.linspace(950.0, 1250.0, 15)})
    assert latency.auto_window_s(turns) == 10.0  # three windows of about five turns
    over = latency.percentiles_over_time(turns)
    assert list(over["t_s"]) == [0.0, 10.0, 20.0]
    assert over["p50_ms"].notna().all()  # a p50 line to draw
    assert over["p95_ms"].isna().all()  # but no p95 of five turns
    many = pd.DataFrame({"start_s": np.linspace(0.0, 3599.0, 5000)})
    assert latency.auto_window_s(many) == 300.0
    assert latency.auto_window_s(pd.DataFrame()) == 1.0


def test_llm_failures_by_cause() -> None:
    turns = synthetic(100)
    summary = {"ai": {"llm": {"errors": {"llm.timeout": 3, "llm.http_401": 7}}}}
    table = latency.llm_failures(summary, turns)
    assert table is not None
    assert table["cause"].tolist() == ["llm.http_401", "llm.timeout"]
    assert table["turns"].tolist() == [7, 3]
    assert table["share"].tolist() == pytest.approx([0.07, 0.03])
    text = latency.answer(turns, 1500, table)
    assert "; 10 turn(s) got no LLM reply (the endpoint failed: llm.http_401, llm.timeout)" \
        in text
    assert "turns whose LLM request failed" in latency.headline(turns, 1500, table)[
        "figure"].tolist()


@pytest.mark.parametrize("summary", [{}, {"ai": {}}, {"ai": {"llm": {"wait_ms": {}}}},
                                     {"ai": {"llm": {"errors": None}}}, {"ai": None}])
def test_no_llm_errors_key_shows_nothing(summary: dict) -> None:
    turns = synthetic(50)
    assert latency.llm_failures(summary, turns) is None
    assert "LLM" not in latency.answer(turns, 1500, None).split("dominates")[1]
    assert "turns whose LLM request failed" not in latency.headline(turns, 1500)[
        "figure"].tolist()


def test_empty_llm_errors_is_an_empty_table() -> None:
    table = latency.llm_failures({"ai": {"llm": {"errors": {}}}}, synthetic(10))
    assert table is not None and table.empty
    assert "no LLM reply" not in latency.answer(synthetic(10), 1500, table)


def test_headline_table() -> None:
    turns = synthetic(2000, slow="llm", reps=4)
    table = latency.headline(turns, 1500)
    values = dict(zip(table["figure"], table["value"], strict=True))
    p95 = np.percentile(turns["voice_to_voice_ms"], 95)
    assert values["voice-to-voice p95"] == f"{p95:,.0f} ms"
    assert "95 % CI" in values["turns within the 1,500 ms SLO"]
    assert values["largest part of the slowest 5 %"].startswith("the LLM (")
    assert latency.headline(turns.iloc[:0], 1500).empty


def test_ecdf_and_stage_table() -> None:
    x, p = latency.ecdf([3.0, np.nan, 1.0, 2.0])
    assert x.tolist() == [1.0, 2.0, 3.0] and p.tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    turns = synthetic(1000, slow="queue")
    turns["llm_wait_ms"] = turns["queue_ms"]
    turns["stt_wait_ms"] = 0.0
    table = latency.stage_table(turns)
    assert list(table.index[:7]) == ["voice_to_voice", *latency.PARTS]
    assert table.loc["vad", "p95"] == pytest.approx(300.0)
    assert table.loc["stt_wait", "nonzero"] == 0.0
    assert table.loc["llm_wait", "nonzero"] == 1.0
    assert "tts_wait" not in table.index  # not measured


def test_mos_summary() -> None:
    calls = pd.DataFrame({"outcome": ["answered"] * 4 + ["blocked"],
                          "mos": [4.4, 4.2, 3.5, np.nan, 1.0]})
    mos = latency.mos_summary(calls)
    assert mos["calls"] == 3  # the blocked call and the missing MOS are left out
    assert mos["mean"] == pytest.approx((4.4 + 4.2 + 3.5) / 3)
    assert mos["below_3_6"] == pytest.approx(1 / 3)
    assert mos["at_least_4"] == pytest.approx(2 / 3)
    assert mos["min"] == 3.5
    assert latency.mos_summary(calls.iloc[4:])["mean"] is None


def test_empty_turns_are_handled() -> None:
    turns = empty_turns()
    assert latency.parts(turns).empty
    assert latency.waterfall(turns).empty
    assert latency.dominant_stage_at_p95(turns)[0] is None
    assert latency.percentiles_over_time(turns, 60).empty
    assert latency.stage_table(turns).empty
    att = latency.slo_attainment(turns, 1500)
    assert att["fraction"] is None and att["turns"] == 0
    assert latency.answer(turns, 1500) == latency.NO_TURNS
    assert latency.answer(pd.DataFrame(), 1500) == latency.NO_TURNS


def test_answer_sentence() -> None:
    text = latency.answer(synthetic(2000, slow="llm", reps=4), 1500)
    assert text.startswith("p95 voice-to-voice ")
    assert " of turns within 1,500 ms; the LLM dominates the slowest 5 % of turns (" in text
    assert "(95 % CI " in text  # the SLO-attainment interval says what it is


def test_talk_run_directory_has_no_turns(tmp_path: Path) -> None:
    from lab.runner import run_experiment

    exp = latency.load("contact-centre", duration_s=120, replications=1)
    out = run_experiment(exp, out_dir=tmp_path / "run", show_progress=False).parent
    data = latency.load_run(out)
    assert data.backend == "twin" and data.name == "contact-centre"
    assert data.warmup_s == exp.warmup_s
    assert data.turns.empty and not data.calls.empty
    assert latency.answer(data.counted_turns, 1500) == latency.NO_TURNS
    assert latency.mos_summary(data.counted_calls)["calls"] > 0
    with pytest.raises(SpecError, match="run_dir"):
        latency.load_run(tmp_path)


def test_voice_agent_example_validates() -> None:
    exp = load_experiment(latency.experiment_path("voice-agent"))
    ai = exp.deployment.ai
    assert exp.scenarios["agent"].turns == 8
    # the LLM cap is sized to bind: offered stream-erlangs between 70 % and 90 % of the slots
    rate = exp.load.arrivals.rate_cps  # type: ignore[union-attr]
    hold_s = (ai.llm.ttft_ms.mean + 1000 * ai.llm.tokens.mean / ai.llm.tokens_per_s) / 1000
    assert ai.llm.concurrency is not None
    assert 0.7 < rate * 8 * hold_s / ai.llm.concurrency < 0.9
