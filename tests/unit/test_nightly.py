"""``siplab nightly``: a suite re-run with papermill and compared with its baseline.

One small suite (two experiments on the twin, short runs, four replications) is run
three times through the command line: once to record its baseline, once unchanged
(must pass, exit 0), once with a slower LLM injected by ``--set`` (must exit 3 and
name the metric). The statistics are tested directly on fixed samples.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from lab.headline import MIME, read_notebook
from lab.regression import (
    HIGHER,
    LOWER,
    MetricRule,
    baseline_path,
    compare,
    diff_ci,
    read_baseline,
    write_baseline,
)

ROOT = Path(__file__).resolve().parents[2]

SUITE = {
    "name": "tiny",
    "experiments": ["voice-agent", "contact-centre"],
    "backends": ["twin"],
    "notebooks": ["headline"],
    "quick": {"replications": 4, "duration_s": 300, "warmup_s": 60},
    "metrics": {
        "voice_to_voice_ms.p95": {"direction": HIGHER, "tolerance": 0.05},
        "setup_ms.p95": {"direction": HIGHER, "tolerance": 0.05},
        "mos.mean": {"direction": LOWER, "tolerance_abs": 0.05},
        "blocking_probability.mean": {"direction": HIGHER, "tolerance_abs": 0.01},
    },
}


def nightly(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab.cli", "nightly", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=170, check=False)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]


def links(page: str) -> list[str]:
    parser = _Links()
    parser.feed(page)
    return parser.hrefs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The suite recorded, re-run unchanged, and re-run with a slower LLM."""
    tmp = tmp_path_factory.mktemp("nightly")
    suite = tmp / "tiny.yaml"
    suite.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    base = tmp / "baselines"
    out: dict[str, Any] = {"tmp": tmp, "suite": suite, "baselines": base}
    out["record"] = nightly(str(suite), "--quick", "--out", str(tmp / "record"),
                            "--baselines", str(base), "--update-baseline")
    out["same"] = nightly(str(suite), "--quick", "--out", str(tmp / "same"),
                          "--baselines", str(base))
    out["slow"] = nightly(str(suite), "--quick", "--out", str(tmp / "slow"),
                          "--baselines", str(base), "--set", "deployment.ai.llm.ttft_ms=900")
    return out


@pytest.mark.timeout(400)
def test_recording_a_baseline_keeps_every_replication(runs: dict[str, Any]) -> None:
    rec = runs["record"]
    assert rec.returncode == 0, rec.stderr
    file = baseline_path(runs["baselines"], "tiny", quick=True)
    assert file.name == "tiny.quick.json"
    stored = read_baseline(file)
    assert stored is not None
    assert set(stored) == {"voice-agent/twin/headline", "contact-centre/twin/headline"}
    # the baseline holds exactly what the executed notebook displayed, per replication
    executed = runs["tmp"] / "record" / "voice-agent" / "twin" / "headline.ipynb"
    docs = read_notebook(executed)
    assert len(docs) == 1 and docs[0]["replications"] == 4
    shown = docs[0]["metrics"]
    for name in SUITE["metrics"]:
        assert stored["voice-agent/twin/headline"][name] == pytest.approx(shown[name])
        assert len(stored["voice-agent/twin/headline"][name]) == 4
    raw = json.loads(file.read_text())
    entry = raw["reports"]["voice-agent/twin/headline"]["metrics"]["voice_to_voice_ms.p95"]
    assert entry["direction"] == HIGHER
    assert entry["mean"] == pytest.approx(np.mean(entry["values"]))
    assert len(set(entry["values"])) > 1  # independent replications differ


@pytest.mark.timeout(400)
def test_an_unchanged_run_passes(runs: dict[str, Any]) -> None:
    same = runs["same"]
    assert same.returncode == 0, same.stderr
    assert "regressed" not in same.stderr
    out = runs["tmp"] / "same"
    assert same.stdout.strip() == str(out / "index.html")
    doc = json.loads((out / "regressions.json").read_text())
    assert doc["status"] == "pass" and doc["regressions"] == []
    verdicts = {(m["key"], m["metric"]): m["verdict"] for m in doc["metrics"]}
    assert verdicts[("voice-agent/twin/headline", "voice_to_voice_ms.p95")] == "unchanged"
    assert verdicts[("contact-centre/twin/headline", "voice_to_voice_ms.p95")] == "not measured"
    assert "no baseline" not in verdicts.values()
    page = (out / "index.html").read_text()
    first = re.search(r"<h1>.*?</h1>\s*<p class=\"answer pass\"><strong>(.*?)</strong>", page, re.S)
    assert first and first.group(1).startswith("Pass: no metric regressed")


