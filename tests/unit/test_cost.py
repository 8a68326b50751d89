"""Cost model: carrier billing increments, AI usage prices, price books, projections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lab import costing
from lab.cost import (
    HOURS_PER_MONTH,
    AiPrices,
    Compute,
    PriceBook,
    Telephony,
    billed_seconds,
    call_costs,
    load_pricebook,
    monthly_cost,
    pricebook_names,
    summary_cost,
)
from lab.spec import SpecError


def _calls(durations: list[float], outcomes: list[str] | None = None,
           turns: list[int] | None = None) -> pd.DataFrame:
    n = len(durations)
    return pd.DataFrame({"call_id": range(n), "replication": 0,
                         "outcome": outcomes or ["answered"] * n, "duration_s": durations,
                         "turns": turns or [0] * n, "start_s": 0.0})


def _book(name: str = "t", rate: float = 0.01, inc: float = 60, minimum: float = 60,
          **ai: float) -> PriceBook:
    return PriceBook(name=name, telephony=Telephony(inbound_per_minute_usd=rate,
                                                    outbound_per_minute_usd=2 * rate,
                                                    billing_increment_s=inc, min_billed_s=minimum,
                                                    did_monthly_usd=1.0),
                     ai=AiPrices.model_validate(ai),
                     compute=Compute(per_vcpu_hour_usd=0.05, vcpus=2))


@pytest.mark.parametrize(("talk", "inc", "minimum", "billed"), [
    (61, 60, 60, 120), (60, 60, 60, 60), (1, 60, 60, 60), (61, 6, 6, 66), (7, 6, 30, 30),
    (0.5, 1, 0, 1), (0, 1, 0, 0), (66, 6, 6, 66),
])
def test_billing_increments(talk: float, inc: float, minimum: float, billed: float) -> None:
    assert billed_seconds(np.array([talk]), inc, minimum)[0] == pytest.approx(billed)


def test_unanswered_calls_cost_nothing() -> None:
    pb = _book(llm_per_1k_input_tokens_usd=1.0)
    calls = _calls([61.0, 61.0, 61.0], ["answered", "blocked", "failed"], [2, 2, 2])
    out = call_costs(calls, pd.DataFrame(), pb, 50)
    assert out["billed_s"].tolist() == [120.0, 0.0, 0.0]
    assert out["telephony_usd"].tolist() == pytest.approx([0.02, 0.0, 0.0])
    assert out.loc[1:, "cost_usd"].sum() == 0.0


def test_direction_prices() -> None:
    calls = _calls([60.0, 60.0]).assign(direction=["inbound", "outbound"])
    out = call_costs(calls, pd.DataFrame(), _book(rate=0.01), 0)
    assert out["telephony_usd"].tolist() == pytest.approx([0.01, 0.02])
    out = call_costs(_calls([60.0]), pd.DataFrame(), _book(rate=0.01), 0, direction="outbound")
    assert out["telephony_usd"].iloc[0] == pytest.approx(0.02)


def test_ai_costs_per_turn() -> None:
    pb = _book(rate=0.0, stt_per_minute_usd=0.06, llm_per_1k_input_tokens_usd=0.001,
               llm_per_1k_output_tokens_usd=0.002, tts_per_1k_chars_usd=0.03)
    calls = _calls([30.0], turns=[2])
    turns = pd.DataFrame({"replication": 0, "call_id": [0, 0], "turn": [0, 1],
                          "caller_speech_s": [10.0, 20.0], "agent_speech_s": [20.0, 40.0]})
    out = call_costs(calls, turns, pb, 100, input_tokens_per_turn=500)
    assert out["stt_usd"].iloc[0] == pytest.approx(30 / 60 * 0.06)  # 30 s of caller speech
    assert out["llm_usd"].iloc[0] == pytest.approx(2 * (0.5 * 0.001 + 0.1 * 0.002))
    assert out["tts_usd"].iloc[0] == pytest.approx(60 * 15 / 1000 * 0.03)  # 900 characters
    assert out["cost_usd"].iloc[0] == pytest.approx(0.03 + 0.0014 + 0.027)


def test_stt_billed_per_call() -> None:
    pb = _book(rate=0.0, stt_per_minute_usd=0.06).model_copy(
        update={"ai": AiPrices(stt_per_minute_usd=0.06, stt_billing="call")})
    out = call_costs(_calls([120.0, 120.0], turns=[3, 0]), pd.DataFrame(), pb, 0)
    assert out["stt_usd"].tolist() == pytest.approx([0.12, 0.0])


def test_pricebooks_by_name_and_path(tmp_path: Path) -> None:
    assert {"default", "twilio", "wholesale"} <= set(pricebook_names())
    wholesale = load_pricebook("wholesale")
    assert wholesale.telephony.increments == "6/6"
    assert load_pricebook("default").direction == "inbound"
    (tmp_path / "mine.yaml").write_text(
        "telephony: {per_minute_usd: 0.02, billing_increment_s: 1}\n")
    by_path = load_pricebook(str(tmp_path / "mine.yaml"))
    assert by_path.name == "mine"
    assert by_path.telephony.inbound_per_minute_usd == by_path.telephony.outbound_per_minute_usd
    assert load_pricebook("mine.yaml", tmp_path) == by_path


@pytest.mark.parametrize(("text", "needle"), [
    ("telephony: {billing_increment_s: 0}\n", "telephony.billing_increment_s"),
    ("telephony: {per_minut_usd: 1}\n", "per_minut_usd"),
    ("- 1\n", "mapping"),
    ("a: [\n", "YAML"),
])
def test_bad_pricebook(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(SpecError) as err:
        load_pricebook(str(tmp_path / "bad.yaml"))
    assert str(err.value).startswith("pricebook: bad.yaml: ")
    assert needle in str(err.value)


def test_unknown_pricebook() -> None:
    with pytest.raises(SpecError, match=r"^pricebook: no price book .*'nope'.*wholesale"):
        load_pricebook("nope")


def test_monthly_projection() -> None:
    pb = _book()
    month = monthly_cost({"telephony_usd": 0.02, "llm_usd": 0.01}, 2.0, pb, 1000, dids=3)
    fixed = 3 * 1.0 + 2 * 0.05 * HOURS_PER_MONTH
    assert month["variable_usd"] == pytest.approx(30.0)
    assert month["fixed_usd"] == pytest.approx(fixed)
    assert month["total_usd"] == pytest.approx(30.0 + fixed)
    assert month["per_call_usd"] == pytest.approx((30.0 + fixed) / 1000)
    assert month["per_minute_usd"] == pytest.approx((30.0 + fixed) / 2000)
    assert monthly_cost({}, 2.0, pb, 0)["per_minute_usd"] is None


def test_summary_cost_shape() -> None:
    pb = _book()
    calls = _calls([61.0, 30.0, 10.0], ["answered", "answered", "blocked"])
    costs = call_costs(calls, pd.DataFrame(), pb, 0)
    s = summary_cost(costs, calls, pb, 3600.0, 2, calls_per_month=100)
    assert s["breakdown"]["telephony_usd"] == pytest.approx(0.03)  # 120 s + 60 s billed
    assert s["breakdown"]["compute_usd"] == pytest.approx(2 * 0.05 * 2)
    assert s["total_usd"] == pytest.approx(0.03 + 0.2)
    assert s["per_minute_usd"] == pytest.approx(0.23 / (91 / 60))
    assert s["billed_minutes"] == pytest.approx(3.0)
    assert s["monthly"]["calls_per_month"] == 100
    assert s["per_month_usd"] == pytest.approx(100 * 0.015 + 1.0 + 0.1 * HOURS_PER_MONTH)
    default = summary_cost(costs, calls, pb, 3600.0, 2)
    assert default["monthly"]["calls_per_month"] == pytest.approx(2 / 2 * HOURS_PER_MONTH)


def _usage() -> costing.Usage:
    calls = _calls([61.0, 125.0, 20.0, 5.0], ["answered", "answered", "answered", "failed"])
    return costing.Usage(calls, pd.DataFrame(), 0.0, 3600.0, 1)


def test_compare_ranks_as_the_prices_say() -> None:
    books = [_book("dear", rate=0.03), _book("cheap", rate=0.01), _book("mid", rate=0.02)]
    table = costing.compare(_usage(), books, 10_000)
    assert table["pricebook"].tolist() == ["cheap", "mid", "dear"]
    assert table["rank"].tolist() == [1, 2, 3]
    # 6/6 billing beats 60/60 at the same rate on these short calls
    table = costing.compare(_usage(), [_book("minute"), _book("six", inc=6, minimum=6)], 10)
    assert table["pricebook"].iloc[0] == "six"
    assert table["billed_over_talk"].iloc[1] == pytest.approx(360 / 206)


def test_volume_curve_falls_towards_usage_cost() -> None:
    curve = costing.volume_curve(_usage(), [_book()], [10, 1000, 1e6])
    per_min = curve["per_minute_usd"].to_numpy()
    assert per_min[0] > per_min[1] > per_min[2]
    usage_per_min = 0.01 * 360 / 206  # billed minutes over talk minutes at 0.01/min
    fixed = 1.0 + 2 * 0.05 * HOURS_PER_MONTH  # one DID and two vCPUs all month
    minutes = 1e6 * 206 / 3 / 60  # a million calls of the run's mean talk time
    assert per_min[2] == pytest.approx(usage_per_min + fixed / minutes)


def test_sensitivity_is_symmetric_and_sorted() -> None:
    pb = _book(tts_per_1k_chars_usd=0.0)
    tornado = costing.sensitivity(_usage(), pb, 1e6, delta=0.1)
    assert tornado["price"].iloc[0] == "carrier per minute"
    swing = tornado["swing_usd"].to_numpy()
    assert (np.diff(swing) <= 1e-15).all()
    base = tornado["base_usd"].iloc[0]
    row = tornado.set_index("price").loc["carrier per minute"]
    assert base - row["low_usd"] == pytest.approx(row["high_usd"] - base)
    telephony_per_min = 0.01 * 360 / 206
    assert row["high_usd"] - row["low_usd"] == pytest.approx(0.2 * telephony_per_min)
    assert tornado.set_index("price").loc["TTS characters", "swing_usd"] == 0.0
    with pytest.raises(SpecError, match=r"^delta: "):
        costing.sensitivity(_usage(), pb, 1000, delta=1.5)


def test_load_pricebooks_list() -> None:
    books = costing.load_pricebooks("default, twilio,wholesale")
    assert [b.name for b in books] == ["default", "twilio", "wholesale"]
    with pytest.raises(SpecError, match=r"^pricebook: "):
        costing.load_pricebooks(" , ")


def test_the_experiments_own_workload_unless_overridden() -> None:
    talk = costing.load("contact-centre")
    assert talk.scenarios["talk"].turns == 0  # the default no longer invents 8 AI turns
    assert costing.workload(talk) == "the experiment's own workload (talk: no AI turns, talk only)"
    eight = costing.load("contact-centre", ai_turns=8)
    assert eight.scenarios["talk"].turns == 8
    assert costing.workload(eight, 8).startswith("every scenario set to 8 AI turns per call by "
                                                 "-p ai_turns")
    for bad in (-1, 2.5, True):
        with pytest.raises(SpecError, match=r"^ai_turns: "):
            costing.load("contact-centre", ai_turns=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("overrides", [[], ["scenarios.talk.turns=3"]], ids=["talk", "ai"])
def test_report_cost_equals_the_runs_own(tmp_path: Path, overrides: list[str]) -> None:
    """The report's cost per minute is the figure siplab run writes to summary.json."""
    import json

    from lab import capacity
    from lab.runner import run_experiment

    exp = capacity.load("contact-centre", duration_s=400, replications=2, overrides=overrides)
    summary = json.loads(run_experiment(exp, backend="twin", out_dir=tmp_path / "run",
                                        show_progress=False, jobs=1).read_text())
    usage = costing.simulate(exp, jobs=1)
    cost = costing.run_cost(usage, costing.own_pricebook(exp))
    assert cost["per_minute_usd"] == pytest.approx(summary["cost"]["per_minute_usd"], rel=1e-9)
    assert cost["total_usd"] == pytest.approx(summary["cost"]["total_usd"], rel=1e-9)
    table = costing.compare(usage, costing.load_pricebooks("twilio,wholesale"), 50_000)
    text = costing.answer(table, 50_000, cost)
    per_min = summary["cost"]["per_minute_usd"]
    assert text.startswith(f"A talk minute costs {100 * per_min:.2f} ¢ (${per_min:.4f}) under "
                           "the experiment's price book default, as siplab run reports; ")
    head = costing.headline(cost, table, 50_000)
    assert head["per minute"].iloc[0] == f"${per_min:.4f}"
    assert head["price book"].tolist()[1:] == table["pricebook"].tolist()

