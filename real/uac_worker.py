"""One pjsua2 caller process (run as ``python -m real.uac_worker``): up to 4 calls.

The pjsua2-python wheel carries at most 4 calls per process (PJSUA_MAX_CALLS) and
its Endpoint is a process singleton, so the real backend runs a pool of these
processes (see :mod:`real.backend`). Each one owns an Endpoint with a null audio
device, a UDP transport and RTP media bound to 127.0.0.1, PCMU as the preferred
codec, and ``threadCnt = 0``: every SIP event and callback is handled on this
process's main thread inside ``libHandleEvents``, between which the command pipe
(stdin) is polled. No other Python thread ever calls pjsua2 (that aborts the process).

Protocol: JSON lines. stdin receives ``{"op": "call", "id", "uri", "hold_s"}`` (optional:
``steps``, the call's script; ``relay``, the RTP relay's ports; ``headers``; ``record``, a
WAV path) and ``{"op": "quit"}``; stdout answers ``{"ev": "ready", "port", "pid"}`` once
and a ``{"ev": "done", ...}`` per finished call with raw timestamps (``time.monotonic()``,
which is one clock for all processes of the machine), its RTP statistics (``media``),
its turns and its feature steps.

Media: every call carries real PCMU RTP (VAD off, so 50 packets/s flow both ways). The
caller hears through a :class:`Tap` (an ``AudioMediaPort`` that timestamps each 20 ms
frame it receives and keeps its RMS level) and, optionally, an ``AudioMediaRecorder``;
it speaks by playing WAV prompts with ``AudioMediaPlayer``. Python references to all
of them live as long as the call (pjsua2 stops media whose wrapper is collected).

Script steps (lists, times in ms): ``["talk", ms]``; ``["turn", caller_ms, agent_ms,
wav, speech_ms]`` -- play the prompt, then time the agent's reply onset (voice-to-voice)
and wait for its end; ``["dtmf", digits, prompt_ms]`` (RFC 4733), timed to the prompt's
onset; ``["msg", text]`` (RFC 3428 MESSAGE in the dialog), timed to its final response;
``["hold", ms]`` (re-INVITE sendonly, then sendrecv), timed to the resume's 200 OK;
``["xfer", target, ms]`` -- wait for the agent's REFER (RFC 3515), accept it, and time
REFER → the NOTIFY that reports the new call's 200. pjsua places the new call itself,
with a :class:`UacCall` of ours (``newCall``), so the caller talks ``ms`` on the new leg
and then hangs it up; the agent's BYE of the old leg does not end the call, whose
record then closes with the new leg's BYE.

Measurement comes from the SIP messages themselves: with ``msgLogging`` on, pjsip
logs every datagram it sends or receives, retransmissions included (RFC 3261
section 17.1.1.2: Timer A doubles from T1), and :class:`SipTrace` files each one
under its Call-ID: INVITE transmissions, the first 18x, the final response to the
INVITE (status, reason phrase, the proxy's ``X-Siplab-Rejected-By``), the BYE and
its 200.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import gc
import json
import math
import os
import re
import select
import sys
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pjsua2 as pj

from real.endpoint import account_config, new_config, start_loopback

MAX_CALLS = 4
BYE_WAIT_S = 4.0
POLL_MS = 5  # libHandleEvents timeout: bounds command latency, costs CPU when short
SPEECH_RMS = 300.0  # PCM16 RMS of a 20 ms frame above which the caller hears speech
REPLY_TIMEOUT_S = 8.0  # longest wait for the agent's reply (or IVR prompt) to start
REPLY_END_SILENCE_S = 0.6  # silence that ends the agent's reply
REPLY_SLACK_S = 3.0  # a reply may run this much beyond its planned length
NON_INVITE_TIMEOUT_S = 8.0  # shorter than Timer F (32 s): a bounded wait for a 200
DTMF_TONE_S = 0.16  # pjsua's RFC 4733 digit: 160 ms tone (+ gap), sent in order
STAT_EVERY_S = 1.0  # stream statistics are sampled this often while the call is up
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
        cseq = int(head.group(5))
        if kind == "Request" and direction == "RX" and what == "REFER" and d.refer_rx is None:
            d.refer_rx = now
        elif kind == "Request" and direction == "TX" and what == "NOTIFY":
            frag = _SIPFRAG.search(msg)
            if frag and frag.group(1).startswith("2") and d.notify_final_tx is None:
                d.notify_final_tx = now
        if kind == "Request" and direction == "TX":
            if what == "INVITE" and (not d.first_cseq or cseq == d.first_cseq):
                d.first_cseq = cseq
                d.invite_tx.append(now)
            elif what == "BYE" and d.bye_tx is None:
                d.bye_tx = now
        elif kind == "Response" and direction == "RX" and what.isdigit():
            code = int(what)
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
                    status = _STATUS.search(msg)
                    tag = _REJECTED_BY.search(msg)
                    d.final_t, d.final_code = now, code
                    d.reason = status.group(2).strip() if status else ""
                    d.rejected_by = tag.group(1) if tag else None
                    server = _SERVER.search(msg)
                    d.server = server.group(1).strip() if server else ""
            elif method == "BYE" and code >= 200 and d.bye_ok is None:
                d.bye_ok = now


class Tap(pj.AudioMediaPort):
    """The caller's ear: RMS level and arrival time of every 20 ms frame it is sent.

    ``onFrameReceived`` runs on the conference bridge's clock thread; it only appends
    to a list (atomic under the GIL), never calls pjsua2.
    """

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[tuple[float, float]] = []

    def onFrameReceived(self, frame: Any) -> None:
        t = time.monotonic()
        pcm = array("h", bytes(frame.buf))
        n = len(pcm)
        self.frames.append((t, math.sqrt(sum(x * x for x in pcm) / n) if n else 0.0))

    def onset(self, after: float, until: float = math.inf) -> float | None:
        """Time of the first loud frame in ``(after, until]``, or None."""
        frames = self.frames
        for i in range(bisect.bisect_right(frames, after, key=lambda f: f[0]), len(frames)):
            t, rms = frames[i]
            if t > until:
                break
            if rms >= SPEECH_RMS:
                return t
        return None

    def quiet_since(self, since: float) -> float:
        """Seconds of continuous silence up to now, counted from no earlier than ``since``."""
        last_loud = since
        for t, rms in reversed(self.frames):
            if t <= since:
                break
            if rms >= SPEECH_RMS:
                last_loud = t
                break
        return time.monotonic() - last_loud


Wait = Callable[[], bool]


class UacCall(pj.Call):
    """One outgoing call; state changes arrive on the main thread (``threadCnt = 0``)."""

    def __init__(self, acc: Any, job: dict[str, Any], finished: list[UacCall],
                 trace: SipTrace, ep: Any) -> None:
        super().__init__(acc)
        self.acc = acc
        self.job = job
        self.finished = finished
        self.trace = trace
        self.ep = ep
        self.sip_call_id = ""
        self.hangup_at: float | None = None
        self.hung_up = False
        self.disc_t: float | None = None
        self.disc_code = 0
        self.disc_reason = ""
        self.relay: dict[str, int] | None = job.get("relay")
        self.media_up = False
        self.tap: Tap | None = None
        self.recorder: Any = None
        self.players: list[Any] = []
        self.audio: Any = None
        self.msg_status: tuple[float, int] | None = None
        self.parent: UacCall | None = None  # set on the call a REFER made
        self.child: UacCall | None = None  # the call our REFER acceptance made
        self.stats: dict[str, Any] = {}
        self.turns: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.script: Iterator[Wait] | None = None
        self.waiting: Wait | None = None
        self.script_done = False
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

    def transferred(self) -> bool:
        """Whether the call lives on in the leg a REFER made (RFC 3515): the agent's BYE
        of the original leg does not end it."""
        return self.child is not None and self.child.disc_t is None

    def onCallSdpCreated(self, prm: Any) -> None:
        """Point the agent at the relay: our offer advertises its agent-facing port."""
        if self.relay is None:
            return
        port = int(self.relay["agent_port"])
        sdp = re.sub(r"(?m)^m=audio \d+", f"m=audio {port}", prm.sdp.wholeSdp)
        prm.sdp.wholeSdp = re.sub(r"(?m)^a=rtcp:\d+", f"a=rtcp:{port + 1}", sdp)

    def onCallMediaState(self, prm: Any) -> None:
        if self.media_up:
            return
        ci = self.getInfo()
        for i, mi in enumerate(ci.media):
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.audio = self.getAudioMedia(i)
                fmt = pj.MediaFormatAudio()
                fmt.init(pj.PJMEDIA_FORMAT_PCM, 8000, 1, 20000, 16)
                self.tap = Tap()
                self.tap.createPort(f"tap{self.job['id']}{self.job.get('leg', '')}", fmt)
                self.audio.startTransmit(self.tap)
                if self.job.get("record"):
                    self.recorder = pj.AudioMediaRecorder()
                    self.recorder.createRecorder(str(self.job["record"]))
                    self.audio.startTransmit(self.recorder)
                self.media_up = True
                return

    def onInstantMessageStatus(self, prm: Any) -> None:
        if self.msg_status is None:
            self.msg_status = (time.monotonic(), int(prm.code))

    def onCallTransferRequest(self, prm: Any) -> None:
        """Accept the REFER (202); pjsua dials the target with a :class:`UacCall` of ours,
        so the new leg is tracked and hung up like any call."""
        prm.statusCode = 202
        child = UacCall(self.acc, {"id": self.job["id"], "uri": str(prm.dstUri), "leg": "xfer"},
                        self.finished, self.trace, self.ep)
        child.parent = self
        self.child = child  # keeps the Python wrapper (and its director) alive
        prm.newCall = child

    # -- RTP statistics ----------------------------------------------------------
    def take_stats(self) -> None:
        """RTCP/stream statistics of the audio stream, kept for the record (RFC 3550 6.4)."""
        if not self.media_up or self.disc_t is not None:
            return
        try:
            st = self.getStreamStat(0)
        except pj.Error:
            return
        rx, tx = st.rtcp.rxStat, st.rtcp.txStat
        rtt = st.rtcp.rttUsec
        self.stats = {
            "rx_pkt": int(rx.pkt), "rx_loss": int(rx.loss), "rx_discard": int(rx.discard),
            "rx_dup": int(rx.dup), "rx_reorder": int(rx.reorder),
            "rx_jitter_us": float(rx.jitterUsec.mean) if rx.jitterUsec.n else None,
            "tx_pkt": int(tx.pkt), "tx_loss": int(tx.loss),
            "rtt_us": float(rtt.mean) if rtt.n else None,
            "loss_period_us": float(rx.lossPeriodUsec.mean) if rx.lossPeriodUsec.n else None,
            "jb_delay_ms": float(st.jbuf.avgDelayMsec), "jb_lost": int(st.jbuf.lost),
            "jb_discard": int(st.jbuf.discard), "jb_empty": int(st.jbuf.empty),
        }

    # -- the script ----------------------------------------------------------------
    def advance(self) -> None:
        """Run the script until it waits on something not yet true (main thread only)."""
        if self.script is None or self.script_done:
            return
        while self.waiting is None or self.waiting():
            try:
                self.waiting = next(self.script)
            except StopIteration:
                self.script_done = True
                return

    def run_script(self, answered_t: float) -> Iterator[Wait]:
        steps = self.job.get("steps")
        if steps is None:
            steps = [["talk", float(self.job["hold_s"]) * 1000.0]]
        t = answered_t
        for index, step in enumerate(steps):
            kind = step[0]
            if kind == "talk":
                end = t + step[1] / 1000.0
                yield lambda end=end: time.monotonic() >= end  # type: ignore[misc]
            elif kind == "turn":
                yield from self.turn(len(self.turns), step)
            elif kind == "dtmf":
                yield from self.dtmf(index, step)
            elif kind == "msg":
                yield from self.message(index, step)
            elif kind == "hold":
                yield from self.hold(index, step)
            elif kind == "xfer":
                yield from self.xfer(index, step)
            t = time.monotonic()

    def until(self, t_end: float, cond: Wait) -> Wait:
        return lambda: cond() or time.monotonic() >= t_end

    def turn(self, turn: int, step: list[Any]) -> Iterator[Wait]:
        """Speak a prompt, time the reply's onset after our speech ends, wait its end."""
        caller_ms, agent_ms, wav, speech_ms = step[1], step[2], step[3], step[4]
        player = self.play(wav)
        t0 = time.monotonic()
        speech_end = t0 + speech_ms / 1000.0
        yield lambda: time.monotonic() >= speech_end
        tap = self.tap
        onset: float | None = None
        limit = speech_end + REPLY_TIMEOUT_S
        if tap is not None:
            yield self.until(limit, lambda: tap.onset(speech_end) is not None)
            onset = tap.onset(speech_end)
        if onset is not None and tap is not None:
            cap = onset + agent_ms / 1000.0 + REPLY_SLACK_S
            yield self.until(cap, lambda: tap.quiet_since(onset) >= REPLY_END_SILENCE_S)
        self.stop_player(player)
        self.turns.append({
            "turn": turn, "t_speech_end": speech_end, "t_onset": onset,
            "voice_to_voice_ms": (onset - speech_end) * 1e3 if onset else None,
            "caller_speech_s": caller_ms / 1000.0, "agent_speech_s": agent_ms / 1000.0,
            "t_reply_end": time.monotonic() - REPLY_END_SILENCE_S if onset else None,
        })

    def dtmf(self, index: int, step: list[Any]) -> Iterator[Wait]:
        digits, prompt_ms = str(step[1]), float(step[2])
        t0 = time.monotonic()
        try:
            self.dialDtmf(digits)
        except pj.Error:
            self.step(index, "dtmf", t0, None)
            return
        keyed = t0 + len(digits) * DTMF_TONE_S
        tap = self.tap
        onset: float | None = None
        if tap is not None:
            yield self.until(keyed + REPLY_TIMEOUT_S, lambda: tap.onset(keyed) is not None)
            onset = tap.onset(keyed)
        self.step(index, "dtmf", t0, onset)
        end = (onset or time.monotonic()) + prompt_ms / 1000.0
        yield lambda: time.monotonic() >= end

    def message(self, index: int, step: list[Any]) -> Iterator[Wait]:
        prm = pj.SendInstantMessageParam()
        prm.content = str(step[1]) if len(step) > 1 else "siplab"
        prm.contentType = "text/plain"
        self.msg_status = None
        t0 = time.monotonic()
        try:
            self.sendInstantMessage(prm)
        except pj.Error:
            self.step(index, "message", t0, None)
            return
        yield self.until(t0 + NON_INVITE_TIMEOUT_S, lambda: self.msg_status is not None)
        ok = self.msg_status is not None and 200 <= self.msg_status[1] < 300
        self.step(index, "message", t0, self.msg_status[0] if ok and self.msg_status else None)

    def hold(self, index: int, step: list[Any]) -> Iterator[Wait]:
        d = self.trace.dialogs.get(self.sip_call_id, Dialog())
        n0 = len(d.reinvite_ok)
        t0 = time.monotonic()
        try:
            self.setHold(self.op_param())
        except pj.Error:
            self.step(index, "on_hold", t0, None)
            return
        yield self.until(t0 + NON_INVITE_TIMEOUT_S, lambda: len(d.reinvite_ok) > n0)
        held = len(d.reinvite_ok) > n0
        resume_at = time.monotonic() + step[1] / 1000.0
        yield lambda: time.monotonic() >= resume_at
        prm = self.op_param()
        prm.opt.flag = pj.PJSUA_CALL_UNHOLD
        try:
            self.reinvite(prm)
        except pj.Error:
            self.step(index, "on_hold", t0, None)
            return
        t1 = time.monotonic()
        yield self.until(t1 + NON_INVITE_TIMEOUT_S, lambda: len(d.reinvite_ok) > n0 + 1)
        resumed = len(d.reinvite_ok) > n0 + 1
        self.step(index, "on_hold", t0, d.reinvite_ok[n0 + 1] if held and resumed else None)

    def xfer(self, index: int, step: list[Any]) -> Iterator[Wait]:
        """Blind transfer: the agent REFERs us; time REFER → our NOTIFY's 200.

        Then talk ``talk_ms`` on the new leg and hang it up (BYE), waiting for its end.
        """
        d = self.trace.dialogs.get(self.sip_call_id, Dialog())
        t0 = time.monotonic()
        yield self.until(t0 + REPLY_TIMEOUT_S, lambda: d.refer_rx is not None)
        if d.refer_rx is None:
            self.step(index, "transfer", t0, None)
            return
        start = d.refer_rx
        yield self.until(start + NON_INVITE_TIMEOUT_S, lambda: d.notify_final_ok is not None)
        self.step(index, "transfer", start, d.notify_final_ok)
        end = time.monotonic() + step[2] / 1000.0
        child = self.child
        if child is None or d.notify_final_ok is None:
            yield lambda: time.monotonic() >= end
            return
        yield self.until(end, lambda: child.disc_t is not None)
        if child.disc_t is None:
            child.hung_up = True
            with contextlib.suppress(pj.Error):
                child.hangup(pj.CallOpParam(True))
            yield self.until(time.monotonic() + BYE_WAIT_S, lambda: child.disc_t is not None)

    def step(self, index: int, kind: str, start: float, end: float | None) -> None:
        self.steps.append({"step": index, "kind": kind, "t_start": start, "t_end": end,
                           "ok": end is not None})

    # -- helpers -----------------------------------------------------------------
    def op_param(self) -> Any:
        prm = pj.CallOpParam(True)
        for name, value in (self.job.get("headers") or {}).items():
            h = pj.SipHeader()
            h.hName, h.hValue = name, value
            prm.txOption.headers.append(h)
        return prm

    def play(self, wav: str) -> Any:
        if self.audio is None:
            return None
        player = pj.AudioMediaPlayer()
        try:
            player.createPlayer(wav, pj.PJMEDIA_FILE_NO_LOOP)
            player.startTransmit(self.audio)
        except pj.Error:
            return None
        self.players.append(player)
        return player

    def stop_player(self, player: Any) -> None:
        if player is not None and self.audio is not None:
            with contextlib.suppress(pj.Error):
                player.stopTransmit(self.audio)

    def end(self) -> None:
        """Hang up this call and the leg a transfer made, whichever is still up."""
        self.hung_up = True
        for call in (self.child, self):
            if call is not None and call.disc_t is None:
                call.hung_up = True
                with contextlib.suppress(pj.Error):
                    call.hangup(pj.CallOpParam(True))

    def release_media(self) -> None:
        """Drop players, recorder and tap (their wrappers) once the call is over."""
        self.players.clear()
        self.recorder = None
        self.tap = None
        self.audio = None
        if self.child is not None:
            self.child.release_media()


