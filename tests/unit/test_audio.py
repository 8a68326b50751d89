"""G.711 μ-law/A-law vectors and round trips, resampling, tones and frames."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lab.audio import (
    alaw_decode,
    alaw_encode,
    frames,
    level_dbfs,
    resample,
    tone,
    ulaw_decode,
    ulaw_encode,
)

ALL16 = np.arange(-32768, 32768)
CODES = np.arange(256)


# --- G.711 known vectors ----------------------------------------------------------


def test_silence_codes() -> None:
    assert ulaw_encode([0]).tolist() == [0xFF]
    assert alaw_encode([0]).tolist() == [0xD5]
    assert ulaw_decode([0xFF, 0x7F]).tolist() == [0, 0]  # 0x7F is μ-law's "negative zero"
    assert alaw_decode([0xD5, 0x55]).tolist() == [8, -8]  # A-law has no zero level


def test_full_scale() -> None:
    assert ulaw_encode([32767, -32768]).tolist() == [0x80, 0x00]
    assert ulaw_decode([0x80, 0x00]).tolist() == [32124, -32124]
    assert alaw_encode([32767, -32768]).tolist() == [0xAA, 0x2A]
    assert alaw_decode([0xAA, 0x2A]).tolist() == [32256, -32256]


def test_segment_starts_decode_to_the_standard_levels() -> None:
    # first step of each positive chord (16-bit scale)
    ulaw_codes = [0xFF ^ (seg << 4) for seg in range(8)]
    assert ulaw_decode(ulaw_codes).tolist() == [0, 132, 396, 924, 1980, 4092, 8316, 16764]
    alaw_codes = [(seg << 4) ^ 0xD5 for seg in range(8)]
    assert alaw_decode(alaw_codes).tolist() == [8, 264, 528, 1056, 2112, 4224, 8448, 16896]


def test_encoder_segment_boundaries() -> None:
    # μ-law chord 0 holds 14-bit magnitudes 0..30 (biased 33..63): 16-bit 0..123
    assert ulaw_encode([123, 124]).tolist() == [0xF0, 0xEF]
    assert ulaw_encode([-120, -121]).tolist() == [0x70, 0x6F]  # >> 2 floors negatives
    # A-law chord 0 holds 13-bit magnitudes 0..31: 16-bit 0..255
    assert alaw_encode([255, 256]).tolist() == [0xDA, 0xC5]
    assert alaw_encode([-256, -257]).tolist() == [0x5A, 0x45]


def test_every_code_round_trips() -> None:
    back_u = ulaw_encode(ulaw_decode(CODES))
    assert np.flatnonzero(back_u != CODES).tolist() == [0x7F]  # -0 comes back as +0
    assert (alaw_encode(alaw_decode(CODES)) == CODES).all()


def test_decoded_levels_are_monotone_in_the_encoder() -> None:
    for enc, dec in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        y = dec(enc(ALL16)).astype(int)
        assert (np.diff(y) >= 0).all()


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_round_trip_error_is_within_half_a_step(law: str) -> None:
    if law == "ulaw":
        x = ALL16[np.abs(ALL16) <= 32124]
        codes = ulaw_encode(x)
        seg = ((~codes.astype(int)) >> 4) & 0x7
        step = 8 << seg  # 16-bit scale: 8, 16, ..., 1024
        err = ulaw_decode(codes).astype(int) - x
        slack = 3  # the two dropped low bits
    else:
        x = ALL16[np.abs(ALL16) <= 32256]
        codes = alaw_encode(x)
        seg = ((codes.astype(int) ^ 0x55) >> 4) & 0x7
        step = 16 << np.maximum(seg - 1, 0)  # 16, 16, 32, ..., 1024
        err = alaw_decode(codes).astype(int) - x
        slack = 7  # the three dropped low bits
    assert (np.abs(err) <= step // 2 + slack).all()
    assert np.abs(err).max() >= 500  # the top chord really is coarse


def test_matches_audioop_where_it_still_exists() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    pcm = ALL16.astype("<i2").tobytes()
    assert (np.frombuffer(audioop.lin2ulaw(pcm, 2), np.uint8) == ulaw_encode(ALL16)).all()
    assert (np.frombuffer(audioop.lin2alaw(pcm, 2), np.uint8) == alaw_encode(ALL16)).all()
    codes = CODES.astype(np.uint8).tobytes()
    assert (np.frombuffer(audioop.ulaw2lin(codes, 2), "<i2") == ulaw_decode(CODES)).all()
    assert (np.frombuffer(audioop.alaw2lin(codes, 2), "<i2") == alaw_decode(CODES)).all()


def test_g711_snr_of_a_tone() -> None:
    x = np.round(tone(1000, 1.0, 8000, level_dbfs=-10.0) * 32767).astype(np.int16)
    for enc, dec in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        y = dec(enc(x)).astype(float)
        snr = 10 * np.log10(np.sum(x.astype(float) ** 2) / np.sum((y - x) ** 2))
        assert 33.0 < snr < 42.0  # G.711 gives about 38 dB over its range


def test_bad_samples_are_rejected() -> None:
    with pytest.raises(TypeError):
        ulaw_encode(np.array([0.5]))
    with pytest.raises(ValueError):
        alaw_encode(np.array([40000]))


# --- resampling, tones, frames ------------------------------------------------------


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spec)])


@pytest.mark.parametrize("to_hz", [16000, 24000, 48000])
def test_resampling_keeps_a_1khz_tone(to_hz: int) -> None:
    x = tone(1000, 1.0, 8000, level_dbfs=-6.0)
    y = resample(x, 8000, to_hz)
    assert y.size == to_hz
    edge = to_hz // 50  # skip 20 ms at each end (filter start-up)
    assert _peak_hz(y, to_hz) == pytest.approx(1000, abs=1.0)
    assert level_dbfs(y[edge:-edge]) == pytest.approx(-6.0, abs=0.05)
    back = resample(y, to_hz, 8000)
    assert back.size == 8000
    assert np.max(np.abs(back[160:-160] - x[160:-160])) < 0.01


def test_downsampling_removes_what_8khz_cannot_carry() -> None:
    x = tone(5000, 1.0, 16000, level_dbfs=-6.0)  # above 4 kHz Nyquist of the phone
    assert level_dbfs(resample(x, 16000, 8000)[200:-200]) < -50.0


def test_tone_level_and_errors() -> None:
    assert level_dbfs(tone(440, 1.0, 8000, level_dbfs=-3.0)) == pytest.approx(-3.0, abs=0.01)
    with pytest.raises(ValueError):
        tone(4000, 1.0, 8000)


def test_frames_of_20ms() -> None:
    x = np.arange(8000)
    f = frames(x)
    assert f.shape == (50, 160)
    assert f[1, 0] == 160
    assert frames(np.arange(16000), 16000).shape == (50, 320)
    short = frames(np.arange(200))
    assert short.shape == (2, 160) and short[1, 40:].sum() == 0
    assert frames(np.arange(200), pad=False).shape == (1, 160)
    with pytest.raises(ValueError):
        frames(x, 8000, 0.1)


# --- an oracle from the G.711 tables themselves (no audioop: it left Python in 3.13) ------


def _ulaw_level14(code: int) -> int:
    """μ-law decoder of ITU-T G.711 Table 2a: 14-bit decoded value of one code. Chord s
    starts at decision value 2^(s+5) - 33 (0, 31, 95, ..., 4063), has 16 steps of
    2^(s+1), and decodes to each step's middle; the code is the bit-inverted byte."""
    b = ~code & 0xFF
    s, q = (b >> 4) & 7, b & 0xF
    level = (2 ** (s + 5) - 33) + 2 ** (s + 1) * q + 2**s
    return -level if b & 0x80 else level


