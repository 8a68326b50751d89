"""The proxy: Kamailio as the local SIP edge -- config generation, config check, process.

The real counterpart of :mod:`twin.proxy`. Kamailio runs as a transaction-stateful
proxy (``tm``, RFC 3261 section 17) that record-routes (section 16.6, step 4) so
that ACK and BYE pass through it, which lets the ``dialog`` module see every call
from INVITE to BYE; ``children`` = ``deployment.proxy.workers`` UDP workers. In
front of the agent it also:

- admits calls for the trunk (:mod:`real.trunk`: ``503 Channels Exhausted``,
  ``503 CPS Limit``);
- spreads INVITEs over a voice-agent pool with the ``dispatcher`` module (round
  robin, failing over on 486/480/503, :func:`write_dispatcher_list`);
- routes request user ``human`` (the leg a blind transfer makes, RFC 3515) to the
  transfer target's UAS, counted on the trunk but never refused;
- rewrites the agent's SDP answer to the caller's port on the RTP impairment
  emulator (:mod:`real.network`) when the INVITE names one (``X-Siplab-Relay``);
- with ``deployment.proxy.overload_control: {kind: rate, limit_cps: X}`` (RFC 7415),
  refuses new INVITEs beyond X a second with Kamailio's ``ratelimit`` module
  (TAILDROP over 1 s intervals, :func:`overload_defines`): ``503 Overloaded`` with
  ``Retry-After: 1`` and ``X-Siplab-Rejected-By: proxy.overload_control``, statelessly
  and before any transaction exists. The twin's senders hold those calls back
  themselves; here the proxy still reads each one (the cost the twin's
  ``reject_cost`` prices). ``{kind: loss}`` (RFC 7339's Via ``oc`` feedback) has no
  Kamailio 5.6 module: the real backend refuses it (exit 2).

The configuration is ``real/templates/kamailio.cfg`` with ``{{placeholders}}`` and
``#!define`` switches filled in by :func:`render_config`.

Run facts measured on this kind of machine are in REAL-NOTES: ``-DD -E`` keeps it
in the foreground with logs on stderr; ``-x tlsf -X tlsf -m 1024 -M 16`` avoids the
slow default allocator and running out of shared memory; ``maxbuffer`` enlarges
the UDP receive buffer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from lab.errors import SpecError
from lab.proc.child import ChildProcess
from lab.proc.ports import udp_port_free
from lab.spec import Deployment, RateControl
from lab.spec import Proxy as ProxySpec
from real import trunk

TEMPLATE = Path(__file__).parent / "templates" / "kamailio.cfg"
MODULE_DIRS = (
    Path("/usr/lib/x86_64-linux-gnu/kamailio/modules"),
    Path("/usr/lib/aarch64-linux-gnu/kamailio/modules"),
    Path("/usr/lib/kamailio/modules"),
    Path("/usr/local/lib64/kamailio/modules"),
)
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"
MAX_BUFFER = 4 * 1024 * 1024


def kamailio_binary() -> str | None:
    """Path of the ``kamailio`` executable (also looked for in sbin dirs), or None."""
    return shutil.which("kamailio", path=os.environ.get("PATH", "") + ":" + SBIN_PATH)


def module_dir() -> Path:
    """The directory holding Kamailio's modules (``tm.so``)."""
    for cand in MODULE_DIRS:
        if (cand / "tm.so").exists():
            return cand
    raise FileNotFoundError("Kamailio modules (tm.so) not found: apt-get install kamailio")


def overload_defines(proxy: ProxySpec) -> list[str]:
    """The ``#!define`` lines of ``proxy.overload_control`` (none without it).

    Raises
    ------
    SpecError
        For ``kind: loss``: Kamailio 5.6 has no RFC 7339 feedback to play it.
    """
    ctl = proxy.overload_control
    if ctl is None:
        return []
    if not isinstance(ctl, RateControl):
        raise SpecError("deployment.proxy.overload_control.kind",
                        "loss-based control (RFC 7339) is twin-only: Kamailio 5.6 has no "
                        "Via oc feedback; use kind: rate on the real backend")
    limit = max(1, round(ctl.limit_cps))  # TAILDROP counts whole INVITEs per 1 s interval
    return ["#!define WITH_RATELIMIT", f"#!define RL_LIMIT {limit}",
            f'#!define RL_PIPE "0:TAILDROP:{limit}"']


