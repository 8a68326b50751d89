"""Load profiles: when calls arrive.

A profile is a call-arrival rate λ(t) in calls per second over the run. The same
object serves both consumers:

* the twin and the real backend take concrete arrival times from
  :meth:`Profile.arrival_times` (a non-homogeneous Poisson process by thinning
  (Lewis & Shedler 1979), or evenly spaced arrivals when ``poisson: false``);
* Locust takes :meth:`Profile.tick`, a pure function of elapsed seconds that
  returns the rate to offer now, or ``None`` once the profile has ended.

``replay`` plays arrival times recorded elsewhere (a CSV or Parquet column).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab import spec as S
from lab.dists import DistError, read_column


@dataclass(frozen=True)
class Profile:
    """A rate function λ(t) on [0, duration_s) plus how arrivals are drawn from it."""

    arrivals: S.PoissonArrivals | S.ConstantArrivals | S.RampArrivals | S.StepsArrivals | (
        S.BurstArrivals | S.DiurnalArrivals | S.ReplayArrivals
    )
    duration_s: float
    base_dir: Path | None = None

    # ------------------------------------------------------------------ the rate
    def rate_at(self, t: float) -> float:
        """Offered call rate (calls/s) at elapsed time ``t`` seconds."""
        a = self.arrivals
        if t < 0 or t >= self.duration_s:
            return 0.0
        if isinstance(a, S.PoissonArrivals | S.ConstantArrivals):
            return a.rate_cps
        if isinstance(a, S.RampArrivals):
            span = a.ramp_s or self.duration_s
            frac = min(t / span, 1.0)
            return a.start_cps + (a.end_cps - a.start_cps) * frac
        if isinstance(a, S.StepsArrivals):
            rate = 0.0
            for step in sorted(a.steps, key=lambda s: s.at_s):
                if t >= step.at_s:
                    rate = step.rate_cps
            return rate
        if isinstance(a, S.BurstArrivals):
            inside = a.start_s <= t < a.start_s + a.duration_s
            return a.burst_cps if inside else a.base_cps
        if isinstance(a, S.DiurnalArrivals):
            hour = (t % a.period_s) / a.period_s * 24.0
            return a.peak_cps * a.hourly[int(hour) % 24]
        # replay: the empirical rate over the surrounding second
        times = self._replay_times()
        lo, hi = np.searchsorted(times, [math.floor(t), math.floor(t) + 1])
        return float(hi - lo)

    def peak_rate(self) -> float:
        """The largest λ(t) over the run (the thinning envelope)."""
        a = self.arrivals
        if isinstance(a, S.PoissonArrivals | S.ConstantArrivals):
            return a.rate_cps
        if isinstance(a, S.RampArrivals):
            return max(a.start_cps, a.end_cps)
        if isinstance(a, S.StepsArrivals):
            return max(s.rate_cps for s in a.steps)
        if isinstance(a, S.BurstArrivals):
            return max(a.base_cps, a.burst_cps)
        if isinstance(a, S.DiurnalArrivals):
            return a.peak_cps * max(a.hourly)
        times = self._replay_times()
        if times.size == 0:
            return 0.0
        return float(np.bincount(times.astype(int)).max())

    def mean_rate(self, grid: int = 20000) -> float:
        """λ averaged over the run (numerically on a fine grid)."""
        if isinstance(self.arrivals, S.ReplayArrivals):
            return self._replay_times().size / self.duration_s
        t = (np.arange(grid) + 0.5) * (self.duration_s / grid)
        return float(np.mean([self.rate_at(x) for x in t]))

    def tick(self, elapsed_s: float) -> float | None:
        """Locust-style shape: the rate to offer at ``elapsed_s``; ``None`` when done."""
        if elapsed_s >= self.duration_s:
            return None
        return self.rate_at(elapsed_s)

    # ------------------------------------------------------------------ arrivals
    def arrival_times(self, rng: np.random.Generator) -> np.ndarray:
        """Sorted arrival times in [0, duration_s)."""
        a = self.arrivals
        if isinstance(a, S.ReplayArrivals):
            return self._replay_times()
        if isinstance(a, S.PoissonArrivals):
            return _poisson(rng, a.rate_cps, self.duration_s)
        if isinstance(a, S.ConstantArrivals):
            return np.arange(0.0, self.duration_s, 1.0 / a.rate_cps)
        if not a.poisson:
            return self._even()
        peak = self.peak_rate()
        if peak <= 0:
            return np.empty(0)
        candidates = _poisson(rng, peak, self.duration_s)
        rates = np.array([self.rate_at(t) for t in candidates.tolist()])
        keep = rng.random(candidates.size) * peak < rates
        return candidates[keep]

    def _even(self) -> np.ndarray:
        """Deterministic arrivals: the n-th call when the integrated rate reaches n."""
        step = 0.01
        t = np.arange(0.0, self.duration_s, step)
        cum = np.cumsum([self.rate_at(x) * step for x in t.tolist()])
        n = np.arange(1, int(cum[-1]) + 1) if cum.size else np.empty(0)
        return np.interp(n, cum, t + step)

    def _replay_times(self) -> np.ndarray:
        a = self.arrivals
        assert isinstance(a, S.ReplayArrivals)
        path = Path(a.file)
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        if not path.is_file():
            raise DistError(f"replay: file not found: {a.file}")
        raw = read_column(path, a.column)
        where = f"{a.file}, column '{a.column}'"
        if raw.size == 0:
            raise DistError(f"replay: {where} has no arrival times")
        if not np.all(np.isfinite(raw)):
            row = int(np.flatnonzero(~np.isfinite(raw))[0])
            raise DistError(f"replay: {where}: row {row + 1} has no time (missing or not finite)")
        if np.any(raw < 0):
            row = int(np.flatnonzero(raw < 0)[0])
            raise DistError(f"replay: {where}: row {row + 1} is negative ({raw[row]:g} s)")
        if np.any(np.diff(raw) < 0):
            row = int(np.flatnonzero(np.diff(raw) < 0)[0]) + 1
            raise DistError(f"replay: {where}: not sorted (row {row + 1}, {raw[row]:g} s, comes "
                            f"after {raw[row - 1]:g} s)")
        times = raw / a.speed
        return times[times < self.duration_s]


def _poisson(rng: np.random.Generator, rate: float, duration_s: float) -> np.ndarray:
    """Homogeneous Poisson arrivals: the count is Poisson, the times uniform order statistics."""
    n = int(rng.poisson(rate * duration_s))
    return np.sort(rng.uniform(0.0, duration_s, n))
