"""Results: the record tables and ``summary.json`` of CONTRACT.md, the same for every backend.

Files in a run directory:

* ``calls.parquet`` — a row per call attempt (columns :data:`CALL_COLUMNS`);
* ``turns.parquet`` — a row per AI turn (:data:`TURN_COLUMNS`);
* ``timeseries.parquet`` — a row per simulated (or real) second;
* ``steps.parquet`` — a row per call-feature step (DTMF, MESSAGE, hold, transfer);
* ``summary.json`` — counts, blocking with a 95 % confidence interval across
  replications, latency percentiles, MOS, AI-stage waits, security and cost;
* ``experiment.resolved.yaml`` — the experiment with every default filled in.

Only calls that arrive at or after ``warmup_s`` count in the summary.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lab.records import (
    CALL_COLUMNS,
    CALL_SCHEMA,
    LLM_CAUSE,
    OUTCOMES,
    STEP_COLUMNS,
    STEP_SCHEMA,
    TIMESERIES_BASE,
    TURN_COLUMNS,
    TURN_SCHEMA,
)
from lab.series import count_per_second, occupancy_per_second

__all__ = ["CALL_COLUMNS", "OUTCOMES", "STEP_COLUMNS", "TIMESERIES_BASE", "TURN_COLUMNS",
           "calls_table", "conform", "llm_errors", "mean_ci95", "percentiles", "steps_table",
           "summarize", "timeseries", "turns_table"]


# ---------------------------------------------------------------------------- tables
def conform(df: pd.DataFrame | None, schema: pa.Schema) -> pd.DataFrame:
    """``df`` with exactly the columns of ``schema`` (a record type's), in order and type.

    A float column the backend did not observe is NaN, a string column None; a missing
    integer or boolean column is an error (every backend knows its ids and flags).
    Columns already of the right type are not copied.
    """
    df = pd.DataFrame() if df is None else df
    n = len(df)
    out: dict[str, Any] = {}
    for f in schema:
        dtype = np.dtype(f.type.to_pandas_dtype())
        if f.name in df.columns:
            col = df[f.name]
            if dtype == np.dtype(object):
                # pandas' own string columns are kept (no round trip through objects)
                out[f.name] = (col.array if isinstance(col.dtype, pd.StringDtype)
                               else col.to_numpy(dtype=object, na_value=None))
            else:
                out[f.name] = col.to_numpy(dtype=dtype, copy=False)
        elif pa.types.is_floating(f.type):
            out[f.name] = np.full(n, np.nan)
        elif pa.types.is_string(f.type):
            out[f.name] = np.full(n, None, dtype=object)
        elif n == 0:
            out[f.name] = np.empty(0, dtype=dtype)
        else:
            raise ValueError(f"records: column {f.name!r} is missing")
    return pd.DataFrame(out, copy=False)


def arrow_table(df: pd.DataFrame | None, schema: pa.Schema) -> pa.Table:
    """``df`` as an Arrow table of ``schema``: NaN and None are nulls; numeric columns
    are shared with ``df``, not copied."""
    df = conform(df, schema)
    arrays = [pa.array(_values(df[f.name]), type=f.type, from_pandas=True) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _values(col: pd.Series) -> Any:
    """A column's values for Arrow: a pandas string column as it is (Arrow-backed ones
    are handed over without a copy), any other as a NumPy array."""
    return col.array if isinstance(col.dtype, pd.StringDtype) else col.to_numpy()


def _rejected_by(calls: pd.DataFrame, layer: str) -> int:
    """Calls rejected by ``layer`` or one of its parts (``layer.part``)."""
    by = calls["rejected_by"].dropna()  # most calls were not rejected at all
    return int(by.astype(str).str.startswith(layer).sum())


def _joined(frames: list[pd.DataFrame]) -> pd.DataFrame | None:
    if not frames:
        return None
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def calls_table(frames: list[pd.DataFrame]) -> pa.Table:
    """Per-replication call frames as one table of the contract's schema."""
    return arrow_table(_joined(frames), CALL_SCHEMA)


def turns_table(frames: list[pd.DataFrame]) -> pa.Table:
    return arrow_table(_joined(frames), TURN_SCHEMA)


def steps_table(frames: list[pd.DataFrame]) -> pa.Table:
    """A row per call-feature step (DTMF, MESSAGE, hold, transfer): when, how long, ok."""
    return arrow_table(_joined(frames), STEP_SCHEMA)


