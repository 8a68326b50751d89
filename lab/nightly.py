"""The nightly regression: a suite of reports, re-run and compared with its baselines.

``siplab nightly SUITE.yaml`` answers "did last night's change make anything worse?".
A **suite** (``lab/suites/nightly.yaml``) names experiments × backends × notebooks, the
experiment keys of a full and of a ``--quick`` run (``replications``, ``duration_s``,
...), and the metrics to watch, each with the direction that is bad and the change
that matters (:class:`lab.regression.MetricRule`). For every combination the notebook
is executed with papermill (:func:`lab.report.run_report`: code hidden, answer first);
papermill keeps each executed notebook as the record of the run, and the headline
metrics — one value per replication — are read back from it with nbformat
(:func:`lab.headline.read_notebook`). Each metric is then compared with the committed
baseline (``reports/baselines/SUITE[.quick].json``) by a bootstrap of the difference
of means (:func:`lab.regression.compare`).

Output, in ``reports/nightly/<date>/`` or ``--out DIR``: ``index.html`` (the answer
first — pass, or which metrics regressed — a regression table, a figure of every
change against its tolerance, and a link to every executed report), ``regressions.json``,
and per experiment ``<experiment>/experiment.yaml`` (the experiment as run, with the
suite's keys and every ``--set``) and ``<experiment>/<backend>/<notebook>.html|.ipynb``.
The directory is assembled beside its final place and renamed into it at the end, so a
re-run the same day replaces the previous one whole.

Exit status: 0 no metric regressed (or ``--update-baseline`` recorded this run); 3 a
metric regressed (one line on stderr naming it); 2 bad input, found before anything is
written; 1 a report failed while running; 130 on Ctrl-C (what finished is written).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lab.errors import SpecError
from lab.regression import Comparison, MetricRule, baseline_path, compare, read_baseline
from lab.report import ROOT

SUITES_DIR = ROOT / "lab" / "suites"
BASELINES_DIR = ROOT / "reports" / "baselines"
NIGHTLY_DIR = ROOT / "reports" / "nightly"

Scalar = str | int | float | bool | None


class Suite(BaseModel):
    """A suite file: what runs each night and how each metric is judged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    experiments: list[str] = Field(min_length=1)   # built-in names or paths (suite-relative)
    backends: list[str] = Field(default=["twin"], min_length=1)
    notebooks: list[str] = Field(default=["headline"], min_length=1)
    parameters: dict[str, dict[str, Scalar]] = {}  # extra papermill parameters per notebook
    full: dict[str, Any] = {}                      # experiment keys (dotted) of a full run
    quick: dict[str, Any] = {}                     # ... and of a --quick run
    metrics: dict[str, MetricRule] = Field(min_length=1)
    confidence: float = Field(0.95, gt=0, lt=1)
    resamples: int = Field(9999, ge=100, le=1_000_000)
    seed: int = Field(0, ge=0)                     # the bootstrap's random stream


@dataclass
class Job:
    """One executed report: an experiment on a backend through a notebook."""

    experiment: str
    backend: str
    notebook: str
    params: dict[str, str]
    status: str = "not run"          # ok | failed | not run
    error: str | None = None
    wall_s: float = 0.0
    metrics: dict[str, list[float | None]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.experiment}/{self.backend}/{self.notebook}"

    @property
    def folder(self) -> str:
        return f"{self.experiment}/{self.backend}"


@dataclass
class Plan:
    """Everything checked before anything is written."""

    suite: Suite
    suite_path: Path
    quick: bool
    overrides: list[str]
    out: Path
    baseline_file: Path
    baseline: dict[str, dict[str, list[float | None]]] | None
    experiments: dict[str, dict[str, Any]]   # name -> the experiment mapping as run
    jobs: list[Job]


# ---------------------------------------------------------------------------- input
def suite_path(ref: str | Path) -> Path:
    """A suite file by path, or the name of a built-in (``lab/suites/NAME.yaml``)."""
    path = Path(ref)
    if path.is_file():
        return path.resolve()
    builtin = SUITES_DIR / f"{ref}.yaml"
    if builtin.is_file():
        return builtin
    have = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))) or "none"
    raise SpecError("SUITE", f"no suite file or built-in named {str(ref)!r} (built in: {have})")


