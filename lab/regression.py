"""Is a metric worse than its baseline? A bootstrap of the difference of means.

One run's p95 against a fixed threshold flags noise as often as change: a busy hour
is random, and so is its p95. Following the simulation-validation literature
(Kleijnen, Cheng & Bettonvil 2000/2001; Sargent 2013), each metric is measured in
independent replications, and :func:`compare` bootstraps the difference of the
replication means, now minus baseline (``scipy.stats.bootstrap``, BCa, two
independent samples). Each metric states before anything runs which way is bad
(:class:`MetricRule`: ``higher is worse`` — latency, blocking, cost — or ``lower is
worse`` — MOS) and how large a change matters (``tolerance``, a fraction of the
baseline mean, and/or ``tolerance_abs`` in the metric's own unit; the larger wins).

A metric **regresses** when the whole 95 % confidence interval of the difference lies
on the bad side beyond the tolerance; it **improved** when the whole interval lies
beyond the tolerance on the good side; otherwise it is **unchanged** (within the
tolerance, or too noisy to say). Fewer than two replications on either side cannot be
bootstrapped: **inconclusive**, never a regression.

A baseline file (``reports/baselines/SUITE[.quick].json``) keeps every replication's
value, not only the mean, so the next run can bootstrap against it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lab.errors import SpecError

HIGHER: Final = "higher is worse"
LOWER: Final = "lower is worse"
Verdict = Literal["regressed", "improved", "unchanged", "inconclusive", "no baseline",
                  "not measured"]
BASELINE_VERSION = 1


class MetricRule(BaseModel):
    """How one metric is judged: its bad direction and the change that matters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    direction: Literal["higher is worse", "lower is worse"]
    #: the change that matters as a fraction of the baseline mean, and in the metric's unit
    tolerance: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    tolerance_abs: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    def margin(self, baseline_mean: float) -> float:
        """The change that matters, in the metric's unit."""
        return max(self.tolerance * abs(baseline_mean), self.tolerance_abs)

    def describe(self) -> str:
        parts = []
        if self.tolerance:
            parts.append(f"{100 * self.tolerance:g} % of the baseline")
        if self.tolerance_abs:
            parts.append(f"{self.tolerance_abs:g}")
        return " or ".join(parts) if parts else "none"


@dataclass(frozen=True)
class Comparison:
    """One metric of one report, now against its baseline."""

    key: str                 # experiment/backend/notebook
    metric: str
    direction: str
    verdict: str
    mean: float | None       # now
    baseline_mean: float | None
    diff: float | None       # now - baseline
    diff_ci95: tuple[float, float] | None
    margin: float | None     # the tolerance in the metric's unit
    tolerance: str
    replications: int
    baseline_replications: int

    @property
    def relative(self) -> float | None:
        """The difference as a fraction of the baseline mean (None for a zero baseline)."""
        if self.diff is None or not self.baseline_mean:
            return None
        return self.diff / abs(self.baseline_mean)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["diff_ci95"] = list(self.diff_ci95) if self.diff_ci95 is not None else None
        out["relative_diff"] = self.relative
        return out

    def sentence(self) -> str:
        """``voice-agent/twin/headline voice_to_voice_ms.p95 +412 (95 % CI +380..+450,
        tolerance 24.5)`` — what the CLI prints for a regression."""
        if self.diff is None or self.diff_ci95 is None:
            return f"{self.key} {self.metric}: {self.verdict}"
        lo, hi = self.diff_ci95
        rel = f", {100 * self.relative:+.1f} %" if self.relative is not None else ""
        return (f"{self.key} {self.metric} {self.diff:+.4g}{rel} ({self.direction}; 95 % CI "
                f"{lo:+.4g}..{hi:+.4g}, tolerance {self.margin:.4g})")


def _finite(values: Any) -> np.ndarray:
    arr = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    return arr[np.isfinite(arr)]


