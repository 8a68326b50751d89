"""Dimensioning against service-level objectives: the fewest channels and AI slots that
meet every SLO, started from Erlang B and C and confirmed on the twin.

A voice-AI deployment has two kinds of capacity. **Trunk channels** are a loss system:
a call finding every channel busy is refused (SIP 503), so the SLO is a blocking
probability, and Erlang B at the busy-hour offered load gives the classic answer
(:mod:`lab.capacity`). **AI provider slots** (concurrent STT, LLM and TTS requests) are
a delay system: a turn finding every slot busy *waits*, which adds to the caller's
voice-to-voice latency, and Erlang C describes that wait for an M/M/c queue:
``P(W > t) = C(c, A) · exp(-(c - A) t / S)`` for ``A`` erlangs of requests of mean
service ``S`` on ``c`` slots.

Neither formula is the deployment: hold times include the AI latency, LLM slot times
are far from exponential, and the SLO is on a percentile of a *sum* of stages. So the
formulas only give the starting point, and the twin decides:

1. **Analytic start.** Channels: Erlang B at the peak offered load (the peak call rate,
   or ``peak_cps``, × the mean hold including AI latency) for the tightest blocking
   SLO (``blocking <= 0.01`` when none is given). AI slots, when an SLO concerns AI
   latency: the twin's latency floor with unlimited slots leaves a headroom ``H`` below
   the voice-to-voice SLO; each stage gets the fewest stable slots whose Erlang C wait
   exceeds ``H / 3`` for at most 5 % of requests.
2. **Confirm.** Each candidate runs ``replications`` twin replications at the peak (a
   stationary Poisson stream, the busy-hour assumption); per SLO the replications give
   a Student-t 95 % CI (blocking's widened to the pooled Wilson interval,
   :func:`lab.capacity.widened_ci95`). An SLO is *met* when the whole CI is on the
   good side of the threshold, *missed* when the whole CI is on the bad side, else
   replications double up to ``max_replications``.
3. **Search.** While a candidate is not confirmed, the lever of each unmet SLO goes up
   (blocking: channels; latency: the stage whose waits are longest); then each count
   goes down one at a time while the candidate stays confirmed. The answer is a
   candidate the twin confirms, with each count minus one shown not to be.

The price book prices usage (minutes, tokens, characters), not provisioned channels or
slots, so the cheapest answer is the fewest of each; its cost per minute is the twin's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.erlang import channels_for_blocking, erlang_b, erlang_c
from lab.errors import SpecError
from lab.spec import Experiment, PoissonArrivals
from lab.sweep import STAGES, Tasks, replication_summary, run_tasks, session

__all__ = ["MEETS", "MISSES", "UNDECIDED", "Slo", "dimension", "parse_slo"]

MEETS, MISSES, UNDECIDED = "meets", "misses", "undecided"

_STATS = ("mean", "p50", "p95", "p99")
#: Every metric an SLO may name: its path in a replication's summary, and the lever that
#: improves it (``channels``, ``ai`` for any stage, a stage's name, or None: none does).
METRICS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "blocking": (("blocking_probability", "mean"), "channels"),
    "blocking_probability": (("blocking_probability", "mean"), "channels"),
    **{f"{m}.{s}": ((m, s), None) for m in ("setup_ms", "pdd_ms") for s in _STATS},
    **{f"voice_to_voice_ms.{s}": (("voice_to_voice_ms", s), "ai") for s in _STATS},
    "mos.mean": (("mos", "mean"), None),
    "mos.p05": (("mos", "p05"), None),
    **{f"ai.{st}.wait_probability": (("ai", st, "wait_probability"), st) for st in STAGES},
    **{f"ai.{st}.wait_ms.{s}": (("ai", st, "wait_ms", s), st) for st in STAGES
       for s in _STATS},
    "cost.per_minute_usd": (("cost", "per_minute_usd"), None),
    "cost.per_call_usd": (("cost", "per_call_usd"), None),
}

_EXPR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(<=|>=|<|>)\s*([^\s<>=]+)\s*$")
#: Replications at most, by default, as a multiple of the starting replications.
MAX_REPLICATION_FACTOR = 4
#: Candidates the search tries at most before it gives up.
MAX_CANDIDATES = 60
#: A stage whose 99th-percentile wait is shorter (ms) is no lever on latency.
MIN_WAIT_MS = 1.0
#: Share of requests an Erlang C start lets wait longer than its share of the headroom.
WAIT_TAIL = 0.05


@dataclass(frozen=True)
class Slo:
    """One objective: ``metric op threshold`` (``voice_to_voice_ms.p95<=1500``)."""

    metric: str
    op: str
    threshold: float
    implied: bool = False

    @property
    def text(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"

    @property
    def lower_is_better(self) -> bool:
        return self.op in ("<=", "<")

    def verdict(self, lo: float | None, hi: float | None) -> str:
        """:data:`MEETS` when the CI [lo, hi] lies on the good side, :data:`MISSES` on
        the bad side, :data:`UNDECIDED` otherwise (or without data)."""
        if lo is None or hi is None:
            return UNDECIDED
        t = self.threshold
        good = {"<=": hi <= t, "<": hi < t, ">=": lo >= t, ">": lo > t}[self.op]
        bad = {"<=": lo > t, "<": lo >= t, ">=": hi < t, ">": hi <= t}[self.op]
        return MEETS if good else MISSES if bad else UNDECIDED


def parse_slo(expr: str) -> Slo:
    """``METRIC OP NUMBER`` with a metric of :data:`METRICS` and ``<=``, ``<``, ``>=`` or
    ``>``; anything else is :class:`SpecError` naming ``--slo``."""
    m = _EXPR.match(expr)
    if m is None:
        raise SpecError("--slo", f"{expr!r} is not METRIC OP NUMBER with OP one of <= < >= > "
                        "(e.g. voice_to_voice_ms.p95<=1500)")
    metric, op, raw = m.groups()
    if metric not in METRICS:
        raise SpecError("--slo", f"unknown metric {metric!r} in {expr!r} (known: "
                        f"{', '.join(METRICS)})")
    try:
        value = float(raw)
    except ValueError:
        raise SpecError("--slo", f"{raw!r} in {expr!r} is not a number") from None
    if not math.isfinite(value):
        raise SpecError("--slo", f"the threshold in {expr!r} must be finite")
    if metric.startswith("blocking") and not 0.0 < value < 1.0 and op in ("<=", "<"):
        raise SpecError("--slo", f"a blocking objective must be a fraction in (0, 1), got "
                        f"{raw} in {expr!r}")
    return Slo("blocking" if metric == "blocking_probability" else metric, op, value)


# ---------------------------------------------------------------------------- the analysis
def _mean_turns(exp: Experiment) -> float:
    """Expected AI turns of a call, over the scenario mix."""
    from lab.runner import _mean_turns as turns_of

    total = sum(m.weight for m in exp.load.mix)
    return sum(m.weight / total * turns_of(exp.scenarios[m.scenario]) for m in exp.load.mix)


def stage_service_s(exp: Experiment) -> dict[str, float]:
    """Mean slot holding time per AI stage, seconds: the STT's latency, the LLM's time to
    first token plus the reply's streaming, the TTS's time to first byte."""
    ai = exp.deployment.ai
    return {"stt": ai.stt.latency_ms.mean / 1000.0,
            "llm": ai.llm.ttft_ms.mean / 1000.0 + ai.llm.tokens.mean / ai.llm.tokens_per_s,
            "tts": ai.tts.ttfb_ms.mean / 1000.0}


def mean_hold_s(exp: Experiment) -> float:
    """Mean channel hold: the scenarios' talk and speech (:func:`lab.capacity.mean_hold_s`)
    plus, per AI turn, the pipeline's mean latency (VAD, STT, LLM first token, TTS)."""
    from lab.capacity import mean_hold_s as speech_hold_s

    ai = exp.deployment.ai
    latency = (ai.vad_ms.mean + ai.stt.latency_ms.mean + ai.llm.ttft_ms.mean
               + ai.tts.ttfb_ms.mean) / 1000.0
    return speech_hold_s(exp) + _mean_turns(exp) * latency


