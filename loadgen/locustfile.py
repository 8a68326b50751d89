"""Locust users that place an experiment's calls on a SIP system under test.

Run it through ``siplab burst EXP.yaml --users N --spawn-rate R --run-time T`` (which
starts the loopback SUT itself), or by hand against ``siplab sut``::

    siplab sut EXP.yaml > sut.json &          # one JSON line once the SUT is up
    SIPLAB_EXPERIMENT=EXP.yaml locust -f loadgen/locustfile.py \\
        --siplab-sut "$(head -1 sut.json)" --headless -u 20 -r 5 -t 60s --csv out/locust

Options (Locust custom arguments, also in its web UI) and environment:

- ``--siplab-sut``: where to call -- ``siplab sut``'s whole JSON line (then each
  call also gets the SUT's RTP relay and, for a voice agent, its planned replies
  from the SUT's control port), or a plain ``sip:`` URI (``$SIPLAB_SUT``);
- ``--siplab-experiment``: the experiment whose scenarios the users run
  (``$SIPLAB_EXPERIMENT``; only the environment variable also brings the experiment's
  :class:`ExperimentShape`, because Locust picks its shape class when it imports this
  file, before it parses arguments); ``$SIPLAB_BASE_DIR`` resolves its relative paths;
- ``--siplab-out``: a directory for the callers' reports (``calls.<worker>.jsonl``,
  which ``siplab burst`` turns into siplab's result files) and their logs.

Each user is one caller: it takes the next call of the experiment's plan (the
script of replication = this Locust worker's index), places it through a pjsua2
caller process (:mod:`loadgen.callers.gevent_pool`; SIP never runs in a Locust
process), waits for its end, and places the next. Measurements go to Locust's one
event bus as ``request_type`` ``SIP``: ``setup`` (INVITE → 200 OK, ms; a call not
answered fails with its final SIP code, ``SIP 503``, or ``no final response``),
``turn`` (each AI turn's voice-to-voice latency, ms; failed with ``no reply``) and
``bye`` (BYE → its 200, ms). Locust's percentiles are bucketed (two significant
digits): the exact ones are siplab's, from the reports.

Distributed: ``--processes P`` or ``--master``/``--worker``; each Locust process
has its own caller processes and its own reports file.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.lock
from locust import LoadTestShape, User, constant, events, task
from locust.env import Environment

from lab.plan import CallPlan, Plan, make_plan
from lab.proc.lines import encode
from lab.spec import Experiment, load_experiment
from loadgen.callers.gevent_pool import GeventCallerPool
from loadgen.callers.jobs import PromptBook, job_steps
from loadgen.shape import UserShape, wants_shape

REQUEST_TYPE = "SIP"
PAUSE_AFTER_FAILURE_S = 1.0  # a user whose call was not answered waits this long
CALL_MARGIN_S = 60.0  # beyond a call's planned length, its longest wait for a report
IDS_PER_WORKER = 10_000_000  # call ids: Locust worker index * this + sequence


class SipError(Exception):
    """A call that failed, named by its SIP status (Locust groups failures by message)."""


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument("--siplab-sut", default=os.environ.get("SIPLAB_SUT", ""),
                        help="siplab sut's JSON line, or a sip: URI to call")
    parser.add_argument("--siplab-experiment", default=os.environ.get("SIPLAB_EXPERIMENT", ""),
                        help="the experiment YAML whose scenarios the users run")
    parser.add_argument("--siplab-out", default=os.environ.get("SIPLAB_OUT", ""),
                        help="directory for the callers' reports and logs")


class Control:
    """The SUT's control port (:mod:`real.sut`), one request at a time per Locust process."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10.0)
        self.file = self.sock.makefile("rb")
        self.lock = gevent.lock.Semaphore()

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.sock.sendall(encode(request))
            reply: dict[str, Any] = json.loads(self.file.readline())
        return reply


