"""``siplab sut``: the loopback system under test alone, in the foreground.

Each test starts ``siplab sut`` as a subprocess in its own session, as a user would,
reads the one JSON line it prints once everything is up, and then: places a SIPp
call through the printed URI, and stops the SUT by SIGTERM (exit 0) or Ctrl-C
(SIGINT to its process group, exit 130); every process it started is gone after.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.proc.ports import free_udp_port
from tests.conftest import hear_ctrl_c
from tests.real.conftest import descendants, processes_of, still_running

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("real_stack"),
              pytest.mark.timeout(120)]
SIPLAB = Path(sys.executable).with_name("siplab")
EXPERIMENT = {
    "name": "sut", "seed": 5, "duration_s": 30,
    "scenarios": {"talk": {"hold_s": 1}},
    "deployment": {"trunk": {"channels": 8}, "proxy": {"workers": 2}},
}
READY_S = 60.0  # generous: two shared cores, other suites running


class Sut:
    """``siplab sut`` of :data:`EXPERIMENT` in its own session."""

    def __init__(self, tmp: Path) -> None:
        exp = tmp / "sut.yaml"
        exp.write_text(yaml.safe_dump(EXPERIMENT))
        self.workdir = tmp / "work"
        self.proc = subprocess.Popen([str(SIPLAB), "sut", str(exp), "--workdir",
                                      str(self.workdir)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True,
                                     preexec_fn=hear_ctrl_c)

    def line(self, timeout_s: float = READY_S) -> dict[str, Any]:
        """The JSON line, once the SUT is up."""
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            assert sel.select(timeout_s), "siplab sut printed nothing in time"
        text = self.proc.stdout.readline().decode()
        assert text.endswith("\n"), f"no whole line: {text!r}; stderr: {self.stderr()}"
        info: dict[str, Any] = json.loads(text)
        return info

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def stop(self, sig: int, group: bool = False) -> tuple[int, list[str]]:
        """Send ``sig``; the exit status and what is still running of the SUT after."""
        procs = descendants(self.proc.pid)
        assert procs, "the SUT started no processes"
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        time.sleep(0.3)
        return code, still_running(procs) + [c for _, c in processes_of(self.workdir)]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def sut(tmp_path: Path) -> Any:
    s = Sut(tmp_path)
    yield s
    s.kill()


# SIPp's built-in uac ignores Record-Route; through a proxy the ACK and BYE must follow it
UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac through a record-routing proxy">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0
]]></send>
  <pause milliseconds="200"/>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200" crlf="true"/>
</scenario>
"""


def sipp_call(uri: str, tmp: Path, calls: int = 2) -> subprocess.CompletedProcess[bytes]:
    """SIPp UAC (:data:`UAC`) placing ``calls`` calls to ``uri``; exit 0 when all succeed."""
    user, _, hostport = uri.removeprefix("sip:").partition("@")
    port = free_udp_port(None)
    ctl = free_udp_port(None, avoid={port})
    media = free_udp_port(None, avoid={port, ctl})
    scenario = tmp / "uac_routed.xml"
    scenario.write_text(UAC)
    return subprocess.run(
        ["sipp", "-sf", str(scenario), hostport, "-s", user, "-m", str(calls), "-l", str(calls),
         "-r", "10", "-i", "127.0.0.1", "-p", str(port), "-cp", str(ctl), "-mp", str(media),
         "-timeout", "20s", "-timeout_error", "-nostdin", "-skip_rlimit",
         "-trace_err", "-error_file", str(tmp / "uac_errors.log")],
        cwd=tmp, capture_output=True, timeout=40)


def test_sut_prints_its_line_takes_a_call_and_sigterm_leaves_nothing(sut: Sut,
                                                                     tmp_path: Path) -> None:
    info = sut.line()
    assert set(info) >= {"sip_uri", "ports"}
    port = info["ports"]["sip"]
    assert info["sip_uri"] == f"sip:agent@127.0.0.1:{port}"
    assert info["ports"]["agents"] and info["ports"]["control"] > 0
    assert (sut.workdir / "kamailio.cfg").is_file()

    done = sipp_call(info["sip_uri"], tmp_path)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    assert sut.proc.poll() is None  # still serving

    code, left = sut.stop(signal.SIGTERM)
    assert code == 0, sut.stderr()
    assert left == []


def test_ctrl_c_stops_everything_with_130(sut: Sut) -> None:
    sut.line()
    code, left = sut.stop(signal.SIGINT, group=True)  # a terminal's Ctrl-C
    assert code == 130, sut.stderr()
    assert left == []
    assert "interrupted" in sut.stderr()


def test_a_bad_experiment_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**EXPERIMENT, "deployment": {"trunk": {"channels": -3}}}))
    done = subprocess.run([str(SIPLAB), "sut", str(bad)], capture_output=True, timeout=60)
    assert done.returncode == 2
    assert b"deployment.trunk.channels" in done.stderr
    assert done.stdout == b""
