"""The ``siplab`` command line (CONTRACT.md, "Command line").

Exit status: 0 done; 2 bad input (one line on stderr naming the key path and
the problem, nothing written); 1 a failure while running; 130 after Ctrl-C
(finished calls are kept in the run directory).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from lab.errors import SpecError

# Only the standard library and lab.errors are imported here: each command imports what
# it needs, so `siplab erlang-b` or `--help` answer without loading pandas or pydantic.


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"siplab: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="siplab", description="Simulation and load-test lab for SIP voice-AI "
                "telephony.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run an experiment on a backend and write its results")
    run.add_argument("experiment", type=Path, help="experiment YAML file")
    run.add_argument("--backend", default="twin",
                     help="a registered backend: twin (default), real, or a plug-in's")
    run.add_argument("--out", type=Path, default=None, help="results directory "
                     "(default runs/<name>-<timestamp>/)")
    run.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="a.b.c=VALUE", help="override a key with a YAML scalar")
    run.add_argument("--seed", type=int, default=None)
    run.add_argument("--replications", type=int, default=None)
    run.add_argument("--jobs", type=int, default=None, help="processes for twin replications")
    run.add_argument("--force", action="store_true", help="lift the real backend's run caps")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    eb = sub.add_parser("erlang-b", help="Erlang B blocking probability")
    eb.add_argument("--channels", type=int, required=True)
    eb.add_argument("--erlangs", type=float, required=True)

    ec = sub.add_parser("erlang-c", help="Erlang C wait probability and mean wait")
    ec.add_argument("--agents", type=int, required=True)
    ec.add_argument("--erlangs", type=float, required=True)
    ec.add_argument("--mean-service-ms", type=float, required=True)

    em = sub.add_parser("emodel", help="ITU-T G.107 E-model R and MOS")
    em.add_argument("--codec", default="G711")
    em.add_argument("--plc", action="store_true")
    em.add_argument("--delay-ms", type=float, required=True)
    em.add_argument("--loss", type=float, required=True)
    em.add_argument("--burst-r", type=float, default=1.0)

    rep = sub.add_parser("report", help="execute notebooks/NAME.ipynb, write reports/NAME.html")
    rep.add_argument("name")
    rep.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                     metavar=("KEY", "VALUE"))
    rep.add_argument("--out-dir", type=Path, default=None)
    _add_sut_commands(sub)
    _add_sweep_commands(sub)
    _add_nightly_command(sub)
    _add_calibrate_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(COMMANDS[args.command](args) or 0)
    except SpecError as exc:
        print(f"siplab: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("siplab: interrupted", file=sys.stderr)
        return 130


def _bad(key: str, problem: str) -> SpecError:
    return SpecError(key, problem)


def _run(args: argparse.Namespace) -> int:
    from lab.backend import BackendUnavailable
    from lab.runner import RunInterrupted, run_experiment
    from lab.spec import load_experiment

    if args.replications is not None and args.replications < 1:
        raise _bad("--replications", f"must be an integer > 0, got {args.replications}")
    if args.seed is not None and args.seed < 0:
        raise _bad("--seed", f"must be an integer >= 0, got {args.seed}")
    if args.jobs is not None and args.jobs < 1:
        raise _bad("--jobs", f"must be an integer > 0, got {args.jobs}")
    exp = load_experiment(args.experiment, args.overrides, seed=args.seed,
                          replications=args.replications)
    try:
        summary = run_experiment(exp, backend=args.backend, out_dir=args.out,
                                 base_dir=args.experiment.parent, force=args.force,
                                 jobs=args.jobs, show_progress=not args.quiet)
    except RunInterrupted as exc:
        print(f"siplab: {exc}", file=sys.stderr)
        print(exc.out_dir / "summary.json")
        return 130 if isinstance(exc.cause, KeyboardInterrupt) else 1
    except BackendUnavailable as exc:
        print(f"siplab: {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 0


def _print(data: dict[str, Any]) -> int:
    print(json.dumps(data, allow_nan=False))  # Infinity and NaN are not JSON
    return 0


def _as_option(exc: ValueError, default: str) -> SpecError:
    """A library's ``name: problem`` error, as the command-line option it came from."""
    name, sep, problem = str(exc).partition(": ")
    if sep and name.replace("_", "").isalnum():
        return _bad("--" + name.replace("_", "-"), problem)
    return _bad(default, str(exc))


