"""Cost analysis of a run: breakdown, monthly projection, provider comparison, sensitivity.

A run's call records (from the twin or the real backend) are priced with
:mod:`lab.cost` under one or more price books. Usage costs (carrier minutes,
STT, LLM, TTS) scale with the number of calls; DID rent and compute run all
month whatever the traffic, so the cost of a minute falls as monthly volume
grows, towards the usage cost alone. The same records priced under several
price books compare providers like for like — including the effect of billing
increments: short calls cost relatively more under 60/60 than under 6/6.

Sensitivity moves one price at a time by ±X % and reports the change in the
cost per minute at a monthly volume (the data of a tornado chart): the price
with the widest bar is the one worth negotiating.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab.cost import (
    INPUT_TOKENS_PER_TURN,
    VARIABLE_PARTS,
    PriceBook,
    call_costs,
    load_pricebook,
    summary_cost,
)
from lab.spec import Experiment, SpecError, load_experiment

#: The prices a sensitivity analysis moves: (section, field, label); telephony's
#: per-minute field follows the price book's direction.
PRICES = (
    ("telephony", "per_minute", "carrier per minute"),
    ("telephony", "did_monthly_usd", "DID per month"),
    ("ai", "stt_per_minute_usd", "STT per minute"),
    ("ai", "llm_per_1k_input_tokens_usd", "LLM input tokens"),
    ("ai", "llm_per_1k_output_tokens_usd", "LLM output tokens"),
    ("ai", "tts_per_1k_chars_usd", "TTS characters"),
    ("compute", "per_vcpu_hour_usd", "compute per vCPU-hour"),
)


@dataclass(frozen=True)
class Usage:
    """What a run consumed: the counted calls, their AI turns, the time they span."""

    calls: pd.DataFrame
    turns: pd.DataFrame
    llm_tokens_mean: float
    sim_s: float  # measured seconds per replication (after warm-up)
    replications: int
    name: str = "run"
    input_tokens_per_turn: float = INPUT_TOKENS_PER_TURN

    def costs(self, pb: PriceBook) -> pd.DataFrame:
        """Per-call costs under ``pb``."""
        return call_costs(self.calls, self.turns, pb, self.llm_tokens_mean,
                          input_tokens_per_turn=self.input_tokens_per_turn)


# ---------------------------------------------------------------------------- usage
def plan_speech(exp: Experiment, base_dir: Path | None = None) -> pd.DataFrame:
    """Caller and agent speech of every AI turn, re-drawn from the run's seeded call plans.

    The plans are drawn from the experiment's named random streams, so they are
    exactly those the twin played; a row per turn: ``replication``, ``call_id``,
    ``turn``, ``caller_speech_s``, ``agent_speech_s``.
    """
    from lab.plan import Turn, make_plan

    rows = [(rep, c.call_id, k, s.caller_speech_s, s.agent_speech_s)
            for rep in range(exp.replications) for c in make_plan(exp, rep, base_dir)
            for k, s in enumerate(x for x in c.steps if isinstance(x, Turn))]
    return pd.DataFrame(rows, columns=["replication", "call_id", "turn", "caller_speech_s",
                                       "agent_speech_s"])


def from_run(run_dir: str | Path, exp: Experiment | None = None, *,
             base_dir: Path | None = None) -> Usage:
    """The usage of a run directory (its experiment from ``experiment.resolved.yaml``)."""
    path = Path(run_dir)
    summary = json.loads((path / "summary.json").read_text())
    if exp is None:
        exp = load_experiment(path / "experiment.resolved.yaml")
    calls = pd.read_parquet(path / "calls.parquet")
    calls = calls[calls["start_s"] >= exp.warmup_s].reset_index(drop=True)
    turns = pd.read_parquet(path / "turns.parquet")
    if "caller_speech_s" not in turns and calls["turns"].fillna(0).gt(0).any():
        turns = plan_speech(exp, base_dir)
    sim_s = max(0.0, float(summary["run"]["sim_s"]) - exp.warmup_s)
    return Usage(calls, turns, exp.deployment.ai.llm.tokens.mean, sim_s,
                 int(calls["replication"].nunique()) or 1, exp.name)


def simulate(exp: Experiment, *, base_dir: Path | None = None, jobs: int | None = None
             ) -> Usage:
    """Run ``exp`` on the twin in a temporary directory (removed) and return its usage."""
    from lab.runner import run_experiment

    tmp = Path(tempfile.mkdtemp(prefix=f"siplab-cost-{exp.name}-"))
    try:
        summary = run_experiment(exp, backend="twin", out_dir=tmp / "run", base_dir=base_dir,
                                 jobs=jobs, show_progress=False)
        return from_run(summary.parent, exp, base_dir=base_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_pricebooks(refs: str | Sequence[str], base_dir: Path | None = None
                    ) -> list[PriceBook]:
    """Price books from a comma-separated string or a list of names/paths."""
    items = refs.split(",") if isinstance(refs, str) else list(refs)
    names = [r.strip() for r in items if r.strip()]
    if not names:
        raise SpecError("pricebook", "no price book given")
    return [load_pricebook(n, base_dir) for n in names]


# ---------------------------------------------------------------------------- analyses
def run_cost(usage: Usage, pb: PriceBook, *, calls_per_month: float | None = None,
             dids: int = 1) -> dict[str, Any]:
    """The ``cost`` section of summary.json for ``usage`` priced under ``pb``."""
    return summary_cost(usage.costs(pb), usage.calls, pb, usage.sim_s, usage.replications,
                        calls_per_month=calls_per_month, dids=dids)


def project(usage: Usage, pb: PriceBook, calls_per_month: float, *, dids: int = 1
            ) -> dict[str, Any]:
    """A month of ``calls_per_month`` answered calls like the run's, under ``pb``."""
    return run_cost(usage, pb, calls_per_month=calls_per_month, dids=dids)["monthly"]


