"""Running an experiment on a backend and writing its results directory.

The backend comes from the registry (:mod:`lab.backend`) by name; whichever it is, it
turns one replication's call plan into records of the same shape, so everything after
this module -- summary, analysis, reports -- never knows where data came from.

Order of work, so bad input never leaves anything half-written: validate every input
(unsupported keys, price book, plans, the backend's own checks and caps) first, create
the output directory only then, write ``experiment.resolved.yaml`` at once, run, and on
a crash or Ctrl-C still write every finished call's record: what a backend handed to
the journal (``<table>.rep<k>.jsonl``, flushed per record) is read back if its
replication never returned.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from lab import results as R
from lab.backend import Backend, Progress, Replication, backend
from lab.codecs import codec as find_codec
from lab.cost import call_costs, load_pricebook, summary_cost
from lab.dists import DistError
from lab.memory import large_blocks_from_the_kernel, release
from lab.plan import CallPlan, Plan, make_plan
from lab.records import CALL_SCHEMA, STEP_SCHEMA, TURN_SCHEMA
from lab.spec import Experiment, SpecError, dump_resolved, unsupported_features

JOURNAL_TABLES = ("calls", "turns", "steps")


class RunInterrupted(RuntimeError):
    """The run stopped early (Ctrl-C or a failure); finished records were written."""

    def __init__(self, out_dir: Path, cause: BaseException) -> None:
        self.out_dir = out_dir
        self.cause = cause
        super().__init__(f"run stopped early ({type(cause).__name__}: {cause}); "
                         f"finished calls kept in {out_dir}")


def default_out_dir(exp: Experiment, root: Path = Path("runs")) -> Path:
    return root / f"{exp.name}-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"


#: The most calls and AI turns one replication may plan (expected values): they bound a
#: run's memory (a 200,000-call, 2 M-turn hour peaks at about 0.6 GB).
MAX_CALLS = 2_000_000
MAX_TURNS = 10_000_000


def _arrivals_key(exp: Experiment) -> str:
    return "load.arrivals.file" if exp.load.arrivals.kind == "replay" else "load.arrivals"


def _mean_turns(sc: Any) -> float:
    """Expected AI turns of one call of scenario ``sc``."""
    def mean(turns: Any) -> float:
        return float(turns) if isinstance(turns, int) else float(turns.mean)

    if sc.script is not None:
        return sum(mean(step.turns) for step in sc.script if hasattr(step, "turns"))
    return mean(sc.turns)


def check_size(exp: Experiment, base_dir: Path | None) -> None:
    """Refuse a run whose expected calls or turns per replication exceed the limits."""
    from lab.profiles import Profile

    try:
        calls = Profile(exp.load.arrivals, exp.duration_s, base_dir).mean_rate() * exp.duration_s
    except DistError as exc:
        raise SpecError(_arrivals_key(exp), str(exc)) from exc
    if calls > MAX_CALLS:
        raise SpecError(_arrivals_key(exp), f"about {calls:,.0f} calls per replication, over "
                        f"the limit of {MAX_CALLS:,} that bounds a run's memory; lower the "
                        "rate or duration_s, or run several experiments")
    weights = {m.scenario: m.weight for m in exp.load.mix}
    total = sum(weights.values())
    turns = calls * sum(w / total * _mean_turns(exp.scenarios[name])
                        for name, w in weights.items())
    if turns > MAX_TURNS:
        raise SpecError("scenarios", f"about {turns:,.0f} AI turns per replication, over the "
                        f"limit of {MAX_TURNS:,} that bounds a run's memory; lower the rate, "
                        "duration_s or turns")


def check_out_dir(out: Path) -> None:
    """Refuse an output directory that cannot be used, before anything runs or is written:
    an existing file, a non-empty directory, a path under a file, or an unwritable parent."""
    if out.exists() and not out.is_dir():
        raise SpecError("--out", f"{out} is a file, not a directory")
    if out.is_dir():
        if any(out.iterdir()):
            raise SpecError("--out", f"{out} exists and is not empty")
        parent = out
    else:
        parent = out.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise SpecError("--out", f"{out} lies under {parent}, which is a file")
    try:  # the one honest test of writability (root passes every os.access check)
        import tempfile

        os.rmdir(tempfile.mkdtemp(prefix=".siplab-probe-", dir=parent))
    except OSError as exc:
        raise SpecError("--out", f"cannot write in {parent}: {exc.strerror or exc}") from None


def prepare(exp: Experiment, backend_name: str, base_dir: Path | None, force: bool
            ) -> tuple[Backend, list[Plan]]:
    """Check everything that can be checked before running; return the backend and plans."""
    impl = backend(backend_name)
    for key, why in unsupported_features(exp):
        raise SpecError(key, f"{why} by any backend yet; remove it to run")
    check_size(exp, base_dir)
    try:
        plans = [make_plan(exp, rep, base_dir) for rep in range(exp.replications)]
    except DistError as exc:
        raise SpecError(_arrivals_key(exp), str(exc)) from exc
    impl.check(exp, plans, force=force)
    return impl, plans


def run_experiment(exp: Experiment, *, backend: str = "twin", out_dir: Path | None = None,
                   base_dir: Path | None = None, force: bool = False, jobs: int | None = None,
                   show_progress: bool = True) -> Path:
    """Run ``exp`` on ``backend``; write the results; return the path of summary.json."""
    out = Path(out_dir) if out_dir is not None else default_out_dir(exp)
    check_out_dir(out)
    large_blocks_from_the_kernel()
    impl, plans = prepare(exp, backend, base_dir, force)
    pricebook = load_pricebook(exp.pricebook, base_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.resolved.yaml").write_text(dump_resolved(exp))
    wall0 = time.perf_counter()
    reps: dict[int, Replication] = {}
    failure: BaseException | None = None
    try:
        _run_all(exp, impl, plans, reps, out, jobs, show_progress)
    except (KeyboardInterrupt, Exception) as exc:  # keep what finished, then re-raise
        failure = exc
    plans.clear()  # the records are all that is needed from here: free the plans' arrays
    summary = _write(exp, impl.name, reps, out, pricebook, time.perf_counter() - wall0,
                     failure)
    if failure is not None:
        raise RunInterrupted(out, failure) from failure
    return summary


#: Seconds the coordinator waits, after Ctrl-C, for parallel replications to hand back
#: what they finished (a second Ctrl-C stops waiting).
GRACE_S = 60.0

# In a worker process: a stop was asked (SIGINT), and whether a replication is running.
_stop = False
_running = False


def _worker_init() -> None:
    signal.signal(signal.SIGINT, _worker_sigint)


def _worker_sigint(signum: int, frame: Any) -> None:
    """The first SIGINT stops the running replication (which then returns what finished);
    later ones -- the terminal's and the coordinator's both arrive -- and one reaching an
    idle worker only mark it stopped, so no worker dies and breaks the pool."""
    global _stop
    first = not _stop
    _stop = True
    if first and _running:
        raise KeyboardInterrupt


def _run_one(name: str, exp: Experiment, rep: int, plan: Sequence[CallPlan]
             ) -> Replication | None:
    """One replication in a worker process (the backend is looked up there by name);
    ``None`` when the run was interrupted before this replication began."""
    global _running
    if _stop:
        return None
    _running = True
    try:
        return backend(name).run(exp, rep, plan)
    finally:
        _running = False


def _run_all(exp: Experiment, impl: Backend, plans: Sequence[Sequence[CallPlan]],
             reps: dict[int, Replication], out: Path, jobs: int | None, show: bool) -> None:
    jobs = jobs or min(len(plans), os.cpu_count() or 1)
    if impl.parallel and jobs > 1 and len(plans) > 1:
        _run_parallel(exp, impl, plans, reps, jobs, show)
        return
    for rep, plan in enumerate(plans):
        journal = _Journal(out, rep)
        with _progress(exp, rep, show, calls=len(plan)) as progress:
            result = impl.run(exp, rep, plan, progress=progress, journal=journal)
        reps[rep] = result
        journal.remove()
        if result.interrupted:
            raise _stopped(rep, result)


class ReplicationFailed(RuntimeError):
    """A replication stopped on an error; the calls it finished were kept."""


def _stopped(rep: int, result: Replication) -> BaseException:
    """Why a replication came back early: its error, or Ctrl-C."""
    if (error := result.facts.get("error")) is not None:
        return ReplicationFailed(f"replication {rep} failed: {error}")
    return KeyboardInterrupt()


def _run_parallel(exp: Experiment, impl: Backend, plans: Sequence[Sequence[CallPlan]],
                  reps: dict[int, Replication], jobs: int, show: bool) -> None:
    """Replications in worker processes. On Ctrl-C (or a failure) every running
    replication is told to stop and hands back the calls it finished; those not begun
    are cancelled; then the interruption goes on up."""
    from tqdm import tqdm

    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init)
    futures = {pool.submit(_run_one, impl.name, exp, rep, plan): rep
               for rep, plan in enumerate(plans)}
    try:
        for fut in tqdm(futures, desc=f"{exp.name} replications", unit="rep",
                        disable=not show, file=sys.stderr):
            if (res := fut.result()) is not None:
                reps[futures[fut]] = res
                if res.interrupted:  # its worker was stopped (SIGINT) or failed: stop all
                    raise _stopped(futures[fut], res)
    except BaseException:
        _collect_stopped(pool, futures, reps)
        raise
    pool.shutdown()


def _collect_stopped(pool: ProcessPoolExecutor, futures: dict[Any, int],
                     reps: dict[int, Replication]) -> None:
    """Stop every worker and keep what each finished (bounded by :data:`GRACE_S`)."""
    workers = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in workers:  # a SIGINT sent to this process alone reaches them too
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + GRACE_S
    lost = []
    try:
        for fut, rep in futures.items():
            if fut.cancelled() or rep in reps:
                continue
            try:
                res = fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # that replication is lost (said below); Ctrl-C goes on up
                lost.append(rep)
                continue
            if res is not None:
                reps[rep] = res
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
        pass
    finally:
        for proc in workers:
            proc.terminate()
    if lost:
        print(f"siplab: replications {lost} handed back nothing when stopped", file=sys.stderr)


class _Journal:
    """Finished records of one replication, a JSON line each, flushed as they end."""

    def __init__(self, out: Path, rep: int) -> None:
        self.out, self.rep = out, rep
        self._fh: dict[str, Any] = {}

    def path(self, table: str) -> Path:
        return self.out / f"{table}.rep{self.rep}.jsonl"

    def __call__(self, table: str, record: dict[str, Any]) -> None:
        fh = self._fh.get(table)
        if fh is None:
            fh = self._fh[table] = self.path(table).open("a")
        fh.write(json.dumps(R._json_safe(record)) + "\n")
        fh.flush()

    def remove(self) -> None:
        for table, fh in self._fh.items():
            fh.close()
            self.path(table).unlink(missing_ok=True)
        self._fh.clear()


def _journalled(out: Path, rep: int, exp: Experiment) -> Replication | None:
    """The records an interrupted replication left in its journal, if any."""
    frames = {}
    for table in JOURNAL_TABLES:
        path = out / f"{table}.rep{rep}.jsonl"
        rows, torn = [], 0
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                rows.append(json.loads(line))
            except ValueError:  # a record the interruption cut in half
                torn += bool(line.strip())
        if torn:
            print(f"siplab: warning: {torn} {table} record(s) of replication {rep} were cut "
                  "short by the interruption and are left out", file=sys.stderr)
        frames[table] = pd.DataFrame(rows)
    calls = frames["calls"]
    if not len(calls):
        return None
    calls = R.conform(calls.assign(replication=rep), CALL_SCHEMA)
    sim_s = float(calls["end_s"].max())
    return Replication(
        calls=calls,
        turns=R.conform(frames["turns"].assign(replication=rep), TURN_SCHEMA),
        steps=R.conform(frames["steps"].assign(replication=rep), STEP_SCHEMA),
        timeseries=R.timeseries(calls, sim_s, exp.deployment.trunk.channels),
        facts={"sim_s": sim_s}, interrupted=True)


class _progress:
    """A tqdm bar on stderr, shown from the backend's first report: over simulated
    seconds, or -- when the backend reports calls (a real run, from its first call
    placed) -- over the plan's ``calls`` finished, with the number placed beside it."""

    def __init__(self, exp: Experiment, rep: int, show: bool, calls: int = 0) -> None:
        self.exp, self.rep, self.show, self.calls = exp, rep, show, calls
        self.bar: Any = None
        self.unit = ""  # what the bar counts: "s" or "call" (a disabled tqdm keeps no unit)

    def _open(self, total: int, unit: str) -> Any:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit=unit, desc=f"{self.exp.name} rep {self.rep}",
                        disable=not self.show, file=sys.stderr, leave=False)
        self.unit = unit
        return self.bar

    def __enter__(self) -> Progress:
        def update(now_s: float, /, *, placed: int | None = None,
                   finished: int | None = None) -> None:
            bar = self.bar
            if placed is None and finished is None:
                if bar is None:
                    bar = self._open(round(self.exp.duration_s), "s")
                if self.unit == "s":
                    bar.update(max(0, min(round(now_s), bar.total) - bar.n))
                return
            if bar is None or self.unit != "call":
                if bar is not None:
                    bar.close()
                bar = self._open(max(self.calls, placed or 0, finished or 0), "call")
            if placed is not None:
                bar.set_postfix_str(f"placed {placed}", refresh=False)
            bar.update(max(0, (finished or 0) - bar.n))
            bar.refresh()

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _write(exp: Experiment, backend_name: str, reps: dict[int, Replication], out: Path,
           pricebook: Any, wall: float, failure: BaseException | None) -> Path:
    """Assemble the tables and the summary from finished replications (and journals)."""
    for rep in range(exp.replications):
        if rep not in reps and (left := _journalled(out, rep, exp)) is not None:
            reps[rep] = left
    frames, turn_frames, step_frames, series = [], [], [], []
    sim_s, events = 0.0, 0
    ai_usage: dict[str, dict[str, Any]] = {}
    ai_horizon = 0.0
    for rep, res in sorted(reps.items()):
        for stage, use in res.usage.items():
            acc = ai_usage.setdefault(stage, {"servers": use["servers"], "busy_s": 0.0})
            acc["busy_s"] += use["busy_s"]
        rep_sim_s = float(res.facts.get("sim_s", 0.0))
        if not rep_sim_s and len(res.calls):  # a backend that reports no clock
            rep_sim_s = float(pd.to_numeric(res.calls["end_s"]).max())
        ai_horizon += max(0.0, rep_sim_s - exp.warmup_s)
        frames.append(_of_replication(res.calls, rep))
        if len(res.turns):
            turn_frames.append(_of_replication(res.turns, rep))
        if len(res.steps):
            step_frames.append(_of_replication(res.steps, rep))
        ts = res.timeseries.copy()
        if not len(ts.columns):  # a backend that keeps no time series: the calls give one
            ts = R.timeseries(R.conform(res.calls.assign(replication=rep), CALL_SCHEMA),
                              rep_sim_s, exp.deployment.trunk.channels)
        if "replication" in ts:
            ts = ts.drop(columns="replication")
        ts.insert(1, "replication", rep)
        series.append(ts)
        sim_s = max(sim_s, rep_sim_s)
        events += int(res.facts.get("events", 0))
    for table in JOURNAL_TABLES:
        for journal in out.glob(f"{table}.rep*.jsonl"):
            journal.unlink()
    release()
    calls = R.conform(R._joined(frames), CALL_SCHEMA)
    turns = R.conform(R._joined(turn_frames), TURN_SCHEMA)
    del frames, turn_frames
    missing = (calls["outcome"] == "answered") & calls["mos"].isna()
    if missing.any():  # a backend that measured no MOS for a call (a new column: a
        calls["mos"] = calls["mos"].mask(missing, call_mos(exp))  # worker's may be read-only)
    costs = call_costs(calls, turns, pricebook, exp.deployment.ai.llm.tokens.mean)
    calls["cost_usd"] = costs["cost_usd"].to_numpy()
    ts_all = pd.concat(series, ignore_index=True) if series else pd.DataFrame(
        columns=list(R.TIMESERIES_BASE))
    R.write_tables(out, R.calls_table([calls]), R.turns_table([turns]),
                   R.steps_table(step_frames), ts_all)
    counted = calls["start_s"] >= exp.warmup_s
    extra = {
        "cost": summary_cost(costs[counted.to_numpy()], calls[counted], pricebook,
                             max(0.0, sim_s - exp.warmup_s), max(1, len(reps))),
        "experiment": exp.name, "seed": exp.seed,
        "status": "complete" if failure is None else "interrupted",
        "replication_status": [("partial" if reps[r].interrupted else "complete")
                               if r in reps else "not run" for r in range(exp.replications)],
    }
    summary = R.summarize(calls, turns, backend=backend_name, warmup_s=exp.warmup_s,
                          replications=exp.replications,
                          run={"wall_s": wall, "sim_s": sim_s, "events": events,
                               "ai": ai_usage, "ai_horizon_s": ai_horizon}, extra=extra)
    path = out / "summary.json"
    R.write_json(path, summary)
    return path


def _of_replication(df: pd.DataFrame, rep: int) -> pd.DataFrame:
    """``df`` with its ``replication`` column set to ``rep`` (not copied when it is)."""
    if "replication" in df.columns and bool((df["replication"] == rep).all()):
        return df
    return df.assign(replication=rep)


def call_mos(exp: Experiment) -> float:
    """Per-call MOS from the ITU-T G.107 E-model for the deployment's media path.

    Mouth-to-ear delay = network one-way delay + jitter buffer + packetisation
    (one ptime) + codec look-ahead; the network loss is the packet loss.
    """
    from lab.emodel import emodel

    media, net = exp.deployment.media, exp.deployment.network
    c = find_codec(media.codec)
    if c.emodel_name is None:
        return float("nan")  # wideband codecs need G.107.1, not modelled yet
    delay = net.delay_ms + media.jitter_buffer_ms + media.ptime_ms + c.lookahead_ms
    return float(emodel(c.emodel_name, media.plc, delay, net.loss, 1.0)["MOS"])


__all__ = ["RunInterrupted", "call_mos", "default_out_dir", "prepare", "run_experiment"]
