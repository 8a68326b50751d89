"""Reports: execute a parameterised notebook with papermill and render it to HTML.

``siplab report NAME -p KEY VALUE`` runs ``notebooks/NAME.ipynb``. Its cell tagged
``parameters`` declares the knobs and their defaults (papermill's convention);
each ``-p`` value is read as a YAML scalar (``5`` is an int, ``0.01`` a float,
``null`` — or ``None`` — is None, anything else a string) and injected after that
cell.

Every value is checked before papermill starts (:data:`RULES`, a schema per
notebook: the type the parameter's default has, plus its range — ``replications``
an integer > 0, ``target_blocking`` a fraction in (0, 1), ``experiment`` a name or
path that loads). Unknown notebooks, unknown parameters and bad values are bad
input (:class:`ReportError`, exit status 2, one line naming ``-p KEY``) and
nothing is written. The notebook executes in a ``python3`` kernel on this very
interpreter, reached over a Unix socket (IPC transport: nothing on a TCP port, and
no kernel warning about plain-text TCP), with ``notebooks/`` as its working
directory; the executed notebook and its HTML land in ``reports/`` (or
``out_dir``) only when the whole notebook succeeded — both are written to temp
files first and renamed, so a failure leaves nothing half-written. A failing
cell raises :class:`ReportFailed` naming the cell and its error.

The HTML shows no code: inputs are left out (the ``.ipynb`` keeps them), the
parameters cell and papermill's injected cell become one small table of every
parameter's value, placed right after the cell tagged ``answer`` — so a report
reads title, answer, parameters, then the evidence.
"""

from __future__ import annotations

import math
import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: The repository root: the parent of the ``lab`` package directory.
ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
REPORTS_DIR = ROOT / "reports"


class ReportError(ValueError):
    """Bad input to a report: ``str(err)`` is ``"key: problem"``.

    ``key`` is the notebook's name for an unknown notebook, else ``-p NAME``: the
    option as the user typed it.
    """

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
    return {key: _literal(str(info.get("default"))) for key, info in found.items()}


def _literal(source: str) -> Any:
    """A default as written in the parameters cell (``"x"`` -> ``x``, ``None`` -> None)."""
    import ast

    try:
        return ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return source


# ---------------------------------------------------------------------------- the schema
@dataclass(frozen=True)
class Rule:
    """What one report parameter accepts: a kind, whether None is allowed, a range.

    ``kind`` is ``"integer"``, ``"number"`` (an int or a finite float) or ``"text"``;
    ``low``/``high`` bound a number (``open_low``/``open_high`` exclude the bound);
    ``check`` is a further test of a non-None value returning the problem or None.
    """

    kind: str
    nullable: bool = False
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    check: Callable[[Any], str | None] | None = None

    def describe(self) -> str:
        """The accepted values in words: ``an integer > 0``, ``a fraction in (0, 1)``."""
        noun = {"integer": "an integer", "number": "a number", "text": "a string"}[self.kind]
        if self.kind != "text":
            if self.low == 0 and self.high == 1 and self.kind == "number":
                lo = "(" if self.open_low else "["
                hi = ")" if self.open_high else "]"
                noun = f"a fraction in {lo}0, 1{hi}"
            elif self.low is not None and self.high is not None:
                noun += f" in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}" \
                        f"{')' if self.open_high else ']'}"
            elif self.low is not None:
                noun += f" {'>' if self.open_low else '>='} {self.low:g}"
        return noun + (" or null" if self.nullable else "")

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused, or None when it is accepted."""
        got = f"got {value!r}"
        if value is None:
            return None if self.nullable else f"must be {self.describe()}, {got}"
        if isinstance(value, bool) or not _is_kind(value, self.kind):
            return f"must be {self.describe()}, {got}"
        if self.kind != "text":
            x = float(value)
            if (self.low is not None and (x <= self.low if self.open_low else x < self.low)) \
                    or (self.high is not None
                        and (x >= self.high if self.open_high else x > self.high)):
                return f"must be {self.describe()}, {got}"
        return self.check(value) if self.check is not None else None


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int)
    if kind == "number":
        return isinstance(value, int | float) and math.isfinite(float(value))
    return isinstance(value, str) and bool(value.strip())


def _integer(low: int, *, high: int | None = None, nullable: bool = False) -> Rule:
    return Rule("integer", nullable, low, high)


def _positive(*, nullable: bool = False) -> Rule:
    return Rule("number", nullable, 0, None, open_low=True)


def _fraction() -> Rule:
    return Rule("number", False, 0, 1, open_low=True, open_high=True)


def _run_dir_problem(value: Any) -> str | None:
    path = Path(str(value))
    if not path.is_dir():
        return f"no run directory at {str(value)!r}"
    missing = [f for f in ("summary.json", "calls.parquet") if not (path / f).is_file()]
    if missing:
        return f"{str(value)!r} is not a run directory (no {', '.join(missing)})"
    return None


def _backend_problem(value: Any) -> str | None:
    from lab.backend import names

    have = names()
    return None if value in have else f"unknown backend {value!r} (have: {have})"


#: Parameters every report shares.
_COMMON: dict[str, Rule] = {
    "experiment": Rule("text"),  # loaded with the others by _check_experiment
    "duration_s": _positive(nullable=True),
    "seed": _integer(0, nullable=True),
    "replications": _integer(1, high=1000, nullable=True),
}

#: The schema of each notebook's parameters. A parameter a notebook declares but no
#: rule names is held to the type of its default (a test keeps this table complete).
RULES: dict[str, dict[str, Rule]] = {
    "capacity": {**_COMMON,
                 "max_replications": _integer(1, high=1000),
                 "points": _integer(1, high=200),
                 "target_blocking": _fraction()},
    "latency": {**_COMMON,
                "run_dir": Rule("text", nullable=True, check=_run_dir_problem),
                "slo_ms": _positive(),
                "window_s": _positive(nullable=True)},
    "cost": {**_COMMON,
             "pricebooks": Rule("text"),
             "calls_per_month": _positive(),
             "dids": _integer(0),
             "ai_turns": _integer(0, high=1000, nullable=True),
             "delta": _fraction()},
    "headline": {**_COMMON, "backend": Rule("text", check=_backend_problem)},
}


def rule_for(name: str, key: str, default: Any) -> Rule:
    """The rule of ``key`` in notebook ``name``: declared in :data:`RULES`, else its
    default's type (None for a default of None means any scalar)."""
    declared = RULES.get(name, {}).get(key)
    if declared is not None:
        return declared
    if isinstance(default, bool) or default is None:
        return Rule("text", nullable=True) if default is None else Rule("integer", False, 0, 1)
    if isinstance(default, int):
        return Rule("integer")
    if isinstance(default, float):
        return Rule("number")
    return Rule("text")


