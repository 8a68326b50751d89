"""Voice activity detection and endpointing: when has the caller stopped speaking?

A voice agent must decide when an utterance is over before it can transcribe and
answer it. It classifies each 20 ms frame as speech or not with WebRTC's VAD (a
Gaussian-mixture model over six sub-band energies, from the WebRTC project;
PyPI ``webrtcvad-wheels``), and declares **end of speech** once ``vad_ms`` of
consecutive non-speech follow at least ``min_speech_ms`` of speech. That hangover
is the endpointing delay of the twin's turn model (``deployment.ai.vad_ms``): too
short and a caller's pause between words cuts the utterance, too long and every
reply comes later. The real detector adds its own small lag (WebRTC's VAD smooths
its decision over a few frames), which the logged timestamps include.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import webrtcvad

RATE_HZ = 8000
FRAME_MS = 20
FRAME_BYTES = RATE_HZ * FRAME_MS // 1000 * 2  # 320: PCM16 mono


@dataclass
class Utterance:
    """One endpointed utterance: its PCM16 audio and the times that bound it."""

    pcm: bytes
    t_start: float  # arrival of its first speech frame
    t_last_speech: float  # arrival of its last speech frame
    t_end_detected: float  # arrival of the frame that completed the hangover


@dataclass
class Endpointer:
    """Frame-by-frame endpointer: feed 20 ms PCM16 frames, get utterances.

    Parameters
    ----------
    vad_ms
        Non-speech after speech that ends an utterance (the hangover).
    aggressiveness
        WebRTC VAD mode 0..3 (3 = most eager to call a frame non-speech).
    min_speech_ms
        Shorter bursts of speech (clicks, line noise) are ignored.
    pre_roll_ms
        Audio kept before the first speech frame, so the recogniser hears the onset.
    """

    vad_ms: float = 300.0
    aggressiveness: int = 2
    min_speech_ms: float = 100.0
    pre_roll_ms: float = 200.0
    _vad: webrtcvad.Vad = field(init=False, repr=False)
    _frames: list[bytes] = field(default_factory=list, repr=False)
    _speech_ms: float = 0.0
    _silence_ms: float = 0.0
    _t_start: float = 0.0
    _t_last: float = 0.0

    def __post_init__(self) -> None:
        self._vad = webrtcvad.Vad(self.aggressiveness)

    @property
    def in_speech(self) -> bool:
        """True while an utterance has started and not yet been endpointed."""
        return self._speech_ms >= self.min_speech_ms

    def reset(self) -> None:
        """Forget any partial utterance (e.g. while the agent itself is talking)."""
        self._frames.clear()
        self._speech_ms = self._silence_ms = 0.0

    def feed(self, frame: bytes, t: float) -> Utterance | None:
        """Classify one frame received at ``t``; an :class:`Utterance` when one just ended."""
        if len(frame) != FRAME_BYTES:
            return None
        speech = self._vad.is_speech(frame, RATE_HZ)
        self._frames.append(frame)
        if speech:
            if self._speech_ms == 0.0:
                self._t_start = t
            self._speech_ms += FRAME_MS
            self._silence_ms = 0.0
            self._t_last = t
            return None
        if not self.in_speech:
            # not (yet) an utterance: a short burst decays, only the pre-roll is kept
            self._silence_ms += FRAME_MS
            if self._silence_ms >= self.vad_ms:
                self._speech_ms = 0.0
            keep = max(1, int(self.pre_roll_ms // FRAME_MS))
            del self._frames[:-keep]
            return None
        self._silence_ms += FRAME_MS
        if self._silence_ms < self.vad_ms:
            return None
        utt = Utterance(b"".join(self._frames), self._t_start, self._t_last, t)
        self.reset()
        return utt