def load_suite(path: Path) -> Suite:
    """Read and validate a suite file; SpecError naming the first bad key."""
    from lab.headline import METRICS
    from lab.spec import read_yaml_mapping

    data = read_yaml_mapping(path, "suite")
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # a misspelt key is the cause of the "missing" key beside it: name it first
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc = ".".join(str(p) for p in err["loc"])
        problem = {"extra_forbidden": "unknown key",
                   "missing": "required key is missing"}.get(err["type"])
        raise SpecError(loc, problem or f"{err['msg']}, got {err.get('input')!r}") from None
    for name in suite.metrics:
        if name not in METRICS:
            raise SpecError(f"metrics.{name}", f"unknown metric (have: {', '.join(METRICS)})")
    for mode in ("full", "quick"):
        for key, value in getattr(suite, mode).items():
            if isinstance(value, dict | list):
                raise SpecError(f"{mode}.{key}", f"must be a scalar, got {value!r}")
    return suite


def _experiment_source(ref: str, suite_dir: Path, where: str) -> Path:
    from lab.capacity import experiment_path

    local = suite_dir / ref
    if local.is_file():
        return local.resolve()
    try:
        return experiment_path(ref)
    except SpecError as exc:
        raise SpecError(where, exc.problem) from None


def _experiment_as_run(source: Path, settings: dict[str, Any], overrides: list[str],
                       mode: str) -> dict[str, Any]:
    """The experiment mapping with the suite's keys, then ``--set``, applied and checked;
    relative file references made absolute (the copy lives in the output directory)."""
    from lab.spec import apply_override, read_yaml_mapping, validate

    data = read_yaml_mapping(source, "experiment")
    for key, value in settings.items():
        apply_override(data, f"{key}={json.dumps(value)}")
    for item in overrides:
        apply_override(data, item)
    name = data.get("name", source.stem)
    try:
        exp = validate(data, base_dir=source.parent)
    except SpecError as exc:
        raise SpecError(exc.path, f"{exc.problem} (experiment {name}, {mode} run)") from None
    _absolute_files(data, source.parent)
    data["name"] = exp.name
    return data


def _absolute_files(node: Any, base: Path) -> None:
    """Make ``file:`` and path-like ``pricebook:`` values absolute, in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("file", "pricebook") and isinstance(value, str) \
                    and not Path(value).is_absolute() and (base / value).is_file():
                node[key] = str((base / value).resolve())
            else:
                _absolute_files(value, base)
    elif isinstance(node, list):
        for item in node:
            _absolute_files(item, base)


def _scalar_text(value: Scalar) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _check_notebooks(suite: Suite, first_source: Path) -> dict[str, dict[str, str]]:
    """Each notebook exists, takes an ``experiment`` (and a ``backend`` where not only
    the twin runs), and accepts the suite's extra parameters: name -> parameters."""
    from lab.report import ReportError, notebook_parameters, parse_parameters

    for name in suite.parameters:
        if name not in suite.notebooks:
            raise SpecError(f"parameters.{name}", f"not a notebook of the suite "
                            f"({', '.join(suite.notebooks)})")
    out = {}
    for i, name in enumerate(suite.notebooks):
        try:
            known = notebook_parameters(name)
        except ReportError as exc:
            raise SpecError(f"notebooks.{i}", exc.problem) from None
        if "experiment" not in known:
            raise SpecError(f"notebooks.{i}", f"notebook {name} takes no experiment parameter")
        if "backend" not in known and set(suite.backends) != {"twin"}:
            raise SpecError("backends", f"notebook {name} takes no backend parameter (it "
                            "runs the twin only); list it in a twin-only suite")
        extra = {k: _scalar_text(v) for k, v in suite.parameters.get(name, {}).items()}
        for key in ("experiment", "backend"):
            if key in extra:
                raise SpecError(f"parameters.{name}.{key}", "set by siplab nightly; remove it")
        try:
            parse_parameters(name, {**extra, "experiment": str(first_source)})
        except ReportError as exc:
            key = exc.key.removeprefix("-p ")
            raise SpecError(f"parameters.{name}.{key}", exc.problem) from None
        out[name] = {**extra, "backend": ""} if "backend" in known else extra
    return out