def render_config(dep: Deployment, *, sip_port: int, agent_port: int, workdir: Path,
                  maxbuffer: int = MAX_BUFFER, rundir: Path | None = None,
                  dispatcher_list: Path | None = None, human_port: int | None = None) -> str:
    """The Kamailio configuration for one deployment.

    Parameters
    ----------
    dep
        The deployment: ``proxy.workers`` -> ``children``, ``trunk.channels`` and
        ``trunk.cps_limit`` -> admission control.
    sip_port
        The proxy's UDP port on 127.0.0.1.
    agent_port
        Where the answering agent (a SIPp UAS, :class:`real.agent.SippAgent`) listens.
    workdir
        Holds the ctl socket and runtime files (unless ``rundir`` is given).
    rundir
        A short directory for them: a Unix socket path must fit in 108 bytes.
    dispatcher_list
        A dispatcher list file (set 1: the voice-agent pool, see
        :func:`write_dispatcher_list`): INVITEs go round robin over its
        destinations, failing over on 486/480/503, instead of to ``agent_port``.
    human_port
        Where the transfer target listens: INVITEs for user ``human`` (the leg a
        blind transfer makes) go there, counted on the trunk but never refused.
    """
    defines = trunk.defines(dep.trunk) + overload_defines(dep.proxy)
    if human_port is not None:
        defines += ["#!define WITH_HUMAN",
                    f'#!define HUMAN_URI "sip:127.0.0.1:{int(human_port)}"']
    if dispatcher_list is not None:
        defines += ["#!define WITH_DISPATCHER",
                    f'#!define DISPATCHER_LIST "{Path(dispatcher_list).resolve()}"']
    values = {
        "defines": "\n".join(defines),
        "children": str(dep.proxy.workers),
        "sip_port": str(sip_port),
        "agent_port": str(agent_port),
        "workdir": str((rundir or workdir).resolve()),
        "maxbuffer": str(maxbuffer),
        "module_dir": str(module_dir()),
    }
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise ValueError("kamailio template: unfilled placeholder")
    return text


def write_dispatcher_list(path: Path, agent_ports: list[int]) -> Path:
    """Kamailio's dispatcher list: set 1 = the agents on 127.0.0.1 at ``agent_ports``."""
    path.write_text("".join(f"1 sip:127.0.0.1:{p}\n" for p in agent_ports))
    return path


def check_config(path: Path) -> tuple[bool, str]:
    """Run ``kamailio -c -f PATH`` (parse and module check); returns (ok, output)."""
    binary = kamailio_binary() or "kamailio"
    res = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True,
                         timeout=30, check=False)
    return res.returncode == 0, res.stdout + res.stderr


def kamailio_version() -> str:
    """The ``kamailio -v`` version line, e.g. ``kamailio 5.6.3 (x86_64/linux)``."""
    binary = kamailio_binary() or "kamailio"
    res = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10,
                         check=False)
    first = (res.stdout or res.stderr).splitlines()[:1]
    return first[0].removeprefix("version:").strip() if first else "unknown"


class Kamailio:
    """One Kamailio instance on 127.0.0.1, started from a generated config.

    Parameters
    ----------
    dep
        The deployment whose proxy and trunk it plays.
    workdir
        Config, PID file, ctl socket and log (``kamailio.log``) go here.
    sip_port, agent_port
        Its own UDP port and the agent's.
    agent_ports
        A pool of agents (voice-agent processes, 4 calls each): the dispatcher
        spreads calls over them (``agent_port`` is then unused).
    human_port
        The transfer target's UAS (request user ``human``), if any.
    """

    def __init__(self, dep: Deployment, workdir: Path, *, sip_port: int, agent_port: int,
                 agent_ports: list[int] | None = None, human_port: int | None = None
                 ) -> None:
        self.dep = dep
        self.workdir = workdir
        self.sip_port = sip_port
        self.agent_port = agent_port
        self.agent_ports = list(agent_ports) if agent_ports else None
        self.human_port = human_port
        self.cfg_path = workdir / "kamailio.cfg"
        self.pid_path = workdir / "kamailio.pid"
        self.log_path = workdir / "kamailio.log"
        self.proc: ChildProcess | None = None
        self.rundir: Path | None = None
        if len(str((workdir / "kamailio.ctl").resolve())) > 100:
            self.rundir = Path(tempfile.mkdtemp(prefix="siplab-kam-"))

    def argv(self) -> list[str]:
        return [kamailio_binary() or "kamailio", "-f", str(self.cfg_path),
                "-P", str(self.pid_path), "-w", str(self.workdir), "-DD", "-E",
                "-x", "tlsf", "-X", "tlsf", "-m", "1024", "-M", "16"]

    def start(self, ready_timeout_s: float = 10.0) -> None:
        """Write the config, start Kamailio, wait until it listens (its PID file appears).

        Raises
        ------
        RuntimeError
            When it exits early (e.g. the port is taken); the log tail is in the message.
        """
        ds_list = (write_dispatcher_list(self.workdir / "dispatcher.list", self.agent_ports)
                   if self.agent_ports else None)
        self.cfg_path.write_text(render_config(
            self.dep, sip_port=self.sip_port, agent_port=self.agent_port,
            workdir=self.workdir, rundir=self.rundir, dispatcher_list=ds_list,
            human_port=self.human_port))
        self.pid_path.unlink(missing_ok=True)
        self.proc = ChildProcess(self.argv(), self.log_path, cwd=self.workdir)
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if not self.proc.alive():
                break
            if self.pid_path.exists() and self._listening():
                return
            time.sleep(0.05)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"kamailio did not start on 127.0.0.1:{self.sip_port}: {tail}")

    def _listening(self) -> bool:
        return not udp_port_free(self.sip_port)

    def log_tail(self, lines: int = 3) -> str:
        """The last lines of its log (for error messages)."""
        return self.proc.log_tail(lines) if self.proc is not None else ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def stop(self) -> int | None:
        """SIGTERM the main process (it stops its workers), then SIGKILL the group."""
        code = self.proc.stop(grace_s=3.0) if self.proc is not None else None
        if self.rundir is not None:
            shutil.rmtree(self.rundir, ignore_errors=True)
        return code

