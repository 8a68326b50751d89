"""Calibrate the twin from a real run: fit its input distributions to the measured records.

``siplab calibrate RUN_DIR`` reads a run's ``calls.parquet`` and ``turns.parquet`` (any
backend writes them; calibration is meant for the real one) and writes an experiment
YAML -- the run's own resolved experiment with the fitted inputs in its ``deployment``
-- that ``siplab run`` accepts as it is, plus ``calibration.json`` beside it with the
evidence for every fit.

What is fitted, and from which measurement
------------------------------------------
========================================  ==============================================
twin input                                measured as
========================================  ==============================================
``deployment.ai.vad_ms``                  ``turns.vad_ms``
``deployment.ai.stt.latency_ms``          ``turns.stt_ms``
``deployment.ai.llm.ttft_ms``             ``turns.llm_ms`` (request -> first token)
``deployment.ai.tts.ttfb_ms``             ``turns.tts_ms``
``deployment.agent.answer_ms``            ``calls.setup_ms - calls.pdd_ms``: the agent
                                          rings at once and answers after its answer
                                          time, so 180 -> 200 is that time
``deployment.proxy.service_ms``           from ``calls.pdd_ms``: INVITE -> 180 crosses
                                          the proxy twice and the network both ways, so
                                          half of (median PDD - 2 x one-way delay); a
                                          number (the spec's per-message service time)
========================================  ==============================================

``setup_ms`` itself is fitted too, as a check (the twin does not take it as an input).
Only answered calls that arrived after the warm-up, and turns that did not fail, count.

How a distribution is chosen
----------------------------
Each candidate family of :data:`FAMILIES` is fitted by maximum likelihood
(``scipy.stats.<family>.fit``; the positive families both with the location fixed at 0
and free) and scored by AIC = 2k - 2 log L. The family with the lowest AIC whose
Kolmogorov-Smirnov test against the sample does not reject at :data:`KS_ALPHA` is
chosen. (The KS p-value with estimated parameters is conservative -- Lilliefors --
so a fit that fails it fits badly.) When no family passes, the sample itself is used:
it is written as a CSV beside the YAML and referenced as ``{dist: empirical}``, and
that is said on stderr. A sample whose spread is below :data:`CONSTANT_REL` of its
median becomes a plain number. An input with fewer than :data:`MIN_SAMPLES`
observations keeps the experiment's value, and that is said on stderr too.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from lab.spec import SpecError, dump_resolved, load_experiment

#: Candidate families: scipy.stats name -> whether it lives on [loc, inf) (a latency
#: family whose location may be fixed at 0).
FAMILIES: dict[str, bool] = {
    "lognorm": True, "gamma": True, "weibull_min": True, "expon": True,
    "norm": False, "uniform": False,
}
#: A fit is rejected when its KS test has a p-value below this.
KS_ALPHA = 0.01
#: Fewer observations than this: keep the experiment's value.
MIN_SAMPLES = 8
#: A sample whose interquartile range is below this fraction of its median is a constant.
CONSTANT_REL = 1e-6


@dataclass
class Fit:
    """The fit of one twin input."""

    key: str  #: dotted path into the experiment
    source: str  #: the measurement it was fitted to
    n: int
    spec: Any = None  #: what goes into the YAML (a number or a DIST mapping); None: kept
    family: str | None = None  #: chosen family, "constant", "empirical" or None (kept)
    aic: float | None = None
    ks_p: float | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    median: float | None = None
    p95: float | None = None
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "source": self.source, "n": self.n, "family": self.family,
                "spec": self.spec, "aic": self.aic, "ks_p": self.ks_p,
                "median": self.median, "p95": self.p95, "note": self.note,
                "candidates": self.candidates}


def _candidates(x: np.ndarray) -> list[dict[str, Any]]:
    """Every family of :data:`FAMILIES` fitted to ``x``, with its AIC and KS p-value."""
    out = []
    for name, positive in FAMILIES.items():
        family = getattr(stats, name)
        variants = [{"floc": 0.0}, {}] if positive and x.min() > 0 else [{}]
        for fixed in variants:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                try:
                    params = family.fit(x, **fixed)
                except Exception:  # a family that cannot fit is skipped
                    continue
                logl = float(np.sum(family.logpdf(x, *params)))
                if not math.isfinite(logl):
                    continue
                k = len(params) - len(fixed)
                p = float(stats.kstest(x, name, args=params).pvalue)
            names = [*(s.strip() for s in (family.shapes or "").split(",") if s.strip()),
                     "loc", "scale"]
            out.append({"family": name, "params": dict(zip(names, map(float, params),
                                                           strict=True)),
                        "loc_fixed": bool(fixed), "aic": 2 * k - 2 * logl, "ks_p": p})
    return sorted(out, key=lambda c: c["aic"])


def _sig(x: float, digits: int = 6) -> float:
    """``x`` to ``digits`` significant digits (a fit is not more precise than that)."""
    return float(f"{x:.{digits}g}")


def _spec_of(c: dict[str, Any]) -> dict[str, Any]:
    """The experiment's DIST for a fitted candidate (lognormal at loc 0 by median/p95)."""
    p = c["params"]
    if c["family"] == "lognorm" and p["loc"] == 0.0:
        return {"dist": "lognormal", "median": _sig(p["scale"]),
                "p95": _sig(p["scale"] * math.exp(float(stats.norm.ppf(0.95)) * p["s"]))}
    return {"dist": c["family"], **{k: _sig(v) for k, v in p.items()}}