def erlang_c_slots(erlangs: float, service_s: float, headroom_s: float,
                   tail: float = WAIT_TAIL) -> int:
    """Fewest slots ``c > A`` with ``P(W > headroom_s) <= tail`` in the M/M/c queue."""
    c = max(1, math.floor(erlangs) + 1)
    while True:
        p_wait = erlang_c(c, erlangs)
        if service_s <= 0 or p_wait * math.exp(-(c - erlangs) * headroom_s / service_s) <= tail:
            return c
        c += 1


def at_peak(exp: Experiment, rate_cps: float) -> Experiment:
    """``exp`` with stationary Poisson arrivals at ``rate_cps`` (the busy hour)."""
    arrivals = PoissonArrivals(kind="poisson", rate_cps=rate_cps)
    return exp.model_copy(update={"load": exp.load.model_copy(update={"arrivals": arrivals})})


def configured(exp: Experiment, channels: int, ai: Mapping[str, int | None]) -> Experiment:
    """``exp`` with ``channels`` trunk channels and the AI stages' ``ai`` slots."""
    dep = exp.deployment
    stages = {s: getattr(dep.ai, s).model_copy(update={"concurrency": n})
              for s, n in ai.items()}
    update: dict[str, Any] = {
        "trunk": dep.trunk.model_copy(update={"channels": int(channels)}),
        "ai": dep.ai.model_copy(update=stages)}
    return exp.model_copy(update={"deployment": dep.model_copy(update=update)})