def check_out(out: Path) -> None:
    """``--out`` must be new, empty, or a previous nightly output (it is replaced)."""
    if out.exists() and not out.is_dir():
        raise SpecError("--out", f"{out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "regressions.json").is_file():
        raise SpecError("--out", f"{out} exists and is not a nightly output directory "
                        "(no regressions.json); give a new or empty directory")
    _writable(out.absolute().parent, "--out")


def _writable(directory: Path, option: str) -> None:
    import tempfile

    parent = directory
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise SpecError(option, f"{directory} lies under {parent}, which is a file")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".siplab-probe-", dir=parent))
    except OSError as exc:
        raise SpecError(option, f"cannot write in {parent}: {exc.strerror or exc}") from None


def plan(suite_ref: str | Path, *, quick: bool = False, out: Path | None = None,
         overrides: list[str] | None = None, baselines: Path | None = None,
         update_baseline: bool = False) -> Plan:
    """Check every input of a nightly run; nothing is written. SpecError when bad."""
    from lab.backend import names

    path = suite_path(suite_ref)
    suite = load_suite(path)
    mode = "quick" if quick else "full"
    settings = suite.quick if quick else suite.full
    overrides = list(overrides or [])
    experiments: dict[str, dict[str, Any]] = {}
    sources: dict[str, Path] = {}
    for i, ref in enumerate(suite.experiments):
        source = _experiment_source(ref, path.parent, f"experiments.{i}")
        data = _experiment_as_run(source, settings, overrides, mode)
        if data["name"] in experiments:
            raise SpecError(f"experiments.{i}", f"a second experiment named {data['name']!r}")
        experiments[data["name"]], sources[data["name"]] = data, source
    have = names()
    for i, backend in enumerate(suite.backends):
        if backend not in have:
            raise SpecError(f"backends.{i}", f"unknown backend {backend!r} (have: {have})")
    params = _check_notebooks(suite, next(iter(sources.values())))
    out = Path(out) if out is not None else NIGHTLY_DIR / date.today().isoformat()
    check_out(out)
    directory = Path(baselines) if baselines is not None else BASELINES_DIR
    if directory.exists() and not directory.is_dir():
        raise SpecError("--baselines", f"{directory} is a file, not a directory")
    if update_baseline:
        _writable(directory, "--baselines")
    file = baseline_path(directory, suite.name, quick)
    jobs = [Job(name, backend, nb, {k: (backend if k == "backend" else v)
                                    for k, v in params[nb].items()})
            for name in experiments for backend in suite.backends for nb in suite.notebooks]
    return Plan(suite, path, quick, overrides, out, file, read_baseline(file), experiments,
                jobs)


# ---------------------------------------------------------------------------- running
def _run_job(job: Job, experiment_file: Path, folder: Path) -> None:
    from lab.headline import read_notebook
    from lab.report import ReportError, ReportFailed, run_report

    t0 = time.perf_counter()
    try:
        run_report(job.notebook, {**job.params, "experiment": str(experiment_file)},
                   out_dir=folder)
        for doc in read_notebook(folder / f"{job.notebook}.ipynb"):
            job.metrics.update(doc.get("metrics", {}))
        job.status = "ok"
    except (ReportFailed, ReportError) as exc:
        job.status, job.error = "failed", str(exc)
    finally:
        job.wall_s = time.perf_counter() - t0


