"""Every notebook runs end to end with tiny parameters and renders to HTML."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.report import NOTEBOOKS_DIR, ReportError, ReportFailed, notebook_parameters, run_report

NOTEBOOKS = sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb"))

#: Small values for the parameters notebooks share; each notebook gets those it declares.
TINY = {"replications": "2", "points": "3", "duration_s": "600"}

#: Text each report's conclusion must contain.
ANSWERS = {"capacity": "channels carry the peak of", "cost": "is the cheapest at",
           "latency": "of turns within 1,500 ms;"}


def test_there_are_notebooks() -> None:
    assert "capacity" in NOTEBOOKS


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_renders(name: str, tmp_path: Path) -> None:
    known = notebook_parameters(name)
    params = {k: v for k, v in TINY.items() if k in known}
    html = run_report(name, params, out_dir=tmp_path)
    assert html == tmp_path / f"{name}.html"
    text = html.read_text(encoding="utf-8")
    assert "data:image/png;base64," in text
    if name in ANSWERS:
        assert ANSWERS[name] in text
    assert (tmp_path / f"{name}.ipynb").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.html", f"{name}.ipynb"]


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
    assert err.value.key == "replicatoins"
    assert err.value.problem.startswith("unknown parameter (have: ")
    assert "replications" in err.value.problem
    assert not any(tmp_path.iterdir())


@pytest.mark.timeout(120)
def test_failing_cell_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ReportFailed) as err:
        run_report("capacity", {"experiment": "no-such-experiment"}, out_dir=tmp_path)
    assert err.value.ename == "SpecError"
    assert isinstance(err.value, RuntimeError)
    assert not any(tmp_path.iterdir())
