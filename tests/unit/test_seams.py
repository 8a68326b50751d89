"""The seams between siplab's parts: import direction, layer names, the backend registry.

- ``lab/`` (spec, plan, records, analysis, CLI) imports none of ``twin/``, ``real/``,
  ``loadgen/``: backends come from the ``siplab.backends`` entry points;
- ``twin/`` imports neither ``real/`` nor ``loadgen/``; ``real/`` does not import ``twin/``;
  ``real/`` and ``loadgen/`` do not import each other both ways;
- every layer of the twin has a real module of the same name;
- both shipped backends implement :class:`lab.backend.Backend`, and a backend from
  another package, registered only through its entry point, runs from the CLI.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lab.backend import Backend, Replication, backend, backends, names

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("lab", "twin", "real", "loadgen")

#: What each package may not import (module-level or inside a function alike).
FORBIDDEN = {
    "lab": {"twin", "real", "loadgen"},
    "twin": {"real", "loadgen"},
    "real": {"twin"},
    "loadgen": {"twin"},
}

#: The twin's layers; each has a real counterpart with the same module name.
LAYERS = ("network", "sip", "proxy", "trunk", "media", "ai", "features", "backend")


def _imports(path: Path) -> set[str]:
    """Top-level packages a module imports, anywhere in its body (lazy imports too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                out.add(arg.value.split(".")[0])
    return out


def _package_imports() -> dict[str, dict[str, set[str]]]:
    """package -> module path -> the siplab packages it imports."""
    return {pkg: {str(p.relative_to(ROOT)): _imports(p) & set(PACKAGES) - {pkg}
                  for p in sorted((ROOT / pkg).rglob("*.py"))}
            for pkg in PACKAGES}


def test_imports_point_downward_only() -> None:
    found = _package_imports()
    bad = [f"{mod} imports {sorted(imps & FORBIDDEN[pkg])}"
           for pkg, mods in found.items() for mod, imps in mods.items()
           if imps & FORBIDDEN[pkg]]
    assert not bad, "\n".join(bad)
    real_uses_loadgen = any("loadgen" in i for i in found["real"].values())
    loadgen_uses_real = any("real" in i for i in found["loadgen"].values())
    assert not (real_uses_loadgen and loadgen_uses_real), "real/ and loadgen/ import each other"


def test_import_walker_sees_lazy_imports(tmp_path: Path) -> None:
    """The walker itself: a function-level import and import_module are found."""
    mod = tmp_path / "m.py"
    mod.write_text("import os\ndef f():\n    from twin.model import Twin\n"
                   "    import importlib\n    importlib.import_module('real.backend')\n")
    assert {"twin", "real", "os"} <= _imports(mod)


@pytest.mark.parametrize("layer", LAYERS)
def test_every_twin_layer_has_a_real_module(layer: str) -> None:
    assert (ROOT / "twin" / f"{layer}.py").is_file()
    assert (ROOT / "real" / f"{layer}.py").is_file(), f"real/{layer}.py is missing"


def test_registry_has_both_backends_implementing_the_protocol() -> None:
    assert {"twin", "real"} <= set(names())
    found = backends()
    for name in ("twin", "real"):
        impl = found[name]
        assert isinstance(impl, Backend) and impl.name == name
    assert found["twin"].parallel and not found["real"].parallel


def test_runner_and_cli_never_branch_on_a_backend_name() -> None:
    for mod in ("lab/runner.py", "lab/cli.py"):
        src = (ROOT / mod).read_text()
        for name in ('"twin"', '"real"', "'twin'", "'real'"):
            tree = ast.parse(src)
            compares = [n for n in ast.walk(tree) if isinstance(n, ast.Compare)
                        and any(isinstance(c, ast.Constant) and repr(c.value) in
                                (name, name.replace('"', "'"))
                                for c in [n.left, *n.comparators])]
            assert not compares, f"{mod} compares against {name}"


def test_unknown_backend_names_the_option() -> None:
    from lab.errors import SpecError

    with pytest.raises(SpecError, match="--backend"):
        backend("no-such-backend")


PLUGIN = '''
"""A third backend from its own package: every call answered after a fixed hold."""
import pandas as pd

from lab.backend import Replication


class EchoBackend:
    name = "echo"
    parallel = True

    def check(self, exp, plans, *, force=False):
        return None

    def run(self, exp, replication, plan, *, progress=None, journal=None):
        # integer columns are required; floats it does not observe may be left out (NaN)
        rows = [dict(call_id=c.call_id, scenario=c.scenario, source_ip=c.source_ip,
                     start_s=c.start_s, outcome="answered", final_code=200, invite_tx=1,
                     turns=0, setup_ms=50.0, duration_s=1.0, end_s=c.start_s + 1.05)
                for c in plan]
        calls = pd.DataFrame(rows)
        return Replication(calls=calls, turns=pd.DataFrame(), steps=pd.DataFrame(),
                           timeseries=pd.DataFrame(), facts={"wall_s": 0.0})
'''


def test_entry_point_backend_from_another_package_runs(tmp_path: Path) -> None:
    """A backend registered only by its package's entry point runs from the CLI."""
    site = tmp_path / "site"
    (site / "echo_stack").mkdir(parents=True)
    (site / "echo_stack" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    dist = site / "echo_stack-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-stack\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[siplab.backends]\necho = echo_stack:EchoBackend\n")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    exp = ROOT / "lab" / "experiments" / "loopback-small.yaml"
    res = subprocess.run([sys.executable, "-m", "lab.cli", "run", str(exp), "--backend", "echo",
                          "--out", str(out)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "echo"
    import pyarrow.parquet as pq

    calls = pq.read_table(out / "calls.parquet").to_pandas()
    assert len(calls) > 0 and set(calls["outcome"]) == {"answered"}
    assert summary["setup_ms"]["p50"] == 50.0 and summary["setup_ms"]["count"] > 0
    assert (calls["setup_ms"] == 50.0).all() and calls["mouth_to_ear_ms"].isna().all()
    from lab.records import CALL_COLUMNS

    assert list(calls.columns) == list(CALL_COLUMNS)


def test_replication_is_the_one_result_type() -> None:
    import dataclasses

    fields = [f.name for f in dataclasses.fields(Replication)]
    assert fields[:4] == ["calls", "turns", "steps", "timeseries"]


HEAVY = {"numpy", "pandas", "scipy", "simpy", "pyarrow", "matplotlib", "pydantic", "yaml",
         "tqdm", "twin", "real", "loadgen"}


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["erlang-b", "--erlangs", "10", "--channels", "12"],
    ["erlang-c", "--erlangs", "10", "--agents", "12", "--mean-service-ms", "200"],
    ["emodel", "--codec", "pcmu", "--delay-ms", "50", "--loss", "0.01"],
])
def test_quick_commands_load_no_heavy_module(argv: list[str]) -> None:
    """The analytic commands and --help answer without importing numpy, pandas, SimPy
    or a backend (imports were all of their 1.2-1.4 s); ``make bench`` times them."""
    code = ("import sys\nfrom lab.cli import main\n"
            f"try:\n    rc = main({argv!r})\nexcept SystemExit as e:\n    rc = e.code\n"
            "print(rc, sorted({m.split('.')[0] for m in sys.modules}))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    rc, mods = res.stdout.strip().splitlines()[-1].split(" ", 1)
    assert rc == "0", res.stderr
    assert not set(json.loads(mods.replace("'", '"'))) & HEAVY