def _finite(option: str, value: float, *, low: float = 0.0, strict: bool = False) -> float:
    ok = math.isfinite(value) and (value > low if strict else value >= low)
    if not ok:
        raise _bad(option, f"must be a finite number {'>' if strict else '>='} {low:g}, "
                   f"got {value!r}")
    return value


def _erlang_b(args: argparse.Namespace) -> int:
    from lab.erlang import erlang_b

    if args.channels < 1:
        raise _bad("--channels", f"must be an integer > 0 (a trunk of no channels blocks "
                   f"every call), got {args.channels}")
    erlangs = _finite("--erlangs", args.erlangs)
    return _print({"blocking": erlang_b(args.channels, erlangs)})


def _erlang_c(args: argparse.Namespace) -> int:
    from lab.erlang import erlang_c, erlang_c_mean_wait

    if args.agents < 1:
        raise _bad("--agents", f"must be an integer > 0, got {args.agents}")
    erlangs = _finite("--erlangs", args.erlangs)
    service_ms = _finite("--mean-service-ms", args.mean_service_ms, strict=True)
    if erlangs >= args.agents:
        raise _bad("--erlangs", f"{erlangs:g} erlangs on {args.agents} agents is an unstable "
                   "queue (waits grow without bound); offer less than one erlang per agent")
    p = erlang_c(args.agents, erlangs)
    w = erlang_c_mean_wait(args.agents, erlangs, service_ms / 1000.0)
    return _print({"wait_probability": p, "mean_wait_ms": w * 1000.0})


def _emodel(args: argparse.Namespace) -> int:
    from lab.emodel import emodel

    _finite("--delay-ms", args.delay_ms)
    if not (math.isfinite(args.loss) and 0.0 <= args.loss <= 1.0):
        raise _bad("--loss", f"must be a fraction in [0, 1], got {args.loss}")
    _finite("--burst-r", args.burst_r, strict=True)
    try:
        return _print(emodel(args.codec, args.plc, args.delay_ms, args.loss, args.burst_r))
    except ValueError as exc:
        raise _as_option(exc, "--codec") from exc


def _report(args: argparse.Namespace) -> int:
    from lab.report import ReportError, ReportFailed, run_report

    params: dict[str, str] = {}
    for key, value in args.parameter:
        if key in params:
            raise _bad(f"-p {key}", f"given twice ({params[key]!r} and {value!r}); give it once")
        params[key] = value
    try:
        path = run_report(args.name, params, out_dir=args.out_dir)
    except ReportError as exc:
        raise _bad(exc.key, exc.problem) from exc
    except ReportFailed as exc:
        print(f"siplab: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


COMMANDS = {"run": _run, "erlang-b": _erlang_b, "erlang-c": _erlang_c, "emodel": _emodel,
            "report": _report}


def _add_sut_commands(sub: Any) -> None:
    """``siplab sut`` and ``siplab burst`` (:mod:`lab.sut`, :mod:`lab.burst`)."""
    sut = sub.add_parser("sut", help="serve the experiment's loopback system under test "
                         "in the foreground")
    sut.add_argument("experiment", type=Path, help="experiment YAML file")
    sut.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="a.b.c=VALUE", help="override a key with a YAML scalar")
    sut.add_argument("--workdir", type=Path, default=None,
                     help="keep configs and logs here (default: a temporary directory)")
    b = sub.add_parser("burst", help="Locust users placing the experiment's calls on "
                       "the loopback SUT")
    b.add_argument("experiment", type=Path, help="experiment YAML file")
    b.add_argument("--users", type=int, required=True, help="Locust users (concurrent callers)")
    b.add_argument("--spawn-rate", type=float, required=True, help="users started per second")
    b.add_argument("--run-time", required=True, help="90, 90s, 5m, 1h30m")
    b.add_argument("--processes", type=int, default=None,
                   help="Locust worker processes (-1: one per core)")
    b.add_argument("--out", type=Path, default=None, help="results directory "
                   "(default runs/<name>-<timestamp>/)")
    b.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="a.b.c=VALUE", help="override a key with a YAML scalar")
    b.add_argument("--live", action="store_true",
                   help="allow a live trunk target (with the caps siplab run applies)")


