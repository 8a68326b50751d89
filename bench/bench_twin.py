"""Twin speed and memory: whole ``siplab run``s of a busy hour, against bare SimPy.

Deployments of 1,000 and 10,000 concurrent calls (Poisson arrivals, 180 s mean hold,
signalling through an 8-worker proxy at 0.2 ms per message, 20 ms network, trunk with
head-room), one simulated hour each; the AI rows add 10 turns per call with every
provider capped at ~80 % busy, so requests queue. Each row is one ``siplab run`` --
plan, simulation, writing the results -- in its own process (its peak RSS is its own).

Absolute speed drifts with machine load, so a bare SimPy loop
with 10,000 live processes (each ``yield env.timeout(random)``) is measured in the same
run -- in fresh interpreters, three times just before and three times just after each
row, the median of those six being that row's yardstick (one run drifted 300-700k
events/s on a shared host) -- and each wall time is also given normalised to bare SimPy
at 210,000 events/s, the
rate the targets are stated at: the 10,000-concurrent signalling hour in <= 12 s and the
10,000-concurrent AI hour in <= 30 s with a peak RSS <= 600 MB.

Run: ``make bench`` (or ``python bench/bench_twin.py [--quick]``).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import simpy

HOLD_S = 180.0
YARDSTICK_EPS = 210_000.0  # bare SimPy events/s the targets are stated at
TARGETS = {("sig", 10000): (12.0, None), ("ai", 10000): (30.0, 600.0)}


def deployment(concurrent: int) -> dict[str, Any]:
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


def ai_deployment(concurrent: int) -> dict[str, Any]:
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


def run_case(kind: str, concurrent: int) -> dict[str, Any]:
    """One whole run (in this process): plan, simulate, write; its phases and counts."""
    import resource

    from lab.runner import prepare, run_experiment
    from lab.spec import validate

    exp = validate(ai_deployment(concurrent) if kind == "ai" else deployment(concurrent))
    t0 = time.perf_counter()
    prepare(exp, "twin", None, False)  # the plan alone, to report its share
    plan_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary_path = run_experiment(exp, out_dir=Path(tmp) / "run", show_progress=False)
        wall = time.perf_counter() - t0
        summary = json.loads(Path(summary_path).read_text())
    sim_s = summary["run"]["wall_s"]
    return {"calls": summary["calls"]["offered"],
            "turns": summary["voice_to_voice_ms"]["count"], "wall_s": wall, "plan_s": plan_s,
            "sim_s": sim_s, "events": summary["run"]["events"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bench_bare(live: int, events: int) -> dict[str, float]:
    """``live`` processes looping on random timeouts until ``events`` events ran."""
    env = simpy.Environment()
    rng = random.Random(1)
    per = max(1, events // live)

    def proc() -> Any:
        for _ in range(per):
            yield env.timeout(rng.expovariate(1.0))

    for _ in range(live):
        env.process(proc())
    t0 = time.perf_counter()
    env.run()
    wall = time.perf_counter() - t0
    done = live * (per + 1)
    return {"events": done, "wall_s": wall, "events_per_s": done / wall}


BARE_RUNS = 3  # yardstick runs before and after each row


def bare_rates(runs: int) -> list[float]:
    """Bare-SimPy events/s of ``runs`` yardstick runs, each in a fresh interpreter."""
    rates = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, __file__, "--bare"], capture_output=True,
                             text=True, check=True)
        rates.append(json.loads(out.stdout.strip().splitlines()[-1])["events_per_s"])
    return rates


CLI_COMMANDS = (["--help"], ["erlang-b", "--erlangs", "10", "--channels", "12"],
                ["erlang-c", "--erlangs", "10", "--agents", "12", "--mean-service-ms", "200"],
                ["emodel", "--codec", "pcmu", "--delay-ms", "50", "--loss", "0.01"])
CLI_TARGET_S = 0.3


def bench_cli(repeat: int = 5) -> bool:
    """Wall time of the quick commands, a fresh interpreter each (the median of ``repeat``)."""
    ok = True
    for argv in CLI_COMMANDS:
        walls = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "lab.cli", *argv], capture_output=True,
                           check=True)
            walls.append(time.perf_counter() - t0)
        wall = sorted(walls)[repeat // 2]
        met = wall <= CLI_TARGET_S
        ok &= met
        print(f"{'siplab ' + argv[0]:>22} {wall:>6.2f} s  <= {CLI_TARGET_S:g} s: "
              f"{'met' if met else 'MISSED'}")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the 1,000-call deployments")
    ap.add_argument("--case", nargs=2, metavar=("KIND", "CONCURRENT"), help=argparse.SUPPRESS)
    ap.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:  # a child: one run, its figures as JSON
        print(json.dumps(run_case(args.case[0], int(args.case[1]))))
        return
    if args.bare:  # a child: the yardstick alone, in a fresh interpreter like the cases
        print(json.dumps(bench_bare(10000, 1_000_000)))
        return
    print(f"bare SimPy, 10,000 live processes, in a fresh process: the median of "
          f"{BARE_RUNS} runs just before and {BARE_RUNS} just after each row (its own "
          f"yardstick; the machine's speed drifts); @210k s = wall x bare / 210,000")
    print(f"{'hour simulated':>22} {'calls':>8} {'turns':>10} {'plan s':>6} {'sim s':>6} "
          f"{'wall s':>7} {'bare k/s':>8} {'@210k s':>7} {'calls/s':>8} {'RSS MB':>7}  target")
    sizes = [1000] if args.quick else [1000, 10000]
    ok = True
    for kind in ("sig", "ai"):
        for size in sizes:
            before = bare_rates(BARE_RUNS)
            out = subprocess.run([sys.executable, __file__, "--case", kind, str(size)],
                                 capture_output=True, text=True, check=True)
            bare = statistics.median(before + bare_rates(BARE_RUNS))
            r = json.loads(out.stdout.strip().splitlines()[-1])
            norm = r["wall_s"] * bare / YARDSTICK_EPS
            target = TARGETS.get((kind, size))
            verdict = ""
            if target is not None:
                wall_t, rss_t = target
                met = norm <= wall_t and (rss_t is None or r["peak_rss_mb"] <= rss_t)
                ok &= met
                verdict = (f"<= {wall_t:g} s" + (f", <= {rss_t:g} MB" if rss_t else "")
                           + (": met" if met else ": MISSED"))
            label = f"{size:,} concurrent" + (", 10 AI turns" if kind == "ai" else "")
            print(f"{label:>22} {r['calls']:>8,} {r['turns']:>10,} {r['plan_s']:>6.1f} "
                  f"{r['sim_s']:>6.1f} {r['wall_s']:>7.1f} {bare / 1000:>8,.0f} {norm:>7.1f} "
                  f"{r['calls'] / r['wall_s']:>8,.0f} {r['peak_rss_mb']:>7,.0f}  {verdict}",
                  flush=True)
    ok &= bench_cli()
    print("targets met" if ok else "a target was missed")


if __name__ == "__main__":
    main()
