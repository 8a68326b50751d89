"""The error every kind of bad input raises (exit status 2 on the command line).

Kept apart from :mod:`lab.spec` so that commands which never read an experiment
(``siplab erlang-b``) need not import pydantic to report a bad option.
"""

from __future__ import annotations


class SpecError(ValueError):
    """Bad input: ``str(err)`` is the one line the CLI prints (``key.path: problem``)."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)
