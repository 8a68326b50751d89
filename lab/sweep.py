"""Parameter sweeps: an experiment over a grid of settings × replications, on Dask.

A sweep asks the question behind most capacity and latency studies -- *how does the
answer move when one knob turns?* -- for several knobs at once. Each ``--grid KEY=V1,V2``
names a dotted key of the experiment (as ``--set`` does) and the values it takes; the
sweep runs the Cartesian product of every grid's values (a **point**), each point
``replications`` times with the experiment's own seed. Replication *k* of every point
draws the same callers from ``SeedSequence(seed)`` (common random numbers), so two points
differ by their settings, not by their luck.

Every (point, replication) pair is one **task**: one backend replication, reduced to the
figures of ``summary.json`` for that replication alone (the same per-replication results
``siplab run`` produces: :func:`replication_summary`) and then to one row of the tidy
table (:data:`HEADLINE`). Tasks are independent, so they run anywhere: a
``distributed.LocalCluster`` of worker processes (the default), a real Dask cluster
(``scheduler="tcp://host:8786"``; every worker needs siplab installed and the
experiment's data files at the same paths), or this process alone (``serial``). The
table is sorted by point and replication, so it is the same, bit for bit, however and
wherever the tasks ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from lab.errors import SpecError
from lab.spec import Experiment, load_experiment

__all__ = ["HEADLINE", "Grid", "SweepResult", "Tasks", "check_out_file", "headline",
           "parse_grid", "point_experiments", "replication_summary", "run_tasks", "session",
           "sweep", "write_table"]

STAGES = ("stt", "llm", "tts")

#: The figures of each row, after the grid columns: (column, path in the replication's
#: summary). Declared once; the table's columns are exactly these, in this order.
HEADLINE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("offered", ("calls", "offered")),
    ("answered", ("calls", "answered")),
    ("blocked", ("calls", "blocked")),
    ("failed", ("calls", "failed")),
    ("rejected", ("calls", "rejected")),
    ("blocking", ("blocking_probability", "mean")),
    ("setup_ms_p50", ("setup_ms", "p50")),
    ("setup_ms_p95", ("setup_ms", "p95")),
    ("pdd_ms_p95", ("pdd_ms", "p95")),
    ("turns", ("voice_to_voice_ms", "count")),
    ("voice_to_voice_ms_p50", ("voice_to_voice_ms", "p50")),
    ("voice_to_voice_ms_p95", ("voice_to_voice_ms", "p95")),
    ("mos_mean", ("mos", "mean")),
    ("mos_p05", ("mos", "p05")),
    *((f"{s}_wait_probability", ("ai", s, "wait_probability")) for s in STAGES),
    *((f"{s}_wait_ms_p95", ("ai", s, "wait_ms", "p95")) for s in STAGES),
    *((f"{s}_utilization", ("ai", s, "utilization")) for s in STAGES),
    ("cost_per_minute_usd", ("cost", "per_minute_usd")),
    ("cost_per_call_usd", ("cost", "per_call_usd")),
    ("cost_total_usd", ("cost", "total_usd")),
    ("sim_s", ("run", "sim_s")),
)
COUNTS = ("offered", "answered", "blocked", "failed", "rejected", "turns")
#: Columns of every table besides the grid's own.
FIXED = ("point", "replication", *(name for name, _ in HEADLINE), "error")


# ---------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class Grid:
    """The grid axes: each dotted key with its raw values (YAML text) and parsed values."""

    keys: tuple[str, ...] = ()
    raws: tuple[tuple[str, ...], ...] = ()
    values: tuple[tuple[Any, ...], ...] = ()

    def points(self) -> list[tuple[int, ...]]:
        """Each point as the index of its value on every axis, in product order (the
        last key varies fastest)."""
        return list(itertools.product(*(range(len(v)) for v in self.raws)))

    def overrides(self, point: tuple[int, ...]) -> list[str]:
        """The ``--set`` items of one point."""
        return [f"{k}={self.raws[a][i]}" for a, (k, i) in enumerate(zip(self.keys, point,
                                                                         strict=True))]


def _split_values(text: str) -> list[str]:
    """``V1,V2,...`` split at the commas outside brackets, braces and quotes, so a YAML
    flow value (``{dist: exponential, mean: 60}``) stays whole."""
    out: list[str] = []
    cur: list[str] = []
    depth, quote = 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return out


def parse_grid(items: Sequence[str]) -> Grid:
    """Parse ``--grid KEY=V1,V2,...`` items; bad input raises :class:`SpecError` naming
    ``--grid KEY`` (the values themselves are checked against the experiment later, by
    :func:`point_experiments`)."""
    if not items:
        raise SpecError("--grid", "give at least one KEY=V1,V2,...")
    keys, raws, values = [], [], []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError("--grid", f"needs KEY=V1,V2,..., got {item!r}")
        if not all(key.split(".")):
            raise SpecError(f"--grid {key}", "not a dotted key path")
        if key in keys:
            raise SpecError(f"--grid {key}", "given twice; give each key once with all its "
                            "values")
        if key == "replications":
            raise SpecError(f"--grid {key}", "replications are not a grid axis; use "
                            "--replications N")
        if key in FIXED:
            raise SpecError(f"--grid {key}", f"clashes with the table's own column {key!r}")
        parts = _split_values(text)
        if any(not p for p in parts):
            raise SpecError(f"--grid {key}", f"an empty value in {text!r}")
        parsed = []
        for raw in parts:
            try:
                parsed.append(yaml.safe_load(raw))
            except yaml.YAMLError:
                raise SpecError(key, f"value is not a YAML scalar: {raw!r}") from None
        if len(set(map(repr, parsed))) != len(parsed):
            raise SpecError(f"--grid {key}", f"a value is given twice in {text!r}")
        keys.append(key)
        raws.append(tuple(parts))
        values.append(tuple(parsed))
    return Grid(tuple(keys), tuple(raws), tuple(values))


def point_experiments(path: Path, grid: Grid, overrides: Sequence[str] = (), *,
                      replications: int | None = None, seed: int | None = None,
                      backend: str = "twin") -> list[Experiment]:
    """The validated experiment of every grid point, checked as ``siplab run`` checks a
    run (size, the backend's own checks, the first replication's plan), so a bad value
    is bad input before anything runs."""
    from lab.runner import prepare

    exps = []
    for point in grid.points():
        exp = load_experiment(path, [*overrides, *grid.overrides(point)], seed=seed,
                              replications=replications)
        prepare(exp.model_copy(update={"replications": 1}), backend, path.parent,
                force=False)
        exps.append(exp)
    return exps


# ---------------------------------------------------------------------------- one task
def replication_summary(exp: Experiment, rep: int, base_dir: Path | None = None,
                        backend: str = "twin") -> dict[str, Any]:
    """Run replication ``rep`` of ``exp`` and return its ``summary.json`` mapping, as
    ``siplab run`` computes it (warm-up, MOS, cost by the price book) for this one
    replication. A replication that stops on an error raises it."""
    from lab import results as R
    from lab.backend import backend as find_backend
    from lab.cost import call_costs, load_pricebook, summary_cost
    from lab.plan import make_plan
    from lab.records import CALL_SCHEMA, TURN_SCHEMA
    from lab.runner import call_mos

    impl = find_backend(backend)
    res = impl.run(exp, rep, make_plan(exp, rep, base_dir))
    if res.interrupted:
        if (error := res.facts.get("error")) is not None:
            raise RuntimeError(error)
        raise KeyboardInterrupt
    pricebook = load_pricebook(exp.pricebook, base_dir)
    calls = R.conform(res.calls.assign(replication=rep), CALL_SCHEMA)
    turns = R.conform(res.turns.assign(replication=rep), TURN_SCHEMA)
    missing = (calls["outcome"] == "answered") & calls["mos"].isna()
    if missing.any():
        calls["mos"] = calls["mos"].mask(missing, call_mos(exp))
    costs = call_costs(calls, turns, pricebook, exp.deployment.ai.llm.tokens.mean)
    calls["cost_usd"] = costs["cost_usd"].to_numpy()
    sim_s = float(res.facts.get("sim_s", 0.0)) or float(calls["end_s"].max() or 0.0)
    counted = (calls["start_s"] >= exp.warmup_s).to_numpy()
    horizon = max(0.0, sim_s - exp.warmup_s)
    extra = {"cost": summary_cost(costs[counted], calls[counted], pricebook, horizon, 1),
             "experiment": exp.name, "seed": exp.seed, "replication": rep}
    return R.summarize(calls, turns, backend=impl.name, warmup_s=exp.warmup_s,
                       replications=rep + 1,  # the per-replication loop reaches ``rep``
                       run={"wall_s": 0.0, "sim_s": sim_s,
                            "events": int(res.facts.get("events", 0)),
                            "ai": res.usage, "ai_horizon_s": horizon}, extra=extra)


def _dig(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The :data:`HEADLINE` figures of one replication's summary."""
    return {name: _dig(summary, path) for name, path in HEADLINE}


