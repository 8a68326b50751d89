"""One pjsua2 caller process (run as ``python -m real.uac_worker``): up to 4 calls.

The pjsua2-python wheel carries at most 4 calls per process (PJSUA_MAX_CALLS) and
its Endpoint is a process singleton, so the real backend runs a pool of these
processes (see :mod:`real.backend`). Each one owns an Endpoint with a null audio
device, a UDP transport and RTP media bound to 127.0.0.1, PCMU as the preferred
codec, and ``threadCnt = 0``: every SIP event and callback is handled on this
process's main thread inside ``libHandleEvents``, between which the command pipe
(stdin) is polled. No other Python thread ever calls pjsua2 (that aborts the process).

Protocol: JSON lines. stdin receives ``{"op": "call", "id", "uri", "hold_s"}`` and
``{"op": "quit"}``; stdout answers ``{"ev": "ready", "port", "pid"}`` once and a
``{"ev": "done", ...}`` per finished call with raw timestamps (``time.monotonic()``,
which is one clock for all processes of the machine).

Measurement comes from the SIP messages themselves: with ``msgLogging`` on, pjsip
logs every datagram it sends or receives, retransmissions included (RFC 3261
section 17.1.1.2: Timer A doubles from T1), and :class:`SipTrace` files each one
under its Call-ID: INVITE transmissions, the first 18x, the final response to the
INVITE (status, reason phrase, the proxy's ``X-Siplab-Rejected-By``), the BYE and
its 200.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import select
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pjsua2 as pj

MAX_CALLS = 4
BYE_WAIT_S = 4.0
POLL_MS = 5  # libHandleEvents timeout: bounds command latency, costs CPU when short
_FIRST = re.compile(
    r"(TX|RX) \d+ bytes (Request|Response) msg ([^/\s]+)(?:/([^/\s]+))?/cseq=(\d+)")
_CALL_ID = re.compile(r"^(?:Call-ID|i)[ \t]*:[ \t]*(\S+)", re.M | re.I)
_STATUS = re.compile(r"^SIP/2\.0 (\d{3}) ?([^\r\n]*)", re.M)
_SERVER = re.compile(r"^Server[ \t]*:[ \t]*([^\r\n]*)", re.M | re.I)
_REJECTED_BY = re.compile(r"^X-Siplab-Rejected-By[ \t]*:[ \t]*(\S+)", re.M | re.I)


@dataclass
class Dialog:
    """SIP facts of one call, taken from the messages on the wire."""

    invite_tx: list[float] = field(default_factory=list)
    first_18x: float | None = None
    final_t: float | None = None
    final_code: int = 0
    reason: str = ""
    rejected_by: str | None = None
    server: str = ""
    bye_tx: float | None = None
    bye_ok: float | None = None


class SipTrace(pj.LogWriter):
    """pjsip's message log, parsed into a :class:`Dialog` per Call-ID."""

    def __init__(self) -> None:
        super().__init__()
        self.dialogs: dict[str, Dialog] = {}

    def write(self, entry: Any) -> None:
        msg: str = entry.msg
        head = _FIRST.search(msg, 0, 300)
        if head is None:
            return
        now = time.monotonic()
        cid = _CALL_ID.search(msg)
        if cid is None:
            return
        d = self.dialogs.setdefault(cid.group(1), Dialog())
        direction, kind, what, method = head.group(1), head.group(2), head.group(3), head.group(4)
        if kind == "Request" and direction == "TX":
            if what == "INVITE":
                d.invite_tx.append(now)
            elif what == "BYE" and d.bye_tx is None:
                d.bye_tx = now
        elif kind == "Response" and direction == "RX" and what.isdigit():
            code = int(what)
            if method == "INVITE":
                if 180 <= code < 190 and d.first_18x is None and d.final_t is None:
                    d.first_18x = now
                elif code >= 200 and d.final_t is None:
                    status = _STATUS.search(msg)
                    tag = _REJECTED_BY.search(msg)
                    d.final_t, d.final_code = now, code
                    d.reason = status.group(2).strip() if status else ""
                    d.rejected_by = tag.group(1) if tag else None
                    server = _SERVER.search(msg)
                    d.server = server.group(1).strip() if server else ""
            elif method == "BYE" and code >= 200 and d.bye_ok is None:
                d.bye_ok = now


