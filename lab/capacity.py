"""Capacity planning: how many trunk channels carry the busy hour, analytically and simulated.

Teletraffic background
----------------------
**Offered load** ``A`` (erlangs) is the traffic the callers *try* to put on the trunk:
the call arrival rate times the mean holding time, ``A = λ·h`` — 0.5 calls/s of
3-minute calls offer 90 E, i.e. 90 calls would be in progress on average if no
call were ever refused. **Carried load** is what the trunk actually holds: the
time-average number of busy channels. A trunk of ``N`` channels refuses calls
that find all channels busy (SIP ``503``/``486`` from the carrier; blocked calls
are *cleared*, they do not queue), so carried = offered × (1 − blocking), and
carried can never exceed ``N``.

**Erlang B** gives that blocking for Poisson arrivals, ``B(N, A)``, whatever the
holding-time distribution (only its mean matters). Dimensioning inverts it: the
smallest ``N`` with ``B(N, A_peak) <= target`` at the *busy-hour* (peak) offered
load — the classic "1 % grade of service" (ITU-T E.520/E.521).

**Why the simulation, and why the confidence interval.** Erlang B is exact only
for the pure loss model; the twin adds what real deployments have (SIP
set-up delay that holds a channel before the talk starts, a proxy, a warm-up
from an empty trunk, the experiment's own scenario mix). Each twin replication
is one random busy hour, so its blocking is itself a random number: with ~1 000
calls and 1 % blocking a single hour shows anywhere from ~0.4 % to ~1.6 %.
Independent replications (separate ``numpy`` seed streams) give a Student-t 95 %
confidence interval (:func:`lab.results.mean_ci95`); the analytic value should
fall inside it. The dimensioning answer is the one the twin *confirms*
(:func:`plan`): a channel count counts only when the whole interval lies at or
below the target; while the target lies inside the interval, replications are
added (up to a cap), and a count the twin shows to miss is followed by the next.
When no count is decided the answer says so instead of quoting Erlang B's.

Sweeps and verification replace the experiment's arrival profile by a
*stationary* Poisson stream at the chosen load (the busy-hour assumption of
Erlang B); everything else — scenarios, deployment, warm-up, seed — is the
experiment's own. Points run in parallel processes, each through
:func:`lab.runner.run_experiment`, so every point writes an ordinary run directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab.erlang import channels_for_blocking, erlang_b
from lab.profiles import Profile
from lab.spec import Experiment, PoissonArrivals, SpecError, load_experiment

#: The built-in experiments, resolved by name (``"contact-centre"``).
EXPERIMENTS_DIR = Path(__file__).resolve().parent / "experiments"

#: Default sweep span, as multiples of the trunk's channel count.
DEFAULT_SPAN = (0.5, 1.3)


# ---------------------------------------------------------------------------- experiments
def experiment_path(experiment: str | Path) -> Path:
    """An experiment file from a path, or the name of a built-in (``lab/experiments/NAME.yaml``)."""
    path = Path(experiment)
    if path.is_file():
        return path.resolve()
    builtin = EXPERIMENTS_DIR / f"{experiment}.yaml"
    if builtin.is_file():
        return builtin
    if path.is_dir():
        raise SpecError("experiment", f"{str(experiment)!r} is a directory, not an experiment "
                        "file")
    have = ", ".join(sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml")))
    raise SpecError("experiment", f"no experiment file or built-in named {str(experiment)!r}"
                    f" (built in: {have})")


def load(experiment: str | Path, *, duration_s: float | None = None, seed: int | None = None,
         replications: int | None = None, overrides: list[str] | None = None) -> Experiment:
    """Load an experiment by name or path, with optional overrides.

    A shorter ``duration_s`` that the experiment's warm-up would not fit in cuts
    the warm-up to a quarter of the run.
    """
    path = experiment_path(experiment)
    sets = list(overrides or [])
    if duration_s is not None:
        sets.append(f"duration_s={float(duration_s)!r}")
        warmup = load_experiment(path, overrides).warmup_s
        if warmup >= duration_s:
            sets.append(f"warmup_s={float(duration_s) / 4.0!r}")
    return load_experiment(path, sets, seed=seed, replications=replications)


def mean_hold_s(exp: Experiment) -> float:
    """Mean channel holding time of a call, seconds, weighted over the scenario mix.

    A talk scenario holds for ``hold_s``; an AI scenario for its turns × (caller
    utterance + agent reply) — the AI pipeline's own latency is left out, so for
    AI calls this slightly understates the hold (the simulated carried load shows
    the true value).
    """
    total, weighted = 0.0, 0.0
    for entry in exp.load.mix:
        sc = exp.scenarios[entry.scenario]
        turns = float(sc.turns) if isinstance(sc.turns, int) else sc.turns.mean
        hold = (sc.hold_s.mean if turns <= 0
                else turns * (sc.caller_speech_s.mean + sc.agent_speech_s.mean))
        total += entry.weight
        weighted += entry.weight * hold
    return weighted / total


def peak_erlangs(exp: Experiment, base_dir: Path | None = None) -> float:
    """Busy-hour offered load: the load profile's peak call rate × the mean hold."""
    return Profile(exp.load.arrivals, exp.duration_s, base_dir).peak_rate() * mean_hold_s(exp)


