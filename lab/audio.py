"""Telephone audio: G.711 μ-law/A-law, resampling, test tones and 20 ms frames.

Telephony background
--------------------
ITU-T G.711 (1972) is the PCM of the telephone network: 8,000 samples/s, 8 bits
each, 64 kbit/s, RTP payload types 0 (PCMU, μ-law: North America, Japan) and 8
(PCMA, A-law: elsewhere). Each law compresses a linear sample logarithmically into
a sign bit, a 3-bit segment (chord) and a 4-bit step within it; segments double in
width, so the quantisation step grows with the level and the signal-to-noise ratio
stays roughly constant. μ-law works on 14-bit linear samples (±8159 after the
bias of 33), A-law on 13-bit (±4095); code words are transmitted with bits inverted
(μ-law: all bits; A-law: even bits, the ``0x55`` mask). Digital silence is ``0xFF``
in μ-law and ``0xD5`` in A-law.

Here the encoders are lookup tables over every 16-bit sample (64 Ki entries), built
once from the G.711 segment rules as written in the classic reference
implementation (the Sun Microsystems ``g711.c`` used by ITU-T G.191's STL), so
encoding a 20 ms frame is one ``numpy.take``. Python's ``audioop`` did this until
it was removed in Python 3.13 (PEP 594).

Voice AI sits between an 8 kHz telephone leg and models that want 16 kHz (most
speech recognisers) or produce 24 kHz (many TTS voices); :func:`resample` converts
with a polyphase filter (``scipy.signal.resample_poly``). An RTP packet of
``ptime`` = 20 ms carries 160 G.711 samples; :func:`frames` cuts a signal so.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.signal import firwin, resample_poly

__all__ = [
    "alaw_decode",
    "alaw_encode",
    "frames",
    "level_dbfs",
    "resample",
    "tone",
    "ulaw_decode",
    "ulaw_encode",
]

_ULAW_BIAS = 0x84  # 132 on the 16-bit scale (33 on the 14-bit scale)
_ULAW_CLIP = 8159  # largest 14-bit magnitude before the bias
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def _build_ulaw() -> tuple[NDArray[np.uint8], NDArray[np.int16]]:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2  # 14-bit
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")  # first end >= mag
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0xF))  # 8: clip
    enc = ((code ^ mask) & 0xFF).astype(np.uint8)
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    dec = np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)
    return enc, dec


def _build_alaw() -> tuple[NDArray[np.uint8], NDArray[np.int16]]:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3  # 13-bit
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    step = np.where(seg < 2, mag >> 1, mag >> np.maximum(seg, 1)) & 0xF
    code = (seg << 4) | step
    enc = ((code ^ mask) & 0xFF).astype(np.uint8)
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg_d = (a & 0x70) >> 4
    base = (a & 0x0F) << 4
    t = np.where(seg_d == 0, base + 8, (base + 0x108) << np.maximum(seg_d - 1, 0))
    dec = np.where(a & 0x80, t, -t).astype(np.int16)
    return enc, dec


_ULAW_ENC, _ULAW_DEC = _build_ulaw()
_ALAW_ENC, _ALAW_DEC = _build_alaw()


def _pcm16(samples: ArrayLike) -> NDArray[np.int32]:
    x = np.asarray(samples)
    if x.dtype.kind == "f":
        raise TypeError("samples: give 16-bit integers (scale floats by 32767 first)")
    if x.size and (x.min() < -32768 or x.max() > 32767):
        raise ValueError("samples: outside the 16-bit range")
    return x.astype(np.int32) + 32768


def ulaw_encode(samples: ArrayLike) -> NDArray[np.uint8]:
    """G.711 μ-law code words of 16-bit linear samples (top 14 bits used).

    Examples
    --------
    >>> ulaw_encode([0, 32767, -32768]).tolist()
    [255, 128, 0]
    """
    return _ULAW_ENC[_pcm16(samples)]


def ulaw_decode(codes: ArrayLike) -> NDArray[np.int16]:
    """16-bit linear samples of G.711 μ-law code words (±32124 at full scale)."""
    return _ULAW_DEC[np.asarray(codes, dtype=np.uint8)]


def alaw_encode(samples: ArrayLike) -> NDArray[np.uint8]:
    """G.711 A-law code words of 16-bit linear samples (top 13 bits used).

    Examples
    --------
    >>> alaw_encode([0, 32767, -32768]).tolist()
    [213, 170, 42]
    """
    return _ALAW_ENC[_pcm16(samples)]


def alaw_decode(codes: ArrayLike) -> NDArray[np.int16]:
    """16-bit linear samples of G.711 A-law code words (±32256 at full scale)."""
    return _ALAW_DEC[np.asarray(codes, dtype=np.uint8)]


def resample(x: ArrayLike, from_hz: int, to_hz: int) -> NDArray[np.float64]:
    """Resample by the reduced ratio ``to_hz/from_hz`` with a polyphase FIR filter.

    Integer input is treated as 16-bit samples and returned as float on the same
    scale; round and clip it yourself before encoding. Each call is stateless (the
    filter starts from silence), so resample whole utterances, not single frames,
    when edges matter; the filter itself is designed once per ratio and cached.
    """
    if from_hz <= 0 or to_hz <= 0:
        raise ValueError("from_hz, to_hz: must be > 0")
    g = math.gcd(int(from_hz), int(to_hz))
    data = np.asarray(x, dtype=np.float64)
    if from_hz == to_hz:
        return data.copy()
    up, down = int(to_hz) // g, int(from_hz) // g
    return np.asarray(resample_poly(data, up, down, window=_lowpass(up, down)),
                      dtype=np.float64)


@lru_cache(maxsize=32)
def _lowpass(up: int, down: int) -> NDArray[np.float64]:
    """resample_poly's own default filter (Kaiser β = 5), designed once per ratio."""
    rate = max(up, down)
    taps = firwin(2 * 10 * rate + 1, 1.0 / rate, window=("kaiser", 5.0))
    taps.flags.writeable = False
    return taps


