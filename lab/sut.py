"""``siplab sut``: an experiment's loopback system under test, in the foreground.

``siplab run --backend real`` starts the answering side (Kamailio with its generated
config, the agents, the RTP relay), places its own calls and stops. ``siplab sut``
starts the same answering side alone and keeps it up, so any client can be pointed
at it -- SIPp, a softphone, ``locust -f loadgen/locustfile.py`` -- and prints one
JSON line on stdout once everything is up::

    {"sip_uri": "sip:agent@127.0.0.1:5060",
     "ports": {"sip": 5060, "agents": [41234], "control": 40001},
     "workdir": "/tmp/siplab-sut-..."}

``control`` is the SUT's control port (the RTP relay's per-call ports and the voice
agent's planned replies, :mod:`real.sut`). Ctrl-C stops every process and exits 130;
SIGTERM stops every process and exits 0 (a service manager's ordinary stop).

``lab`` imports neither ``real`` nor ``twin``: the system under test is reached
through the backend registry (:func:`host`), as a third-party backend's would be.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from lab.errors import SpecError

if TYPE_CHECKING:
    from lab.backend import Replication
    from lab.spec import Experiment

LOOPBACK_KINDS = ("loopback", "local")


class ServedSystem(Protocol):
    """A system under test started alone (:class:`real.sut.ServedSut`)."""

    def start(self) -> dict[str, Any]:
        """Start every process; ``{"sip_uri", "ports", "workdir"}``."""

    def serve(self, until: Callable[[], bool], poll_s: float = 0.1) -> None:
        """Keep it up (answering its control port) until ``until()``; raise if a process dies."""

    def facts(self) -> dict[str, Any]:
        """What the agents did (stops them)."""

    def stop(self) -> None:
        """Stop every process."""


@runtime_checkable
class SutHost(Protocol):
    """A backend that can serve its system under test alone (the ``real`` backend)."""

    def sut(self, exp: Experiment, workdir: Path, *, base_dir: Path | None = None,
            concurrent: int | None = None) -> ServedSystem:
        """The system under test of ``exp``, not yet started."""

    def burst_replication(self, exp: Experiment, calls: Sequence[dict[str, Any]],
                          run_start: float, workdir: Path, base_dir: Path | None = None
                          ) -> Replication:
        """The record tables of a Locust burst from its callers' reports."""


def host(name: str = "real") -> SutHost:
    """The registered backend ``name``, which must be able to serve a system under test."""
    from lab.backend import backend

    impl = backend(name)
    if not isinstance(impl, SutHost):
        raise SpecError("--backend", f"backend {name!r} cannot serve a system under test")
    return impl


def check_target(exp: Experiment, live: bool) -> None:
    """Only the loopback SUT without ``--live``; a live target needs ``--live`` and the
    caps and checks ``siplab run`` applies to it.

    The experiment's target is ``target.kind`` when the experiment has a ``target``
    section, else ``real.target``.
    """
    target = getattr(exp, "target", None)
    kind = str(getattr(target, "kind", None) or exp.real.target)
    key = "target.kind" if target is not None else "real.target"
    if kind in LOOPBACK_KINDS:
        return
    if not live:
        raise SpecError(key, f"{kind!r} is not the loopback system under test; a live "
                        "target needs --live and every cap")
    try:  # the live checks of `siplab run`, where this build has them
        from lab import live as live_checks  # type: ignore[attr-defined]
    except ImportError:
        raise SpecError(key, f"{kind!r}: this build has no live-trunk checks to apply, so "
                        "it places no live calls") from None
    live_checks.check_live(exp)


def serve(exp: Experiment, base_dir: Path | None, workdir: Path | None) -> int:
    """``siplab sut``: start, print the JSON line, serve until Ctrl-C (130) or SIGTERM (0)."""
    from lab.backend import BackendUnavailable
    from lab.spec import unsupported_features

    check_target(exp, live=False)
    for key, why in unsupported_features(exp):
        raise SpecError(key, f"{why} by any backend yet; remove it to run")
    impl = host()
    stopped: list[str] = []

    def on_term(signum: int, _frame: FrameType | None) -> None:
        stopped.append(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, on_term)
    tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="siplab-sut-")
    where = Path(tmp.name) if tmp is not None else Path(workdir or ".")
    try:
        sut = impl.sut(exp, where, base_dir=base_dir)
    except BackendUnavailable as exc:
        print(f"siplab: {exc}", file=sys.stderr)
        return 1
    try:
        info = sut.start()
        print(json.dumps(info), flush=True)
        sut.serve(until=lambda: bool(stopped))
        return 0
    except KeyboardInterrupt:
        print("siplab: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:  # a process of the SUT died, or would not start
        print(f"siplab: {exc}", file=sys.stderr)
        return 1
    finally:
        sut.stop()
        signal.signal(signal.SIGTERM, previous)
        if tmp is not None:
            tmp.cleanup()
