"""Kamailio's ratelimit answers 503 with Retry-After once the INVITE rate passes the limit.

The real counterpart of the twin's RFC 7415 rate control
(``deployment.proxy.overload_control: {kind: rate, limit_cps: X}``, :mod:`real.proxy`):
a SIPp caller first stays below the limit (every call answered), then sends three
times the limit for three seconds (the excess refused ``503 Overloaded``, the rest
answered). Loopback only, bounded: at most 200 calls and about 15 s.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lab.errors import SpecError
from lab.proc.ports import free_udp_port
from lab.spec import validate
from loadgen.sipp import SippProcess, sipp_binary
from real.agent import SippAgent
from real.proxy import Kamailio, overload_defines
from tests.conftest import missing

LIMIT_CPS = 20

#: A caller that takes either answer: 200 (ACK, BYE along the Record-Route set) or 503
#: (ACK), logging which one (its messages go to ``<name>.msg``).
UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="siplab overload caller">
  <send retrans="500">
    <![CDATA[

      INVITE sip:agent@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:agent@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:caller@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 1 1 IN IP[local_ip_type] [local_ip]
      s=siplab
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="503" optional="true" next="refused">
    <action><log message="refused [call_number]"/></action>
  </recv>
  <recv response="200" rrs="true">
    <action><log message="answered [call_number]"/></action>
  </recv>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:agent@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      [routes]
      Contact: <sip:caller@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:agent@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      [routes]
      Contact: <sip:caller@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true" next="done"/>
  <label id="refused"/>
  <send>
    <![CDATA[

      ACK sip:agent@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:agent@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <label id="done"/>
</scenario>
"""


def place_calls(workdir: Path, name: str, target: str, rate_cps: int, calls: int,
                taken: set[int]) -> tuple[list[str], list[str]]:
    """Place ``calls`` calls at ``rate_cps`` with SIPp: the log lines (one per call) and
    the 503 responses it received, each as text."""
    scenario = workdir / "uac_overload.xml"
    scenario.write_text(UAC)
    log = workdir / f"{name}_calls.log"
    ports: list[int] = []
    for _ in range(3):
        ports.append(free_udp_port(avoid=taken | set(ports)))
    sipp = SippProcess(scenario, workdir, name, local_port=ports[0], control_port=ports[1],
                       media_port=ports[2], remote=target, timeout_s=20.0,
                       extra_args=["-r", str(rate_cps), "-m", str(calls), "-l", str(calls),
                                   "-trace_logs", "-log_file", str(log),
                                   "-trace_msg", "-message_file", str(workdir / f"{name}.msg")])
    sipp.start()
    try:
        assert sipp.proc is not None
        sipp.proc.wait(calls / rate_cps + 8.0)  # every call ends well within this
    finally:
        sipp.stop()
    lines = log.read_text().splitlines() if log.exists() else []
    msgs = (workdir / f"{name}.msg").read_text(errors="replace")
    blocks = re.split(r"^-{20,}.*$", msgs, flags=re.M)
    return lines, [b for b in blocks if re.search(r"^SIP/2.0 503 ", b, re.M)]


@pytest.mark.real
@pytest.mark.usefixtures("kamailio_only")
def test_kamailio_answers_503_beyond_the_rate_limit(
        tmp_path: Path, leftovers: Callable[[Path], list[Any]]) -> None:
    if sipp_binary() is None:
        missing("sipp not found: apt-get install sip-tester")
    exp = validate({"deployment": {
        "trunk": {"channels": 1000}, "proxy": {"workers": 2, "overload_control": {
            "kind": "rate", "limit_cps": LIMIT_CPS}}}})
    taken: set[int] = set()
    agent = SippAgent.on_free_ports(exp.deployment.agent, tmp_path, taken, timeout_s=40.0,
                                    name="agent")
    proxy: Kamailio | None = None
    try:
        agent.start()
        proxy = Kamailio(exp.deployment, tmp_path, sip_port=free_udp_port(avoid=taken),
                         agent_port=agent.sip_port)
        taken.add(proxy.sip_port)
        proxy.start()
        target = f"127.0.0.1:{proxy.sip_port}"
        below, none = place_calls(tmp_path, "below", target, LIMIT_CPS // 2, LIMIT_CPS,
                                  taken)
        time.sleep(1.1)  # a fresh 1 s interval of the TAILDROP counter
        above, got_503 = place_calls(tmp_path, "above", target, 3 * LIMIT_CPS,
                                     9 * LIMIT_CPS, taken)
    finally:
        if proxy is not None:
            proxy.stop()
        agent.stop()
    assert sorted(line.split()[0] for line in below) == ["answered"] * LIMIT_CPS, below[:5]
    assert none == []
    answered = [line for line in above if line.startswith("answered")]
    refused = [line for line in above if line.startswith("refused")]
    assert len(answered) + len(refused) == 9 * LIMIT_CPS, above[:5]
    # three seconds of sending touch at most four 1 s intervals of LIMIT_CPS each
    assert 2 * LIMIT_CPS <= len(answered) <= 4 * LIMIT_CPS + 2
    assert len(refused) >= 5 * LIMIT_CPS - 2
    assert len(got_503) >= len(refused)  # (a retransmitted INVITE gets another)
    assert all(re.search(r"^Retry-After: 1\s*$", m, re.M) and re.search(
        r"^X-Siplab-Rejected-By: proxy.overload_control\s*$", m, re.M) for m in got_503)
    assert leftovers(tmp_path) == []


def test_the_config_has_the_ratelimit_pipe_only_with_rate_control() -> None:
    rate = validate({"deployment": {"proxy": {"overload_control": {
        "kind": "rate", "limit_cps": 37.4}}}}).deployment.proxy
    assert overload_defines(rate) == ["#!define WITH_RATELIMIT", "#!define RL_LIMIT 37",
                                      '#!define RL_PIPE "0:TAILDROP:37"']
    assert overload_defines(validate({}).deployment.proxy) == []
    loss = validate({"deployment": {"proxy": {"overload_control": {"kind": "loss"}}}})
    with pytest.raises(SpecError, match=r"^deployment\.proxy\.overload_control\.kind: "):
        overload_defines(loss.deployment.proxy)
