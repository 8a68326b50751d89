"""Call features beyond talk: DTMF to an IVR, SIP MESSAGE, hold/resume and blind transfer.

Each feature is the SIP (or RTP) exchange a real UA performs, timed through the
same network links and proxy workers as the rest of the call:

* **DTMF** (RFC 4733 telephone-events): digits travel in the RTP stream, not
  through the proxy. Each digit is an event of :data:`DTMF_TONE_S` followed by an
  inter-digit gap (pjsua's defaults); the IVR starts its prompt when the last
  digit's end packet arrives, and the caller hears it one media path later.
* **MESSAGE** (RFC 3428) in the dialog: a non-INVITE transaction caller → proxy →
  agent, 200 OK back, retransmitted on Timer E until a final response or Timer F.
* **hold / resume**: two in-dialog re-INVITE transactions (a=sendonly, then
  a=sendrecv; RFC 3264 section 8.4), each INVITE → 200 → ACK through the proxy.
* **blind transfer** (RFC 3515): the agent sends REFER to the caller, the caller
  answers 202 Accepted, places an INVITE to the target through the proxy and
  reports the outcome with a NOTIFY (message/sipfrag "SIP/2.0 200 OK"), then the
  agent hangs up its leg with BYE; the caller goes on talking with the target. The
  trunk channel stays held across the transfer (the carrier leg is not torn down).

Re-INVITEs are timed like non-INVITE transactions here: an in-dialog INVITE's 2xx
retransmission until its ACK is not modelled separately.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

from lab.plan import Dtmf, Message, OnHold, Transfer
from twin.monitors import trim_ragged
from twin.transaction import NonInvite

INF = math.inf
DTMF_TONE_S = 0.16  # pjsua: PJSUA_CALL_SEND_DTMF_DURATION_DEFAULT (160 ms per digit)
DTMF_GAP_S = 0.04  # inter-digit pause before the next event
STEP_COLUMNS = ("call_id", "step", "kind", "start_s", "duration_ms", "ok")

Feature = Dtmf | Message | OnHold | Transfer
Gen = Generator[float, None, float]


class Features:
    """Runs feature steps for the calls of one twin replication and records each one."""

    def __init__(self, tx: NonInvite, media_down_s: float) -> None:
        self.tx = tx
        self.env, self.proxy, self.timers = tx.env, tx.proxy, tx.timers
        self.up, self.down = tx.up, tx.down
        self.send_up, self.send_down = tx.send_up, tx.send_down
        self.media_down_s = media_down_s  # packetisation + jitter buffer at the caller
        self.cols: dict[str, list[Any]] = {c: [] for c in STEP_COLUMNS}
        self.far_rx = INF

    # ------------------------------------------------------------------ steps
    def run(self, call_id: int, index: int, step: Feature, t: float) -> Gen:
        """Run ``step`` starting at ``t`` (the caller's clock); return when it is over."""
        if isinstance(step, Dtmf):
            heard = self._dtmf(step, t)
            self._record(call_id, index, "dtmf", t, heard, heard < INF)
            return (heard if heard < INF else t) + step.prompt_s
        if isinstance(step, Message):
            done = yield from self._transaction(t, from_caller=True)
            self._record(call_id, index, "message", t, done, done < INF)
            return done if done < INF else t + self.timers.timer_f_s
        if isinstance(step, OnHold):
            held = yield from self._transaction(t, from_caller=True)
            resume_at = (held if held < INF else t + self.timers.timer_f_s) + step.hold_s
            resumed = yield from self._transaction(resume_at, from_caller=True)
            ok = held < INF and resumed < INF
            end = resumed if resumed < INF else resume_at + self.timers.timer_f_s
            self._record(call_id, index, "on_hold", t, end, ok)
            return end
        return (yield from self._transfer(call_id, index, step, t))

    def _dtmf(self, step: Dtmf, t: float) -> float:
        """When the caller hears the IVR's prompt start (INF if the end event was lost)."""
        keyed = len(step.digits) * DTMF_TONE_S + (len(step.digits) - 1) * DTMF_GAP_S
        # RFC 4733 sends the end packet three times: the digit is lost only if all are
        for _ in range(3):
            d_up = self.send_up()
            if d_up is not None:
                break
        else:
            return INF
        d_down = self.send_down()
        d_down = d_down if d_down is not None else self.down.delay_s
        return t + keyed + d_up + d_down + self.media_down_s

    def _transfer(self, call_id: int, index: int, step: Transfer, t: float) -> Gen:
        accepted = yield from self._transaction(t, from_caller=False)  # REFER → 202
        if accepted == INF:
            self._record(call_id, index, "transfer", t, INF, False)
            return t + self.timers.timer_f_s + step.talk_s
        referred = self.far_rx  # the caller acts on the REFER as soon as it arrives
        connected = yield from self._transaction(referred, from_caller=True)  # INVITE target
        notified = yield from self._transaction(connected, from_caller=True)  # NOTIFY 200
        ok = connected < INF and notified < INF
        end = notified if ok else referred + self.timers.timer_f_s
        self._record(call_id, index, "transfer", t, end, ok)
        # the agent's BYE of its leg crosses the proxy while the caller talks on
        if end > self.env.now:
            yield end - self.env.now
        self.proxy.book(max(end, self.env.now))
        return end + step.talk_s

    def _transaction(self, sent_at: float, from_caller: bool) -> Gen:
        tx = self.tx
        if from_caller:
            done = yield from tx.from_caller(sent_at)
        else:
            done = yield from tx.from_agent(sent_at)
        self.far_rx = tx.far_rx
        return done

    def complete(self) -> None:
        """Drop a step row an interruption left half-written."""
        trim_ragged(self.cols.values())

    def _record(self, call_id: int, index: int, kind: str, start: float, end: float,
                ok: bool) -> None:
        row = (call_id, index, kind, start, (end - start) * 1e3 if end < INF else math.nan, ok)
        for col, value in zip(self.cols.values(), row, strict=True):
            col.append(value)
