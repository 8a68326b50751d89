"""A real voice run stopped early keeps every finished record, and leaves nothing running.

Each test starts ``siplab run --backend real`` as a subprocess in its own session, as a
user would, waits until a few calls have finished (their records are in the run's
journal), then either presses Ctrl-C (SIGINT to the run's process group) or SIGKILLs
one component of the system under test: a pjsua2 caller, a voice agent, Kamailio, or
the RTP relay. Then: the exit status, the stderr line, the records of the finished
calls in all three tables, the dead component's calls ``failed`` with the cause, and
no process of the run left alive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from real.agent import voice_agent_available
from tests.conftest import hear_ctrl_c
from tests.real.conftest import _missing, cmdline, descendants, still_running

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("real_stack"),
              pytest.mark.timeout(150)]
ROOT = Path(__file__).resolve().parents[2]
SIPLAB = Path(sys.executable).with_name("siplab")

# ~2.5 calls at once: one caller process, one voice agent; each call a turn, a MESSAGE,
# a turn (about 6 s); a call every 2 s for 12 s
EXPERIMENT = {
    "name": "stops", "seed": 7, "duration_s": 12, "warmup_s": 0,
    "load": {"arrivals": {"kind": "constant", "rate_cps": 0.5}},
    "scenarios": {"talk": {"caller_speech_s": 1.2, "agent_speech_s": 1.0,
                           "script": [{"turns": 1}, {"message": "where is my order"},
                                      {"turns": 1}]}},
    "deployment": {"agent": {"answer_ms": 50}, "ai": {"vad_ms": 300, "llm": {"ttft_ms": 300}}},
    "real": {"max_calls": 20, "max_duration_s": 60},
}


@pytest.fixture(autouse=True)
def voice_agent() -> None:
    if (missing := voice_agent_available()) is not None:
        _missing(missing)  # skips, or fails under CI


class Run:
    """``siplab run`` of :data:`EXPERIMENT` in its own session."""

    def __init__(self, tmp: Path) -> None:
        exp = tmp / "stops.yaml"
        exp.write_text(yaml.safe_dump(EXPERIMENT))
        self.out = tmp / "out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIPLAB_AGENT_LLM")}
        self.proc = subprocess.Popen(
            [str(SIPLAB), "run", str(exp), "--backend", "real", "--out", str(self.out),
             "--quiet"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True, preexec_fn=hear_ctrl_c)
        self.t0 = time.monotonic()

    def journalled(self, table: str) -> list[dict]:
        path = self.out / f"{table}.rep0.jsonl"
        if not path.exists():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]

    def wait_for_calls(self, n: int, timeout_s: float = 60.0) -> list[dict]:
        """The journalled calls once ``n`` have finished (the run still going)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            calls = self.journalled("calls")
            if len(calls) >= n:
                return calls
            assert self.proc.poll() is None, self.proc.communicate()
            time.sleep(0.05)
        raise AssertionError(f"fewer than {n} calls finished in {timeout_s} s")

    def processes(self) -> list[tuple[int, int]]:
        """``(pid, start time)`` of every process of the run."""
        return descendants(self.proc.pid)

    def find(self, needle: str) -> int:
        """The pid of the run's first child whose command line holds ``needle``."""
        children = [pid for pid, _ in descendants(self.proc.pid)
                    if _ppid(pid) == self.proc.pid]
        for pid in children:
            if needle in cmdline(pid):
                return pid
        raise AssertionError(f"no {needle} among {[cmdline(p) for p in children]}")

    def finish(self, timeout_s: float = 40.0) -> tuple[int, str]:
        _out, err = self.proc.communicate(timeout=timeout_s)
        return self.proc.returncode, err

    def tables(self) -> dict[str, pd.DataFrame]:
        return {t: pd.read_parquet(self.out / f"{t}.parquet") for t in ("calls", "turns",
                                                                         "steps")}

    def summary(self) -> dict:
        return json.loads((self.out / "summary.json").read_text())


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError):
        return -1


def assert_kept(before: list[dict], tables: dict[str, pd.DataFrame]) -> None:
    """Every call finished before the stop is in calls.parquet as it was journalled,
    with its two turns and its MESSAGE step -- which succeeded (the voice agent answers
    MESSAGE with 200), in a loopback time."""
    calls = tables["calls"].set_index("call_id")
    for rec in before:
        assert calls.loc[rec["call_id"], "outcome"] == rec["outcome"]
    done = [r["call_id"] for r in before if r["outcome"] == "answered"]
    assert done, before
    turns, steps = tables["turns"], tables["steps"]
    for cid in done:
        assert sorted(turns[turns.call_id == cid].turn) == [0, 1], turns
        assert steps[steps.call_id == cid].kind.tolist() == ["message"], steps
    assert (turns[turns.call_id.isin(done)].voice_to_voice_ms.notna()).all()
    kept = steps[steps.call_id.isin(done)]
    assert kept.ok.all(), kept  # a MESSAGE that got no 200 is recorded as not ok
    assert kept.duration_ms.between(0.0, 500.0).all(), kept  # MESSAGE -> 200 on loopback


def test_ctrl_c_keeps_the_finished_calls_turns_and_steps(tmp_path: Path) -> None:
    run = Run(tmp_path)
    before = run.wait_for_calls(2)
    procs = run.processes()
    os.killpg(run.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    t_int = time.monotonic()
    code, err = run.finish()
    print(f"stopped {time.monotonic() - t_int:.1f} s after Ctrl-C; stderr: {err!r}")
    assert code == 130, err
    assert run.summary()["status"] == "interrupted"
    assert_kept(before, run.tables())
    assert not list(run.out.glob("*.jsonl")), "journals left behind"
    assert still_running(procs) == []


KILLS = {  # the component, how to find it, the cause its calls get, its name on stderr
    "caller": ("loadgen.callers.worker", "real.uac_pool died", "caller uac0"),
    "voice-agent": ("real.voice_agent", "real.agent died", "voice agent agent0"),
    "kamailio": ("kamailio", "real.proxy died", "kamailio"),
    "relay": ("real.network", "real.network died", "the RTP relay"),
}


@pytest.mark.parametrize("component", sorted(KILLS))
def test_a_component_killed_mid_run_fails_its_calls_and_stops_the_run(
        component: str, tmp_path: Path) -> None:
    needle, cause, name = KILLS[component]
    run = Run(tmp_path)
    before = run.wait_for_calls(1)
    procs = run.processes()
    victim = run.find(needle)
    os.kill(victim, signal.SIGKILL)
    t_kill = time.monotonic()
    code, err = run.finish()
    took = time.monotonic() - t_kill
    print(f"{component}: run ended {took:.1f} s after the kill; stderr: {err!r}")
    assert code == 1, err
    said = [line for line in err.splitlines() if "died" in line]
    assert len(said) == 1 and f"{name} (" in said[0] and "SIGKILL" in said[0], err
    assert f"pid {victim})" in said[0]
    assert took < 20
    tables = run.tables()
    assert_kept(before, tables)
    calls = tables["calls"]
    failed = calls[calls.rejected_by == cause]
    assert len(failed) >= 1, calls[["call_id", "outcome", "rejected_by"]]
    assert (failed.outcome == "failed").all()
    kept_ids = {r["call_id"] for r in before}
    assert not kept_ids & set(failed.call_id)
    assert run.summary()["status"] == "interrupted"
    assert still_running(procs) == [], "processes of the run left behind"
