"""Every notebook runs end to end with tiny parameters and renders to HTML that leads with
its answer, shows no code, and agrees with what ``siplab run`` reports."""

from __future__ import annotations

import html as htmllib
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import nbformat
import pytest

from lab.report import (
    NOTEBOOKS_DIR,
    ROOT,
    ReportError,
    ReportFailed,
    notebook_parameters,
    run_report,
)
from tests.conftest import need_real_stack

NOTEBOOKS = sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb"))

#: Small values for the parameters notebooks share; each notebook gets those it declares.
TINY = {"replications": "2", "points": "3", "duration_s": "600", "max_replications": "4"}

#: Text each report's answer sentence must contain (either form, for capacity).
ANSWERS = {"capacity": ("channels carry the peak of", "The twin cannot confirm"),
           "cost": ("is the cheapest at",), "latency": ("of turns within 1,500 ms;",),
           "headline": ("on the twin backend over 2 replications: ",)}


class _Text(HTMLParser):
    """The visible text of a page in reading order: one string per text run."""

    SKIP = frozenset({"style", "script", "head", "title"})

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[tuple[str, str]] = []  # (innermost tag, text)
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag not in {"img", "br", "meta", "link", "input", "hr"}:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if any(t in self.SKIP for t in self.stack):
            return
        text = " ".join(data.split())
        if text and text != "¶":
            self.runs.append((self.stack[-1] if self.stack else "", text))


def visible_text(page: str) -> list[tuple[str, str]]:
    parser = _Text()
    parser.feed(page)
    return parser.runs


def answer_sentence(executed: Path) -> str:
    """The Markdown the cell tagged ``answer`` displayed first, without its bold marks."""
    nb = nbformat.read(executed, as_version=4)
    cell = next(c for c in nb.cells if "answer" in c.metadata.get("tags", []))
    markdown = next(o["data"]["text/markdown"] for o in cell.outputs
                    if "text/markdown" in o.get("data", {}))
    return markdown.strip().strip("*")


def render(name: str, out: Path, **extra: str) -> tuple[str, Path]:
    known = notebook_parameters(name)
    params = {k: v for k, v in TINY.items() if k in known} | extra
    path = run_report(name, params, out_dir=out)
    return path.read_text(encoding="utf-8"), out / f"{name}.ipynb"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path]]:
    out = {}
    for name in NOTEBOOKS:
        out[name] = render(name, tmp_path_factory.mktemp(name))
    return out