@pytest.mark.timeout(400)
def test_an_injected_slowdown_exits_3_naming_the_metric(runs: dict[str, Any]) -> None:
    slow = runs["slow"]
    assert slow.returncode == 3, slow.stderr
    lines = [line for line in slow.stderr.splitlines() if line.startswith("siplab: ")]
    assert len(lines) == 1 and "regressed" in lines[0]
    assert "voice-agent/twin/headline voice_to_voice_ms.p95" in lines[0]
    out = runs["tmp"] / "slow"
    doc = json.loads((out / "regressions.json").read_text())
    assert doc["status"] == "regression"
    assert doc["overrides"] == ["deployment.ai.llm.ttft_ms=900"]
    worse = {(r["key"], r["metric"]) for r in doc["regressions"]}
    assert ("voice-agent/twin/headline", "voice_to_voice_ms.p95") in worse
    assert not any(key.startswith("contact-centre") for key, _ in worse)  # no AI turns there
    reg = next(r for r in doc["regressions"] if r["metric"] == "voice_to_voice_ms.p95")
    assert reg["diff_ci95"][0] > reg["margin"] > 0  # the whole CI beyond the tolerance
    # the override reached the experiment as run
    ran = yaml.safe_load((out / "voice-agent" / "experiment.yaml").read_text())
    assert ran["deployment"]["ai"]["llm"]["ttft_ms"] == 900
    assert ran["replications"] == 4 and ran["duration_s"] == 300
    page = (out / "index.html").read_text()
    answer = re.search(r"<p class=\"answer regression\"><strong>(.*?)</strong>", page, re.S)
    assert answer and "voice_to_voice_ms.p95" in answer.group(1)
    assert page.index("answer regression") < page.index("<h2>Regressions</h2>") \
        < page.index("<h2>Reports</h2>")


@pytest.mark.timeout(400)
def test_index_links_every_report(runs: dict[str, Any]) -> None:
    out = runs["tmp"] / "slow"
    doc = json.loads((out / "regressions.json").read_text())
    page = (out / "index.html").read_text()
    hrefs = links(page)
    assert len(doc["reports"]) == 2
    for report in doc["reports"]:
        assert report["status"] == "ok"
        assert report["html"] in hrefs and report["ipynb"] in hrefs
        assert (out / report["html"]).is_file() and (out / report["ipynb"]).is_file()
    assert all((out / h).is_file() for h in hrefs)
    assert "data:image/png;base64," in page and "<figcaption>" in page
    assert "hl-ipython3" not in page and "import " not in page  # no code
    # each executed report carries its metrics output
    for report in doc["reports"]:
        assert read_notebook(out / report["ipynb"])
        assert MIME not in (out / report["html"]).read_text()


