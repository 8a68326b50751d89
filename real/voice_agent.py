"""The voice agent: a pjsua2 user agent server that listens, thinks and answers.

Run as ``python -m real.voice_agent --port P --log FILE --deployment YAML ...``;
:class:`real.agent.VoiceAgentPool` starts several behind Kamailio. Per call:

1. **Answer** -- ``180 Ringing`` at once, ``200 OK`` after ``deployment.agent.answer_ms``.
   The caller's ``X-Siplab-Plan`` header (:mod:`real.plan_header`) says how long each
   reply and IVR prompt is to be, so the real and the twin backend play the same lengths.
2. **Listen** -- caller audio arrives through an ``AudioMediaPort`` sink
   (:mod:`real.media_ports`), 20 ms PCM frames stamped on ``time.monotonic()``.
3. **Endpoint** -- WebRTC VAD on every frame; end of speech after ``vad_ms`` of
   non-speech (:mod:`real.vad`). ``vad_ms`` is drawn per utterance from
   ``deployment.ai.vad_ms`` with the named stream ``real.agent.<name>.ai.vad``.
4. **Answer the turn** -- STT (PocketSphinx), reply (rules + emulated time to first
   token, drawn from ``deployment.ai.llm.ttft_ms``), TTS (eSpeak NG) on a worker
   thread with provider slots (:mod:`real.ai`); the reply is padded or cut to the
   planned ``agent_speech_s`` and played through an ``AudioMediaPort`` source.
   The agent is half-duplex: caller audio during its own turn is not listened to
   (no barge-in).
5. **Features** -- DTMF menu prompts (RFC 4733), in-dialog MESSAGE (RFC 3428), hold
   (RFC 3264 section 8.4) and blind transfer by REFER (RFC 3515), decided by
   :mod:`real.features` and carried out here.

RTP flows through silence too (VAD off): the impairment emulator in the media path learns the
agent's address from its first packet, and the caller's RTCP sees a steady stream.

Why a pool of processes: the pjsua2-python wheel carries at most 4 calls per process
(PJSUA_MAX_CALLS = 4) and its Endpoint is a process singleton that may only be called
from its own thread. So every pjsua2 call here runs on the main thread
(``threadCnt = 0``, ``libHandleEvents`` polling); pjsua itself answers a fifth INVITE
``486 Busy Here``, and Kamailio's dispatcher fails over to the next agent process.

Every record goes to ``--log`` as a JSON line (see :data:`TURN_KEYS`), stamped on
``time.monotonic()``, the one clock of all processes on the machine. The process
says ``ready`` on its stdout (:mod:`lab.proc.lines`) and ends at ``--deadline`` or
on SIGTERM (:mod:`lab.proc.worker`).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

import pjsua2 as pj
import yaml

from lab.proc.endpoint import account_config, new_config, start_loopback
from lab.proc.lines import ParentChannel
from lab.proc.worker import Lifetime, add_run_args, hard_exit, ready, run_until
from lab.spec import Deployment
from real import plan_header
from real import reply as replies
from real.ai import AgentAI
from real.features import Features, loopback_target
from real.media_ports import Playout, RxPort, TxPort
from real.vad import Endpointer

MAX_CALLS = 4
#: How long an ended call's media ports live on before they are destroyed (seconds).
RETIRE_S = 5.0
POLL_MS = 5
TURN_KEYS = (
    "ev", "agent", "sip_call_id", "call", "turn", "t_speech_start", "t_last_speech",
    "t_end_of_speech_detected", "vad_ms", "stt_ms", "llm_ms", "tts_ms", "queue_ms",
    "stt_wait_ms", "llm_wait_ms", "tts_wait_ms", "t_reply_start", "agent_ms", "reply_s",
    "planned_agent_speech_s", "llm_tokens", "text", "keywords", "reply",
)


class Log:
    """JSON lines into the ``--log`` file (main thread only), flushed per record."""

    def __init__(self, path: Path, agent: str) -> None:
        self.agent = agent
        self.fh: IO[str] = open(path, "a", buffering=1)  # noqa: SIM115 - closed in close()

    def write(self, ev: str, **fields: Any) -> None:
        self.fh.write(json.dumps({"ev": ev, "agent": self.agent, **fields}) + "\n")

    def close(self) -> None:
        self.fh.close()


class AgentCall(pj.Call):
    """One answered call: its ports, its conversation, its features."""

    def __init__(self, agent: VoiceAgent, acc: Any, call_id: int, plan: dict[str, Any] | None
                 ) -> None:
        super().__init__(acc, call_id)
        self.agent = agent
        self.key = agent.next_key()
        self.plan = plan
        self.sip_call_id = ""
        self.proxy = ""  # host:port the INVITE came from (Kamailio)
        self.t_invite = time.monotonic()
        self.answer_at: float | None = None
        self.t_confirmed: float | None = None
        self.disconnected = False
        self.playout = Playout()
        self.rx: RxPort | None = None
        self.tx: TxPort | None = None
        self.talk = agent.ai.conversation(
            self.key, plan_header.turns(plan) if plan else [], self.playout)
        self.features = Features(plan)

    @property
    def plan_call(self) -> int | None:
        return self.plan.get("call") if self.plan else None

    def log(self, ev: str, **fields: Any) -> None:
        """One record about this call (its Call-ID and plan call id first)."""
        self.agent.log.write(ev, sip_call_id=self.sip_call_id, call=self.plan_call, **fields)

    # pjsua2 callbacks: main thread (threadCnt = 0)
    def onCallState(self, prm: Any) -> None:
        ci = self.getInfo()
        if ci.state == pj.PJSIP_INV_STATE_CONFIRMED and self.t_confirmed is None:
            self.t_confirmed = time.monotonic()
        elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED and not self.disconnected:
            self.disconnected = True
            self.log("call_end", t_disconnected=time.monotonic(),
                     code=int(ci.lastStatusCode), reason=str(ci.lastReason),
                     turns=self.talk.turn)
            self.agent.ended.append(self)

    def onCallMediaState(self, prm: Any) -> None:
        ci = self.getInfo()
        for i, mi in enumerate(ci.media):
            if mi.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            held = mi.status == pj.PJSUA_CALL_MEDIA_REMOTE_HOLD
            if self.features.media(held):
                self.playout.paused = held
                self.log("hold" if held else "resume", t=time.monotonic())
            if mi.status in (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                aud = self.getAudioMedia(i)
                if self.rx is None:
                    self.rx = RxPort(f"rx{self.key}")
                    self.tx = TxPort(f"tx{self.key}", self.playout)
                assert self.tx is not None
                aud.startTransmit(self.rx)
                self.tx.startTransmit(aud)

    def onDtmfDigit(self, prm: Any) -> None:
        self.features.digits.append((str(prm.digit), time.monotonic()))

    def onInstantMessage(self, prm: Any) -> None:
        self.features.messages += 1
        self.log("message", t_received=time.monotonic(), content_type=str(prm.contentType),
                 chars=len(str(prm.msgBody)))

    def onCallTransferStatus(self, prm: Any) -> None:
        code = int(prm.statusCode)
        self.log("transfer_status", t=time.monotonic(), code=code, final=bool(prm.finalNotify))
        if self.features.transfer_status(code, bool(prm.finalNotify)):
            prm.cont = False


class AgentAccount(pj.Account):
    def __init__(self, agent: VoiceAgent) -> None:
        super().__init__()
        self.agent = agent

    def onIncomingCall(self, prm: Any) -> None:
        self.agent.incoming(self, prm)


class VoiceAgent:
    """The Endpoint, its calls, and the AI side of this process."""

    def __init__(self, name: str, port: int, dep: Deployment, log: Log, seed: int,
                 lock_dir: Path | None) -> None:
        self.name, self.dep, self.log = name, dep, log
        self.ai = AgentAI(dep.ai, name, seed, lock_dir, 2 * MAX_CALLS,
                          lambda vad_ms: Endpointer(vad_ms=vad_ms))
        self.calls: list[AgentCall] = []
        # ports of ended calls, destroyed only RETIRE_S later: the conference bridge's
        # clock thread may still be inside a port's callback just after the call's media
        # went away, and destroying the Python object under it crashes the process
        self._retired: deque[tuple[float, RxPort | None, TxPort | None]] = deque()
        self.ended: list[AgentCall] = []
        self._key = 0
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        cfg = new_config(MAX_CALLS, "siplab-voice-agent")
        cfg.logConfig.level = 1
        cfg.logConfig.consoleLevel = 1
        # RTP through silence too (no VAD suppression): the emulator in the path learns
        # our address from the first packet, and the caller's RTCP sees a steady stream
        cfg.medConfig.noVad = True
        tid, self.port = start_loopback(self.ep, cfg, port)
        self.acc = AgentAccount(self)
        self.acc.create(account_config(name, self.port, tid))

    def next_key(self) -> int:
        self._key += 1
        return self._key

    # ------------------------------------------------------------ signalling
    def incoming(self, acc: Any, prm: Any) -> None:
        """An INVITE: ring at once, answer after ``answer_ms`` (in :meth:`step`)."""
        plan = plan_header.from_message(str(prm.rdata.wholeMsg))
        call = AgentCall(self, acc, prm.callId, plan)
        call.sip_call_id = str(call.getInfo().callIdString)
        call.proxy = str(prm.rdata.srcAddress)
        self.calls.append(call)
        op = pj.CallOpParam()
        op.statusCode = 180
        call.answer(op)
        call.answer_at = call.t_invite + self.dep.agent.answer_ms / 1000.0
        call.log("call", t_invite=call.t_invite, plan_steps=len(plan["steps"]) if plan else 0)

    def step(self) -> None:
        """One pass of the main loop after ``libHandleEvents``."""
        now = time.monotonic()
        for call in list(self.calls):
            if call.disconnected:
                continue
            if call.answer_at is not None and now >= call.answer_at:
                call.answer_at = None
                op = pj.CallOpParam()
                op.statusCode = 200
                with contextlib.suppress(pj.Error):
                    call.answer(op)
                call.log("answered", t_200=time.monotonic())
            if call.rx is not None:
                call.talk.listen(call.rx.inbox, call.features.held, call.sip_call_id)
            self._dtmf(call)
            self._collect(call)
            self._maybe_transfer(call)
            hangup_at = call.features.hangup_at
            if hangup_at is not None and now >= hangup_at:
                call.features.hangup_at = None
                with contextlib.suppress(pj.Error):
                    call.hangup(pj.CallOpParam(True))
        while self.ended:
            self._drop(self.ended.pop())

    def _drop(self, call: AgentCall) -> None:
        """Disconnect the ports and forget the call (only Python references remain)."""
        if call in self.calls:
            self.calls.remove(call)
        now = time.monotonic()
        self._retired.append((now, call.rx, call.tx))
        call.rx = call.tx = None
        while self._retired and self._retired[0][0] < now - RETIRE_S:
            self._retired.popleft()
        gc.collect()

    # ------------------------------------------------------------ turns and features
    def _dtmf(self, call: AgentCall) -> None:
        """Log each digit; after a planned DTMF step's last digit, speak its prompt."""
        while call.features.digits:
            digit, t = call.features.digits.pop(0)
            call.log("dtmf", digit=digit, t_digit_received=t)
            done = call.features.digit(digit)
            if done is None:
                continue  # more digits of this step to come
            k, digits, prompt_s = done
            info = {"step": k, "digits": digits, "t_last_digit": t, "prompt_s": prompt_s}
            call.talk.prompt(k, digits, prompt_s, info)

    def _collect(self, call: AgentCall) -> None:
        """Log finished turns and prompts once their first frame has been played."""
        for ev, rec in call.talk.collect():
            if ev == "error":
                self.log.write("error", sip_call_id=call.sip_call_id, **rec)
            else:
                call.log(ev, **rec)

    def _maybe_transfer(self, call: AgentCall) -> None:
        """Send the planned REFER once every step planned before it is done."""
        talk, features = call.talk, call.features
        if not features.transfer_due(talk.replies_done, talk.prompts_done, talk.busy,
                                     call.t_confirmed is not None):
            return
        assert features.xfer_plan is not None
        features.refer_sent = True
        t = time.monotonic()
        planned = features.xfer_plan["target"]
        target = loopback_target(planned, call.proxy)
        try:
            call.xfer(target, pj.CallOpParam(True))
            call.log("refer", t_refer=t, target=target, planned_target=planned)
        except pj.Error as exc:
            self.log.write("error", sip_call_id=call.sip_call_id, what="refer",
                           error=str(exc.info()))

    # ------------------------------------------------------------ shutdown
    def shutdown(self) -> None:
        """Hang up, drain, drop every Call reference, then destroy the library."""
        for call in self.calls:
            if not call.disconnected:
                with contextlib.suppress(pj.Error):
                    call.hangup(pj.CallOpParam(True))
        end = time.monotonic() + 2.0
        while self.calls and time.monotonic() < end:
            self.ep.libHandleEvents(10)
            self.step()
        self.ai.shutdown()
        self.calls.clear()
        self.ended.clear()
        self._retired.clear()
        gc.collect()
        self.acc.shutdown()
        del self.acc
        gc.collect()
        self.ep.libDestroy()