def timeseries(calls: pd.DataFrame, sim_s: float, channels: int) -> pd.DataFrame:
    """Per-second active calls (time average), arrivals, blocked, rejected, trunk utilisation.

    A call holds a channel over [admit_s, release_s) where the backend knows those
    instants (the twin), else from its 200 OK to its end (the real caller's view).
    """
    n = max(1, math.ceil(sim_s))
    admit = calls["admit_s"].to_numpy(float) if "admit_s" in calls else np.full(len(calls), np.nan)
    release = (calls["release_s"].to_numpy(float) if "release_s" in calls
               else np.full(len(calls), np.nan))
    answered = (calls["outcome"] == "answered").to_numpy()
    start = calls["start_s"].to_numpy(float)
    guess_admit = start + calls["setup_ms"].to_numpy(float) / 1000.0
    guess_release = calls["end_s"].to_numpy(float) if "end_s" in calls else guess_admit
    admit = np.where(np.isnan(admit) & answered, guess_admit, admit)
    release = np.where(np.isnan(release) & answered, guess_release, release)
    held = ~np.isnan(admit) & ~np.isnan(release)
    active = occupancy_per_second(admit[held], release[held], n)
    outcome = calls["outcome"].to_numpy()
    return pd.DataFrame({
        "t_s": np.arange(n, dtype=float),
        "active_calls": active,
        "arrivals": count_per_second(start, n),
        "blocked": count_per_second(start[outcome == "blocked"], n),
        "rejected": count_per_second(start[outcome == "rejected"], n),
        "trunk_utilization": active / channels,
    })


# ---------------------------------------------------------------------------- statistics
def percentiles(values: Any) -> dict[str, float | int | None]:
    """``{mean, p50, p95, p99, count}`` of the finite values (None when there are none)."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]  # a copy of our own, so the percentiles may reorder it
    if arr.size == 0:
        return {"mean": None, "p50": None, "p95": None, "p99": None, "count": 0}
    mean = float(arr.mean())  # before the partitioning reorders the values
    p50, p95, p99 = np.percentile(arr, [50, 95, 99], overwrite_input=True).tolist()
    return {"mean": mean, "p50": p50, "p95": p95, "p99": p99, "count": int(arr.size)}


#: ``scipy.special.ndtri(0.975)``, the normal 97.5 % quantile, to the last bit (a test
#: holds them equal): importing ``scipy.special`` for it cost a twin run 0.15 s.
Z975 = 1.959963984540054


def wilson_ci95(k: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval of ``k`` successes in ``n`` trials (Newcombe 1998),
    in the arithmetic ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")`` uses."""
    p = k / n
    z = Z975
    denom = 2 * (n + z**2)
    center = (2 * n * p + z**2) / denom
    delta = z / denom * math.sqrt(4 * n * p * (1 - p) + z**2)
    return (0.0 if k == 0 else center - delta), (1.0 if k == n else center + delta)


def mean_ci95(per_rep: list[float], successes: int | None = None,
              trials: int | None = None) -> dict[str, Any]:
    """Mean across replications with a 95 % confidence interval.

    With two or more replications: Student's t interval on the replication means
    (independent replications are the textbook way to get a CI from a simulation).
    With one: the Wilson score interval on successes/trials, which assumes the
    calls are independent trials — a narrower, optimistic interval; run
    replications for an honest one.

    The quantiles come from ``scipy.special`` (``stdtrit``, ``ndtri``: what
    ``scipy.stats.t.ppf`` and ``binomtest(...).proportion_ci`` evaluate), because
    importing ``scipy.stats`` costs about a second per run; a test holds the two equal.
    """
    vals = np.asarray(per_rep, dtype=float)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return {"mean": None, "ci95": [None, None], "replications": 0}
    mean = float(vals.mean())
    if vals.size >= 2:
        from scipy.special import stdtrit

        sem = float(vals.std(ddof=1) / math.sqrt(vals.size))
        half = float(stdtrit(vals.size - 1, 0.975)) * sem
        return {"mean": mean, "ci95": [max(0.0, mean - half), mean + half],
                "replications": int(vals.size)}
    if successes is not None and trials:
        low, high = wilson_ci95(successes, trials)
        return {"mean": mean, "ci95": [low, high], "replications": 1}
    return {"mean": mean, "ci95": [mean, mean], "replications": 1}


def ai_summary(turns: pd.DataFrame | dict[str, np.ndarray], usage: dict[str, dict[str, Any]],
               horizon_s: float, errors: dict[str, int] | None = None) -> dict[str, Any]:
    """Per AI stage: probability a request waited for a slot, the wait, slot utilisation.

    ``usage`` gives each stage's slots (None: unlimited, never waits) and busy
    slot-seconds summed over replications; ``horizon_s`` is the simulated time
    summed over replications; ``errors`` are the LLM's failed turns by cause
    (:func:`llm_errors`), ``ai.llm.errors``.
    """
    out: dict[str, Any] = {}
    for stage in ("stt", "llm", "tts"):
        col = f"{stage}_wait_ms"
        waits = np.asarray(turns[col], dtype=float) if col in turns else np.empty(0)
        use = usage.get(stage, {})
        servers = use.get("servers")
        util = (use.get("busy_s", 0.0) / (servers * horizon_s)
                if servers and horizon_s > 0 else None)
        out[stage] = {
            "wait_probability": float((waits > 1e-9).mean()) if waits.size else None,
            "wait_ms": percentiles(waits),
            "utilization": util,
            "concurrency": servers,
        }
    out["llm"]["errors"] = dict(errors or {})
    return out