def breakdown(usage: Usage, pbs: Sequence[PriceBook], calls_per_month: float, *,
              dids: int = 1) -> pd.DataFrame:
    """Cost per answered minute by part (a row per price book), for a stacked bar."""
    rows = {}
    for pb in pbs:
        month = project(usage, pb, calls_per_month, dids=dids)
        minutes = month["minutes_per_month"]
        rows[pb.name] = {k.removesuffix("_usd"): (v / minutes if minutes else np.nan)
                         for k, v in month["breakdown"].items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def compare(usage: Usage, pbs: Sequence[PriceBook], calls_per_month: float, *,
            dids: int = 1) -> pd.DataFrame:
    """Providers side by side on the same calls, cheapest per minute first (``rank`` 1)."""
    rows = []
    for pb in pbs:
        month = project(usage, pb, calls_per_month, dids=dids)
        costs = usage.costs(pb)
        answered = (usage.calls["outcome"] == "answered").to_numpy()
        talk_min = float(np.nansum(usage.calls["duration_s"].to_numpy(float)[answered])) / 60
        rows.append({
            "pricebook": pb.name, "direction": pb.direction,
            "increments": pb.telephony.increments,
            "carrier_per_minute_usd": pb.telephony.per_minute_usd(pb.direction),
            "billed_over_talk": float(costs["billed_s"].sum()) / 60 / talk_min
            if talk_min else np.nan,
            "per_call_usd": month["per_call_usd"], "per_minute_usd": month["per_minute_usd"],
            "per_month_usd": month["total_usd"], "fixed_usd": month["fixed_usd"],
        })
    table = pd.DataFrame(rows).sort_values("per_minute_usd", kind="stable")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.reset_index(drop=True)


def default_volumes(calls_per_month: float, points: int = 13) -> np.ndarray:
    """Monthly volumes from 1/100 to 10 × ``calls_per_month``, evenly spaced on a log scale."""
    if not calls_per_month > 0:
        raise SpecError("calls_per_month", f"must be a number > 0, got {calls_per_month!r}")
    return np.geomspace(calls_per_month / 100, calls_per_month * 10, points)


def volume_curve(usage: Usage, pbs: Sequence[PriceBook], volumes: Any, *, dids: int = 1
                 ) -> pd.DataFrame:
    """Cost per minute and per call versus monthly volume (DIDs and compute fixed)."""
    rows = []
    for pb in pbs:
        for v in np.asarray(volumes, float):
            month = project(usage, pb, float(v), dids=dids)
            rows.append({"pricebook": pb.name, "calls_per_month": float(v),
                         "per_minute_usd": month["per_minute_usd"],
                         "per_call_usd": month["per_call_usd"], "total_usd": month["total_usd"]})
    return pd.DataFrame(rows)


def scaled(pb: PriceBook, section: str, field: str, factor: float) -> PriceBook:
    """``pb`` with one price multiplied by ``factor``."""
    if section == "telephony" and field == "per_minute":
        field = f"{pb.direction}_per_minute_usd"
    part = getattr(pb, section)
    value = getattr(part, field) * factor
    return pb.model_copy(update={section: part.model_copy(update={field: value})})


def sensitivity(usage: Usage, pb: PriceBook, calls_per_month: float, *, delta: float = 0.2,
                dids: int = 1) -> pd.DataFrame:
    """Tornado data: cost per minute with each price at −``delta`` and +``delta``.

    Returns
    -------
    DataFrame
        A row per price, widest swing first: ``price``, ``base_usd``, ``low_usd``
        (price × (1 − delta)), ``high_usd`` (price × (1 + delta)), ``swing_usd``.
    """
    if not 0 < delta < 1:
        raise SpecError("delta", f"must be a fraction in (0, 1), got {delta!r}")
    base = project(usage, pb, calls_per_month, dids=dids)["per_minute_usd"]
    rows = []
    for section, field, label in PRICES:
        low, high = (project(usage, scaled(pb, section, field, f), calls_per_month,
                             dids=dids)["per_minute_usd"] for f in (1 - delta, 1 + delta))
        rows.append({"price": label, "base_usd": base, "low_usd": low, "high_usd": high,
                     "swing_usd": (high - low) if base is not None else np.nan})
    table = pd.DataFrame(rows).sort_values("swing_usd", ascending=False, kind="stable")
    return table.reset_index(drop=True)


def usage_parts() -> tuple[str, ...]:
    """Names of the per-call usage parts, as in a breakdown (without ``_usd``)."""
    return tuple(k.removesuffix("_usd") for k in VARIABLE_PARTS)


# ---------------------------------------------------------------------------- notebook helpers
def load(experiment: str | Path, *, duration_s: float | None = None, seed: int | None = None,
         replications: int | None = None, ai_turns: int | None = None) -> Experiment:
    """An experiment by name or path, with its own workload unless ``ai_turns`` is given.

    ``ai_turns`` (an integer >= 0) replaces every scenario's ``turns``: a what-if on
    the same calls; None keeps the experiment's workload, so the cost agrees with
    what ``siplab run`` reports for it.
    """
    from lab import capacity

    sets: list[str] = []
    if ai_turns is not None:
        if isinstance(ai_turns, bool) or not isinstance(ai_turns, int) or ai_turns < 0:
            raise SpecError("ai_turns", f"must be an integer >= 0 or null, got {ai_turns!r}")
        names = load_experiment(capacity.experiment_path(experiment)).scenarios
        sets = [f"scenarios.{name}.turns={ai_turns}" for name in names]
    return capacity.load(experiment, duration_s=duration_s, seed=seed,
                         replications=replications, overrides=sets)


def own_pricebook(exp: Experiment, base_dir: Path | None = None) -> PriceBook:
    """The price book the experiment names (``pricebook:``), the one ``siplab run`` uses."""
    return load_pricebook(exp.pricebook, base_dir)


def workload(exp: Experiment, ai_turns: int | None = None) -> str:
    """Which workload was priced, in words: the experiment's own, or the ``ai_turns`` override."""
    if ai_turns is not None:
        return (f"every scenario set to {ai_turns} AI turns per call by -p ai_turns "
                f"(a what-if: siplab run prices the experiment's own turns)")
    parts = []
    for entry in exp.load.mix:
        sc = exp.scenarios[entry.scenario]
        turns = sc.turns if isinstance(sc.turns, int) else sc.turns.mean
        parts.append(f"{entry.scenario}: {turns:g} AI turns per call" if turns
                     else f"{entry.scenario}: no AI turns, talk only")
    return "the experiment's own workload (" + "; ".join(parts) + ")"


def headline(cost: dict[str, Any], table: pd.DataFrame, calls_per_month: float
             ) -> pd.DataFrame:
    """The small table under the answer: the run's own cost, then each price book's month.

    ``cost`` is :func:`run_cost` under the experiment's own price book (what
    ``siplab run`` writes to summary.json); ``table`` is :func:`compare`.
    """
    rows = [{"price book": f"{cost['pricebook']} (the experiment's, this run)",
             "per minute": _usd(cost["per_minute_usd"]), "per call": _usd(cost["per_call_usd"]),
             "per month": f"${cost['per_month_usd']:,.0f} at the run's rate "
                          f"({cost['monthly']['calls_per_month']:,.0f} calls)"}]
    rows += [{"price book": str(r["pricebook"]), "per minute": _usd(r["per_minute_usd"]),
              "per call": _usd(r["per_call_usd"]),
              "per month": f"${r['per_month_usd']:,.0f} at {calls_per_month:,.0f} calls"}
             for r in table.to_dict("records")]
    return pd.DataFrame(rows)


def _usd(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"${value:.4f}"


def answer(table: pd.DataFrame, calls_per_month: float, cost: dict[str, Any] | None = None
           ) -> str:
    """The conclusion in one sentence (``table`` from :func:`compare`).

    With ``cost`` (:func:`run_cost` under the experiment's own price book) the
    sentence opens with the run's own cost per minute — the figure ``siplab run``
    reports — then names the cheapest price book at the monthly volume.
    """
    best = table.iloc[0]
    text = ""
    if cost is not None:
        per_min = cost["per_minute_usd"]
        text = (f"A talk minute costs {100 * per_min:.2f} ¢ (${per_min:.4f}) under the "
                f"experiment's price book {cost['pricebook']}, as siplab run reports; "
                if per_min is not None else
                f"No call was answered, so no minute was priced under {cost['pricebook']}; ")
        text += f"at {calls_per_month:,.0f} calls a month, DID rent and compute included, "
    text += (f"{best['pricebook']} is the cheapest at ${best['per_minute_usd']:.4f} per answered "
             f"minute (${best['per_month_usd']:,.0f} a month for {calls_per_month:,.0f} calls)")
    if len(table) > 1:
        worst = table.iloc[-1]
        saving = worst["per_month_usd"] - best["per_month_usd"]
        text += f"; {worst['pricebook']} would cost ${saving:,.0f} a month more"
    return text