def load_deployment(path: Path | None) -> Deployment:
    """The deployment from a YAML file (as :func:`lab.spec.dump_resolved` writes it)."""
    if path is None:
        return Deployment()
    data = yaml.safe_load(Path(path).read_text()) or {}
    if "deployment" in data:
        data = data["deployment"]
    return Deployment.model_validate(data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--name", default="agent0")
    ap.add_argument("--port", type=int, default=0, help="SIP UDP port on 127.0.0.1 (0: any)")
    ap.add_argument("--log", type=Path, required=True, help="JSON-lines log file")
    ap.add_argument("--deployment", type=Path, default=None, help="deployment YAML")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lock-dir", type=Path, default=None,
                    help="share stage concurrency slots with the pool (flock files)")
    add_run_args(ap, deadline_required=False)
    args = ap.parse_args(argv)
    replies.take_key()  # the LLM key stays in memory: eSpeak NG and the like never see it
    channel = ParentChannel()  # pjlib prints on stdout: the protocol moves off fd 1
    life = Lifetime(args.deadline, signals=True)
    log = Log(args.log, args.name)
    agent = VoiceAgent(args.name, args.port, load_deployment(args.deployment), log,
                       args.seed, args.lock_dir)
    log.write("ready", port=agent.port, pid=os.getpid(), t=time.monotonic())
    ready(channel, port=agent.port)

    def tick() -> None:
        agent.ep.libHandleEvents(POLL_MS)
        agent.step()

    run_until(life, tick)
    agent.shutdown()
    log.write("exit", t=time.monotonic())
    log.close()
    hard_exit(0)


if __name__ == "__main__":
    sys.exit(main())