# ---------------------------------------------------------------------------- evaluation
Config = tuple[int, tuple[tuple[str, int | None], ...]]


def _dig(data: Any, path: tuple[str, ...]) -> float | None:
    for part in path:
        data = data.get(part) if isinstance(data, dict) else None
    return None if data is None else float(data)


class _Twin:
    """Runs candidates on the twin, keeping every replication's summary per candidate
    (more replications of a candidate add to those it has)."""

    def __init__(self, exp: Experiment, base_dir: Path | None, where: Tasks,
                 log: Callable[[str], None]) -> None:
        self.exp, self.base_dir, self.where, self.log = exp, base_dir, where, log
        self.summaries: dict[Config, list[dict[str, Any]]] = {}

    def run(self, config: Config, replications: int) -> list[dict[str, Any]]:
        have = self.summaries.setdefault(config, [])
        if len(have) < replications:
            exp = configured(self.exp, config[0], dict(config[1]))
            todo = range(len(have), replications)
            args = [(exp, rep, self.base_dir, "twin") for rep in todo]
            got: dict[int, dict[str, Any]] = {}
            for i, res in run_tasks(args, self.where, fn=_summary_task):
                if "error" in res:
                    raise RuntimeError(f"replication {todo[i]} of {_label(config)} failed: "
                                       f"{res['error']}")
                got[i] = res["summary"]
            have.extend(got[i] for i in sorted(got))
        return have[:replications]


def _summary_task(exp: Experiment, rep: int, base_dir: Path | None, backend: str
                  ) -> dict[str, Any]:
    try:
        return {"summary": replication_summary(exp, rep, base_dir, backend)}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _label(config: Config) -> str:
    ai = ", ".join(f"{s} {n}" for s, n in config[1])
    return f"{config[0]} channels" + (f", AI slots {ai}" if ai else "")


