"""The answering agent: SIPp as the user agent server behind the proxy.

It is the real counterpart of the twin's agent layer for call signalling: for each
INVITE it sends ``100 Trying`` and ``180 Ringing`` at once, waits
``deployment.agent.answer_ms`` (SIPp's default pause, ``-d``; SIPp's scheduler adds
~3-5 ms to a pause, measured) and answers
``200 OK`` with a PCMU SDP answer (RFC 3264), copying the Record-Route set so the
caller's ACK and BYE come back through the proxy (RFC 3261 section 12.1.1). It
then waits for the caller's BYE and confirms it with ``200 OK``: the caller, not
the agent, decides the talk time. The scenario is
``loadgen/scenarios/uas_agent.xml``.

When the experiment needs an agent that really talks (AI turns, DTMF, MESSAGE,
hold, transfer), :func:`agent_kind` says ``voice`` and the backend runs a pool of
:mod:`real.voice_agent` processes instead (:class:`real.agent_pool.AgentPool`).
"""

from __future__ import annotations

from pathlib import Path

from lab.spec import Agent as AgentSpec
from lab.spec import Experiment, TalkStep, TurnsStep
from loadgen.sipp import SCENARIOS, SippProcess

UAS_SCENARIO = SCENARIOS / "uas_agent.xml"


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


class Agent:
    """A SIPp UAS on 127.0.0.1 playing ``uas_agent.xml``.

    Parameters
    ----------
    spec
        ``deployment.agent`` (``answer_ms``).
    workdir
        Where SIPp's log and statistics go (``agent_stat.csv``).
    sip_port, control_port, media_port
        Free ports for ``-p``, ``-cp`` and ``-mp``.
    timeout_s
        SIPp exits by itself after this long.
    name
        Names its log and statistics files (``human`` for a transfer target).
    """

    def __init__(self, spec: AgentSpec, workdir: Path, *, sip_port: int, control_port: int,
                 media_port: int, timeout_s: float, name: str = "agent") -> None:
        self.spec = spec
        self.sip_port = sip_port
        self.sipp = SippProcess(
            scenario_file(spec, workdir), workdir, name, local_port=sip_port,
            control_port=control_port, media_port=media_port, timeout_s=timeout_s,
            extra_args=["-d", str(max(0, round(spec.answer_ms))), "-timer_resol", "1"],
        )

    def start(self) -> None:
        """Start SIPp and check that it is still up a moment later (ports free, XML valid)."""
        self.sipp.start()
        assert self.sipp.proc is not None
        if self.sipp.proc.wait(0.3):
            log = self.sipp.log_path.read_text(errors="replace").strip().splitlines()
            tail = " | ".join(log[-3:])
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


def agent_kind(exp: Experiment) -> str:
    """``"sipp"`` or ``"voice"``: the agent the real backend runs for ``exp``.

    ``deployment.agent.kind`` decides unless it is ``auto``; then the voice agent
    (:mod:`real.voice_agent`) answers whenever a scenario has AI turns or feature
    steps (DTMF, MESSAGE, hold, transfer) -- the parts SIPp cannot play -- and SIPp,
    which carries thousands of calls per second, answers pure signalling load.
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
