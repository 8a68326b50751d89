"""An AI provider with ``concurrency`` c slots and exponential service is an M/M/c queue.

One turn per call, every delay before the LLM constant and the trunk ample: LLM
requests then arrive exactly as the calls do (Poisson, shifted by a constant), and with
``tokens: 0`` a request holds its slot for an exponential time to first token. Erlang C
gives the probability of waiting and the mean wait; Little's law ties the mean number
waiting, observed in the pool while the twin runs, to the request rate and the waits
the turn records report.

The Erlang C runs are sized by the precision they reach (:mod:`tests.theory.precision`):
replications of 200 000 turns, cut into batches thousands of service times long, are
added until the 99 % Student-t half-width of each estimate is within 1 % of Erlang C --
wait probability and mean wait alike, at 50 % and at 80 % load.

The mean wait of a heavily loaded queue varies slowly, and much of a batch's deviation
comes from its inputs: a batch that happened to get more requests or longer service
waits longer. Those inputs have exactly known expectations (the request rate and the
offered erlangs), so the estimates are corrected by them as control variates (Lavenberg
& Welch): at 80 % load this cuts the replications needed by about a third (some 40 of
200 000 turns). The inputs are checked against their known means in the same run, so a
wrong arrival rate or a wrong service draw cannot hide behind the correction; the
correction does not touch a pool that holds its slots longer than the service it
records. A service time 2 % too long moves the wait probability 2-5 % and the mean
wait 6-16 % in these cases; a recorded wait 5 % too long moves the mean wait 5 %.
"""

from __future__ import annotations

import numpy as np
import pytest

from lab.erlang import erlang_c, erlang_c_mean_wait
from lab.plan import make_plan
from tests.theory.precision import (
    BATCHES,
    LlmQueue,
    batch_means,
    batch_sums,
    estimates,
    run_until_precise,
)

SERVICE_S = 2.0
#: Control variates of the waits: inputs whose expectations are known exactly.
CONTROLS = ("arrivals", "work")


#: The inputs' intervals need not be as tight as the waits' (they are far tighter anyway).
INPUT_TARGET = 0.05
#: How far the inputs' means may be from their known values: ten times their sampling
#: standard deviation in these runs (about 0.05 %), a quarter of a 2 % input fault.
INPUT_TOLERANCE = 0.005


@pytest.mark.slow
@pytest.mark.parametrize(("agents", "erlangs"), [
    (1, 0.5),   # one slot at 50 %: C = 0.5, W = 2 s
    (2, 1.0),   # two slots at 50 %: C = 0.33, W = 0.67 s
    (4, 3.2),   # four slots at 80 %, heavy: C = 0.60, W = 1.5 s
])
def test_llm_pool_matches_erlang_c(agents: int, erlangs: float) -> None:
    """Wait probability and mean wait each within a 99 % interval at most 1 % of Erlang
    C wide (half-width), corrected by the batches' arrivals and offered work as control
    variates; and the inputs themselves within 0.5 % of their known means (so the
    control variates cannot hide a wrong arrival rate or service time)."""
    queue = LlmQueue(agents, erlangs, SERVICE_S)
    analytic = {"p_wait": erlang_c(agents, erlangs),
                "wait_s": erlang_c_mean_wait(agents, erlangs, SERVICE_S),
                "arrivals": queue.rate, "work": erlangs}
    est = run_until_precise(queue, analytic,
                            targets={"arrivals": INPUT_TARGET, "work": INPUT_TARGET},
                            controls={"p_wait": CONTROLS, "wait_s": CONTROLS},
                            max_replications=120)
    for e in est.values():
        print(e)
    for e in est.values():
        assert e.precise, str(e)
    for name in CONTROLS:  # the inputs: a tolerance, not a second 99 % test per case
        assert abs(est[name].mean / est[name].analytic - 1.0) <= INPUT_TOLERANCE, str(
            est[name])
    for name in ("p_wait", "wait_s"):
        assert est[name].covers, str(est[name])


def test_littles_law_per_stage() -> None:
    """L_q = λ W_q with L_q and W_q from independent sources.

    L_q is the LLM pool's own count of requests waiting for a slot, sampled while the
    twin runs by a timeout-only process at Poisson epochs of its own random stream
    (PASTA: the samples see the time average). λ W_q comes from the turn records: the
    waits they report for the requests arriving in each batch, over the batch's length.
    Per batch the ratio L_q / (λ W_q) must be 1; its 99 % interval must hold 1 and be
    at most ±1 % wide, so a recorded wait 5 % off (or a pool whose queue is not the one
    the records describe) fails it.

    A rate limit no run reaches makes each conversation a process that books its
    requests when they arrive (:meth:`twin.ai.Pipeline._converse`), so the pool holds at
    every moment exactly the requests that have arrived by then. Last, the pool's own
    busy slot-seconds must be the service the records say it gave.
    """
    from twin.environment import Proc
    from twin.model import Twin

    agents, erlangs = 4, 3.2
    queue = LlmQueue(agents, erlangs, SERVICE_S, turns=64_000, warmup_s=500.0,
                     extra={"rate_limit_rpm": 1e12})
    exp = queue.experiment()
    twin = Twin(exp, 0, make_plan(exp, 0))
    assert twin.agent.lanes is None  # booked in real time, not a window ahead
    stage = twin.agent.stages["llm"]
    assert stage.pool is not None and stage.limit is not None
    pool = stage.pool
    pool.track_backlog = True  # before the first booking: every wait is in the backlog
    horizon = exp.duration_s
    rng = np.random.default_rng(99)  # the sampler's own stream
    at: list[float] = []
    waiting: list[int] = []

    def sampler() -> Proc:  # a timeout-only process: yields the delay to its next look
        while True:
            now = yield float(rng.exponential(0.05))
            if now >= horizon:
                return
            at.append(now)
            waiting.append(pool.backlog(now))

    twin.env.start(sampler())
    twin.run(None)
    assert stage.limit.refused == 0
    turns = twin.agent.frame_columns()
    asked = turns["start_s"] + LlmQueue.TO_LLM_S
    wait_s = turns["llm_wait_ms"] / 1000.0
    batches = 2 * BATCHES
    lq = batch_means(np.asarray(at), np.asarray(waiting, dtype=float), exp.warmup_s, horizon,
                     batches)
    # λ W_q per batch: the waits of the requests arriving in it over its length
    waited, _ = batch_sums(asked, wait_s, exp.warmup_s, horizon, batches)
    lam_w = waited / ((horizon - exp.warmup_s) / batches)
    ratio = estimates({"L/λW": 1.0}, {"L/λW": [lq / lam_w]}, 1)["L/λW"]
    print(ratio)
    assert len(waiting) > 500_000 and max(waiting) > agents
    assert float(np.mean(lq)) > 1.0  # a real queue: Erlang C says 2.4 requests waiting
    assert ratio.precise, str(ratio)
    assert ratio.covers, str(ratio)
    # the pool's own busy slot-seconds after the warm-up are the service the records say
    # it gave from then on: each request from its recorded start to its end (a pool that
    # holds a slot longer than the recorded service fails this)
    start = asked + wait_s
    finish = start + turns["llm_ms"] / 1000.0
    served = np.maximum(finish - np.maximum(start, exp.warmup_s), 0.0).sum()
    assert pool.busy_s == pytest.approx(served, rel=1e-9)
