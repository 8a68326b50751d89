"""The system under test on loopback: the processes that answer calls, started in order.

A real run builds the callee side of the twin's model out of real processes, all on
127.0.0.1 and each on ports free at the time (several runs may share the machine):

1. the **agent** -- a SIPp UAS, or a pool of voice agents (:mod:`real.agent`);
2. the **human**, only when a call is transferred: a SIPp UAS that answers at once
   (the twin's transfer target does, too); the agent's REFER names ``sip:human@<proxy>``
   and the proxy routes that user there, counting the new leg on the trunk;
3. the **proxy** in front of them (:mod:`real.proxy`), which also enforces the trunk;
4. the **RTP relay** (:class:`real.network.NetworkEmulator`, :meth:`SystemUnderTest.start_relay`)
   that carries each call's media and applies ``deployment.network``.

The real backend's run (:func:`real.backend.run_calls`), ``siplab sut`` and ``siplab
burst`` (:mod:`real.sut`) all build it through this class.

A port can be taken between the check and the bind (another run, or a SIPp control
port colliding with a media port), so the SIPp processes and the proxy are started
up to three times on fresh ports; the voice-agent pool binds port 0 itself.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lab.plan import CallPlan, Transfer
from lab.proc.ports import free_udp_port
from lab.spec import Agent as AgentSpec
from lab.spec import Experiment
from real.agent import SippAgent, VoiceAgentPool, agent_kind
from real.network import NetworkEmulator
from real.proxy import Kamailio

START_TRIES = 3


def _counters(stats: dict[str, str]) -> dict[str, str]:
    """SIPp's cumulative counters that are not zero."""
    return {k: v for k, v in stats.items() if k.endswith("(C)") and v not in ("", "0")}


class SystemUnderTest:
    """The proxy, the agent (SIPp or the voice-agent pool) and, for transfers, the human.

    Parameters
    ----------
    exp
        The experiment (``deployment``, ``real.sip_port``, ``seed``).
    plan
        The run's calls (a transfer among them needs the human).
    workdir
        Configs and logs go here.
    timeout_s
        Every process ends by itself after this long.
    started
        Every process started is appended here, so the caller stops them all, in
        reverse, whatever happens.
    secrets
        What only the voice agents may see (:mod:`real.credentials`).
    """

    def __init__(self, exp: Experiment, plan: list[CallPlan], workdir: Path,
                 timeout_s: float, started: list[Any],
                 secrets: dict[str, str] | None = None) -> None:
        self.exp, self.workdir, self.timeout_s, self.started = exp, workdir, timeout_s, started
        self.secrets = dict(secrets or {})
        self.kind = agent_kind(exp)
        self.needs_human = any(isinstance(s, Transfer) for p in plan for s in p.steps)
        self.proxy: Kamailio | None = None
        self.sipp: SippAgent | None = None
        self.pool: VoiceAgentPool | None = None
        self.human: SippAgent | None = None
        self.network: NetworkEmulator | None = None

    def _sipp(self, spec: AgentSpec, name: str, taken: set[int]) -> SippAgent:
        """A SIPp UAS on free loopback ports that echoes the caller's RTP (and RTCP), so
        every call has audio flowing back to the caller's ear, which pjsua2 measures."""
        agent = SippAgent.on_free_ports(spec, self.workdir, taken, timeout_s=self.timeout_s,
                                        name=name)
        self.started.append(agent)
        agent.start()
        return agent

    def start(self, agent_processes: int) -> Kamailio:
        """Start the agent side, then the proxy in front of it (retrying on a port race)."""
        if self.kind == "voice":
            self.pool = VoiceAgentPool(self.exp.deployment, self.workdir,
                                       processes=agent_processes, seed=self.exp.seed,
                                       deadline=time.monotonic() + self.timeout_s,
                                       secrets=self.secrets)
            self.started.append(self.pool)
            self.pool.start()
        base = len(self.started)
        last: Exception | None = None
        for _ in range(START_TRIES):
            try:
                return self._start_sip()
            except RuntimeError as exc:
                last = exc
                for proc in reversed(self.started[base:]):
                    proc.stop()
                del self.started[base:]
        raise RuntimeError(f"could not start the local SIP stack: {last}")

    def _start_sip(self) -> Kamailio:
        """The SIPp agent (unless the pool answers), the human if needed, the proxy."""
        ports = list(self.pool.ports) if self.pool else []
        taken = set(ports)
        self.sipp = self.human = None
        if self.pool is None:
            self.sipp = self._sipp(self.exp.deployment.agent, "agent", taken)
        if self.needs_human:  # a person answers at once (the twin's target, too)
            self.human = self._sipp(AgentSpec(answer_ms=0.0), "human", taken)
        sip_port = free_udp_port(self.exp.real.sip_port, avoid=taken)
        proxy = Kamailio(self.exp.deployment, self.workdir, sip_port=sip_port,
                         agent_port=self.sipp.sip_port if self.sipp else ports[0],
                         agent_ports=ports or None,
                         human_port=self.human.sip_port if self.human else None)
        self.started.append(proxy)
        proxy.start()
        self.proxy = proxy
        return proxy

    def start_relay(self, deadline: float) -> NetworkEmulator:
        """Start the RTP relay (the impairment emulator), which ends by itself at
        ``deadline`` (``time.monotonic()``)."""
        network = NetworkEmulator(self.exp.deployment.network, self.exp.seed, self.workdir,
                                  deadline=deadline)
        self.started.append(network)
        network.start()
        self.network = network
        return network

    @property
    def agent_ports(self) -> list[int]:
        """The agents' SIP ports."""
        if self.pool is not None:
            return list(self.pool.ports)
        return [self.sipp.sip_port] if self.sipp else []

    def agent_media(self) -> tuple[str, int] | None:
        """Where the agent's RTP comes from, if known before the call (SIPp's media port);
        a voice agent's is learnt by the impairment emulator from its first packet."""
        return ("127.0.0.1", self.sipp.sipp.media_port) if self.sipp else None

    def facts(self) -> dict[str, Any]:
        """What the agent side did, once stopped."""
        out: dict[str, Any] = {"agent_kind": self.kind}
        if self.sipp is not None:
            out["agent_stats"] = _counters(self.sipp.stop())
        if self.pool is not None:
            self.pool.stop()
            out["agent_processes"] = self.pool.n
            out["agent_records"] = {ev: len(self.pool.records(ev)) for ev in (
                "call", "turn", "prompt", "message", "refer", "error")}
        if self.human is not None:
            out["human_stats"] = _counters(self.human.stop())
        return out
