"""Distributions for the experiment file (the CONTRACT's DIST).

A DIST is what a telephony engineer writes for a random quantity: a constant
(``180``), an exponential holding time (``{dist: exponential, mean: 180}``), a
lognormal given the way latency is usually quoted (``{dist: lognormal, median:
350, p95: 900}``), samples measured elsewhere (``{dist: empirical, file: F,
column: C}``) or any ``scipy.stats`` distribution with its own keywords
(``{dist: gamma, a: 2, scale: 90}``).

Every distribution knows its mean and variance (as Ciw's do), so a twin's
samples can be checked against theory, and samples in batches from a numpy
Generator so drawing stays cheap inside the simulation loop.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

#: z-value of the 95th percentile of the standard normal distribution.
# the standard normal's 95th percentile, float(scipy.stats.norm.ppf(0.95)) (a test checks
# it): a constant, so reading an experiment does not import scipy.stats (~1 s)
Z95 = 1.6448536269514722

BATCH = 4096


class DistError(ValueError):
    """A DIST that cannot be built; the message names the problem (not the key)."""


@dataclass(frozen=True)
class Dist:
    """One validated distribution.

    Attributes
    ----------
    kind:
        ``constant``, ``exponential``, ``lognormal``, ``empirical`` or a scipy.stats name.
    params:
        The keyword parameters exactly as written in the experiment file
        (``file`` for empirical is kept as written; ``path`` holds the resolved file).
    """

    kind: str
    params: dict[str, Any]
    path: Path | None = None
    _values: np.ndarray | None = field(default=None, compare=False, repr=False)

    # ---------------------------------------------------------------- building
    @staticmethod
    def parse(raw: Any, base_dir: Path | None = None) -> Dist:
        """Build a Dist from its YAML form; raise DistError on any problem."""
        if isinstance(raw, Dist):
            return raw
        if isinstance(raw, bool):
            raise DistError(f"must be a number or a {{dist: ...}} mapping, got {raw!r}")
        if isinstance(raw, int | float):
            if not math.isfinite(raw) or raw < 0:
                raise DistError(f"must be a finite number >= 0, got {raw!r}")
            return Dist("constant", {"value": float(raw)})
        if not isinstance(raw, dict):
            raise DistError(f"must be a number or a {{dist: ...}} mapping, got {raw!r}")
        params = dict(raw)
        kind = params.pop("dist", None)
        if not isinstance(kind, str):
            raise DistError("a distribution mapping needs 'dist: NAME'")
        builder = _BUILDERS.get(kind, _scipy)
        return builder(kind, params, base_dir)

    def to_yaml(self) -> Any:
        """The experiment-file form of this distribution (round-trips through parse)."""
        if self.kind == "constant":
            return self.params["value"]
        return {"dist": self.kind, **self.params}

    # ---------------------------------------------------------------- theory
    def frozen(self) -> Any:
        """The scipy.stats frozen distribution (not for constant or empirical)."""
        p = self.params
        from scipy import stats

        if self.kind == "exponential":
            return stats.expon(scale=p["mean"])
        if self.kind == "lognormal":
            mu, sigma = _lognormal_mu_sigma(p["median"], p["p95"])
            return stats.lognorm(s=sigma, scale=math.exp(mu))
        if self.kind in ("constant", "empirical"):
            raise DistError(f"{self.kind} has no scipy.stats form")
        return getattr(stats, self.kind)(**p)

    @property
    def mean(self) -> float:
        if self.kind == "constant":
            return float(self.params["value"])
        if self.kind == "empirical":
            assert self._values is not None
            return float(np.mean(self._values))
        return float(self.frozen().mean())

    @property
    def var(self) -> float:
        if self.kind == "constant":
            return 0.0
        if self.kind == "empirical":
            assert self._values is not None
            return float(np.var(self._values))
        return float(self.frozen().var())

    # ---------------------------------------------------------------- sampling
    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw ``size`` samples as float64."""
        p = self.params
        if self.kind == "constant":
            return np.full(size, p["value"], dtype=float)
        if self.kind == "exponential":
            return rng.exponential(p["mean"], size)
        if self.kind == "lognormal":
            mu, sigma = _lognormal_mu_sigma(p["median"], p["p95"])
            return rng.lognormal(mu, sigma, size)
        if self.kind == "empirical":
            assert self._values is not None
            return rng.choice(self._values, size=size, replace=True)
        out = np.asarray(self.frozen().rvs(size=size, random_state=rng), dtype=float)
        return np.maximum(out, 0.0)

    def sampler(self, rng: np.random.Generator) -> Callable[[], float]:
        """A cheap zero-argument draw: plain Python floats from pre-drawn batches."""
        if self.kind == "constant":
            value = float(self.params["value"])
            return lambda: value
        return batched(lambda: self.sample(rng, BATCH).tolist()).__next__


