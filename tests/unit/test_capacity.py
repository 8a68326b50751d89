"""Capacity planning: the twin's blocking against Erlang B, and the dimensioning answer."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lab import capacity
from lab.erlang import erlang_b
from lab.spec import Experiment, SpecError, validate


def small_trunk(channels: int = 10, replications: int = 4, duration_s: float = 4000
                ) -> Experiment:
    """A pure loss system: 10 s exponential holds, no network or proxy delay."""
    return validate({
        "name": "small", "seed": 7, "duration_s": duration_s, "warmup_s": 100,
        "replications": replications,
        "load": {"arrivals": {"kind": "poisson", "rate_cps": 0.5}},
        "scenarios": {"talk": {"hold_s": {"dist": "exponential", "mean": 10}}},
        "deployment": {"trunk": {"channels": channels}},
    })


def test_erlang_b_known_dimensioning_tables() -> None:
    # Published Erlang B tables at 1 % grade of service.
    assert capacity.channels_needed(5.0, 0.01) == 11  # 11 channels carry 5.16 E
    assert capacity.channels_needed(84.06, 0.01) == 100
    assert capacity.channels_needed(90.0, 0.01) == 107  # 106 carry only 89.2 E
    assert erlang_b(106, 90.0) > 0.01 >= erlang_b(107, 90.0)
    assert capacity.channels_needed(90.0) == capacity.channels_needed(90.0, 0.01)
    with pytest.raises(SpecError, match="target_blocking"):
        capacity.channels_needed(90.0, 0.0)


def test_offered_load_from_the_experiment() -> None:
    exp = capacity.load("contact-centre")
    assert capacity.mean_hold_s(exp) == pytest.approx(180.0)
    assert capacity.peak_erlangs(exp) == pytest.approx(90.0)  # 0.5 cps x 180 s
    point = capacity.at_load(exp, 45.0, channels=50)
    assert point.load.arrivals.rate_cps == pytest.approx(0.25)
    assert point.deployment.trunk.channels == 50
    assert exp.deployment.trunk.channels == 100  # the original is untouched


def test_mixed_hold_is_weighted_by_the_mix() -> None:
    exp = validate({
        "load": {"mix": [{"scenario": "short", "weight": 3}, {"scenario": "long", "weight": 1}]},
        "scenarios": {"short": {"hold_s": 60}, "long": {"hold_s": {"dist": "exponential",
                                                                   "mean": 300}}},
    })
    assert capacity.mean_hold_s(exp) == pytest.approx((3 * 60 + 300) / 4)


def test_load_by_name_or_path_and_duration_override(tmp_path: Path) -> None:
    by_name = capacity.load("contact-centre", duration_s=200, seed=3, replications=2)
    assert (by_name.duration_s, by_name.seed, by_name.replications) == (200, 3, 2)
    assert by_name.warmup_s == 50  # the 300 s warm-up did not fit: a quarter of the run
    path = capacity.experiment_path("contact-centre")
    assert capacity.load(path).name == "contact-centre"
    with pytest.raises(SpecError, match="no experiment"):
        capacity.experiment_path(tmp_path / "missing.yaml")


def test_sweep_matches_erlang_b(tmp_path: Path) -> None:
    """The sweep's blocking matches Erlang B, to a stated precision: 8 replications of
    10 000 s at 8 and 12 E on 10 channels (B = 12 % and 26 %; 8 000 and 12 000 calls a
    replication) give 95 % intervals of at most ±6 % of B, and B must lie inside them.
    Carried traffic, measured from the per-second occupancy, must be A·(1 − B) to 1 %
    (a time average over 80 000 s, about 8 000 holds, per point)."""
    exp = small_trunk(duration_s=10_000)
    table = capacity.sweep(exp, [8.0, 12.0], replications=8, jobs=2, out_root=tmp_path)
    assert list(table["offered_erlangs"]) == pytest.approx([8.0, 12.0])
    assert list(table["rate_cps"]) == pytest.approx([0.8, 1.2])
    for col in ("blocking", "ci95_lo", "ci95_hi", "erlang_b", "setup_ms_p50", "setup_ms_p95",
                "carried_erlangs"):
        assert table[col].notna().all(), col
    for row in table.itertuples():
        assert row.erlang_b == pytest.approx(erlang_b(10, row.offered_erlangs))
        assert (row.ci95_hi - row.ci95_lo) / 2 <= 0.06 * row.erlang_b, row  # precise enough
        assert row.ci95_lo <= row.erlang_b <= row.ci95_hi, row
        # carried = offered x (1 - blocking), measured from the per-second occupancy
        assert row.carried_erlangs == pytest.approx(row.carried_erlangs_theory, rel=0.01)
        assert Path(row.run_dir, "summary.json").is_file()
    assert table["blocking"].is_monotonic_increasing


def test_sweep_default_points_span_the_channels() -> None:
    assert capacity.default_loads(100, 3) == pytest.approx([50.0, 90.0, 130.0])
    table = capacity.sweep(small_trunk(replications=2), points=2, jobs=1)
    assert list(table["offered_erlangs"]) == pytest.approx([5.0, 13.0])
    assert table["run_dir"].isna().all()  # temporary runs are cleaned up


def test_verify_channels_confirms_the_analytic_answer() -> None:
    """The twin confirms Erlang B's 11 channels for 5 E at 1 %: 8 replications of
    25 000 s (12 500 calls each) put B(11, 5) = 0.83 % inside a 95 % interval at most
    ±20 % of B wide (about ±13 % at this seed): narrow enough that a twin blocking 1.2 %
    would not pass for 0.83 %."""
    exp = small_trunk(duration_s=25_000)  # peak 0.5 cps x 10 s = 5 E
    n = capacity.channels_needed(capacity.peak_erlangs(exp), 0.01)
    result = capacity.verify_channels(exp, n, replications=8, jobs=2)
    assert result["channels"] == n == 11
    assert result["offered_erlangs"] == pytest.approx(5.0)
    assert result["erlang_b"] == pytest.approx(erlang_b(11, 5.0)) and result["erlang_b"] <= 0.01
    lo, hi = result["ci95"]
    assert (hi - lo) / 2 <= 0.20 * result["erlang_b"], result  # precise enough
    assert lo <= 0.01 and lo <= result["erlang_b"] <= hi, result
    assert result["consistent"]


def test_plan_answer_is_twin_confirmed() -> None:
    answer = capacity.plan(small_trunk(replications=2), 0.01, max_replications=16, jobs=1)
    assert answer.erlang_b_channels == 11
    assert answer.tried[0]["channels"] == 11
    text = answer.text()
    best = answer.confirmed
    if best is None:  # the twin could not decide: the answer must say so, not quote Erlang B
        assert text.startswith("The twin cannot confirm a channel count")
        assert answer.channels is None
    else:
        lo, hi = best["ci95"]
        assert hi <= 0.01  # the headline agrees with its own simulation
        assert text.startswith(f"{answer.channels} channels carry the peak of 5 erlangs at "
                               "≤ 1 % blocking, twin-confirmed")
        assert f"[{100 * lo:.2f} %, {100 * hi:.2f} %]" in text and "95 % CI" in text
    for t in answer.tried:  # every count below the answer that was tried is not confirmed
        if best is None or t["channels"] < best["channels"]:
            assert t["verdict"] == capacity.MISSES or t["capped"], t
    table = answer.table()
    assert table["channels"].tolist() == [t["channels"] for t in answer.tried]
    assert set(table.columns) == {"channels", "erlang_b", "simulated", "ci95_lo", "ci95_hi",
                                  "replications", "verdict"}


@pytest.mark.parametrize(("ci", "verdict"), [
    ((0.002, 0.009), "meets"), ((0.0, 0.01), "meets"), ((0.011, 0.02), "misses"),
    ((0.005, 0.0182), "undecided"), ((None, None), "undecided")])
def test_verdict(ci: tuple, verdict: str) -> None:
    assert capacity.verdict(ci, 0.01) == verdict


def test_a_collapsed_interval_is_widened_by_the_calls() -> None:
    # Every replication saw no blocking: Student t says [0, 0], which would confirm any target.
    assert capacity.widened_ci95([0.0, 0.0], 0, 268)[1] == pytest.approx(0.0141, abs=1e-3)
    assert capacity.verdict(capacity.widened_ci95([0.0, 0.0], 0, 268), 0.01) == "undecided"
    assert capacity.widened_ci95([0.0, 0.0], 0, 5000)[1] < 0.001
    assert capacity.widened_ci95([0.005, 0.04], 20, 1000) == [0.005, 0.04]  # wider already


def _fake_verify(table: dict[tuple[int, int], tuple[float, float]], calls: list):
    """A stand-in for verify_channels: the CI each (channels, replications) would show."""
    def verify(exp, channels, replications=None, **kw):
        calls.append((channels, replications))
        lo, hi = table[(channels, replications)]
        return {"channels": channels, "offered_erlangs": 5.0, "erlang_b": 0.0083,
                "target_blocking": kw["target_blocking"], "blocking": (lo + hi) / 2,
                "ci95": [lo, hi], "replications": replications, "calls": 1000,
                "carried_erlangs": 5.0, "consistent": lo <= kw["target_blocking"]}
    return verify


def test_plan_adds_replications_then_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    # 11 channels: undecided at 2 and 4 replications, shown to miss at 8; 12: meets at 2.
    table = {(11, 2): (0.005, 0.0182), (11, 4): (0.008, 0.013), (11, 8): (0.0105, 0.012),
             (12, 2): (0.001, 0.006)}
    calls: list = []
    monkeypatch.setattr(capacity, "verify_channels", _fake_verify(table, calls))
    answer = capacity.plan(small_trunk(replications=2), 0.01, max_replications=8)
    assert calls == [(11, 2), (11, 4), (11, 8), (12, 2)]
    assert [t["verdict"] for t in answer.tried] == ["misses", "meets"]
    assert answer.channels == 12
    assert answer.text().startswith("12 channels carry the peak of 5 erlangs at ≤ 1 % "
                                    "blocking, twin-confirmed: simulated 0.35 % [0.10 %, 0.60 %]"
                                    " (95 % CI over 2 replications")
    assert answer.text().endswith("Erlang B alone says 11")


def test_plan_says_plainly_when_it_cannot_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    # The case: 1.16 % [0.50, 1.82] must never read as "<= 1 %".
    table = {(11 + k, r): (0.0050, 0.0182) for k in range(3) for r in (5, 10, 20)}
    calls: list = []
    monkeypatch.setattr(capacity, "verify_channels", _fake_verify(table, calls))
    answer = capacity.plan(small_trunk(replications=5), 0.01, max_replications=20,
                           max_extra_channels=2)
    assert calls == [(n, r) for n in (11, 12, 13) for r in (5, 10, 20)]
    assert answer.channels is None and answer.confirmed is None
    assert all(t["capped"] for t in answer.tried)
    text = answer.text()
    assert text.startswith("The twin cannot confirm a channel count for the peak of 5 erlangs "
                           "at ≤ 1 % blocking: at 13 channels simulated blocking 1.16 % "
                           "[0.50 %, 1.82 %] (95 % CI over 20 replications) still straddles")
    assert "channels carry the peak" not in text


def test_plan_tries_fewer_channels_when_erlang_b_is_confirmed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The twin can need fewer than Erlang B: 11 and 10 are confirmed, 9 cannot be.
    table = {(11, 2): (0.001, 0.006), (10, 2): (0.002, 0.009), (9, 2): (0.004, 0.016),
             (9, 4): (0.006, 0.014)}
    calls: list = []
    monkeypatch.setattr(capacity, "verify_channels", _fake_verify(table, calls))
    answer = capacity.plan(small_trunk(replications=2), 0.01, max_replications=4)
    assert calls == [(11, 2), (10, 2), (9, 2), (9, 4)]
    assert answer.channels == 10
    assert answer.text().startswith("10 channels carry the peak of 5 erlangs")
    assert answer.text().endswith("Erlang B alone says 11")


def test_decide_channels_refuses_a_cap_below_the_start() -> None:
    with pytest.raises(SpecError, match="max_replications"):
        capacity.decide_channels(small_trunk(), 11, 0.01, replications=4, max_replications=2)


def test_run_and_load_run(tmp_path: Path) -> None:
    exp = small_trunk(replications=1)
    run = capacity.load_run(capacity.run(exp, tmp_path / "run"))
    assert run.path == tmp_path / "run"
    assert isinstance(run.calls, pd.DataFrame) and len(run.calls) > 0
    assert {"t_s", "active_calls", "replication"} <= set(run.timeseries.columns)
    setup = capacity.answered_setup_ms(run.calls, exp.warmup_s)
    x, p = capacity.ecdf(setup)
    assert len(x) == len(setup) and p[-1] == 1.0 and (x[1:] >= x[:-1]).all()
    assert capacity.carried_erlangs(run.timeseries, exp.warmup_s, exp.duration_s) <= 10


def test_simulate_keeps_tables_not_files() -> None:
    data = capacity.simulate(small_trunk(replications=2), jobs=1)
    assert data.path is None
    assert set(data.calls["replication"]) == {0, 1}
    assert data.summary["replications"] == 2
