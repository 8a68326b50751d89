"""An AI provider with ``concurrency`` c slots and exponential service is an M/M/c queue.

One turn per call, every delay before the LLM constant and the trunk ample: LLM
requests then arrive exactly as the calls do (Poisson, shifted by a constant),
and with ``tokens: 0`` a request holds its slot for an exponential time to first
token. Erlang C gives the probability of waiting and the mean wait; Little's law
ties the mean number waiting to the arrival rate and the mean wait.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lab.erlang import erlang_c, erlang_c_mean_wait
from lab.plan import make_plan
from tests.conftest import experiment
from twin.backend import run_replication

REPLICATIONS = 8


def llm_queue(agents: int, erlangs: float, service_ms: float, duration_s: float) -> list[dict]:
    rate = erlangs / (service_ms / 1000.0)
    exp = experiment(
        seed=5, duration_s=duration_s, warmup_s=100, replications=REPLICATIONS,
        load={"arrivals": {"kind": "poisson", "rate_cps": rate}},
        scenarios={"talk": {"turns": 1, "caller_speech_s": 2.0, "agent_speech_s": 3.0}},
        deployment={"trunk": {"channels": 100000},
                    "ai": {"vad_ms": 300, "stt": {"latency_ms": 150},
                           "llm": {"ttft_ms": {"dist": "exponential", "mean": service_ms},
                                   "tokens": 0, "concurrency": agents},
                           "tts": {"ttfb_ms": 120}}},
    )
    out = []
    for rep in range(REPLICATIONS):
        res = run_replication(exp, rep, make_plan(exp, rep))
        turns = res.turns
        turns = turns[turns.start_s >= 100]
        out.append({"p_wait": float((turns.llm_wait_ms > 0).mean()),
                    "wait_s": float(turns.llm_wait_ms.mean() / 1000),
                    "horizon_s": res.facts["sim_s"], "ai": res.usage, "turns": turns})
    return out


def ci99(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values)
    half = stats.t.ppf(0.995, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return float(v.mean() - half), float(v.mean() + half)


@pytest.mark.parametrize(("agents", "erlangs"), [(1, 0.6), (4, 3.0), (10, 8.0)])
def test_llm_pool_matches_erlang_c(agents: int, erlangs: float) -> None:
    service_ms = 2000.0
    reps = llm_queue(agents, erlangs, service_ms, duration_s=6000)
    lo, hi = ci99([r["p_wait"] for r in reps])
    assert lo <= erlang_c(agents, erlangs) <= hi
    lo, hi = ci99([r["wait_s"] for r in reps])
    assert lo <= erlang_c_mean_wait(agents, erlangs, service_ms / 1000) <= hi
    # utilisation of the slots = offered load per slot
    util = [r["ai"]["llm"]["busy_s"] / (agents * (r["horizon_s"] - 100)) for r in reps]
    assert np.mean(util) == pytest.approx(erlangs / agents, rel=0.05)


def test_littles_law_per_stage() -> None:
    """Mean number waiting for an LLM slot = request rate × mean wait (L_q = λ W_q)."""
    from lab.series import occupancy_per_second

    rep = llm_queue(4, 3.2, 2000.0, duration_s=6000)[0]
    t = rep["turns"]
    # speech end → LLM request: packetisation 20 ms + VAD 300 ms + STT 150 ms (all constant)
    arrive = t.start_s.to_numpy() + 0.47
    wait = t.llm_wait_ms.to_numpy() / 1000
    lo, hi = int(np.ceil(arrive.min())), int(arrive.max())
    waiting = occupancy_per_second(arrive, arrive + wait, hi + 600)[lo:hi]
    lam = ((arrive >= lo) & (arrive < hi)).sum() / (hi - lo)
    assert waiting.mean() == pytest.approx(lam * wait.mean(), rel=0.05)