def test_there_are_notebooks() -> None:
    assert {"capacity", "latency", "cost"} <= set(NOTEBOOKS)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_renders(name: str, rendered: dict[str, tuple[str, Path]]) -> None:
    page, executed = rendered[name]
    assert "data:image/png;base64," in page
    out = executed.parent
    assert sorted(p.name for p in out.iterdir()) == [f"{name}.html", f"{name}.ipynb"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_answer_is_the_first_thing_after_the_title(
        name: str, rendered: dict[str, tuple[str, Path]]) -> None:
    page, executed = rendered[name]
    runs = visible_text(page)
    assert runs[0][0] == "h1", runs[:3]  # the title
    sentence = answer_sentence(executed)
    assert any(marker in sentence for marker in ANSWERS[name]), sentence
    # The sentence may be split into runs by inline tags (code, strong); join the runs
    # that follow the title until the sentence is covered.
    after = ""
    for _, text in runs[1:]:
        after = f"{after} {text}".strip()
        if len(after) >= len(sentence):
            break
    assert after.startswith(" ".join(sentence.split())), (after, sentence)
    # ... followed by its small table, before anything else is said
    assert "<table" in page[page.index(htmllib.escape(sentence.split(";")[0][:30])):][:20000]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_code_in_the_html(name: str, rendered: dict[str, tuple[str, Path]]) -> None:
    page, executed = rendered[name]
    text = " ".join(t for _, t in visible_text(page))
    nb = nbformat.read(executed, as_version=4)
    code_lines = [line.strip() for c in nb.cells if c.cell_type == "code"
                  for line in c.source.splitlines() if len(line.strip()) >= 12]
    assert code_lines  # the .ipynb keeps its code
    shown = [line for line in code_lines if " ".join(line.split()) in text]
    assert not shown, shown[:5]
    assert "hl-ipython3" not in page  # no highlighted input area at all
    # papermill's injected parameters are a table, not code
    assert "# Parameters" not in text
    assert "replications = 2" not in text
    row = re.search(r"<td><code>replications</code></td>\s*<td>2</td>\s*<td>set with "
                    r"<code>-p</code></td>", page)
    assert row, "the injected replications=2 is not in the parameter table"


def test_unknown_notebook() -> None:
    with pytest.raises(ReportError) as err:
        run_report("no-such-report", {})
    assert err.value.key == "no-such-report"
    assert err.value.problem.startswith("no notebook notebooks/no-such-report.ipynb (have: ")
    assert "capacity" in err.value.problem
    assert str(err.value) == f"{err.value.key}: {err.value.problem}"


def test_unknown_parameter(tmp_path: Path) -> None:
    with pytest.raises(ReportError) as err:
        run_report("capacity", {"replicatoins": "2"}, out_dir=tmp_path)
    assert err.value.key == "-p replicatoins"
    assert err.value.problem.startswith("unknown parameter (have: ")
    assert "replications" in err.value.problem
    assert not any(tmp_path.iterdir())


@pytest.mark.timeout(120)
def test_failing_cell_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every bad value is refused before papermill starts; a cell can still fail at run
    # time (here: the experiment's file vanishes once checked).
    import lab.report as report

    monkeypatch.setattr(report, "_check_together", lambda *a: None)
    with pytest.raises(ReportFailed) as err:
        run_report("capacity", {"experiment": "no-such-experiment"}, out_dir=tmp_path)
    assert err.value.ename == "SpecError"
    assert isinstance(err.value, RuntimeError)
    assert not any(tmp_path.iterdir())


@pytest.mark.timeout(120)
def test_report_prints_no_kernel_warnings(tmp_path: Path) -> None:
    """``siplab report`` says only the report's path: no Jupyter kernel chatter on stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "JUPYTER"))}
    proc = subprocess.run(
        [sys.executable, "-m", "lab.cli", "report", "latency", "-p", "replications", "1",
         "-p", "duration_s", "400", "-p", "experiment", "voice-loopback",
         "--out-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.strip() == str(tmp_path / "latency.html")


@pytest.mark.timeout(300)
def test_cost_report_agrees_with_siplab_run(tmp_path: Path) -> None:
    """The cost report titled with an experiment prices that experiment's own workload:
    its cost per minute is the one ``siplab run`` writes to summary.json."""
    from lab.cli import main

    run_dir = tmp_path / "run"
    assert main(["run", str(ROOT / "lab/experiments/contact-centre.yaml"), "--out",
                 str(run_dir), "--quiet", "--set", "duration_s=600", "--replications",
                 "2"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    per_min = summary["cost"]["per_minute_usd"]
    page, executed = render("cost", tmp_path / "report")
    sentence = answer_sentence(executed)
    found = re.match(r"A talk minute costs ([\d.]+) ¢ \(\$([\d.]+)\) under the experiment's "
                     r"price book default, as siplab run reports", sentence)
    assert found, sentence
    assert float(found.group(2)) == pytest.approx(per_min, abs=5e-5)
    assert float(found.group(1)) == pytest.approx(100 * per_min, abs=5e-3)
    assert "the experiment's own workload (talk: no AI turns, talk only)" in page


@pytest.mark.timeout(300)
def test_cost_report_says_when_ai_turns_override(tmp_path: Path) -> None:
    page, _ = render("cost", tmp_path, ai_turns="8")
    assert "every scenario set to 8 AI turns per call by -p ai_turns" in page


@pytest.mark.timeout(300)
def test_latency_report_of_a_real_run_plots_percentiles_over_time(tmp_path: Path) -> None:
    """A real voice run (18 turns in 30 s) used to show an empty percentiles-over-time plot:
    only 60 s windows with 20 turns or more were drawn."""
    need_real_stack()
    from lab.cli import main

    run_dir = tmp_path / "run"
    assert main(["run", str(ROOT / "lab/experiments/voice-loopback.yaml"), "--backend", "real",
                 "--out", str(run_dir), "--quiet"]) == 0
    page = run_report("latency", {"run_dir": str(run_dir)}, out_dir=tmp_path / "report") \
        .read_text(encoding="utf-8")
    section = page.split(">Percentiles over time<", 1)[1].split(">Call quality: MOS<", 1)[0]
    assert section.count("data:image/png;base64,") == 1, "no percentiles-over-time plot"
    assert "Too few turns" not in section
    assert "on the real backend" in page


@pytest.mark.timeout(300)
def test_latency_report_shows_llm_failures_by_cause(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A real voice run whose LLM endpoint answers 401 to every turn: the report's answer
    says so and its "LLM failures by cause" table counts them."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    need_real_stack()
    from lab.cli import main

    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_error(401)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("SIPLAB_AGENT_LLM_URL", f"http://127.0.0.1:{server.server_port}/")
        run_dir = tmp_path / "run"
        main(["run", str(ROOT / "lab/experiments/voice-loopback.yaml"), "--backend", "real",
              "--out", str(run_dir), "--quiet"])
    finally:
        server.shutdown()
    summary = json.loads((run_dir / "summary.json").read_text())
    failed = summary["ai"]["llm"]["errors"]
    assert set(failed) == {"http_401"} and failed["http_401"] > 0
    page, executed = render("latency", tmp_path / "report", run_dir=str(run_dir))
    sentence = answer_sentence(executed)
    assert f"; {failed['http_401']:,} turn(s) got no LLM reply (the endpoint failed: " \
           "http_401)" in sentence
    section = page.split(">LLM failures by cause<", 1)[1].split(">The waterfall", 1)[0]
    cells = [t for _, t in visible_text(section)]
    assert "http_401" in cells and str(failed["http_401"]) in cells