def _alaw_level13(code: int) -> int:
    """A-law decoder of ITU-T G.711 Table 1a: 13-bit decoded value of one code. Chords 0
    and 1 step by 2 from 0 and 32, chord s >= 2 by 2^s from 2^(s+4); each step decodes
    to its middle; even bits are inverted (XOR 0x55) and sign 1 is positive."""
    b = code ^ 0x55
    s, q = (b >> 4) & 7, b & 0xF
    base, step = (0, 2) if s == 0 else (2 ** (s + 4), 2**s)
    level = base + step * q + step // 2
    return level if b & 0x80 else -level


def _ulaw_code(x: int) -> int:
    """μ-law encoder: the 14-bit sample (x >> 2) falls in one decision interval."""
    m = x >> 2
    sign, mag = (0x80, -m) if m < 0 else (0, m)
    for s in range(8):
        top = 2 ** (s + 6) - 33  # the chord's upper decision value
        if mag < top or s == 7:
            q = min(15, max(0, (mag - (2 ** (s + 5) - 33)) // 2 ** (s + 1)))
            return ~(sign | s << 4 | q) & 0xFF
    raise AssertionError


def _alaw_code(x: int) -> int:
    """A-law encoder: the 13-bit magnitude (one's complement for negatives) in its interval."""
    sign, mag = (0x80, x >> 3) if x >= 0 else (0, (-x - 1) >> 3)
    for s in range(8):
        base, step = (0, 2) if s == 0 else (2 ** (s + 4), 2**s)
        if mag < base + 16 * step or s == 7:
            return (sign | s << 4 | min(15, (mag - base) // step)) ^ 0x55
    raise AssertionError


def test_decoders_match_the_g711_tables() -> None:
    assert ulaw_decode(CODES).tolist() == [4 * _ulaw_level14(c) for c in range(256)]
    assert alaw_decode(CODES).tolist() == [8 * _alaw_level13(c) for c in range(256)]


def test_encoders_match_the_g711_decision_intervals() -> None:
    samples = ALL16.tolist()
    assert ulaw_encode(ALL16).tolist() == [_ulaw_code(x) for x in samples]
    assert alaw_encode(ALL16).tolist() == [_alaw_code(x) for x in samples]