def at_load(exp: Experiment, erlangs: float, channels: int | None = None) -> Experiment:
    """``exp`` with stationary Poisson arrivals offering ``erlangs`` (and ``channels``)."""
    if not erlangs > 0:
        raise SpecError("offered_erlangs", f"must be a number > 0, got {erlangs!r}")
    rate = PoissonArrivals(kind="poisson", rate_cps=erlangs / mean_hold_s(exp))
    update: dict[str, Any] = {"load": exp.load.model_copy(update={"arrivals": rate})}
    if channels is not None:
        if channels < 1:
            raise SpecError("channels", f"must be an integer > 0, got {channels!r}")
        dep = exp.deployment
        trunk = dep.trunk.model_copy(update={"channels": int(channels)})
        update["deployment"] = dep.model_copy(update={"trunk": trunk})
    return exp.model_copy(update=update)


# ---------------------------------------------------------------------------- running
def run(exp: Experiment, out_dir: Path | None = None, *, base_dir: Path | None = None,
        jobs: int | None = None) -> Path:
    """Run ``exp`` on the twin (quietly); return its run directory (a temp dir by default)."""
    from lab.runner import run_experiment

    out = Path(out_dir) if out_dir is not None else Path(
        tempfile.mkdtemp(prefix=f"siplab-{exp.name}-"))
    return run_experiment(exp, backend="twin", out_dir=out, base_dir=base_dir, jobs=jobs,
                          show_progress=False).parent


@dataclass(frozen=True)
class RunData:
    """The tables of one run directory, for plotting."""

    path: Path | None  # None once a temporary run directory has been removed
    summary: dict[str, Any]
    calls: pd.DataFrame
    timeseries: pd.DataFrame


def load_run(run_dir: str | Path) -> RunData:
    """Read ``summary.json``, ``calls.parquet`` and ``timeseries.parquet`` of a run."""
    path = Path(run_dir)
    return RunData(path, json.loads((path / "summary.json").read_text()),
                   pd.read_parquet(path / "calls.parquet"),
                   pd.read_parquet(path / "timeseries.parquet"))


def simulate(exp: Experiment, *, base_dir: Path | None = None,
             jobs: int | None = None) -> RunData:
    """Run ``exp`` on the twin in a temporary directory and return its tables (dir removed)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"siplab-{exp.name}-"))
    try:
        data = load_run(run(exp, tmp / "run", base_dir=base_dir, jobs=jobs))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return RunData(None, data.summary, data.calls, data.timeseries)


def ecdf(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF of the finite ``values``: sorted x and P(X <= x)."""
    arr = np.asarray(values, dtype=float)
    arr = np.sort(arr[np.isfinite(arr)])
    return arr, np.arange(1, arr.size + 1) / max(1, arr.size)


