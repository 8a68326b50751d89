"""``siplab burst``: Locust users placing an experiment's calls on the loopback SUT.

What runs where, and why::

    siplab burst (this process)          locust (a subprocess, its own session)
    ├─ the SUT (real/, via the registry) ├─ master / --processes workers (gevent)
    │   Kamailio, agents, RTP relay      │   one SipCaller user = one caller at a time
    │   control port  ◄──────────────────┤   (loadgen/locustfile.py)
    └─ the results, once Locust is done  └─ pjsua2 caller processes, 4 calls each
                                             (loadgen/callers), spoken to over pipes

Locust is gevent: importing it monkey-patches the process, and pjsua2's C threads and
blocking I/O cannot be patched, so SIP never runs inside a Locust process -- the users
only orchestrate caller processes over pipes read by greenlets. The same reason keeps
``import locust`` out of this process (and out of any notebook kernel, which it
hangs): Locust always runs as a subprocess.

DIR receives Locust's own reports (``locust_stats.csv``, ``locust_failures.csv``,
``locust_stats_history.csv``, ``locust.html``, ``locust.log``), the callers' reports
(``burst/calls.*.jsonl``) and, once Locust has exited, siplab's result files from
them (``calls.parquet``, ``turns.parquet``, ``steps.parquet``, ``timeseries.parquet``,
``summary.json``, ``experiment.resolved.yaml``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from lab.errors import SpecError
from lab.proc.child import group_alive

LOCUST_STOP_S = 15.0  # beyond the longest planned call: Locust's --stop-timeout
LOCUST_QUIT_S = 60.0  # after Ctrl-C, Locust gets this long to stop its users


def run_time_s(text: str) -> float:
    """Locust's ``--run-time`` (``90``, ``90s``, ``5m``, ``1h30m``) in seconds."""
    m = re.fullmatch(r"\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or m is None:
        raise SpecError("--run-time", f"must be like 90, 90s, 5m or 1h30m, got {text!r}")
    h, mi, s = m.groups()
    total = int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)
    if total <= 0:
        raise SpecError("--run-time", f"must be > 0, got {text!r}")
    return total


