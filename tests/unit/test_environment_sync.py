"""environment.yml (conda users) lists exactly the dependencies of pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]

# PyPI name -> conda-forge name, both normalised, where they differ beyond spelling.
# Case and separators are normalised first (PyYAML -> pyyaml, types-PyYAML ->
# types-pyyaml), so today every name maps to itself; add real renames here.
PYPI_TO_CONDA: dict[str, str] = {"pyyaml": "pyyaml", "types-pyyaml": "types-pyyaml"}
# Packages that only PyPI has: they must sit in the `pip:` section.
PIP_ONLY = frozenset({"pjsua2-python"})
# Conda-only entries that are tooling, not project dependencies.
CONDA_TOOLING = frozenset({"python", "pip"})
# Extras mirrored into environment.yml besides the runtime dependencies.
EXTRAS = ("dev", "lab")

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normalise(name: str) -> str:
    """PEP 503 normalisation: case-insensitive, runs of ``-_.`` equal one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _name(requirement: str) -> str:
    match = _NAME.match(requirement)
    assert match, f"cannot read a package name from {requirement!r}"
    return _normalise(match.group(1))


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


def _environment() -> tuple[set[str], set[str]]:
    """Normalised names in the conda section and in the pip section."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda: set[str] = set()
    pip: set[str] = set()
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            for line in entry.get("pip", []):
                if not line.strip().startswith("-"):  # skip -e ., -r file, options
                    pip.add(_name(line))
        else:
            conda.add(_name(str(entry)))
    return conda, pip


def _required(extras: tuple[str, ...]) -> set[str]:
    project = _pyproject()["project"]
    names = {_name(r) for r in project["dependencies"]}
    for extra in extras:
        names |= {_name(r) for r in project["optional-dependencies"][extra]}
    return names


def test_environment_header() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "siplab"
    assert env["channels"] == ["conda-forge"]
    pythons = [d for d in env["dependencies"] if isinstance(d, str) and _name(d) == "python"]
    assert pythons == ["python>=3.11"]
    pip_lines = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_lines


def test_every_pyproject_dependency_is_in_environment() -> None:
    conda, pip = _environment()
    missing = []
    for name in sorted(_required(("dev",))):
        if name in PIP_ONLY:
            if name not in pip:
                missing.append(f"{name} (pip section)")
        elif PYPI_TO_CONDA.get(name, name) not in conda and name not in pip:
            missing.append(name)
    assert not missing, f"add to environment.yml: {missing}"


def test_pip_only_packages_are_not_in_the_conda_section() -> None:
    conda, _ = _environment()
    assert not (PIP_ONLY & conda)


def test_nothing_in_environment_is_missing_from_pyproject() -> None:
    conda, pip = _environment()
    known = _required(EXTRAS)
    conda_known = {PYPI_TO_CONDA.get(n, n) for n in known} | CONDA_TOOLING
    extra = sorted((conda - conda_known) | (pip - known))
    assert not extra, f"in environment.yml but not in pyproject.toml: {extra}"