def _sut(args: argparse.Namespace) -> int:
    from lab.spec import load_experiment
    from lab.sut import serve

    exp = load_experiment(args.experiment, args.overrides)
    return serve(exp, args.experiment.parent.resolve(), args.workdir)


def _burst(args: argparse.Namespace) -> int:
    from lab.burst import burst

    return burst(args.experiment, args.overrides, users=args.users,
                 spawn_rate=args.spawn_rate, run_time=args.run_time,
                 processes=args.processes, out=args.out, live=args.live)


COMMANDS.update({"sut": _sut, "burst": _burst})


def _add_sweep_commands(sub: Any) -> None:
    """``siplab sweep`` and ``siplab capacity`` (:mod:`lab.sweep`, :mod:`lab.slo`)."""
    sw = sub.add_parser("sweep", help="an experiment over a grid of settings x replications, "
                        "on Dask; one tidy Parquet table")
    sw.add_argument("experiment", type=Path, help="experiment YAML file")
    sw.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2,...",
                    help="a dotted key and its values (YAML scalars); repeatable")
    sw.add_argument("--replications", type=int, default=None)
    sw.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="a.b.c=VALUE", help="override a key for every point")
    _task_options(sw)
    sw.add_argument("--out", type=Path, required=True, help="the table, FILE.parquet")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    cap = sub.add_parser("capacity", help="the fewest channels and AI slots meeting every "
                         "SLO, twin-confirmed")
    cap.add_argument("experiment", type=Path, help="experiment YAML file")
    cap.add_argument("--slo", action="append", required=True, metavar="EXPR",
                     help="METRIC OP NUMBER, e.g. voice_to_voice_ms.p95<=1500; repeatable")
    cap.add_argument("--peak-cps", type=float, default=None,
                     help="the busy hour's Poisson call rate (default: the profile's peak)")
    cap.add_argument("--replications", type=int, default=None,
                     help="replications per candidate to start with (default: the "
                     "experiment's, at least 3)")
    cap.add_argument("--max-replications", type=int, default=None,
                     help="replications per candidate at most (default: 4 x --replications)")
    cap.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="a.b.c=VALUE", help="override a key with a YAML scalar")
    _task_options(cap)
    cap.add_argument("--quiet", action="store_true", help="no progress lines")


def _task_options(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None,
                       help="processes of the local Dask cluster (default: one per core)")
    where.add_argument("--scheduler", default=None, metavar="ADDR",
                       help="a Dask scheduler, tcp://HOST:8786")
    where.add_argument("--serial", action="store_true", help="run in this process, no Dask")


def _tasks(args: argparse.Namespace, label: str, progress: bool) -> Any:
    from lab.sweep import Tasks

    for opt in ("replications", "workers"):
        if (value := getattr(args, opt)) is not None and value < 1:
            raise _bad(f"--{opt}", f"must be an integer > 0, got {value}")
    return Tasks(workers=args.workers, scheduler=args.scheduler, serial=args.serial,
                 show_progress=progress and not args.quiet, label=label)