def slo_evidence(slo: Slo, summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The twin's figure for ``slo`` over the replications: mean, 95 % CI and verdict."""
    from lab.capacity import widened_ci95
    from lab.results import mean_ci95

    path = METRICS[slo.metric][0]
    values = [v for s in summaries if (v := _dig(s, path)) is not None]
    ci = mean_ci95(values)
    lo, hi = ci["ci95"]
    if slo.metric == "blocking":
        blocked = sum(int(s["calls"]["blocked"]) for s in summaries)
        offered = sum(int(s["calls"]["offered"]) for s in summaries)
        lo, hi = widened_ci95([lo, hi], blocked, offered)
    return {"slo": slo.text, "implied": slo.implied, "mean": ci["mean"], "ci95": [lo, hi],
            "replications": len(summaries), "verdict": slo.verdict(lo, hi)}


@dataclass
class Evaluation:
    config: Config
    summaries: list[dict[str, Any]]
    evidence: list[dict[str, Any]]

    @property
    def verdict(self) -> str:
        kinds = {e["verdict"] for e in self.evidence}
        return MISSES if MISSES in kinds else UNDECIDED if UNDECIDED in kinds else MEETS

    def record(self) -> dict[str, Any]:
        return {"channels": self.config[0], "ai": dict(self.config[1]),
                "verdict": self.verdict, "replications": len(self.summaries),
                "slo": self.evidence}


def _evaluate(twin: _Twin, slos: Sequence[Slo], config: Config, reps: int,
              max_reps: int) -> Evaluation:
    while True:
        summaries = twin.run(config, reps)
        evidence = [slo_evidence(s, summaries) for s in slos]
        ev = Evaluation(config, summaries, evidence)
        twin.log(f"{_label(config)}: {ev.verdict} over {reps} replications")
        if ev.verdict != UNDECIDED or reps >= max_reps:
            return ev
        reps = min(max_reps, 2 * reps)


# ---------------------------------------------------------------------------- the search
def _levers(ev: Evaluation, slos: Sequence[Slo], stages: Sequence[str]) -> set[str]:
    """What to raise for the unconfirmed SLOs of ``ev`` (empty: nothing can help)."""
    out: set[str] = set()
    for slo, e in zip(slos, ev.evidence, strict=True):
        if e["verdict"] == MEETS:
            continue
        lever = METRICS[slo.metric][1]
        if lever == "ai":  # the stage whose slowest waits are longest, if any waits
            waits = {s: sum(_dig(x, ("ai", s, "wait_ms", "p99")) or 0.0
                            for x in ev.summaries) / len(ev.summaries) for s in stages}
            if waits and max(waits.values()) > MIN_WAIT_MS:
                out.add(max(waits, key=lambda s: waits[s]))
        elif lever is not None and (lever == "channels" or lever in stages):
            out.add(lever)
    return out


def _bump(config: Config, lever: str, step: int = 1) -> Config:
    if lever == "channels":
        return config[0] + step, config[1]
    return config[0], tuple((s, (n or 0) + step if s == lever else n) for s, n in config[1])


def _lower(config: Config, lever: str) -> Config | None:
    """``config`` with one fewer of ``lever``; None below one."""
    if lever == "channels":
        return (config[0] - 1, config[1]) if config[0] > 1 else None
    counts = dict(config[1])
    n = counts[lever]
    if n is None or n <= 1:
        return None
    return config[0], tuple((s, c - 1 if s == lever and c is not None else c)
                            for s, c in config[1])


def dimension(exp: Experiment, slos: Sequence[Slo], *, peak_cps: float | None = None,
              replications: int | None = None, max_replications: int | None = None,
              where: Tasks | None = None, base_dir: Path | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The fewest channels (and AI slots) the twin confirms meet every SLO.

    Returns
    -------
    dict
        ``channels``, ``ai`` {stage: slots}, ``cost_per_minute_usd``, ``confirmed``
        (False when no candidate within the search was confirmed: the fields then
        describe the last one tried and ``reason`` says why), ``slo`` (the twin's
        evidence per SLO at the answer), ``replications``, ``below`` (the evidence that
        each count minus one is not confirmed), ``analytic`` (Erlang B and C starts,
        the offered load), ``tried`` (every candidate, in order).
    """
    from lab.profiles import Profile
    from lab.runner import prepare

    where = where or Tasks(label="capacity")
    say = log or (lambda _msg: None)
    slos = list(slos)
    if not any(s.metric == "blocking" for s in slos):
        slos.insert(0, Slo("blocking", "<=", 0.01, implied=True))
    turns = _mean_turns(exp)
    if turns <= 0:
        for s in slos:
            if METRICS[s.metric][1] not in ("channels", None):
                raise SpecError("--slo", f"{s.text}: the experiment has no AI turns")
    reps = int(replications or max(3, exp.replications))
    max_reps = int(max_replications or MAX_REPLICATION_FACTOR * reps)
    rate = (float(peak_cps) if peak_cps is not None
            else Profile(exp.load.arrivals, exp.duration_s, base_dir).peak_rate())
    base = at_peak(exp, rate)
    prepare(base.model_copy(update={"replications": 1}), "twin", base_dir, force=False)
    hold = mean_hold_s(base)
    offered = rate * hold
    target = min(s.threshold for s in slos if s.metric == "blocking" and s.lower_is_better)
    n0 = max(1, channels_for_blocking(offered, target))
    analytic: dict[str, Any] = {
        "rate_cps": rate, "mean_hold_s": hold, "offered_erlangs": offered,
        "blocking_target": target, "erlang_b_channels": n0,
        "erlang_b": erlang_b(n0, offered)}
    ai_slos = [s for s in slos if METRICS[s.metric][1] not in ("channels", None)]
    stages = list(STAGES) if ai_slos else []
    keep = {s: getattr(exp.deployment.ai, s).concurrency for s in STAGES} if turns > 0 else {}
    start_ai: dict[str, int | None] = {s: n for s, n in keep.items() if s not in stages}
    with session(where, reps) as live:
        twin = _Twin(base, base_dir, live, say)
        if stages:  # the latency floor: every stage unlimited
            floor = _evaluate(twin, slos, (n0, tuple((s, None) for s in STAGES)), reps, reps)
            analytic["floor"] = floor.record()
            missed = [e["slo"] for s, e in zip(slos, floor.evidence, strict=True)
                      if s in ai_slos and e["verdict"] == MISSES]
            if missed:
                return _answer(floor, "even unlimited AI slots miss " + ", ".join(missed),
                               {}, analytic, [floor])
            start_ai.update(_erlang_c_start(base, slos, floor, n0, rate, turns, analytic))
        start: Config = (n0, tuple((s, start_ai[s]) for s in STAGES if s in start_ai))
        return _search(twin, slos, start, stages, reps, max_reps, analytic)


def _erlang_c_start(exp: Experiment, slos: Sequence[Slo], floor: Evaluation, n0: int,
                    rate: float, turns: float, analytic: dict[str, Any]) -> dict[str, int]:
    """Erlang C's slots per stage for the headroom the latency floor leaves."""
    v2v = [(s, e) for s, e in zip(slos, floor.evidence, strict=True)
           if s.metric.startswith("voice_to_voice_ms.") and s.lower_is_better]
    headroom_s = min((s.threshold - (e["mean"] or 0.0) for s, e in v2v), default=math.inf)
    headroom_s = max(0.0, headroom_s) / 1000.0
    carried_turns = rate * (1.0 - erlang_b(n0, rate * mean_hold_s(exp))) * turns
    out, detail = {}, {}
    for stage, service in stage_service_s(exp).items():
        a = carried_turns * service
        share = headroom_s / len(STAGES)
        c = erlang_c_slots(a, service, share if math.isfinite(share) else 10 * service)
        out[stage] = c
        detail[stage] = {"slots": c, "offered_erlangs": a, "mean_service_ms": service * 1e3,
                         "wait_probability": erlang_c(c, a)}
    analytic["headroom_ms"] = headroom_s * 1000.0 if math.isfinite(headroom_s) else None
    analytic["erlang_c"] = detail
    return out


def _search(twin: _Twin, slos: Sequence[Slo], start: Config, stages: Sequence[str],
            reps: int, max_reps: int, analytic: dict[str, Any]) -> dict[str, Any]:
    tried: list[Evaluation] = []

    def evaluate(config: Config) -> Evaluation:
        known = next((e for e in tried if e.config == config), None)
        if known is None:
            known = _evaluate(twin, slos, config, reps, max_reps)
            tried.append(known)
        return known

    ev, reason = evaluate(start), ""
    while ev.verdict != MEETS:  # up: raise what each unmet SLO needs
        levers = _levers(ev, slos, stages)
        if not levers:
            reason = ("no channel or AI slot count can change "
                      + ", ".join(e["slo"] for e in ev.evidence if e["verdict"] != MEETS))
            break
        if len(tried) >= MAX_CANDIDATES:
            reason = f"no candidate confirmed within {MAX_CANDIDATES} tried"
            break
        config = ev.config
        for lever in sorted(levers):
            step = max(1, round(0.02 * config[0])) if lever == "channels" else 1
            config = _bump(config, lever, step)
        ev = evaluate(config)
    levers_down = ["channels", *stages]
    if ev.verdict == MEETS:  # down: the fewest of each, one count at a time
        for lever in levers_down:
            while (lower := _lower(ev.config, lever)) is not None:
                trial = evaluate(lower)
                if trial.verdict != MEETS:
                    break
                ev = trial
    below = {}
    if ev.verdict == MEETS:
        for lever in levers_down:
            if (lower := _lower(ev.config, lever)) is not None:
                below[lever if lever == "channels" else f"ai.{lever}"] = evaluate(lower).record()
    return _answer(ev, reason, below, analytic, tried)


def _answer(ev: Evaluation, reason: str, below: dict[str, Any], analytic: dict[str, Any],
            tried: list[Evaluation]) -> dict[str, Any]:
    total = sum(float(s["cost"].get("total_usd") or 0.0) for s in ev.summaries)
    minutes = sum(float(s["cost"].get("answered_minutes") or 0.0) for s in ev.summaries)
    out: dict[str, Any] = {
        "channels": ev.config[0], "ai": dict(ev.config[1]),
        "cost_per_minute_usd": total / minutes if minutes > 0 else None,
        "confirmed": ev.verdict == MEETS, "replications": len(ev.summaries),
        "slo": ev.evidence, "below": below, "analytic": analytic,
        "tried": [e.record() | {"slo": {x["slo"]: x["verdict"] for x in e.evidence}}
                  for e in tried]}
    if ev.verdict != MEETS:
        out["reason"] = reason or "the last candidate is not confirmed"
    return out
