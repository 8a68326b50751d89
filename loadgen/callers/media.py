"""The caller's media: its mouth, its ear, and what its RTP stream measured.

Every call carries real PCMU RTP (RFC 3550, payload type 0 of RFC 3551), with the
endpoint's VAD off so 50 packets/s flow both ways through silence too and loss is
measurable. On the conference bridge of the caller's process:

- the caller **hears** through a :class:`Tap`, an ``AudioMediaPort`` sink that stamps
  each 20 ms frame it receives (``time.monotonic()``) with its RMS level, so a reply's
  onset can be timed to the frame; optionally an ``AudioMediaRecorder`` writes what it
  hears to a WAV file;
- it **speaks** by playing WAV prompts with ``AudioMediaPlayer``;
- its stream statistics (:func:`stream_stats`: RTCP receiver-report data, RFC 3550
  section 6.4, plus the jitter buffer's) go into the call's record, where the
  coordinator rates them (:func:`real.media.quality`).

When the run has an RTP impairment emulator, the caller steers the agent's media
through it: :func:`steer_offer` puts the emulator's agent-facing port into the SDP
offer (RFC 4566 ``m=audio`` and the RFC 3605 ``a=rtcp`` attribute), so the agent
sends there.

pjsua2 stops media whose Python wrapper is collected, so :class:`CallerMedia` holds
a reference to every port until the call is over (:meth:`CallerMedia.release`).
"""

from __future__ import annotations

import bisect
import contextlib
import math
import re
import time
from array import array
from typing import Any

import pjsua2 as pj

SPEECH_RMS = 300.0  # PCM16 RMS of a 20 ms frame above which the caller hears speech


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


def pcm_format() -> Any:
    """PCM16 mono 8 kHz, 20 ms frames: the bridge's format for the tap."""
    fmt = pj.MediaFormatAudio()
    fmt.init(pj.PJMEDIA_FORMAT_PCM, 8000, 1, 20000, 16)
    return fmt


class CallerMedia:
    """The ports of one call leg: the call's audio, the tap, a recorder, the players.

    Parameters
    ----------
    name
        Names the tap port on the bridge (unique per leg).
    record
        A WAV path for what the caller hears, or None.
    """

    def __init__(self, name: str, record: str | None) -> None:
        self.name, self.record = name, record
        self.audio: Any = None
        self.tap: Tap | None = None
        self.recorder: Any = None
        self.players: list[Any] = []
        self.attached = False  # stays True after release: a leg attaches once

    def attach(self, audio: Any) -> None:
        """Connect the call's ``AudioMedia`` to the tap (and the recorder)."""
        self.attached = True
        self.audio = audio
        self.tap = Tap()
        self.tap.createPort(self.name, pcm_format())
        audio.startTransmit(self.tap)
        if self.record:
            self.recorder = pj.AudioMediaRecorder()
            self.recorder.createRecorder(str(self.record))
            audio.startTransmit(self.recorder)

    def play(self, wav: str) -> Any:
        """Start speaking the WAV file ``wav`` into the call; the player, or None."""
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

    def stop(self, player: Any) -> None:
        """Stop ``player`` (from :meth:`play`) speaking into the call."""
        if player is not None and self.audio is not None:
            with contextlib.suppress(pj.Error):
                player.stopTransmit(self.audio)

    def release(self) -> None:
        """Drop players, recorder and tap (their wrappers) once the call is over."""
        self.players.clear()
        self.recorder = None
        self.tap = None
        self.audio = None


def stream_stats(call: Any) -> dict[str, Any] | None:
    """The RTCP/stream statistics of ``call``'s audio stream (RFC 3550 6.4), or None.

    Keys: ``rx_pkt``, ``rx_loss``, ``rx_discard``, ``rx_dup``, ``rx_reorder``,
    ``rx_jitter_us``, ``tx_pkt``, ``tx_loss``, ``rtt_us``, ``loss_period_us``,
    ``jb_delay_ms``, ``jb_lost``, ``jb_discard``, ``jb_empty``.
    """
    try:
        st = call.getStreamStat(0)
    except pj.Error:
        return None
    rx, tx = st.rtcp.rxStat, st.rtcp.txStat
    rtt = st.rtcp.rttUsec
    return {
        "rx_pkt": int(rx.pkt), "rx_loss": int(rx.loss), "rx_discard": int(rx.discard),
        "rx_dup": int(rx.dup), "rx_reorder": int(rx.reorder),
        "rx_jitter_us": float(rx.jitterUsec.mean) if rx.jitterUsec.n else None,
        "tx_pkt": int(tx.pkt), "tx_loss": int(tx.loss),
        "rtt_us": float(rtt.mean) if rtt.n else None,
        "loss_period_us": float(rx.lossPeriodUsec.mean) if rx.lossPeriodUsec.n else None,
        "jb_delay_ms": float(st.jbuf.avgDelayMsec), "jb_lost": int(st.jbuf.lost),
        "jb_discard": int(st.jbuf.discard), "jb_empty": int(st.jbuf.empty),
    }


def steer_offer(sdp: str, agent_port: int) -> str:
    """The SDP offer with its audio port (and RTCP port, +1) replaced by ``agent_port``."""
    sdp = re.sub(r"(?m)^m=audio \d+", f"m=audio {agent_port}", sdp)
    return re.sub(r"(?m)^a=rtcp:\d+", f"a=rtcp:{agent_port + 1}", sdp)