def fit_sample(key: str, source: str, values: Any, out_dir: Path, stem: str) -> Fit:
    """Fit one input to its sample (NaNs dropped); an empirical fallback is written to
    ``out_dir/<stem>.<key>.csv``."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    fit = Fit(key, source, int(x.size))
    if x.size < MIN_SAMPLES:
        fit.note = f"{x.size} observations (< {MIN_SAMPLES}): the experiment's value kept"
        return fit
    fit.median, fit.p95 = float(np.median(x)), float(np.percentile(x, 95))
    q1, q3 = np.percentile(x, [25, 75])
    if q3 - q1 <= CONSTANT_REL * max(abs(fit.median), 1e-12):
        fit.family, fit.spec = "constant", _sig(fit.median)
        return fit
    fit.candidates = _candidates(x)
    ok = [c for c in fit.candidates if c["ks_p"] >= KS_ALPHA]
    if ok:
        best = ok[0]
        fit.family, fit.aic, fit.ks_p = best["family"], best["aic"], best["ks_p"]
        fit.spec = _spec_of(best)
        return fit
    if x.min() < 0:
        fit.note = "negative values and no family fits: the experiment's value kept"
        return fit
    path = out_dir / f"{stem}.{key}.csv"
    pd.DataFrame({"value": x}).to_csv(path, index=False)
    fit.family, fit.spec = "empirical", {"dist": "empirical", "file": path.name,
                                         "column": "value"}
    fit.note = (f"no family passes KS at {KS_ALPHA} (best {fit.candidates[0]['family']}, "
                f"p = {fit.candidates[0]['ks_p']:.2g}): the sample itself is used")
    return fit


def _number(key: str, source: str, values: Any, minus: float, times: float) -> Fit:
    """An input the spec takes as a number: ``(median - minus) * times``, at least 0."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    fit = Fit(key, source, int(x.size))
    if x.size < MIN_SAMPLES:
        fit.note = f"{x.size} observations (< {MIN_SAMPLES}): the experiment's value kept"
        return fit
    fit.median, fit.p95 = float(np.median(x)), float(np.percentile(x, 95))
    fit.family, fit.spec = "constant", _sig(max(0.0, (fit.median - minus) * times))
    return fit


