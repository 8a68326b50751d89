"""The front page of a nightly run: ``index.html``, answer first, no code.

Reading order: the title; the answer in one sentence (pass, or which metrics got worse
beyond their tolerance); the regression table; a figure of every compared metric's
change against its tolerance; the link to every executed report; every comparison;
the run's settings and the method. Figures are labelled (title, axes, legend) and
embedded as PNG, so the page is one self-contained file beside the reports it links.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.regression import HIGHER, Comparison

if TYPE_CHECKING:
    from lab.nightly import Plan

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }
.answer { font-size: 1.15rem; padding: .8rem 1rem; border-radius: 6px; }
.pass { background: #e6f4ea; } .regression, .failed, .interrupted { background: #fde8e8; }
table { border-collapse: collapse; margin: .5rem 0 1.2rem; font-size: .9rem; }
th, td { border-bottom: 1px solid #ddd; padding: .25rem .6rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.regressed td { color: #a40000; font-weight: 600; } tr.improved td { color: #106010; }
figure { margin: 1rem 0; } figcaption { font-size: .85rem; color: #555; }
"""


def answer(p: Plan, comparisons: list[Comparison], doc: dict[str, Any]) -> str:
    """The one sentence the page leads with (plain text)."""
    status = doc["status"]
    worse = [c for c in comparisons if c.verdict == "regressed"]
    failed = [j for j in p.jobs if j.status == "failed"]
    missing = sum(c.verdict == "no baseline" for c in comparisons)
    compared = sum(c.verdict in ("regressed", "improved", "unchanged", "inconclusive")
                   for c in comparisons)
    if status == "interrupted":
        head = (f"Interrupted: {sum(j.status == 'ok' for j in p.jobs)} of {len(p.jobs)} "
                "report(s) ran before Ctrl-C")
    elif status == "failed":
        head = (f"Failed: {len(failed)} of {len(p.jobs)} report(s) did not run "
                f"({failed[0].key}: {failed[0].error})")
    elif worse:
        names = ", ".join(f"{c.key} {c.metric}"
                          + (f" ({100 * c.relative:+.1f} %)" if c.relative is not None else "")
                          for c in worse)
        head = f"Regression: {len(worse)} metric(s) got worse beyond their tolerance: {names}"
    else:
        head = (f"Pass: no metric regressed ({compared} compared with the baseline across "
                f"{sum(j.status == 'ok' for j in p.jobs)} report(s))")
    if missing:
        head += f"; {missing} metric(s) had no baseline"
    if doc.get("baseline_updated"):
        head += "; this run is now the baseline"
    elif missing:
        head += " (record one with --update-baseline)"
    return head