def answered_setup_ms(calls: pd.DataFrame, warmup_s: float) -> np.ndarray:
    """Set-up times (INVITE -> 200 OK, ms) of the answered calls that count (after warm-up)."""
    keep = (calls["outcome"] == "answered") & (calls["start_s"] >= warmup_s)
    return calls.loc[keep, "setup_ms"].to_numpy(float)


def carried_erlangs(ts: pd.DataFrame, warmup_s: float, duration_s: float) -> float:
    """Time-average busy channels over [warmup_s, duration_s), averaged over replications."""
    window = ts[(ts["t_s"] >= warmup_s) & (ts["t_s"] < duration_s)]
    if window.empty:
        return float("nan")
    return float(window.groupby("replication")["active_calls"].mean().mean())


def _point(exp: Experiment, out_dir: Path, base_dir: Path | None) -> dict[str, Any]:
    """Run one load point (replications serially, in this process); reduce it to a row."""
    data = load_run(run(exp, out_dir, base_dir=base_dir, jobs=1))
    s = data.summary
    channels = exp.deployment.trunk.channels
    assert isinstance(exp.load.arrivals, PoissonArrivals)
    offered = exp.load.arrivals.rate_cps * mean_hold_s(exp)
    b = erlang_b(channels, offered)
    lo, hi = s["blocking_probability"]["ci95"]
    return {
        "offered_erlangs": offered,
        "rate_cps": exp.load.arrivals.rate_cps,
        "channels": channels,
        "replications": exp.replications,
        "calls": s["calls"]["offered"],
        "blocking": s["blocking_probability"]["mean"],
        "ci95_lo": lo,
        "ci95_hi": hi,
        "erlang_b": b,
        "setup_ms_p50": s["setup_ms"]["p50"],
        "setup_ms_p95": s["setup_ms"]["p95"],
        "carried_erlangs": carried_erlangs(data.timeseries, exp.warmup_s, exp.duration_s),
        "carried_erlangs_theory": offered * (1.0 - b),
        "run_dir": str(data.path),
    }


def _run_points(exps: list[Experiment], jobs: int | None, out_root: Path | None,
                base_dir: Path | None) -> list[dict[str, Any]]:
    keep = out_root is not None
    root = Path(out_root) if out_root is not None else Path(
        tempfile.mkdtemp(prefix="siplab-capacity-"))
    root.mkdir(parents=True, exist_ok=True)
    dirs = [root / f"{i:02d}-{e.name}-{peak_erlangs(e, base_dir):.4g}E"
            for i, e in enumerate(exps)]
    workers = max(1, min(jobs or os.cpu_count() or 1, len(exps)))
    _preload()
    try:
        if workers == 1:
            rows = [_point(e, d, base_dir) for e, d in zip(exps, dirs, strict=True)]
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(_point, e, d, base_dir)
                           for e, d in zip(exps, dirs, strict=True)]
                rows = [f.result() for f in futures]
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    if not keep:
        for row in rows:
            row["run_dir"] = None
    return rows


def _preload() -> None:
    """Import the runner and the twin before forking, so workers do not each import them."""
    import lab.runner  # noqa: F401
    from lab.backend import backend

    backend("twin")  # imports the twin through the registry


# ---------------------------------------------------------------------------- the plan
def default_loads(channels: int, points: int = 8,
                  span: tuple[float, float] = DEFAULT_SPAN) -> list[float]:
    """``points`` offered loads (erlangs) evenly spread over ``span`` × ``channels``."""
    if points < 1:
        raise SpecError("points", f"must be an integer > 0, got {points!r}")
    return [float(a) for a in np.linspace(span[0] * channels, span[1] * channels, points)]


