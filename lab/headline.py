"""Headline metrics of a run, one value per replication, and how a notebook hands them on.

A nightly regression (:mod:`lab.nightly`) asks one question of last night's change: did
any figure a user plans with get worse? The figures are those of ``summary.json``
(CONTRACT.md, "Results in DIR") under the same dotted names — ``voice_to_voice_ms.p95``,
``setup_ms.p95``, ``blocking_probability.mean``, ``mos.mean``, ``cost.per_minute_usd`` —
but measured **per replication**: each replication is an independent random busy
period, so the spread of its values across replications is what a statistical test
of "worse than the baseline" needs (a single run's figure has no error bar).

papermill treats each executed notebook as a record (Netflix, "Scheduling notebooks",
2018). The figures travel in that record as one cell output of MIME type
:data:`MIME` (a JSON document, in the cell tagged :data:`TAG`), which
:func:`read_notebook` takes back with nbformat — scrapbook, the library once made for
this, is unmaintained. The HTML of the report shows nothing of that output.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab import results as R
from lab.capacity import experiment_path as experiment_path  # re-exported for the notebook
from lab.capacity import load as load  # re-exported for the notebook
from lab.spec import Experiment

#: The MIME type of the headline metrics output of an executed notebook.
MIME = "application/vnd.siplab.metrics+json"
#: The tag of the cell that displays it.
TAG = "metrics"

#: The metrics a run yields, by their summary.json path, and what each one is.
METRICS: dict[str, str] = {
    "blocking_probability.mean": "share of counted calls blocked (0..1)",
    "setup_ms.p50": "call set-up time, INVITE to 200 OK, median (ms)",
    "setup_ms.p95": "call set-up time, INVITE to 200 OK, p95 (ms)",
    "pdd_ms.p95": "post-dial delay, INVITE to first 18x, p95 (ms)",
    "voice_to_voice_ms.mean": "voice-to-voice latency of an AI turn, mean (ms)",
    "voice_to_voice_ms.p50": "voice-to-voice latency of an AI turn, median (ms)",
    "voice_to_voice_ms.p95": "voice-to-voice latency of an AI turn, p95 (ms)",
    "voice_to_voice_ms.p99": "voice-to-voice latency of an AI turn, p99 (ms)",
    "mos.mean": "E-model MOS of answered calls, mean (1-5)",
    "mos.p05": "E-model MOS of answered calls, 5th percentile (1-5)",
    "ai.stt.wait_probability": "share of STT requests that waited for a slot (0..1)",
    "ai.llm.wait_probability": "share of LLM requests that waited for a slot (0..1)",
    "ai.tts.wait_probability": "share of TTS requests that waited for a slot (0..1)",
    "cost.per_minute_usd": "cost per answered talk minute, usage and compute (USD)",
    "cost.per_call_usd": "cost per answered call, usage and compute (USD)",
}

#: How a metric reads in a sentence.
LABELS = {"blocking_probability.mean": "blocking", "setup_ms.p95": "set-up p95",
          "voice_to_voice_ms.p95": "voice-to-voice p95", "mos.mean": "MOS",
          "cost.per_minute_usd": "cost per minute"}


@dataclass(frozen=True)
class Headline:
    """The headline metrics of one run: ``values[metric]`` has one entry per replication
    (None where the replication measured nothing, e.g. no AI turns)."""

    experiment: str
    backend: str
    replications: int
    values: dict[str, list[float | None]]

    def measured(self) -> dict[str, list[float]]:
        """The metrics with at least one finite value, and those values."""
        out = {}
        for name, vals in self.values.items():
            finite = [float(v) for v in vals if v is not None and math.isfinite(v)]
            if finite:
                out[name] = finite
        return out

    def table(self) -> pd.DataFrame:
        """A row per measured metric: mean and Student-t 95 % CI across replications."""
        rows = []
        for name, vals in self.measured().items():
            ci = R.mean_ci95(vals)
            lo, hi = ci["ci95"]
            rows.append({"metric": name, "mean": ci["mean"], "ci95_lo": lo, "ci95_hi": hi,
                         "replications": len(vals), "what": METRICS.get(name, "")})
        return pd.DataFrame(rows, columns=["metric", "mean", "ci95_lo", "ci95_hi",
                                           "replications", "what"])

    def answer(self) -> str:
        """One sentence: the run and its main figures."""
        have = self.measured()
        parts = [f"{LABELS[name]} {_fmt(name, float(np.mean(have[name])))}"
                 for name in LABELS if name in have]
        reps = f"{self.replications} replication{'s' if self.replications != 1 else ''}"
        return (f"{self.experiment} on the {self.backend} backend over {reps}: "
                + ("; ".join(parts) if parts else "no headline figure was measured"))

    def payload(self) -> dict[str, Any]:
        """The JSON document of the :data:`MIME` output."""
        return {"experiment": self.experiment, "backend": self.backend,
                "replications": self.replications,
                "metrics": {k: [_finite(v) for v in vals] for k, vals in self.values.items()}}


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _fmt(name: str, value: float) -> str:
    if name.endswith("_ms.p95") or name.endswith("_ms.p50") or name.endswith("_ms.mean"):
        return f"{value:,.0f} ms"
    if name.endswith("_usd"):
        return f"${value:.4f}"
    if name.startswith("blocking") or name.endswith("wait_probability"):
        return f"{100 * value:.2f} %"
    return f"{value:.2f}"


# ---------------------------------------------------------------------------- measuring
def measure(exp: Experiment, *, backend: str = "twin", base_dir: Path | None = None
            ) -> Headline:
    """Run ``exp`` on ``backend`` in a temporary directory (removed) and measure it."""
    from lab.runner import run_experiment

    tmp = Path(tempfile.mkdtemp(prefix=f"siplab-{exp.name}-"))
    try:
        summary = run_experiment(exp, backend=backend, out_dir=tmp / "run", base_dir=base_dir,
                                 show_progress=False)
        calls = pd.read_parquet(summary.parent / "calls.parquet")
        turns = pd.read_parquet(summary.parent / "turns.parquet")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Headline(exp.name, backend, exp.replications,
                    per_replication(exp, calls, turns, base_dir))


def per_replication(exp: Experiment, calls: pd.DataFrame, turns: pd.DataFrame,
                    base_dir: Path | None = None) -> dict[str, list[float | None]]:
    """Every metric of :data:`METRICS` for each replication of a run's tables, computed
    as ``summary.json`` computes it (:func:`lab.results.summarize` of that replication)."""
    from lab.cost import load_pricebook

    book = load_pricebook(exp.pricebook, base_dir)
    vcpu_usd_per_s = book.compute.per_vcpu_hour_usd * book.compute.vcpus / 3600.0
    out: dict[str, list[float | None]] = {name: [] for name in METRICS}
    for rep in range(exp.replications):
        mine = calls[calls["replication"] == rep].assign(replication=0)
        theirs = turns[turns["replication"] == rep].assign(replication=0)
        summary = R.summarize(mine, theirs, backend="", warmup_s=exp.warmup_s,
                              replications=1, run={})
        summary["cost"] = _cost(mine, exp.warmup_s, vcpu_usd_per_s)
        for name in METRICS:
            out[name].append(_lookup(summary, name))
    return out


def _cost(calls: pd.DataFrame, warmup_s: float, vcpu_usd_per_s: float) -> dict[str, Any]:
    """Cost per answered minute and call of one replication, as ``summary.json``'s cost:
    the counted calls' usage plus compute for the simulated time after warm-up."""
    counted = calls[calls["start_s"].to_numpy(float) >= warmup_s]
    answered = counted["outcome"].to_numpy(dtype=object) == "answered"
    minutes = float(np.nansum(counted["duration_s"].to_numpy(float)[answered])) / 60.0
    sim_s = float(calls["end_s"].max()) if len(calls) else 0.0
    total = float(np.nansum(counted["cost_usd"].to_numpy(float))) \
        + vcpu_usd_per_s * max(0.0, sim_s - warmup_s)
    n = int(answered.sum())
    return {"per_minute_usd": total / minutes if minutes > 0 else None,
            "per_call_usd": total / n if n else None}