def parse_parameters(name: str, params: dict[str, str]) -> dict[str, Any]:
    """Read each value as a YAML scalar and check it against the notebook's schema.

    Returns the values to inject (paths made absolute, since the notebook runs in
    ``notebooks/``). Raises :class:`ReportError` keyed ``-p KEY`` on an unknown
    parameter, a value that is no scalar, or one its :class:`Rule` refuses; then
    checks that the experiment (with the run-length, seed and replication
    overrides), its price books and a run directory load.
    """
    known = notebook_parameters(name)
    out: dict[str, Any] = {}
    for key, raw in params.items():
        if key not in known:
            raise ReportError(f"-p {key}",
                              f"unknown parameter (have: {', '.join(known) or 'none'})")
        rule = rule_for(name, key, known[key])
        value = _scalar(key, raw)
        if rule.kind != "text" and isinstance(value, str):
            value = _number(value)  # YAML 1.1 reads 1e12 and 1e-3 as strings
        problem = rule.problem(value)
        if problem:
            raise ReportError(f"-p {key}", problem)
        out[key] = value
    for key in ("run_dir", "experiment"):
        value = out.get(key)
        if isinstance(value, str) and Path(value).exists():
            out[key] = str(Path(value).resolve())
    _check_together(name, {**known, **out}, set(out))
    return out


def _scalar(key: str, raw: str) -> Any:
    if raw.strip() == "None":
        return None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ReportError(f"-p {key}", f"value is not a YAML scalar: {raw!r}") from exc
    if isinstance(value, dict | list):
        raise ReportError(f"-p {key}", f"must be a scalar, got {raw!r}")
    return value


def _number(text: str) -> Any:
    """``text`` as a float when it is one (``1e12``, ``inf``), else ``text`` unchanged."""
    try:
        return float(text)
    except ValueError:
        return text


def _check_together(name: str, values: dict[str, Any], given: set[str]) -> None:
    """Load what the notebook will load, so a bad experiment fails here, not in a cell."""
    from lab import capacity
    from lab.errors import SpecError

    if values.get("max_replications") is not None and values.get("replications") is not None \
            and values["max_replications"] < values["replications"]:
        key = "max_replications" if "max_replications" in given else "replications"
        raise ReportError(f"-p {key}", f"max_replications ({values['max_replications']})"
                          f" must be >= replications ({values['replications']})")
    if values.get("run_dir") is not None or "experiment" not in values:
        return  # the latency report reads the run directory, not the experiment
    try:
        path = capacity.experiment_path(values["experiment"])
    except SpecError as exc:
        raise ReportError("-p experiment", exc.problem) from exc
    overrides = {k: values.get(k) for k in ("duration_s", "seed", "replications")}
    try:
        if name == "cost":
            from lab import costing

            costing.load(path, ai_turns=values.get("ai_turns"), **overrides)
            costing.load_pricebooks(values["pricebooks"], path.parent)
        else:
            capacity.load(path, **overrides)
    except SpecError as exc:
        raise ReportError(*_blame(exc, values, given)) from exc


