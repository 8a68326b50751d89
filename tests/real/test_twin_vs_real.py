"""One experiment, two backends: the same calls, the same records, close figures.

Both backends draw the callers' plan from the same named streams, so they dial
the very same calls at the same instants with the same holds. On loopback with
a channel cap the outcomes should agree call by call, except for a call that
arrives within a few milliseconds of another call's release (real signalling
takes ~3 ms, the twin's lossless loopback far less).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lab.runner import run_experiment
from lab.spec import validate

pytestmark = pytest.mark.real

EXPERIMENT = {
    "name": "fidelity", "seed": 7, "duration_s": 12, "warmup_s": 0,
    "load": {"arrivals": {"kind": "poisson", "rate_cps": 1.5}},
    "scenarios": {"talk": {"hold_s": {"dist": "lognormal", "median": 2.5, "p95": 5}}},
    "deployment": {"trunk": {"channels": 3}, "proxy": {"workers": 4, "service_ms": 0.05}},
    "real": {"max_calls": 60, "max_duration_s": 60},
}


@pytest.mark.usefixtures("real_stack")
def test_same_experiment_on_both_backends(tmp_path: Path) -> None:
    exp = validate(EXPERIMENT)
    out = {b: tmp_path / b for b in ("twin", "real")}
    for backend, path in out.items():
        run_experiment(exp, backend=backend, out_dir=path, show_progress=False)
    calls = {b: pd.read_parquet(p / "calls.parquet") for b, p in out.items()}
    summary = {b: json.loads((p / "summary.json").read_text()) for b, p in out.items()}
    twin, real = calls["twin"], calls["real"]
    # the same columns and the same planned calls
    assert list(twin.columns) == list(real.columns)
    assert twin.call_id.tolist() == real.call_id.tolist()
    assert twin.start_s.tolist() == pytest.approx(real.start_s.tolist())
    assert len(twin) >= 10 and (twin.outcome == "blocked").any()
    for name in ("turns.parquet", "timeseries.parquet"):
        for path in out.values():
            assert (path / name).is_file()
    # the same outcomes call by call, up to near-ties at a channel release
    differ = (twin.outcome != real.outcome).sum()
    assert differ <= max(1, len(twin) // 10), pd.concat(
        [twin[["call_id", "start_s", "outcome"]], real.outcome.rename("real")], axis=1)
    assert summary["real"]["backend"] == "real" and summary["twin"]["backend"] == "twin"
    bt = summary["twin"]["blocking_probability"]["mean"]
    br = summary["real"]["blocking_probability"]["mean"]
    assert abs(bt - br) <= 0.15
    # set-up: milliseconds on loopback for both; the real stack is slower but close
    real_setup = summary["real"]["setup_ms"]
    assert 0.0 < real_setup["p50"] < 50.0
    assert summary["twin"]["setup_ms"]["p50"] < real_setup["p50"]
    answered = real[real.outcome == "answered"]
    assert (answered.final_code == 200).all() and (answered.invite_tx == 1).all()
    assert (answered.pdd_ms <= answered.setup_ms + 1e-9).all()
    held = answered.set_index("call_id").duration_s
    planned = twin[twin.outcome == "answered"].set_index("call_id").duration_s
    common = held.index.intersection(planned.index)
    assert (held[common] - planned[common]).abs().max() < 0.25  # holds as planned
