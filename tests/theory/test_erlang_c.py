"""An AI provider with ``concurrency`` c slots and exponential service is an M/M/c queue.

One turn per call, every delay before the LLM constant and the trunk ample: LLM
requests then arrive exactly as the calls do (Poisson, shifted by a constant), and with
``tokens: 0`` a request holds its slot for an exponential time to first token. Erlang C
gives the probability of waiting and the mean wait; Little's law ties the mean number
waiting, observed in the pool while the twin runs, to the request rate and the waits
the turn records report.

The Erlang C runs are sized by the precision they reach (:mod:`tests.theory.precision`):
replications of 200 000 turns, cut into batches thousands of service times long, are
added until the 99 % Student-t half-width of each estimate is within its target. The
wait probability's target is 1 % of Erlang C everywhere, the mean wait's 1 % up to 50 %
load. The mean wait of a heavily loaded queue is autocorrelated over many requests: at
75-80 % load 1 % would take 10-50 million turns (3-17 minutes of twin on two cores), so
there its target is 5 %. A service time 2 % too long moves the wait probability 2-5 % and
the mean wait 6-16 % in these cases; a recorded wait 5 % too long moves the mean wait 5 %.
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


@pytest.mark.slow
@pytest.mark.parametrize(("agents", "erlangs", "wait_target"), [
    (1, 0.5, 0.01),   # one slot at 50 %: C = 0.5, W = 2 s
    (2, 1.0, 0.01),   # two slots at 50 %: C = 0.33, W = 0.67 s
    (4, 3.2, 0.05),   # four slots at 80 %, heavy: C = 0.60, W = 1.5 s
])
def test_llm_pool_matches_erlang_c(agents: int, erlangs: float, wait_target: float) -> None:
    """Wait probability within a 99 % interval at most 1 % of Erlang C wide (half-width),
    and the mean wait within one at most ``wait_target`` of Erlang C's mean wait."""
    analytic = {"p_wait": erlang_c(agents, erlangs),
                "wait_s": erlang_c_mean_wait(agents, erlangs, SERVICE_S)}
    est = run_until_precise(LlmQueue(agents, erlangs, SERVICE_S), analytic,
                            targets={"wait_s": wait_target}, max_replications=40)
    for e in est.values():
        print(e)
    for e in est.values():
        assert e.precise, str(e)
        assert e.covers, str(e)


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