def _task(exp: Experiment, rep: int, base_dir: Path | None, backend: str) -> dict[str, Any]:
    """One task, where it runs: the replication's summary, or the error that stopped it."""
    try:
        return {"summary": replication_summary(exp, rep, base_dir, backend)}
    except Exception as exc:  # counted and said by the coordinator, never silent
        return {"error": f"{type(exc).__name__}: {exc}"}


# ---------------------------------------------------------------------------- executors
@dataclass(frozen=True)
class Tasks:
    """Where tasks run: ``serial`` (this process), a Dask ``scheduler`` address, or a
    ``distributed.LocalCluster`` of ``workers`` processes (default: one per core)."""

    workers: int | None = None
    scheduler: str | None = None
    serial: bool = False
    show_progress: bool = True
    label: str = "sweep"
    client: Any = None  # an open Dask client to reuse (see :func:`session`)


def run_tasks(args: Sequence[tuple[Any, ...]], where: Tasks,
              fn: Callable[..., dict[str, Any]] = _task) -> Iterator[tuple[int, dict[str, Any]]]:
    """Run ``fn(*a)`` for every ``a`` of ``args``; yield ``(index, result)`` as each
    finishes, with a progress bar on stderr. Stopping the iteration (Ctrl-C in the
    consumer) cancels what has not finished and closes the cluster it started."""
    from tqdm import tqdm

    bar = tqdm(total=len(args), unit="task", desc=where.label, file=sys.stderr,
               disable=not where.show_progress, leave=False)
    try:
        if where.serial:
            for i, a in enumerate(args):
                res = fn(*a)
                bar.update()
                yield i, res
            return
        if where.client is not None:
            yield from _on_dask(where.client, fn, args, bar)
            return
        with _client(where, len(args)) as client:
            yield from _on_dask(client, fn, args, bar)
    finally:
        bar.close()