class Burst:
    """What the users of one Locust process share: the SUT, the plan, the callers."""

    def __init__(self, environment: Environment) -> None:
        opts = environment.parsed_options
        sut = str(getattr(opts, "siplab_sut", "") or "")
        if not sut:
            raise RuntimeError("--siplab-sut (or $SIPLAB_SUT) is needed: siplab sut's "
                               "JSON line or a sip: URI")
        info: dict[str, Any] = (json.loads(sut) if sut.lstrip().startswith("{")
                                else {"sip_uri": sut})
        self.uri = str(info["sip_uri"])
        port = (info.get("ports") or {}).get("control")
        self.control = Control(int(port)) if port else None
        path = str(getattr(opts, "siplab_experiment", "") or "")
        base = os.environ.get("SIPLAB_BASE_DIR")
        self.base_dir = Path(base) if base else (Path(path).parent if path else None)
        self.exp = load_experiment(path) if path else Experiment()
        runner = environment.runner
        self.worker = int(getattr(runner, "worker_index", 0) or 0)
        self.plan: Plan = make_plan(self.exp, self.worker, self.base_dir)
        self.seq = 0
        out = str(getattr(opts, "siplab_out", "") or "")
        self.out = Path(out).resolve() if out else None
        tag = f"w{self.worker}-{os.getpid()}"
        work = (self.out / tag) if self.out else Path("/tmp") / f"siplab-locust-{tag}"
        work.mkdir(parents=True, exist_ok=True)
        self.report = open(self.out / f"calls.{tag}.jsonl", "a") if self.out else None  # noqa: SIM115
        needs_voice = any(cp.turns for cp in (self.plan[i] for i in range(min(50, len(self.plan)))))
        self.prompts = PromptBook(work / "prompts") if needs_voice else None
        run_time = getattr(opts, "run_time", None) or 24 * 3600
        stop = getattr(opts, "stop_timeout", None) or 0
        self.pool = GeventCallerPool(work, time.monotonic() + float(run_time) + float(stop)
                                     + 2 * CALL_MARGIN_S, on_done=self.done)

    def next_call(self) -> tuple[int, int, CallPlan]:
        """``(call_id, plan index, plan)`` of this process's next call."""
        index = self.seq
        self.seq += 1
        if not len(self.plan):
            raise RuntimeError("the experiment's plan has no calls")
        return self.worker * IDS_PER_WORKER + index, index, self.plan[index % len(self.plan)]

    def done(self, meta: dict[str, Any], event: dict[str, Any]) -> None:
        """A finished call: close its relay path, keep its report, fire Locust's events."""
        gevent.spawn(self._finish, meta, event)

    def _finish(self, meta: dict[str, Any], event: dict[str, Any]) -> None:
        counters = None
        if self.control is not None and meta.get("relayed"):
            try:
                counters = self.control.ask({"op": "close", "call": int(event["id"])})
            except (OSError, ValueError):
                counters = None
        if self.report is not None:
            self.report.write(json.dumps({"call_id": int(event["id"]), "rep": self.worker,
                                          "index": meta.get("index", 0),
                                          "t_dial": meta.get("t_dial"), "event": event,
                                          "counters": counters}) + "\n")
            self.report.flush()
        fire(event)

    def close(self) -> None:
        self.pool.quit()
        gevent.sleep(0.5)  # the last reports' relay counters
        self.pool.stop()
        if self.report is not None:
            self.report.close()


_burst: Burst | None = None
_making = gevent.lock.Semaphore()  # users spawned at once: only the first makes it


def burst(environment: Environment) -> Burst:
    """This Locust process's :class:`Burst`, made by its first user (after any fork)."""
    global _burst
    with _making:
        if _burst is None:
            _burst = Burst(environment)
    return _burst


@events.quitting.add_listener
def _quitting(environment: Environment, **_kw: Any) -> None:
    if _burst is not None:
        _burst.close()