def _blame(exc: Any, values: dict[str, Any], given: set[str]) -> tuple[str, str]:
    """The ``-p`` option a spec error comes from, and the problem to print."""
    top = str(exc.path).split(".")[0]
    if top == "warmup_s":
        top = "duration_s"
    if top == "pricebook":
        return "-p pricebooks", exc.problem
    if top in values and top != "experiment" and (top in given or values[top] is not None):
        return f"-p {top}", exc.problem
    return "-p experiment", f"{values['experiment']}: {exc}"


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
        Unknown notebook or parameter, a value its rule refuses, an experiment,
        price book or run directory that does not load, or an ``out_dir`` that
        cannot be a directory — all found before the notebook starts.
    ReportFailed
        A cell raised while executing (nothing is written).
    """
    import papermill as pm

    source = notebook_path(name)
    values = parse_parameters(name, params)
    out = Path(out_dir) if out_dir is not None else REPORTS_DIR
    check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    ipynb, html = out / f"{name}.ipynb", out / f"{name}.html"
    tmp_nb = _temp(out, ".ipynb")
    tmp_html = _temp(out, ".html")
    try:
        try:
            pm.execute_notebook(str(source), str(tmp_nb), parameters=values,
                                kernel_name=kernel_name(), cwd=str(NOTEBOOKS_DIR),
                                progress_bar=False,
                                kernel_manager_class=_ipc_kernel_manager())
        except pm.PapermillExecutionError as exc:
            raise ReportFailed(name, exc.exec_count, exc.ename, exc.evalue) from None
        tmp_html.write_text(_to_html(tmp_nb, name), encoding="utf-8")
        os.replace(tmp_nb, ipynb)
        os.replace(tmp_html, html)
    finally:
        tmp_nb.unlink(missing_ok=True)
        tmp_html.unlink(missing_ok=True)
    return html


def _temp(directory: Path, suffix: str) -> Path:
    """A fresh hidden name beside the final file (so the rename stays on one file system)."""
    return directory / f".report-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"


def check_out_dir(out: Path) -> None:
    """Refuse an output directory that is a file, lies under a file or cannot be written."""
    if out.exists() and not out.is_dir():
        raise ReportError("--out-dir", f"{out} is a file, not a directory")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ReportError("--out-dir", f"{out} lies under {parent}, which is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ReportError("--out-dir", f"{parent} is not writable")


def _ipc_kernel_manager() -> type:
    """A kernel manager whose kernel listens on Unix sockets (ZeroMQ IPC), not on TCP,
    and is shut down without a SIGINT.

    Over TCP, ipykernel warns on stderr that its traffic is plain text on a local
    port; IPC sockets live in Jupyter's private runtime directory, so there is
    nothing to warn about and no port another user could reach. jupyter_client
    also interrupts a kernel (SIGINT) before asking it to shut down; once papermill
    has run every cell there is nothing to interrupt, and a SIGINT landing while the
    kernel reads a message logs "KeyboardInterrupt caught in kernel" on stderr. The
    shutdown request alone stops it (SIGTERM, then SIGKILL, if it does not).
    """
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

        async def _async_interrupt_kernel(self) -> None:
            if self.shutting_down:
                return
            await super()._async_interrupt_kernel()

    return IPCKernelManager


def parameter_table(name: str, injected: dict[str, Any]) -> str:
    """Every parameter of notebook ``name`` and its value, as a Markdown table."""
    rows = ["| parameter | value | |", "| --- | --- | --- |"]
    for key, default in notebook_parameters(name).items():
        given = key in injected
        value = injected[key] if given else default
        shown = "null" if value is None else str(value).replace("|", "\\|")
        rows.append(f"| `{key}` | {shown} | {'set with `-p`' if given else 'default'} |")
    return "\n".join(rows)


def present(nb: Any, name: str) -> Any:
    """The executed notebook as the HTML shows it: the parameters cell and papermill's
    injected cell replaced by one parameter table, placed after the cell tagged
    ``answer`` (or where the parameters were, without one); code cells without
    output dropped. ``nb`` is changed in place and returned."""
    import nbformat

    injected = dict(nb.metadata.get("papermill", {}).get("parameters", {}) or {})
    table = nbformat.v4.new_markdown_cell(
        "#### Parameters\n\n" + parameter_table(name, injected)
        + "\n\n`null`: the experiment's own value, or chosen automatically.")
    cells: list[Any] = []
    where: int | None = None
    for cell in nb.cells:
        tags = set(cell.metadata.get("tags", []))
        if tags & {"parameters", "injected-parameters"}:
            if where is None:
                where = len(cells)
            continue
        if cell.cell_type == "code" and not cell.get("outputs") and "answer" not in tags:
            continue
        cells.append(cell)
        if "answer" in tags:
            where = len(cells)
    cells.insert(len(cells) if where is None else where, table)
    nb.cells = cells
    return nb


def _to_html(notebook: Path, name: str) -> str:
    """The HTML of an executed notebook: outputs and Markdown only (see :func:`present`)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = present(nbformat.read(str(notebook), as_version=4), name)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title(nb, name)}})
    return str(body)


def title(nb: Any, name: str) -> str:
    """The page's title: the notebook's first Markdown heading, else its name."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return name