def _on_dask(client: Any, fn: Callable[..., dict[str, Any]], args: Sequence[tuple[Any, ...]],
             bar: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    from distributed import as_completed

    futures = [client.submit(fn, *a, pure=False) for a in args]
    index = {f.key: i for i, f in enumerate(futures)}
    try:
        for fut in as_completed(futures):
            try:
                res = fut.result()
            except Exception as exc:  # the worker died under the task
                res = {"error": f"{type(exc).__name__}: {exc}"}
            bar.update()
            yield index[fut.key], res
    finally:
        with contextlib.suppress(Exception):
            client.cancel([f for f in futures if not f.done()])


@contextlib.contextmanager
def session(where: Tasks, tasks: int | None = None) -> Iterator[Tasks]:
    """``where`` with one Dask client kept open for many :func:`run_tasks` calls (a
    search that runs batch after batch); serial stays serial."""
    if where.serial or where.client is not None:
        yield where
        return
    with _client(where, tasks or where.workers or os.cpu_count() or 1) as client:
        yield dataclasses.replace(where, client=client)


@contextlib.contextmanager
def _client(where: Tasks, tasks: int) -> Iterator[Any]:
    """A Dask client: of the scheduler at ``where.scheduler``, or of a local cluster."""
    import logging

    from distributed import Client, LocalCluster

    if where.scheduler is not None:
        client = Client(where.scheduler, timeout="10s")
        try:
            yield client
        finally:
            client.close()
        return
    workers = max(1, min(where.workers or os.cpu_count() or 1, tasks))
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, memory_limit=0,
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close(timeout=10)
        with contextlib.suppress(Exception):
            cluster.close(timeout=10)


# ---------------------------------------------------------------------------- the sweep
@dataclass
class SweepResult:
    """The tidy table and how the sweep went."""

    table: pd.DataFrame
    tasks: int
    failed: list[str] = field(default_factory=list)  # "point k (key=v, ...) rep r: error"
    interrupted: bool = False


def sweep(path: Path, grid: Grid, *, overrides: Sequence[str] = (),
          replications: int | None = None, where: Tasks | None = None,
          exps: list[Experiment] | None = None) -> SweepResult:
    """Run every grid point × replication of the experiment at ``path``.

    Parameters
    ----------
    path : Path
        The experiment file (relative data paths are relative to its folder).
    grid : Grid
        From :func:`parse_grid`.
    overrides : sequence of str
        ``--set`` items applied to every point before the grid's own.
    replications : int, optional
        Replications per point (default: the experiment's).
    where : Tasks, optional
        Where the tasks run (default: a local Dask cluster).
    exps : list of Experiment, optional
        The points' experiments already validated by :func:`point_experiments`.

    Returns
    -------
    SweepResult
        ``table`` has a row per finished (point, replication): ``point``, a column per
        grid key (named by the dotted key), ``replication``, the :data:`HEADLINE`
        figures and ``error`` (``""``, or why the task failed). On Ctrl-C the rows
        finished so far, with ``interrupted`` set.
    """
    where = where or Tasks()
    exps = exps if exps is not None else point_experiments(path, grid, overrides,
                                                           replications=replications)
    args = [(exp, rep, path.parent, "twin") for exp in exps for rep in range(exp.replications)]
    owner = [(p, rep) for p, exp in enumerate(exps) for rep in range(exp.replications)]
    points = grid.points()
    rows: dict[int, dict[str, Any]] = {}
    failed: list[str] = []
    interrupted = False
    try:
        for i, res in run_tasks(args, where):
            p, rep = owner[i]
            row: dict[str, Any] = {"point": p}
            row.update({k: grid.values[a][points[p][a]] for a, k in enumerate(grid.keys)})
            row["replication"] = rep
            if "error" in res:
                failed.append(f"point {p} ({', '.join(grid.overrides(points[p]))}) "
                              f"replication {rep}: {res['error']}")
                row.update(dict.fromkeys((n for n, _ in HEADLINE), None))
                row["error"] = res["error"]
            else:
                row.update(headline(res["summary"]))
                row["error"] = ""
            rows[i] = row
    except KeyboardInterrupt:
        interrupted = True
    return SweepResult(_table(grid, [rows[i] for i in sorted(rows)]), len(args), failed,
                       interrupted)


def _grid_column(values: list[Any], raws: dict[str, str]) -> Any:
    """A grid key's column: one type Parquet can hold (mixed ints and floats are floats;
    anything else mixed, or a mapping, is the value's text as given)."""
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {int, float} and int in kinds and float in kinds:
        return [None if v is None else float(v) for v in values]
    if len(kinds) <= 1 and not kinds & {dict, list}:
        return values
    return [raws[repr(v)] for v in values]


def _table(grid: Grid, rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = ["point", *grid.keys, *FIXED[1:]]
    df = pd.DataFrame(rows, columns=columns)
    for a, key in enumerate(grid.keys):
        raws = {repr(v): raw for v, raw in zip(grid.values[a], grid.raws[a], strict=True)}
        df[key] = _grid_column(df[key].tolist(), raws)
    for name in ("point", "replication"):
        df[name] = df[name].astype("int64")
    for name, _ in HEADLINE:
        df[name] = df[name].astype("Int64" if name in COUNTS else "float64")
    df["error"] = df["error"].astype(object)
    return df


def check_out_file(out: Path) -> None:
    """Refuse an output file that cannot be written, before anything runs."""
    if out.suffix != ".parquet":
        raise SpecError("--out", f"must name a .parquet file, got {str(out)!r}")
    if out.is_dir():
        raise SpecError("--out", f"{out} is a directory, not a file")
    if out.exists():
        raise SpecError("--out", f"{out} exists; remove it or choose another file")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise SpecError("--out", f"{out} lies under {parent}, which is a file")
    if not os.access(parent, os.W_OK):
        raise SpecError("--out", f"cannot write in {parent}")


def write_table(table: pd.DataFrame, out: Path) -> None:
    """Write ``table`` to ``out`` whole or not at all (a temporary file, then renamed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        table.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
