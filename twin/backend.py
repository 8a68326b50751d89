"""The twin backend: one replication of an experiment in simulated time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from lab.plan import CallPlan
from lab.results import timeseries
from lab.spec import Experiment
from twin.ai import turns_frame
from twin.model import Twin


def run_replication(exp: Experiment, replication: int, plan: list[CallPlan],
                    progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Simulate one replication; return its call table, time series and run facts.

    Ctrl-C stops the simulation; the calls finished so far are returned with
    ``interrupted`` set, so the caller can keep them.
    """
    twin = Twin(exp, replication)
    wall0 = time.perf_counter()
    interrupted = False
    try:
        twin.run(plan, progress)
    except KeyboardInterrupt:
        interrupted = True
    wall = time.perf_counter() - wall0
    calls = pd.DataFrame(twin.log.cols).sort_values("call_id", kind="stable")
    calls = calls.reset_index(drop=True)
    sim_s = float(twin.env.now)
    ts = timeseries(calls, sim_s, exp.deployment.trunk.channels)
    ts["proxy_utilization"] = twin.proxy_busy.array(len(ts)) / exp.deployment.proxy.workers
    return {
        "calls": calls,
        "turns": turns_frame(twin.agent.rows),
        "ai": twin.agent.usage(),
        "steps": pd.DataFrame(twin.features.cols),
        "timeseries": ts,
        "run": {"wall_s": wall, "sim_s": sim_s,
                "events": next(twin.env._eid),  # events scheduled (SimPy's event counter)
                "proxy_messages": twin.proxy.messages},
        "interrupted": interrupted,
    }