def diff_ci(now: np.ndarray, base: np.ndarray, *, confidence: float = 0.95,
            resamples: int = 9999, seed: int = 0) -> tuple[float, float]:
    """Bootstrap CI of ``mean(now) - mean(base)`` (BCa; percentile where BCa is undefined,
    and the point itself when neither sample varies)."""
    from scipy import stats

    diff = float(now.mean() - base.mean())
    if np.ptp(now) == 0 and np.ptp(base) == 0:
        return diff, diff

    def statistic(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    for method in ("BCa", "percentile"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # degenerate BCa: retried as percentile below
            res = stats.bootstrap((now, base), statistic, vectorized=True, paired=False,
                                  confidence_level=confidence, n_resamples=resamples,
                                  method=method, rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return lo, hi
    return diff, diff


def compare(key: str, metric: str, rule: MetricRule, now: Any, base: Any | None, *,
            confidence: float = 0.95, resamples: int = 9999, seed: int = 0) -> Comparison:
    """Judge ``now`` (replication values) against ``base`` (the baseline's, or None)."""
    x = _finite(now)
    y = _finite(base) if base is not None else np.empty(0)

    def result(verdict: str, **kw: Any) -> Comparison:
        fields: dict[str, Any] = {
            "mean": float(x.mean()) if x.size else None,
            "baseline_mean": float(y.mean()) if y.size else None,
            "diff": None, "diff_ci95": None, "margin": None}
        fields.update(kw)
        return Comparison(key, metric, rule.direction, verdict, tolerance=rule.describe(),
                          replications=int(x.size), baseline_replications=int(y.size),
                          **fields)

    if x.size == 0:
        return result("not measured")
    if base is None or y.size == 0:
        return result("no baseline")
    diff = float(x.mean() - y.mean())
    margin = rule.margin(float(y.mean()))
    if x.size < 2 or y.size < 2:
        return result("inconclusive", diff=diff, margin=margin)
    lo, hi = diff_ci(x, y, confidence=confidence, resamples=resamples, seed=seed)
    sign = 1.0 if rule.direction == HIGHER else -1.0
    worse_lo, worse_hi = sorted((sign * lo, sign * hi))
    if worse_lo > margin:
        verdict = "regressed"
    elif worse_hi < -margin:
        verdict = "improved"
    else:
        verdict = "unchanged"
    return result(verdict, diff=diff, diff_ci95=(lo, hi), margin=margin)


# ---------------------------------------------------------------------------- baselines
def baseline_path(directory: Path, suite: str, quick: bool) -> Path:
    """``DIR/SUITE.json`` for a full run, ``DIR/SUITE.quick.json`` for ``--quick``."""
    return directory / f"{suite}{'.quick' if quick else ''}.json"


def read_baseline(path: Path) -> dict[str, dict[str, list[float | None]]] | None:
    """``{key: {metric: [values]}}`` of a baseline file; None when there is none.

    A file that is not a baseline is bad input (:class:`SpecError` naming it)."""
    if not path.exists():
        return None
    where = str(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SpecError(where, f"not a readable JSON baseline ({exc})") from None
    reports = data.get("reports") if isinstance(data, dict) else None
    if not isinstance(reports, dict):
        raise SpecError(where, "not a baseline file (no \"reports\" mapping)")
    out: dict[str, dict[str, list[float | None]]] = {}
    for key, entry in reports.items():
        metrics = entry.get("metrics") if isinstance(entry, dict) else None
        if not isinstance(metrics, dict):
            raise SpecError(f"{where}: reports.{key}", "has no \"metrics\" mapping")
        out[key] = {}
        for name, item in metrics.items():
            values = item.get("values") if isinstance(item, dict) else None
            if not isinstance(values, list) or not all(
                    v is None or (isinstance(v, int | float) and not isinstance(v, bool))
                    for v in values):
                raise SpecError(f"{where}: reports.{key}.metrics.{name}.values",
                                "must be a list of numbers (one per replication)")
            out[key][name] = [None if v is None else float(v) for v in values]
    return out


def write_baseline(path: Path, suite: str, quick: bool,
                   measured: dict[str, dict[str, list[float | None]]],
                   rules: dict[str, MetricRule], info: dict[str, Any]) -> None:
    """Write the replication values of this run as the baseline (atomically)."""
    reports = {}
    for key, metrics in sorted(measured.items()):
        reports[key] = {"metrics": {
            name: {"values": values, "mean": _mean(values),
                   "direction": rules[name].direction}
            for name, values in sorted(metrics.items())
            if name in rules and _mean(values) is not None}}  # not measured: nothing kept
    data = {"version": BASELINE_VERSION, "suite": suite, "mode": "quick" if quick else "full",
            **info, "reports": reports}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _mean(values: list[float | None]) -> float | None:
    arr = _finite(values)
    return float(arr.mean()) if arr.size else None
