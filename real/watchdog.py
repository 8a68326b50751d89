"""A component of the system under test dying mid-run: who died, and which calls it took.

A real run is a dozen cooperating processes; when one of them dies (killed, out of
memory, a crash in pjsip), the calls it carried cannot end normally, and waiting
for them until the run's deadline would only hide what happened. So the
coordinator watches every process it started, at each pass of its loop (every
50 ms or sooner), and on the first death:

1. ends the calls the dead process carried as ``failed``, with ``rejected_by``
   ``"<layer> died"`` (:func:`died_record`): a pjsua2 caller its own calls, a voice
   agent the calls whose INVITE it took and did not end (its record log says
   which), and Kamailio, the RTP relay or a SIPp agent every call in progress (all
   signalling, or all media, went through it);
2. lets the other calls in progress finish briefly, keeping their records;
3. stops every remaining process and raises :class:`ComponentDied`, whose message
   is the one line that says what died (``siplab run`` exits 1 with it).

The layers are the twin's names: ``real.proxy`` (Kamailio), ``real.network`` (the
RTP impairment emulator, "the relay"), ``real.agent`` (a voice agent or SIPp UAS),
``real.uac_pool`` (a pjsua2 caller process).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.plan import CallPlan
from lab.proc.child import ChildProcess
from lab.proc.lines import read_file
from real.sip import unplaced_record

if TYPE_CHECKING:
    from loadgen.callers.pool import UacWorker
    from real.network import NetworkEmulator
    from real.system import SystemUnderTest

__all__ = ["Component", "ComponentDied", "components", "died_record", "ended_how",
           "first_dead", "voice_agent_calls"]


@dataclass
class Component:
    """One process of the run to watch.

    Attributes
    ----------
    name
        What to call it in the message (``kamailio``, ``caller uac0``, ...).
    layer
        The layer it plays (``real.proxy``, ``real.uac_pool``, ...).
    proc
        Its process.
    carried
        Which of the open calls it carried; None: every one of them.
    """

    name: str
    layer: str
    proc: ChildProcess
    carried: Callable[[set[int]], set[int]] | None = None

    def affected(self, open_calls: set[int]) -> set[int]:
        """The open calls its death ends."""
        if self.carried is None:
            return set(open_calls)
        return self.carried(set(open_calls)) & open_calls


class ComponentDied(RuntimeError):
    """A process of the system under test died during the run; the message says which."""

    def __init__(self, component: Component, failed: int, at_s: float) -> None:
        self.component = component
        self.failed = failed
        how = ended_how(component.proc.popen.returncode)
        super().__init__(
            f"{component.name} ({component.layer}, pid {component.proc.pid}) died {at_s:.1f} s "
            f"into the run ({how}); {failed} call{'s' if failed != 1 else ''} in progress "
            "on it failed, the other processes were stopped")


def ended_how(returncode: int | None) -> str:
    """``killed by SIGKILL``, ``exit status 3`` or ``still running``."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def first_dead(components: list[Component]) -> Component | None:
    """The first watched process that has exited, if any."""
    return next((c for c in components if not c.proc.alive()), None)


def components(sut: SystemUnderTest, network: NetworkEmulator,
               callers: Sequence[UacWorker]) -> list[Component]:
    """Every process of the run to watch, with the calls each one's death takes down."""
    out: list[Component] = []
    if sut.proxy is not None and sut.proxy.proc is not None:
        out.append(Component("kamailio", "real.proxy", sut.proxy.proc))
    out.append(Component("the RTP relay", "real.network", network.proc))
    if sut.pool is not None:
        out += [Component(f"voice agent agent{k}", "real.agent", proc,
                          voice_agent_calls(sut.pool.log_paths[k]))
                for k, proc in enumerate(sut.pool.procs)]
    for name, sipp in (("the SIPp agent", sut.sipp), ("the SIPp transfer target", sut.human)):
        if sipp is not None and sipp.sipp.proc is not None:
            out.append(Component(name, "real.agent", sipp.sipp.proc))
    out += [Component(f"caller {w.name}", "real.uac_pool", w.proc, caller_calls(w))
            for w in callers]
    return out


def caller_calls(worker: UacWorker) -> Callable[[set[int]], set[int]]:
    """``carried(open)`` of a pjsua2 caller process: the calls it has in progress."""
    def carried(open_calls: set[int]) -> set[int]:
        return set(worker.active) & open_calls
    return carried


def voice_agent_calls(log_path: Path) -> Callable[[set[int]], set[int]]:
    """``carried(open)`` of a voice agent: the plan calls whose INVITE it logged and
    whose end it did not (its ``--log`` JSON lines)."""

    def carried(open_calls: set[int]) -> set[int]:
        if not log_path.exists():
            return set()
        took, ended = set(), set()
        for rec in read_file(log_path):
            if rec.get("call") is None:
                continue
            if rec.get("ev") == "call":
                took.add(int(rec["call"]))
            elif rec.get("ev") == "call_end":
                ended.add(int(rec["call"]))
        return (took - ended) & open_calls

    return carried


def died_record(plan: CallPlan, cause: str, run_start: float) -> dict[str, Any]:
    """The record of a call a dead component took down: ``failed``, no final code,
    ``rejected_by`` = ``cause``, ended now."""
    record = unplaced_record(plan, cause, run_start)
    record["end_s"] = time.monotonic() - run_start
    return record
