"""A minimal pjsua2 test caller for the voice agent (tests and ``bench/bench_agent.py``).

Run as ``python -m real.agent_probe --script FILE --out FILE``. It stays in ``real``
next to the agent it tests (it encodes the agent's ``X-Siplab-Plan`` itself and
hears through the agent's own frame ports). It is not the real
backend's caller (:mod:`loadgen.callers.worker`): it exists to measure the agent from the
outside. Each call dials with an ``X-Siplab-Plan`` header, then walks its steps:

- ``["turn", caller_ms, agent_ms]`` -- speaks ``caller_ms`` of eSpeak speech through an
  ``AudioMediaPort`` source, then listens: the first received frame above
  :data:`ONSET_LEVEL` is the reply's onset; **voice to voice** = onset − end of the
  caller's speech (both on ``time.monotonic()`` at this process's ports, so the
  caller's own jitter buffer and the media path are included). The next step starts
  ``agent_ms`` (or, without a plan, 0.8 s of silence) after the onset.
- ``["dtmf", digits, prompt_ms]`` -- RFC 4733 telephone-events; ``prompt_ms`` of the
  event is the first digit sent → the prompt's onset.
- ``["msg", text]`` -- an in-dialog RFC 3428 MESSAGE; records the final status code.
- ``["talk", ms]`` -- waits.

Script: ``{"target": "sip:agent@127.0.0.1:P", "deadline_s": 60, "calls": [{"id": 0,
"start_s": 0.0, "steps": [...]}, ...]}`` (at most 4 calls, the wheel's limit). Output:
one JSON line per call with its events. All pjsua2 work is on the main thread.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pjsua2 as pj

from lab.proc.endpoint import account_config, new_config, start_loopback
from lab.proc.worker import hard_exit
from lab.speech import caller_speech
from real import plan_header
from real.media_ports import Playout, RxPort, TxPort

ONSET_LEVEL = 300.0  # mean |sample| of a 20 ms frame that counts as the agent speaking
REPLY_GAP_S = 0.3
SILENCE_END_S = 0.8


class ProbeCall(pj.Call):
    def __init__(self, acc: Any, spec: dict[str, Any]) -> None:
        super().__init__(acc)
        self.spec = spec
        self.steps: list[list[Any]] = [list(s) for s in spec["steps"]]
        self.playout = Playout()
        self.rx: RxPort | None = None
        self.tx: TxPort | None = None
        self.media_at: float | None = None
        self.state = "dialing"
        self.done = False
        self.idx = -1
        self.wait_until = 0.0
        self.listen_from: float | None = None
        self.onset: float | None = None
        self.last_loud: float | None = None
        self.events: list[dict[str, Any]] = []
        self.result: dict[str, Any] = {"id": spec["id"], "events": self.events}
        self.msg_code: int | None = None
        self.energy: list[tuple[float, float]] = []

    def onCallState(self, prm: Any) -> None:
        ci = self.getInfo()
        if ci.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.result["t_confirmed"] = time.monotonic()
        elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.result.update(t_disconnected=time.monotonic(),
                               last_code=int(ci.lastStatusCode))
            self.done = True

    def onCallMediaState(self, prm: Any) -> None:
        ci = self.getInfo()
        for i, mi in enumerate(ci.media):
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                aud = self.getAudioMedia(i)
                if self.rx is None:
                    self.rx = RxPort(f"prx{self.spec['id']}")
                    self.tx = TxPort(f"ptx{self.spec['id']}", self.playout)
                    self.media_at = time.monotonic()
                assert self.tx is not None
                aud.startTransmit(self.rx)
                self.tx.startTransmit(aud)

    def onInstantMessageStatus(self, prm: Any) -> None:
        self.msg_code = int(prm.code)

    def onCallTransferRequest(self, prm: Any) -> None:
        self.events.append({"kind": "refer", "t": time.monotonic(), "target": str(prm.dstUri)})
        prm.statusCode = 202  # accept; pjsua places the new call and sends the NOTIFYs


class Probe:
    def __init__(self, script: dict[str, Any]) -> None:
        self.script = script
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        cfg = new_config(4)
        cfg.logConfig.level = 1
        cfg.logConfig.consoleLevel = 1
        tid, port = start_loopback(self.ep, cfg)
        self.acc = pj.Account()
        self.acc.create(account_config("probe", port, tid))
        self.calls: list[ProbeCall] = []
        self.speech: dict[int, bytes] = {}

    def speech_pcm(self, ms: int) -> bytes:
        if ms not in self.speech:
            self.speech[ms] = np.asarray(caller_speech(ms / 1000.0), dtype="<i2").tobytes()
        return self.speech[ms]

    def dial(self, spec: dict[str, Any]) -> None:
        call = ProbeCall(self.acc, spec)
        op = pj.CallOpParam(True)
        hdr = pj.SipHeader()
        hdr.hName = plan_header.HEADER
        hdr.hValue = plan_header.encode_items(spec["steps"], spec["id"])
        op.txOption.headers.append(hdr)
        call.result["t_invite"] = time.monotonic()
        call.makeCall(self.script["target"], op)
        call.result["sip_call_id"] = str(call.getInfo().callIdString)
        self.calls.append(call)

    def advance(self, call: ProbeCall) -> None:
        """Run the call's step machine (main thread)."""
        now = time.monotonic()
        frames = call.rx.inbox if call.rx is not None else None
        loud_t = None
        while frames:
            t, data = frames.popleft()
            level = float(np.abs(np.frombuffer(data, dtype="<i2").astype(np.int32)).mean())
            if level > ONSET_LEVEL:
                call.last_loud = t
                if loud_t is None:
                    loud_t = t
        if call.media_at is None or call.done or call.state == "hangup":
            return
        if call.state == "listen":
            start = call.listen_from or 0.0
            if call.onset is None and loud_t is not None and loud_t >= start:
                call.onset = loud_t
                ev = call.events[-1]
                ev["t_onset"] = loud_t
                if ev["kind"] == "dtmf":
                    ev["prompt_ms"] = (loud_t - ev["t_start"]) * 1e3
                else:
                    ev["v2v_ms"] = (loud_t - ev["t_speech_end"]) * 1e3
                planned = ev.get("planned_s")
                if planned:
                    call.wait_until = loud_t + planned + REPLY_GAP_S
            if call.onset is not None:
                planned = call.events[-1].get("planned_s")
                quiet = call.last_loud is not None and now - call.last_loud > SILENCE_END_S
                if (planned and now >= call.wait_until) or (not planned and quiet):
                    call.state = "next"
            return
        if call.state == "speaking":
            clip = ("say", call.idx)
            if clip in call.playout.finished:
                ev = call.events[-1]
                ev["t_speech_end"] = call.playout.finished[clip]
                call.listen_from = ev["t_speech_end"]
                call.onset = None
                call.state = "listen"
            return
        if call.state == "msg":
            if call.msg_code is not None:
                call.events[-1].update(code=call.msg_code, t_status=now)
                call.state = "next"
            return
        if call.state == "wait" and now < call.wait_until:
            return
        if call.state in ("wait", "next", "dialing"):
            self.next_step(call, now)

    def next_step(self, call: ProbeCall, now: float) -> None:
        call.idx += 1
        if call.idx >= len(call.steps):
            call.state = "hangup"
            with contextlib.suppress(pj.Error):
                call.hangup(pj.CallOpParam(True))
            return
        step = call.steps[call.idx]
        kind = step[0]
        if kind == "turn":
            call.playout.play(("say", call.idx), self.speech_pcm(int(step[1])))
            call.events.append({"kind": "turn", "t_start": now, "planned_s": step[2] / 1000.0})
            call.state = "speaking"
        elif kind == "dtmf":
            prm = pj.CallSendDtmfParam()
            prm.digits = str(step[1])
            prm.method = pj.PJSUA_DTMF_METHOD_RFC2833
            call.sendDtmf(prm)
            call.events.append({"kind": "dtmf", "t_start": now, "planned_s": step[2] / 1000.0})
            call.listen_from, call.onset, call.state = now, None, "listen"
        elif kind == "msg":
            prm = pj.SendInstantMessageParam()
            prm.content = str(step[1]) if len(step) > 1 else "hello"
            call.msg_code = None
            call.sendInstantMessage(prm)
            call.events.append({"kind": "msg", "t_start": now})
            call.state = "msg"
        else:
            call.wait_until = now + float(step[1]) / 1000.0
            call.events.append({"kind": kind, "t_start": now})
            call.state = "wait"

    def _tick(self, fh: Any, timed_out: bool = False) -> None:
        """Advance every call; write and drop the finished ones (no reference survives)."""
        for call in list(self.calls):
            self.advance(call)
            if call.done:
                if timed_out:
                    call.result["timed_out"] = True
                fh.write(json.dumps(call.result) + "\n")
                fh.flush()
                self.calls.remove(call)
                call.rx = call.tx = None
        gc.collect()

    def run(self, out: Path) -> None:
        t0 = time.monotonic()
        deadline = t0 + float(self.script.get("deadline_s", 60))
        todo = sorted(self.script["calls"], key=lambda c: c.get("start_s", 0.0))
        with out.open("a") as fh:
            while time.monotonic() < deadline and (todo or self.calls):
                self.ep.libHandleEvents(5)
                now = time.monotonic()
                while todo and now - t0 >= todo[0].get("start_s", 0.0):
                    self.dial(todo.pop(0))
                self._tick(fh)
            for call in self.calls:
                with contextlib.suppress(pj.Error):
                    call.hangup(pj.CallOpParam(True))
            end = time.monotonic() + 2.0
            while self.calls and time.monotonic() < end:
                self.ep.libHandleEvents(10)
                self._tick(fh, timed_out=True)
        self.calls.clear()
        gc.collect()
        self.acc.shutdown()
        del self.acc
        gc.collect()
        self.ep.libDestroy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--script", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--run", default="", help="the run's directory (identifies the process)")
    args = ap.parse_args(argv)
    os.dup2(2, 1)  # pjlib prints on stdout; this process speaks no protocol
    Probe(json.loads(args.script.read_text())).run(args.out)
    hard_exit(0)


if __name__ == "__main__":
    sys.exit(main())
