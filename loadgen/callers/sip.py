"""The caller's view of SIP: pjsip's message log, parsed per Call-ID into a :class:`Dialog`.

Measurement comes from the SIP messages themselves (RFC 3261), not from pjsua2's
call states: with ``msgLogging`` on, pjsip logs every datagram it sends or
receives, retransmissions included, and :class:`SipTrace` (a ``pj.LogWriter``)
files each one under its Call-ID:

- every transmission of the initial INVITE (same CSeq): over UDP the client
  transaction retransmits it on Timer A, which starts at T1 = 500 ms and doubles
  (RFC 3261 section 17.1.1.2), so ``len(invite_tx) - 1`` are retransmissions;
- the first 180-189 provisional response (post-dial delay ends there) and the final
  response to the INVITE: status code, reason phrase, ``Server`` header and the
  proxy's ``X-Siplab-Rejected-By`` tag (which trunk limit refused the call);
- the BYE sent and its final response (the call's end);
- 2xx/failure responses to re-INVITEs (hold and resume, RFC 3264 section 8.4);
- a REFER received (RFC 3515) and our NOTIFY whose ``message/sipfrag`` body
  reports the new call's 2xx, with that NOTIFY's own 200 (RFC 3515 section 2.4.5).

All times are ``time.monotonic()`` at the moment pjsip logged the datagram.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import pjsua2 as pj

_FIRST = re.compile(
    r"(TX|RX) \d+ bytes (Request|Response) msg ([^/\s]+)(?:/([^/\s]+))?/cseq=(\d+)")
_CALL_ID = re.compile(r"^(?:Call-ID|i)[ \t]*:[ \t]*(\S+)", re.M | re.I)
_STATUS = re.compile(r"^SIP/2\.0 (\d{3}) ?([^\r\n]*)", re.M)
_SERVER = re.compile(r"^Server[ \t]*:[ \t]*([^\r\n]*)", re.M | re.I)
_SIPFRAG = re.compile(r"^SIP/2\.0 (\d{3})", re.M)
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
    first_cseq: int = 0
    reinvite_ok: list[float] = field(default_factory=list)
    refer_rx: float | None = None
    notify_final_tx: float | None = None  # our NOTIFY carrying the new call's 2xx
    notify_final_ok: float | None = None  # its 200


class SipTrace(pj.LogWriter):
    """pjsip's message log, parsed into a :class:`Dialog` per Call-ID."""

    def __init__(self) -> None:
        super().__init__()
        self.dialogs: dict[str, Dialog] = {}

    def dialog(self, sip_call_id: str) -> Dialog:
        """The facts of ``sip_call_id`` so far (an empty, detached Dialog if none yet)."""
        return self.dialogs.get(sip_call_id) or Dialog()

    def write(self, entry: Any) -> None:
        """pjsip's log callback: file one logged SIP message under its Call-ID."""
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
        cseq = int(head.group(5))
        if kind == "Request" and direction == "RX":
            if what == "REFER" and d.refer_rx is None:
                d.refer_rx = now
        elif kind == "Request" and direction == "TX":
            _request_sent(d, what, cseq, msg, now)
        elif kind == "Response" and direction == "RX" and what.isdigit():
            _response_received(d, int(what), method, cseq, msg, now)


def _request_sent(d: Dialog, method: str, cseq: int, msg: str, now: float) -> None:
    """Our INVITE (each transmission of the first CSeq), BYE, or transfer NOTIFY."""
    if method == "NOTIFY":
        frag = _SIPFRAG.search(msg)
        if frag and frag.group(1).startswith("2") and d.notify_final_tx is None:
            d.notify_final_tx = now
    elif method == "INVITE" and (not d.first_cseq or cseq == d.first_cseq):
        d.first_cseq = cseq
        d.invite_tx.append(now)
    elif method == "BYE" and d.bye_tx is None:
        d.bye_tx = now


def _response_received(d: Dialog, code: int, method: str | None, cseq: int, msg: str,
                       now: float) -> None:
    """A response to our INVITE, re-INVITE, NOTIFY or BYE."""
    if method == "INVITE" and d.first_cseq and cseq != d.first_cseq:
        if code >= 200:
            d.reinvite_ok.append(now)
    elif method == "NOTIFY" and 200 <= code < 300:
        if d.notify_final_tx is not None and d.notify_final_ok is None:
            d.notify_final_ok = now
    elif method == "INVITE":
        if 180 <= code < 190 and d.first_18x is None and d.final_t is None:
            d.first_18x = now
        elif code >= 200 and d.final_t is None:
            _final_response(d, code, msg, now)
    elif method == "BYE" and code >= 200 and d.bye_ok is None:
        d.bye_ok = now


def _final_response(d: Dialog, code: int, msg: str, now: float) -> None:
    """The INVITE's final response: status, reason phrase, Server, the proxy's tag."""
    status = _STATUS.search(msg)
    tag = _REJECTED_BY.search(msg)
    server = _SERVER.search(msg)
    d.final_t, d.final_code = now, code
    d.reason = status.group(2).strip() if status else ""
    d.rejected_by = tag.group(1) if tag else None
    d.server = server.group(1).strip() if server else ""
