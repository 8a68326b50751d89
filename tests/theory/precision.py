"""Simulation estimates sized by the precision they reach, for the queueing-theory tests.

A theory test compares a twin estimate with an analytic value (Erlang B, Erlang C). The
comparison means something only if the estimate is precise enough to see a small
modelling error, so the runs here are sized by a *half-width target*, not by a fixed
replication count: replications are run until the 99 % confidence half-width of every
estimate is at most :data:`TARGET` (1 %) of its analytic value.

Method (Law & Kelton, *Simulation Modeling and Analysis*, ch. 9):

* each replication is an independent seeded run (its own random streams) that discards
  the calls or turns of its first ``warmup_s`` simulated seconds -- the twin starts
  empty, and the transient would bias every estimate low;
* the rest of the replication is cut by arrival time into :data:`BATCHES` equal batches,
  each thousands of holding (service) times long, so batch means are nearly independent
  despite the autocorrelation of successive calls; batch means of different replications
  are independent outright;
* the interval is Student t over all the batch means so far, at :data:`LEVEL`;
* replications are added one at a time, in index order, until every half-width is within
  target (a sequential procedure). With ``jobs`` processes the replications run in
  parallel, but results are taken in index order and the first index that reaches the
  target stops the run, so the answer depends on the seed only, never on the core count.

A replication returns only its batch means, never its tables, so memory stays bounded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from lab.spec import Experiment

#: Confidence level of every interval.
LEVEL = 0.99
#: Largest half-width allowed, as a fraction of the analytic value.
TARGET = 0.01
#: Batches each replication's counted stretch is cut into.
BATCHES = 10

Floats = NDArray[np.float64]
#: One replication: its batch means per estimate name (each an array of BATCHES values).
Work = Callable[[int], dict[str, Floats]]


@dataclass(frozen=True)
class Estimate:
    """A batch-means estimate beside its analytic value."""

    name: str
    analytic: float
    mean: float
    half: float  #: half-width of the LEVEL interval (Student t over the batch means)
    batches: int
    replications: int
    target: float = TARGET  #: the largest half-width allowed, a fraction of ``analytic``
    controls: tuple[str, ...] = ()  #: control variates the estimate was corrected by

    @property
    def lo(self) -> float:
        return self.mean - self.half

    @property
    def hi(self) -> float:
        return self.mean + self.half

    @property
    def relative_half(self) -> float:
        """The half-width as a fraction of the analytic value."""
        return self.half / self.analytic

    @property
    def precise(self) -> bool:
        """The half-width target was reached."""
        return self.half <= self.target * self.analytic

    @property
    def covers(self) -> bool:
        """The analytic value lies inside the interval."""
        return self.lo <= self.analytic <= self.hi

    def __str__(self) -> str:
        return (f"{self.name}: {self.mean:.6g} ± {self.half:.3g} "
                f"({100 * self.relative_half:.2f} % of analytic {self.analytic:.6g}, target "
                f"{100 * self.target:.3g} %; {self.batches} batches, "
                f"{self.replications} replications"
                + (f"; controls {', '.join(self.controls)}" if self.controls else "") + ")")


def interval(batch_means: Floats, level: float = LEVEL) -> tuple[float, float]:
    """Mean and Student-t half-width at ``level`` of independent batch means."""
    v = np.asarray(batch_means, dtype=float)
    if v.size < 2:
        return float(v.mean()) if v.size else math.nan, math.inf
    t = float(stats.t.ppf(0.5 + level / 2, v.size - 1))
    return float(v.mean()), t * float(v.std(ddof=1)) / math.sqrt(v.size)


def controlled_interval(y: Floats, xs: list[Floats], known: list[float],
                        level: float = LEVEL) -> tuple[float, float]:
    """Mean and half-width of ``y`` corrected by control variates (Lavenberg & Welch
    1981; Law & Kelton sec. 11.3): ``xs`` are batch means of quantities whose
    expectations ``known`` are known exactly. ``y`` is regressed on ``x - known``; the
    intercept is the controlled estimate, its standard error from the regression,
    Student t with ``n - q - 1`` degrees of freedom for ``q`` controls."""
    y = np.asarray(y, dtype=float)
    n, q = y.size, len(xs)
    if n < q + 3:
        return (float(y.mean()) if n else math.nan), math.inf
    design = np.column_stack([np.ones(n)] + [np.asarray(x, dtype=float) - k
                                             for x, k in zip(xs, known, strict=True)])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ beta
    s2 = float(resid @ resid) / (n - q - 1)
    se = math.sqrt(s2 * float(np.linalg.inv(design.T @ design)[0, 0]))
    t = float(stats.t.ppf(0.5 + level / 2, n - q - 1))
    return float(beta[0]), t * se


def batch_sums(times: ArrayLike, values: ArrayLike, start_s: float, stop_s: float,
               batches: int = BATCHES) -> tuple[Floats, Floats]:
    """Sums of ``values`` and counts over ``batches`` equal stretches of
    ``[start_s, stop_s)`` by ``times`` (the arrival time of each call or turn); values
    outside are not counted."""
    t = np.asarray(times, dtype=float)
    inside = (t >= start_s) & (t < stop_s)
    idx = ((t[inside] - start_s) * (batches / (stop_s - start_s))).astype(np.int64)
    idx = np.minimum(idx, batches - 1)
    counts = np.bincount(idx, minlength=batches).astype(np.float64)
    sums = np.bincount(idx, np.asarray(values, dtype=float)[inside], minlength=batches)
    return np.asarray(sums, dtype=np.float64), counts


def batch_means(times: ArrayLike, values: ArrayLike, start_s: float, stop_s: float,
                batches: int = BATCHES) -> Floats:
    """Means of ``values`` over ``batches`` equal stretches of ``[start_s, stop_s)`` by
    ``times`` (see :func:`batch_sums`)."""
    sums, counts = batch_sums(times, values, start_s, stop_s, batches)
    if not counts.all():
        raise ValueError("batch_means: a batch has no arrivals; make the run longer")
    return sums / counts


#: Control variates per estimate: its name -> the names of the estimates it is
#: corrected by (whose expectations are their analytic values, known exactly).
Controls = Mapping[str, tuple[str, ...]]


def estimates(analytic: Mapping[str, float], means: Mapping[str, list[Floats]],
              replications: int, targets: Mapping[str, float] | None = None,
              controls: Controls | None = None) -> dict[str, Estimate]:
    """The interval of each named estimate from its replications' batch means
    (corrected by its control variates, if ``controls`` names any)."""
    def joined(name: str) -> Floats:
        return np.concatenate(means[name]) if means[name] else np.empty(0)

    out = {}
    for name, value in analytic.items():
        v = joined(name)
        cs = tuple((controls or {}).get(name, ()))
        if cs:
            m, h = controlled_interval(v, [joined(c) for c in cs], [analytic[c] for c in cs])
        else:
            m, h = interval(v)
        out[name] = Estimate(name, value, m, h, int(v.size), replications,
                             (targets or {}).get(name, TARGET), cs)
    return out


def _needed(est: Mapping[str, Estimate]) -> float:
    """Replications the worst estimate needs to reach the target, from its variance so far
    (the half-width falls as one over the square root of the batches)."""
    done = next(iter(est.values())).replications
    worst = max(e.half / (e.target * e.analytic) for e in est.values())
    return done * worst ** 2 if math.isfinite(worst) else done + 1.0


def run_until_precise(work: Work, analytic: Mapping[str, float], *, min_replications: int = 3,
                      max_replications: int = 200, jobs: int | None = None,
                      targets: Mapping[str, float] | None = None,
                      controls: Controls | None = None) -> dict[str, Estimate]:
    """Run replications 0, 1, 2, ... of ``work`` until every estimate's half-width is
    within its target (:data:`TARGET` unless ``targets`` says otherwise) of its analytic
    value, or ``max_replications`` ran.

    ``work(rep)`` returns the batch means of replication ``rep`` per estimate name (the
    keys of ``analytic``). It must be a picklable top-level callable: with ``jobs`` > 1
    replications run in worker processes, at most as many ahead as the variance so far
    says are still needed, so little work is thrown away at the stop.
    """
    jobs = jobs or min(2, os.cpu_count() or 1)
    means: dict[str, list[Floats]] = {name: [] for name in analytic}
    done = 0
    est = estimates(analytic, means, 0, targets, controls)

    def take(result: dict[str, Floats]) -> None:
        nonlocal done, est
        for name in analytic:
            means[name].append(np.asarray(result[name], dtype=float))
        done += 1
        est = estimates(analytic, means, done, targets, controls)

    def finished() -> bool:
        return done >= max_replications or (
            done >= min_replications and all(e.precise for e in est.values()))

    if jobs == 1:
        while not finished():
            take(work(done))
        return est
    pending: dict[int, Future[dict[str, Floats]]] = {}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        try:
            while not finished():
                wanted = max(min_replications, math.ceil(_needed(est)) if done else 0)
                ahead = min(max_replications, max(done + 1, wanted), done + jobs)
                for rep in range(done, ahead):
                    if rep not in pending:
                        pending[rep] = pool.submit(work, rep)
                take(pending.pop(done).result())
        finally:
            for f in pending.values():
                f.cancel()
    return est


# ---------------------------------------------------------------------------- the systems
@dataclass(frozen=True)
class LossSystem:
    """The trunk alone, an M/G/c/c loss system: ``channels`` channels, Poisson arrivals
    offering ``erlangs``, holds drawn from ``hold`` (a :mod:`lab.dists` spec), no network
    or proxy delay -- a call holds its channel for exactly its hold time.

    A replication offers about ``calls`` calls after a warm-up of ``warmup_holds`` mean
    holds; its estimate is the fraction of counted calls blocked, per batch.
    """

    channels: int
    erlangs: float
    hold: float | dict[str, Any]  # a hold-time spec: seconds, or a distribution mapping
    calls: int = 200_000
    warmup_holds: float = 20.0
    seed: int = 11

    @property
    def mean_hold_s(self) -> float:
        from lab.dists import Dist

        return float(Dist.parse(self.hold).mean)

    @property
    def warmup_s(self) -> float:
        return self.warmup_holds * self.mean_hold_s

    def experiment(self) -> Experiment:
        from tests.conftest import experiment

        rate = self.erlangs / self.mean_hold_s
        return experiment(
            seed=self.seed, warmup_s=self.warmup_s,
            duration_s=min(MAX_DURATION_S, self.warmup_s + self.calls / rate),
            load={"arrivals": {"kind": "poisson", "rate_cps": rate}},
            scenarios={"talk": {"hold_s": self.hold}},
            deployment={"trunk": {"channels": self.channels}})

    def __call__(self, rep: int) -> dict[str, Floats]:
        from lab.plan import make_plan
        from twin.backend import run_replication

        exp = self.experiment()
        calls = run_replication(exp, rep, make_plan(exp, rep)).calls
        blocked = (calls.outcome == "blocked").to_numpy(float)
        return {"blocking": batch_means(calls.start_s.to_numpy(), blocked, exp.warmup_s,
                                        exp.duration_s)}


@dataclass(frozen=True)
class LlmQueue:
    """The LLM provider alone, an M/M/c queue: ``agents`` slots, exponential time to
    first token of mean ``service_s`` and no tokens after it, one turn per call.

    Every delay before the LLM is constant and the trunk is ample, so LLM requests arrive
    exactly as the calls do (Poisson, shifted by a constant). The caller's utterance is
    long enough for about a hundred requests per request window of the twin
    (:mod:`twin.lanes`): that only shifts every arrival by the same constant, and makes
    the twin faster. A replication has about ``turns`` turns after ``warmup_s``; its
    estimates, per batch: the fraction of turns that waited (``p_wait``), the mean wait
    in seconds (``wait_s``), and the inputs whose expectations are known -- requests per
    second (``arrivals``, expectation ``rate``) and offered erlangs (``work``, the drawn
    service seconds per second, expectation ``erlangs``).
    """

    agents: int
    erlangs: float
    service_s: float = 2.0
    turns: int = 200_000
    warmup_s: float = 1000.0
    seed: int = 5
    extra: dict[str, Any] = field(default_factory=dict)  # more deployment.ai.llm keys

    @property
    def rate(self) -> float:
        return self.erlangs / self.service_s

    @property
    def caller_speech_s(self) -> float:
        return max(20.0, 100.0 / self.rate)

    def experiment(self) -> Experiment:
        from tests.conftest import experiment

        llm = {"ttft_ms": {"dist": "exponential", "mean": 1000.0 * self.service_s},
               "tokens": 0, "concurrency": self.agents, **self.extra}
        return experiment(
            seed=self.seed, warmup_s=self.warmup_s,
            duration_s=min(MAX_DURATION_S, self.warmup_s + self.turns / self.rate),
            load={"arrivals": {"kind": "poisson", "rate_cps": self.rate}},
            scenarios={"talk": {"turns": 1, "caller_speech_s": self.caller_speech_s,
                                "agent_speech_s": 3.0}},
            deployment={"trunk": {"channels": 1_000_000},
                        "ai": {"vad_ms": 300, "stt": {"latency_ms": 150}, "llm": llm,
                               "tts": {"ttfb_ms": 120}}})

    #: caller stops speaking -> LLM request: packetisation 20 ms + VAD 300 ms + STT 150 ms
    TO_LLM_S = 0.47

    def __call__(self, rep: int) -> dict[str, Floats]:
        from lab.plan import make_plan
        from twin.backend import run_replication

        exp = self.experiment()
        turns = run_replication(exp, rep, make_plan(exp, rep)).turns
        asked = turns.start_s.to_numpy() + self.TO_LLM_S
        wait_s = turns.llm_wait_ms.to_numpy() / 1000.0
        stop = exp.duration_s
        # the inputs per batch, as rates over the batch's length: requests per second
        # and offered work (drawn service seconds per second, i.e. erlangs); their
        # expectations are known exactly -- ``rate`` and ``erlangs`` -- so they serve as
        # control variates and as a check of the inputs themselves
        length = (stop - exp.warmup_s) / BATCHES
        work, count = batch_sums(asked, turns.llm_ms.to_numpy() / 1000.0, exp.warmup_s, stop)
        return {"p_wait": batch_means(asked, (wait_s > 0).astype(float), exp.warmup_s, stop),
                "wait_s": batch_means(asked, wait_s, exp.warmup_s, stop),
                "arrivals": count / length, "work": work / length}


#: The longest run an experiment may ask for (lab.spec: 31 days).
MAX_DURATION_S = 2_678_400.0