def sweep(exp: Experiment, loads_erlangs: list[float] | None = None, *, points: int = 8,
          replications: int | None = None, jobs: int | None = None,
          out_root: Path | None = None, base_dir: Path | None = None) -> pd.DataFrame:
    """Blocking versus offered load on the twin, beside Erlang B.

    Parameters
    ----------
    exp : Experiment
        The deployment, scenarios, warm-up and seed to sweep; its arrival profile
        is replaced by stationary Poisson arrivals at each load.
    loads_erlangs : list of float, optional
        Offered loads; default :func:`default_loads` over 0.5–1.3 × the channels.
    points : int
        Number of default loads.
    replications : int, optional
        Independent replications per point (default: the experiment's).
    jobs : int, optional
        Processes running points in parallel (default: every core).
    out_root : Path, optional
        Keep each point's run directory under here (default: a temp dir, removed).
    base_dir : Path, optional
        Directory the experiment's relative file paths are relative to.

    Returns
    -------
    pandas.DataFrame
        A row per load: ``offered_erlangs``, ``rate_cps``, ``channels``,
        ``replications``, ``calls``, ``blocking`` with ``ci95_lo``/``ci95_hi``
        (Student t across replications), ``erlang_b``, ``setup_ms_p50``,
        ``setup_ms_p95``, ``carried_erlangs`` (measured) and
        ``carried_erlangs_theory`` (A·(1 − B)), ``run_dir``.
    """
    channels = exp.deployment.trunk.channels
    loads = default_loads(channels, points) if loads_erlangs is None else list(loads_erlangs)
    base = exp if replications is None else exp.model_copy(update={"replications": replications})
    rows = _run_points([at_load(base, a) for a in loads], jobs, out_root, base_dir)
    return pd.DataFrame(rows)


def channels_needed(peak_erlangs: float, target_blocking: float = 0.01) -> int:
    """Fewest trunk channels with Erlang B blocking <= ``target_blocking`` at ``peak_erlangs``."""
    try:
        return channels_for_blocking(peak_erlangs, target_blocking)
    except ValueError as exc:
        raise SpecError("target_blocking", str(exc)) from exc


def verify_channels(exp: Experiment, channels: int, replications: int | None = None, *,
                    erlangs: float | None = None, target_blocking: float = 0.01,
                    jobs: int | None = None, out_root: Path | None = None,
                    base_dir: Path | None = None) -> dict[str, Any]:
    """Simulate ``channels`` at the peak offered load; measured blocking beside Erlang B.

    Returns
    -------
    dict
        ``channels``, ``offered_erlangs``, ``target_blocking``, ``erlang_b``,
        ``blocking`` with ``ci95`` [lo, hi] (see :func:`widened_ci95`),
        ``replications``, ``calls``,
        ``carried_erlangs`` and ``consistent`` (the CI reaches down to the
        target: the simulation does not contradict "blocking <= target").
    """
    offered = peak_erlangs(exp, base_dir) if erlangs is None else erlangs
    base = exp if replications is None else exp.model_copy(update={"replications": replications})
    point = at_load(base, offered, channels)
    reps = point.replications
    workers = 1 if reps < 2 else min(jobs or os.cpu_count() or 1, reps)
    root = Path(out_root) if out_root is not None else Path(
        tempfile.mkdtemp(prefix="siplab-verify-"))
    try:
        data = load_run(run(point, root / f"verify-{channels}ch", base_dir=base_dir,
                            jobs=workers))
    finally:
        if out_root is None:
            shutil.rmtree(root, ignore_errors=True)
    bp = data.summary["blocking_probability"]
    lo, hi = widened_ci95(bp["ci95"], data.summary["calls"]["blocked"],
                          data.summary["calls"]["offered"])
    return {
        "channels": int(channels),
        "offered_erlangs": offered,
        "target_blocking": target_blocking,
        "erlang_b": erlang_b(int(channels), offered),
        "blocking": bp["mean"],
        "ci95": [lo, hi],
        "replications": reps,
        "calls": data.summary["calls"]["offered"],
        "carried_erlangs": carried_erlangs(data.timeseries, point.warmup_s, point.duration_s),
        "consistent": lo is not None and lo <= target_blocking,
    }