def _fmt(x: float | None, digits: str = ".4g", signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return format(x, ("+" if signed else "") + digits)


def _comparison_rows(comparisons: list[Comparison]) -> str:
    head = ("<tr><th>report</th><th>metric</th><th>direction</th><th>baseline mean (n)</th>"
            "<th>now mean (n)</th><th>difference</th><th>95 % CI of the difference</th>"
            "<th>tolerance</th><th>verdict</th></tr>")
    rows = [head]
    for c in comparisons:
        ci = ("n/a" if c.diff_ci95 is None
              else f"{_fmt(c.diff_ci95[0], signed=True)} to {_fmt(c.diff_ci95[1], signed=True)}")
        rel = f" ({100 * c.relative:+.1f} %)" if c.relative is not None else ""
        rows.append(
            f"<tr class=\"{c.verdict.replace(' ', '-')}\"><td>{html.escape(c.key)}</td>"
            f"<td>{html.escape(c.metric)}</td><td>{c.direction}</td>"
            f"<td class=\"num\">{_fmt(c.baseline_mean)} ({c.baseline_replications})</td>"
            f"<td class=\"num\">{_fmt(c.mean)} ({c.replications})</td>"
            f"<td class=\"num\">{_fmt(c.diff, signed=True)}{rel}</td>"
            f"<td class=\"num\">{ci}</td>"
            f"<td>{html.escape(c.tolerance)} (= {_fmt(c.margin)})</td>"
            f"<td>{c.verdict}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def figure(comparisons: list[Comparison]) -> str | None:
    """A forest plot as an embedded PNG: each change (worse to the right) with its CI and
    tolerance, as % of the baseline mean; None when nothing has a CI to show."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [c for c in comparisons if c.diff_ci95 is not None and c.baseline_mean]
    if not shown:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.32 * len(shown)))
    colors = {"regressed": "#c00000", "improved": "#2a8a2a"}
    marks: list[float] = []  # means and tolerances: they set the axis (a CI may run off it)
    for row, c in enumerate(shown):
        sign = 1.0 if c.direction == HIGHER else -1.0
        scale = 100.0 / abs(c.baseline_mean or 1.0)
        lo, hi = sorted((sign * c.diff_ci95[0] * scale, sign * c.diff_ci95[1] * scale))  # type: ignore[index]
        mid = sign * (c.diff or 0.0) * scale
        color = colors.get(c.verdict, "#555555")
        ax.plot([lo, hi], [row, row], color=color, lw=2.2)
        ax.plot(mid, row, "o", color=color, ms=4)
        ax.plot((c.margin or 0.0) * scale, row, "|", color="#c00000", ms=12, mew=2)
        marks += [mid, (c.margin or 0.0) * scale]
    ax.axvline(0, color="black", lw=0.8)
    reach = [abs(x) for x in marks] + [10.0]
    ax.set_xlim(-1.3 * min(max(reach), 200.0), 1.3 * min(max(reach), 200.0))
    ax.set_yticks(range(len(shown)), [f"{c.key} · {c.metric}" for c in shown], fontsize=7)
    ax.invert_yaxis()
    ax.plot([], [], color="#555555", lw=2.2, label="95 % bootstrap CI of the change")
    ax.plot([], [], "|", color="#c00000", ms=12, mew=2, label="tolerance (regression beyond)")
    ax.plot([], [], color="#c00000", lw=2.2, label="regressed")
    ax.plot([], [], color="#2a8a2a", lw=2.2, label="improved")
    ax.set(title="Change against the baseline, worse to the right",
           xlabel="change of the mean in the worse direction (% of the baseline mean)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def write_index(path: Path, p: Plan, comparisons: list[Comparison], doc: dict[str, Any]) -> None:
    """Write ``index.html`` of a nightly run."""
    status = doc["status"]
    title = (f"Nightly regression: {p.suite.name}, {doc['date']}"
             f"{' (quick)' if p.quick else ''}")
    worse = [c for c in comparisons if c.verdict == "regressed"]
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p class=\"answer {status}\"><strong>{html.escape(answer(p, comparisons, doc))}"
             ".</strong></p>",
             "<h2>Regressions</h2>",
             _comparison_rows(worse) if worse else "<p>None: no metric's confidence interval "
             "lies wholly beyond its tolerance on the bad side.</p>"]
    png = figure(comparisons)
    if png is not None:
        parts.append(
            "<h2>Every change against its tolerance</h2><figure>"
            f"<img src=\"data:image/png;base64,{png}\" alt=\"Forest plot: each metric's "
            "change against the baseline with its 95 % confidence interval and tolerance\">"
            "<figcaption>Figure 1. Each compared metric: the change of its mean against the "
            "baseline, signed so that worse is to the right, as a percentage of the baseline "
            "mean; the bar is the 95 % bootstrap confidence interval of the difference of "
            "means over replications, the red tick the tolerance. A bar wholly right of its "
            "tick is a regression.</figcaption></figure>")
    parts.append("<h2>Reports</h2><table><tr><th>experiment</th><th>backend</th>"
                 "<th>notebook</th><th>status</th><th>wall time</th><th>report</th></tr>")
    for j in p.jobs:
        link = (f"<a href=\"{html.escape(j.folder)}/{j.notebook}.html\">{j.notebook}.html</a>"
                f" · <a href=\"{html.escape(j.folder)}/{j.notebook}.ipynb\">.ipynb</a>"
                if j.status == "ok" else html.escape(j.error or j.status))
        parts.append(f"<tr><td>{html.escape(j.experiment)}</td><td>{j.backend}</td>"
                     f"<td>{j.notebook}</td><td>{j.status}</td>"
                     f"<td class=\"num\">{j.wall_s:.1f} s</td><td>{link}</td></tr>")
    parts.append("</table>")
    parts.append("<h2>Every metric compared</h2>")
    measured = [c for c in comparisons if c.verdict != "not measured"]
    parts.append(_comparison_rows(measured) if measured else "<p>No metric measured.</p>")
    unmeasured = [f"{c.key} {c.metric}" for c in comparisons if c.verdict == "not measured"]
    if unmeasured:
        parts.append(f"<p>Not measured by their run (no value in any replication, e.g. "
                     f"voice-to-voice latency without AI turns): "
                     f"{html.escape(', '.join(unmeasured))}.</p>")
    sets = ", ".join(f"<code>{html.escape(s)}</code>" for s in p.overrides) or "none"
    settings = p.suite.quick if p.quick else p.suite.full
    parts.append(
        "<h2>How this run was made</h2><ul>"
        f"<li>suite <code>{html.escape(str(p.suite_path))}</code>, "
        f"{'quick' if p.quick else 'full'} run: "
        f"{html.escape(', '.join(f'{k}={v}' for k, v in settings.items()) or 'as written')}"
        f"</li><li><code>--set</code>: {sets}</li>"
        f"<li>baseline <code>{html.escape(str(p.baseline_file))}</code>: "
        f"{'found' if p.baseline is not None else 'none yet'}"
        f"{'; replaced by this run' if doc.get('baseline_updated') else ''}</li>"
        f"<li>wall time {doc['wall_s']:.1f} s; each experiment as run is in "
        "<code>EXPERIMENT/experiment.yaml</code></li></ul>"
        "<p>Method: each metric is measured in every replication of the experiment (as "
        "<code>summary.json</code> defines it) and compared with the baseline's replication "
        "values by a bootstrap of the difference of means (scipy.stats.bootstrap, BCa, "
        f"{p.suite.resamples} resamples, {100 * p.suite.confidence:g} % confidence). A metric "
        "regresses when the whole interval lies on its bad side beyond its tolerance; "
        "improves when it lies wholly beyond it on the good side; otherwise it is unchanged. "
        "Details: <code>regressions.json</code>.</p></body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
