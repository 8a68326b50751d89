"""Real calls through Kamailio on 127.0.0.1: answered, blocked by channels, rejected by CPS.

Each test runs the whole stack (Kamailio, SIPp agent, pjsua2 UAC workers) for a few
seconds of real time; every process stops by itself and the tests check that none
is left behind.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lab.plan import CallPlan, make_plan
from lab.spec import Experiment, validate
from real.backend import RECORD_KEYS, run_calls

Leftovers = Callable[[Path], list[tuple[int, str]]]

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("real_stack"), pytest.mark.timeout(90)]


def experiment(n_calls: int, rate_cps: float, hold_s: Any, **trunk: Any) -> Experiment:
    """Calls at a constant rate through a trunk; the agent answers after 20 ms."""
    return validate({
        "name": "real-test",
        "duration_s": n_calls / rate_cps,
        "load": {"arrivals": {"kind": "constant", "rate_cps": rate_cps}},
        "scenarios": {"talk": {"hold_s": hold_s}},
        "deployment": {"trunk": {"channels": 100, **trunk}, "proxy": {"workers": 2},
                       "agent": {"answer_ms": 20}},
    })


def run(exp: Experiment, workdir: Path, leftovers: Leftovers
        ) -> tuple[list[CallPlan], list[dict[str, Any]], dict]:
    """Run the plan of ``exp``; check the records' ids and keys and that nothing is left."""
    plan = make_plan(exp)
    records: list[dict[str, Any]] = []
    done: list[int] = []

    def progress(now_s: float, /, *, placed: int | None = None,
                 finished: int | None = None) -> None:
        done.append(-1 if finished is None else finished)

    facts = run_calls(exp, plan, workdir, records.append, progress)
    assert done and done[-1] == len(plan) and done == sorted(done)
    assert sorted(r["call_id"] for r in records) == [p.call_id for p in plan]
    assert all(set(r) == set(RECORD_KEYS) for r in records)
    assert leftovers(workdir) == []
    return plan, records, facts


def admitted_by_channels(plan: list[CallPlan], channels: int, answer_s: float) -> set[int]:
    """Call ids a loss system with ``channels`` servers admits (heap of busy-until times)."""
    busy: list[float] = []
    admitted = set()
    for p in sorted(plan, key=lambda p: p.start_s):
        while busy and busy[0] <= p.start_s:
            heapq.heappop(busy)
        if len(busy) < channels:
            heapq.heappush(busy, p.start_s + answer_s + p.talk_s)
            admitted.add(p.call_id)
    return admitted


def test_small_run_answers_every_call(tmp_path: Path, leftovers: Leftovers) -> None:
    exp = experiment(10, 4.0, {"dist": "uniform", "loc": 1.0, "scale": 1.0})
    workdir = tmp_path / ("a-long-directory-name-" * 4)  # beyond a Unix socket path's 108 bytes
    plan, records, facts = run(exp, workdir, leftovers)
    assert len(plan) == 10 and facts["uac_workers"] >= 1
    holds = {p.call_id: p.talk_s for p in plan}
    for r in records:
        assert (r["outcome"], r["final_code"], r["rejected_by"]) == ("answered", 200, None)
        assert r["source_ip"] == "127.0.0.1" and r["turns"] == 0
        assert 20.0 <= r["setup_ms"] < 100.0  # the agent answers after 20 ms
        assert 0.0 < r["pdd_ms"] <= r["setup_ms"]
        assert r["invite_tx"] == 1
        assert r["duration_s"] == pytest.approx(holds[r["call_id"]], abs=0.05)
        expected_end = r["start_s"] + r["setup_ms"] / 1e3 + holds[r["call_id"]]
        assert r["end_s"] == pytest.approx(expected_end, abs=0.1)


def test_calls_beyond_the_channels_are_blocked(tmp_path: Path, leftovers: Leftovers) -> None:
    exp = experiment(6, 6.0, 3.0, channels=2)
    plan, records, _ = run(exp, tmp_path, leftovers)
    admitted = admitted_by_channels(plan, 2, 0.02)
    assert len(admitted) == 2
    for r in records:
        if r["call_id"] in admitted:
            assert (r["outcome"], r["final_code"]) == ("answered", 200)
        else:
            assert (r["outcome"], r["final_code"], r["rejected_by"]) == (
                "blocked", 503, "trunk.channels")
            assert math.isnan(r["setup_ms"]) and r["duration_s"] == 0.0
            assert r["end_s"] - r["start_s"] < 0.5


def test_cps_limit_rejects_the_excess(tmp_path: Path, leftovers: Leftovers) -> None:
    exp = experiment(8, 8.0, 0.5, cps_limit=2)
    plan, records, _ = run(exp, tmp_path, leftovers)
    by_outcome: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_outcome.setdefault(r["outcome"], []).append(r)
    assert set(by_outcome) == {"answered", "rejected"}
    # 8 calls within 1 s meet at most two 1 s windows of 2 admissions each
    assert 1 <= len(by_outcome["answered"]) <= 4
    assert all((r["final_code"], r["rejected_by"]) == (503, "trunk.cps_limit")
               for r in by_outcome["rejected"])
    assert by_outcome["answered"][0]["call_id"] == plan[0].call_id  # the first is admitted


def test_interrupted_run_leaves_no_processes(tmp_path: Path, leftovers: Leftovers) -> None:
    exp = experiment(8, 4.0, 1.0)
    plan = make_plan(exp)
    kept: list[dict[str, Any]] = []

    def on_record(record: dict[str, Any]) -> None:
        if len(kept) == 2:
            raise KeyboardInterrupt
        kept.append(dict(record))

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_calls(exp, plan, tmp_path, on_record)
    assert time.monotonic() - t0 < 20.0
    assert leftovers(tmp_path) == []
    assert [r["call_id"] for r in kept] == [plan[0].call_id, plan[1].call_id]
    assert all(r["outcome"] == "answered" and r["final_code"] == 200 for r in kept)