def fire(event: dict[str, Any]) -> None:
    """Locust request events of one finished call: ``setup``, each ``turn``, ``bye``."""
    invite_t, final_t = event.get("invite_t"), event.get("final_t")
    code = int(event.get("final_code") or 0)
    answered = 200 <= code < 300 and not event.get("error")
    took = (final_t - invite_t) * 1e3 if invite_t and final_t else 0.0
    failure = None
    if not answered:
        why = event.get("error") or (f"SIP {code} {event.get('reason') or ''}".strip()
                                     if code else "no final response")
        failure = SipError(why)
    events.request.fire(request_type=REQUEST_TYPE, name="setup", response_time=took,
                        response_length=0, exception=failure, context={"code": code})
    if not answered:
        return
    for t in event.get("turns") or []:
        v2v = t.get("voice_to_voice_ms")
        events.request.fire(request_type=REQUEST_TYPE, name="turn",
                            response_time=float(v2v) if v2v is not None else 0.0,
                            response_length=0,
                            exception=None if v2v is not None else SipError("no reply"),
                            context={"turn": t.get("turn")})
    bye_t, bye_ok_t = event.get("bye_t"), event.get("bye_ok_t")
    if bye_t:
        events.request.fire(request_type=REQUEST_TYPE, name="bye",
                            response_time=(bye_ok_t - bye_t) * 1e3 if bye_ok_t else 0.0,
                            response_length=0,
                            exception=None if bye_ok_t else SipError("BYE not answered"),
                            context={})


class SipCaller(User):
    """One caller placing the experiment's calls back to back (see the module docstring)."""

    wait_time = constant(0)

    @task
    def place_call(self) -> None:
        b = burst(self.environment)
        call_id, index, cp = b.next_call()
        job: dict[str, Any] = {"steps": job_steps(cp, b.prompts)}
        meta: dict[str, Any] = {"index": index, "t_dial": time.monotonic()}
        if b.control is not None:
            opened = b.control.ask({"op": "open", "call": call_id, "rep": b.worker,
                                    "index": index})
            if opened.get("ev") == "opened":
                job["relay"], job["headers"] = opened["relay"], opened["headers"]
                meta["relayed"] = True
        timeout = cp.talk_s + CALL_MARGIN_S + 12.0 * len(job["steps"])
        event = b.pool.call(call_id, b.uri, cp.talk_s, timeout_s=timeout, meta=meta, job=job)
        code = int(event.get("final_code") or 0)
        if not (200 <= code < 300) or event.get("error"):
            gevent.sleep(PAUSE_AFTER_FAILURE_S)


def _shape_experiment() -> tuple[Experiment, Path | None] | None:
    """The experiment named by ``$SIPLAB_EXPERIMENT`` when its arrivals vary over time."""
    path = os.environ.get("SIPLAB_EXPERIMENT")
    if not path:
        return None
    exp = load_experiment(path)
    base = os.environ.get("SIPLAB_BASE_DIR")
    return (exp, Path(base) if base else Path(path).parent) if wants_shape(exp) else None


if (_shaped := _shape_experiment()) is not None:

    class ExperimentShape(LoadTestShape):
        """The experiment's load profile as users over time (:class:`loadgen.shape.UserShape`):
        ``ceil(λ(t) · call_s)`` users, at most ``--users``, spawned at ``--spawn-rate``;
        the test ends with the profile (or at ``--run-time``)."""

        use_common_options = True

        def __init__(self) -> None:
            super().__init__()
            self._shape: UserShape | None = None

        def tick(self) -> tuple[int, float] | None:
            if self._shape is None:
                assert _shaped is not None and self.runner is not None
                opts = self.runner.environment.parsed_options
                users = getattr(opts, "num_users", None)
                rate = float(getattr(opts, "spawn_rate", None) or 1.0)
                self._shape = UserShape.of(_shaped[0], _shaped[1], spawn_rate=rate,
                                           max_users=int(users) if users else None)
            return self._shape.tick(self.get_run_time())

