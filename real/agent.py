"""The answering agents: a SIPp UAS for signalling load, a pool of voice agents otherwise.

The real counterpart of the twin's agent layer. :func:`agent_kind` picks one per
experiment:

- **SIPp** (:class:`SippAgent`, ``loadgen/scenarios/uas_agent.xml``): for each
  INVITE it sends ``100 Trying`` and ``180 Ringing`` at once, waits
  ``deployment.agent.answer_ms`` (SIPp's default pause, ``-d``; SIPp's scheduler adds
  ~3-5 ms to a pause, measured) and answers ``200 OK`` with a PCMU SDP answer
  (RFC 3264), copying the Record-Route set so the caller's ACK and BYE come back
  through the proxy (RFC 3261 section 12.1.1). It then waits for the caller's BYE
  and confirms it with ``200 OK``: the caller, not the agent, decides the talk
  time. With ``-rtp_echo`` it sends the caller's RTP back, so every call has audio
  flowing to the caller's ear. SIPp carries thousands of calls per second.
- **Voice agents** (:class:`VoiceAgentPool` of :mod:`real.voice_agent` processes):
  whenever a scenario has AI turns or feature steps (DTMF, MESSAGE, hold,
  transfer) -- the parts SIPp cannot play. One process carries at most 4 calls
  (the pjsua2-python wheel's PJSUA_MAX_CALLS), so a deployment answering ``C``
  concurrent calls runs ``ceil(C / 4)`` of them (:func:`agent_processes`) behind
  Kamailio's dispatcher, which fails over on ``486 Busy Here`` (:mod:`real.proxy`).
  The processes share the providers' concurrency slots through flock files in one
  lock directory (:class:`real.ai.Slots`), so ``deployment.ai.stt.concurrency: 2``
  caps the whole pool, as a provider would. Each logs its records (``call``,
  ``turn``, ``prompt``, ``message``, ``refer``, ...) as JSON lines
  (:func:`read_records`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from lab.proc.child import ChildProcess
from lab.proc.lines import ChildChannel, read_file
from lab.proc.ports import free_udp_port
from lab.spec import Agent as AgentSpec
from lab.spec import Deployment, Experiment, TalkStep, TurnsStep, _plain
from lab.speech import espeak_binary
from loadgen.sipp import SCENARIOS, SippProcess

UAS_SCENARIO = SCENARIOS / "uas_agent.xml"
CALLS_PER_AGENT = 4
READY_TIMEOUT_S = 20.0


def agent_kind(exp: Experiment) -> str:
    """``"sipp"`` or ``"voice"``: the agent the real backend runs for ``exp``.

    ``deployment.agent.kind`` decides unless it is ``auto``; then the voice agent
    answers whenever a scenario has AI turns or feature steps, and SIPp answers pure
    signalling load.
    """
    kind = exp.deployment.agent.kind
    if kind != "auto":
        return kind
    for sc in exp.scenarios.values():
        if not isinstance(sc.turns, int) or sc.turns > 0:
            return "voice"
        for step in sc.script or []:
            if not isinstance(step, TalkStep) and not (
                    isinstance(step, TurnsStep) and step.turns == 0):
                return "voice"
    return "sipp"


def scenario_file(spec: AgentSpec, workdir: Path) -> Path:
    """The UAS scenario for ``spec``: as shipped, or without its pause when answering at once.

    SIPp wakes paused calls on its scheduler tick, so even a 0 ms ``<pause/>`` costs
    ~3-5 ms; with ``answer_ms = 0`` the 200 OK follows the 180 directly instead.
    """
    if spec.answer_ms > 0:
        return UAS_SCENARIO
    path = workdir / "uas_agent_nopause.xml"
    path.write_text(UAS_SCENARIO.read_text().replace("  <pause/>\n", ""))
    return path


class SippAgent:
    """A SIPp UAS on 127.0.0.1 playing ``uas_agent.xml``.

    Parameters
    ----------
    spec
        ``deployment.agent`` (``answer_ms``).
    workdir
        Where SIPp's log and statistics go (``<name>_stat.csv``).
    sip_port, control_port, media_port
        Free ports for ``-p``, ``-cp`` and ``-mp``.
    timeout_s
        SIPp exits by itself after this long.
    name
        Names its log and statistics files (``human`` for a transfer target).
    rtp_echo
        Echo the caller's RTP (and RTCP, on the media port + 2).
    """

    def __init__(self, spec: AgentSpec, workdir: Path, *, sip_port: int, control_port: int,
                 media_port: int, timeout_s: float, name: str = "agent",
                 rtp_echo: bool = False) -> None:
        self.spec = spec
        self.sip_port = sip_port
        extra = ["-d", str(max(0, round(spec.answer_ms))), "-timer_resol", "1"]
        self.sipp = SippProcess(
            scenario_file(spec, workdir), workdir, name, local_port=sip_port,
            control_port=control_port, media_port=media_port, timeout_s=timeout_s,
            extra_args=[*extra, "-rtp_echo"] if rtp_echo else extra,
        )

    @classmethod
    def on_free_ports(cls, spec: AgentSpec, workdir: Path, taken: set[int], *,
                      timeout_s: float, name: str) -> SippAgent:
        """An echoing agent on loopback ports that are free now and not in ``taken``
        (which gains them: SIP, control, and the media port with its RTCP and echo ports)."""
        sip_port = free_udp_port(avoid=taken)
        taken.add(sip_port)
        control_port = free_udp_port(avoid=taken)
        taken.add(control_port)
        media_port = free_udp_port(avoid=taken | {control_port + 1})
        taken |= {media_port, media_port + 1, media_port + 2, media_port + 3}
        return cls(spec, workdir, sip_port=sip_port, control_port=control_port,
                   media_port=media_port, timeout_s=timeout_s, name=name, rtp_echo=True)

    def start(self) -> None:
        """Start SIPp and check that it is still up a moment later (ports free, XML valid)."""
        self.sipp.start()
        assert self.sipp.proc is not None
        if self.sipp.proc.wait(0.3):
            tail = self.sipp.proc.log_tail()
            self.sipp.stop()
            raise RuntimeError(f"SIPp agent exited at start on port {self.sip_port}: {tail}")

    def alive(self) -> bool:
        return self.sipp.alive()

    @property
    def pid(self) -> int | None:
        return self.sipp.pid

    def stop(self) -> dict[str, str]:
        """Stop SIPp; returns its last cumulative statistics row (may be empty)."""
        self.sipp.stop()
        return self.sipp.last_stats()


def agent_processes(peak_calls: int) -> int:
    """Voice-agent processes for ``peak_calls`` concurrent calls: ``ceil(peak / 4)``, >= 1."""
    return max(1, math.ceil(peak_calls / CALLS_PER_AGENT))


def voice_agent_available() -> str | None:
    """None when the voice agent can run here, else what is missing (how to install it)."""
    for module, pip in (("pjsua2", "pjsua2-python"), ("pocketsphinx", "pocketsphinx"),
                        ("webrtcvad", "webrtcvad-wheels")):
        if importlib.util.find_spec(module) is None:
            return f"{module} not importable: pip install {pip}"
    if espeak_binary() is None:
        return "espeak-ng not found: apt-get install espeak-ng"
    return None


class VoiceAgentPool:
    """``processes`` voice agents, each on its own free loopback port.

    Parameters
    ----------
    dep
        The deployment (``agent.answer_ms``, ``ai``).
    workdir
        Logs go here: ``agent<k>.jsonl`` (records) and ``agent<k>.log`` (pjsip, errors).
    processes
        How many agent processes (see :func:`agent_processes`).
    seed
        Root seed; agent ``k`` draws vad/ttft/tokens from streams named
        ``real.agent.agent<k>.ai.*``.
    deadline
        ``time.monotonic()`` at which every agent ends by itself.
    secrets
        Environment variables only the agents may see (the LLM endpoint's key,
        :mod:`real.credentials`), added to the environment they inherit.
    """

    def __init__(self, dep: Deployment, workdir: Path, *, processes: int = 1, seed: int = 1,
                 deadline: float | None = None, python: str = sys.executable,
                 secrets: dict[str, str] | None = None) -> None:
        self.dep = dep
        self.workdir = Path(workdir).resolve()
        self.n = max(1, int(processes))
        self.seed = seed
        self.deadline = deadline if deadline is not None else time.monotonic() + 3600.0
        self.python = python
        self.secrets = dict(secrets or {})
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
                                           cwd=Path(__file__).resolve().parents[1],
                                           env={**os.environ, **self.secrets}))
            self.log_paths.append(log_path)
        for k, proc in enumerate(self.procs):
            self.ports.append(self._ready(k, proc))
        return self.ports

    def _ready(self, k: int, proc: ChildProcess) -> int:
        ev = ChildChannel(proc).wait(lambda e: e.get("ev") == "ready", READY_TIMEOUT_S)
        if ev is not None:
            return int(ev["port"])
        tail = proc.log_tail()
        self.stop()
        raise RuntimeError(f"voice agent {k} did not start: {tail}")

    def alive(self) -> list[bool]:
        return [p.alive() for p in self.procs]

    def rss_mb(self) -> list[float]:
        return [round(p.rss_mb(), 1) for p in self.procs]

    def stop(self) -> None:
        """SIGTERM every agent (each hangs up and exits); SIGKILL after 5 s."""
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
    """The records of one agent log (``ev`` filters; a torn last line is skipped)."""
    return [rec for rec in read_file(path) if ev is None or rec.get("ev") == ev]