def widened_ci95(ci95: Any, blocked: int, offered: int) -> list[float | None]:
    """The replications' Student-t interval, widened to cover the pooled Wilson interval.

    When every replication sees the same blocking — most often none at all — the
    t interval collapses to a point ([0, 0]) and would "confirm" any target; the
    Wilson score interval on blocked/offered calls still says what so few calls
    cannot rule out (0 of 268 calls: up to 1.4 %).
    """
    from lab.results import wilson_ci95

    lo, hi = ci95
    if not offered or lo is None or hi is None:
        return [lo, hi]
    w_lo, w_hi = wilson_ci95(int(blocked), int(offered))
    return [min(lo, w_lo), max(hi, w_hi)]


#: What the twin's 95 % CI says about a channel count against the target: its upper
#: end at or below the target (``meets``), its lower end above it (``misses``), or
#: the target inside it (``undecided``).
MEETS, MISSES, UNDECIDED = "meets", "misses", "undecided"

#: More channels than Erlang B's count a plan tries before it gives up.
MAX_EXTRA_CHANNELS = 20


def verdict(ci95: Any, target_blocking: float) -> str:
    """:data:`MEETS`, :data:`MISSES` or :data:`UNDECIDED` for a blocking CI [lo, hi]."""
    lo, hi = ci95
    if lo is None or hi is None:
        return UNDECIDED
    if hi <= target_blocking:
        return MEETS
    if lo > target_blocking:
        return MISSES
    return UNDECIDED


def decide_channels(exp: Experiment, channels: int, target_blocking: float, *,
                    replications: int, max_replications: int, erlangs: float | None = None,
                    jobs: int | None = None, base_dir: Path | None = None) -> dict[str, Any]:
    """Simulate ``channels`` with more and more replications until the CI decides.

    Starts at ``replications`` and doubles them (up to ``max_replications``) while
    the target lies inside the 95 % CI: more replications narrow the interval
    roughly as 1/sqrt(n), so a channel count whose true blocking is not exactly
    the target is eventually decided. Returns :func:`verify_channels`' dict plus
    ``verdict`` (see :func:`verdict`) and ``capped`` (stopped at the cap).
    """
    if replications < 1 or max_replications < replications:
        raise SpecError("max_replications", f"must be an integer >= replications "
                        f"({replications}), got {max_replications!r}")
    reps = replications
    while True:
        result = verify_channels(exp, channels, reps, erlangs=erlangs,
                                 target_blocking=target_blocking, jobs=jobs, base_dir=base_dir)
        result["verdict"] = verdict(result["ci95"], target_blocking)
        result["capped"] = result["verdict"] == UNDECIDED and reps >= max_replications
        if result["verdict"] != UNDECIDED or reps >= max_replications:
            return result
        reps = min(max_replications, 2 * reps)


