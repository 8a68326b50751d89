"""Cost model: a price book applied to call records.

Telephony billing
-----------------
A carrier bills each *answered* call on its connected (talk) time, from the
200 OK to the BYE; a call that never connects (blocked with 503/486, timed out,
rejected) is not billed. Rate decks quote a price per minute and a *billing
increment* written ``X/Y``: the first ``X`` seconds are billed as a block (the
minimum billed seconds), after which time is rounded **up** to whole steps of
``Y`` seconds.

* ``60/60`` — per-minute billing (Twilio's default): 61 s is billed as 120 s.
* ``6/6`` — six-second billing, common with wholesale SIP carriers: 61 s → 66 s.
* ``30/6`` — a 30-second minimum, then six-second steps: 7 s → 30 s.
* ``1/1`` — per-second billing: 0.5 s → 1 s.

In a price book ``min_billed_s`` is ``X`` and ``billing_increment_s`` is ``Y``.
Inbound calls (the caller dials our DID: *origination* on a SIP trunk) and
outbound calls (we dial out: *termination*) have separate per-minute prices; a
voice-AI answering service is inbound, the price book's ``direction`` default.
Each DID (a phone number) costs a monthly rent, whatever the traffic.

AI and compute
--------------
AI stages are billed per use: STT per minute of audio transcribed (the caller's
speech, or — ``stt_billing: call`` — the whole call, for a streaming recogniser
that listens throughout), the LLM per 1k input and output tokens, TTS per 1k
characters spoken (speech at about 15 characters per second, a typical English
speaking rate of ~150 words per minute). Compute is the deployment's vCPUs,
billed per vCPU-hour around the clock: a fixed cost, like the DIDs.

Monthly projections use the average month of 730 hours (8 760 h / 12).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import Field, ValidationError, model_validator

from lab.spec import NonNegFloat, PosFloat, SpecError, Strict

PRICEBOOKS = Path(__file__).parent / "pricebooks"
CHARS_PER_SPEECH_S = 15.0
INPUT_TOKENS_PER_TURN = 400  # system prompt + running transcript, a modest agent
HOURS_PER_MONTH = 730.0  # 365 × 24 / 12
VARIABLE_PARTS = ("telephony_usd", "stt_usd", "llm_usd", "tts_usd")

Direction = Literal["inbound", "outbound"]


class Telephony(Strict):
    """Carrier prices: per minute by call direction, the X/Y billing increment, DID rent.

    ``per_minute_usd`` (the contract's one-rate form) sets both directions.
    """

    inbound_per_minute_usd: NonNegFloat = 0.0
    outbound_per_minute_usd: NonNegFloat = 0.0
    billing_increment_s: PosFloat = 60.0
    min_billed_s: NonNegFloat = 0.0
    did_monthly_usd: NonNegFloat = 0.0

    @model_validator(mode="before")
    @classmethod
    def _one_rate(cls, data: Any) -> Any:
        if isinstance(data, dict) and "per_minute_usd" in data:
            data = dict(data)
            rate = data.pop("per_minute_usd")
            data.setdefault("inbound_per_minute_usd", rate)
            data.setdefault("outbound_per_minute_usd", rate)
        return data

    def per_minute_usd(self, direction: Direction) -> float:
        """The per-minute price of a call in ``direction``."""
        return self.inbound_per_minute_usd if direction == "inbound" else \
            self.outbound_per_minute_usd

    @property
    def increments(self) -> str:
        """The billing increment in rate-deck notation, e.g. ``"60/60"`` or ``"6/6"``."""
        return f"{self.min_billed_s:g}/{self.billing_increment_s:g}"


class AiPrices(Strict):
    stt_per_minute_usd: NonNegFloat = 0.0
    stt_billing: Literal["speech", "call"] = "speech"
    llm_per_1k_input_tokens_usd: NonNegFloat = 0.0
    llm_per_1k_output_tokens_usd: NonNegFloat = 0.0
    tts_per_1k_chars_usd: NonNegFloat = 0.0


class Compute(Strict):
    per_vcpu_hour_usd: NonNegFloat = 0.0
    vcpus: NonNegFloat = 0.0


class PriceBook(Strict):
    name: str = "custom"
    direction: Direction = "inbound"
    telephony: Telephony = Field(default_factory=Telephony)
    ai: AiPrices = Field(default_factory=AiPrices)
    compute: Compute = Field(default_factory=Compute)


def pricebook_names() -> list[str]:
    """The built-in price books (``lab/pricebooks/NAME.yaml``)."""
    return sorted(p.stem for p in PRICEBOOKS.glob("*.yaml"))


def load_pricebook(ref: str | Path, base_dir: Path | None = None) -> PriceBook:
    """A price book by name (``lab/pricebooks/NAME.yaml``) or by path.

    A relative path is taken relative to ``base_dir`` (the experiment's folder)
    when given, else to the working directory. Any problem is a
    :class:`~lab.spec.SpecError` on the key ``pricebook``.
    """
    text = str(ref)
    path = PRICEBOOKS / f"{text}.yaml"
    if "/" in text or "\\" in text or text.endswith((".yaml", ".yml")) or not path.is_file():
        path = Path(text) if Path(text).is_absolute() or base_dir is None else base_dir / text
    if not path.is_file():
        raise SpecError("pricebook", f"no price book named or found at {text!r} "
                        f"(built in: {pricebook_names()})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError("pricebook", f"{path.name}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise SpecError("pricebook", f"{path.name}: must be a mapping of sections, "
                        f"got {type(data).__name__}")
    data.setdefault("name", path.stem)
    try:
        return PriceBook.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top)"
        raise SpecError("pricebook", f"{path.name}: {where}: {err['msg']}, "
                        f"got {err.get('input')!r}") from exc


def billed_seconds(talk_s: Any, increment_s: float, min_s: float) -> np.ndarray:
    """Carrier-billed seconds: talk time raised to ``min_s``, then rounded up to whole
    ``increment_s`` steps (X/Y billing with X = ``min_s``, Y = ``increment_s``).

    A zero-length call (0 s) with no minimum bills nothing.
    """
    t = np.maximum(np.asarray(talk_s, float), min_s)
    return np.ceil(t / increment_s - 1e-9) * increment_s


def call_costs(calls: pd.DataFrame, turns: pd.DataFrame, pb: PriceBook,
               llm_tokens_mean: float, *, input_tokens_per_turn: float = INPUT_TOKENS_PER_TURN,
               direction: Direction | None = None) -> pd.DataFrame:
    """Per-call costs in USD, a row per row of ``calls`` (unanswered calls cost 0).

    Parameters
    ----------
    calls : DataFrame
        ``outcome``, ``duration_s`` (talk time), ``turns``, ``call_id``, ``replication``;
        an optional ``direction`` column (inbound|outbound) overrides the price book's.
    turns : DataFrame
        A row per AI turn with ``call_id``, ``replication`` and, when known,
        ``caller_speech_s`` and ``agent_speech_s``; without them STT/TTS cost 0
        (except STT billed per ``call``).
    pb : PriceBook
    llm_tokens_mean : float
        Mean LLM output tokens per turn.
    input_tokens_per_turn : float
        LLM prompt tokens per turn (system prompt plus transcript).
    direction : {"inbound", "outbound"}, optional
        Call direction for every call (default: the price book's).

    Returns
    -------
    DataFrame
        ``billed_s`` and ``telephony_usd``, ``stt_usd``, ``llm_usd``, ``tts_usd``, ``cost_usd``.
    """
    tel, ai = pb.telephony, pb.ai
    answered = (calls["outcome"] == "answered").to_numpy()
    talk = np.where(answered, calls["duration_s"].to_numpy(float), 0.0)
    talk = np.nan_to_num(talk)
    billed = np.where(answered, billed_seconds(talk, tel.billing_increment_s, tel.min_billed_s),
                      0.0)
    if "direction" in calls:
        rate = np.where(calls["direction"].to_numpy() == "outbound",
                        tel.outbound_per_minute_usd, tel.inbound_per_minute_usd)
    else:
        rate = np.full(len(calls), tel.per_minute_usd(direction or pb.direction))
    out = pd.DataFrame({"billed_s": billed, "telephony_usd": billed / 60.0 * rate})
    n_turns = np.nan_to_num(calls["turns"].to_numpy(float)) * answered
    out["stt_usd"] = 0.0
    out["llm_usd"] = n_turns * (input_tokens_per_turn / 1000 * ai.llm_per_1k_input_tokens_usd
                                + llm_tokens_mean / 1000 * ai.llm_per_1k_output_tokens_usd)
    out["tts_usd"] = 0.0
    if len(turns) and {"caller_speech_s", "agent_speech_s"} <= set(turns.columns):
        caller, agent = speech_per_call(calls, turns)
        out["stt_usd"] = caller * answered / 60 * ai.stt_per_minute_usd
        out["tts_usd"] = (agent * answered * CHARS_PER_SPEECH_S / 1000
                          * ai.tts_per_1k_chars_usd)
    if ai.stt_billing == "call":
        out["stt_usd"] = np.where(n_turns > 0, talk / 60 * ai.stt_per_minute_usd, 0.0)
    out["cost_usd"] = out[list(VARIABLE_PARTS)].sum(axis=1)
    return out


def speech_per_call(calls: pd.DataFrame, turns: pd.DataFrame
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Caller and agent speech seconds summed over each call's turns, a value per row of
    ``calls`` (0 for a call without turns); calls and turns matched on (replication,
    call_id). Column arithmetic, so millions of turns cost no more than their columns."""
    span = int(max(calls["call_id"].max(), turns["call_id"].max())) + 1 if len(calls) else 1
    call_key = (calls["replication"].to_numpy(np.int64) * span
                + calls["call_id"].to_numpy(np.int64))
    # a few per-turn temporaries only, each freed as soon as it is used (millions of turns)
    turn_key = turns["replication"].to_numpy(np.int64) * span
    turn_key += turns["call_id"].to_numpy(np.int64)
    in_order = bool(np.all(call_key[1:] >= call_key[:-1]))  # the usual case: no sort
    order = None if in_order else np.argsort(call_key, kind="stable")
    sorted_keys = call_key if order is None else call_key[order]
    pos = np.searchsorted(sorted_keys, turn_key)
    np.minimum(pos, max(0, sorted_keys.size - 1), out=pos)
    found = sorted_keys[pos] == turn_key if sorted_keys.size else np.zeros(turn_key.size, bool)
    del turn_key
    every = bool(found.all())
    row = pos if every else pos[found]
    if order is not None:
        row = order[row]
    del pos
    caller_s = turns["caller_speech_s"].to_numpy(float)
    agent_s = turns["agent_speech_s"].to_numpy(float)
    caller = np.bincount(row, weights=caller_s if every else caller_s[found],
                         minlength=len(calls))
    agent = np.bincount(row, weights=agent_s if every else agent_s[found],
                        minlength=len(calls))
    return caller, agent


def monthly_cost(per_call_usd: Mapping[str, float], minutes_per_call: float, pb: PriceBook,
                 calls_per_month: float, *, dids: int = 1,
                 vcpus: float | None = None) -> dict[str, Any]:
    """Project a month: usage costs scale with calls, DIDs and compute are fixed.

    Parameters
    ----------
    per_call_usd : mapping
        Mean usage cost of one answered call by part (``telephony_usd``, ``stt_usd``,
        ``llm_usd``, ``tts_usd``).
    minutes_per_call : float
        Mean talk minutes of an answered call.
    pb : PriceBook
    calls_per_month : float
        Answered calls in the month.
    dids : int
        Phone numbers rented (each ``did_monthly_usd``).
    vcpus : float, optional
        vCPUs running all month (default: the price book's ``compute.vcpus``).

    Returns
    -------
    dict
        ``calls_per_month``, ``minutes_per_month``, ``dids``, ``vcpus``, ``breakdown``
        (the usage parts plus ``did_usd`` and ``compute_usd``), ``variable_usd``,
        ``fixed_usd``, ``total_usd``, ``per_call_usd`` and ``per_minute_usd``
        (None without calls).
    """
    cpu = pb.compute.vcpus if vcpus is None else float(vcpus)
    volume = float(calls_per_month)
    breakdown = {k: float(per_call_usd.get(k, 0.0)) * volume for k in VARIABLE_PARTS}
    variable = sum(breakdown.values())
    breakdown["did_usd"] = dids * pb.telephony.did_monthly_usd
    breakdown["compute_usd"] = cpu * pb.compute.per_vcpu_hour_usd * HOURS_PER_MONTH
    fixed = breakdown["did_usd"] + breakdown["compute_usd"]
    total = variable + fixed
    minutes = volume * minutes_per_call
    return {"calls_per_month": volume, "minutes_per_month": minutes, "dids": int(dids),
            "vcpus": cpu, "breakdown": breakdown, "variable_usd": variable, "fixed_usd": fixed,
            "total_usd": total, "per_call_usd": total / volume if volume > 0 else None,
            "per_minute_usd": total / minutes if minutes > 0 else None}


def summary_cost(costs: pd.DataFrame, calls: pd.DataFrame, pb: PriceBook, sim_s: float,
                 replications: int, *, calls_per_month: float | None = None,
                 dids: int = 1) -> dict[str, Any]:
    """``cost`` of summary.json for the counted calls of a run.

    ``total_usd`` is the run's cost over all replications: usage plus compute for
    ``sim_s`` seconds per replication (DID rent is monthly, so it appears only in
    ``monthly``). ``per_minute_usd`` is per answered talk minute, ``per_call_usd``
    per answered call. ``monthly`` projects a month of ``calls_per_month``
    answered calls (default: the run's answered-call rate sustained for 730 h),
    with ``per_month_usd`` its total.
    """
    answered = calls["outcome"].to_numpy() == "answered"
    n_answered = int(answered.sum())
    answered_min = float(np.nansum(calls["duration_s"].to_numpy(float)[answered])) / 60.0
    run_h = sim_s / 3600.0 * replications
    breakdown = {k: float(costs[k].sum()) for k in VARIABLE_PARTS}
    breakdown["compute_usd"] = pb.compute.per_vcpu_hour_usd * pb.compute.vcpus * run_h
    total = float(sum(breakdown.values()))
    if calls_per_month is None:
        calls_per_month = n_answered / run_h * HOURS_PER_MONTH if run_h > 0 else 0.0
    per_call = {k: breakdown[k] / n_answered if n_answered else 0.0 for k in VARIABLE_PARTS}
    month = monthly_cost(per_call, answered_min / n_answered if n_answered else 0.0, pb,
                         calls_per_month, dids=dids)
    return {"total_usd": total,
            "per_minute_usd": total / answered_min if answered_min > 0 else None,
            "per_call_usd": total / n_answered if n_answered else None,
            "per_month_usd": month["total_usd"],
            "pricebook": pb.name, "direction": pb.direction,
            "billing_increments": pb.telephony.increments,
            "answered_calls": n_answered, "answered_minutes": answered_min,
            "billed_minutes": float(costs["billed_s"].sum()) / 60.0 if "billed_s" in costs
            else None,
            "breakdown": breakdown, "monthly": month}
