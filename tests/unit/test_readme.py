"""The README stands on its own: every command of its "Using it" block runs as written,
through the ``siplab`` that ``make setup`` puts in ``.venv/bin``, and it links only to
files inside the repository.

Each command gets only an output directory (so nothing lands in the repository) and,
for reports, a short ``duration_s``; real-backend lines run when the real stack is
installed and skip with its reason otherwise (CI, which installs it, fails instead).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need_real_stack

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")

#: The console script next to this interpreter: what ``source .venv/bin/activate`` puts
#: on the PATH.
SIPLAB = Path(sys.executable).parent / "siplab"


def using_it_commands() -> list[tuple[list[str], str]]:
    """(argv, comment) of each line of the first ``bash`` block under "## Using it"."""
    section = README.split("\n## Using it\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "no bash block under ## Using it"
    out = []
    for line in block.group(1).splitlines():
        if not line.strip():
            continue
        argv = shlex.split(line, comments=True)
        comment = line.split("#", 1)[1].strip() if "#" in line else ""
        out.append((argv, comment))
    return out


COMMANDS = using_it_commands()


def test_the_block_is_all_siplab_commands() -> None:
    assert len(COMMANDS) >= 10
    assert all(argv[0] == "siplab" for argv, _ in COMMANDS), [a for a, _ in COMMANDS]
    assert SIPLAB.is_file() and os.access(SIPLAB, os.X_OK), "make setup installs .venv/bin/siplab"
    assert "source .venv/bin/activate" in README and ".venv/bin/siplab" in README


def _prepared(argv: list[str], tmp: Path) -> list[str]:
    """The README's command with an output directory (and a short report) added."""
    args = [str(SIPLAB), *argv[1:]]
    if argv[1] == "run":
        args += ["--out", str(tmp / "run"), "--quiet"]
    elif argv[1] == "report":
        if "duration_s" not in argv:
            args += ["-p", "duration_s", "600"]
        args += ["--out-dir", str(tmp / "reports")]
    return args


def _needs_real(argv: list[str]) -> None:
    if "--backend" in argv and argv[argv.index("--backend") + 1] == "real":
        need_real_stack()


def _check_json_comment(stdout: str, comment: str) -> None:
    """A comment such as ``{"blocking": 0.0269...}`` promises those keys and digits."""
    printed = json.loads(stdout)
    keys = re.findall(r'"(\w+)"', comment)
    assert list(printed) == keys or not keys, (printed, comment)
    for key, digits in re.findall(r'"(\w+)": ([\d.]+)\.\.\.', comment):
        assert str(printed[key]).startswith(digits), (key, printed[key], digits)


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("argv", "comment"), COMMANDS, ids=[" ".join(a[1:3]) + f"-{i}"
                                                             for i, (a, _) in
                                                             enumerate(COMMANDS)])
def test_readme_command_runs(argv: list[str], comment: str, tmp_path: Path) -> None:
    _needs_real(argv)
    proc = subprocess.run(_prepared(argv, tmp_path), cwd=ROOT, capture_output=True,
                          text=True, timeout=590, check=False)
    assert proc.returncode == 0, (argv, proc.stderr[-2000:])
    out = proc.stdout.strip().splitlines()
    if argv[1] == "run":
        summary = Path(out[-1])
        assert summary == tmp_path / "run" / "summary.json" and summary.is_file()
        assert json.loads(summary.read_text())["calls"]["offered"] > 0
    elif argv[1] == "report":
        assert Path(out[-1]) == tmp_path / "reports" / f"{argv[2]}.html"
        assert Path(out[-1]).is_file()
        assert proc.stderr == ""  # no kernel warnings
    else:
        assert len(out) == 1
        _check_json_comment(out[0], comment if comment.startswith("{") else "")


def test_readme_links_stay_inside_the_repository() -> None:
    targets = re.findall(r"\]\(([^)\s]+)\)", README)
    assert targets, "the README links its reference"
    for target in targets:
        assert not re.match(r"^[a-z][a-z0-9+.-]*:|^//", target), f"links outside: {target}"
        assert (ROOT / target.split("#", 1)[0]).exists(), f"no such file: {target}"
    hosts = re.findall(r"\b(?:https?|ftp)://[\w-]+\.[\w.-]+", README)
    assert not hosts, f"addresses outside the repository: {hosts}"
    assert "<http" not in README
