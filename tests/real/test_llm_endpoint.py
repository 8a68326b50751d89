"""The agent's external LLM endpoint failing, and who may see its key.

A real HTTP server on 127.0.0.1 plays the endpoint: it answers 401, 503, sleeps past
the agent's timeout, returns JSON without a reply, and then answers properly. Each
failed request must make its turn ``failed`` with the cause, be counted in
``summary.json`` (``ai.llm.errors``) and said once on stderr -- never hidden behind
the canned reply. The same real voice run shows that the key reaches only the voice
agents: every child's ``/proc/<pid>/environ`` is read while the run goes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lab.runner import run_experiment
from lab.spec import validate
from real import reply
from real.agent import voice_agent_available
from real.credentials import is_secret, withheld
from tests.conftest import hear_ctrl_c
from tests.real.conftest import _missing as missing
from tests.real.conftest import cmdline, descendants

KEY = "sk-test-7f3a9c"  # what the endpoint expects as the bearer token
TRUNK_PASSWORD_ENV = "SIPLAB_TRUNK_PASSWORD"
TIMEOUT_S = 1.0
FAILURES = ["http_401", "http_503", "timeout", "bad_json"]  # the first four requests


class Endpoint:
    """An LLM endpoint on 127.0.0.1 whose n-th request gets ``behaviours[n]`` (then OK)."""

    def __init__(self, behaviours: list[str]) -> None:
        self.behaviours = list(behaviours)
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint.lock:
                    n = len(endpoint.requests)
                    endpoint.requests.append({"body": body,
                                              "auth": self.headers.get("Authorization")})
                how = endpoint.behaviours[n] if n < len(endpoint.behaviours) else "ok"
                try:
                    if how.startswith("http_"):
                        self.send_error(int(how[5:]))
                        return
                    if how == "timeout":
                        time.sleep(TIMEOUT_S + 1.5)
                    payload = (b"{not json" if how == "bad_json"
                               else json.dumps({"reply": "Your order has shipped."}).encode())
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the agent gave up waiting (the timeout case)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/reply"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Endpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("how", FAILURES)
def test_each_endpoint_failure_is_named(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """http_reply raises on each failure and error_cause names it (no SIP stack needed)."""
    monkeypatch.setenv(reply.TIMEOUT_ENV, str(TIMEOUT_S))
    with Endpoint([how]) as ep:
        with pytest.raises(Exception) as info:
            reply.http_reply(ep.url, "where is my order", "cid", 0)
        assert reply.error_cause(info.value) == how
        assert reply.http_reply(ep.url, "where is my order", "cid", 1) == (
            "Your order has shipped.")


def test_connection_refused_is_named() -> None:
    with Endpoint([]) as ep:
        url = ep.url
    with pytest.raises(urllib.error.URLError) as info:
        reply.http_reply(url, "hello", "cid", 0, timeout=2.0)
    assert reply.error_cause(info.value) == "connect_error"


def test_withheld_takes_secrets_out_and_puts_them_back(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    monkeypatch.setenv(reply.KEY_ENV, KEY)
    monkeypatch.setenv(TRUNK_PASSWORD_ENV, "hunter2")
    monkeypatch.setenv("SIPLAB_AGENT_LLM_URL", "http://127.0.0.1:9/")
    with withheld() as secrets:
        assert secrets == {reply.KEY_ENV: KEY, TRUNK_PASSWORD_ENV: "hunter2"}
        assert reply.KEY_ENV not in os.environ and TRUNK_PASSWORD_ENV not in os.environ
        assert "SIPLAB_AGENT_LLM_URL" in os.environ  # not a secret
    assert os.environ[reply.KEY_ENV] == KEY and os.environ[TRUNK_PASSWORD_ENV] == "hunter2"
    assert is_secret("AWS_SECRET") and is_secret("GITHUB_TOKEN") and not is_secret("PATH")


def need_voice_stack() -> None:
    """Kamailio, SIPp, pjsua2 and the voice agent's parts, or skip (fail under CI)."""
    from real.backend import RealUnavailable, check_available

    try:
        check_available()
    except RealUnavailable as exc:
        missing(str(exc))
    if (why := voice_agent_available()) is not None:
        missing(why)


class ChildEnvirons:
    """Reads ``/proc/<pid>/environ`` of every descendant of this process, as they appear."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[str, dict[str, str]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid, _start in descendants(os.getpid()):
                # A child caught between fork and exec still shows this process's command
                # line and environment: read it again whenever its command line changes,
                # so what is kept is what the exec'd program got.
                cmd = cmdline(pid)
                if not cmd or (pid in self.seen and self.seen[pid][0] == cmd):
                    continue
                try:
                    raw = Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    continue
                env = dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0")
                           if "=" in kv)
                self.seen[pid] = (cmd, env)  # cmd read first: a later exec is seen next time
            self._stop.wait(0.05)

    def __enter__(self) -> ChildEnvirons:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture(scope="module")
def voice_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One small real voice run (3 calls, 2 turns each) against the failing endpoint."""
    need_voice_stack()
    exp = validate({
        "name": "llm-endpoint", "seed": 5, "duration_s": 3.0, "warmup_s": 0,
        "load": {"arrivals": {"kind": "constant", "rate_cps": 1.0}},
        "scenarios": {"talk": {"turns": 2, "caller_speech_s": 1.2, "agent_speech_s": 1.0}},
        "deployment": {"agent": {"answer_ms": 50}, "ai": {"vad_ms": 300}},
        "real": {"max_calls": 10, "max_duration_s": 60},
    })
    out = tmp_path_factory.mktemp("llm") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv(reply.KEY_ENV, KEY)
    mp.setenv(TRUNK_PASSWORD_ENV, "hunter2")
    mp.setenv(reply.TIMEOUT_ENV, str(TIMEOUT_S))
    try:
        with Endpoint(FAILURES) as ep, ChildEnvirons() as envs:
            mp.setenv(reply.URL_ENV, ep.url)
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                summary = run_experiment(exp, backend="real", out_dir=out,
                                         show_progress=False)
        yield {"out": out, "summary": json.loads(Path(summary).read_text()),
               "turns": pd.read_parquet(out / "turns.parquet"), "stderr": err.getvalue(),
               "requests": ep.requests, "envs": envs.seen,
               "key_after": os.environ.get(reply.KEY_ENV)}
    finally:
        mp.undo()