def llm_errors(turns: pd.DataFrame, warmup_s: float = 0.0) -> dict[str, int]:
    """Turns (started at or after ``warmup_s``) whose LLM request failed, by cause:
    ``{"http_401": 3, "timeout": 1, ...}`` from the turns' ``cause`` (``llm.<cause>``)."""
    if not len(turns) or "cause" not in turns:
        return {}
    cause = turns["cause"].to_numpy(dtype=object)
    # most turns have no cause: count only those that do (a hash of millions is costly)
    some = (cause != "") & (turns["start_s"].to_numpy(float) >= warmup_s)
    counts = pd.Series(cause[some], dtype=object).value_counts()
    return {str(k)[len(LLM_CAUSE):]: int(n) for k, n in sorted(counts.items())
            if isinstance(k, str) and k.startswith(LLM_CAUSE)}


def _counted_columns(turns: pd.DataFrame, warmup_s: float, names: tuple[str, ...]
                     ) -> dict[str, np.ndarray]:
    """The named turn columns, for the turns that count (started at or after warm-up)."""
    if not len(turns):
        return {}
    keep = turns["start_s"].to_numpy(float) >= warmup_s
    every = bool(keep.all())
    return {n: (turns[n].to_numpy(float) if every else turns[n].to_numpy(float)[keep])
            for n in names if n in turns}


def summarize(calls: pd.DataFrame, turns: pd.DataFrame, *, backend: str, warmup_s: float,
              replications: int, run: dict[str, Any], extra: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """The ``summary.json`` mapping of CONTRACT.md (plus a few documented extras)."""
    # columns and masks, not filtered copies of the table (each copy of a 200,000-call
    # table is ~30 MB at the run's peak)
    keep = (calls["start_s"] >= warmup_s).to_numpy()
    counted = calls if bool(keep.all()) else calls[keep]
    outcome = counted["outcome"].to_numpy(dtype=object)
    counts = {"offered": len(counted)}
    for name in OUTCOMES:
        counts[name] = int((outcome == name).sum())
    reps = counted["replication"].to_numpy(np.int64)
    is_blocked = outcome == "blocked"
    per_rep, blocked_total = [], 0
    for rep in range(replications):
        mine = reps == rep
        if (n := int(mine.sum())):
            blocked = int((is_blocked & mine).sum())
            blocked_total += blocked
            per_rep.append(blocked / n)
    answered = counted[["setup_ms", "mos"]][outcome == "answered"]
    # the turn columns used, not the whole table (a busy hour has millions of turns)
    tcount = _counted_columns(turns, warmup_s, ("voice_to_voice_ms", "stt_wait_ms",
                                                "llm_wait_ms", "tts_wait_ms"))
    mos = answered["mos"].to_numpy(float)
    mos = mos[np.isfinite(mos)]
    wall = float(run.get("wall_s", 0.0))
    events = int(run.get("events", 0))
    out: dict[str, Any] = {
        "backend": backend,
        "calls": counts,
        "blocking_probability": mean_ci95(per_rep, blocked_total, len(counted)),
        "setup_ms": percentiles(answered["setup_ms"]),
        "pdd_ms": percentiles(counted["pdd_ms"]),
        "voice_to_voice_ms": percentiles(tcount.get("voice_to_voice_ms", [])),
        "mos": {"mean": float(mos.mean()) if mos.size else None,
                "p05": float(np.percentile(mos, 5)) if mos.size else None},
        "ai": ai_summary(tcount, run.get("ai", {}), float(run.get("ai_horizon_s", 0.0)),
                         llm_errors(turns, warmup_s)),
        "security": {"attack_requests": 0, "attack_blocked": 0,
                     "legit_rejected": _rejected_by(counted, "security")},
        "cost": {},
        "run": {"wall_s": wall, "sim_s": float(run.get("sim_s", 0.0)), "events": events,
                "events_per_s": events / wall if wall > 0 else None},
        "warmup_s": warmup_s,
        "replications": replications,
    }
    out.update(extra or {})
    return out


# ---------------------------------------------------------------------------- writing
def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n")


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


ROW_GROUP = 262_144


def write_tables(out_dir: Path, calls: pa.Table, turns: pa.Table, steps: pa.Table,
                 ts: pd.DataFrame) -> None:
    # row groups of 256k rows keep the writer's buffers small for millions of turns, and
    # the system allocator (not Arrow's mimalloc) lets the buffers go once written
    pool = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        for table, name in ((calls, "calls"), (turns, "turns"), (steps, "steps")):
            # dictionary-encode only the text columns: on millions of distinct floats a
            # dictionary is tried, overflows and is dropped, five times the write's cost
            text = [f.name for f in table.schema
                    if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
            pq.write_table(table, out_dir / f"{name}.parquet", row_group_size=ROW_GROUP,
                           use_dictionary=text)
    finally:
        pa.set_memory_pool(pool)
    ts.to_parquet(out_dir / "timeseries.parquet", index=False)