def _lookup(summary: dict[str, Any], name: str) -> float | None:
    node: Any = summary
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None
    return float(node) if math.isfinite(float(node)) else None


# ---------------------------------------------------------------------------- the record
def emit(headline: Headline) -> None:
    """Display the metrics as the :data:`MIME` output of the current notebook cell.

    The output also carries an HTML comment, so the rendered report shows nothing of it
    (and nbconvert has a representation it knows)."""
    from IPython.display import display

    display({MIME: headline.payload(), "text/html": "<!-- siplab headline metrics -->"},
            raw=True)


def read_notebook(path: Path) -> list[dict[str, Any]]:
    """Every :data:`MIME` document an executed notebook displayed, in cell order."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = output.get("data", {}) if output.get("output_type") in (
                "display_data", "execute_result") else {}
            if MIME in data:
                found.append(dict(data[MIME]))
    return found


def plot(headline: Headline) -> Any:
    """Small multiples: each measured metric's value in every replication, with the
    mean and its 95 % CI, on the metric's own axis."""
    import matplotlib.pyplot as plt

    have = headline.measured()
    names = list(have) or ["(none)"]
    cols = 3
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(9, 2.3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        vals = have.get(name, [])
        ax.plot(range(len(vals)), vals, "o", color="C0", ms=4, label="replication")
        if vals:
            ci = R.mean_ci95(vals)
            ax.axhline(ci["mean"], color="C1", lw=1, label="mean")
            lo, hi = ci["ci95"]
            ax.axhspan(lo, hi, color="C1", alpha=0.15, label="95 % CI")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("replication", fontsize=8)
        ax.set_ylabel(METRICS.get(name, "").rsplit("(", 1)[-1].rstrip(")") or "value",
                      fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{headline.experiment} on the {headline.backend} backend: headline metrics "
                 "by replication", fontsize=10)
    fig.tight_layout()
    return fig
