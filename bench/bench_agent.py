"""Voice-agent capacity on this machine: concurrent conversations before v2v p95 doubles.

Ramps 1, 2, 4, 8, ... concurrent calls, each a run of back-to-back turns (the
caller speaks, waits for the reply to finish, speaks again), against a pool of
real voice agents (``ceil(n / 4)`` processes; STT, TTS and VAD really run on this
machine's cores, the LLM is an emulated 200 ms time to first token). Each level
prints the caller-measured voice-to-voice p50/p95 and the agent's STT/TTS times;
the ramp stops when p95 exceeds twice the one-call p95, or at the cap.

Run: ``.venv/bin/python bench/bench_agent.py [--max-calls 16] [--turns 3]``
(bounded: ~2-3 minutes).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.spec import Deployment  # noqa: E402
from real.agent import CALLS_PER_AGENT, VoiceAgentPool, voice_agent_available  # noqa: E402

TURN = ["turn", 2000, 1500]
TTFT_MS = 200


def run_level(n: int, turns: int, workdir: Path) -> dict[str, float]:
    """``n`` concurrent calls of ``turns`` turns; percentiles of v2v and stage times."""
    dep = Deployment.model_validate({"ai": {"vad_ms": 300,
                                            "llm": {"ttft_ms": TTFT_MS, "tokens": 0}}})
    agents = math.ceil(n / CALLS_PER_AGENT)
    budget_s = 10.0 + turns * 8.0
    pool = VoiceAgentPool(dep, workdir, processes=agents, seed=n,
                     deadline=time.monotonic() + budget_s + 30)
    procs = []
    try:
        ports = pool.start()
        for k, port in enumerate(ports):
            ids = range(k * CALLS_PER_AGENT, min(n, (k + 1) * CALLS_PER_AGENT))
            calls = [{"id": i, "start_s": 2.0 * i / n, "steps": [TURN] * turns} for i in ids]
            script = workdir / f"probe{k}.json"
            script.write_text(json.dumps({"target": f"sip:agent@127.0.0.1:{port}",
                                          "deadline_s": budget_s, "calls": calls}))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "real.agent_probe", "--script", str(script),
                 "--out", str(workdir / f"probe{k}.jsonl"), "--run", str(workdir)],
                cwd=ROOT, stderr=subprocess.DEVNULL))
        for p in procs:
            p.wait(timeout=budget_s + 30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        pool.stop()
    v2v = [e["v2v_ms"] for k in range(len(procs))
           for line in (workdir / f"probe{k}.jsonl").read_text().splitlines()
           for e in json.loads(line)["events"] if e.get("v2v_ms") is not None]
    recs = pool.records("turn")

    def pct(xs: list[float], q: float) -> float:
        return float(np.percentile(xs, q)) if xs else float("nan")

    return {
        "calls": n, "agents": agents, "turns": len(v2v),
        "v2v_p50": pct(v2v, 50), "v2v_p95": pct(v2v, 95),
        "stt_p50": pct([r["stt_ms"] for r in recs], 50),
        "stt_p95": pct([r["stt_ms"] for r in recs], 95),
        "tts_p50": pct([r["tts_ms"] for r in recs], 50),
        "tts_p95": pct([r["tts_ms"] for r in recs], 95),
        "agent_p95": pct([r["agent_ms"] for r in recs], 95),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-calls", type=int, default=16)
    ap.add_argument("--turns", type=int, default=3)
    args = ap.parse_args()
    missing = voice_agent_available()
    if missing:
        print(f"bench_agent: skipped ({missing})")
        return 0
    print(f"voice agent capacity (vad 300 ms, ttft {TTFT_MS} ms emulated, caller 2.0 s, "
          f"reply 1.5 s, {args.turns} turns per call)")
    print(f"{'calls':>5} {'agents':>6} {'turns':>5} {'v2v p50':>8} {'v2v p95':>8} "
          f"{'stt p50':>8} {'stt p95':>8} {'tts p50':>8} {'tts p95':>8} {'agent p95':>9}")
    base = None
    n = 1
    capacity = None
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="siplab-bench-agent-") as tmp:
        while n <= args.max_calls:
            workdir = Path(tmp) / f"n{n}"
            r = run_level(n, args.turns, workdir)
            print(f"{r['calls']:>5} {r['agents']:>6} {r['turns']:>5} {r['v2v_p50']:>8.0f} "
                  f"{r['v2v_p95']:>8.0f} {r['stt_p50']:>8.0f} {r['stt_p95']:>8.0f} "
                  f"{r['tts_p50']:>8.0f} {r['tts_p95']:>8.0f} {r['agent_p95']:>9.0f}",
                  flush=True)
            base = r["v2v_p95"] if base is None else base
            if r["turns"] < n * args.turns * 0.8 or r["v2v_p95"] > 2 * base:
                break
            capacity = n
            n *= 2
    print(f"capacity: {capacity} concurrent conversations before v2v p95 > 2 x "
          f"{base:.0f} ms (1-call p95); wall {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
