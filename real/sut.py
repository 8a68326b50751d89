"""The loopback system under test on its own: ``siplab sut`` and ``siplab burst``.

The real backend's run (:func:`real.backend.run_calls`) starts the answering side,
places its planned calls and stops. Here the same answering side
(:class:`real.system.SystemUnderTest`: Kamailio with its generated config, the
agents, the RTP relay) is started alone and *served* until it is told to stop, so
any client -- SIPp, a softphone, the Locust users of :mod:`loadgen.locustfile` --
can be pointed at it::

    client ──INVITE──► sip:agent@127.0.0.1:<sip> ──► Kamailio ──► agent(s)
       │                                                 │
       └── (optional) control: TCP 127.0.0.1:<control> ──┴── RTP relay, plan header

A client that only speaks SIP just dials the URI (media then flows directly
between it and the agent). A caller that wants the relay's impairments and the
voice agent's planned replies asks the control port first, one JSON line per
request (:mod:`lab.proc.lines` framing):

- ``{"op": "open", "call": k, "rep": r, "index": i}`` → ``{"ev": "opened", "call": k,
  "relay": {"agent_port", "caller_port"}, "headers": {...}}``: the relay's port pairs
  for call ``k`` and the INVITE headers to send (``X-Siplab-Relay``, and, when
  ``rep``/``index`` name a call of the experiment's plan, ``X-Siplab-Plan`` with
  that call's script under the number ``k``, :mod:`real.plan_header`);
- ``{"op": "close", "call": k}`` → ``{"ev": "closed", "call": k, "up", "down"}``:
  the relay's counters per direction (:mod:`real.network`).

Every process is bounded (it ends by itself after ``lifetime_s``) and stopped, in
reverse order, by :meth:`ServedSut.stop`; the watchdog (:mod:`real.watchdog`) ends
the serving loop when one of them dies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import selectors
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from lab.backend import Replication
from lab.plan import CallPlan, Plan, make_plan
from lab.proc.lines import Event, LineReader, encode
from lab.records import CALL_SCHEMA, STEP_SCHEMA, TURN_SCHEMA
from lab.results import conform, timeseries
from lab.spec import Experiment
from real import plan_header
from real.agent import agent_processes
from real.ai import turn_rows
from real.credentials import KEY_ENV, withheld
from real.network import NetworkEmulator
from real.system import SystemUnderTest
from real.watchdog import ComponentDied, components, first_dead

HOST = "127.0.0.1"
LIFETIME_S = 24 * 3600.0  # every process of a served SUT ends by itself after this long


class ServedSut:
    """Kamailio, the agents and the RTP relay of ``exp``, served until stopped.

    Parameters
    ----------
    exp
        The experiment (``deployment``, ``real.sip_port``, ``seed``).
    workdir
        Configs and logs of every process.
    base_dir
        Where relative paths of the experiment are resolved (its file's folder).
    concurrent
        Calls expected at once (sizes the voice-agent pool); default: the peak of the
        experiment's own plan, at most ``real.max_concurrent``.
    lifetime_s
        Every process ends by itself after this long.
    """

    def __init__(self, exp: Experiment, workdir: Path, *, base_dir: Path | None = None,
                 concurrent: int | None = None, lifetime_s: float = LIFETIME_S) -> None:
        self.exp, self.base_dir, self.lifetime_s = exp, base_dir, lifetime_s
        self.workdir = Path(workdir).resolve()
        self.concurrent = concurrent
        self.started: list[Any] = []
        self.plans: dict[int, Plan] = {}
        self.sut: SystemUnderTest | None = None
        self.network: NetworkEmulator | None = None
        self.uri = ""
        self.t_up = time.monotonic()  # when everything was up (ComponentDied's clock)
        self.ports: dict[str, Any] = {}
        self._stack = contextlib.ExitStack()
        self._listener: socket.socket | None = None
        self._selector = selectors.DefaultSelector()
        self._clients: dict[int, tuple[socket.socket, LineReader]] = {}

    def plan(self, rep: int) -> Plan:
        """The experiment's call plan of replication ``rep`` (drawn once)."""
        if rep not in self.plans:
            self.plans[rep] = make_plan(self.exp, rep, self.base_dir)
        return self.plans[rep]

    def call_plan(self, rep: int, index: int, call_id: int) -> CallPlan | None:
        """Call ``index`` (modulo its length) of replication ``rep``, numbered ``call_id``."""
        plan = self.plan(rep)
        if not len(plan):
            return None
        return dataclasses.replace(plan[index % len(plan)], call_id=call_id)

    def start(self) -> dict[str, Any]:
        """Start everything; return ``{"sip_uri", "ports", "workdir"}`` (``siplab sut``'s line)."""
        from real.backend import _peak  # the run sizes its voice agents the same way

        self.workdir.mkdir(parents=True, exist_ok=True)
        plan = list(self.plan(0))
        answer_s = self.exp.deployment.agent.answer_ms / 1000.0
        peak = self.concurrent or _peak(plan, answer_s, self.exp)
        secrets = self._stack.enter_context(withheld())
        try:
            sut = SystemUnderTest(self.exp, plan, self.workdir, self.lifetime_s, self.started,
                                  secrets={k: v for k, v in secrets.items() if k == KEY_ENV})
            self.sut = sut
            proxy = sut.start(agent_processes(max(1, peak)))
            self.network = sut.start_relay(deadline=time.monotonic() + self.lifetime_s)
            self._listen()
        except BaseException:
            self.stop()
            raise
        assert self._listener is not None
        self.uri = f"sip:agent@{HOST}:{proxy.sip_port}"
        self.t_up = time.monotonic()
        self.ports = {"sip": proxy.sip_port, "agents": sut.agent_ports,
                      "control": self._listener.getsockname()[1]}
        if sut.human is not None:
            self.ports["human"] = sut.human.sip_port
        return {"sip_uri": self.uri, "ports": self.ports, "workdir": str(self.workdir)}

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        sock.listen(64)
        sock.setblocking(False)
        self._listener = sock
        self._selector.register(sock, selectors.EVENT_READ, None)

    def serve(self, until: Callable[[], bool], poll_s: float = 0.1) -> None:
        """Answer control requests until ``until()`` holds.

        Raises
        ------
        real.watchdog.ComponentDied
            When a process of the SUT has died (the others are still running:
            :meth:`stop` them).
        """
        assert self.sut is not None and self.network is not None
        watch = components(self.sut, self.network, [])
        while not until():
            if (dead := first_dead(watch)) is not None:
                raise ComponentDied(dead, 0, time.monotonic() - self.t_up)
            for key, _ in self._selector.select(poll_s):
                if key.data is None:
                    self._accept()
                else:
                    self._read(key.data)

    def _accept(self) -> None:
        assert self._listener is not None
        with contextlib.suppress(BlockingIOError):
            conn, _ = self._listener.accept()
            reader = LineReader(conn.fileno())
            self._clients[conn.fileno()] = (conn, reader)
            self._selector.register(conn, selectors.EVENT_READ, conn.fileno())

    def _read(self, fd: int) -> None:
        conn, reader = self._clients[fd]
        try:
            requests = reader.read()
        except ValueError:  # not JSON: drop the client
            requests, reader.closed = [], True
        for req in requests:
            reply = self.control(req)
            try:
                conn.setblocking(True)
                conn.sendall(encode(reply))
                conn.setblocking(False)
            except OSError:
                reader.closed = True
                break
        if reader.closed:
            self._selector.unregister(conn)
            del self._clients[fd]
            conn.close()

    def control(self, req: Event) -> Event:
        """One control request's answer (see the module docstring)."""
        assert self.sut is not None and self.network is not None
        op, call = req.get("op"), req.get("call")
        if not isinstance(call, int):
            return {"ev": "error", "error": "a request names its call by an integer 'call'"}
        try:
            if op == "open":
                relay = self.network.open(call, self.sut.agent_media())
                headers = {"X-Siplab-Relay": str(relay["caller_port"])}
                rep, index = req.get("rep"), req.get("index")
                if isinstance(rep, int) and isinstance(index, int):
                    cp = self.call_plan(rep, index, call)
                    if cp is not None:
                        headers[plan_header.HEADER] = plan_header.encode(cp)
                return {"ev": "opened", "call": call, "relay": relay, "headers": headers}
            if op == "close":
                return {**self.network.close(call), "ev": "closed", "call": call}
        except RuntimeError as exc:
            return {"ev": "error", "call": call, "error": str(exc)}
        return {"ev": "error", "call": call, "error": f"unknown op {op!r}"}

    def facts(self) -> dict[str, Any]:
        """What the agent side did (stops the agents)."""
        return self.sut.facts() if self.sut is not None else {}

    def stop(self) -> None:
        """Stop every process, in reverse order of starting (idempotent)."""
        for conn, _ in self._clients.values():
            conn.close()
        self._clients.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.close()
        try:
            for proc in reversed(self.started):
                proc.stop()
            self.started.clear()
        finally:
            self._stack.close()

    def __enter__(self) -> ServedSut:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def burst_replication(exp: Experiment, calls: Iterable[dict[str, Any]], run_start: float,
                      workdir: Path, base_dir: Path | None = None) -> Replication:
    """The tables of a Locust burst from its callers' reports.

    Each item of ``calls`` is one line a Locust user wrote (:mod:`loadgen.locustfile`):
    ``call_id`` (unique over the burst), ``rep`` and ``index`` (the experiment's
    planned call it ran), ``event`` (the caller process's ``done`` event) and
    ``counters`` (the relay's, or None). ``start_s`` is the INVITE's time after
    ``run_start`` (``time.monotonic()``, one clock for the machine).
    """
    from real.backend import make_record

    plans: dict[int, Plan] = {}
    records, caller_turns, steps = [], [], []
    for line in calls:
        rep, event = int(line["rep"]), line["event"]
        if rep not in plans:
            plans[rep] = make_plan(exp, rep, base_dir)
        plan = plans[rep]
        base = plan[int(line["index"]) % len(plan)]
        t0 = event.get("invite_t") or line.get("t_dial") or run_start
        cp = dataclasses.replace(base, call_id=int(line["call_id"]), start_s=t0 - run_start)
        records.append(make_record(cp, event, run_start, exp.deployment.media,
                                   line.get("counters")))
        caller_turns += [{"call_id": cp.call_id, **t} for t in event.get("turns") or []]
        for st in event.get("steps") or []:
            end = st.get("t_end")
            steps.append({"call_id": cp.call_id, "step": int(st["step"]), "kind": st["kind"],
                          "start_s": st["t_start"] - run_start,
                          "duration_ms": (end - st["t_start"]) * 1e3 if end else float("nan"),
                          "ok": bool(st["ok"])})
    table = conform(pd.DataFrame(records).assign(replication=0), CALL_SCHEMA)
    table = table.sort_values(["start_s", "call_id"], kind="stable").reset_index(drop=True)
    turns = pd.DataFrame(turn_rows(caller_turns, workdir, run_start))
    if len(turns):
        turns = turns.sort_values(["call_id", "turn"], kind="stable")
    sim_s = float(table["end_s"].max()) if len(table) else 0.0
    return Replication(
        calls=table, turns=conform(turns.assign(replication=0), TURN_SCHEMA),
        steps=conform(pd.DataFrame(steps).assign(replication=0), STEP_SCHEMA),
        timeseries=timeseries(table, sim_s, exp.deployment.trunk.channels),
        facts={"sim_s": sim_s, "events": 0})
