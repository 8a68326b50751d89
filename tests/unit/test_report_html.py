"""How an executed notebook becomes the HTML page: answer first, parameters as a table,
no code."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from lab.report import _to_html, parameter_table, present


def _executed() -> nbformat.NotebookNode:
    params = new_code_cell("replications = None\npoints = 8")
    params.metadata["tags"] = ["parameters"]
    injected = new_code_cell("# Parameters\nreplications = 2\n")
    injected.metadata["tags"] = ["injected-parameters"]
    answer = new_code_cell("display(Markdown(answer_text_here))", outputs=[
        new_output("display_data", data={"text/markdown": "**42 channels carry it.**"})])
    answer.metadata["tags"] = ["answer"]
    quiet = new_code_cell("exp = load_the_experiment_quietly()")
    loud = new_code_cell("print(compute_the_evidence())", outputs=[
        new_output("stream", name="stdout", text="evidence line\n")])
    nb = new_notebook(cells=[new_markdown_cell("# Title"), params, injected, quiet, answer,
                             new_markdown_cell("## Evidence"), loud])
    nb.metadata["papermill"] = {"parameters": {"replications": 2}}
    return nb


def test_present_orders_title_answer_parameters_evidence() -> None:
    nb = present(_executed(), "capacity")
    kinds = [(c.cell_type, c.source.splitlines()[0] if c.source else "") for c in nb.cells]
    assert kinds == [("markdown", "# Title"),
                     ("code", "display(Markdown(answer_text_here))"),
                     ("markdown", "#### Parameters"),
                     ("markdown", "## Evidence"),
                     ("code", "print(compute_the_evidence())")]


def test_parameter_table_marks_what_was_set() -> None:
    table = parameter_table("capacity", {"replications": 2})
    lines = table.splitlines()
    assert lines[0] == "| parameter | value | |"
    assert "| `replications` | 2 | set with `-p` |" in lines
    assert "| `target_blocking` | 0.01 | default |" in lines
    assert "| `seed` | null | default |" in lines


def test_html_has_no_code(tmp_path: Path) -> None:
    path = tmp_path / "nb.ipynb"
    nbformat.write(_executed(), path)
    page = _to_html(path, "capacity")
    for code in ("answer_text_here", "load_the_experiment_quietly", "compute_the_evidence",
                 "# Parameters", "replications = 2"):
        assert code not in page, code
    assert "<title>Title</title>" in page  # not "Notebook", nor the temp file's name
    assert "42 channels carry it." in page and "evidence line" in page
    assert page.index("42 channels carry it.") < page.index("Parameters") \
        < page.index("evidence line")


def test_the_kernel_is_not_interrupted_on_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    """jupyter_client sends SIGINT before its shutdown request; a SIGINT landing while the
    kernel reads a message logs "KeyboardInterrupt caught in kernel" on siplab's stderr."""
    import asyncio
    import signal
    from types import SimpleNamespace

    from lab.report import _ipc_kernel_manager

    cls = _ipc_kernel_manager()
    sent: list[int] = []

    async def record(self: object, sig: int) -> None:
        sent.append(sig)

    monkeypatch.setattr(cls, "has_kernel", property(lambda self: True))
    monkeypatch.setattr(cls, "kernel_spec", property(
        lambda self: SimpleNamespace(interrupt_mode="signal")))
    monkeypatch.setattr(cls, "_async_signal_kernel", record)
    km = cls()
    assert km.transport == "ipc"
    km.shutting_down = True
    asyncio.run(km._async_interrupt_kernel())
    assert sent == []  # shutting down: nothing to interrupt
    km.shutting_down = False
    asyncio.run(km._async_interrupt_kernel())
    assert sent == [signal.SIGINT]  # a real interrupt still interrupts