class Worker:
    """The Endpoint, its account and the calls of this process."""

    def __init__(self, name: str, gap_s: float) -> None:
        self.name, self.gap_s = name, gap_s
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        cfg = new_config(MAX_CALLS, "siplab-uac")
        self.trace = SipTrace()
        cfg.logConfig.writer = self.trace
        cfg.logConfig.msgLogging = True
        cfg.logConfig.level = 4
        cfg.logConfig.consoleLevel = 4  # the writer receives what the console would
        cfg.logConfig.decor = 0
        cfg.medConfig.noVad = True  # RTP flows through silence too: loss is measurable
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 8000
        tid, self.port = start_loopback(self.ep, cfg)
        self.acc = pj.Account()
        self.acc.create(account_config(name, self.port, tid))
        self.calls: list[UacCall] = []
        self.finished: list[UacCall] = []
        self.queue: list[dict[str, Any]] = []
        self.closing: list[tuple[UacCall, float]] = []
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
        call = UacCall(self.acc, job, self.finished, self.trace, self.ep)
        try:
            call.makeCall(job["uri"], call.op_param())
            call.sip_call_id = str(call.getInfo().callIdString)
        except pj.Error as exc:
            emit({"ev": "done", "id": job["id"], "error": f"makeCall: {exc.info()}"})
            del call
            return
        self.calls.append(call)

    def hang_up_due(self, force: bool = False) -> None:
        """Run each answered call's script; send BYE (or CANCEL) once it is over."""
        now = time.monotonic()
        for call in self.calls:
            if call.hung_up or (call.disc_t is not None and not call.transferred()):
                continue
            d = self.trace.dialogs.get(call.sip_call_id)
            due = False
            if d is not None and d.final_t is not None and 200 <= d.final_code < 300:
                if call.script is None:
                    call.script = call.run_script(d.final_t)
                call.advance()
                if now - call.last_stat_t >= STAT_EVERY_S:
                    call.last_stat_t = now
                    call.take_stats()
                due = call.script_done
            if due or force:
                call.take_stats()
                call.end()

    def report_finished(self, force: bool = False) -> None:
        """Report each disconnected call once its BYE is answered, then drop its Call.

        pjsua2 signals DISCONNECTED as the BYE leaves, while the BYE transaction
        still runs in the stack: the record waits (up to ``BYE_WAIT_S``) for the 200.
        """
        while self.finished:
            call = self.finished.pop(0)
            self.calls.remove(call)
            call.release_media()
            self.closing.append((call, call.disc_t or 0.0))
        now = time.monotonic()
        keep = []
        for item in self.closing:
            call, disc_t = item
            d = self.trace.dialogs.get(call.sip_call_id, Dialog())
            # a transferred call ends with the leg the REFER made (its BYE, or its end)
            child = call.child
            last = self.trace.dialogs.get(child.sip_call_id, Dialog()) if child else d
            waiting = last.bye_tx is not None and last.bye_ok is None
            if waiting and not force and now - disc_t < BYE_WAIT_S:
                keep.append(item)
                continue
            self.trace.dialogs.pop(call.sip_call_id, None)
            end = {"bye_t": d.bye_tx, "bye_ok_t": d.bye_ok, "disc_t": disc_t}
            if child is not None:
                self.trace.dialogs.pop(child.sip_call_id, None)
                end = {"bye_t": last.bye_tx or child.disc_t, "bye_ok_t": last.bye_ok,
                       "disc_t": child.disc_t or disc_t, "xfer_code": last.final_code}
                child.parent = call.child = None
            emit({
                "ev": "done", "id": call.job["id"], "error": None,
                "sip_call_id": call.sip_call_id,
                "invite_t": d.invite_tx[0] if d.invite_tx else None,
                "invite_tx": len(d.invite_tx), "t18x": d.first_18x, "final_t": d.final_t,
                "final_code": d.final_code or call.disc_code,
                "reason": d.reason or call.disc_reason, "rejected_by": d.rejected_by,
                "server": d.server, **end,
                "media": call.stats or None, "turns": call.turns, "steps": call.steps,
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
        self.closing.clear()
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
