"""``siplab report -p KEY VALUE``: every value is checked before papermill starts.

A bad value is exit status 2 with one line on stderr naming ``-p KEY`` (or the option)
and the problem, and nothing is written: the output directory is not even created.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import lab.report as report
from lab.cli import main
from lab.report import RULES, ReportError, notebook_parameters, notebooks, parse_parameters

BAD_EXPERIMENT = """name: bad
deployment:
  trunk: {channels: -3}
"""

#: (notebook, [-p KEY VALUE ...], option the line must name, words the problem must say)
CASES: list[tuple[str, list[str], str, str]] = [
    ("capacity", ["replications", "0"], "-p replications", "must be an integer in [1, 1000]"),
    ("capacity", ["replications", "2.5"], "-p replications", "must be an integer"),
    ("capacity", ["replications", "many"], "-p replications", "got 'many'"),
    ("capacity", ["replications", "true"], "-p replications", "got True"),
    ("capacity", ["replications", "5000"], "-p replications", "in [1, 1000]"),
    ("capacity", ["target_blocking", "0"], "-p target_blocking",
     "must be a fraction in (0, 1), got 0"),
    ("capacity", ["target_blocking", "1.5"], "-p target_blocking", "a fraction in (0, 1)"),
    ("capacity", ["target_blocking", "[0.1]"], "-p target_blocking", "must be a scalar"),
    ("capacity", ["target_blocking", ".nan"], "-p target_blocking", "a fraction in (0, 1)"),
    ("capacity", ["points", "-3"], "-p points", "must be an integer in [1, 200]"),
    ("capacity", ["max_replications", "1", "replications", "2"], "-p max_replications",
     "must be >= replications (2)"),
    ("capacity", ["seed", "-1"], "-p seed", "must be an integer >= 0"),
    ("capacity", ["duration_s", "-5"], "-p duration_s", "must be a number > 0"),
    ("capacity", ["duration_s", "1e12"], "-p duration_s", "1000000000000"),
    ("capacity", ["duration_s", "inf"], "-p duration_s", "must be a number > 0 or null, got inf"),
    ("capacity", ["experiment", "no-such-experiment"], "-p experiment",
     "no experiment file or built-in named 'no-such-experiment'"),
    ("capacity", ["experiment", "{TMP}"], "-p experiment", "is a directory, not an experiment"),
    ("capacity", ["experiment", "{TMP}/bad.yaml"], "-p experiment",
     "deployment.trunk.channels"),
    ("capacity", ["experiment", "''"], "-p experiment", "must be a string"),
    ("capacity", ["replicatoins", "2"], "-p replicatoins", "unknown parameter (have: "),
    ("latency", ["slo_ms", "0"], "-p slo_ms", "must be a number > 0, got 0"),
    ("latency", ["window_s", "-1"], "-p window_s", "must be a number > 0 or null"),
    ("latency", ["replications", "0"], "-p replications", "must be an integer"),
    ("latency", ["run_dir", "/no/such/run"], "-p run_dir", "no run directory"),
    ("latency", ["run_dir", "{TMP}"], "-p run_dir", "is not a run directory (no summary.json"),
    ("cost", ["pricebooks", "no-such-book"], "-p pricebooks", "no price book named"),
    ("cost", ["ai_turns", "-1"], "-p ai_turns", "must be an integer in [0, 1000] or null"),
    ("cost", ["ai_turns", "2.5"], "-p ai_turns", "got 2.5"),
    ("cost", ["delta", "1"], "-p delta", "must be a fraction in (0, 1), got 1"),
    ("cost", ["calls_per_month", "0"], "-p calls_per_month", "must be a number > 0"),
    ("cost", ["dids", "1.5"], "-p dids", "must be an integer >= 0"),
    ("cost", ["experiment", "no-such"], "-p experiment", "no experiment file"),
]


def _ids(case: tuple[str, list[str], str, str]) -> str:
    return f"{case[0]}-{'-'.join(case[1])}"


@pytest.fixture
def no_papermill(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if papermill is ever asked to execute a notebook."""
    import papermill

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("papermill started on bad input")

    monkeypatch.setattr(papermill, "execute_notebook", refuse)


@pytest.mark.usefixtures("no_papermill")
@pytest.mark.parametrize(("name", "pairs", "option", "problem"), CASES, ids=list(map(_ids, CASES)))
def test_bad_report_parameter(name: str, pairs: list[str], option: str, problem: str,
                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_EXPERIMENT)
    out = tmp_path / "out"
    argv = ["report", name]
    for key, value in zip(pairs[::2], pairs[1::2], strict=True):
        argv += ["-p", key, value.replace("{TMP}", str(tmp_path))]
    assert main([*argv, "--out-dir", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"siplab: {option}: "), lines[0]
    assert problem in lines[0], lines[0]
    assert captured.out == ""
    assert not out.exists()  # nothing written, not even the directory


@pytest.mark.usefixtures("no_papermill")
@pytest.mark.parametrize("where", ["file", "under-file"])
def test_bad_out_dir(where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    out = blocker if where == "file" else blocker / "reports"
    assert main(["report", "latency", "--out-dir", str(out)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("siplab: --out-dir: "), lines
    assert blocker.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_every_parameter_has_a_rule_that_takes_its_default() -> None:
    assert set(RULES) == set(notebooks())
    for name in notebooks():
        defaults = notebook_parameters(name)
        assert set(defaults) == set(RULES[name]), name
        for key, default in defaults.items():
            assert RULES[name][key].problem(default) is None, (name, key, default)


def test_good_values_are_typed_and_paths_made_absolute(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    src = Path(report.ROOT, "lab/experiments/contact-centre.yaml")
    (tmp_path / "mine.yaml").write_text(src.read_text())
    monkeypatch.chdir(tmp_path)  # the notebook runs in notebooks/: a relative path must hold
    values = parse_parameters("capacity", {"experiment": "mine.yaml", "replications": "3",
                                           "target_blocking": "0.02", "seed": "null",
                                           "duration_s": "600"})
    assert values == {"experiment": str(tmp_path / "mine.yaml"), "replications": 3,
                      "target_blocking": 0.02, "seed": None, "duration_s": 600}
    assert parse_parameters("latency", {"window_s": "None", "slo_ms": "800"}) == {
        "window_s": None, "slo_ms": 800}


def test_report_error_names_the_option() -> None:
    with pytest.raises(ReportError) as err:
        parse_parameters("cost", {"delta": "0"})
    assert err.value.key == "-p delta"
    assert str(err.value) == "-p delta: must be a fraction in (0, 1), got 0"