def _set(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    *path, last = key.split(".")
    for part in path:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def _read(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    if not run_dir.is_dir():
        raise SpecError("RUN_DIR", f"not a directory: {run_dir}")
    missing = [n for n in ("experiment.resolved.yaml", "calls.parquet", "turns.parquet")
               if not (run_dir / n).is_file()]
    if missing:
        raise SpecError("RUN_DIR", f"{run_dir} is not a run's results (no {', '.join(missing)})")
    raw = yaml.safe_load((run_dir / "experiment.resolved.yaml").read_text())
    return raw, pd.read_parquet(run_dir / "calls.parquet"), pd.read_parquet(
        run_dir / "turns.parquet")


def calibrate(run_dir: Path, out: Path | None = None) -> tuple[Path, list[Fit]]:
    """Fit the twin's inputs to the run in ``run_dir``; write the calibrated experiment
    to ``out`` (default ``RUN_DIR/calibrated.yaml``) and ``calibration.json`` beside it.
    Returns the YAML's path and the fits."""
    raw, calls, turns = _read(run_dir)
    out = out if out is not None else run_dir / "calibrated.yaml"
    if out.exists() and out.is_dir():
        raise SpecError("--out", f"{out} is a directory")
    if not out.parent.is_dir():
        raise SpecError("--out", f"no such directory: {out.parent}")
    warmup = float(raw.get("warmup_s", 0.0))
    answered = calls[(calls.outcome == "answered") & (calls.start_s >= warmup)]
    kept_turns = turns
    if "failed" in turns:
        kept_turns = turns[~turns.failed.astype(bool)]
    if "call_id" in turns and len(answered):
        kept_turns = kept_turns[kept_turns.call_id.isin(answered.call_id)]
    stem = out.stem
    staged = out.parent / f".{out.name}.partial"
    fits = [
        fit_sample("deployment.ai.vad_ms", "turns.vad_ms", kept_turns.get("vad_ms", []),
                   out.parent, stem),
        fit_sample("deployment.ai.stt.latency_ms", "turns.stt_ms",
                   kept_turns.get("stt_ms", []), out.parent, stem),
        fit_sample("deployment.ai.llm.ttft_ms", "turns.llm_ms", kept_turns.get("llm_ms", []),
                   out.parent, stem),
        fit_sample("deployment.ai.tts.ttfb_ms", "turns.tts_ms", kept_turns.get("tts_ms", []),
                   out.parent, stem),
    ]
    delay = float(raw.get("deployment", {}).get("network", {}).get("delay_ms", 0.0) or 0.0)
    pdd = answered.pdd_ms.to_numpy(dtype=float)
    # the spec takes numbers for these two: the median, the sample's shape in the evidence
    fits.append(_number("deployment.agent.answer_ms", "median of calls.setup_ms - pdd_ms",
                        (answered.setup_ms - answered.pdd_ms).clip(lower=0.0), 0.0, 1.0))
    fits.append(_number("deployment.proxy.service_ms",
                        "(median calls.pdd_ms - 2 x network delay) / 2", pdd, 2.0 * delay, 0.5))
    check = fit_sample("setup_ms", "calls.setup_ms (a check, not an input)",
                       answered.setup_ms, out.parent, stem)
    tree = dict(raw)
    tree["name"] = f"{raw.get('name', 'run')}-calibrated"
    for f in fits:
        if f.spec is not None:
            _set(tree, f.key, f.spec)
    # the result must be an experiment siplab run accepts (empirical files beside it)
    staged.write_text(yaml.safe_dump(tree, sort_keys=False))
    try:
        exp = load_experiment(staged)
        text = dump_resolved(exp)
    except SpecError:
        staged.unlink(missing_ok=True)
        raise
    staged.unlink(missing_ok=True)
    header = "".join(
        f"# {f.key}: {f.family or 'kept'} from {f.source}, n = {f.n}"
        + (f", KS p = {f.ks_p:.3g}" if f.ks_p is not None else "") + "\n" for f in fits)
    out.write_text(f"# Calibrated by `siplab calibrate {run_dir}` (evidence: "
                   f"{out.parent / 'calibration.json'})\n{header}{text}")
    (out.parent / "calibration.json").write_text(json.dumps(
        {"run_dir": str(run_dir), "experiment": str(out), "ks_alpha": KS_ALPHA,
         "fits": [f.as_json() for f in fits], "check": check.as_json()}, indent=2))
    for f in [*fits, check]:
        if f.note:
            print(f"siplab: calibrate: {f.key}: {f.note}", file=sys.stderr)
    return out, fits
