"""Voice codecs: every fact about a codec that siplab uses, in one table.

A codec enters three calculations, and each reads it from here:

- **bandwidth** (:func:`twin.media.bandwidth_kbps`): payload bit rate and frame size;
- **delay** (the E-model's mouth-to-ear ``Ta``): packetisation (one ``ptime``) plus the
  codec's algorithmic look-ahead;
- **quality** (ITU-T G.107 E-model, :mod:`lab.emodel`): the equipment impairment ``Ie``
  (ITU-T G.113 Appendix I, Table I.1) and the packet-loss robustness ``Bpl`` with and
  without packet-loss concealment (Table I.3).

The RTP payload types are the static ones of RFC 3551 (PCMU 0, PCMA 8, G722 9, G729 18);
Opus has none (RFC 7587: dynamic). Wideband codecs (G.722, Opus) are rated by G.107.1 on
the R_WB scale with ``Ie,WB``/``Bpl`` values not implemented here: their ``ie`` is None,
and the narrowband E-model refuses them rather than mis-rating them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["CODECS", "WIDEBAND", "Codec", "codec"]


@dataclass(frozen=True)
class Codec:
    """One voice codec.

    Attributes
    ----------
    name : str
        Canonical name (``G711U``, ``G711A``, ``G722``, ``G729A``, ``OPUS``).
    rtp_name : str
        The SDP encoding name (``PCMU``, ``PCMA``, ``G722``, ``G729``, ``opus``).
    payload_type : int or None
        The static RTP payload type of RFC 3551; None for a dynamic one.
    sample_rate_hz : int
        Audio sample rate (G.722 is 16 kHz although its RTP clock is 8 kHz, RFC 3551).
    bitrate_kbps : float
        Payload bit rate; Opus is variable, this is the nominal rate used here.
    frame_ms : float
        Granularity: ``ptime_ms`` must be a multiple of it.
    lookahead_ms : float
        Algorithmic delay beyond one frame (look-ahead, filter delay).
    ie : float or None
        G.113 Table I.1 equipment impairment; None for wideband codecs (G.107.1).
    bpl, bpl_no_plc : float or None
        G.113 Table I.3 packet-loss robustness with / without concealment.
    """

    name: str
    rtp_name: str
    payload_type: int | None
    sample_rate_hz: int
    bitrate_kbps: float
    frame_ms: float
    lookahead_ms: float
    ie: float | None = None
    bpl: float | None = None
    bpl_no_plc: float | None = None

    @property
    def wideband(self) -> bool:
        """Rated by G.107.1 (not implemented), not by the narrowband E-model."""
        return self.ie is None

    @property
    def emodel_name(self) -> str | None:
        """The name :func:`lab.emodel.emodel` rates it under; None for wideband codecs."""
        return None if self.wideband else _EMODEL_NAME[self.name]


# G.711 64 kbit/s PCM, sample by sample: Ie = 0 (G.113 Table I.1); Bpl = 25.1 with the
# concealment of G.711 Appendix I, 4.3 without (Table I.3).
_G711U = Codec("G711U", "PCMU", 0, 8000, 64.0, 0.125, 0.0, 0.0, 25.1, 4.3)
_G711A = Codec("G711A", "PCMA", 8, 8000, 64.0, 0.125, 0.0, 0.0, 25.1, 4.3)
# G.722: 64 kbit/s SB-ADPCM; delay of its 24-tap transmit + receive QMFs at 16 kHz,
# 2 × 11.5 samples = 1.4375 ms (derived from the filter length, G.722 clause 1.2).
_G722 = Codec("G722", "G722", 9, 16000, 64.0, 0.125, 1.4375)
# G.729A (+VAD) 8 kbit/s CS-ACELP, 10 ms frames, 5 ms look-ahead (G.729 clause 1):
# Ie = 11 (Table I.1), Bpl = 19.0 (Table I.3); concealment is built into the decoder.
_G729A = Codec("G729A", "G729", 18, 8000, 8.0, 10.0, 5.0, 11.0, 19.0, 19.0)
# Opus (RFC 6716): 48 kHz internally; default 20 ms frames with 26.5 ms algorithmic
# delay = frame + 6.5 ms look-ahead; 20 kbit/s is the top of RFC 7587's range for
# wideband speech (3.1.1).
_OPUS = Codec("OPUS", "opus", None, 48000, 20.0, 2.5, 6.5)

_EMODEL_NAME = {"G711U": "G711", "G711A": "G711", "G729A": "G729A"}

#: Codecs by every name the spec, SDP and the CLI use.
CODECS: Mapping[str, Codec] = MappingProxyType({
    "G711": _G711U, "G711U": _G711U, "PCMU": _G711U, "G711ULAW": _G711U,
    "G711A": _G711A, "PCMA": _G711A, "G711ALAW": _G711A,
    "G722": _G722, "G729A": _G729A, "G729": _G729A, "G729AB": _G729A, "OPUS": _OPUS,
})

#: Names of wideband / super-wideband codecs (rated by G.107.1 / G.107.2, not G.107).
WIDEBAND: frozenset[str] = frozenset(
    {"G722", "G7221", "G7222", "AMRWB", "OPUS", "SILK", "SPEEX16", "L16", "EVS"})


def codec(name: str | Codec) -> Codec:
    """The codec called ``name`` (any spelling of :data:`CODECS`, case and punctuation
    ignored); ``ValueError`` naming the known ones otherwise."""
    if isinstance(name, Codec):
        return name
    if not isinstance(name, str):
        raise ValueError(f"codec: must be a codec name such as 'G711', got {name!r}")
    key = "".join(ch for ch in name.upper() if ch.isalnum())
    try:
        return CODECS[key]
    except KeyError:
        raise ValueError(f"codec: unknown codec {name!r}, expected one of "
                         f"{sorted(CODECS)}") from None
