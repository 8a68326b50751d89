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
    """Bit-exact with CPython's audioop over every sample and code. An extra check only:
    skipping it (Python >= 3.13, even under CI) loses no coverage, since the G.711
    tables below check the same 65,536 samples and 256 codes without audioop."""
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
#
# Each row is one segment of the positive half of ITU-T G.711 Table 2a (μ-law, 14-bit
# scale, overload 8159) or Table 1a (A-law, 13-bit scale, overload 4096), copied from the
# standard, not computed: (upper end of the segment, its quantisation interval, the first
# and the last decoded value in it). 16 intervals per segment; each decodes to its middle.
# μ-law's first interval, centred on 0, is [-1, 1) on paper: half of it each polarity.
ULAW_TABLE = (  # end, step, first y, last y
    (31, 2, 0, 30),
    (95, 4, 33, 93),
    (223, 8, 99, 219),
    (479, 16, 231, 471),
    (991, 32, 495, 975),
    (2015, 64, 1023, 1983),
    (4063, 128, 2079, 3999),
    (8159, 256, 4191, 8031),
)
ALAW_TABLE = (
    (32, 2, 1, 31),
    (64, 2, 33, 63),
    (128, 4, 66, 126),
    (256, 8, 132, 252),
    (512, 16, 264, 504),
    (1024, 32, 528, 1008),
    (2048, 64, 1056, 2016),
    (4096, 128, 2112, 4032),
)


def _intervals(table: tuple[tuple[int, int, int, int], ...], start: int
               ) -> list[tuple[int, int, int, int, int]]:
    """(segment 0..7, interval 0..15, lower decision value, upper, decoded value) of the
    128 positive intervals of a table whose first segment starts at ``start``."""
    out, lo = [], start
    for s, (end, step, first, _last) in enumerate(table):
        out += [(s, q, lo + q * step, lo + (q + 1) * step, first + q * step)
                for q in range(16)]
        lo = end
    return out


def _ulaw_byte(positive: bool, s: int, q: int) -> int:
    """μ-law character signal: polarity bit 1 for positive, then the segment and the
    interval number with all seven of their bits inverted."""
    return (0x80 if positive else 0) | (7 - s) << 4 | (15 - q)


def _alaw_byte(positive: bool, s: int, q: int) -> int:
    """A-law character signal: polarity bit 1 for positive, segment, interval; then the
    even bits (2, 4, 6, 8 counting the polarity bit as 1) inverted."""
    return ((0x80 if positive else 0) | s << 4 | q) ^ 0b0101_0101


ULAW = _intervals(ULAW_TABLE, -1)
ALAW = _intervals(ALAW_TABLE, 0)