@pytest.mark.real
@pytest.mark.timeout(120)
def test_failed_llm_requests_fail_their_turns_with_the_cause(voice_run: dict[str, Any]
                                                              ) -> None:
    turns = voice_run["turns"]
    assert len(turns) == 6, turns
    assert len(voice_run["requests"]) == 6  # one request per turn, none retried
    failed = turns[turns.failed]
    assert sorted(failed.cause) == sorted(f"llm.{c}" for c in FAILURES), turns[
        ["call_id", "turn", "failed", "cause"]]
    ok = turns[~turns.failed]
    assert (ok.cause == "").all() and ok.voice_to_voice_ms.notna().all()
    # the canned reply was still spoken: the caller heard every turn's reply
    assert turns.voice_to_voice_ms.notna().all()
    timed_out = turns[turns.cause == "llm.timeout"]
    assert timed_out.llm_ms.between(TIMEOUT_S * 1e3, TIMEOUT_S * 1e3 + 500).all()


@pytest.mark.real
@pytest.mark.timeout(120)
def test_llm_errors_are_counted_in_the_summary_and_said_once(voice_run: dict[str, Any]
                                                             ) -> None:
    assert voice_run["summary"]["ai"]["llm"]["errors"] == {c: 1 for c in FAILURES}
    lines = [x for x in voice_run["stderr"].splitlines() if "LLM endpoint" in x]
    assert lines == ["siplab: warning: 4 of 6 AI turns failed at the LLM endpoint and got "
                     "the canned reply (bad_json: 1, http_401: 1, http_503: 1, timeout: 1)"]


@pytest.mark.real
@pytest.mark.timeout(120)
def test_the_key_reaches_only_the_voice_agents(voice_run: dict[str, Any]) -> None:
    envs: dict[int, tuple[str, dict[str, str]]] = voice_run["envs"]
    agents = {pid: env for pid, (cmd, env) in envs.items() if "real.voice_agent" in cmd}
    others = {pid: (cmd, env) for pid, (cmd, env) in envs.items() if pid not in agents}
    cmds = " ".join(cmd for cmd, _ in others.values())
    for part in ("kamailio", "loadgen.callers.worker", "real.network"):
        assert part in cmds, f"no {part} among the children seen: {cmds}"
    assert agents, "no voice agent seen"
    leaked = [cmd for cmd, env in others.values() if reply.KEY_ENV in env]
    assert not leaked, f"the LLM key is in the environment of {leaked}"
    assert all(env.get(reply.KEY_ENV) == KEY for env in agents.values())
    trunk = [cmd for cmd, env in envs.values() if TRUNK_PASSWORD_ENV in env]
    assert not trunk, f"the trunk password reached {trunk}"
    # the agent used it, and the coordinator still has it after the run
    assert {r["auth"] for r in voice_run["requests"]} == {f"Bearer {KEY}"}
    assert voice_run["key_after"] == KEY


@pytest.mark.real
@pytest.mark.timeout(120)
def test_an_interrupted_run_still_counts_and_says_its_llm_errors(tmp_path: Path) -> None:
    """Ctrl-C after the first call: the kept turns' failures are in the summary and said."""
    need_voice_stack()
    exp = tmp_path / "exp.yaml"
    exp.write_text(json.dumps({  # JSON is YAML
        "name": "llm-interrupted", "seed": 5, "duration_s": 8.0, "warmup_s": 0,
        "load": {"arrivals": {"kind": "constant", "rate_cps": 0.5}},
        "scenarios": {"talk": {"turns": 2, "caller_speech_s": 1.2, "agent_speech_s": 1.0}},
        "deployment": {"agent": {"answer_ms": 50}, "ai": {"vad_ms": 300}},
        "real": {"max_calls": 10, "max_duration_s": 60}}))
    out = tmp_path / "out"
    with Endpoint(["http_401"] * 100) as ep:
        env = {**os.environ, reply.URL_ENV: ep.url, reply.KEY_ENV: KEY}
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("siplab")), "run", str(exp), "--backend",
             "real", "--out", str(out), "--quiet"], env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                preexec_fn=hear_ctrl_c)
        journal = out / "calls.rep0.jsonl"
        end = time.monotonic() + 60
        while not (journal.exists() and journal.read_text().count("\n") >= 1):
            assert proc.poll() is None and time.monotonic() < end, proc.communicate()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=40)
    assert proc.returncode == 130, err
    turns = pd.read_parquet(out / "turns.parquet")
    n = len(turns)
    assert n >= 2 and (turns.cause == "llm.http_401").all(), turns
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["ai"]["llm"]["errors"] == {"http_401": n}
    said = [x for x in err.splitlines() if "LLM endpoint" in x]
    assert said == [f"siplab: warning: {n} of {n} AI turns failed at the LLM endpoint and got "
                    f"the canned reply (http_401: {n})"], err
