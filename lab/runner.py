"""Running an experiment on a backend and writing its results directory.

Backends are registered by name (``twin``, ``real``); each turns one
replication's call plan into records of the same shape, so everything after
this module — summary, analysis, reports — never knows where data came from.

Order of work, so bad input never leaves anything half-written: validate every
input (unsupported keys, price book, plans, real-run caps) first, create the
output directory only then, write ``experiment.resolved.yaml`` at once, run,
and on a crash or Ctrl-C still write every finished call's record.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab import results as R
from lab.cost import call_costs, load_pricebook, summary_cost
from lab.dists import DistError
from lab.plan import CallPlan, make_plan
from lab.spec import Experiment, SpecError, dump_resolved, unsupported_features

Backend = Callable[..., dict[str, Any]]


class RunInterrupted(RuntimeError):
    """The run stopped early (Ctrl-C or a failure); finished records were written."""

    def __init__(self, out_dir: Path, cause: BaseException) -> None:
        self.out_dir = out_dir
        self.cause = cause
        super().__init__(f"run stopped early ({type(cause).__name__}: {cause}); "
                         f"finished calls kept in {out_dir}")


def _twin(exp: Experiment, rep: int, plan: list[CallPlan], progress: Any,
          journal: Any) -> dict[str, Any]:
    from twin.backend import run_replication

    return run_replication(exp, rep, plan, progress)


def _real(exp: Experiment, rep: int, plan: list[CallPlan], progress: Any,
          journal: Any) -> dict[str, Any]:
    """Place the plan's calls on the local system under test, in real time.

    Each call's record reaches the journal as soon as it ends (a crash keeps it); the
    records carry their measured MOS, which :func:`_write` keeps (it fills in the
    deployment's E-model MOS only where a call has none). Turns and feature steps
    come back from :func:`real.backend.run_calls` with the run's facts.
    """
    import tempfile

    from real.backend import run_calls

    records: list[dict[str, Any]] = []

    def keep(record: dict[str, Any]) -> None:
        records.append(record)
        if journal is not None:
            journal(record)

    def fraction_done(frac: float) -> None:
        if progress is not None:
            progress(frac * exp.duration_s)

    wall0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="siplab-real-") as work:
        facts = dict(run_calls(exp, plan, Path(work), keep, fraction_done) or {})
    wall = time.perf_counter() - wall0
    turn_rows = facts.pop("turns", None) or []
    step_rows = facts.pop("steps", None) or []
    calls = pd.DataFrame(records, columns=list(R.CALL_COLUMNS)).drop(
        columns=["replication", "cost_usd"]).sort_values("call_id", kind="stable")
    calls = calls.reset_index(drop=True)
    turns = pd.DataFrame(turn_rows)
    if len(turns):
        turns = turns[[c for c in R.TURN_COLUMNS if c in turns.columns]].sort_values(
            ["call_id", "turn"], kind="stable").reset_index(drop=True)
    steps = pd.DataFrame(step_rows)
    if len(steps):
        steps = steps[[c for c in R.STEP_COLUMNS if c in steps.columns]]
    sim_s = float(calls["end_s"].max()) if len(calls) else 0.0
    return {"calls": calls, "turns": turns, "steps": steps,
            "timeseries": R.timeseries(calls, sim_s, exp.deployment.trunk.channels),
            "run": {"wall_s": wall, "sim_s": sim_s, "events": 0, **facts},
            "interrupted": False}


BACKENDS: dict[str, Backend] = {"twin": _twin, "real": _real}


def default_out_dir(exp: Experiment, root: Path = Path("runs")) -> Path:
    return root / f"{exp.name}-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"


def prepare(exp: Experiment, backend: str, base_dir: Path | None, force: bool
            ) -> list[list[CallPlan]]:
    """Check everything that can be checked before running; return the plans."""
    if backend not in BACKENDS:
        raise SpecError("--backend", f"unknown backend {backend!r} (have: {sorted(BACKENDS)})")
    for key, why in unsupported_features(exp):
        raise SpecError(key, f"{why} by any backend yet; remove it to run")
    try:
        plans = [make_plan(exp, rep, base_dir) for rep in range(exp.replications)]
    except DistError as exc:
        raise SpecError("load.arrivals", str(exc)) from exc
    if backend == "real" and not force:
        n = max((len(p) for p in plans), default=0)
        if n > exp.real.max_calls:
            raise SpecError("real.max_calls", f"the plan has {n} calls, over the cap of "
                            f"{exp.real.max_calls} (raise it or pass --force)")
        if exp.duration_s > exp.real.max_duration_s:
            raise SpecError("real.max_duration_s", f"duration_s {exp.duration_s:g} is over the "
                            f"cap of {exp.real.max_duration_s:g} s (raise it or pass --force)")
    return plans


def run_experiment(exp: Experiment, *, backend: str = "twin", out_dir: Path | None = None,
                   base_dir: Path | None = None, force: bool = False, jobs: int | None = None,
                   show_progress: bool = True) -> Path:
    """Run ``exp`` on ``backend``; write the results; return the path of summary.json."""
    plans = prepare(exp, backend, base_dir, force)
    pricebook = load_pricebook(exp.pricebook, base_dir)
    out = Path(out_dir) if out_dir is not None else default_out_dir(exp)
    if out.exists() and any(out.iterdir()):
        raise SpecError("--out", f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.resolved.yaml").write_text(dump_resolved(exp))
    wall0 = time.perf_counter()
    reps: list[dict[str, Any]] = []
    failure: BaseException | None = None
    try:
        _run_all(exp, backend, plans, reps, out, jobs, show_progress)
    except (KeyboardInterrupt, Exception) as exc:  # keep what finished, then re-raise
        failure = exc
    summary = _write(exp, backend, reps, out, pricebook, time.perf_counter() - wall0, failure)
    if failure is not None:
        raise RunInterrupted(out, failure) from failure
    return summary


def _run_all(exp: Experiment, backend: str, plans: list[list[CallPlan]],
             reps: list[dict[str, Any]], out: Path, jobs: int | None, show: bool) -> None:
    run = BACKENDS[backend]
    jobs = jobs or min(len(plans), os.cpu_count() or 1)
    if backend == "twin" and jobs > 1 and len(plans) > 1:
        from tqdm import tqdm

        pool = ProcessPoolExecutor(max_workers=jobs)
        try:
            futures = [pool.submit(run, exp, rep, plan, None, None)
                       for rep, plan in enumerate(plans)]
            for fut in tqdm(futures, desc=f"{exp.name} replications", unit="rep",
                            disable=not show, file=sys.stderr):
                reps.append(fut.result())
        except BaseException:
            # keep the replications that finished; stop the others now
            workers = list(getattr(pool, "_processes", {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in workers:
                proc.terminate()
            raise
        pool.shutdown()
        return
    for rep, plan in enumerate(plans):
        journal = _Journal(out / f"calls.rep{rep}.jsonl") if backend == "real" else None
        with _progress(exp, rep, show) as progress:
            result = run(exp, rep, plan, progress, journal)
        reps.append(result)
        if result.get("interrupted"):
            raise KeyboardInterrupt
        if journal is not None:
            journal.remove()


class _Journal:
    """Finished calls of a real run, one JSON line each, flushed as they end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = path.open("a")

    def __call__(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(R._json_safe(record)) + "\n")
        self._fh.flush()

    def records(self) -> pd.DataFrame:
        self._fh.flush()
        lines = self.path.read_text().splitlines()
        return pd.DataFrame([json.loads(x) for x in lines if x.strip()])

    def remove(self) -> None:
        self._fh.close()
        self.path.unlink(missing_ok=True)


class _progress:
    """A tqdm bar over simulated (or real) seconds on stderr."""

    def __init__(self, exp: Experiment, rep: int, show: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=round(exp.duration_s), unit="s", desc=f"{exp.name} rep {rep}",
                        disable=not show, file=sys.stderr, leave=False)

    def __enter__(self) -> Callable[[float], None]:
        def update(now_s: float) -> None:
            self.bar.update(max(0, min(round(now_s), self.bar.total) - self.bar.n))

        return update

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def _write(exp: Experiment, backend: str, reps: list[dict[str, Any]], out: Path,
           pricebook: Any, wall: float, failure: BaseException | None) -> Path:
    """Assemble the tables and the summary from finished replications (and journals)."""
    frames, turn_frames, step_frames, series = [], [], [], []
    sim_s, events = 0.0, 0
    ai_usage: dict[str, dict[str, Any]] = {}
    ai_horizon = 0.0
    for rep, res in enumerate(reps):
        for stage, use in res.get("ai", {}).items():
            acc = ai_usage.setdefault(stage, {"servers": use["servers"], "busy_s": 0.0})
            acc["busy_s"] += use["busy_s"]
        ai_horizon += max(0.0, float(res["run"].get("sim_s", 0.0)) - exp.warmup_s)
        calls = res["calls"].copy()
        calls["replication"] = rep
        frames.append(calls)
        turns = res.get("turns", pd.DataFrame())
        if len(turns):
            turns = turns.copy()
            turns["replication"] = rep
            turn_frames.append(turns)
        steps = res.get("steps", pd.DataFrame())
        if len(steps):
            step_frames.append(steps.assign(replication=rep))
        ts = res["timeseries"].copy()
        ts.insert(1, "replication", rep)
        series.append(ts)
        sim_s = max(sim_s, float(res["run"].get("sim_s", 0.0)))
        events += int(res["run"].get("events", 0))
    for journal in sorted(out.glob("calls.rep*.jsonl")):  # an interrupted real replication
        rep = int(journal.stem.removeprefix("calls.rep"))
        df = _Journal(journal).records()
        if len(df):
            df["replication"] = rep
            frames.append(df)
            series.append(R.timeseries(df, float(df["end_s"].max()), exp.deployment.trunk.channels
                                       ).assign(replication=rep))
    calls = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=list(R.CALL_COLUMNS))
    turns = pd.concat(turn_frames, ignore_index=True) if turn_frames else pd.DataFrame(
        columns=list(R.TURN_COLUMNS))
    if "mos" not in calls:
        calls["mos"] = np.nan
    missing = (calls["outcome"] == "answered") & calls["mos"].isna()
    calls.loc[missing, "mos"] = call_mos(exp)  # a backend that measured no MOS for a call
    costs = call_costs(calls, turns, pricebook, exp.deployment.ai.llm.tokens.mean)
    calls["cost_usd"] = costs["cost_usd"].to_numpy()
    ts_all = pd.concat(series, ignore_index=True) if series else pd.DataFrame(
        columns=list(R.TIMESERIES_BASE))
    R.write_tables(out, R.calls_table([calls]), R.turns_table([turns]), ts_all)
    R.steps_table(step_frames).to_parquet(out / "steps.parquet", index=False)
    counted = calls["start_s"] >= exp.warmup_s
    extra = {
        "cost": summary_cost(costs[counted.to_numpy()], calls[counted], pricebook,
                             max(0.0, sim_s - exp.warmup_s), max(1, len(reps))),
        "experiment": exp.name, "seed": exp.seed,
        "status": "complete" if failure is None else "interrupted",
    }
    summary = R.summarize(calls, turns, backend=backend, warmup_s=exp.warmup_s,
                          replications=exp.replications,
                          run={"wall_s": wall, "sim_s": sim_s, "events": events,
                               "ai": ai_usage, "ai_horizon_s": ai_horizon}, extra=extra)
    path = out / "summary.json"
    R.write_json(path, summary)
    for journal in out.glob("calls.rep*.jsonl"):
        journal.unlink()
    return path


#: Codec algorithmic look-ahead, ms (G.711: none; G.729/G.729A: 5 ms, ITU-T G.729 clause 2).
LOOKAHEAD_MS = {"G711": 0.0, "G729A": 5.0}


def call_mos(exp: Experiment) -> float:
    """Per-call MOS from the ITU-T G.107 E-model for the deployment's media path.

    Mouth-to-ear delay = network one-way delay + jitter buffer + packetisation
    (one ptime) + codec look-ahead; the network loss is the packet loss.
    """
    from lab.emodel import WIDEBAND_CODECS, emodel

    media, net = exp.deployment.media, exp.deployment.network
    codec = {"G711U": "G711", "G711A": "G711"}.get(media.codec, media.codec)
    if codec in WIDEBAND_CODECS or codec.upper() in WIDEBAND_CODECS:
        return float("nan")  # wideband codecs need G.107.1, not modelled yet
    lookahead = LOOKAHEAD_MS.get(codec, 0.0)
    delay = net.delay_ms + media.jitter_buffer_ms + media.ptime_ms + lookahead
    return float(emodel(codec, media.plc, delay, net.loss, 1.0)["MOS"])
