"""The twin backend: one replication of an experiment in simulated time.

It implements :class:`lab.backend.Backend` and is registered as ``twin`` in the
``siplab.backends`` entry-point group.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from lab.backend import Journal, Progress, Replication
from lab.errors import SpecError
from lab.memory import release
from lab.plan import CallPlan
from lab.records import CALL_SCHEMA, STEP_SCHEMA, TURN_SCHEMA
from lab.results import conform, timeseries
from lab.spec import Experiment
from twin.media import MediaPath
from twin.model import Twin


class TwinBackend:
    """The SimPy digital twin: any scale, simulated time, replications in parallel."""

    name = "twin"
    parallel = True

    def check(self, exp: Experiment, plans: Sequence[Sequence[CallPlan]], *,
              force: bool = False) -> None:
        """Refuse a media path the twin cannot rate (ptime not a multiple of the frame)."""
        try:
            MediaPath(exp.deployment.media, exp.deployment.network)
        except ValueError as exc:
            raise SpecError("deployment.media.ptime_ms", str(exc).split(": ", 1)[-1]) from exc

    def run(self, exp: Experiment, replication: int, plan: Sequence[CallPlan], *,
            progress: Progress | None = None, journal: Journal | None = None) -> Replication:
        """Simulate one replication.

        Ctrl-C stops the simulation; the calls finished so far are returned with
        ``interrupted`` set, so the runner can keep them.
        """
        return run_replication(exp, replication, plan, progress)


def run_replication(exp: Experiment, replication: int, plan: Sequence[CallPlan],
                    progress: Progress | None = None) -> Replication:
    """Simulate one replication of ``exp`` with the calls of ``plan``.

    Stopped by Ctrl-C or by an exception, it still returns the calls finished so far,
    with ``interrupted`` set (and, after an exception, ``facts["error"]`` naming it).
    """
    twin = Twin(exp, replication, plan)
    wall0 = time.perf_counter()
    interrupted, error = False, None
    try:
        twin.run(progress)
    except KeyboardInterrupt:
        interrupted = True
    except Exception as exc:  # a fault mid-run: keep what finished, say what broke
        interrupted, error = True, exc
    wall = time.perf_counter() - wall0
    if error is None:
        return _tables(exp, replication, twin, wall, interrupted)
    try:
        rep = _tables(exp, replication, twin, wall, interrupted)
    except Exception:
        raise error from None  # the state is past reading: the fault itself goes up
    rep.facts["error"] = f"{type(error).__name__}: {error}"
    return rep


def _tables(exp: Experiment, replication: int, twin: Twin, wall: float, interrupted: bool
            ) -> Replication:
    """The replication's records as tables (after a run, whole or cut short)."""
    # the event loop's freed memory back to the OS before the tables are built (it
    # makes no reference cycles -- a test checks -- so there is nothing to collect)
    release(collect=False)
    calls = twin.log.frame(by_call_id=True)
    calls["replication"] = np.full(len(calls), replication, dtype=np.int32)
    calls = conform(calls, CALL_SCHEMA)
    sim_s = float(twin.env.now)
    ts = timeseries(calls, sim_s, exp.deployment.trunk.channels)
    ts["proxy_utilization"] = twin.proxy_busy.array(len(ts)) / exp.deployment.proxy.workers
    turns = pd.DataFrame(twin.agent.frame_columns(), copy=False)
    turns["replication"] = replication
    steps = pd.DataFrame(twin.features.cols).assign(replication=replication)
    return Replication(
        calls=calls, turns=conform(turns, TURN_SCHEMA), steps=conform(steps, STEP_SCHEMA),
        timeseries=ts, usage=twin.agent.usage(),
        facts={"wall_s": wall, "sim_s": sim_s,
               "events": twin.env.events,
               "proxy_messages": twin.proxy.messages,
               "proxy_rejects": twin.proxy.rejects,  # 503s it generated (reject_cost)
               "proxy_absorbed": twin.proxy.absorbed,  # retransmissions it absorbed
               "overload_refused": twin.throttle.refused if twin.throttle else 0},
        interrupted=interrupted)
