"""Bad input, every command: exit 2, one stderr line naming the key or option, nothing written.

Each case is one row: the command line (``{exp}`` is a small valid experiment file, ``{dir}``
the case's scratch directory, whose other files the row may write first) and a fragment the
one line must contain -- the key path or option first. After the command, the scratch
directory holds exactly what it held before: no run directory, no partial file, no ``runs/``.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from lab.cli import main

BASE = """\
name: small
duration_s: 60
load:
  arrivals: {kind: poisson, rate_cps: 0.5}
scenarios:
  talk:
    hold_s: {dist: exponential, mean: 30}
"""

#: Files a row may need, by name, written into its scratch directory before it runs.
FILES = {
    "empty.yaml": "",
    "comments.yaml": "# nothing but a comment\n",
    "list.yaml": "- name: a\n",
    "scalar.yaml": "just words\n",
    "badyaml.yaml": "name: [unclosed\n",
    "dup.yaml": "name: a\nseed: 1\nseed: 2\n",
    "dupnested.yaml": "deployment:\n  trunk: {channels: 3, channels: 4}\n",
    "replay-neg.yaml": "load:\n  arrivals: {kind: replay, file: neg.csv}\n",
    "replay-unsorted.yaml": "load:\n  arrivals: {kind: replay, file: unsorted.csv}\n",
    "replay-missing.yaml": "load:\n  arrivals: {kind: replay, file: missing.csv}\n",
    "replay-empty.yaml": "load:\n  arrivals: {kind: replay, file: none.csv}\n",
    "replay-nofile.yaml": "load:\n  arrivals: {kind: replay, file: absent.csv}\n",
    "replay-column.yaml": "load:\n  arrivals: {kind: replay, file: neg.csv, column: t}\n",
    "neg.csv": "start_s\n1.0\n-2.0\n3.0\n",
    "unsorted.csv": "start_s\n1.0\n5.0\n3.0\n",
    "missing.csv": "start_s,caller\n1.0,a\n,b\n3.0,c\n",
    "none.csv": "start_s\n",
    "afile": "not a directory\n",
    "e.yaml": BASE,
}

RUN = [
    # ---- the experiment file itself
    ("run {dir}/absent.yaml", "experiment file not found"),
    ("run {dir}", "is a directory, not a YAML file"),
    ("run {dir}/empty.yaml", "the experiment file is empty"),
    ("run {dir}/comments.yaml", "the experiment file is empty"),
    ("run {dir}/list.yaml", "the experiment must be a YAML mapping, got a list"),
    ("run {dir}/scalar.yaml", "the experiment must be a YAML mapping, got a str"),
    ("run {dir}/badyaml.yaml", "not valid YAML"),
    ("run {dir}/dup.yaml", "seed: given twice (lines 2 and 3)"),
    ("run {dir}/dupnested.yaml", "deployment.trunk.channels: given twice"),
    # ---- replay files
    ("run {dir}/replay-neg.yaml", "load.arrivals.file: replay: neg.csv, column 'start_s': "
                                  "row 2 is negative"),
    ("run {dir}/replay-unsorted.yaml", "load.arrivals.file: replay: unsorted.csv, column "
                                       "'start_s': not sorted (row 3"),
    ("run {dir}/replay-missing.yaml", "load.arrivals.file: replay: missing.csv, column "
                                      "'start_s': row 2 has no time"),
    ("run {dir}/replay-empty.yaml", "load.arrivals.file: replay: none.csv, column 'start_s' has "
                                    "no arrival times"),
    ("run {dir}/replay-nofile.yaml", "load.arrivals.file: replay: file not found: absent.csv"),
    ("run {dir}/replay-column.yaml", "load.arrivals.file: column 't' not in neg.csv"),
    # ---- keys and values
    ("run {exp} --set deployment.trunk.channels=0",
     "deployment.trunk.channels: must be an integer > 0, got 0"),
    ("run {exp} --set deployment.trunk.channels=2.5", "deployment.trunk.channels: must be an "
                                                      "integer"),
    ("run {exp} --set deployment.trunk.channels=true", "deployment.trunk.channels: must be an "
                                                       "integer"),
    ("run {exp} --set deployment.trunk=7", "deployment.trunk: must be a mapping, got 7"),
    ("run {exp} --set deployment.trunk.channels.x=1",
     "deployment.trunk.channels: must be an integer, got {{'x': 1}}"),
    ("run {exp} --set name.x=1", "name.x: cannot set a key inside a non-mapping"),
    ("run {exp} --set nosuch=1", "nosuch: unknown key"),
    ("run {exp} --set seed=-1", "seed: must be an integer >= 0, got -1"),
    ("run {exp} --set duration_s=0", "duration_s: must be a number > 0, got 0"),
    ("run {exp} --set duration_s=.inf", "duration_s: must be a finite number"),
    ("run {exp} --set duration_s=1.0e12", "duration_s: must be a number <= 2678400"),
    ("run {exp} --set warmup_s=60", "warmup_s: must be less than duration_s"),
    ("run {exp} --set name=has/slash", "name: must match"),
    ("run {exp} --set replications=0", "replications: must be an integer > 0"),
    ("run {exp} --set load.arrivals.kind=tidal", "load.arrivals.kind: unknown kind 'tidal'"),
    ("run {exp} --set load.arrivals.rate_cps=1.0e6",
     "load.arrivals: about 60,000,000 calls per replication, over the limit of 2,000,000"),
    ("run {exp} --set load.arrivals.rate_cps=.nan", "load.arrivals.rate_cps: must be a finite "
                                                    "number"),
    ("run {exp} --set 'load.mix=[{{scenario: ghost}}]'", "load.mix.0.scenario: unknown "
                                                         "scenario 'ghost'"),
    ("run {exp} --set load.mix.0.scenario=ghost", "load.mix: must be a list"),
    ("run {exp} --set load.sources.count=300", "load.sources.count: 300 sources do not fit"),
    ("run {exp} --set load.sources.cidr=nonsense", "load.sources.cidr: not a network"),
    ("run {exp} --set scenarios.talk.turns=-1", "scenarios.talk.turns: must be an integer >= 0,"
                                                " got -1"),
    ("run {exp} --set scenarios.talk.turns=many", "scenarios.talk.turns: must be an integer"),
    ("run {exp} --set scenarios.talk.turns=1000000",
     "scenarios: about 30,000,000 AI turns per replication, over the limit of 10,000,000"),
    ("run {exp} --set 'scenarios.talk.turns={{dist: gamma}}'",
     "scenarios.talk.turns: gamma: needs 'a'"),
    ("run {exp} --set 'scenarios.talk.hold_s={{dist: gamma, mean: 30}}'",
     "scenarios.talk.hold_s: gamma: unknown parameter 'mean' (its parameters: a, loc, scale)"),
    ("run {exp} --set 'scenarios.talk.hold_s={{dist: gamma, a: -1}}'",
     "scenarios.talk.hold_s: gamma: parameters {{'a': -1}} are outside its domain"),
    ("run {exp} --set 'scenarios.talk.hold_s={{dist: gamma, a: two}}'",
     "scenarios.talk.hold_s: gamma: 'a' must be a finite number, got 'two'"),
    ("run {exp} --set 'scenarios.talk.hold_s={{dist: lognormal, median: 5, p95: 2}}'",
     "scenarios.talk.hold_s: lognormal: p95 must be greater than median"),
    ("run {exp} --set 'scenarios.talk.hold_s={{dist: exponential, mean: 3, mean: 4}}'",
     "scenarios.talk.hold_s.mean: given twice"),
    ("run {exp} --set scenarios.talk.hold_s=-5", "scenarios.talk.hold_s: must be a finite "
                                                 "number >= 0, got -5"),
    ("run {exp} --set deployment.network.loss=-0.1", "deployment.network.loss: must be a "
                                                     "number >= 0"),
    ("run {exp} --set deployment.sip.transport=sctp", "deployment.sip.transport: must be one "
                                                      "of"),
    ("run {exp} --set real.sip_port=70000", "real.sip_port: must be an integer <= 65535, got "
                                            "70000"),
    ("run {exp} --set real.sip_port=0", "real.sip_port: must be an integer > 0, got 0"),
    ("run {exp} --set pricebook=nosuch", "pricebook"),
    ("run {exp} --set novalue", "novalue: --set needs KEY=VALUE"),
    ("run {exp} --set ..=3", "..: not a dotted key path"),
    ("run {exp} --set 'seed=[1'", "seed: value is not a YAML scalar"),
    # ---- options
    ("run {exp} --jobs 0", "--jobs: must be an integer > 0, got 0"),
    ("run {exp} --jobs -2", "--jobs: must be an integer > 0, got -2"),
    ("run {exp} --jobs two", "argument --jobs: invalid int value: 'two'"),
    ("run {exp} --seed -1", "--seed: must be an integer >= 0, got -1"),
    ("run {exp} --replications 0", "--replications: must be an integer > 0"),
    ("run {exp} --backend quantum", "--backend: unknown backend"),
    ("run {exp} --out {dir}/afile", "--out: {dir}/afile is a file, not a directory"),
    ("run {exp} --out {dir}/afile/sub/run", "--out: {dir}/afile/sub/run lies under "
                                            "{dir}/afile, which is a file"),
    ("run {exp} --out /proc/siplab-cannot/run", "--out: cannot write in /proc"),
    ("run {exp} --out {dir}", "--out: {dir} exists and is not empty"),
    ("run {exp} --frobnicate", "unrecognized arguments: --frobnicate"),
    ("run", "the following arguments are required: experiment"),
]

OTHER = [
    ("", "the following arguments are required: command"),
    ("bogus", "argument command: invalid choice: 'bogus'"),
    ("erlang-b --channels 0 --erlangs 3", "--channels: must be an integer > 0"),
    ("erlang-b --channels -1 --erlangs 3", "--channels: must be an integer > 0"),
    ("erlang-b --channels 3 --erlangs -1", "--erlangs: must be a finite number >= 0"),
    ("erlang-b --channels 3 --erlangs nan", "--erlangs: must be a finite number >= 0, got nan"),
    ("erlang-b --channels 3 --erlangs inf", "--erlangs: must be a finite number >= 0, got inf"),
    ("erlang-b --channels 2.5 --erlangs 1", "argument --channels: invalid int value: '2.5'"),
    ("erlang-b --erlangs 1", "the following arguments are required: --channels"),
    ("erlang-c --agents 3 --erlangs 3 --mean-service-ms 100", "--erlangs: 3 erlangs on 3 agents "
                                                             "is an unstable queue"),
    ("erlang-c --agents 3 --erlangs 7.5 --mean-service-ms 100", "--erlangs: 7.5 erlangs on 3 "
                                                               "agents is an unstable queue"),
    ("erlang-c --agents 0 --erlangs 1 --mean-service-ms 100", "--agents: must be an integer > 0"),
    ("erlang-c --agents 3 --erlangs 1 --mean-service-ms 0", "--mean-service-ms: must be a finite"
                                                           " number > 0"),
    ("erlang-c --agents 3 --erlangs 1 --mean-service-ms -5", "--mean-service-ms: must be a "
                                                            "finite number > 0"),
    ("erlang-c --agents 3 --erlangs nan --mean-service-ms 5", "--erlangs: must be a finite "
                                                             "number"),
    ("erlang-c --agents 3 --erlangs 1", "the following arguments are required: "
                                        "--mean-service-ms"),
    ("emodel --delay-ms 10 --loss 3", "--loss: must be a fraction in [0, 1], got 3.0"),
    ("emodel --delay-ms 10 --loss -0.1", "--loss: must be a fraction in [0, 1]"),
    ("emodel --delay-ms 10 --loss nan", "--loss: must be a fraction in [0, 1], got nan"),
    ("emodel --delay-ms -1 --loss 0", "--delay-ms: must be a finite number >= 0, got -1.0"),
    ("emodel --delay-ms inf --loss 0", "--delay-ms: must be a finite number >= 0, got inf"),
    ("emodel --delay-ms 1 --loss 0 --burst-r 0", "--burst-r: must be a finite number > 0"),
    ("emodel --codec nope --delay-ms 1 --loss 0", "--codec: unknown codec 'nope'"),
    ("emodel --codec G722 --delay-ms 1 --loss 0", "--codec: 'G722' is a wideband codec"),
    ("emodel --loss 0", "the following arguments are required: --delay-ms"),
    ("report nosuch", "nosuch"),
    ("report capacity -p nosuch 3", "nosuch"),
    ("report capacity -p points", "argument -p/--parameter: expected 2 arguments"),
    ("report capacity -p points 4 -p points 5", "-p points: given twice ('4' and '5')"),
    ("calibrate {dir}/nosuch", "RUN_DIR: not a directory"),
    ("sut {dir}/nosuch.yaml", "experiment file not found"),
    ("burst {dir}/nosuch.yaml --users 2 --spawn-rate 1 --run-time 5",
     "experiment file not found"),
    ("burst {exp} --users 0 --spawn-rate 1 --run-time 5", "--users: must be an integer > 0"),
    ("sweep {exp} --grid nosuch.key=1 --out {dir}/x.parquet", "nosuch: unknown key"),
    ("sweep {dir}/nosuch.yaml --grid deployment.trunk.channels=1,2 --out {dir}/x.parquet",
     "experiment file not found"),
    ("capacity {exp} --slo bogus<=1", "--slo: unknown metric 'bogus'"),
    ("capacity {dir}/nosuch.yaml --slo blocking<=0.01", "experiment file not found"),
    ("nightly {dir}/nosuch.yaml", "SUITE: no suite file or built-in named"),
    ("calibrate {dir}", "RUN_DIR: {dir} is not a run's results (no experiment.resolved.yaml"),
]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*"))}


def _exit(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        return int(exc.code or 0)


@pytest.mark.parametrize(("line", "says"), RUN + OTHER, ids=[c[0] or "(none)" for c in RUN + OTHER])
def test_bad_input_exit_2_one_line_naming_it_nothing_written(
        line: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "case"
    work.mkdir()
    for name, text in FILES.items():
        (work / name).write_text(text)
    monkeypatch.chdir(work)  # a default runs/ directory would land here
    fill = {"exp": str(work / "e.yaml"), "dir": str(work)}
    argv = [a.format(**fill) for a in shlex.split(line)]
    if argv[:1] == ["run"] and "--out" not in argv and len(argv) > 1:
        argv += ["--out", str(work / "out")]
    argv += ["--quiet"] if argv[:1] == ["run"] and len(argv) > 1 else []
    before = _tree(work)
    code = _exit(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("siplab: ")
    assert says.format(**fill) in lines[0]
    assert out == ""
    assert _tree(work) == before


def test_the_table_is_large_and_covers_every_command() -> None:
    from lab.cli import COMMANDS

    assert len(RUN) + len(OTHER) >= 60
    covered = {line.split()[0] for line, _ in RUN + OTHER if line}
    assert set(COMMANDS) <= covered
