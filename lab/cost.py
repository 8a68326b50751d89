"""Cost model: a price book applied to call records.

Telephony is billed on each answered call's talk time, rounded up to the
minimum billed seconds and then to the billing increment (60/60 per-minute
billing, 6/6 six-second billing, …). AI stages are billed per use: STT per minute
of caller speech, the LLM per 1k input and output tokens, TTS per 1k characters
spoken (speech at about 15 characters per second, a typical English speaking
rate of ~150 words per minute). Compute is the deployment's vCPUs for the run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import Field

from lab.spec import NonNegFloat, PosFloat, SpecError, Strict

PRICEBOOKS = Path(__file__).parent / "pricebooks"
CHARS_PER_SPEECH_S = 15.0
INPUT_TOKENS_PER_TURN = 400  # system prompt + running transcript, a modest agent


class Telephony(Strict):
    per_minute_usd: NonNegFloat = 0.0
    billing_increment_s: PosFloat = 60.0
    min_billed_s: NonNegFloat = 0.0
    did_monthly_usd: NonNegFloat = 0.0


class AiPrices(Strict):
    stt_per_minute_usd: NonNegFloat = 0.0
    llm_per_1k_input_tokens_usd: NonNegFloat = 0.0
    llm_per_1k_output_tokens_usd: NonNegFloat = 0.0
    tts_per_1k_chars_usd: NonNegFloat = 0.0


class Compute(Strict):
    per_vcpu_hour_usd: NonNegFloat = 0.0
    vcpus: NonNegFloat = 0.0


class PriceBook(Strict):
    name: str = "custom"
    telephony: Telephony = Field(default_factory=Telephony)
    ai: AiPrices = Field(default_factory=AiPrices)
    compute: Compute = Field(default_factory=Compute)


def load_pricebook(ref: str, base_dir: Path | None = None) -> PriceBook:
    """A price book by name (``lab/pricebooks/NAME.yaml``) or by path."""
    path = PRICEBOOKS / f"{ref}.yaml"
    if not path.is_file():
        path = Path(ref) if Path(ref).is_absolute() or base_dir is None else base_dir / ref
    if not path.is_file():
        known = sorted(p.stem for p in PRICEBOOKS.glob("*.yaml"))
        raise SpecError("pricebook", f"no price book named or found at {ref!r} (built in: {known})")
    try:
        return PriceBook.model_validate(yaml.safe_load(path.read_text()))
    except Exception as exc:
        raise SpecError("pricebook", f"{path.name}: {str(exc).splitlines()[0]}") from exc


def billed_seconds(talk_s: np.ndarray, increment_s: float, min_s: float) -> np.ndarray:
    """Talk time rounded up to ``min_s`` then to whole ``increment_s``."""
    t = np.maximum(np.asarray(talk_s, float), min_s)
    return np.ceil(t / increment_s - 1e-9) * increment_s


def call_costs(calls: pd.DataFrame, turns: pd.DataFrame, pb: PriceBook,
               llm_tokens_mean: float) -> pd.DataFrame:
    """Per-call cost columns: telephony, stt, llm, tts (USD); unanswered calls cost 0."""
    answered = (calls["outcome"] == "answered").to_numpy()
    talk = np.where(answered, calls["duration_s"].to_numpy(float), 0.0)
    billed = np.where(answered, billed_seconds(talk, pb.telephony.billing_increment_s,
                                               pb.telephony.min_billed_s), 0.0)
    out = pd.DataFrame({"telephony_usd": billed / 60.0 * pb.telephony.per_minute_usd})
    n_turns = calls["turns"].to_numpy(float) * answered
    ai = pb.ai
    out["stt_usd"] = 0.0
    out["tts_usd"] = 0.0
    out["llm_usd"] = n_turns * (INPUT_TOKENS_PER_TURN / 1000 * ai.llm_per_1k_input_tokens_usd
                                + llm_tokens_mean / 1000 * ai.llm_per_1k_output_tokens_usd)
    if len(turns) and "caller_speech_s" in turns:
        per_call = turns.groupby(["replication", "call_id"])[
            ["caller_speech_s", "agent_speech_s"]].sum()
        key = pd.MultiIndex.from_arrays([calls["replication"], calls["call_id"]])
        speech = per_call.reindex(key).fillna(0.0)
        out["stt_usd"] = speech["caller_speech_s"].to_numpy() / 60 * ai.stt_per_minute_usd
        out["tts_usd"] = (speech["agent_speech_s"].to_numpy() * CHARS_PER_SPEECH_S / 1000
                          * ai.tts_per_1k_chars_usd)
    out["cost_usd"] = out.sum(axis=1)
    return out


def summary_cost(costs: pd.DataFrame, calls: pd.DataFrame, pb: PriceBook, sim_s: float,
                 replications: int) -> dict[str, Any]:
    """``cost`` of summary.json: totals per replication-run, per answered minute, per month."""
    answered_min = float(calls.loc[calls["outcome"] == "answered", "duration_s"].sum()) / 60.0
    compute = pb.compute.per_vcpu_hour_usd * pb.compute.vcpus * sim_s / 3600.0 * replications
    breakdown = {k.removesuffix("_usd") + "_usd": float(costs[k].sum())
                 for k in ("telephony_usd", "stt_usd", "llm_usd", "tts_usd")}
    breakdown["compute_usd"] = compute
    total = float(sum(breakdown.values()))
    per_minute = total / answered_min if answered_min > 0 else None
    month_s = 30 * 86400.0
    scale = month_s / (sim_s * replications) if sim_s > 0 else math.nan
    return {"total_usd": total, "per_minute_usd": per_minute,
            "per_call_usd": total / max(1, int((calls["outcome"] == "answered").sum())),
            "per_month_usd": total * scale + pb.telephony.did_monthly_usd,
            "pricebook": pb.name, "breakdown": breakdown}