def tone(freq_hz: float, duration_s: float, rate_hz: int = 8000, level_dbfs: float = -3.0,
         phase: float = 0.0) -> NDArray[np.float64]:
    """A sine at ``level_dbfs`` (0 dBFS = full-scale peak of 1.0; RMS is 3.01 dB lower)."""
    if freq_hz >= rate_hz / 2:
        raise ValueError(f"freq_hz: must be below the Nyquist frequency {rate_hz / 2:g}")
    n = round(duration_s * rate_hz)
    t = np.arange(n) / rate_hz
    return 10.0 ** (level_dbfs / 20.0) * np.sin(2.0 * np.pi * freq_hz * t + phase)


def level_dbfs(x: ArrayLike, full_scale: float = 1.0) -> float:
    """Peak-equivalent level: RMS·√2 relative to ``full_scale`` (a sine's peak level)."""
    data = np.asarray(x, dtype=np.float64)
    rms = float(np.sqrt(np.mean(data * data))) if data.size else 0.0
    return 20.0 * math.log10(max(rms * math.sqrt(2.0), 1e-300) / full_scale)


def frames(x: ArrayLike, rate_hz: int = 8000, ptime_ms: float = 20.0,
           pad: bool = True) -> NDArray[np.generic]:
    """Split a signal into RTP frames of ``ptime_ms`` (160 samples at 8 kHz, 20 ms).

    Returns an array of shape ``(n_frames, samples_per_frame)`` (a view when no padding
    is needed). ``pad`` zero-fills a short last frame; otherwise it is dropped.
    """
    per = rate_hz * ptime_ms / 1000.0
    if per < 1 or abs(per - round(per)) > 1e-9:
        raise ValueError(f"ptime_ms: {ptime_ms!r} ms is not a whole number of samples "
                         f"at {rate_hz} Hz")
    size = round(per)
    data = np.asarray(x)
    whole, rest = divmod(data.size, size)
    if rest and pad:
        data = np.concatenate([data, np.zeros(size - rest, dtype=data.dtype)])
        whole += 1
    return data[: whole * size].reshape(whole, size)
