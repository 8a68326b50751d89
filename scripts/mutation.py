"""Mutation testing of the twin's core and the analytic modules (``make mutation``).

Runs mutmut (configured in ``[tool.mutmut]`` of pyproject.toml) in one worker, then
prints the kill rate per module and overall and every surviving mutant with its
module, line and diff. See docs/mutation.md.

Incremental: mutmut keeps its verdicts in ``mutants/`` and re-tests only the mutants
of functions whose source changed. A verdict of *survived* is also re-tested whenever
the selected tests changed since the last run (a new test may now kill it), so a
second run after adding tests costs only the survivors.

Equivalent mutants (no observable behaviour change) are read from the table in
docs/mutation.md: a row whose first cell is a mutant name in backticks. They are
reported, and left out of the denominator, only when they are listed there with a
reason; an equivalent mutant that a test kills is reported as a stale entry.

Usage::

    python scripts/mutation.py              # run (incremental), then report
    python scripts/mutation.py --report     # report the stored verdicts only
    python scripts/mutation.py --fresh      # drop mutants/ first: everything anew
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
DOC = ROOT / "docs" / "mutation.md"
TESTS_HASH = MUTANTS / "siplab-tests.sha256"
MUTMUT = [sys.executable, "-c", "import sys; from mutmut.__main__ import cli; sys.exit(cli())"]

# mutmut's exit-code verdicts (mutmut.stats.status_by_exit_code), grouped for the table
KILLED = {1: "killed", 3: "killed", 37: "killed"}
TIMEOUT = {36, -24, 24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}


def _config() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["tool"]["mutmut"]


def _selected_test_files(cfg: dict) -> list[Path]:
    files: list[Path] = []
    for arg in cfg["pytest_add_cli_args_test_selection"]:
        p = ROOT / arg
        if p.is_dir():
            files += sorted(p.rglob("*.py"))
        elif p.is_file():
            files.append(p)
    return [*files, ROOT / "tests" / "conftest.py", ROOT / "pyproject.toml"]


def _tests_digest(cfg: dict) -> str:
    h = hashlib.sha256()
    for f in _selected_test_files(cfg):
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _module(path: str) -> str:
    return path[:-3].replace("/", ".")


def _verdicts(cfg: dict) -> dict[str, dict[str, int | None]]:
    """Per target file, mutant name -> exit code (None: not yet tested)."""
    out: dict[str, dict[str, int | None]] = {}
    for path in cfg["only_mutate"]:
        meta = MUTANTS / (path + ".meta")
        if meta.exists():
            out[path] = json.loads(meta.read_text())["exit_code_by_key"]
        else:
            out[path] = {}
    return out


def _equivalents() -> dict[str, str]:
    """Mutant name -> reason, from the equivalent-mutant table of docs/mutation.md."""
    if not DOC.exists():
        return {}
    rows: dict[str, str] = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"^\|\s*`([^`]+__mutmut_\d+)`\s*\|(.*)\|\s*$", line)
        if m:
            reason = m.group(2).split("|")[-1].strip()
            if reason:
                rows[m.group(1)] = reason
    return rows


def _mutmut(*args: str) -> int:
    return subprocess.call([*MUTMUT, *args], cwd=ROOT)


def run(fresh: bool) -> int:
    cfg = _config()
    if fresh and MUTANTS.exists():
        shutil.rmtree(MUTANTS)
    digest = _tests_digest(cfg)
    # verdicts from an earlier run, made with other tests (or with tests not recorded
    # because that run was interrupted): its survivors must be re-tested
    had_verdicts = any(c is not None for v in _verdicts(cfg).values() for c in v.values())
    stale = had_verdicts and (not TESTS_HASH.exists()
                              or TESTS_HASH.read_text().strip() != digest)
    code = _mutmut("run", "--max-children", "1")
    if code != 0:
        return code
    if stale:  # the tests changed: a survivor may be killed now
        survivors = [k for v in _verdicts(cfg).values() for k, c in v.items() if c in SURVIVED]
        if survivors:
            print(f"tests changed since the last run: re-testing {len(survivors)} survivors")
            code = _mutmut("run", "--max-children", "1", *survivors)
            if code != 0:
                return code
    TESTS_HASH.write_text(digest + "\n")
    return 0


def _function_ranges(path: Path) -> dict[str, tuple[int, int]]:
    """``name`` or ``Class.name`` -> (first line, last line) of each def in ``path``."""
    tree = ast.parse(path.read_text())
    out: dict[str, tuple[int, int]] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                out[prefix + child.name] = (first, child.end_lineno or child.lineno)

    visit(tree, "")
    return out


def _function_of(mutant: str, module: str) -> str:
    """``twin.pool.xǁFcfsPoolǁbook__mutmut_3`` -> ``FcfsPool.book``."""
    local = mutant[len(module) + 1:].rsplit("__mutmut_", 1)[0]
    if local.startswith("xǁ"):
        _, cls, meth = local.split("ǁ")
        return f"{cls}.{meth}"
    return local[2:] if local.startswith("x_") else local


def _diff(mutant: str) -> str:
    out = subprocess.run([*MUTMUT, "show", mutant], cwd=ROOT, capture_output=True, text=True)
    lines = out.stdout.splitlines()
    return "\n".join(line for line in lines if not line.startswith("#"))


def _line_of(diff: str, path: Path, span: tuple[int, int] | None) -> int | None:
    """Line in ``path`` of the first line the mutant changes."""
    removed = [ln[1:] for ln in diff.splitlines()
               if ln.startswith("-") and not ln.startswith("---")]
    if not removed or span is None:
        return span[0] if span else None
    source = path.read_text().splitlines()
    first, last = span
    want = removed[0].strip()
    for n in range(first, last + 1):
        if source[n - 1].strip() == want:
            return n
    return first


def report() -> int:
    cfg = _config()
    verdicts = _verdicts(cfg)
    equivalent = _equivalents()
    rows = []
    survivors: list[tuple[str, str]] = []
    stale_equivalents = []
    total = Counter()
    for path, codes in verdicts.items():
        c = Counter()
        for name, code in codes.items():
            if code in KILLED:
                c["killed"] += 1
                if name in equivalent:
                    stale_equivalents.append(name)
            elif code in SURVIVED and name in equivalent:
                c["equivalent"] += 1
            elif code in SURVIVED:
                c["survived"] += 1
                survivors.append((path, name))
            elif code in TIMEOUT:
                c["timeout"] += 1
            elif code in NO_TESTS:
                c["no tests"] += 1
            elif code is None:
                c["not run"] += 1
            else:
                c["other"] += 1
        total.update(c)
        rows.append((_module(path), c))
    rows.append(("TOTAL", total))

    def rate(c: Counter) -> str:
        # a timeout is a detected mutant (the test run did not finish as it should)
        den = sum(c.values()) - c["equivalent"]
        return f"{100.0 * (c['killed'] + c['timeout']) / den:5.1f} %" if den else "    -"

    cols = ("killed", "timeout", "survived", "no tests", "equivalent", "not run")
    print()
    print(f"{'module':<18}" + "".join(f"{k:>11}" for k in cols) + f"{'kill rate':>11}")
    for name, c in rows:
        print(f"{name:<18}" + "".join(f"{c[k]:>11}" for k in cols) + f"{rate(c):>11}")
    print("kill rate = (killed + timeout) / (all - equivalent); equivalent mutants and "
          "their reasons: docs/mutation.md")
    if survivors:
        print(f"\n{len(survivors)} surviving mutants:")
        spans = {p: _function_ranges(ROOT / p) for p in verdicts}
        for path, name in survivors:
            module = _module(path)
            diff = _diff(name)
            line = _line_of(diff, ROOT / path, spans[path].get(_function_of(name, module)))
            print(f"\n--- {module}:{line}  {name}")
            print("\n".join(ln for ln in diff.splitlines()
                            if ln.startswith(("+", "-", "@"))
                            and not ln.startswith(("+++", "---"))))
    for name in stale_equivalents:
        print(f"note: {name} is listed as equivalent in docs/mutation.md but a test kills it")
    listed_unknown = set(equivalent) - {k for v in verdicts.values() for k in v}
    for name in sorted(listed_unknown):
        print(f"note: {name} is listed as equivalent in docs/mutation.md but is no mutant now")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true", help="report stored verdicts only")
    ap.add_argument("--fresh", action="store_true", help="delete mutants/ and start anew")
    args = ap.parse_args()
    if not args.report:
        code = run(args.fresh)
        if code != 0:
            print(f"mutmut failed (exit {code})", file=sys.stderr)
            return code
    return report()


if __name__ == "__main__":
    sys.exit(main())