def locustfile() -> Path:
    """``loadgen/locustfile.py``, found without importing ``loadgen``."""
    spec = importlib.util.find_spec("loadgen")
    if spec is None or not spec.submodule_search_locations:
        raise SpecError("loadgen", "the loadgen package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "locustfile.py"


def locust_argv(*, users: int, spawn_rate: float, run_s: float, processes: int | None,
                out: Path, sut: dict[str, Any], stop_s: float) -> list[str]:
    """The Locust command line of a headless burst writing its reports into ``out``."""
    argv = [sys.executable, "-m", "locust", "-f", str(locustfile()), "--headless",
            "--users", str(users), "--spawn-rate", f"{spawn_rate:g}",
            "--run-time", f"{math.ceil(run_s)}s", "--stop-timeout", f"{math.ceil(stop_s)}",
            "--csv", str(out / "locust"), "--html", str(out / "locust.html"),
            "--exit-code-on-error", "0", "--only-summary",
            "--siplab-sut", json.dumps(sut), "--siplab-out", str(out / "burst")]
    if processes is not None:
        argv += ["--processes", str(processes)]
    return argv


def _check_args(users: int, spawn_rate: float, processes: int | None) -> None:
    if users < 1:
        raise SpecError("--users", f"must be an integer > 0, got {users}")
    if not (math.isfinite(spawn_rate) and spawn_rate > 0):
        raise SpecError("--spawn-rate", f"must be a finite number > 0, got {spawn_rate!r}")
    if processes is not None and processes < 1 and processes != -1:
        raise SpecError("--processes", f"must be an integer > 0 or -1 (one per core), "
                        f"got {processes}")


def burst(exp_path: Path, overrides: list[str], *, users: int, spawn_rate: float,
          run_time: str, processes: int | None, out: Path | None, live: bool) -> int:
    """``siplab burst``: the SUT, Locust against it, then siplab's result files.

    Returns the exit status: 0 done, 1 a failure while running, 130 after Ctrl-C
    (the finished calls' records are written either way).
    """
    from lab.backend import BackendUnavailable
    from lab.cost import load_pricebook
    from lab.runner import _write, check_out_dir, default_out_dir
    from lab.spec import dump_resolved, load_experiment, unsupported_features
    from lab.sut import check_target, host

    _check_args(users, spawn_rate, processes)
    run_s = run_time_s(run_time)
    exp = load_experiment(exp_path, overrides).model_copy(update={"replications": 1})
    check_target(exp, live)
    for key, why in unsupported_features(exp):
        raise SpecError(key, f"{why} by any backend yet; remove it to run")
    base_dir = exp_path.parent.resolve()
    out = (Path(out) if out is not None else default_out_dir(exp)).resolve()
    check_out_dir(out)
    pricebook = load_pricebook(exp.pricebook, base_dir)
    impl = host()
    try:
        sut = impl.sut(exp, out / "sut", base_dir=base_dir, concurrent=users)
    except BackendUnavailable as exc:
        print(f"siplab: {exc}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    resolved = out / "experiment.resolved.yaml"
    resolved.write_text(dump_resolved(exp))
    env = dict(os.environ, SIPLAB_EXPERIMENT=str(resolved), SIPLAB_BASE_DIR=str(base_dir),
               PYTHONUNBUFFERED="1")
    longest = max((p.talk_s for p in impl_plan(exp, base_dir)), default=0.0)
    stop_s = min(longest, 600.0) + LOCUST_STOP_S
    failure: BaseException | None = None
    code = 0
    wall0 = time.perf_counter()
    run_start = time.monotonic()
    try:
        info = sut.start()
        argv = locust_argv(users=users, spawn_rate=spawn_rate, run_s=run_s,
                           processes=processes, out=out, sut=info, stop_s=stop_s)
        run_start = time.monotonic()
        with open(out / "locust.log", "ab") as log:
            code = _run_locust(argv, env, log, sut, run_s + stop_s + LOCUST_QUIT_S + 60.0)
    except KeyboardInterrupt as exc:
        failure, code = exc, 130
        print("siplab: interrupted", file=sys.stderr)
    except RuntimeError as exc:  # a process of the SUT died, or would not start
        failure, code = exc, 1
        print(f"siplab: {exc}", file=sys.stderr)
    finally:
        sut.stop()
    lines = read_calls(out / "burst")
    rep = impl.burst_replication(exp, lines, run_start, out / "sut", base_dir)
    summary = _write(exp, "real", {0: rep}, out, pricebook, time.perf_counter() - wall0,
                     failure)
    print(summary)
    return code


def impl_plan(exp: Any, base_dir: Path) -> Any:
    """The experiment's plan of replication 0 (for the longest call)."""
    from lab.plan import make_plan

    return make_plan(exp, 0, base_dir)


def _run_locust(argv: list[str], env: dict[str, str], log: IO[bytes], sut: Any,
                bound_s: float) -> int:
    """Run Locust in its own session while the SUT is served; its exit status (1 when it
    failed). Ctrl-C is passed on to Locust, which stops its users (then raises)."""
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)
    end = time.monotonic() + bound_s
    try:
        sut.serve(until=lambda: proc.poll() is not None or time.monotonic() > end)
    except BaseException:
        _stop_group(proc, signal.SIGINT, LOCUST_QUIT_S)
        raise
    if proc.poll() is None:
        _stop_group(proc, signal.SIGTERM, 10.0)
        print("siplab: locust did not finish in time; stopped", file=sys.stderr)
        return 1
    # --processes: the forked workers outlive the master a little (their users' last
    # calls end, their callers drain); the SUT serves them until the group is gone
    gone_by = time.monotonic() + LOCUST_STOP_S + 10.0
    sut.serve(until=lambda: not group_alive(proc.pid) or time.monotonic() > gone_by)
    if group_alive(proc.pid):
        _stop_group(proc, signal.SIGTERM, 5.0)
    if proc.returncode != 0:
        print(f"siplab: locust exited with status {proc.returncode}; see "
              f"{Path(log.name)}", file=sys.stderr)
        return 1
    return 0


def _stop_group(proc: subprocess.Popen[bytes], sig: int, grace_s: float) -> None:
    """Signal Locust's process group, wait up to ``grace_s``, then SIGKILL the group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5.0)


def read_calls(directory: Path) -> list[dict[str, Any]]:
    """Every caller report the Locust processes wrote (``calls.*.jsonl``), in order."""
    from lab.proc.lines import read_file

    lines: list[dict[str, Any]] = []
    for path in sorted(directory.glob("calls.*.jsonl")):
        lines += read_file(path)
    return sorted(lines, key=lambda c: (c.get("t_dial") or 0.0, c.get("call_id", 0)))
