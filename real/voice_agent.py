"""The voice agent: a pjsua2 user agent server that listens, thinks and answers.

Run as ``python -m real.voice_agent --port P --log FILE --deployment YAML ...``;
:mod:`real.agent_pool` starts several behind Kamailio. Per call:

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
   thread with provider slots (:mod:`real.stages`); the reply is padded or cut to the
   planned ``agent_speech_s`` and played through an ``AudioMediaPort`` source.
   The agent is half-duplex: caller audio during its own turn is not listened to
   (no barge-in).
5. **Features** -- RFC 4733 telephone-events (DTMF): after the last digit of a planned
   DTMF step, a spoken menu prompt of the planned length. RFC 3428 MESSAGE inside the
   dialog: pjsua answers ``200 OK``, the agent logs it. Hold (RFC 3264 section 8.4
   re-INVITE ``a=sendonly``): pjsua answers ``recvonly``; playback pauses until resume.
   Blind transfer (RFC 3515): once the steps before a planned transfer are done
   (replies and prompts played, MESSAGEs received, hold cycles resumed), the agent
   sends ``REFER`` to the caller, and hangs up after the NOTIFY that reports ``200``
   (RFC 3515 section 2.4.5, message/sipfrag). The ``Refer-To`` keeps the planned
   target's user part at the proxy the call came through (:func:`loopback_target`),
   which routes ``human`` to the local transfer target.

RTP flows through silence too (VAD off): the RTP relay in the media path learns the
agent's address from its first packet, and the caller's RTCP sees a steady stream.

Why a pool of processes: the pjsua2-python wheel carries at most 4 calls per process
(PJSUA_MAX_CALLS = 4) and its Endpoint is a process singleton that may only be called
from its own thread. So every pjsua2 call here runs on the main thread
(``threadCnt = 0``, ``libHandleEvents`` polling); pjsua itself answers a fifth INVITE
``486 Busy Here``, and Kamailio's dispatcher fails over to the next agent process.

Every record goes to ``--log`` as a JSON line (see :data:`TURN_KEYS`), stamped on
``time.monotonic()``, the one clock of all processes on the machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import gc
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

import pjsua2 as pj
import yaml

from lab.spec import Deployment
from lab.streams import Streams
from real import plan_header
from real.endpoint import account_config, new_config, start_loopback
from real.media_ports import Playout, RxPort, TxPort
from real.stages import Pipeline, Slots, TurnJob, prompt_pcm
from real.vad import Endpointer

MAX_CALLS = 4
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
    """One answered call: its ports, endpointer, plan and turn state."""

    def __init__(self, agent: VoiceAgent, acc: Any, call_id: int, plan: dict[str, Any] | None
                 ) -> None:
        super().__init__(acc, call_id)
        self.agent = agent
        self.key = agent.next_key()
        self.plan = plan
        self.turn_plan = plan_header.turns(plan) if plan else []
        self.prompt_plan = plan_header.prompts(plan) if plan else []
        self.xfer_plan = plan_header.transfer(plan) if plan else None
        self.sip_call_id = ""
        self.proxy = ""  # host:port the INVITE came from (Kamailio)
        self.t_invite = time.monotonic()
        self.answer_at: float | None = None
        self.t_confirmed: float | None = None
        self.disconnected = False
        self.playout = Playout()
        self.rx: RxPort | None = None
        self.tx: TxPort | None = None
        self.endpointer = Endpointer(vad_ms=agent.draw_vad_ms())
        self.turn = 0
        self.busy = False  # a turn or prompt is being produced or played
        self.pending: list[tuple[str, Any, cf.Future[Any], dict[str, Any]]] = []
        self.digits: list[tuple[str, float]] = []
        self.digit_count = 0
        self.prompts_done = 0
        self.replies_done = 0
        self.refer_sent = False
        self.hangup_at: float | None = None
        self.held = False
        self.resumes = 0  # hold/resume cycles completed (RFC 3264 re-INVITEs)
        self.messages = 0  # in-dialog MESSAGEs received

    # pjsua2 callbacks: main thread (threadCnt = 0)
    def onCallState(self, prm: Any) -> None:
        ci = self.getInfo()
        if ci.state == pj.PJSIP_INV_STATE_CONFIRMED and self.t_confirmed is None:
            self.t_confirmed = time.monotonic()
        elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED and not self.disconnected:
            self.disconnected = True
            self.agent.log.write("call_end", sip_call_id=self.sip_call_id,
                                 call=self.plan_call, t_disconnected=time.monotonic(),
                                 code=int(ci.lastStatusCode), reason=str(ci.lastReason),
                                 turns=self.turn)
            self.agent.ended.append(self)

    def onCallMediaState(self, prm: Any) -> None:
        ci = self.getInfo()
        for i, mi in enumerate(ci.media):
            if mi.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            held = mi.status == pj.PJSUA_CALL_MEDIA_REMOTE_HOLD
            if held != self.held:
                self.held = held
                self.resumes += not held
                self.playout.paused = held
                self.agent.log.write("hold" if held else "resume", sip_call_id=self.sip_call_id,
                                     call=self.plan_call, t=time.monotonic())
            if mi.status in (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                aud = self.getAudioMedia(i)
                if self.rx is None:
                    self.rx = RxPort(f"rx{self.key}")
                    self.tx = TxPort(f"tx{self.key}", self.playout)
                assert self.tx is not None
                aud.startTransmit(self.rx)
                self.tx.startTransmit(aud)

    def onDtmfDigit(self, prm: Any) -> None:
        self.digits.append((str(prm.digit), time.monotonic()))

    def onInstantMessage(self, prm: Any) -> None:
        self.messages += 1
        self.agent.log.write("message", sip_call_id=self.sip_call_id, call=self.plan_call,
                             t_received=time.monotonic(), content_type=str(prm.contentType),
                             chars=len(str(prm.msgBody)))

    def onCallTransferStatus(self, prm: Any) -> None:
        code = int(prm.statusCode)
        self.agent.log.write("transfer_status", sip_call_id=self.sip_call_id,
                             call=self.plan_call, t=time.monotonic(), code=code,
                             final=bool(prm.finalNotify))
        if prm.finalNotify or code >= 200:
            prm.cont = False
            if self.hangup_at is None:
                self.hangup_at = time.monotonic()

    @property
    def plan_call(self) -> int | None:
        return self.plan.get("call") if self.plan else None


class AgentAccount(pj.Account):
    def __init__(self, agent: VoiceAgent) -> None:
        super().__init__()
        self.agent = agent

    def onIncomingCall(self, prm: Any) -> None:
        self.agent.incoming(self, prm)


class VoiceAgent:
    """The Endpoint, its calls, and the turn pipeline of this process."""

    def __init__(self, name: str, port: int, dep: Deployment, log: Log, seed: int,
                 lock_dir: Path | None) -> None:
        self.name, self.dep, self.log = name, dep, log
        ai = dep.ai
        streams = Streams(seed)
        self._vad = ai.vad_ms.sampler(streams.rng(f"real.agent.{name}.ai.vad"))
        self._ttft = ai.llm.ttft_ms.sampler(streams.rng(f"real.agent.{name}.ai.llm.ttft"))
        self._tokens = ai.llm.tokens.sampler(streams.rng(f"real.agent.{name}.ai.llm.tokens"))
        self.pipeline = Pipeline({s: Slots(s, getattr(ai, s).concurrency, lock_dir)
                                  for s in ("stt", "llm", "tts")}, ai.llm.tokens_per_s)
        self.pipeline.recognizer.warm_up(2)
        self.pool = cf.ThreadPoolExecutor(max_workers=2 * MAX_CALLS,
                                          thread_name_prefix="stage")
        self.calls: list[AgentCall] = []
        self.ended: list[AgentCall] = []
        self._key = 0
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        cfg = new_config(MAX_CALLS, "siplab-voice-agent")
        cfg.logConfig.level = 1
        cfg.logConfig.consoleLevel = 1
        # RTP through silence too (no VAD suppression): a relay in the path learns our
        # address from the first packet, and the caller's RTCP sees a steady stream
        cfg.medConfig.noVad = True
        tid, self.port = start_loopback(self.ep, cfg, port)
        self.acc = AgentAccount(self)
        self.acc.create(account_config(name, self.port, tid))

    def next_key(self) -> int:
        self._key += 1
        return self._key

    def draw_vad_ms(self) -> float:
        return max(20.0, float(self._vad()))

    # ------------------------------------------------------------ signalling
    def incoming(self, acc: Any, prm: Any) -> None:
        plan = plan_header.from_message(str(prm.rdata.wholeMsg))
        call = AgentCall(self, acc, prm.callId, plan)
        call.sip_call_id = str(call.getInfo().callIdString)
        call.proxy = str(prm.rdata.srcAddress)
        self.calls.append(call)
        op = pj.CallOpParam()
        op.statusCode = 180
        call.answer(op)
        call.answer_at = call.t_invite + self.dep.agent.answer_ms / 1000.0
        self.log.write("call", sip_call_id=call.sip_call_id, call=call.plan_call,
                       t_invite=call.t_invite, plan_steps=len(plan["steps"]) if plan else 0)

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
                self.log.write("answered", sip_call_id=call.sip_call_id, call=call.plan_call,
                               t_200=time.monotonic())
            self._listen(call)
            self._dtmf(call)
            self._collect(call)
            self._maybe_transfer(call)
            if call.hangup_at is not None and now >= call.hangup_at:
                call.hangup_at = None
                with contextlib.suppress(pj.Error):
                    call.hangup(pj.CallOpParam(True))
        while self.ended:
            call = self.ended.pop()
            self._drop(call)

    def _drop(self, call: AgentCall) -> None:
        """Disconnect the ports and forget the call (only Python references remain)."""
        if call in self.calls:
            self.calls.remove(call)
        call.rx = call.tx = None
        gc.collect()

    # ------------------------------------------------------------ turns
    def _listen(self, call: AgentCall) -> None:
        if call.rx is None:
            return
        inbox = call.rx.inbox
        while inbox:
            t, frame = inbox.popleft()
            if call.busy or call.held:
                continue
            utt = call.endpointer.feed(frame, t)
            if utt is None:
                continue
            planned = (call.turn_plan[call.turn][1] if call.turn < len(call.turn_plan)
                       else None)
            vad_ms = call.endpointer.vad_ms
            job = TurnJob(call.key, call.sip_call_id, call.turn, utt.pcm, utt.t_end_detected,
                          float(self._ttft()), float(self._tokens()), planned, call.playout)
            info = {"turn": call.turn, "t_speech_start": utt.t_start,
                    "t_last_speech": utt.t_last_speech,
                    "t_end_of_speech_detected": utt.t_end_detected, "vad_ms": vad_ms,
                    "planned_agent_speech_s": planned, "llm_tokens": job.tokens}
            call.pending.append(("turn", call.turn, self.pool.submit(self.pipeline.run, job),
                                 info))
            call.turn += 1
            call.busy = True
            call.endpointer = Endpointer(vad_ms=self.draw_vad_ms())
            inbox.clear()

    def _dtmf(self, call: AgentCall) -> None:
        while call.digits:
            digit, t = call.digits.pop(0)
            call.digit_count += 1
            self.log.write("dtmf", sip_call_id=call.sip_call_id, call=call.plan_call,
                           digit=digit, t_digit_received=t)
            # which planned DTMF step does this digit complete?
            total, step, prompt_s, digits = 0, None, None, digit
            for k, (ds, p) in enumerate(call.prompt_plan):
                total += len(ds)
                if call.digit_count == total:
                    step, prompt_s, digits = k, p, ds
                    break
                if call.digit_count < total:
                    step = -1
                    break
            if step == -1:
                continue  # more digits of this step to come
            k = step if step is not None else call.digit_count
            info = {"step": k, "digits": digits, "t_last_digit": t, "prompt_s": prompt_s}
            fut = self.pool.submit(self._prompt, call.playout, ("prompt", k), digits, prompt_s)
            call.pending.append(("prompt", k, fut, info))
            call.busy = True

    def _prompt(self, playout: Playout, clip: Any, digits: str, prompt_s: float | None
                ) -> dict[str, Any]:
        t = time.monotonic()
        with self.pipeline.slots["tts"].held() as waited:
            t1 = time.monotonic()
            pcm = prompt_pcm(digits, prompt_s)
            tts_ms = (time.monotonic() - t1) * 1e3
        playout.play(clip, pcm, interrupt=True)
        return {"tts_ms": tts_ms, "queue_ms": waited * 1e3, "t_job_start": t}

    def _collect(self, call: AgentCall) -> None:
        """Log finished turns and prompts once their first frame has been played."""
        keep = []
        for kind, k, fut, info in call.pending:
            started = call.playout.started.get((kind, k))
            if not fut.done() or started is None:
                if fut.done() and fut.exception() is not None:
                    self.log.write("error", sip_call_id=call.sip_call_id, what=kind,
                                   index=k, error=repr(fut.exception()))
                    continue
                keep.append((kind, k, fut, info))
                continue
            rec = {**info, **fut.result()}
            if kind == "turn":
                rec["t_reply_start"] = started
                rec["agent_ms"] = (started - info["t_end_of_speech_detected"]) * 1e3
                self.log.write("turn", sip_call_id=call.sip_call_id, call=call.plan_call,
                               **rec)
            else:
                rec["t_prompt_start"] = started
                self.log.write("prompt", sip_call_id=call.sip_call_id, call=call.plan_call,
                               **rec)
        call.pending = keep
        if not call.pending and not call.playout.busy:
            # idle: every clip that started has been played out (``finished`` is only
            # stamped at the media tick after a clip's last frame, so count ``started``)
            played = list(call.playout.started)
            call.replies_done = sum(1 for c in played if c[0] == "turn")
            call.prompts_done = sum(1 for c in played if c[0] == "prompt")
            call.busy = False

    def _maybe_transfer(self, call: AgentCall) -> None:
        x = call.xfer_plan
        if x is None or call.refer_sent or call.busy or call.t_confirmed is None:
            return
        if call.replies_done < x["at_turn"] or call.prompts_done < x["after_prompts"]:
            return
        # the caller's MESSAGEs and hold/resume cycles planned before the transfer, too
        if call.held or call.messages < steps_before(call.plan, "msg", "xfer") or \
                call.resumes < steps_before(call.plan, "hold", "xfer"):
            return
        call.refer_sent = True
        t = time.monotonic()
        target = loopback_target(x["target"], call.proxy)
        try:
            call.xfer(target, pj.CallOpParam(True))
            self.log.write("refer", sip_call_id=call.sip_call_id, call=call.plan_call,
                           t_refer=t, target=target, planned_target=x["target"])
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
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.calls.clear()
        self.ended.clear()
        gc.collect()
        self.acc.shutdown()
        del self.acc
        gc.collect()
        self.ep.libDestroy()


def loopback_target(target: str, proxy: str) -> str:
    """The planned transfer ``target`` as the loopback system reaches it: its user part
    at the proxy the call came through (``proxy``, host:port), which routes user
    ``human`` to the transfer target's UAS. Unchanged without a proxy address.

    >>> loopback_target("sip:human@example.com", "127.0.0.1:5060")
    'sip:human@127.0.0.1:5060'
    """
    bare = target.strip().strip("<>")
    if not proxy or "@" not in bare:
        return target
    user = bare.split(":", 1)[1].split("@", 1)[0]
    return f"sip:{user}@{proxy}"


def steps_before(plan: dict[str, Any] | None, kind: str, until: str) -> int:
    """How many ``kind`` steps the plan has before its first ``until`` step."""
    n = 0
    for step in (plan or {}).get("steps", []):
        if step and step[0] == until:
            break
        n += bool(step) and step[0] == kind
    return n


_PROTO_FD = 1


def emit(obj: dict[str, Any]) -> None:
    """One JSON line to the launcher (``ready``), on the saved stdout."""
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(_PROTO_FD, data):]


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
    ap.add_argument("--deadline", type=float, default=None, help="time.monotonic() bound")
    ap.add_argument("--run", default="", help="the run's directory (identifies the process)")
    args = ap.parse_args(argv)
    global _PROTO_FD
    _PROTO_FD = os.dup(1)
    os.dup2(2, 1)  # pjlib prints on stdout
    stop: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        stop.append(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    log = Log(args.log, args.name)
    agent = VoiceAgent(args.name, args.port, load_deployment(args.deployment), log,
                       args.seed, args.lock_dir)
    log.write("ready", port=agent.port, pid=os.getpid(), t=time.monotonic())
    emit({"ev": "ready", "port": agent.port, "pid": os.getpid()})
    deadline = args.deadline if args.deadline is not None else float("inf")
    while not stop and time.monotonic() < deadline:
        agent.ep.libHandleEvents(POLL_MS)
        agent.step()
    agent.shutdown()
    log.write("exit", t=time.monotonic())
    log.close()
    os._exit(0)  # skip interpreter teardown: pjsua2 objects must not be finalised twice


if __name__ == "__main__":
    sys.exit(main())
