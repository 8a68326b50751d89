"""Fixtures of the loopback tests: skip cleanly without the real stack, fail under CI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from real.proxy import kamailio_binary
from tests.conftest import missing, need_real_stack

_missing = missing  # the shared rule: skip, or fail under CI


@pytest.fixture
def real_stack() -> None:
    """Kamailio, SIPp and pjsua2 are usable, or the test skips (fails when CI is set)."""
    need_real_stack()


@pytest.fixture
def kamailio_only() -> None:
    """The kamailio binary is there, or the test skips (fails when CI is set)."""
    if kamailio_binary() is None:
        _missing("kamailio not found: apt-get install kamailio")


@pytest.fixture
def leftovers() -> Callable[[Path], list[tuple[int, str]]]:
    """``leftovers(workdir)``: the live processes a run in ``workdir`` left behind."""
    return processes_of


def processes_of(workdir: Path) -> list[tuple[int, str]]:
    """Live (non-zombie) processes whose command line names ``workdir``."""
    needle = str(workdir.resolve())
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmd and state != "Z":
            out.append((int(entry.name), cmd))
    return out


def _stat(pid: int) -> tuple[int, str, int] | None:
    """``(ppid, state, start time in clock ticks)`` of a process, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], int(fields[19])


def cmdline(pid: int) -> str:
    """A process's command line ("" when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


def descendants(root: int) -> list[tuple[int, int]]:
    """``(pid, start time)`` of every live descendant of ``root`` (children first)."""
    parent: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            parent[int(entry.name)] = (st[0], st[2])
    out: list[tuple[int, int]] = []
    frontier = [root]
    while frontier:
        pid = frontier.pop(0)
        kids = [(p, start) for p, (pp, start) in parent.items() if pp == pid]
        out += kids
        frontier += [p for p, _ in kids]
    return out


def still_running(procs: list[tuple[int, int]]) -> list[str]:
    """The command lines of ``procs`` (``(pid, start time)``) still running, not zombies
    (a pid reused by a newer process does not count)."""
    out = []
    for pid, start in procs:
        st = _stat(pid)
        if st is not None and st[2] == start and st[1] != "Z":
            out.append(f"{pid} {cmdline(pid)}")
    return out
