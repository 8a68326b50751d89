"""The experiments whose twin tables are pinned: the built-in ones and one per model path.

``tests/golden/twin_tables.json`` holds a digest of every column of the calls, turns and
steps tables each case produces (:func:`digests`). A change that moves any value shows up
as the case, table and column that moved. Regenerate on purpose only, after a modelling
fix that the commit message explains: ``python -m tests.golden.record``.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
BUILTIN = ROOT / "lab" / "experiments"
DIGESTS = Path(__file__).with_name("twin_tables.json")

_SIGNALLING = {"network": {"delay_ms": 20, "jitter_ms": 4, "loss": 0.05},
               "trunk": {"channels": 30}, "proxy": {"workers": 4, "service_ms": 0.5}}

#: Extra cases, each a raw experiment mapping exercising one part of the model.
CASES: dict[str, dict[str, Any]] = {
    "lossy-udp": {
        "name": "lossy-udp", "seed": 11, "duration_s": 600, "warmup_s": 60, "replications": 2,
        "load": {"arrivals": {"kind": "poisson", "rate_cps": 0.3}},
        "scenarios": {"talk": {"hold_s": {"dist": "exponential", "mean": 60}}},
        "deployment": _SIGNALLING,
    },
    "lossy-tcp": {
        "name": "lossy-tcp", "seed": 12, "duration_s": 600,
        "load": {"arrivals": {"kind": "poisson", "rate_cps": 0.3}},
        "scenarios": {"talk": {"hold_s": {"dist": "lognormal", "median": 40, "p95": 120}}},
        "deployment": {**_SIGNALLING, "sip": {"transport": "tcp"}},
    },
    "proxy-overload": {
        "name": "proxy-overload", "seed": 13, "duration_s": 60,
        "load": {"arrivals": {"kind": "burst", "base_cps": 20, "burst_cps": 400,
                              "start_s": 20, "duration_s": 10}},
        "scenarios": {"talk": {"hold_s": 5}},
        "deployment": {"network": {"delay_ms": 10, "loss": 0.01},
                       "trunk": {"channels": 4000},
                       "proxy": {"workers": 2, "service_ms": 2.0, "queue_limit": 50}},
    },
    "overload-control": {
        "name": "overload-control", "seed": 17, "duration_s": 40,
        "load": {"arrivals": {"kind": "burst", "base_cps": 60, "burst_cps": 500,
                              "start_s": 10, "duration_s": 15}},
        "scenarios": {"talk": {"hold_s": 2}},
        "deployment": {"network": {"delay_ms": 5, "loss": 0.01},
                       "trunk": {"channels": 4000},
                       "proxy": {"workers": 4, "service_ms": 4.0, "reject_cost": 0.8,
                                 "retransmission_cost": 0.5,
                                 "overload_control": {"kind": "loss"}}},
    },
    "cps-and-media-caps": {
        "name": "cps-and-media-caps", "seed": 14, "duration_s": 300,
        "load": {"arrivals": {"kind": "ramp", "start_cps": 1, "end_cps": 6}},
        "scenarios": {"talk": {"hold_s": {"dist": "uniform", "loc": 10, "scale": 30}}},
        "deployment": {
            "network": {"delay_ms": 40, "jitter_ms": 15, "loss": 0.02,
                        "burst": {"mean_burst_packets": 3}},
            "trunk": {"channels": 200, "cps_limit": 4},
            "media": {"codec": "G729A", "jitter_buffer": "adaptive", "jitter_buffer_ms": 60,
                      "agent_codec": "G711", "link_kbps": 2500,
                      "relay": {"cores": 1, "call_cost_pct": 0.5, "transcode_cost_pct": 1.5}},
        },
    },
    "features": {
        "name": "features", "seed": 15, "duration_s": 300,
        "load": {"arrivals": {"kind": "poisson", "rate_cps": 0.2},
                 "mix": [{"scenario": "ivr"}]},
        "scenarios": {"ivr": {"script": [
            {"turns": 1}, {"dtmf": "12#", "prompt_s": 2.5}, {"message": "order 42"},
            {"on_hold_s": {"dist": "exponential", "mean": 5}},
            {"transfer": "sip:human@example.com", "talk_s": 20}, {"talk_s": 3}]}},
        "deployment": {"network": {"delay_ms": 25, "jitter_ms": 3, "loss": 0.03},
                       "proxy": {"workers": 2, "service_ms": 0.3}},
    },
    "ai-limits": {
        "name": "ai-limits", "seed": 16, "duration_s": 600, "warmup_s": 60, "replications": 2,
        "load": {"arrivals": {"kind": "poisson", "rate_cps": 0.4},
                 "mix": [{"scenario": "agent", "weight": 3}, {"scenario": "talk"}]},
        "scenarios": {
            "agent": {"turns": {"dist": "poisson", "mu": 5},
                      "barge_in": {"probability": 0.3,
                                   "after_s": {"dist": "exponential", "mean": 2}}},
            "talk": {"hold_s": 30}},
        "deployment": {
            "network": {"delay_ms": 30, "jitter_ms": 5, "loss": 0.01},
            "ai": {"stt": {"concurrency": 2, "rate_limit_rpm": 40},
                   "llm": {"concurrency": 3, "rate_limit_rpm": 60},
                   "tts": {"concurrency": 2}, "retry_base_ms": 300, "max_retries": 3}},
    },
    "ai-unlimited": {
        "name": "ai-unlimited", "seed": 17, "duration_s": 600,
        "load": {"arrivals": {"kind": "poisson", "rate_cps": 0.5}},
        "scenarios": {"talk": {"turns": 6}},
        "deployment": {"network": {"delay_ms": 15, "jitter_ms": 2}},
    },
    "ai-busy": {  # the benchmark's AI hour in small: providers ~80 % busy
        "name": "ai-busy", "seed": 1, "duration_s": 900, "warmup_s": 0,
        "load": {"arrivals": {"kind": "poisson", "rate_cps": 200 / 180}},
        "scenarios": {"talk": {
            "turns": 10, "caller_speech_s": {"dist": "lognormal", "median": 6, "p95": 15},
            "agent_speech_s": {"dist": "lognormal", "median": 9, "p95": 20}}},
        "deployment": {
            "network": {"delay_ms": 20, "jitter_ms": 2},
            "trunk": {"channels": 300}, "proxy": {"workers": 8, "service_ms": 0.2},
            "ai": {"vad_ms": 300,
                   "stt": {"latency_ms": {"dist": "lognormal", "median": 150, "p95": 300},
                           "concurrency": 2},
                   "llm": {"ttft_ms": {"dist": "lognormal", "median": 350, "p95": 900},
                           "tokens": 60, "tokens_per_s": 80, "concurrency": 16},
                   "tts": {"ttfb_ms": {"dist": "lognormal", "median": 120, "p95": 250},
                           "concurrency": 2}}},
    },
}

TABLES = ("calls", "turns", "steps")
SORT = {"calls": ["replication", "call_id"], "turns": ["replication", "call_id", "turn"],
        "steps": ["replication", "call_id", "step"]}


#: Significant digits a float keeps in a digest. Bit for bit holds on one machine (a test
#: runs the twin twice and compares the files); across CPUs and library builds the last
#: bits of a few libm/BLAS results can differ (the adaptive jitter-buffer case moved so
#: between two machines), so the golden digests compare floats at 7 significant digits:
#: any modelling change moves a value far more, a last-bit change crosses a rounding
#: boundary about once in 10^8 values.
FLOAT_DIGITS = 7


def column_digest(values: pd.Series) -> str:
    """A digest of one column's values, independent of the parquet writer's version."""
    h = hashlib.sha256()
    if pd.api.types.is_float_dtype(values.dtype):
        arr = values.to_numpy(dtype=np.float64, na_value=math.nan)
        # Python's shortest correctly rounded decimal: the same text on every machine
        h.update(",".join(f"{v:.{FLOAT_DIGITS}g}" for v in arr.tolist()).encode())
    elif pd.api.types.is_bool_dtype(values.dtype):
        h.update(values.to_numpy(dtype=bool).tobytes())
    elif pd.api.types.is_integer_dtype(values.dtype):
        h.update(values.to_numpy(dtype=np.int64).astype("<i8").tobytes())
    else:
        for v in values.tolist():
            h.update(b"\x01" if v is None or (isinstance(v, float) and math.isnan(v))
                     else b"\x00" + str(v).encode() + b"\x00")
    return h.hexdigest()[:20]


def digests(run_dir: Path) -> dict[str, Any]:
    """``{table: {"rows": n, "columns": {column: digest}}}`` of a run directory."""
    out: dict[str, Any] = {}
    for table in TABLES:
        df = pd.read_parquet(run_dir / f"{table}.parquet")
        df = df.sort_values(SORT[table], kind="stable").reset_index(drop=True)
        out[table] = {"rows": len(df),
                      "columns": {c: column_digest(df[c]) for c in df.columns}}
    return out


def experiments() -> dict[str, Any]:
    """Every case by name: the built-in experiments (validated from their files) and CASES."""
    from lab.spec import load_experiment, validate

    out: dict[str, Any] = {}
    for path in sorted(BUILTIN.glob("*.yaml")):
        out[path.stem] = (load_experiment(path), path.parent)
    for name, raw in CASES.items():
        out[name] = (validate(raw), ROOT)
    return out
