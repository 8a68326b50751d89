"""Voice-to-voice latency: where a turn's delay goes, how it moves over time, the SLO.

What the caller feels
---------------------
In a voice-AI call the number that matters is **voice-to-voice** latency: from the
moment the caller stops speaking to the first agent audio at their ear. Above
roughly a second and a half a pause feels like a broken line; callers start
talking again and barge in. A cascaded agent builds it from parts
(:mod:`twin.ai` draws the same chain)::

    network      caller -> agent and agent -> caller media: one-way delays,
                 packetisation (one ptime each way) and the caller's jitter buffer
    vad          endpointing: silence before the agent decides the caller is done
    stt          final transcript after end of speech
    llm          time to the LLM's first token
    tts          time to the TTS's first audio byte
    queue        waits for a provider slot (STT + LLM + TTS concurrency caps)

so ``voice_to_voice_ms = network + vad + stt + llm + tts + queue`` for every turn
(:func:`parts` adds an ``other`` column for whatever a backend measured but did
not attribute — zero on the twin).

Means hide the turns callers remember. :func:`waterfall` gives each part's
average contribution over all turns *and* over the slow tail (turns at or above
the voice-to-voice p95), and :func:`dominant_stage_at_p95` names the part that
contributes most to that tail — often not the part with the largest mean:
queueing is zero for most turns and most of the wait in the slow ones.
:func:`slo_attainment` states the share of turns within an SLO with a 95 %
confidence interval across independent replications (:func:`lab.results.mean_ci95`).

Works the same on a twin or a real run directory: both write ``turns.parquet`` with
the columns of :data:`lab.results.TURN_SCHEMA`. A run with no AI turns (a plain
talk scenario, or a backend that measures none) gives empty tables and
:data:`NO_TURNS`, never an exception.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from lab import capacity
from lab.capacity import ecdf as ecdf  # re-exported for the notebook
from lab.capacity import experiment_path as experiment_path
from lab.results import TURN_COLUMNS, mean_ci95
from lab.spec import Experiment, SpecError

#: The parts of voice-to-voice latency, in the order a turn meets them (``queue`` spans all).
PARTS = ("network", "vad", "stt", "llm", "tts", "queue")

#: How the parts read in a sentence.
STAGE_LABELS = {"network": "the network", "vad": "VAD endpointing", "stt": "the STT",
                "llm": "the LLM", "tts": "the TTS", "queue": "queueing for provider slots",
                "other": "unattributed time"}

#: What every answer says when a run has no AI turns.
NO_TURNS = ("no AI turns in these results: voice-to-voice latency needs a scenario with "
            "turns > 0 (e.g. the voice-agent experiment) on a backend that measures them")

#: An ``other`` part smaller than this everywhere (ms) is rounding, left out of the waterfall.
OTHER_TOLERANCE_MS = 0.5

WAITS = ("stt_wait", "llm_wait", "tts_wait")

#: The waterfall's tail columns: a part averaged over the slowest 5 % of turns (those at
#: or above the voice-to-voice p95), and its share of that tail. A mean, not a p95.
TAIL_MS, TAIL_SHARE = "mean_of_slowest_5pct_ms", "slowest_5pct_share"
WATERFALL_COLUMNS = ("mean_ms", "mean_share", TAIL_MS, TAIL_SHARE)

#: Turns a window needs before its percentile means anything: a p-th percentile of fewer
#: than 1 / (1 - p) turns is just the window's largest turn.
MIN_TURNS = {"p50": 2, "p95": 20, "p99": 100}

#: Window lengths :func:`auto_window_s` picks from, seconds.
NICE_WINDOWS_S = (1, 2, 5, 10, 15, 30, 60, 120, 180, 240, 300, 600, 900, 1800, 3600)


# ---------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class LatencyData:
    """The tables of one run, all turns and calls (warm-up included; see :func:`counted`)."""

    name: str
    backend: str
    path: Path | None  # None once a temporary twin run has been removed
    summary: dict[str, Any]
    calls: pd.DataFrame
    turns: pd.DataFrame
    warmup_s: float
    duration_s: float

    @property
    def counted_turns(self) -> pd.DataFrame:
        """Turns that started at or after the warm-up (those the summary counts)."""
        return counted(self.turns, self.warmup_s)

    @property
    def counted_calls(self) -> pd.DataFrame:
        """Calls that arrived at or after the warm-up."""
        return counted(self.calls, self.warmup_s)


def load(experiment: str | Path, *, duration_s: float | None = None, seed: int | None = None,
         replications: int | None = None) -> Experiment:
    """An experiment by built-in name or path (see :func:`lab.capacity.load`)."""
    return capacity.load(experiment, duration_s=duration_s, seed=seed,
                         replications=replications)


def load_run(run_dir: str | Path) -> LatencyData:
    """Read a run directory written by ``siplab run`` on either backend."""
    path = Path(run_dir)
    if not (path / "summary.json").is_file():
        raise SpecError("run_dir", f"{path} is not a run directory (no summary.json)")
    summary = json.loads((path / "summary.json").read_text())
    resolved = path / "experiment.resolved.yaml"
    spec = yaml.safe_load(resolved.read_text()) if resolved.is_file() else {}
    turns_file = path / "turns.parquet"
    turns = (pd.read_parquet(turns_file) if turns_file.is_file()
             else pd.DataFrame(columns=list(TURN_COLUMNS)))
    return LatencyData(
        name=str(summary.get("experiment") or spec.get("name") or path.name),
        backend=str(summary.get("backend", "?")), path=path, summary=summary,
        calls=pd.read_parquet(path / "calls.parquet"), turns=turns,
        warmup_s=float(summary.get("warmup_s", spec.get("warmup_s", 0.0)) or 0.0),
        duration_s=float(spec.get("duration_s", 0.0) or 0.0))


def simulate(exp: Experiment, *, base_dir: Path | None = None,
             jobs: int | None = None) -> LatencyData:
    """Run ``exp`` on the twin in a temporary directory (removed); return its tables."""
    from lab.runner import run_experiment

    tmp = Path(tempfile.mkdtemp(prefix=f"siplab-{exp.name}-"))
    try:
        summary = run_experiment(exp, backend="twin", out_dir=tmp / "run", base_dir=base_dir,
                                 jobs=jobs, show_progress=False)
        data = load_run(summary.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return LatencyData(exp.name, "twin", None, data.summary, data.calls, data.turns,
                       exp.warmup_s, exp.duration_s)


def counted(table: pd.DataFrame, warmup_s: float) -> pd.DataFrame:
    """Rows that started at or after ``warmup_s`` (turns or calls)."""
    if table.empty or "start_s" not in table:
        return table
    return table[table["start_s"].to_numpy(float) >= warmup_s]


# ---------------------------------------------------------------------------- composition
def parts(turns: pd.DataFrame) -> pd.DataFrame:
    """Each turn's voice-to-voice latency split into :data:`PARTS` plus ``other``, ms.

    A part a backend did not measure (NaN) counts as 0, and ``other`` is whatever
    remains, so the columns always sum to ``voice_to_voice_ms``. Turns without a
    voice-to-voice value are dropped.
    """
    if turns.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in (*PARTS, "other")})
    v2v = turns["voice_to_voice_ms"].to_numpy(float)
    keep = np.isfinite(v2v)
    out = pd.DataFrame(index=turns.index[keep])
    for part in PARTS:
        col = f"{part}_ms"
        values = turns[col].to_numpy(float)[keep] if col in turns else np.zeros(keep.sum())
        out[part] = np.nan_to_num(values, nan=0.0)
    out["other"] = v2v[keep] - out[list(PARTS)].sum(axis=1).to_numpy()
    return out


def _tail(turns: pd.DataFrame, q: float = 95.0) -> np.ndarray:
    """Mask of the turns whose voice-to-voice latency is at or above its ``q``-th percentile."""
    v2v = turns["voice_to_voice_ms"].to_numpy(float)
    finite = v2v[np.isfinite(v2v)]
    return v2v >= np.percentile(finite, q)


def waterfall(turns: pd.DataFrame) -> pd.DataFrame:
    """Each part's contribution to the average turn and to the slow tail.

    Returns
    -------
    DataFrame
        Indexed by part (:data:`PARTS`, plus ``other`` when any turn has more than
        :data:`OTHER_TOLERANCE_MS` unattributed): ``mean_ms`` (the part averaged over
        all turns; the column sums to the mean voice-to-voice), ``mean_share``,
        ``mean_of_slowest_5pct_ms`` (the part averaged over the slowest 5 % of turns,
        those at or above the voice-to-voice p95; sums to the mean of that tail —
        not a p95) and ``slowest_5pct_share``. Empty when there are no turns.
    """
    split = parts(turns)
    if split.empty:
        cols = WATERFALL_COLUMNS
        return pd.DataFrame({c: pd.Series(dtype=float) for c in cols}).rename_axis("part")
    if not (split["other"].abs() > OTHER_TOLERANCE_MS).any():
        split = split.drop(columns="other")
    tail = split[_tail(turns.loc[split.index])]
    table = pd.DataFrame({"mean_ms": split.mean(), TAIL_MS: tail.mean()})
    table["mean_share"] = table["mean_ms"] / table["mean_ms"].sum()
    table[TAIL_SHARE] = table[TAIL_MS] / table[TAIL_MS].sum()
    return table[list(WATERFALL_COLUMNS)].rename_axis("part")


def dominant_stage_at_p95(turns: pd.DataFrame) -> tuple[str | None, float]:
    """The part contributing most, on average, to the turns at or above the v2v p95.

    Returns
    -------
    (str or None, float)
        The part's name (one of :data:`PARTS` or ``other``) and its share of those
        turns' mean voice-to-voice latency; ``(None, nan)`` without turns.
    """
    table = waterfall(turns)
    if table.empty:
        return None, float("nan")
    stage = str(table[TAIL_MS].idxmax())
    return stage, float(table[TAIL_SHARE].to_numpy(float)[table.index.get_loc(stage)])


# ---------------------------------------------------------------------------- distributions
def auto_window_s(turns: pd.DataFrame, windows: int = 12, turns_per_window: int = 5) -> float:
    """A window (from :data:`NICE_WINDOWS_S`) cutting the turns' start times into about
    ``windows`` windows, fewer when there are fewer than ``turns_per_window`` turns to
    each: 300 s on an hour of many turns, 10 s on a 20 s real run of 15 turns."""
    start = turns["start_s"].to_numpy(float) if "start_s" in turns else np.empty(0)
    start = start[np.isfinite(start)]
    span = float(start.max() - min(0.0, start.min())) if start.size else 0.0
    count = max(1, min(windows, start.size // max(1, turns_per_window)))
    wanted = span / count
    return float(next((w for w in NICE_WINDOWS_S if w >= wanted), NICE_WINDOWS_S[-1]))


def percentiles_over_time(turns: pd.DataFrame, window_s: float | None = None) -> pd.DataFrame:
    """p50/p95/p99 of voice-to-voice latency per window of turn start times.

    Turns of every replication are pooled; a window is ``[t_s, t_s + window_s)``
    (default :func:`auto_window_s`). Windows without turns are left out, and a
    percentile of a window with fewer turns than :data:`MIN_TURNS` asks for is NaN
    (a short real run still shows its p50, not an empty plot).

    Returns
    -------
    DataFrame
        A row per window: ``t_s`` (window start), ``turns``, ``p50_ms``, ``p95_ms``,
        ``p99_ms``.
    """
    if window_s is None:
        window_s = auto_window_s(turns)
    if not window_s > 0:
        raise SpecError("window_s", f"must be a number > 0, got {window_s!r}")
    cols = ("t_s", "turns", "p50_ms", "p95_ms", "p99_ms")
    v2v = turns["voice_to_voice_ms"].to_numpy(float) if not turns.empty else np.empty(0)
    start = turns["start_s"].to_numpy(float) if "start_s" in turns else np.full(v2v.size, np.nan)
    keep = np.isfinite(v2v) & np.isfinite(start)
    if not keep.any():
        return pd.DataFrame({c: pd.Series(dtype=float) for c in cols})
    frame = pd.DataFrame({"t_s": np.floor(start[keep] / window_s) * window_s, "v": v2v[keep]})
    grouped = frame.groupby("t_s")["v"]
    out = pd.DataFrame({"turns": grouped.size()})
    for q in (50, 95, 99):
        values = grouped.quantile(q / 100)
        out[f"p{q}_ms"] = values.where(out["turns"] >= MIN_TURNS[f"p{q}"])
    return out.reset_index()[list(cols)]


def slo_attainment(turns: pd.DataFrame, slo_ms: float) -> dict[str, Any]:
    """Fraction of turns with voice-to-voice latency <= ``slo_ms``, with a 95 % CI.

    The CI is Student's t across replications (each replication's own fraction);
    with one replication, the Wilson interval on the pooled turns.

    Returns
    -------
    dict
        ``slo_ms``, ``fraction`` (mean of the replications' fractions), ``ci95``
        [lo, hi] (within [0, 1]), ``replications``, ``turns``, ``within``.
        ``fraction`` is None without turns.
    """
    if not slo_ms > 0:
        raise SpecError("slo_ms", f"must be a number > 0, got {slo_ms!r}")
    v2v = turns["voice_to_voice_ms"].to_numpy(float) if not turns.empty else np.empty(0)
    keep = np.isfinite(v2v)
    ok = v2v[keep] <= slo_ms
    reps = (turns["replication"].to_numpy()[keep] if "replication" in turns
            else np.zeros(keep.sum(), dtype=int))
    per_rep = [float(ok[reps == r].mean()) for r in np.unique(reps)]
    ci = mean_ci95(per_rep, int(ok.sum()), int(ok.size))
    lo, hi = ci["ci95"]
    return {"slo_ms": float(slo_ms), "fraction": ci["mean"],
            "ci95": [None if lo is None else max(0.0, lo), None if hi is None else min(1.0, hi)],
            "replications": ci["replications"], "turns": int(ok.size), "within": int(ok.sum())}


def stage_table(turns: pd.DataFrame) -> pd.DataFrame:
    """Percentiles of voice-to-voice, each part and each provider wait, ms.

    Returns
    -------
    DataFrame
        Indexed by ``voice_to_voice``, the parts, then ``stt_wait``, ``llm_wait``,
        ``tts_wait``: ``mean``, ``p50``, ``p95``, ``p99``, ``max`` and ``nonzero``
        (the share of turns where it is above 0.001 ms — for a wait, the
        probability of queueing). Empty without turns.
    """
    cols = ("mean", "p50", "p95", "p99", "max", "nonzero")
    split = parts(turns)
    if split.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in cols})
    if not (split["other"].abs() > OTHER_TOLERANCE_MS).any():
        split = split.drop(columns="other")
    series = {"voice_to_voice": turns.loc[split.index, "voice_to_voice_ms"]}
    series.update({name: split[name] for name in split.columns})
    for wait in WAITS:
        if f"{wait}_ms" in turns:
            series[wait] = turns.loc[split.index, f"{wait}_ms"]
    rows = {}
    for name, s in series.items():
        x = s.to_numpy(float)
        x = x[np.isfinite(x)]
        if x.size == 0:
            continue
        p50, p95, p99 = np.percentile(x, [50, 95, 99])
        rows[name] = {"mean": x.mean(), "p50": p50, "p95": p95, "p99": p99, "max": x.max(),
                      "nonzero": float((x > 1e-3).mean())}
    return pd.DataFrame.from_dict(rows, orient="index")[list(cols)]


def mos_summary(calls: pd.DataFrame) -> dict[str, Any]:
    """MOS (ITU-T G.107 E-model, per answered call): mean, spread and share below 3.6.

    3.6 is the E-model's "some users dissatisfied" boundary (R = 70); 4.0 and above
    is "satisfied" (R >= 80). Returns ``calls`` (answered with a MOS), ``mean``,
    ``p05``, ``p50``, ``min``, ``below_3_6`` and ``at_least_4`` (fractions); the
    statistics are None without such calls.
    """
    if calls.empty or "mos" not in calls:
        mos = np.empty(0)
    else:
        answered = (calls["outcome"] == "answered").to_numpy() if "outcome" in calls else True
        mos = calls["mos"].to_numpy(float)[answered]
        mos = mos[np.isfinite(mos)]
    if mos.size == 0:
        return {"calls": 0, "mean": None, "p05": None, "p50": None, "min": None,
                "below_3_6": None, "at_least_4": None}
    p05, p50 = np.percentile(mos, [5, 50])
    return {"calls": int(mos.size), "mean": float(mos.mean()), "p05": float(p05),
            "p50": float(p50), "min": float(mos.min()),
            "below_3_6": float((mos < 3.6).mean()), "at_least_4": float((mos >= 4.0).mean())}


# ---------------------------------------------------------------------------- the answer
def llm_failures(summary: dict[str, Any], turns: pd.DataFrame | None = None
                 ) -> pd.DataFrame | None:
    """LLM endpoint failures by cause, from ``summary.json``'s ``ai.llm.errors``.

    A real run whose agent asks an external LLM endpoint counts each turn whose
    request failed (HTTP status, timeout, bad JSON) by cause. Returns None when the
    summary has no such mapping (the twin, or a run that asked no endpoint);
    otherwise a row per cause, most frequent first: ``cause``, ``turns`` and
    ``share`` (of all the run's turns, when ``turns`` is given; else NaN).
    """
    ai = summary.get("ai") if isinstance(summary, dict) else None
    llm = ai.get("llm") if isinstance(ai, dict) else None
    errors = llm.get("errors") if isinstance(llm, dict) else None
    if not isinstance(errors, dict):
        return None
    rows = [(str(k), int(v)) for k, v in errors.items()
            if isinstance(v, int | float) and not isinstance(v, bool)]
    table = pd.DataFrame(rows, columns=["cause", "turns"])
    table = table.sort_values(["turns", "cause"], ascending=[False, True], kind="stable")
    total = len(turns) if turns is not None else 0
    table["share"] = table["turns"] / total if total else np.nan
    return table.reset_index(drop=True)


def percentile_ms(turns: pd.DataFrame, q: float) -> float:
    """The ``q``-th percentile of the turns' voice-to-voice latency, ms (NaN without)."""
    v2v = turns["voice_to_voice_ms"].to_numpy(float) if not turns.empty else np.empty(0)
    v2v = v2v[np.isfinite(v2v)]
    return float(np.percentile(v2v, q)) if v2v.size else float("nan")


def headline(turns: pd.DataFrame, slo_ms: float,
             failures: pd.DataFrame | None = None) -> pd.DataFrame:
    """The small table under the answer: percentiles, SLO attainment, dominant stage.

    A row per figure (``figure``, ``value``), values formatted with their units;
    empty without turns.
    """
    if np.isnan(percentile_ms(turns, 50)):
        return pd.DataFrame({"figure": pd.Series(dtype=str), "value": pd.Series(dtype=str)})
    att = slo_attainment(turns, slo_ms)
    lo, hi = att["ci95"]
    stage, share = dominant_stage_at_p95(turns)
    rows = [("turns counted", f"{att['turns']:,} in {att['replications']} replication(s)")]
    rows += [(f"voice-to-voice p{q}", f"{percentile_ms(turns, q):,.0f} ms") for q in (50, 95, 99)]
    ci = "" if lo is None else f" (95 % CI {100 * lo:.1f}–{100 * hi:.1f} %)"
    rows.append((f"turns within the {slo_ms:,.0f} ms SLO", f"{100 * att['fraction']:.1f} %{ci}"))
    rows.append(("largest part of the slowest 5 %",
                 f"{STAGE_LABELS.get(stage or '', stage or '?')} ({100 * share:.0f} %)"))
    if failures is not None:
        rows.append(("turns whose LLM request failed", f"{int(failures['turns'].sum()):,}"))
    return pd.DataFrame(rows, columns=["figure", "value"])


def answer(turns: pd.DataFrame, slo_ms: float, failures: pd.DataFrame | None = None) -> str:
    """The analysis in one sentence: p95, SLO attainment with its 95 % CI, the dominant
    stage, and — when the run counted any — the turns whose LLM request failed."""
    v2v = turns["voice_to_voice_ms"].to_numpy(float) if not turns.empty else np.empty(0)
    v2v = v2v[np.isfinite(v2v)]
    if v2v.size == 0:
        return NO_TURNS
    att = slo_attainment(turns, slo_ms)
    stage, share = dominant_stage_at_p95(turns)
    lo, hi = att["ci95"]
    label = STAGE_LABELS.get(stage or "", stage or "?")
    ci = "" if lo is None else f" (95 % CI {100 * lo:.1f}–{100 * hi:.1f} %)"
    text = (f"p95 voice-to-voice {np.percentile(v2v, 95):,.0f} ms; "
            f"{100 * att['fraction']:.1f} %{ci} of turns within {slo_ms:,.0f} ms; "
            f"{label} dominates the slowest 5 % of turns ({100 * share:.0f} %)")
    failed = int(failures["turns"].sum()) if failures is not None else 0
    if failures is not None and failed:
        text += (f"; {failed:,} turn(s) got no LLM reply (the endpoint failed: "
                 f"{', '.join(failures['cause'].head(3))})")
    return text
