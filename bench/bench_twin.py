"""Twin speed: simulated calls and events per wall second, against bare SimPy.

Deployments of 1,000 and 10,000 concurrent calls (Poisson arrivals, 180 s mean
hold, signaling through an 8-worker proxy at 0.2 ms per message, 20 ms network,
trunk with head-room), one simulated hour each, one core. Beside each, a bare
SimPy loop with as many live processes (each ``yield env.timeout(random)``)
measured in the same run, since absolute speed drifts with machine load
(../shared/PERF-NOTES.md): quote the ratio.

Run: ``make bench`` (or ``python bench/bench_twin.py [--quick]``).
"""

from __future__ import annotations

import argparse
import random
import resource
import time

import simpy

from lab.plan import make_plan
from lab.spec import validate
from twin.backend import run_replication

HOLD_S = 180.0


def deployment(concurrent: int) -> dict:
    rate = concurrent / HOLD_S
    return {
        "name": f"bench-{concurrent}", "seed": 1, "duration_s": 3600, "warmup_s": 0,
        "load": {"arrivals": {"kind": "poisson", "rate_cps": rate}},
        "scenarios": {"talk": {"hold_s": {"dist": "exponential", "mean": HOLD_S}}},
        "deployment": {
            "network": {"delay_ms": 20, "jitter_ms": 2, "loss": 0.0},
            "trunk": {"channels": int(concurrent * 1.5)},
            "proxy": {"workers": 8, "service_ms": 0.2},
        },
    }


def ai_deployment(concurrent: int) -> dict:
    """10 AI turns per call (~185 s); provider slots sized for ~80 % busy, so they queue."""
    exp = deployment(concurrent)
    turns_per_s = concurrent / 185.0 * 10
    exp["name"] = f"bench-ai-{concurrent}"
    exp["scenarios"] = {"talk": {
        "turns": 10,
        "caller_speech_s": {"dist": "lognormal", "median": 6, "p95": 15},
        "agent_speech_s": {"dist": "lognormal", "median": 9, "p95": 20},
    }}
    exp["deployment"]["ai"] = {
        "vad_ms": 300,
        "stt": {"latency_ms": {"dist": "lognormal", "median": 150, "p95": 300},
                "concurrency": max(1, round(turns_per_s * 0.15 / 0.8))},
        "llm": {"ttft_ms": {"dist": "lognormal", "median": 350, "p95": 900}, "tokens": 60,
                "tokens_per_s": 80, "concurrency": max(1, round(turns_per_s * 1.15 / 0.8))},
        "tts": {"ttfb_ms": {"dist": "lognormal", "median": 120, "p95": 250},
                "concurrency": max(1, round(turns_per_s * 0.13 / 0.8))},
    }
    return exp


def bench_twin(concurrent: int, ai: bool = False) -> dict:
    exp = validate(ai_deployment(concurrent) if ai else deployment(concurrent))
    t0 = time.perf_counter()
    plan = make_plan(exp)
    plan_s = time.perf_counter() - t0
    res = run_replication(exp, 0, plan)
    wall = res.facts["wall_s"]
    n = len(res["calls"])
    return {"calls": n, "turns": len(res.turns), "plan_s": plan_s, "wall_s": wall,
            "calls_per_s": n / wall,
            "events": res.facts["events"], "events_per_s": res.facts["events"] / wall,
            "events_per_call": res.facts["events"] / n}


def bench_bare(live: int, events: int) -> dict:
    """``live`` processes looping on random timeouts until ``events`` events ran."""
    env = simpy.Environment()
    rng = random.Random(1)
    per = max(1, events // live)

    def proc():
        for _ in range(per):
            yield env.timeout(rng.expovariate(1.0))

    for _ in range(live):
        env.process(proc())
    t0 = time.perf_counter()
    env.run()
    wall = time.perf_counter() - t0
    done = live * (per + 1)
    return {"events": done, "wall_s": wall, "events_per_s": done / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the 1,000-call deployment")
    args = ap.parse_args()
    sizes = [1000] if args.quick else [1000, 10000]
    print(f"{'deployment':>12} {'calls':>8} {'plan s':>6} {'wall s':>7} {'calls/s':>8} "
          f"{'events/s':>9} {'ev/call':>7} | {'bare ev/s':>9} {'twin/bare':>9}")
    cases = [(size, ai) for ai in (False, True) for size in sizes]
    for size, ai in cases:
        twin = bench_twin(size, ai)
        bare = bench_bare(size, twin["events"])
        label = f"{size:>6,} cc{' +AI' if ai else '    '}"
        print(f"{label:>12} {twin['calls']:>8,} {twin['plan_s']:>6.1f} {twin['wall_s']:>7.1f} "
              f"{twin['calls_per_s']:>8,.0f} {twin['events_per_s']:>9,.0f} "
              f"{twin['events_per_call']:>7.1f} | {bare['events_per_s']:>9,.0f} "
              f"{twin['events_per_s'] / bare['events_per_s']:>9.2f}", flush=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mb:,.0f} MB; targets: the 10,000-concurrent hour in < 60 s wall "
          "(signalling only) and < 120 s with 10 AI turns per call (+AI rows)")


if __name__ == "__main__":
    main()