@dataclass(frozen=True)
class Answer:
    """The dimensioning answer: Erlang B's channel count and what the twin confirmed.

    ``tried`` holds :func:`decide_channels`' result for each channel count tried,
    in the order tried (from Erlang B's count upwards, or downwards when it was
    confirmed at once); the answer is the fewest the twin confirms (``channels``),
    or None when none within :data:`MAX_EXTRA_CHANNELS` was.
    """

    peak_erlangs: float
    target_blocking: float
    erlang_b_channels: int
    tried: tuple[dict[str, Any], ...]

    @property
    def confirmed(self) -> dict[str, Any] | None:
        """The result of the fewest channels the twin confirmed, if any."""
        meets = [t for t in self.tried if t["verdict"] == MEETS]
        return min(meets, key=lambda t: t["channels"]) if meets else None

    @property
    def channels(self) -> int | None:
        """The fewest channels tried whose simulated 95 % CI lies at or below the target."""
        best = self.confirmed
        return None if best is None else int(best["channels"])

    def text(self) -> str:
        """The answer in one sentence: the twin-confirmed count, or plainly that there is none."""
        target = _pct(self.target_blocking)
        best = self.confirmed
        if best is not None:
            lo, hi = best["ci95"]
            b = self.erlang_b_channels
            analytic = ("the same count as Erlang B" if b == best["channels"]
                        else f"Erlang B alone says {b}")
            return (f"{best['channels']} channels carry the peak of {self.peak_erlangs:.4g} "
                    f"erlangs at ≤ {target} blocking, twin-confirmed: simulated "
                    f"{_pct(best['blocking'], 2)} [{_pct(lo, 2)}, {_pct(hi, 2)}] (95 % CI "
                    f"over {best['replications']} replications, entirely below the target); "
                    f"{analytic}")
        last = self.tried[-1]
        lo, hi = last["ci95"]
        why = ("still straddles the target at the replication cap" if last["verdict"] == UNDECIDED
               else "is still above the target")
        return (f"The twin cannot confirm a channel count for the peak of "
                f"{self.peak_erlangs:.4g} erlangs at ≤ {target} blocking: at "
                f"{last['channels']} channels simulated blocking {_pct(last['blocking'], 2)} "
                f"[{_pct(lo, 2)}, {_pct(hi, 2)}] (95 % CI over {last['replications']} "
                f"replications) {why}; Erlang B says {self.erlang_b_channels} — run more "
                f"replications or longer runs to decide")

    def table(self) -> pd.DataFrame:
        """A row per channel count tried: the twin's blocking, its CI and the verdict."""
        rows = [{"channels": t["channels"], "erlang_b": t["erlang_b"],
                 "simulated": t["blocking"], "ci95_lo": t["ci95"][0], "ci95_hi": t["ci95"][1],
                 "replications": t["replications"], "verdict": t["verdict"]}
                for t in self.tried]
        return pd.DataFrame(rows)


def plan(exp: Experiment, target_blocking: float = 0.01, replications: int | None = None, *,
         max_replications: int | None = None, max_extra_channels: int = MAX_EXTRA_CHANNELS,
         jobs: int | None = None, base_dir: Path | None = None) -> Answer:
    """Dimension the trunk for the experiment's peak load, confirmed on the twin.

    Starts at Erlang B's count (:func:`channels_needed`) and asks the twin
    (:func:`decide_channels`); a count the twin shows to miss the target, or
    cannot decide at ``max_replications`` (default 8 × ``replications``), is
    followed by the next, up to ``max_extra_channels`` more. When Erlang B's count
    itself is confirmed, fewer channels are tried until one is not (the twin can
    need fewer than Erlang B). The fewest channels whose 95 % CI lies at or below
    the target is the answer.
    """
    peak = peak_erlangs(exp, base_dir)
    first = channels_needed(peak, target_blocking)
    reps = int(replications or exp.replications)
    cap = max(reps, int(max_replications)) if max_replications is not None else 8 * reps

    def decide(n: int) -> dict[str, Any]:
        return decide_channels(exp, n, target_blocking, replications=reps,
                               max_replications=cap, erlangs=peak, jobs=jobs, base_dir=base_dir)

    tried: list[dict[str, Any]] = []
    for n in range(first, first + max_extra_channels + 1):
        tried.append(decide(n))
        if tried[-1]["verdict"] == MEETS:
            break
    if len(tried) == 1 and tried[0]["verdict"] == MEETS:
        for n in range(first - 1, max(0, first - 1 - max_extra_channels), -1):
            tried.append(decide(n))
            if tried[-1]["verdict"] != MEETS:
                break
    return Answer(peak, target_blocking, first, tuple(tried))


def erlang_b_curve(channels: int, loads_erlangs: Any) -> np.ndarray:
    """Erlang B blocking at each offered load (for plotting the analytic curve)."""
    return np.array([erlang_b(channels, float(a)) for a in np.asarray(loads_erlangs, float)])


def _pct(p: float | None, digits: int = 0) -> str:
    if p is None:
        return "n/a"
    return f"{100.0 * p:.{digits}f} %" if digits else f"{100.0 * p:g} %"
