"""Speech on this machine: eSpeak NG, resampled to telephone audio.

eSpeak NG (Debian ``espeak-ng``) is a formant synthesiser: robotic, but fast
(tens of ms per sentence), offline and deterministic, which is what a load test
needs. It writes a 22.05 kHz WAV (``--stdout``); telephone audio is 8 kHz 16-bit
mono (G.711, ITU-T G.711, carries 8 kHz), so the samples are resampled with a
polyphase filter (:func:`lab.audio.resample`).

Two sides of a real call speak with it:

- the **caller** plays utterances of a planned length (:func:`caller_speech`: the
  run-on :data:`CALLER_TEXT` cut to length, then :data:`TRAILING_SILENCE_S` of
  silence so the agent's endpointer can declare the end of speech);
- the **voice agent** speaks its replies and IVR prompts (:mod:`real.tts`), padded
  or cut to the planned ``agent_speech_s`` by :func:`fit`.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

VOICE = "en-us"
WORDS_PER_MIN = 165
TRAILING_SILENCE_S = 1.2
FADE_S = 0.01
TRIM_LEVEL = 300  # |sample| above which audio counts as sound (about -41 dBFS)
# One breath, no punctuation: eSpeak pauses at commas and full stops, which a short
# vad_ms would take for the end of the utterance.
CALLER_TEXT = ("hello I would like to check my order and the status of my delivery "
               "and I need help with my bill and my payment and my account please "
               "I would like to speak to an agent about my order and my refund")

Pcm = NDArray[np.int16]


def espeak_binary() -> str | None:
    """Path of ``espeak-ng`` (or ``espeak``), or None."""
    return shutil.which("espeak-ng") or shutil.which("espeak")


def _read_wav(data: bytes) -> tuple[Pcm, int]:
    with wave.open(io.BytesIO(data)) as w:
        rate = w.getframerate()
        frames = w.readframes(w.getnframes())
    return np.frombuffer(frames, dtype=np.int16), rate


def _fix_stdout_wav(data: bytes) -> bytes:
    """eSpeak's ``--stdout`` WAV header has unknown (0xFFFFFFFF) sizes: patch them."""
    if len(data) < 44 or data[:4] != b"RIFF":
        raise RuntimeError("espeak-ng returned no WAV")
    fixed = bytearray(data)
    fixed[4:8] = (len(data) - 8).to_bytes(4, "little")
    fixed[40:44] = (len(data) - 44).to_bytes(4, "little")
    return bytes(fixed)


def synthesize_pcm(text: str, rate_hz: int = 8000, voice: str = VOICE,
                   words_per_min: int = WORDS_PER_MIN, trim: bool = True) -> Pcm:
    """Speak ``text``; PCM16 mono samples at ``rate_hz``.

    ``trim`` drops eSpeak's leading silence (all but 5 ms), so the first sample is
    the first sound: a reply's start time is then its audible onset.

    Raises
    ------
    RuntimeError
        When eSpeak NG is missing or fails.
    """
    binary = espeak_binary()
    if binary is None:
        raise RuntimeError("espeak-ng not found: apt-get install espeak-ng")
    res = subprocess.run([binary, "-v", voice, "-s", str(words_per_min), "--stdout", text],
                         capture_output=True, timeout=30, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"espeak-ng failed: {res.stderr.decode(errors='replace')[:200]}")
    from lab.audio import resample  # scipy.signal: loaded by the speaking processes only

    pcm, rate = _read_wav(_fix_stdout_wav(res.stdout))
    if trim:
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > TRIM_LEVEL)
        pcm = pcm[max(0, int(loud[0]) - round(0.005 * rate)):] if loud.size else pcm[:0]
    out = resample(pcm, rate, rate_hz) if rate != rate_hz else pcm.astype(np.float64)
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def write_wav(path: Path, pcm: Pcm, rate_hz: int = 8000) -> Path:
    """Write PCM16 mono as a WAV file (atomically: a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    with wave.open(tmp, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    os.replace(tmp, path)
    return path


def fit(pcm: Pcm, seconds: float | None, rate_hz: int = 8000) -> Pcm:
    """``pcm`` cut (with a short fade-out) or zero-padded to ``seconds``; as is if None."""
    if seconds is None:
        return pcm
    n = max(0, round(seconds * rate_hz))
    if pcm.size >= n:
        out = pcm[:n].astype(np.float64)
        k = min(n, round(FADE_S * rate_hz))
        if k:
            out[n - k:] *= np.linspace(1.0, 0.0, k)
        return np.rint(out).astype(np.int16)
    return np.concatenate([pcm, np.zeros(n - pcm.size, dtype=np.int16)])


def caller_speech(seconds: float, rate_hz: int = 8000, speech: Pcm | None = None) -> Pcm:
    """Caller speech of exactly ``seconds``: :data:`CALLER_TEXT`, repeated as needed.

    ``speech`` is that text already synthesised at ``rate_hz`` (a caller cutting many
    lengths synthesises it once).
    """
    if speech is None:
        speech = synthesize_pcm(CALLER_TEXT, rate_hz)
    need = round(seconds * rate_hz)
    if speech.size < need:
        speech = np.tile(speech, need // speech.size + 1)
    return fit(speech, seconds, rate_hz)


def silence(seconds: float, rate_hz: int = 8000) -> Pcm:
    """``seconds`` of digital silence."""
    return np.zeros(round(seconds * rate_hz), dtype=np.int16)
