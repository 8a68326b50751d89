"""The twin's tables for a fixed seed do not move: built-in experiments and one case per path.

Restructuring and speed-ups must give bit-identical calls, turns and steps tables; a
deliberate modelling change regenerates ``tests/golden/twin_tables.json`` and says why.
"""

from __future__ import annotations

import json

import pytest

from lab.runner import run_experiment
from tests.golden.cases import DIGESTS, digests, experiments

PINNED = json.loads(DIGESTS.read_text())
CASES = experiments()


def test_every_case_is_pinned() -> None:
    assert sorted(PINNED) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_twin_tables_unchanged(name: str, tmp_path) -> None:
    exp, base = CASES[name]
    run_experiment(exp, out_dir=tmp_path / name, base_dir=base, show_progress=False, jobs=1)
    got = digests(tmp_path / name)
    for table, want in PINNED[name].items():
        assert got[table]["rows"] == want["rows"], f"{name} {table}: row count moved"
        assert list(got[table]["columns"]) == list(want["columns"]), f"{name} {table} columns"
        moved = [c for c, d in want["columns"].items() if got[table]["columns"][c] != d]
        assert not moved, f"{name} {table}: values moved in {moved}"
