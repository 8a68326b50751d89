"""ITU-T G.107 E-model: transmission rating R and MOS of a narrowband voice call.

Telephony background
--------------------
The E-model (ITU-T Rec. G.107, 06/2015) is the planning tool telcos use to predict
how a listener will rate a connection from its parameters, without a listening test.
It adds up impairments on a psychological scale, the **transmission rating R**
(0 = unusable, 93.2 = a perfect narrowband 3.1 kHz call, 100 the ceiling)::

    R = Ro − Is − Id − Ie,eff + A

- ``Ro``  basic signal-to-noise ratio: circuit, room and listener noise (clause 7.2);
- ``Is``  impairments simultaneous with speech: loudness, sidetone, quantisation (7.3);
- ``Id``  delay impairments: talker echo ``Idte``, listener echo ``Idle`` and the pure
  conversational delay ``Idd``, which starts above ``mT = 100 ms`` (7.4);
- ``Ie,eff`` equipment impairment: the codec's own distortion ``Ie`` plus packet loss,
  ``Ie,eff = Ie + (95 − Ie)·Ppl / (Ppl/BurstR + Bpl)`` (7.5), where ``Bpl`` is the
  codec's robustness to loss (better with packet-loss concealment, PLC) and ``BurstR``
  the burst ratio (1 for random loss, > 1 when losses cluster);
- ``A``   advantage factor (mobility and the like, 0 for a fixed line).

R maps to an estimated conversational MOS by G.107 Annex B (:func:`mos_from_r`).
With every parameter at its G.107 Table 3 default, R = 93.2 and MOS = 4.41.

How siplab uses it
------------------
A VoIP leg is described by a codec, PLC on/off, the one-way **mouth-to-ear** delay
``Ta`` in ms and the packet-loss fraction. As agreed in the siplab contract, the
echo-path delays follow from ``Ta``: ``T = Ta`` (talker echo path, one way) and
``Tr = 2·Ta`` (listener echo round trip). The loss fraction ``0..1`` becomes
``Ppl`` in percent. Any other Table 3 parameter can be overridden by its G.107
name (``r_factor(SLR=10, TELR=55)``).

The formulas are those of the Recommendation, unclamped. One quirk follows: talker
echo ``Idte`` is defined as 0 below T = 1 ms and is slightly *negative* (≈ −0.11)
between 1 and 4 ms, so R rises by about 0.1 at 1 ms before it falls with delay.
Real mouth-to-ear delays (packetisation plus jitter buffer) are far above that.

Only the narrowband model is implemented. Wideband codecs (G.722, Opus, AMR-WB)
are rated on the R_WB scale of G.107.1 (up to 129) with different ``Ie,WB``/``Bpl``
values, so they are rejected here with a ``ValueError`` rather than silently
mis-rated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from lab.codecs import CODECS, WIDEBAND, Codec, codec

__all__ = [
    "TABLE3_DEFAULTS",
    "WIDEBAND_CODECS",
    "emodel",
    "impairments",
    "mos_from_r",
    "r_factor",
]

#: ITU-T G.107 (06/2015) Table 3 default values, plus the delay-sensitivity
#: parameters mT, sT of clause 7.4 (Table 1 "default" class). Units: dB for loudness
#: ratings and levels (SLR, RLR, STMR, LSTR, TELR, WEPL), dBm0p for Nc and Nfor,
#: dB(A) for room noise Ps/Pr, ms for T, Ta, Tr, mT; percent for Ppl.
TABLE3_DEFAULTS: Mapping[str, float] = MappingProxyType(
    {
        "SLR": 8.0,  # send loudness rating
        "RLR": 2.0,  # receive loudness rating
        "STMR": 15.0,  # sidetone masking rating
        "LSTR": 18.0,  # listener sidetone rating
        "Ds": 3.0,  # D-value of telephone, send side
        "Dr": 3.0,  # D-value of telephone, receive side (enters via LSTR = STMR + Dr)
        "TELR": 65.0,  # talker echo loudness rating
        "WEPL": 110.0,  # weighted echo path loss
        "T": 0.0,  # mean one-way delay of the echo path, ms
        "Tr": 0.0,  # round-trip delay in a 4-wire loop, ms
        "Ta": 0.0,  # absolute (mouth-to-ear) delay, ms
        "qdu": 1.0,  # number of quantisation distortion units
        "Ie": 0.0,  # equipment impairment factor
        "Bpl": 1.0,  # packet-loss robustness factor
        "Ppl": 0.0,  # random packet-loss probability, percent
        "BurstR": 1.0,  # burst ratio
        "Nc": -70.0,  # circuit noise referred to the 0 dBr point, dBm0p
        "Nfor": -64.0,  # noise floor at the receive side, dBmp
        "Ps": 35.0,  # room noise at the send side, dB(A)
        "Pr": 35.0,  # room noise at the receive side, dB(A)
        "A": 0.0,  # advantage factor
        "mT": 100.0,  # delay below which Idd is zero, ms (default sensitivity class)
        "sT": 1.0,  # delay-sensitivity slope (default class)
    }
)

#: Names of the wideband codecs the narrowband model refuses (see :mod:`lab.codecs`).
WIDEBAND_CODECS = WIDEBAND
#: Names the narrowband model rates (their aliases too: PCMU, PCMA, G729, ...).
NARROWBAND = sorted({c.emodel_name for c in CODECS.values() if c.emodel_name})

# Parameters fixed by the keyword arguments of r_factor(); not valid as overrides.
_DERIVED = frozenset({"Ppl", "BurstR"})


def _codec_row(name: str) -> Codec:
    """The narrowband codec called ``name``, or ValueError (wideband codecs need G.107.1)."""
    key = "".join(ch for ch in name.upper() if ch.isalnum()) if isinstance(name, str) else ""
    if key in WIDEBAND:
        raise ValueError(
            f"codec: {name!r} is a wideband codec; ITU-T G.107 rates narrowband "
            f"(300-3400 Hz) calls only and wideband needs G.107.1 — use one of "
            f"{NARROWBAND}"
        )
    c = codec(name)
    if c.wideband:  # pragma: no cover - every wideband name is in WIDEBAND
        raise ValueError(f"codec: {name!r} is a wideband codec (G.107.1)")
    return c


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    return x


def _parameters(
    codec: str, plc: bool, delay_ms: float, loss: float, burst_r: float,
    overrides: Mapping[str, Any],
) -> dict[str, float]:
    """Table 3 defaults, then codec and delay/loss values, then overrides."""
    delay = _finite("delay_ms", delay_ms)
    if delay < 0.0:
        raise ValueError(f"delay_ms: must be >= 0, got {delay_ms!r}")
    p = _finite("loss", loss)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"loss: must be a fraction in [0, 1], got {loss!r}")
    burst = _finite("burst_r", burst_r)
    if burst <= 0.0:
        raise ValueError(f"burst_r: must be > 0 (1 = random loss), got {burst_r!r}")
    row = _codec_row(codec)
    assert row.ie is not None and row.bpl is not None and row.bpl_no_plc is not None
    params = dict(TABLE3_DEFAULTS)
    params.update(
        Ie=row.ie, Bpl=row.bpl if plc else row.bpl_no_plc,
        T=delay, Ta=delay, Tr=2.0 * delay, Ppl=100.0 * p, BurstR=burst,
    )
    for name, value in overrides.items():
        if name in _DERIVED:
            raise ValueError(f"{name}: set it with loss= / burst_r=, not as an override")
        if name not in TABLE3_DEFAULTS:
            raise ValueError(f"{name}: not a G.107 parameter, expected one of "
                             f"{sorted(set(TABLE3_DEFAULTS) - _DERIVED)}")
        params[name] = _finite(name, value)
    for name in ("T", "Ta", "Tr", "qdu", "mT", "sT", "Bpl"):
        if params[name] < 0.0 or (name in ("qdu", "mT", "sT", "Bpl") and params[name] == 0.0):
            raise ValueError(f"{name}: out of range, got {params[name]!r}")
    return params


def _basic_snr(p: Mapping[str, float]) -> tuple[float, float]:
    """Ro and the total noise No (G.107 clause 7.2)."""
    olr = p["SLR"] + p["RLR"]
    nos = p["Ps"] - p["SLR"] - p["Ds"] - 100.0 + 0.004 * (p["Ps"] - olr - p["Ds"] - 14.0) ** 2
    pre = p["Pr"] + 10.0 * math.log10(1.0 + 10.0 ** ((10.0 - p["LSTR"]) / 10.0))
    nor = p["RLR"] - 121.0 + pre + 0.008 * (pre - 35.0) ** 2
    nfo = p["Nfor"] + p["RLR"]
    no = 10.0 * math.log10(sum(10.0 ** (n / 10.0) for n in (p["Nc"], nos, nor, nfo)))
    return 15.0 - 1.5 * (p["SLR"] + no), no


def _sidetone(p: Mapping[str, float]) -> float:
    """Ist, impairment from non-optimum sidetone (G.107 clause 7.3)."""
    stmro = -10.0 * math.log10(
        10.0 ** (-p["STMR"] / 10.0) + math.exp(-p["T"] / 4.0) * 10.0 ** (-p["TELR"] / 10.0)
    )
    return (
        12.0 * (1.0 + ((stmro - 13.0) / 6.0) ** 8) ** (1.0 / 8.0)
        - 28.0 * (1.0 + ((stmro + 1.0) / 19.4) ** 35) ** (1.0 / 35.0)
        - 13.0 * (1.0 + ((stmro - 3.0) / 33.0) ** 13) ** (1.0 / 13.0)
        + 29.0
    )


def _simultaneous(p: Mapping[str, float], ro: float, no: float, ist: float) -> float:
    """Is = Iolr + Ist + Iq (G.107 clause 7.3, eq 7-8)."""
    olr = p["SLR"] + p["RLR"]
    xolr = olr + 0.2 * (64.0 + no - p["RLR"])
    iolr = 20.0 * ((1.0 + (xolr / 8.0) ** 8) ** (1.0 / 8.0) - xolr / 8.0)
    q = 37.0 - 15.0 * math.log10(p["qdu"])
    g = 1.07 + 0.258 * q + 0.0602 * q * q
    y = (ro - 100.0) / 15.0 + 46.0 / 8.4 - g / 9.0
    z = 46.0 / 30.0 - g / 40.0
    iq = 15.0 * math.log10(1.0 + 10.0**y + 10.0**z)
    return iolr + ist + iq


def _delay(p: Mapping[str, float], ro: float, no: float, ist: float) -> dict[str, float]:
    """Idte, Idle, Idd and Id = Idte + Idle + Idd (G.107 clause 7.4, eq 7-18)."""
    t = p["T"]
    idte = 0.0
    if t >= 1.0:  # below 1 ms talker echo is perceived as sidetone
        terv = (
            p["TELR"] - 40.0 * math.log10((1.0 + t / 10.0) / (1.0 + t / 150.0))
            + 6.0 * math.exp(-0.3 * t * t)
        )
        if p["STMR"] < 9.0:
            terv += ist / 2.0  # TERVs, eq 7-23
        roe = -1.5 * (no - p["RLR"])
        re = 80.0 + 2.5 * (terv - 14.0)
        idte = ((roe - re) / 2.0 + math.sqrt((roe - re) ** 2 / 4.0 + 100.0) - 1.0) * (
            1.0 - math.exp(-t)
        )
    if p["STMR"] > 20.0:
        idte = math.sqrt(idte * idte + ist * ist)  # Idtes, eq 7-24
    rle = 10.5 * (p["WEPL"] + 7.0) * (p["Tr"] + 1.0) ** -0.25
    idle = (ro - rle) / 2.0 + math.sqrt((ro - rle) ** 2 / 4.0 + 169.0)
    idd = 0.0
    if p["Ta"] > p["mT"]:
        x = math.log10(p["Ta"] / p["mT"]) / math.log10(2.0)
        k = 6.0 * p["sT"]
        idd = 25.0 * ((1.0 + x**k) ** (1.0 / k) - 3.0 * (1.0 + (x / 3.0) ** k) ** (1.0 / k) + 2.0)
    return {"Idte": idte, "Idle": idle, "Idd": idd, "Id": idte + idle + idd}


def impairments(
    codec: str = "G711",
    plc: bool = False,
    delay_ms: float = 0.0,
    loss: float = 0.0,
    burst_r: float = 1.0,
    **overrides: float,
) -> dict[str, float]:
    """Every term of the G.107 rating, for inspection and plots.

    Parameters are those of :func:`r_factor`.

    Returns
    -------
    dict of str to float
        ``Ro``, ``No``, ``Is``, ``Ist``, ``Id``, ``Idte``, ``Idle``, ``Idd``,
        ``Ie_eff``, ``A`` and ``R`` (with ``R = Ro − Is − Id − Ie_eff + A``).
    """
    p = _parameters(codec, plc, delay_ms, loss, burst_r, overrides)
    ro, no = _basic_snr(p)
    ist = _sidetone(p)
    is_ = _simultaneous(p, ro, no, ist)
    delay = _delay(p, ro, no, ist)
    ie, ppl = p["Ie"], p["Ppl"]
    ie_eff = ie + (95.0 - ie) * ppl / (ppl / p["BurstR"] + p["Bpl"])  # eq 7-29
    r = ro - is_ - delay["Id"] - ie_eff + p["A"]
    return {"Ro": ro, "No": no, "Is": is_, "Ist": ist, **delay,
            "Ie_eff": ie_eff, "A": p["A"], "R": r}


def r_factor(
    codec: str = "G711",
    plc: bool = False,
    delay_ms: float = 0.0,
    loss: float = 0.0,
    burst_r: float = 1.0,
    **overrides: float,
) -> float:
    """Transmission rating R of ITU-T G.107 for a narrowband VoIP leg.

    Parameters
    ----------
    codec : str
        Narrowband codec: ``"G711"`` (also ``"PCMU"``, ``"PCMA"``) or ``"G729A"``
        (also ``"G729"``). Wideband codecs raise ``ValueError``.
    plc : bool
        Packet-loss concealment in the receiver (selects the codec's ``Bpl``).
    delay_ms : float
        One-way mouth-to-ear delay ``Ta`` in ms, ``>= 0``; ``T = Ta`` and ``Tr = 2·Ta``.
    loss : float
        Packet-loss fraction in ``[0, 1]`` (``Ppl = 100·loss`` percent).
    burst_r : float
        Burst ratio ``BurstR > 0``; 1 for random (independent) loss, > 1 for bursts.
    **overrides : float
        Any other G.107 parameter by name (see :data:`TABLE3_DEFAULTS`), e.g.
        ``TELR=55`` or ``Ie=5``; ``T``, ``Ta``, ``Tr`` override the delay mapping.

    Returns
    -------
    float
        The rating R; 93.2 with every default.

    Raises
    ------
    ValueError
        For an unknown or wideband codec, an out-of-range argument or an unknown
        override name.

    Examples
    --------
    >>> round(r_factor(), 1)
    93.2
    """
    return impairments(codec, plc, delay_ms, loss, burst_r, **overrides)["R"]


def mos_from_r(r: float) -> float:
    """Estimated conversational MOS (MOS-CQE) from R, ITU-T G.107 Annex B (eq B-4).

    Parameters
    ----------
    r : float
        Transmission rating R.

    Returns
    -------
    float
        1 for ``R < 0``, 4.5 for ``R > 100``, otherwise
        ``1 + 0.035·R + R·(R − 60)·(100 − R)·7e-6``. The cubic dips to 0.994 near
        ``R = 3``; the result is held at the scale's floor of 1 there (a change below
        0.006 for ``0 < R < 6.5``) so that MOS never falls as R rises.

    Examples
    --------
    >>> round(mos_from_r(93.2), 2)
    4.41
    """
    x = _finite("r", r)
    if x < 0.0:
        return 1.0
    if x > 100.0:
        return 4.5
    return max(1.0, 1.0 + 0.035 * x + x * (x - 60.0) * (100.0 - x) * 7e-6)


def emodel(
    codec: str = "G711",
    plc: bool = False,
    delay_ms: float = 0.0,
    loss: float = 0.0,
    burst_r: float = 1.0,
) -> dict[str, float]:
    """R and MOS for one VoIP leg, as printed by ``siplab emodel``.

    Parameters are those of :func:`r_factor`.

    Returns
    -------
    dict of str to float
        ``{"R": r, "MOS": mos}``.

    Examples
    --------
    >>> out = emodel("G711", plc=True, delay_ms=0.0, loss=0.0)
    >>> round(out["R"], 1), round(out["MOS"], 2)
    (93.2, 4.41)
    """
    r = r_factor(codec, plc, delay_ms, loss, burst_r)
    return {"R": r, "MOS": mos_from_r(r)}