class UacCall(pj.Call):
    """One outgoing call; state changes arrive on the main thread (``threadCnt = 0``)."""

    def __init__(self, acc: Any, job: dict[str, Any], finished: list[UacCall]) -> None:
        super().__init__(acc)
        self.job = job
        self.finished = finished
        self.sip_call_id = ""
        self.hangup_at: float | None = None
        self.hung_up = False
        self.disc_t: float | None = None
        self.disc_code = 0
        self.disc_reason = ""

    def onCallState(self, prm: Any) -> None:
        ci = self.getInfo()
        if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED and self.disc_t is None:
            self.disc_t = time.monotonic()
            self.disc_code, self.disc_reason = int(ci.lastStatusCode), str(ci.lastReason)
            self.finished.append(self)


class Worker:
    """The Endpoint, its account and the calls of this process."""

    def __init__(self, name: str, gap_s: float) -> None:
        self.name, self.gap_s = name, gap_s
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = MAX_CALLS
        cfg.uaConfig.userAgent = "siplab-uac"
        self.trace = SipTrace()
        cfg.logConfig.writer = self.trace
        cfg.logConfig.msgLogging = True
        cfg.logConfig.level = 4
        cfg.logConfig.consoleLevel = 4  # the writer receives what the console would
        cfg.logConfig.decor = 0
        self.ep.libInit(cfg)
        tcfg = pj.TransportConfig()
        tcfg.port = 0
        tcfg.boundAddress = tcfg.publicAddress = "127.0.0.1"
        tid = self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        self.port = int(str(self.ep.transportGetInfo(tid).localName).rsplit(":", 1)[1])
        self.ep.libStart()
        self.ep.audDevManager().setNullDev()
        self.ep.codecSetPriority("PCMU/8000/1", 255)
        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:{name}@127.0.0.1:{self.port}"
        acfg.sipConfig.transportId = tid
        acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
        acfg.mediaConfig.transportConfig.publicAddress = "127.0.0.1"
        self.acc = pj.Account()
        self.acc.create(acfg)
        self.calls: list[UacCall] = []
        self.finished: list[UacCall] = []
        self.queue: list[dict[str, Any]] = []
        self.closing: list[tuple[dict[str, Any], str, float, int, str]] = []
        self.last_start = 0.0

    def pump(self, ms: int) -> None:
        self.ep.libHandleEvents(ms)

    def start_due(self) -> None:
        """Start the next queued call, at most one per ``gap_s`` (pjsua2 crashes otherwise)."""
        now = time.monotonic()
        if not self.queue or now - self.last_start < self.gap_s or len(self.calls) >= MAX_CALLS:
            return
        job = self.queue.pop(0)
        self.last_start = now
        call = UacCall(self.acc, job, self.finished)
        try:
            call.makeCall(job["uri"], pj.CallOpParam(True))
            call.sip_call_id = str(call.getInfo().callIdString)
        except pj.Error as exc:
            emit({"ev": "done", "id": job["id"], "error": f"makeCall: {exc.info()}"})
            del call
            return
        self.calls.append(call)

    def hang_up_due(self, force: bool = False) -> None:
        """Send BYE (or CANCEL) for calls whose hold time is over."""
        now = time.monotonic()
        for call in self.calls:
            if call.hung_up or call.disc_t is not None:
                continue
            d = self.trace.dialogs.get(call.sip_call_id)
            if d is not None and d.final_t is not None and 200 <= d.final_code < 300:
                if call.hangup_at is None:
                    call.hangup_at = d.final_t + float(call.job["hold_s"])
                due = now >= call.hangup_at
            else:
                due = False
            if due or force:
                call.hung_up = True
                with contextlib.suppress(pj.Error):
                    call.hangup(pj.CallOpParam(True))

    def report_finished(self, force: bool = False) -> None:
        """Drop the Call of each disconnected call; report it once its BYE is answered.

        pjsua2 signals DISCONNECTED as the BYE leaves, while the BYE transaction
        still runs in the stack: the record waits (up to ``BYE_WAIT_S``) for the 200.
        """
        while self.finished:
            call = self.finished.pop(0)
            self.closing.append((call.job, call.sip_call_id, call.disc_t or 0.0,
                                 call.disc_code, call.disc_reason))
            self.calls.remove(call)
            del call
        now = time.monotonic()
        keep = []
        for item in self.closing:
            job, sip_call_id, disc_t, disc_code, disc_reason = item
            d = self.trace.dialogs.get(sip_call_id, Dialog())
            waiting = d.bye_tx is not None and d.bye_ok is None
            if waiting and not force and now - disc_t < BYE_WAIT_S:
                keep.append(item)
                continue
            self.trace.dialogs.pop(sip_call_id, None)
            emit({
                "ev": "done", "id": job["id"], "error": None,
                "invite_t": d.invite_tx[0] if d.invite_tx else None,
                "invite_tx": len(d.invite_tx), "t18x": d.first_18x, "final_t": d.final_t,
                "final_code": d.final_code or disc_code,
                "reason": d.reason or disc_reason, "rejected_by": d.rejected_by,
                "server": d.server,
                "bye_t": d.bye_tx, "bye_ok_t": d.bye_ok, "disc_t": disc_t,
            })
        self.closing = keep

    def shutdown(self) -> None:
        """Hang up, drain, drop every Call reference, then destroy the library."""
        self.queue.clear()
        self.hang_up_due(force=True)
        end = time.monotonic() + 2.0
        while (self.calls or self.closing) and time.monotonic() < end:
            self.pump(10)
            self.report_finished()
        self.report_finished(force=True)
        self.calls.clear()
        self.finished.clear()
        gc.collect()
        self.acc.shutdown()
        del self.acc
        gc.collect()
        self.ep.libDestroy()


