"""Reports: execute a parameterised notebook with papermill and render it to HTML.

``siplab report NAME -p KEY VALUE`` runs ``notebooks/NAME.ipynb``. Its cell tagged
``parameters`` declares the knobs and their defaults (papermill's convention);
each ``-p`` value is read as a YAML scalar (``5`` is an int, ``0.01`` a float,
``null`` — or ``None`` — is None, anything else a string) and injected after that
cell. Unknown notebooks and unknown parameters are bad input (:class:`ReportError`,
exit status 2) and are found before anything runs. The notebook executes in a
``python3`` kernel on this very interpreter, with ``notebooks/`` as its working
directory; the executed notebook and its HTML land in ``reports/`` (or
``out_dir``) only when the whole notebook succeeded — both are written to temp
files first and renamed, so a failure leaves nothing half-written. A failing
cell raises :class:`ReportFailed` naming the cell and its error.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

#: The repository root: the parent of the ``lab`` package directory.
ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
REPORTS_DIR = ROOT / "reports"


class ReportError(ValueError):
    """Bad input to a report: ``str(err)`` is ``"key: problem"``."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


class ReportFailed(RuntimeError):
    """A notebook cell raised while the report executed."""

    def __init__(self, name: str, cell: int | None, ename: str, evalue: str) -> None:
        self.name = name
        self.cell = cell
        self.ename = ename
        self.evalue = evalue
        where = f"cell {cell}" if cell is not None else "a cell"
        super().__init__(f"report {name}: {where} failed with {ename}: {evalue}")


def notebooks() -> list[str]:
    """Names of the notebooks a report can run."""
    return sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb"))


def notebook_path(name: str) -> Path:
    """``notebooks/NAME.ipynb``, or ReportError naming the notebooks there are."""
    path = NOTEBOOKS_DIR / f"{name}.ipynb"
    if "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
        have = ", ".join(notebooks()) or "none"
        raise ReportError(name, f"no notebook notebooks/{name}.ipynb (have: {have})")
    return path


def notebook_parameters(name: str) -> dict[str, Any]:
    """The notebook's parameters and their defaults (from the cell tagged ``parameters``)."""
    import papermill as pm

    found = pm.inspect_notebook(str(notebook_path(name)))
    return {key: info.get("default") for key, info in found.items()}


def parse_parameters(name: str, params: dict[str, str]) -> dict[str, Any]:
    """Read each value as a YAML scalar; refuse parameters the notebook does not declare."""
    known = notebook_parameters(name)
    out: dict[str, Any] = {}
    for key, raw in params.items():
        if key not in known:
            raise ReportError(key, f"unknown parameter (have: {', '.join(known) or 'none'})")
        if raw.strip() == "None":
            out[key] = None
            continue
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ReportError(key, f"value is not a YAML scalar: {raw!r}") from exc
        if isinstance(value, dict | list):
            raise ReportError(key, f"must be a scalar, got {raw!r}")
        out[key] = value
    return out


def kernel_name() -> str:
    """A kernel spec that starts this interpreter: ``python3``, installed here if need be.

    jupyter_client starts a spec whose command is plain ``python`` with
    ``sys.executable``; a spec pointing at another interpreter (which could not
    import ``lab``) is bypassed by installing ``siplab-python3`` into ``sys.prefix``.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    except NoSuchKernel:
        argv0 = None
    plain = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info)}
    if argv0 in plain or (argv0 and _same_file(argv0, sys.executable)):
        return "python3"
    from ipykernel.kernelspec import install

    install(kernel_name="siplab-python3", display_name="Python 3 (siplab)", prefix=sys.prefix)
    return "siplab-python3"


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def run_report(name: str, params: dict[str, str], out_dir: Path | None = None) -> Path:
    """Execute ``notebooks/NAME.ipynb`` with ``params``; write NAME.ipynb and NAME.html.

    Parameters
    ----------
    name : str
        Notebook name under ``notebooks/`` (no extension).
    params : dict of str to str
        Parameter values as given on the command line, parsed as YAML scalars.
    out_dir : Path, optional
        Where the executed notebook and HTML go (default ``reports/``).

    Returns
    -------
    Path
        The HTML report.

    Raises
    ------
    ReportError
        Unknown notebook or parameter, or a value that is not a YAML scalar.
    ReportFailed
        A cell raised while executing (nothing is written).
    """
    import papermill as pm

    source = notebook_path(name)
    values = parse_parameters(name, params)
    out = Path(out_dir) if out_dir is not None else REPORTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    ipynb, html = out / f"{name}.ipynb", out / f"{name}.html"
    tmp_nb = _temp(out, ".ipynb")
    tmp_html = _temp(out, ".html")
    try:
        try:
            pm.execute_notebook(str(source), str(tmp_nb), parameters=values,
                                kernel_name=kernel_name(), cwd=str(NOTEBOOKS_DIR),
                                progress_bar=False)
        except pm.PapermillExecutionError as exc:
            raise ReportFailed(name, exc.exec_count, exc.ename, exc.evalue) from None
        tmp_html.write_text(_to_html(tmp_nb), encoding="utf-8")
        os.replace(tmp_nb, ipynb)
        os.replace(tmp_html, html)
    finally:
        tmp_nb.unlink(missing_ok=True)
        tmp_html.unlink(missing_ok=True)
    return html


def _temp(directory: Path, suffix: str) -> Path:
    """A fresh hidden name beside the final file (so the rename stays on one file system)."""
    return directory / f".report-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"


def _to_html(notebook: Path) -> str:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    exporter = HTMLExporter(exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    return str(body)
