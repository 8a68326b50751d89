"""One outgoing call of a caller process: a ``pj.Call`` whose callbacks delegate.

pjsua2 calls back on the process's main thread (``threadCnt = 0``) inside
``libHandleEvents``. :class:`UacCall` keeps the call's state and hands each part
to the module named after it:

- signalling facts come from the message log (:mod:`loadgen.callers.sip`), not
  from the call's states, which only say when it was disconnected;
- its media -- tap, recorder, players, stream statistics, and the SDP offer that
  steers the agent's RTP through the impairment emulator -- is
  :mod:`loadgen.callers.media`;
- its script (the job's ``steps``, :mod:`loadgen.callers.script`) plays turns
  (:mod:`loadgen.callers.turns`) and feature steps (:mod:`loadgen.callers.features`).

A blind transfer (RFC 3515) makes a second leg: pjsua places the new call itself,
with a :class:`UacCall` of ours (``newCall``), whose ``parent`` is the original
call; the call as a whole is over when that leg ends.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pjsua2 as pj

from loadgen.callers import features, turns
from loadgen.callers.media import CallerMedia, steer_offer, stream_stats
from loadgen.callers.script import Script, Wait, at
from loadgen.callers.sip import SipTrace


class UacCall(pj.Call):
    """One outgoing call (or the leg a REFER made), driven by the job from the pool.

    Parameters
    ----------
    acc
        The process's account.
    job
        The ``call`` command: ``id``, ``uri``, ``hold_s`` and optionally ``steps``,
        ``relay`` (the emulator's ports), ``headers``, ``record``; ``leg`` on a
        transfer's new leg.
    finished
        Where the call puts itself once it is over (the process reports it).
    trace
        The process's SIP message trace.
    """

    def __init__(self, acc: Any, job: dict[str, Any], finished: list[UacCall],
                 trace: SipTrace) -> None:
        super().__init__(acc)
        self.acc, self.job, self.finished, self.trace = acc, job, finished, trace
        self.sip_call_id = ""
        self.hung_up = False
        self.disc_t: float | None = None
        self.disc_code = 0
        self.disc_reason = ""
        self.relay: dict[str, int] | None = job.get("relay")
        self.media = CallerMedia(f"tap{job['id']}{job.get('leg', '')}", job.get("record"))
        self.msg_status: tuple[float, int] | None = None
        self.parent: UacCall | None = None  # set on the call a REFER made
        self.child: UacCall | None = None  # the call our REFER acceptance made
        self.stats: dict[str, Any] = {}
        self.turns: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.script: Script | None = None
        self.last_stat_t = 0.0

    # -- pjsua2 callbacks --------------------------------------------------------
    def onCallState(self, prm: Any) -> None:
        ci = self.getInfo()
        if not self.sip_call_id:
            self.sip_call_id = str(ci.callIdString)
        if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED and self.disc_t is None:
            self.disc_t = time.monotonic()
            self.disc_code, self.disc_reason = int(ci.lastStatusCode), str(ci.lastReason)
            parent = self.parent
            if parent is not None:  # the transferred leg ended: so has the whole call
                if parent.disc_t is not None and parent not in parent.finished:
                    parent.finished.append(parent)
            elif not self.transferred():
                self.finished.append(self)

    def onCallSdpCreated(self, prm: Any) -> None:
        """Point the agent at the emulator: our offer advertises its agent-facing port."""
        if self.relay is not None:
            prm.sdp.wholeSdp = steer_offer(prm.sdp.wholeSdp, int(self.relay["agent_port"]))

    def onCallMediaState(self, prm: Any) -> None:
        if self.media.attached:
            return
        ci = self.getInfo()  # keep it: ``ci.media`` points into it (SWIG)
        for i, mi in enumerate(ci.media):
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.media.attach(self.getAudioMedia(i))
                return

    def onInstantMessageStatus(self, prm: Any) -> None:
        if self.msg_status is None:
            self.msg_status = (time.monotonic(), int(prm.code))

    def onCallTransferRequest(self, prm: Any) -> None:
        """Accept the REFER (202); pjsua dials the target with a :class:`UacCall` of ours,
        so the new leg is tracked and hung up like any call."""
        prm.statusCode = 202
        child = UacCall(self.acc, {"id": self.job["id"], "uri": str(prm.dstUri), "leg": "xfer"},
                        self.finished, self.trace)
        child.parent = self
        self.child = child  # keeps the Python wrapper (and its director) alive
        prm.newCall = child

    # -- state ---------------------------------------------------------------------
    def transferred(self) -> bool:
        """Whether the call lives on in the leg a REFER made (RFC 3515): the agent's BYE
        of the original leg does not end it."""
        return self.child is not None and self.child.disc_t is None

    def take_stats(self) -> None:
        """Keep the audio stream's current statistics for the record, while it is up."""
        if not self.media.attached or self.disc_t is not None:
            return
        stats = stream_stats(self)
        if stats is not None:
            self.stats = stats

    def op_param(self) -> Any:
        """A CallOpParam carrying the job's extra headers (the plan, the emulator port)."""
        prm = pj.CallOpParam(True)
        for name, value in (self.job.get("headers") or {}).items():
            h = pj.SipHeader()
            h.hName, h.hValue = name, value
            prm.txOption.headers.append(h)
        return prm

    # -- the script ----------------------------------------------------------------
    def start_script(self, answered_t: float) -> Script:
        """The call's script, from the 200 OK at ``answered_t`` (once)."""
        if self.script is None:
            self.script = Script(self._steps(answered_t))
        return self.script

    def _steps(self, answered_t: float) -> Iterator[Wait]:
        steps = self.job.get("steps")
        if steps is None:
            steps = [["talk", float(self.job["hold_s"]) * 1000.0]]
        t = answered_t
        for index, step in enumerate(steps):
            kind = step[0]
            if kind == "talk":
                yield at(t + step[1] / 1000.0)
            elif kind == "turn":
                yield from turns.turn(self, len(self.turns), step)
            elif kind == "dtmf":
                yield from features.dtmf(self, index, step)
            elif kind == "msg":
                yield from features.message(self, index, step)
            elif kind == "hold":
                yield from features.hold(self, index, step)
            elif kind == "xfer":
                yield from features.transfer(self, index, step)
            t = time.monotonic()

    def end(self) -> None:
        """Hang up this call and the leg a transfer made, whichever is still up."""
        self.hung_up = True
        for call in (self.child, self):
            if call is not None and call.disc_t is None:
                call.hung_up = True
                with contextlib.suppress(pj.Error):
                    call.hangup(pj.CallOpParam(True))

    def release_media(self) -> None:
        """Drop the media ports (their wrappers) once the call is over, on both legs."""
        self.media.release()
        if self.child is not None:
            self.child.release_media()
