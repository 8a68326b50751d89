"""One pjsua2 caller process (``python -m loadgen.callers.worker``): up to 4 calls.

The pjsua2-python wheel carries at most 4 calls per process (PJSUA_MAX_CALLS) and
its Endpoint is a process singleton, so callers come as a pool of these processes
(:class:`loadgen.callers.pool.UacPool`). Each one owns an Endpoint bound to
127.0.0.1 (:func:`lab.proc.endpoint.start_loopback`) and ``threadCnt = 0``: every SIP
event and callback is handled on this process's main thread inside
``libHandleEvents``, between which the command pipe (stdin) is polled. No other
Python thread ever calls pjsua2 (that aborts the process).

Protocol (JSON lines, :mod:`lab.proc.lines`): stdin receives ``{"op": "call", "id",
"uri", "hold_s"}`` (optional: ``steps``, the call's script, see
:func:`loadgen.callers.jobs.job_steps`; ``relay``, the impairment emulator's
``agent_port``/``caller_port``; ``headers``; ``record``, a WAV path) and ``{"op":
"quit"}``; stdout answers ``{"ev": "ready", "port", "pid"}`` once and a ``{"ev":
"done", ...}`` per finished call (:func:`done_event`) with raw timestamps
(``time.monotonic()``, one clock for all processes of the machine), its RTP
statistics (``media``), its turns and its feature steps. A call pjsua2 refuses to
place is reported at once as ``{"ev": "done", "id", "error"}``.

Call starts within one process are spaced by ``--gap-ms``: pjsua2 aborts when ~30
calls start within half a second in one process.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from typing import Any

import pjsua2 as pj

from lab.proc.endpoint import account_config, new_config, start_loopback
from lab.proc.lines import ParentChannel
from lab.proc.worker import Lifetime, add_run_args, hard_exit, ready, run_until
from loadgen.callers.call import UacCall
from loadgen.callers.sip import Dialog, SipTrace

MAX_CALLS = 4
BYE_WAIT_S = 4.0  # a disconnected call's record waits this long for its BYE's 200
POLL_MS = 5  # libHandleEvents timeout: bounds command latency, costs CPU when short
STAT_EVERY_S = 1.0  # stream statistics are sampled this often while the call is up


def done_event(call: UacCall, d: Dialog, end: dict[str, Any]) -> dict[str, Any]:
    """The ``done`` event of a finished call: its SIP facts, media, turns and steps."""
    return {
        "ev": "done", "id": call.job["id"], "error": None,
        "sip_call_id": call.sip_call_id,
        "invite_t": d.invite_tx[0] if d.invite_tx else None,
        "invite_tx": len(d.invite_tx), "t18x": d.first_18x, "final_t": d.final_t,
        "final_code": d.final_code or call.disc_code,
        "reason": d.reason or call.disc_reason, "rejected_by": d.rejected_by,
        "server": d.server, **end,
        "media": call.stats or None, "turns": call.turns, "steps": call.steps,
    }


class Caller:
    """The Endpoint, its account and the calls of this process."""

    def __init__(self, name: str, gap_s: float, channel: ParentChannel) -> None:
        self.name, self.gap_s, self.channel = name, gap_s, channel
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
        self.quitting = False

    def pump(self, ms: int) -> None:
        """Handle SIP and media events for up to ``ms`` (callbacks run here)."""
        self.ep.libHandleEvents(ms)

    @property
    def idle(self) -> bool:
        """No call queued, up, or waiting for its BYE's answer."""
        return not self.calls and not self.queue and not self.closing

    def start_due(self) -> None:
        """Start the next queued call, at most one per ``gap_s`` (pjsua2 crashes otherwise)."""
        now = time.monotonic()
        if not self.queue or now - self.last_start < self.gap_s or len(self.calls) >= MAX_CALLS:
            return
        job = self.queue.pop(0)
        self.last_start = now
        call = UacCall(self.acc, job, self.finished, self.trace)
        try:
            call.makeCall(job["uri"], call.op_param())
            call.sip_call_id = str(call.getInfo().callIdString)
        except pj.Error as exc:
            self.channel.emit({"ev": "done", "id": job["id"], "error": f"makeCall: {exc.info()}"})
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
                script = call.start_script(d.final_t)
                script.advance()
                if now - call.last_stat_t >= STAT_EVERY_S:
                    call.last_stat_t = now
                    call.take_stats()
                due = script.done
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
            d = self.trace.dialog(call.sip_call_id)
            # a transferred call ends with the leg the REFER made (its BYE, or its end)
            child = call.child
            last = self.trace.dialog(child.sip_call_id) if child else d
            waiting = last.bye_tx is not None and last.bye_ok is None
            if waiting and not force and now - disc_t < BYE_WAIT_S:
                keep.append(item)
                continue
            self.channel.emit(done_event(call, d, self._close(call, d, last, disc_t)))
        self.closing = keep

    def _close(self, call: UacCall, d: Dialog, last: Dialog, disc_t: float
               ) -> dict[str, Any]:
        """Forget the call's dialogs; its end times (the new leg's, when transferred)."""
        self.trace.dialogs.pop(call.sip_call_id, None)
        child = call.child
        if child is None:
            return {"bye_t": d.bye_tx, "bye_ok_t": d.bye_ok, "disc_t": disc_t}
        self.trace.dialogs.pop(child.sip_call_id, None)
        end = {"bye_t": last.bye_tx or child.disc_t, "bye_ok_t": last.bye_ok,
               "disc_t": child.disc_t or disc_t, "xfer_code": last.final_code}
        child.parent = call.child = None
        return end

    def tick(self, life: Lifetime) -> None:
        """One pass of the loop: events, commands, call starts, scripts, reports."""
        self.pump(POLL_MS)
        for cmd in self.channel.commands():
            if cmd.get("op") == "call":
                self.queue.append(cmd)
            elif cmd.get("op") == "quit":
                self.quitting = True  # finish the calls in progress, then leave
        if self.channel.closed:
            life.stop("eof")
            return
        if life.over:
            return
        self.start_due()
        self.hang_up_due()
        self.report_finished()
        if self.quitting and self.idle:
            life.stop("quit")

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--name", default="uac")
    ap.add_argument("--gap-ms", type=float, default=20.0)
    add_run_args(ap)
    args = ap.parse_args(argv)
    channel = ParentChannel()
    caller = Caller(args.name, args.gap_ms / 1000.0, channel)
    ready(channel, port=caller.port)
    life = Lifetime(args.deadline)
    run_until(life, lambda: caller.tick(life))
    caller.shutdown()
    hard_exit(0)


if __name__ == "__main__":
    sys.exit(main())
