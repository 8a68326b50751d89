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
        ``p95_ms`` (averaged over the turns at or above the voice-to-voice p95; sums
        to the mean of that tail) and ``p95_share``. Empty when there are no turns.
    """
    split = parts(turns)
    if split.empty:
        cols = ("mean_ms", "mean_share", "p95_ms", "p95_share")
        return pd.DataFrame({c: pd.Series(dtype=float) for c in cols}).rename_axis("part")
    if not (split["other"].abs() > OTHER_TOLERANCE_MS).any():
        split = split.drop(columns="other")
    tail = split[_tail(turns.loc[split.index])]
    table = pd.DataFrame({"mean_ms": split.mean(), "p95_ms": tail.mean()})
    table["mean_share"] = table["mean_ms"] / table["mean_ms"].sum()
    table["p95_share"] = table["p95_ms"] / table["p95_ms"].sum()
    return table[["mean_ms", "mean_share", "p95_ms", "p95_share"]].rename_axis("part")


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
    stage = str(table["p95_ms"].idxmax())
    return stage, float(table["p95_share"].to_numpy(float)[table.index.get_loc(stage)])


# ---------------------------------------------------------------------------- distributions
def percentiles_over_time(turns: pd.DataFrame, window_s: float) -> pd.DataFrame:
    """p50/p95/p99 of voice-to-voice latency per window of turn start times.

    Turns of every replication are pooled; a window is ``[t_s, t_s + window_s)``.
    Windows without turns are left out.

    Returns
    -------
    DataFrame
        A row per window: ``t_s`` (window start), ``turns``, ``p50_ms``, ``p95_ms``,
        ``p99_ms``.
    """
    if not window_s > 0:
        raise SpecError("window_s", f"must be a number > 0, got {window_s!r}")
    cols = ("t_s", "turns", "p50_ms", "p95_ms", "p99_ms")
    v2v = turns["voice_to_voice_ms"].to_numpy(float) if not turns.empty else np.empty(0)
    keep = np.isfinite(v2v)
    if not keep.any():
        return pd.DataFrame({c: pd.Series(dtype=float) for c in cols})
    start = turns["start_s"].to_numpy(float)[keep]
    frame = pd.DataFrame({"t_s": np.floor(start / window_s) * window_s, "v": v2v[keep]})
    grouped = frame.groupby("t_s")["v"]
    out = pd.DataFrame({"turns": grouped.size()})
    for q in (50, 95, 99):
        out[f"p{q}_ms"] = grouped.quantile(q / 100)
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
def answer(turns: pd.DataFrame, slo_ms: float) -> str:
    """The analysis in one sentence: p95, SLO attainment with its CI, the dominant stage."""
    v2v = turns["voice_to_voice_ms"].to_numpy(float) if not turns.empty else np.empty(0)
    v2v = v2v[np.isfinite(v2v)]
    if v2v.size == 0:
        return NO_TURNS
    att = slo_attainment(turns, slo_ms)
    stage, share = dominant_stage_at_p95(turns)
    lo, hi = att["ci95"]
    label = STAGE_LABELS.get(stage or "", stage or "?")
    return (f"p95 voice-to-voice {np.percentile(v2v, 95):,.0f} ms; "
            f"{100 * att['fraction']:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}] of turns within "
            f"{slo_ms:,.0f} ms; {label} dominates the p95 ({100 * share:.0f} %)")