_PROTO_FD = 1  # the protocol's stdout; fd 1 itself goes to stderr (pjlib prints there)


def emit(obj: dict[str, Any]) -> None:
    """Send one JSON line to the coordinator."""
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(_PROTO_FD, data):]


def read_commands(fd: int, buf: bytearray) -> tuple[list[dict[str, Any]], bool]:
    """Commands waiting on ``fd`` (non-blocking) and whether the pipe has closed."""
    out: list[dict[str, Any]] = []
    eof = False
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            eof = True
            break
        buf.extend(chunk)
    while b"\n" in buf:
        line, _, rest = bytes(buf).partition(b"\n")
        buf[:] = rest
        if line.strip():
            out.append(json.loads(line))
    return out, eof


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="uac")
    ap.add_argument("--gap-ms", type=float, default=20.0)
    ap.add_argument("--deadline", type=float, required=True, help="time.monotonic() bound")
    ap.add_argument("--run", default="", help="the run's directory (identifies the process)")
    args = ap.parse_args(argv)
    global _PROTO_FD
    _PROTO_FD = os.dup(1)
    os.dup2(2, 1)
    worker = Worker(args.name, args.gap_ms / 1000.0)
    emit({"ev": "ready", "port": worker.port, "pid": os.getpid()})
    fd, buf, quitting = sys.stdin.fileno(), bytearray(), False
    while True:
        worker.pump(POLL_MS)
        cmds, eof = read_commands(fd, buf)
        for cmd in cmds:
            if cmd.get("op") == "call":
                worker.queue.append(cmd)
            elif cmd.get("op") == "quit":
                quitting = True
        if eof or time.monotonic() > args.deadline:
            break
        worker.start_due()
        worker.hang_up_due()
        worker.report_finished()
        if quitting and not worker.calls and not worker.queue and not worker.closing:
            break
    worker.shutdown()
    os._exit(0)  # skip interpreter teardown: pjsua2 objects must not be finalised twice


if __name__ == "__main__":
    sys.exit(main())