def test_the_transcribed_tables_span_the_standard_ranges() -> None:
    """The literal rows are G.711's: 128 intervals a polarity, from 0 to the overload
    point, and spot values of the printed tables (μ-law 2a, A-law 1a)."""
    for table, start in ((ULAW_TABLE, -1), (ALAW_TABLE, 0)):
        lo = start
        for end, step, first, last in table:  # each row self-consistent: a typo fails
            assert lo + 16 * step == end
            assert (first, last) == (lo + step // 2, end - step // 2)
            lo = end
    assert len(ULAW) == len(ALAW) == 128
    assert ULAW[0][2:] == (-1, 1, 0) and ULAW[-1][2:] == (7903, 8159, 8031)
    assert ALAW[0][2:] == (0, 2, 1) and ALAW[-1][2:] == (3968, 4096, 4032)
    assert ULAW[16][2:] == (31, 35, 33) and ALAW[32][2:] == (64, 68, 66)


def test_decoders_give_every_reconstruction_value_of_the_tables() -> None:
    """All 256 code words of each law decode to the table's value (μ-law ×4, A-law ×8
    to 16 bits), with each law's bit inversion: a wrong segment base, step, half-step,
    polarity or inversion mask moves at least one of them."""
    want_u: dict[int, int] = {}
    want_a: dict[int, int] = {}
    for s, q, _lo, _hi, y in ULAW:
        want_u[_ulaw_byte(True, s, q)], want_u[_ulaw_byte(False, s, q)] = 4 * y, -4 * y
    for s, q, _lo, _hi, y in ALAW:
        want_a[_alaw_byte(True, s, q)], want_a[_alaw_byte(False, s, q)] = 8 * y, -8 * y
    assert sorted(want_u) == sorted(want_a) == list(range(256))  # a bijection
    assert ulaw_decode(CODES).tolist() == [want_u[c] for c in range(256)]
    assert alaw_decode(CODES).tolist() == [want_a[c] for c in range(256)]


def _encoder_table(law: str) -> tuple[dict[int, int], list[tuple[int, int, int]]]:
    """The code of every 16-bit sample, filled interval by interval from the table, and
    (first sample, its code, the code of the sample one nearer zero) at every interior
    decision value of both polarities.

    A 16-bit sample is first truncated toward −∞ to the law's linear resolution (an
    arithmetic shift by 2 for μ-law, by 3 for A-law, as the reference g711.c and audioop
    do), and a value on a decision value belongs to the interval above it. So on the
    16-bit scale a positive decision value d begins at 4d (μ-law) / 8d (A-law); a negative
    one at -(4d - 3) for μ-law (-1..-4 all truncate to 14-bit -1) and at -(8d + 1) for
    A-law (which takes the one's complement: -1..-8 are its "negative zero" interval).
    Magnitudes past the last decision value go to the top interval (overload).
    """
    if law == "ulaw":
        table, byte, k = ULAW, _ulaw_byte, 4
        pos_start = [max(k * lo, 0) for *_, lo, _hi, _y in table]
        neg_start = [max(k * lo - 3, 1) for *_, lo, _hi, _y in table]  # magnitude
    else:
        table, byte, k = ALAW, _alaw_byte, 8
        pos_start = [k * lo for *_, lo, _hi, _y in table]
        neg_start = [k * lo + 1 for *_, lo, _hi, _y in table]
    code: dict[int, int] = {}
    edges: list[tuple[int, int]] = []
    for i, (s, q, *_rest) in enumerate(table):
        top_p = pos_start[i + 1] - 1 if i + 1 < len(table) else 32767
        top_n = neg_start[i + 1] - 1 if i + 1 < len(table) else 32768
        for x in range(pos_start[i], top_p + 1):
            code[x] = byte(True, s, q)
        for m in range(neg_start[i], top_n + 1):
            code[-m] = byte(False, s, q)
        if i > 0:
            edges += [(pos_start[i], byte(True, s, q)), (-neg_start[i], byte(False, s, q))]
    # one sample nearer zero lies in the interval below (for μ-law's -1 that is +0: the
    # negative half of the zero interval holds no 16-bit sample)
    return code, [(x, c, code[x - (1 if x > 0 else -1)]) for x, c in edges]


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_encoders_follow_the_decision_values_of_the_tables(law: str) -> None:
    """Encoding against the tables' decision intervals, not audioop: both sides of each of
    the 127 interior decision values of each polarity, then every one of the 65,536
    samples. An interval edge off by one sample, a wrong bias or segment end, the
    negative half's truncation, or the clip at overload fails."""
    encode = ulaw_encode if law == "ulaw" else alaw_encode
    code, edges = _encoder_table(law)
    assert sorted(code) == ALL16.tolist()  # every sample in exactly one interval
    assert len(edges) == 2 * 127
    at = np.array([x for x, _, _ in edges])
    nearer_zero = at - np.sign(at)
    assert encode(at).tolist() == [c for _, c, _ in edges]
    assert encode(nearer_zero).tolist() == [c for _, _, c in edges]
    assert encode(ALL16).tolist() == [code[x] for x in ALL16.tolist()]
