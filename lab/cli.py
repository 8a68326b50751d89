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


if __name__ == "__main__":
    raise SystemExit(main())