def execute(p: Plan, *, update_baseline: bool = False, progress: bool | None = None) -> int:
    """Run the plan, write the output directory (and baselines); return the exit status."""
    from lab.nightly_index import write_index

    t0 = time.perf_counter()
    if progress is None:  # a line per report on a terminal; none in cron or CI logs
        progress = sys.stderr.isatty()
    tmp = p.out.absolute().parent / f".{p.out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    interrupted = False
    try:
        for name, data in p.experiments.items():
            (tmp / name).mkdir()
            (tmp / name / "experiment.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        for i, job in enumerate(p.jobs, 1):
            if progress:
                print(f"siplab nightly: [{i}/{len(p.jobs)}] {job.key}", file=sys.stderr)
            _run_job(job, (tmp / job.experiment / "experiment.yaml").resolve(),
                     tmp / job.folder)
    except KeyboardInterrupt:
        interrupted = True
    comparisons = judge(p)
    status = ("interrupted" if interrupted else "failed" if any(
        j.status == "failed" for j in p.jobs) else "regression" if any(
        c.verdict == "regressed" for c in comparisons) else "pass")
    updated = update_baseline and status in ("pass", "regression")
    doc = summary(p, comparisons, status, updated, time.perf_counter() - t0)
    (tmp / "regressions.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    write_index(tmp / "index.html", p, comparisons, doc)
    _replace(tmp, p.out)
    if updated:
        _record_baseline(p)
    if interrupted:
        raise KeyboardInterrupt
    print(p.out / "index.html")
    return _exit(p, comparisons, status, updated)


def _exit(p: Plan, comparisons: list[Comparison], status: str, updated: bool) -> int:
    if status == "failed":
        failed = [j for j in p.jobs if j.status == "failed"]
        print(f"siplab: nightly: {len(failed)} report(s) failed: {failed[0].key}: "
              f"{failed[0].error}", file=sys.stderr)
        return 1
    if updated:
        print(f"siplab: nightly: baseline written to {p.baseline_file}", file=sys.stderr)
        return 0
    if status == "regression":
        worse = [c for c in comparisons if c.verdict == "regressed"]
        print(f"siplab: nightly: {len(worse)} metric(s) regressed: "
              + "; ".join(c.sentence() for c in worse), file=sys.stderr)
        return 3
    return 0


def _replace(tmp: Path, out: Path) -> None:
    """Move the assembled directory into place, replacing a previous one whole."""
    old = out.absolute().parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def judge(p: Plan) -> list[Comparison]:
    """Every watched metric of every report that ran, against its baseline."""
    out = []
    for job in p.jobs:
        if job.status != "ok" or not job.metrics:
            continue
        base = (p.baseline or {}).get(job.key, {})
        for name, rule in p.suite.metrics.items():
            if name not in job.metrics:
                continue
            out.append(compare(job.key, name, rule, job.metrics[name],
                               base.get(name) if p.baseline is not None else None,
                               confidence=p.suite.confidence, resamples=p.suite.resamples,
                               seed=p.suite.seed))
    return out


def summary(p: Plan, comparisons: list[Comparison], status: str, updated: bool,
            wall_s: float) -> dict[str, Any]:
    """The ``regressions.json`` document."""
    return {
        "suite": p.suite.name, "suite_file": str(p.suite_path),
        "mode": "quick" if p.quick else "full", "date": date.today().isoformat(),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": status, "wall_s": wall_s, "overrides": p.overrides,
        "baseline": str(p.baseline_file), "baseline_found": p.baseline is not None,
        "baseline_updated": updated, "confidence": p.suite.confidence,
        "regressions": [c.to_json() for c in comparisons if c.verdict == "regressed"],
        "metrics": [c.to_json() for c in comparisons],
        "reports": [{"key": j.key, "experiment": j.experiment, "backend": j.backend,
                     "notebook": j.notebook, "status": j.status, "error": j.error,
                     "wall_s": j.wall_s,
                     "html": f"{j.folder}/{j.notebook}.html" if j.status == "ok" else None,
                     "ipynb": f"{j.folder}/{j.notebook}.ipynb" if j.status == "ok" else None}
                    for j in p.jobs],
    }


def _record_baseline(p: Plan) -> None:
    from lab.regression import write_baseline

    measured = {j.key: j.metrics for j in p.jobs if j.status == "ok" and j.metrics}
    write_baseline(p.baseline_file, p.suite.name, p.quick, measured, p.suite.metrics,
                   {"recorded": date.today().isoformat(), "overrides": p.overrides,
                    "settings": p.suite.quick if p.quick else p.suite.full})


def run_nightly(suite: str | Path, *, quick: bool = False, out: Path | None = None,
                overrides: list[str] | None = None, update_baseline: bool = False,
                baselines: Path | None = None, progress: bool | None = None) -> int:
    """``siplab nightly``: check, run, compare; return the exit status (SpecError: 2)."""
    p = plan(suite, quick=quick, out=out, overrides=overrides, baselines=baselines,
             update_baseline=update_baseline)
    return execute(p, update_baseline=update_baseline, progress=progress)
