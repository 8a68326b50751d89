"""A pool of voice-agent processes on 127.0.0.1, and the records they log.

One :mod:`real.voice_agent` process carries at most 4 calls (the pjsua2-python
wheel's PJSUA_MAX_CALLS), so a deployment answering ``C`` concurrent calls runs
``ceil(C / 4)`` of them (:func:`pool_size`) behind Kamailio, whose dispatcher
spreads INVITEs over their ports and fails over on ``486 Busy Here`` (see
:mod:`real.kamailio`). The processes share the providers' concurrency slots
through flock files in one lock directory (:class:`real.stages.Slots`), so
``deployment.ai.stt.concurrency: 2`` caps the whole pool, as a provider would.

Usage (the real backend)::

    pool = AgentPool(exp.deployment, workdir, processes=pool_size(peak), seed=exp.seed,
                     deadline=time.monotonic() + span_s + 30)
    pool.start()                     # raises RuntimeError when a process does not come up
    Kamailio(exp.deployment, workdir, sip_port=..., agent_port=pool.ports[0],
             agent_ports=pool.ports).start()
    ...                              # calls carry X-Siplab-Plan (real.plan_header)
    pool.stop()                      # SIGTERM: each agent hangs up, logs "exit", ends
    turns = pool.records("turn")     # one dict per answered turn (voice_agent.TURN_KEYS)
"""

from __future__ import annotations

import contextlib
import json
import math
import select
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from lab.spec import Deployment, _plain
from real.process import ChildProcess

CALLS_PER_AGENT = 4
READY_TIMEOUT_S = 20.0


def pool_size(peak_calls: int) -> int:
    """Agent processes for ``peak_calls`` concurrent calls: ``ceil(peak / 4)``, at least 1."""
    return max(1, math.ceil(peak_calls / CALLS_PER_AGENT))


def voice_agent_available() -> str | None:
    """None when the voice agent can run here, else what is missing (how to install it)."""
    import importlib.util

    from real.tts import espeak_binary

    for module, pip in (("pjsua2", "pjsua2-python"), ("pocketsphinx", "pocketsphinx"),
                        ("webrtcvad", "webrtcvad-wheels")):
        if importlib.util.find_spec(module) is None:
            return f"{module} not importable: pip install {pip}"
    if espeak_binary() is None:
        return "espeak-ng not found: apt-get install espeak-ng"
    return None


class AgentPool:
    """``processes`` voice agents, each on its own free loopback port.

    Parameters
    ----------
    dep
        The deployment (``agent.answer_ms``, ``ai``).
    workdir
        Logs go here: ``agent<k>.jsonl`` (records) and ``agent<k>.log`` (pjsip, errors).
    processes
        How many agent processes (see :func:`pool_size`).
    seed
        Root seed; agent ``k`` draws vad/ttft/tokens from streams named
        ``real.agent.agent<k>.ai.*``.
    deadline
        ``time.monotonic()`` at which every agent ends by itself.
    """

    def __init__(self, dep: Deployment, workdir: Path, *, processes: int = 1, seed: int = 1,
                 deadline: float | None = None, python: str = sys.executable) -> None:
        self.dep = dep
        self.workdir = Path(workdir).resolve()
        self.n = max(1, int(processes))
        self.seed = seed
        self.deadline = deadline if deadline is not None else time.monotonic() + 3600.0
        self.python = python
        self.procs: list[ChildProcess] = []
        self.ports: list[int] = []
        self.log_paths: list[Path] = []

    def start(self) -> list[int]:
        """Start every process and wait for its ``ready`` line; returns their SIP ports."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        dep_path = self.workdir / "agent-deployment.yaml"
        dep_path.write_text(yaml.safe_dump(_plain(self.dep.model_dump(mode="python"))))
        lock_dir = self.workdir / "agent-slots"
        lock_dir.mkdir(exist_ok=True)
        for k in range(self.n):
            log_path = self.workdir / f"agent{k}.jsonl"
            argv = [self.python, "-m", "real.voice_agent", "--name", f"agent{k}",
                    "--port", "0", "--log", str(log_path), "--deployment", str(dep_path),
                    "--seed", str(self.seed), "--lock-dir", str(lock_dir),
                    "--deadline", repr(self.deadline), "--run", str(self.workdir)]
            self.procs.append(ChildProcess(argv, self.workdir / f"agent{k}.log", pipes=True,
                                           cwd=Path(__file__).resolve().parents[1]))
            self.log_paths.append(log_path)
        for k, proc in enumerate(self.procs):
            self.ports.append(self._ready(k, proc))
        return self.ports

    def _ready(self, k: int, proc: ChildProcess) -> int:
        assert proc.popen.stdout is not None
        fd = proc.popen.stdout.fileno()
        end = time.monotonic() + READY_TIMEOUT_S
        buf = b""
        while time.monotonic() < end and proc.alive():
            if select.select([fd], [], [], 0.1)[0]:
                import os

                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                buf += chunk
                if b"\n" in buf:
                    return int(json.loads(buf.split(b"\n", 1)[0])["port"])
        tail = proc.log_path.read_text(errors="replace").strip().splitlines()[-3:]
        self.stop()
        raise RuntimeError(f"voice agent {k} did not start: {' | '.join(tail)}")

    def alive(self) -> list[bool]:
        return [p.alive() for p in self.procs]

    def rss_mb(self) -> list[float]:
        return [round(p.rss_mb(), 1) for p in self.procs]

    def stop(self) -> None:
        """SIGTERM every agent (each hangs up and exits); SIGKILL after 5 s."""
        import os
        import signal

        for proc in self.procs:  # all at once: each takes a moment to hang up
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            proc.stop(grace_s=5.0)

    def records(self, ev: str | None = None) -> list[dict[str, Any]]:
        """Every record the agents logged (``ev`` filters: turn, prompt, message, ...)."""
        out: list[dict[str, Any]] = []
        for path in self.log_paths:
            if path.exists():
                out += read_records(path, ev)
        return out


def read_records(path: Path, ev: str | None = None) -> list[dict[str, Any]]:
    """The JSON-line records of one agent log (a torn last line is skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if ev is None or rec.get("ev") == ev:
            out.append(rec)
    return out