def _sweep(args: argparse.Namespace) -> int:
    from lab.sweep import check_out_file, parse_grid, point_experiments, sweep, write_table

    where = _tasks(args, "sweep", progress=True)
    check_out_file(args.out)
    grid = parse_grid(args.grid)
    exps = point_experiments(args.experiment, grid, args.overrides,
                             replications=args.replications)
    try:
        res = sweep(args.experiment, grid, exps=exps, where=where)
    except (OSError, RuntimeError, TimeoutError) as exc:  # no cluster, a scheduler away
        print(f"siplab: sweep failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    write_table(res.table, args.out)
    rows = len(res.table)
    if res.failed:
        print(f"siplab: {len(res.failed)} of {res.tasks} runs (point x replication) failed; "
              f"the table's error column says why. First: {res.failed[0]}", file=sys.stderr)
    if res.interrupted:
        print(f"siplab: interrupted: kept {rows} of {res.tasks} runs (point x replication) "
              f"in {args.out}", file=sys.stderr)
        return 130
    print(args.out)
    return 1 if res.failed else 0


def _capacity(args: argparse.Namespace) -> int:
    from lab.results import _json_safe
    from lab.slo import dimension, parse_slo
    from lab.spec import load_experiment

    where = _tasks(args, "capacity", progress=False)
    slos = [parse_slo(expr) for expr in args.slo]
    if args.peak_cps is not None:
        _finite("--peak-cps", args.peak_cps, strict=True)
    if args.replications is not None and args.replications < 2:
        raise _bad("--replications", f"must be an integer >= 2 (a confidence interval needs "
                   f"two replications), got {args.replications}")
    if args.max_replications is not None and args.max_replications < max(
            2, args.replications or 2):
        raise _bad("--max-replications", f"must be an integer >= --replications, got "
                   f"{args.max_replications}")
    exp = load_experiment(args.experiment, args.overrides)
    log = None if args.quiet else (lambda m: print(f"siplab: capacity: {m}", file=sys.stderr))
    try:
        answer = dimension(exp, slos, peak_cps=args.peak_cps, replications=args.replications,
                           max_replications=args.max_replications, where=where,
                           base_dir=args.experiment.parent, log=log)
    except (OSError, RuntimeError, TimeoutError) as exc:
        print(f"siplab: capacity failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    _print(_json_safe(answer))
    if not answer["confirmed"]:
        print(f"siplab: capacity: not confirmed: {answer['reason']}", file=sys.stderr)
        return 1
    return 0


COMMANDS.update({"sweep": _sweep, "capacity": _capacity})


def _add_nightly_command(sub: Any) -> None:
    """``siplab nightly`` (:mod:`lab.nightly`)."""
    n = sub.add_parser("nightly", help="a suite of reports with papermill, compared with its "
                       "baselines; exit 3 on a regression")
    n.add_argument("suite", help="suite YAML file, or a built-in name (lab/suites/NAME.yaml)")
    n.add_argument("--quick", action="store_true", help="the suite's small parameters")
    n.add_argument("--out", type=Path, default=None,
                   help="output directory (default reports/nightly/<date>/)")
    n.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="a.b.c=VALUE", help="override a key of every experiment")
    n.add_argument("--update-baseline", action="store_true",
                   help="write the baselines from this run's replication values")
    n.add_argument("--baselines", type=Path, default=None,
                   help="baseline directory (default reports/baselines/)")


def _nightly(args: argparse.Namespace) -> int:
    from lab.nightly import run_nightly

    return run_nightly(args.suite, quick=args.quick, out=args.out, overrides=args.overrides,
                       update_baseline=args.update_baseline, baselines=args.baselines)


COMMANDS.update({"nightly": _nightly})


def _add_calibrate_commands(sub: Any) -> None:
    """``siplab calibrate`` (:mod:`lab.calibrate`)."""
    cal = sub.add_parser("calibrate", help="fit the twin's distributions to a real run's "
                         "records; write an experiment YAML siplab run accepts")
    cal.add_argument("run_dir", type=Path, help="a run's results directory")
    cal.add_argument("--out", type=Path, default=None,
                     help="the calibrated experiment (default RUN_DIR/calibrated.yaml)")


def _calibrate(args: argparse.Namespace) -> int:
    from lab.calibrate import calibrate

    out, _ = calibrate(args.run_dir, args.out)
    print(out)
    return 0


COMMANDS.update({"calibrate": _calibrate})


if __name__ == "__main__":
    raise SystemExit(main())
