"""The one interface every backend implements, and the registry that finds them.

A backend turns one replication's call plan (:mod:`lab.plan`) into the records of
:mod:`lab.records`; the runner, the CLI, analysis and reports never ask which backend
they have. siplab ships two, ``twin`` (the SimPy digital twin, :mod:`twin.backend`) and
``real`` (Kamailio, SIPp and pjsua2 on loopback, :mod:`real.backend`). Both are found the
way a third one would be: through the ``siplab.backends`` entry-point group, so a
user's own SIP stack plugs in from its own package without touching ``lab/``::

    # the plug-in's pyproject.toml
    [project.entry-points."siplab.backends"]
    mystack = "mystack.siplab:MyBackend"     # a class (instantiated) or an instance

    # then
    siplab run lab/experiments/loopback-small.yaml --backend mystack

The contract, as SimPy's ``BaseResource`` or aiortc's codec base state a role once:

- ``name`` -- the registry name; ``parallel`` -- whether replications may run in
  separate processes at the same time (a simulation may; a real system under test,
  which owns ports and runs in wall-clock time, may not);
- ``check(exp, plans, force=...)`` -- raise :class:`lab.spec.SpecError` (bad input, exit
  2) for anything the backend cannot run, or :class:`BackendUnavailable` (exit 1) when a
  component it needs is missing; called before any output directory exists;
- ``run(exp, replication, plan, ...)`` -- run one replication and return a
  :class:`Replication`. Records handed to ``journal`` as calls end survive a crash or
  Ctrl-C; a backend stopped by Ctrl-C either returns with ``interrupted`` set or raises.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from lab.errors import SpecError

if TYPE_CHECKING:
    import pandas as pd

    from lab.plan import CallPlan
    from lab.spec import Experiment

__all__ = ["GROUP", "Backend", "BackendUnavailable", "Journal", "Progress", "Replication",
           "backend", "backends", "names"]

#: The entry-point group backends register under.
GROUP = "siplab.backends"

class Progress(Protocol):
    """Where a backend reports how far a replication has got, now and then.

    ``now_s`` is the replication's clock (simulated or real seconds). A backend that
    places calls in real time also says how many calls it has ``placed`` and how
    many have ``finished`` (a record made), from its first call on: the bar then
    counts calls, not seconds.
    """

    def __call__(self, now_s: float, /, *, placed: int | None = None,
                 finished: int | None = None) -> None:
        """Report progress."""


class Journal(Protocol):
    """Where a backend hands each finished record at once, so nothing finished is lost."""

    def __call__(self, table: str, record: dict[str, Any]) -> None:
        """Keep one record of ``table`` (``calls``, ``turns`` or ``steps``)."""


class BackendUnavailable(RuntimeError):
    """A component the backend needs is missing; the message says how to install it."""


@dataclass
class Replication:
    """What one replication produced, on any backend.

    Attributes
    ----------
    calls, turns, steps
        The record tables of :mod:`lab.records` (``lab.results.conform`` gives each the
        declared columns, order and types; ``cost_usd`` is the runner's to fill).
    timeseries
        A row per second: :data:`lab.records.TIMESERIES_BASE` and per-layer utilisation.
    usage
        Per AI stage: ``servers`` (None: unlimited) and ``busy_s`` after warm-up.
    facts
        Run facts: ``wall_s``, ``sim_s``, ``events`` and whatever the backend measured;
        ``error`` (``"Type: message"``) when the replication stopped on an exception, its
        finished records kept and ``interrupted`` set (the run then exits 1 naming it).
    interrupted
        Stopped early (Ctrl-C): the tables hold what finished.
    """

    calls: pd.DataFrame
    turns: pd.DataFrame
    steps: pd.DataFrame
    timeseries: pd.DataFrame
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False


@runtime_checkable
class Backend(Protocol):
    """A way to run an experiment's calls (see the module docstring)."""

    name: str
    parallel: bool

    def check(self, exp: Experiment, plans: Sequence[Sequence[CallPlan]], *,
              force: bool = False) -> None:
        """Raise SpecError / BackendUnavailable for what this backend cannot run."""

    def run(self, exp: Experiment, replication: int, plan: Sequence[CallPlan], *,
            progress: Progress | None = None, journal: Journal | None = None
            ) -> Replication:
        """Run one replication's planned calls."""


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}


def names() -> list[str]:
    """The registered backends' names (nothing is imported)."""
    return sorted(_entry_points())


def _load(ep: importlib.metadata.EntryPoint) -> Backend:
    obj = ep.load()
    impl = obj() if isinstance(obj, type) else obj
    if not isinstance(impl, Backend):
        raise TypeError(f"backend {ep.name!r} ({ep.value}) does not implement "
                        "lab.backend.Backend")
    return impl


def backend(name: str) -> Backend:
    """The backend registered as ``name``; SpecError naming ``--backend`` otherwise."""
    eps = _entry_points()
    if name not in eps:
        raise SpecError("--backend", f"unknown backend {name!r} (have: {sorted(eps)})")
    return _load(eps[name])


def backends() -> dict[str, Backend]:
    """Every registered backend by name (each one's module is imported)."""
    return {name: _load(ep) for name, ep in sorted(_entry_points().items())}
