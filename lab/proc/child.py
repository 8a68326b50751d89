"""Child processes of a real run that can never outlive it.

Each process a real run starts (Kamailio, SIPp, a pjsua2 caller or agent, the RTP
impairment emulator) runs in its own session and process group, so a terminal's
Ctrl-C reaches only the coordinator, which then stops the children in order;
stopping a child signals its whole group, so Kamailio's forked workers go with it.
On Linux the child also asks the kernel (``prctl(PR_SET_PDEATHSIG, SIGTERM)``, which
Kamailio handles by stopping its own workers) to be killed if the coordinator itself
dies without cleaning up, so a crash leaves no orphans behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ChildProcess:
    """A command run in its own process group, output to a log file, stopped by group.

    Parameters
    ----------
    argv
        The command line.
    log_path
        Where stdout and stderr go (appended).
    pipes
        Give the child a stdin and stdout pipe (for a line protocol,
        :class:`lab.proc.lines.ChildChannel`) instead; stderr still goes to ``log_path``.
    cwd, env
        Its working directory and environment (default: the parent's).
    """

    def __init__(self, argv: Sequence[str], log_path: Path, *, pipes: bool = False,
                 cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._stopped = False
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        kwargs: dict[str, Any] = {
            "stdin": subprocess.PIPE if pipes else subprocess.DEVNULL,
            "stdout": subprocess.PIPE if pipes else self._log,
            "stderr": self._log,
        }
        try:
            self.popen = subprocess.Popen(
                self.argv, cwd=cwd, env=env, start_new_session=True,
                preexec_fn=_die_with_parent, **kwargs,
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        """The child's process id, which is also its process group id."""
        return self.popen.pid

    def alive(self) -> bool:
        """True until the process has exited."""
        return self.popen.poll() is None

    def rss_mb(self) -> float:
        """Resident memory of the process (not its children), MB; NaN when gone."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return float("nan")

    def log_tail(self, lines: int = 3) -> str:
        """The last ``lines`` lines of its log joined by `` | `` (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self, grace_s: float = 3.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal the process, wait up to ``grace_s``, then SIGKILL its whole group."""
        if self._stopped:
            return self.popen.returncode
        self._stopped = True
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            self.wait(grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # stragglers of the group (forked workers)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=2.0)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log.close()
        return self.popen.returncode

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the process to end; True when it has."""
        deadline = time.monotonic() + timeout_s
        while self.popen.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.popen.poll() is not None


def group_alive(pgid: int) -> bool:
    """True while any process of the process group ``pgid`` exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