T = TypeVar("T")


def batched(draw: Callable[[], list[T]]) -> Iterator[T]:
    """The values of ``draw()``, ``draw()``, ... one at a time, for ever.

    Iterating happens in C (``itertools.chain`` over ``map``), so taking a value costs
    about a third of what resuming a Python generator does.
    """
    return itertools.chain.from_iterable(map(lambda _: draw(), itertools.repeat(None)))


def _lognormal_mu_sigma(median: float, p95: float) -> tuple[float, float]:
    mu = math.log(median)
    return mu, (math.log(p95) - mu) / Z95


def _positive(params: dict[str, Any], name: str) -> float:
    if name not in params:
        raise DistError(f"needs '{name}'")
    value = params[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise DistError(f"'{name}' must be a number > 0, got {value!r}")
    return float(value)


def _only(kind: str, params: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(params) - allowed)
    if extra:
        raise DistError(f"{kind}: unknown parameter '{extra[0]}' (allowed: {sorted(allowed)})")


def _exponential(kind: str, params: dict[str, Any], base: Path | None) -> Dist:
    _only(kind, params, {"mean"})
    return Dist(kind, {"mean": _positive(params, "mean")})


def _lognormal(kind: str, params: dict[str, Any], base: Path | None) -> Dist:
    _only(kind, params, {"median", "p95"})
    median, p95 = _positive(params, "median"), _positive(params, "p95")
    if p95 <= median:
        raise DistError(f"lognormal: p95 must be greater than median, got {p95} <= {median}")
    return Dist(kind, {"median": median, "p95": p95})


def _empirical(kind: str, params: dict[str, Any], base: Path | None) -> Dist:
    _only(kind, params, {"file", "column"})
    file, column = params.get("file"), params.get("column")
    if not isinstance(file, str) or not isinstance(column, str):
        raise DistError("empirical needs 'file' and 'column' strings")
    path = Path(file)
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.is_file():
        raise DistError(f"empirical: file not found: {file}")
    values = read_column(path, column)
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise DistError(f"empirical: column '{column}' needs finite values >= 0")
    return Dist(kind, {"file": file, "column": column}, path=path, _values=values)


def read_column(path: Path, column: str) -> np.ndarray:
    """Read one numeric column from a CSV or Parquet file."""
    import pandas as pd

    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:
        raise DistError(f"cannot read {path.name}: {exc}") from exc
    if column not in frame.columns:
        raise DistError(f"column '{column}' not in {path.name} (has {list(frame.columns)})")
    try:
        return frame[column].to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise DistError(f"column '{column}' in {path.name} is not numeric") from exc


def _scipy(kind: str, params: dict[str, Any], base: Path | None) -> Dist:
    from scipy import stats

    family = getattr(stats, kind, None)
    if not isinstance(family, stats.rv_continuous | stats.rv_discrete):
        raise DistError(f"unknown distribution '{kind}' (not a scipy.stats distribution)")
    shapes = [s.strip() for s in (family.shapes or "").split(",") if s.strip()]
    allowed = [*shapes, "loc"] + (["scale"] if isinstance(family, stats.rv_continuous) else [])
    for name, value in params.items():
        if name not in allowed:
            raise DistError(f"{kind}: unknown parameter '{name}' (its parameters: "
                            f"{', '.join(allowed)})")
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise DistError(f"{kind}: '{name}' must be a finite number, got {value!r}")
    missing = [s for s in shapes if s not in params]
    if missing:
        raise DistError(f"{kind}: needs {', '.join(repr(m) for m in missing)}")
    try:
        mean = float(family(**params).mean())
    except Exception as exc:  # scipy's own message, without its internal function names
        raise DistError(f"{kind}: bad parameters {params}") from exc
    if not math.isfinite(mean):
        raise DistError(f"{kind}: parameters {params} are outside its domain or give no "
                        "finite mean")
    return Dist(kind, params)


_BUILDERS: dict[str, Callable[[str, dict[str, Any], Path | None], Dist]] = {
    "exponential": _exponential,
    "lognormal": _lognormal,
    "empirical": _empirical,
}
