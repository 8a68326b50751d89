"""The ``main`` every worker process of a real run shares.

A worker (a pjsua2 caller process, a voice agent, the RTP impairment emulator)
must end by itself whatever happens to its coordinator, so it bounds its own
life: it runs until the run's deadline (a ``time.monotonic()`` value, one clock
for every process of the machine, passed as ``--deadline``), a ``quit`` command,
the end of its command pipe, or SIGTERM/SIGINT, whichever comes first. It says
``{"ev": "ready", "pid": ..., ...}`` once it is listening, so the coordinator never
sends to a worker that is still starting. The coordinator also writes the run's
directory on every command line (``--run``): that is how a test finds the
processes a run left behind.

A process that loaded pjsua2 leaves with :func:`hard_exit`: pjsua2's SWIG objects
must not be finalised a second time by the interpreter's teardown after
``libDestroy`` (that aborts the process).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

from lab.proc.lines import ParentChannel


def add_run_args(ap: argparse.ArgumentParser, *, deadline_required: bool = True) -> None:
    """The options every worker takes: ``--deadline`` and ``--run``."""
    ap.add_argument("--deadline", type=float, required=deadline_required, default=None,
                    help="time.monotonic() bound: the process ends by itself then")
    ap.add_argument("--run", default="", help="the run's directory (identifies the process)")


class Lifetime:
    """How long a worker runs: until ``deadline``, a stop request, or a signal.

    Parameters
    ----------
    deadline
        ``time.monotonic()`` at which it is over; None: no deadline.
    signals
        Turn SIGTERM and SIGINT into a stop request (the worker then hangs up and
        cleans up in its own loop instead of dying mid-call).
    """

    def __init__(self, deadline: float | None, *, signals: bool = False) -> None:
        self.deadline = deadline if deadline is not None else float("inf")
        self.reason: str | None = None
        if signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop(signal.Signals(signum).name)

    def stop(self, reason: str) -> None:
        """End the run loop at its next pass (the first reason is kept)."""
        if self.reason is None:
            self.reason = reason

    @property
    def over(self) -> bool:
        """True once stopped or past the deadline."""
        if self.reason is None and time.monotonic() >= self.deadline:
            self.reason = "deadline"
        return self.reason is not None


def ready(channel: ParentChannel, **fields: object) -> None:
    """Tell the coordinator the worker is listening: ``{"ev": "ready", "pid", ...}``."""
    channel.emit({"ev": "ready", **fields, "pid": os.getpid()})


def run_until(life: Lifetime, tick: Callable[[], None]) -> None:
    """Call ``tick`` (one pass of the worker's event loop) until ``life`` is over."""
    while not life.over:
        tick()


def hard_exit(code: int = 0) -> NoReturn:
    """Leave now, skipping interpreter teardown (pjsua2 objects must not be finalised
    twice); stdio is flushed first."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
