"""docs/contract.md, the users' contract, says what the code does.

Every command and option of the CLI, every experiment key, every result column and
every report parameter in the code appears in the document, and the document's
annotated experiment is exactly the defaults the code fills in.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, get_args

import nbformat
import pytest
import yaml
from pydantic import BaseModel

from lab.cli import _parser
from lab.records import CALL_COLUMNS, STEP_COLUMNS, TIMESERIES_BASE, TURN_COLUMNS
from lab.spec import Experiment, validate

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "contract.md").read_text()


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_every_command_and_option_is_documented(command: str) -> None:
    assert f"`siplab {command}" in DOC
    for action in _subparsers()[command]._actions:
        for opt in action.option_strings:
            if opt not in ("-h", "--help"):
                assert opt in DOC, f"siplab {command} {opt} is not in docs/contract.md"


def _paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        for t in (field.annotation, *get_args(field.annotation)):
            for inner in (t, *get_args(t)):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    out += _paths(inner, f"{prefix}{name}.")
    return out


def test_every_experiment_key_is_documented() -> None:
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", DOC))
    missing = sorted({p for p in _paths(Experiment) if p.rsplit(".", 1)[-1] not in words})
    assert not missing, f"experiment keys not in docs/contract.md: {missing}"


def _yaml_blocks() -> list[Any]:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", DOC, re.S)]


def test_the_documented_experiment_is_the_defaults() -> None:
    documented = validate(_yaml_blocks()[0])
    assert documented.model_dump(mode="json") == Experiment().model_dump(mode="json")


@pytest.mark.parametrize("columns", [CALL_COLUMNS, TURN_COLUMNS, STEP_COLUMNS, TIMESERIES_BASE],
                         ids=["calls", "turns", "steps", "timeseries"])
def test_every_result_column_is_documented(columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if f"`{c}`" not in DOC]
    assert not missing, f"result columns not in docs/contract.md: {missing}"


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")),
                         ids=lambda p: p.stem)
def test_every_report_and_its_parameters_are_documented(notebook: Path) -> None:
    nb = nbformat.read(notebook, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    names = re.findall(r"^([a-z_][a-z0-9_]*)\s*=", cell.source, re.M)
    row = next((line for line in DOC.splitlines() if line.startswith(f"| `{notebook.stem}` |")),
               None)
    assert row is not None, f"report {notebook.stem} is not in docs/contract.md"
    missing = [n for n in names if f"`{n}`" not in row]
    assert not missing, f"{notebook.stem} parameters not documented: {missing}"


def test_the_price_book_example_is_complete_and_valid() -> None:
    from lab.cost import PriceBook

    documented = _yaml_blocks()[1]
    PriceBook.model_validate(documented)

    def keys(d: dict[str, Any], p: str = "") -> set[str]:
        return {p + k for k in d} | {
            x for k, v in d.items() if isinstance(v, dict) for x in keys(v, f"{p}{k}.")}

    for path in sorted((ROOT / "lab" / "pricebooks").glob("*.yaml")):
        book = yaml.safe_load(path.read_text())
        assert keys(book) <= keys(documented), path.name