@pytest.mark.parametrize(("change", "key"), [
    ({"experimnts": ["voice-agent"]}, "experimnts: unknown key"),
    ({"metrics": {"voice_to_voice_ms.p96": {"direction": HIGHER}}},
     "metrics.voice_to_voice_ms.p96: unknown metric"),
    ({"metrics": {"mos.mean": {"direction": "worse"}}}, "metrics.mos.mean.direction"),
    ({"backends": ["nope"]}, "backends.0: unknown backend"),
    ({"notebooks": ["no-such"]}, "notebooks.0: no notebook"),
    ({"experiments": ["no-such-experiment"]}, "experiments.0: no experiment file"),
    ({"quick": {"duration_s": -5}}, "duration_s: must be"),
])
def test_bad_suite_exits_2_and_writes_nothing(tmp_path: Path, change: dict[str, Any],
                                              key: str) -> None:
    suite = tmp_path / "bad.yaml"
    data = {**SUITE, **change}
    if "experimnts" in change:
        del data["experiments"]
    suite.write_text(yaml.safe_dump(data))
    out, base = tmp_path / "out", tmp_path / "baselines"
    proc = nightly(str(suite), "--quick", "--out", str(out), "--baselines", str(base),
                   "--update-baseline")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], lines
    assert not out.exists() and not base.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_bad_set_and_out_exit_2(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    proc = nightly(str(suite), "--quick", "--out", str(tmp_path / "o"),
                   "--set", "deployment.trunk.channels=-3")
    assert proc.returncode == 2
    assert proc.stderr.startswith("siplab: deployment.trunk.channels: must be an integer > 0")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    proc = nightly(str(suite), "--quick", "--out", str(tmp_path / "busy"))
    assert proc.returncode == 2 and proc.stderr.startswith("siplab: --out: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "s.yaml"]


@pytest.mark.parametrize(("raised", "code", "status"),
                         [("failed", 1, "failed"), ("interrupt", 130, "interrupted")])
def test_a_failing_or_interrupted_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str], raised: str,
                                         code: int, status: str) -> None:
    import lab.report
    from lab.cli import main

    def broken(name: str, params: dict[str, str], out_dir: Path) -> Path:
        if raised == "interrupt":
            raise KeyboardInterrupt
        raise lab.report.ReportFailed(name, 3, "ValueError", "boom")

    monkeypatch.setattr(lab.report, "run_report", broken)
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    out = tmp_path / "out"
    assert main(["nightly", str(suite), "--quick", "--out", str(out),
                 "--baselines", str(tmp_path / "b")]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("siplab: ")
    doc = json.loads((out / "regressions.json").read_text())
    assert doc["status"] == status
    assert (out / "index.html").is_file()
    if raised == "failed":
        assert "boom" in err[-1]
        assert all(r["status"] == "failed" and "boom" in r["error"] for r in doc["reports"])


# ---------------------------------------------------------------------------- statistics
def test_identical_replications_are_unchanged() -> None:
    x = [1500.0, 1620.0, 1580.0, 1710.0]
    c = compare("k", "voice_to_voice_ms.p95", MetricRule(direction=HIGHER, tolerance=0.05),
                x, list(x))
    assert c.verdict == "unchanged" and c.diff == 0.0
    assert c.diff_ci95 is not None and c.diff_ci95[0] < 0 < c.diff_ci95[1]


@pytest.mark.parametrize(("direction", "shift", "verdict"), [
    (HIGHER, +300.0, "regressed"), (HIGHER, -300.0, "improved"),
    (LOWER, -300.0, "regressed"), (LOWER, +300.0, "improved"),
    (HIGHER, +40.0, "unchanged"),  # beyond zero, within the 5 % tolerance
])
def test_the_verdict_follows_the_direction_and_tolerance(direction: str, shift: float,
                                                         verdict: str) -> None:
    rng = np.random.default_rng(7)
    base = 1500 + rng.normal(0, 10, 8)
    now = 1500 + shift + rng.normal(0, 10, 8)
    rule = MetricRule.model_validate({"direction": direction, "tolerance": 0.05})
    c = compare("k", "m", rule, now, base)
    assert c.verdict == verdict, c
    assert c.margin == pytest.approx(0.05 * abs(base.mean()))


def test_a_noisy_difference_is_not_a_regression() -> None:
    # means 10 % apart, but the replications spread so widely the CI straddles zero
    base = [1000.0, 1900.0, 700.0, 1500.0]
    now = [1700.0, 800.0, 1600.0, 1300.0]
    c = compare("k", "m", MetricRule(direction=HIGHER, tolerance=0.0), now, base)
    assert c.verdict == "unchanged"
    assert c.diff_ci95 is not None and c.diff_ci95[0] < 0 < c.diff_ci95[1]


def test_one_replication_is_inconclusive_and_none_is_no_baseline() -> None:
    rule = MetricRule(direction=HIGHER, tolerance_abs=1.0)
    assert compare("k", "m", rule, [5.0], [1.0, 1.1]).verdict == "inconclusive"
    assert compare("k", "m", rule, [5.0, 6.0], None).verdict == "no baseline"
    assert compare("k", "m", rule, [None, None], [1.0, 2.0]).verdict == "not measured"


def test_the_ci_is_scipy_bootstrap_of_the_difference_of_means() -> None:
    from scipy import stats

    x, y = np.array([3.0, 4.0, 6.0, 5.0, 7.0]), np.array([1.0, 2.0, 2.5, 1.5, 3.0])
    lo, hi = diff_ci(x, y, resamples=2000, seed=3)
    ref = stats.bootstrap((x, y), lambda a, b, axis=-1: a.mean(axis) - b.mean(axis),
                          n_resamples=2000, method="BCa", rng=np.random.default_rng(3))
    assert (lo, hi) == (ref.confidence_interval.low, ref.confidence_interval.high)
    assert lo < x.mean() - y.mean() < hi


def test_baseline_round_trip(tmp_path: Path) -> None:
    rules = {"mos.mean": MetricRule(direction=LOWER, tolerance_abs=0.05)}
    measured: dict[str, dict[str, list[float | None]]] = {
        "e/twin/headline": {"mos.mean": [4.31, 4.29, None, 4.3], "ignored.metric": [1.0]}}
    path = tmp_path / "b" / "s.json"
    write_baseline(path, "s", False, measured, rules, {"recorded": "2026-12-04"})
    assert read_baseline(path) == {"e/twin/headline": {"mos.mean": [4.31, 4.29, None, 4.3]}}
    assert [p.name for p in path.parent.iterdir()] == ["s.json"]  # no temp file left
    path.write_text('{"reports": {"e": {"metrics": {"m": {"values": ["x"]}}}}}')
    with pytest.raises(ValueError, match=r"reports\.e\.metrics\.m\.values"):
        read_baseline(path)
