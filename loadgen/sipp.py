"""SIPp (http://sipp.sourceforge.net) as a managed child process.

SIPp plays a scripted SIP user agent from an XML scenario: as UAS it answers
calls (the siplab agent, ``scenarios/uas_agent.xml``), as UAC it generates load.
This wrapper fixes what every instance on a shared machine needs:

- its own SIP port (``-p``), control port (``-cp``, default 8888, UDP "keyboard"
  commands) and media port (``-mp``), so concurrent instances never collide;
- a large socket buffer (``-buff_size``: the default drops datagrams at load);
- a global ``-timeout`` so an instance always ends by itself;
- statistics every ``-fd`` seconds into a ``-trace_stat`` CSV (``;``-separated,
  one row per dump; columns such as ``SuccessfulCall(C)``, ``FailedCall(C)``,
  ``Retransmissions(C)``) that :meth:`SippProcess.stats` reads back;
- a graceful stop: ``q`` on the control port (SIPp finishes and writes its last
  statistics), then SIGTERM, then SIGKILL of its process group.
"""

from __future__ import annotations

import contextlib
import csv
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

from lab.proc.child import ChildProcess

SCENARIOS = Path(__file__).parent / "scenarios"


def sipp_binary() -> str | None:
    """Path of the ``sipp`` executable, or None."""
    return shutil.which("sipp")


class SippProcess:
    """One SIPp instance bound to 127.0.0.1.

    Parameters
    ----------
    scenario
        The XML scenario file (``-sf``).
    workdir
        Where its log, statistics and error files go.
    name
        Prefix of those files.
    local_port, control_port, media_port
        ``-p``, ``-cp``, ``-mp``; all must be free.
    remote
        ``host:port`` to send to (UAC); None for a pure UAS.
    timeout_s
        Global bound (``-timeout``): SIPp exits after this many seconds.
    extra_args
        Further SIPp options (``-d``, ``-r``, ``-m``, ``-key``, ...).
    """

    def __init__(self, scenario: Path, workdir: Path, name: str, *, local_port: int,
                 control_port: int, media_port: int, remote: str | None = None,
                 timeout_s: float = 600.0, buff_size: int = 4 * 1024 * 1024,
                 stat_period_s: int = 1, extra_args: Sequence[str] = (),
                 host: str = "127.0.0.1") -> None:
        self.scenario = scenario
        self.workdir = workdir
        self.name = name
        self.host = host
        self.local_port = local_port
        self.control_port = control_port
        self.media_port = media_port
        self.remote = remote
        self.timeout_s = timeout_s
        self.buff_size = buff_size
        self.stat_period_s = stat_period_s
        self.extra_args = list(extra_args)
        self.stat_path = workdir / f"{name}_stat.csv"
        self.error_path = workdir / f"{name}_errors.log"
        self.log_path = workdir / f"{name}.log"
        self.proc: ChildProcess | None = None

    def argv(self) -> list[str]:
        """The full SIPp command line."""
        binary = sipp_binary() or "sipp"
        argv = [binary]
        if self.remote:
            argv.append(self.remote)
        argv += [
            "-sf", str(self.scenario),
            "-i", self.host, "-p", str(self.local_port),
            "-mi", self.host, "-mp", str(self.media_port),
            "-cp", str(self.control_port),
            "-buff_size", str(self.buff_size),
            "-timeout", f"{max(1, int(self.timeout_s + 0.999))}s",
            "-nostdin", "-skip_rlimit",
            "-trace_stat", "-stf", str(self.stat_path), "-fd", str(self.stat_period_s),
            "-trace_err", "-error_file", str(self.error_path),
        ]
        return argv + self.extra_args

    def start(self) -> None:
        """Start SIPp in its own process group (see :mod:`lab.proc.child`)."""
        self.proc = ChildProcess(self.argv(), self.log_path, cwd=self.workdir)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def stop(self, grace_s: float = 2.0) -> int | None:
        """Quit via the control port, then SIGTERM, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.alive():
            with contextlib.suppress(OSError), socket.socket(
                socket.AF_INET, socket.SOCK_DGRAM
            ) as sock:
                sock.sendto(b"Q", (self.host, self.control_port))
            self.proc.wait(grace_s)
        return self.proc.stop(grace_s=1.0)

    def stats(self) -> list[dict[str, str]]:
        """The rows of the ``-trace_stat`` CSV written so far (empty when none)."""
        if not self.stat_path.exists():
            return []
        with open(self.stat_path, newline="") as fh:
            rows = list(csv.reader(fh, delimiter=";"))
        if not rows:
            return []
        header = [h.strip() for h in rows[0]]
        return [dict(zip(header, (c.strip() for c in row), strict=False))
                for row in rows[1:] if row]

    def last_stats(self) -> dict[str, str]:
        """The cumulative counters of the last statistics dump ({} when none)."""
        rows = self.stats()
        return rows[-1] if rows else {}
