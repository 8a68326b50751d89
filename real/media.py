"""Media: a real call's voice quality from its RTP/RTCP statistics (RFC 3550, ITU-T G.107).

The real counterpart of :mod:`twin.media`. The twin rates a call from modelled
packets (:meth:`twin.media.MediaPath.quality`); the real backend rates it from what
pjsua2's stream measured at the caller's ear (:func:`loadgen.callers.media.stream_stats`),
with the same E-model inputs (:func:`lab.emodel.emodel`):

- **loss** ``Ppl``: packets missing from the received sequence (RFC 3550 A.3, pjmedia's
  ``rxStat.loss``) plus those the jitter buffer discarded as too late, over the packets
  expected (received + lost);
- **burst ratio** ``BurstR``: mean loss-run length (``rxStat.lossPeriodUsec`` / ptime)
  times ``1 − Ppl`` (G.113 Appendix I), 1 when nothing was lost;
- **mouth-to-ear delay** ``Ta``: one-way network delay (RTCP round-trip time / 2,
  RFC 3550 6.4.1 LSR/DLSR; without reports from the far end, ``one_way_ms`` as
  measured by the impairment emulator, else 0), plus the jitter
  buffer's mean delay, plus one ptime of packetisation, plus the codec's look-ahead;
- **jitter** (reported only): the RFC 3550 interarrival jitter, mean over the call.

:func:`media_fields` adds the emulator's own drop fraction per direction to the
record (``relay_loss_up``/``relay_loss_down``), the loss the network applied as
opposed to the loss the caller's stream saw.

This module is the coordinator's and imports no pjsua2; the agent's pjsua2 audio
ports, which move PCM frames between a call and Python inside the agent (and the
test probe), are :mod:`real.media_ports`.
"""

from __future__ import annotations

import math
from typing import Any

from lab.codecs import codec as find_codec
from lab.emodel import emodel
from lab.spec import Media

MEDIA_KEYS = ("mos", "rtp_loss", "rtp_jitter_ms", "rtt_ms", "mouth_to_ear_ms", "burst_r")


def quality(stats: dict[str, Any] | None, media: Media) -> dict[str, float]:
    """E-model rating of one call from the worker's stream statistics.

    Parameters
    ----------
    stats
        The ``media`` dict of a worker's ``done`` event (``rx_pkt``, ``rx_loss``,
        ``rx_discard``, ``rx_jitter_us``, ``rtt_us``, ``jb_delay_ms``,
        ``loss_period_us``); None or empty when the call carried no audio.
    media
        ``deployment.media``: codec, PLC, ptime.

    Returns
    -------
    dict of str to float
        ``rtp_loss``, ``burst_r``, ``rtp_jitter_ms``, ``rtt_ms``, ``mouth_to_ear_ms``,
        ``R``, ``mos`` -- NaN where nothing was received.
    """
    nan = math.nan
    out = {"rtp_loss": nan, "burst_r": nan, "rtp_jitter_ms": nan, "rtt_ms": nan,
           "mouth_to_ear_ms": nan, "R": nan, "mos": nan}
    if not stats or int(stats.get("rx_pkt") or 0) <= 0:
        return out
    received, lost = int(stats["rx_pkt"]), max(0, int(stats.get("rx_loss") or 0))
    late = max(0, int(stats.get("rx_discard") or 0))
    expected = received + lost
    loss = min(1.0, (lost + late) / expected)
    period = stats.get("loss_period_us")
    burst = 1.0
    if lost and period:
        burst = max(1.0, float(period) / (media.ptime_ms * 1000.0)) * (1.0 - loss)
        burst = max(burst, 1e-6)
    rtt_ms = float(stats["rtt_us"]) / 1000.0 if stats.get("rtt_us") else nan
    codec = find_codec(media.codec)
    one_way = rtt_ms / 2.0 if not math.isnan(rtt_ms) else float(stats.get("one_way_ms") or 0.0)
    delay = (one_way
             + float(stats.get("jb_delay_ms") or 0.0) + media.ptime_ms + codec.lookahead_ms)
    jitter = stats.get("rx_jitter_us")
    out.update(rtp_loss=loss, burst_r=burst, rtt_ms=rtt_ms, mouth_to_ear_ms=delay,
               rtp_jitter_ms=float(jitter) / 1000.0 if jitter is not None else nan)
    if codec.emodel_name is not None:
        rating = emodel(codec.emodel_name, media.plc, delay, loss, max(burst, 1e-6))
        out.update(R=float(rating["R"]), mos=float(rating["MOS"]))
    return out


def media_fields(event: dict[str, Any], answered: bool, media: Media | None,
                 counters: dict[str, Any] | None) -> dict[str, Any]:
    """The record's media fields of one call.

    Parameters
    ----------
    event
        The caller's ``done`` event (its ``media`` statistics, its ``sip_call_id``).
    answered
        Only an answered call is rated.
    media
        ``deployment.media``; None: no rating (the fields stay NaN).
    counters
        The impairment emulator's counters of the call (``up``, ``down``), or None.

    Returns
    -------
    dict
        :data:`MEDIA_KEYS`, ``relay_loss_up``, ``relay_loss_down``, ``sip_call_id``.
    """
    nan = float("nan")
    out: dict[str, Any] = dict.fromkeys(MEDIA_KEYS, nan)
    if answered and media is not None:
        stats = dict(event.get("media") or {})
        down = (counters or {}).get("down") or {}
        if not stats.get("rtt_us") and down.get("tx"):
            # no RTCP reports from the far end: the emulator's one-way delay stands in
            stats["one_way_ms"] = float(down["delay_ms_total"]) / int(down["tx"])
        q = quality(stats, media)
        out.update({k: q[k] for k in MEDIA_KEYS})
    for direction in ("up", "down"):
        c = (counters or {}).get(direction) or {}
        rx = int(c.get("rx") or 0) - int(c.get("unrouted") or 0)
        out[f"relay_loss_{direction}"] = int(c.get("dropped") or 0) / rx if rx > 0 else nan
    out["sip_call_id"] = event.get("sip_call_id") or None
    return out
