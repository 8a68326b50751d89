"""JSON lines between a coordinator and its worker processes, written once.

Every worker of a real run (a pjsua2 caller process, a voice agent, the RTP
impairment emulator) is driven the same way: the parent writes one JSON object
per line to the child's stdin (``{"op": ...}`` commands) and reads one JSON object
per line from the child's stdout (``{"ev": ...}`` events, the first of which is
``{"ev": "ready", ...}``). A line is the unit of the protocol: a reader keeps a
partial line until its newline arrives, so a datagram-sized write split across
two reads is never half-parsed.

Three pieces:

- :class:`LineReader` -- a non-blocking reader of one pipe descriptor: whatever
  whole lines are there now, without ever waiting (the readers run inside event
  loops: a selector, or pjsua2's ``libHandleEvents`` polling);
- :class:`ChildChannel` -- the parent's end, over a
  :class:`lab.proc.child.ChildProcess` started with ``pipes=True``;
- :class:`ParentChannel` -- the child's end. pjlib prints to fd 1, so the protocol
  cannot stay on it: the channel keeps the protocol on a duplicate of stdout and
  points fd 1 at stderr (the child's log) before pjsua2 is loaded.

The same format also serves the agents' record logs (one JSON object per line in a
file, :func:`read_file`).
"""

from __future__ import annotations

import json
import os
import selectors
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.proc.child import ChildProcess

Event = dict[str, Any]
CHUNK = 65536


def encode(obj: Event) -> bytes:
    """One protocol line: compact JSON and a newline."""
    return (json.dumps(obj) + "\n").encode()


def write_line(fd: int, obj: Event) -> None:
    """Write ``obj`` as one line to ``fd``, all of it (a pipe may take it in parts)."""
    data = encode(obj)
    while data:
        data = data[os.write(fd, data):]


class LineReader:
    """Whole JSON lines from one descriptor, read without blocking.

    The descriptor is switched to non-blocking mode. :attr:`closed` turns True at
    end of file (the writer has exited or closed its end).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self.closed = False
        self._buf = bytearray()

    def read(self) -> list[Event]:
        """Every whole line available now, parsed (blank lines skipped)."""
        while not self.closed:
            try:
                chunk = os.read(self.fd, CHUNK)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                self.closed = True
                break
            self._buf.extend(chunk)
        events = []
        while b"\n" in self._buf:
            line, _, rest = bytes(self._buf).partition(b"\n")
            self._buf[:] = rest
            if line.strip():
                events.append(json.loads(line))
        return events


class ChildChannel:
    """The parent's end of a child's line protocol: commands in, events out.

    Parameters
    ----------
    proc
        A child started with ``pipes=True``.
    """

    def __init__(self, proc: ChildProcess) -> None:
        assert proc.popen.stdout is not None and proc.popen.stdin is not None
        self.proc = proc
        self.reader = LineReader(proc.popen.stdout.fileno())
        self._pending: list[Event] = []

    @property
    def fd(self) -> int:
        """The descriptor to select on for the child's events."""
        return self.reader.fd

    @property
    def closed(self) -> bool:
        """True once the child's stdout has reached end of file."""
        return self.reader.closed

    def send(self, obj: Event) -> None:
        """Write one command line to the child's stdin."""
        stdin = self.proc.popen.stdin
        assert stdin is not None
        stdin.write(encode(obj))
        stdin.flush()

    def read(self) -> list[Event]:
        """Events available now (those put aside by :meth:`wait` first)."""
        out, self._pending = self._pending, []
        return out + self.reader.read()

    def wait(self, match: Callable[[Event], bool], timeout_s: float) -> Event | None:
        """The first event ``match`` accepts, waiting up to ``timeout_s``.

        Events that do not match are kept, in order, for the next :meth:`read` or
        :meth:`wait`. None when the time runs out, or the child has exited or closed
        its stdout without sending one.
        """
        end = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd, selectors.EVENT_READ)
            while True:
                self._pending += self.reader.read()
                for i, ev in enumerate(self._pending):
                    if match(ev):
                        return self._pending.pop(i)
                left = end - time.monotonic()
                if left <= 0 or self.closed or not self.proc.alive():
                    return None
                sel.select(min(left, 0.1))


class ParentChannel:
    """The child's end: commands from stdin, events to a duplicate of stdout.

    Creating it moves the protocol off fd 1 (pjlib and stray prints write there)
    and points fd 1 at stderr, so create it first thing in ``main``.
    """

    def __init__(self) -> None:
        self.out_fd = os.dup(1)
        os.dup2(2, 1)
        self.reader = LineReader(sys.stdin.fileno())

    @property
    def in_fd(self) -> int:
        """The descriptor the parent's commands arrive on."""
        return self.reader.fd

    @property
    def closed(self) -> bool:
        """True once the parent has closed our stdin (it has gone)."""
        return self.reader.closed

    def emit(self, obj: Event) -> None:
        """Send one event line to the parent."""
        write_line(self.out_fd, obj)

    def commands(self) -> list[Event]:
        """Commands waiting now (non-blocking)."""
        return self.reader.read()


def read_file(path: Path) -> list[Event]:
    """The JSON lines of a log file; a line that does not parse (a torn last line
    of a process that was killed mid-write) is skipped."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
