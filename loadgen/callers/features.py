"""The caller's call features: DTMF, MESSAGE, hold and resume, blind transfer.

Each feature step is timed from the caller's side and logged in ``call.steps``
(``step``, ``kind``, ``t_start``, ``t_end``, ``ok``; no ``t_end`` when it failed):

- ``["dtmf", digits, prompt_ms]`` -- RFC 4733 telephone-events (pjsua's
  ``dialDtmf``: each digit a :data:`DTMF_TONE_S` event, sent in order); timed from
  the first digit to the onset of the agent's spoken menu prompt, which then plays
  ``prompt_ms``;
- ``["msg", text]`` -- an RFC 3428 MESSAGE inside the dialog, timed to its final
  response (ok on 2xx);
- ``["hold", ms]`` -- RFC 3264 section 8.4: a re-INVITE offering ``a=sendonly``,
  ``ms`` on hold, then a re-INVITE back to ``sendrecv``; timed to the resume's 200;
- ``["xfer", target, ms]`` -- blind transfer, RFC 3515: wait for the agent's REFER,
  accept it (202; pjsua dials the target itself with a call of ours, see
  :meth:`loadgen.callers.call.UacCall.onCallTransferRequest`) and time REFER → the
  200 of our NOTIFY reporting the new call's 2xx (``message/sipfrag``, RFC 3515
  section 2.4.5); then talk ``ms`` on the new leg and hang it up. The agent's BYE of
  the old leg does not end the call: its record closes with the new leg's BYE.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pjsua2 as pj

from loadgen.callers.script import NON_INVITE_TIMEOUT_S, REPLY_TIMEOUT_S, Wait, at, until

if TYPE_CHECKING:
    from loadgen.callers.call import UacCall

DTMF_TONE_S = 0.16  # pjsua's RFC 4733 digit: 160 ms tone (+ gap), sent in order
BYE_WAIT_S = 4.0  # longest wait for the BYE transaction of a leg to end


def log_step(call: UacCall, index: int, kind: str, start: float, end: float | None) -> None:
    """Record one feature step of the call (``ok`` when it has an end)."""
    call.steps.append({"step": index, "kind": kind, "t_start": start, "t_end": end,
                       "ok": end is not None})


def dtmf(call: UacCall, index: int, step: list[Any]) -> Iterator[Wait]:
    """Key the digits; time them to the menu prompt's onset; listen to the prompt."""
    digits, prompt_ms = str(step[1]), float(step[2])
    t0 = time.monotonic()
    try:
        call.dialDtmf(digits)
    except pj.Error:
        log_step(call, index, "dtmf", t0, None)
        return
    keyed = t0 + len(digits) * DTMF_TONE_S
    tap = call.media.tap
    onset: float | None = None
    if tap is not None:
        yield until(keyed + REPLY_TIMEOUT_S, lambda: tap.onset(keyed) is not None)
        onset = tap.onset(keyed)
    log_step(call, index, "dtmf", t0, onset)
    yield at((onset or time.monotonic()) + prompt_ms / 1000.0)


def message(call: UacCall, index: int, step: list[Any]) -> Iterator[Wait]:
    """Send an in-dialog MESSAGE; time it to its final response."""
    prm = pj.SendInstantMessageParam()
    prm.content = str(step[1]) if len(step) > 1 else "siplab"
    prm.contentType = "text/plain"
    call.msg_status = None
    t0 = time.monotonic()
    try:
        call.sendInstantMessage(prm)
    except pj.Error:
        log_step(call, index, "message", t0, None)
        return
    yield until(t0 + NON_INVITE_TIMEOUT_S, lambda: call.msg_status is not None)
    status = call.msg_status
    ok = status is not None and 200 <= status[1] < 300
    log_step(call, index, "message", t0, status[0] if ok and status else None)


def hold(call: UacCall, index: int, step: list[Any]) -> Iterator[Wait]:
    """Hold (re-INVITE sendonly), wait ``ms``, resume; time it to the resume's 200."""
    d = call.trace.dialog(call.sip_call_id)
    n0 = len(d.reinvite_ok)
    t0 = time.monotonic()
    try:
        call.setHold(call.op_param())
    except pj.Error:
        log_step(call, index, "on_hold", t0, None)
        return
    yield until(t0 + NON_INVITE_TIMEOUT_S, lambda: len(d.reinvite_ok) > n0)
    held = len(d.reinvite_ok) > n0
    yield at(time.monotonic() + step[1] / 1000.0)
    prm = call.op_param()
    prm.opt.flag = pj.PJSUA_CALL_UNHOLD
    try:
        call.reinvite(prm)
    except pj.Error:
        log_step(call, index, "on_hold", t0, None)
        return
    t1 = time.monotonic()
    yield until(t1 + NON_INVITE_TIMEOUT_S, lambda: len(d.reinvite_ok) > n0 + 1)
    resumed = len(d.reinvite_ok) > n0 + 1
    log_step(call, index, "on_hold", t0, d.reinvite_ok[n0 + 1] if held and resumed else None)


def transfer(call: UacCall, index: int, step: list[Any]) -> Iterator[Wait]:
    """Blind transfer: the agent REFERs us; time REFER → our NOTIFY's 200.

    Then talk ``talk_ms`` on the new leg and hang it up (BYE), waiting for its end.
    """
    d = call.trace.dialog(call.sip_call_id)
    t0 = time.monotonic()
    yield until(t0 + REPLY_TIMEOUT_S, lambda: d.refer_rx is not None)
    if d.refer_rx is None:
        log_step(call, index, "transfer", t0, None)
        return
    start = d.refer_rx
    yield until(start + NON_INVITE_TIMEOUT_S, lambda: d.notify_final_ok is not None)
    log_step(call, index, "transfer", start, d.notify_final_ok)
    end = time.monotonic() + step[2] / 1000.0
    child = call.child
    if child is None or d.notify_final_ok is None:
        yield at(end)
        return
    yield until(end, lambda: child.disc_t is not None)
    if child.disc_t is None:
        child.hung_up = True
        with contextlib.suppress(pj.Error):
            child.hangup(pj.CallOpParam(True))
        yield until(time.monotonic() + BYE_WAIT_S, lambda: child.disc_t is not None)
