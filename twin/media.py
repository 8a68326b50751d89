"""Media layer: per-call voice quality, RTP bandwidth and RTP relay capacity.

Telephony background
--------------------
A call's voice travels as RTP packets (RFC 3550), one every ``ptime`` ms, each
carrying ``ptime`` ms of coded speech. On the way a packet is delayed (a fixed
part plus *jitter*), may be lost, and at the receiver waits in a **jitter buffer**
until its playout time; a packet arriving after its playout time is useless and
is discarded, so it counts as lost. What the listener hears is rated by the ITU-T
G.107 E-model (:mod:`lab.emodel`) from three numbers:

- the **mouth-to-ear delay** ``Ta`` = network delay + jitter-buffer wait +
  packetisation (one ``ptime``: the first sample of a packet waits for the last) +
  the codec's look-ahead;
- the **effective loss** ``Ppl``: network loss plus late discards;
- the **burst ratio** ``BurstR`` (G.107 clause 7.5, ITU-T G.113 Appendix I): the
  observed mean length of loss bursts over the mean length expected for random
  loss at the same rate, ``1/(1 − p)``. It is 1 for independent loss and > 1 when
  losses cluster, which concealment hides less well.

Models used here (one set, used by both paths below):

- **Delay**: one-way delay per packet ``max(delay_ms + jitter_ms·Z, 0)`` with ``Z``
  standard normal, independent per packet — the same model as the SIP messages in
  :mod:`twin.network`. Independent jitter lets packets overtake each other.
- **Loss**: independent (Bernoulli ``network.loss``), or bursty with a
  **Gilbert–Elliott** chain (:mod:`lab.loss`, the model the real backend's impairment
  relay drops packets with too).
- **Fixed jitter buffer**: every packet is played ``jitter_buffer_ms`` after the
  first received packet's delay: packet i is late when ``d_i > d_first + B``.
- **Adaptive jitter buffer**: Ramjee, Kurose, Towsley & Schulzrinne (INFOCOM 1994),
  algorithm 1, ``d̂ ← α·d̂ + (1 − α)·n``, ``v̂ ← α·v̂ + (1 − α)·|d̂ − n|`` with
  ``α = 0.998002`` per received packet, playout delay ``d̂ + 4·v̂``. It is re-set
  every ``ADAPT_INTERVAL_S`` (1 s, the order of a talk-spurt in conversational speech,
  standing in for talk-spurt boundaries). It starts as the fixed buffer
  (``d̂ = d_first``, ``4·v̂ = jitter_buffer_ms``).
- **Interarrival jitter** (reported only): RFC 3550 section 6.4.1,
  ``J ← J + (|D| − J)/16`` over received packets in sequence order; for the normal
  model its mean is ``2σ/√π``.

Two ways to compute a call's quality
------------------------------------
``method="packets"`` draws every packet with numpy (vectorised, no SimPy events):
exact for the model, about 1 ms per 3-minute call. ``method="fast"`` (the default,
for the twin's ~190,000 calls) draws only the first packet's delay and computes
the expected loss, burst ratio and delay in closed form given it: ~20 µs per call
with a fixed buffer, ~60–90 µs with the adaptive one (it follows the buffer's
expected convergence over the first 64 adaptation intervals, then holds it). It
omits the chance of *which* packets are lost: for a 3-minute G.711 call at 1 %
random loss the loss fraction's s.d. is only 0.1 %, but with bursty loss a call
sees few bursts and its own loss scatters widely around the mean, so the fast
path understates the spread (not the mean) of MOS across calls. The tests hold the
two paths' means within stated tolerances (tests/theory/test_media_theory.py).

Wideband codecs (G.722, Opus) are rated by G.107.1 on the R_WB scale with
``Ie,WB``/``Bpl`` values from G.113 that are not implemented here; their ``R`` and
``MOS`` are NaN (a narrowband MOS would be wrong, not just rough). Delay, loss and
burst ratio are still computed.

Bandwidth and relay
-------------------
:func:`bandwidth_kbps` counts a packet's payload plus RTP (12 B), UDP (8 B) and IPv4
(20 B) headers, plus Ethernet II header and FCS (18 B) at the ``ethernet`` layer,
plus preamble, SFD and inter-frame gap (20 B) at the ``wire`` layer: G.711 at 20 ms
is 218 B × 50 packet/s = 87.2 kbit/s per direction on Ethernet. :func:`relay_capacity`
is the CPU arithmetic of an rtpengine-like relay.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from lab.codecs import Codec
from lab.codecs import codec as _codec
from lab.emodel import emodel
from lab.loss import LossModel, burst_ratio, gilbert_elliott
from lab.spec import Media, Network

__all__ = [
    "ADAPT_INTERVAL_S",
    "RAMJEE_ALPHA",
    "MediaPath",
    "bandwidth_kbps",
    "link_calls",
    "relay_capacity",
]

RAMJEE_ALPHA = 0.998002  # Ramjee et al. 1994, algorithm 1
ADAPT_INTERVAL_S = 1.0  # adaptive playout delay is re-set this often (talk-spurt stand-in)
_SETTLED = 64  # adaptation intervals the fast path follows explicitly

Layer = Literal["payload", "rtp", "ip", "ethernet", "wire"]
_HEADER_BYTES: Mapping[str, int] = MappingProxyType(
    {"payload": 0, "rtp": 12, "ip": 12 + 8 + 20, "ethernet": 40 + 18, "wire": 58 + 20}
)


# ---------------------------------------------------------------------------- bandwidth
def bandwidth_kbps(codec: str | Codec, ptime_ms: float = 20.0, layer: Layer = "ethernet",
                   *, ipv6: bool = False, bitrate_kbps: float | None = None) -> float:
    """One direction of one call's RTP stream, in kbit/s.

    Parameters
    ----------
    codec : str or Codec
        Codec name (``G711``, ``PCMU``, ``PCMA``, ``G722``, ``G729A``, ``OPUS``).
    ptime_ms : float
        Packetisation interval; a multiple of the codec's frame.
    layer : {"payload", "rtp", "ip", "ethernet", "wire"}
        Headers counted: none; RTP 12 B; + UDP 8 B + IPv4 20 B (40 B); + Ethernet II
        header and FCS 18 B (no VLAN tag); + preamble/SFD 8 B and inter-frame gap 12 B.
    ipv6 : bool
        IPv6 header (40 B) instead of IPv4 (20 B), at the ``ip`` layer and below.
    bitrate_kbps : float, optional
        Payload bit rate (for Opus, say); the codec's nominal rate by default.

    Examples
    --------
    >>> round(bandwidth_kbps("G711", 20), 1), round(bandwidth_kbps("G729A", 20), 1)
    (87.2, 31.2)
    """
    c = _codec(codec)
    ratio = ptime_ms / c.frame_ms
    if ptime_ms <= 0 or abs(ratio - round(ratio)) > 1e-9:
        raise ValueError(f"ptime_ms: must be a positive multiple of {c.name}'s "
                         f"{c.frame_ms:g} ms frame, got {ptime_ms!r}")
    if layer not in _HEADER_BYTES:
        raise ValueError(f"layer: must be one of {list(_HEADER_BYTES)}, got {layer!r}")
    rate = c.bitrate_kbps if bitrate_kbps is None else bitrate_kbps
    payload_bytes = rate * ptime_ms / 8.0
    headers = _HEADER_BYTES[layer] + (20 if ipv6 and layer not in ("payload", "rtp") else 0)
    return (payload_bytes + headers) * 8.0 / ptime_ms


def link_calls(link_kbps: float, codec: str | Codec, ptime_ms: float = 20.0,
               layer: Layer = "ethernet") -> int:
    """Calls a full-duplex link carries (each direction carries one stream per call)."""
    return math.floor(link_kbps / bandwidth_kbps(codec, ptime_ms, layer) + 1e-9)


def relay_capacity(cores: int, call_cost_pct: float, *, transcode_cost_pct: float = 0.0,
                   resample_cost_pct: float = 0.0, transcode: bool = False,
                   resample: bool = False, max_utilization: float = 1.0) -> int:
    """Concurrent calls an RTP relay carries before its CPU is full.

    Parameters
    ----------
    cores : int
        CPU cores given to the relay.
    call_cost_pct : float
        Percent of one core per relayed call (both directions, no transcoding).
    transcode_cost_pct, resample_cost_pct : float
        Extra percent of one core when the legs' codecs differ / sample rates differ.
    transcode, resample : bool
        Whether this call is transcoded / resampled.
    max_utilization : float
        Fraction of the CPU that may be used (head-room), in (0, 1].

    Returns
    -------
    int
        ``floor(cores · 100 · max_utilization / cost)``.

    Examples
    --------
    >>> relay_capacity(4, 0.5), relay_capacity(4, 0.5, transcode_cost_pct=4.5, transcode=True)
    (800, 80)
    """
    cost = call_cost_pct + (transcode_cost_pct if transcode else 0.0) + (
        resample_cost_pct if resample else 0.0)
    if cores <= 0 or cost <= 0 or not 0 < max_utilization <= 1:
        raise ValueError("relay: cores and call cost must be > 0, max_utilization in (0, 1]")
    return math.floor(cores * 100.0 * max_utilization / cost + 1e-9)


# ---------------------------------------------------------------------------- quality
@lru_cache(maxsize=4096)
def _rate(emodel_name: str, plc: bool, delay_ms: float, loss: float, burst: float
          ) -> tuple[float, float]:
    """E-model R and MOS, memoised on inputs rounded below what R can resolve.

    Rounding: 0.1 ms of delay (R moves < 0.01 per 0.1 ms below 100 ms mouth-to-ear and
    < 0.03 above), 1e-5 of loss, 1e-3 of BurstR. Calls on one path then share a few
    hundred distinct inputs, so a busy hour computes the E-model a few hundred times,
    not once per call."""
    return _rate_rounded(emodel_name, plc, round(delay_ms, 1), round(loss, 5), round(burst, 3))


def rfc3550_jitter(transit_s: NDArray[np.float64]) -> NDArray[np.float64]:
    """RFC 3550 section 6.4.1 interarrival jitter after each packet from the second on.

    ``transit_s`` is each received packet's transit time (arrival minus RTP timestamp),
    in order; ``D`` is the difference of consecutive transits and the estimate moves a
    sixteenth of the way to ``|D|`` per packet, from 0: ``J += (|D| - J) / 16``.
    """
    from scipy.signal import lfilter

    diffs = np.abs(np.diff(transit_s))
    return np.asarray(lfilter([1 / 16], [1.0, -15 / 16], diffs), dtype=float)


def _round(x: NDArray[np.float64], digits: int) -> NDArray[np.float64]:
    """``round(v, digits)`` for every ``v`` of ``x``, exactly as Python rounds a float.

    numpy's rounding scales by 10**digits first, which can land the other side of a
    half near a tie; such values (and only those) are rounded by Python itself.
    """
    scaled = x * 10.0**digits
    out = np.round(x, digits)
    frac = np.abs(scaled - np.floor(scaled) - 0.5)
    near = np.flatnonzero(frac < 1e-6)
    for i in near.tolist():
        out[i] = round(float(x[i]), digits)
    return out


@functools.lru_cache(maxsize=65536)
def _rate_rounded(emodel_name: str, plc: bool, delay_ms: float, loss: float, burst: float
                  ) -> tuple[float, float]:
    out = emodel(emodel_name, plc, delay_ms, loss, burst)
    return out["R"], out["MOS"]


class MediaPath:
    """One call's RTP path (one direction, the caller's ear): quality, bandwidth, relay.

    Parameters
    ----------
    media : lab.spec.Media
        Codec, PLC, ptime, jitter buffer, link and relay.
    network : lab.spec.Network
        Delay, jitter, loss and burstiness of the caller-side path.

    Examples
    --------
    >>> from lab.spec import Media, Network
    >>> path = MediaPath(Media(), Network(delay_ms=20))
    >>> q = path.quality(180.0, np.random.default_rng(1))
    >>> round(q["delay_ms"], 1), round(q["MOS"], 2)
    (80.0, 4.36)
    """

    def __init__(self, media: Media, network: Network) -> None:
        self.media = media
        self.network = network
        self.codec = _codec(media.codec)
        self.agent_codec = _codec(media.agent_codec) if media.agent_codec else self.codec
        self.loss_model = LossModel.from_network(network)
        self._p_net = self.loss_model.stats()[0]
        bandwidth_kbps(self.codec, media.ptime_ms)  # validates ptime against the frame
        self.ptime_s = media.ptime_ms / 1000.0
        self.delay_s = network.delay_ms / 1000.0
        self.jitter_s = network.jitter_ms / 1000.0
        self.buffer_s = media.jitter_buffer_ms / 1000.0

    # -- capacity ------------------------------------------------------------------
    @property
    def transcode(self) -> bool:
        return self.agent_codec.name != self.codec.name

    @property
    def resample(self) -> bool:
        return self.agent_codec.sample_rate_hz != self.codec.sample_rate_hz

    @property
    def bandwidth_kbps(self) -> float:
        """Caller-side stream, one direction, Ethernet layer."""
        return bandwidth_kbps(self.codec, self.media.ptime_ms)

    @property
    def link_calls(self) -> int | None:
        """Calls the caller-side link carries; None without ``media.link_kbps``."""
        if self.media.link_kbps is None:
            return None
        return link_calls(self.media.link_kbps, self.codec, self.media.ptime_ms)

    @property
    def relay_calls(self) -> int | None:
        """Calls the RTP relay carries; None without ``media.relay``."""
        r = self.media.relay
        if r is None:
            return None
        return relay_capacity(r.cores, r.call_cost_pct, transcode_cost_pct=r.transcode_cost_pct,
                              resample_cost_pct=r.resample_cost_pct, transcode=self.transcode,
                              resample=self.resample, max_utilization=r.max_utilization)

    @property
    def max_calls(self) -> int | None:
        """The tighter of the link and relay caps (a channel-like limit); None: no cap."""
        caps = [c for c in (self.link_calls, self.relay_calls) if c is not None]
        return min(caps) if caps else None

    # -- quality -------------------------------------------------------------------
    def packets(self, talk_s: float) -> int:
        return max(1, math.ceil(talk_s / self.ptime_s - 1e-9))

    def quality(self, talk_s: float, rng: np.random.Generator,
                method: Literal["fast", "packets"] = "fast") -> dict[str, float]:
        """Voice quality of one call of ``talk_s`` seconds.

        Returns
        -------
        dict of str to float
            ``packets``; ``loss_network``, ``loss_late`` (of all packets) and ``loss``
            (their sum, the E-model's Ppl as a fraction); ``burst_r``; ``network_ms``
            (first received packet's delay); ``playout_ms`` (mean send → playout,
            network + buffer); ``delay_ms`` (mouth-to-ear: playout + ptime +
            look-ahead); ``jitter_ms`` (RFC 3550); ``R`` and ``MOS`` (NaN for wideband).
        """
        n = self.packets(talk_s)
        if method == "fast":
            out = self._fast(n, rng)
        elif method == "packets":
            out = self._packets(n, rng)
        else:
            raise ValueError(f"method: must be 'fast' or 'packets', got {method!r}")
        out["delay_ms"] = out["playout_ms"] + self.media.ptime_ms + self.codec.lookahead_ms
        if self.codec.emodel_name is None:
            out["R"], out["MOS"] = math.nan, math.nan
        else:
            out["R"], out["MOS"] = _rate(self.codec.emodel_name, self.media.plc,
                                         out["delay_ms"], min(max(out["loss"], 0.0), 1.0),
                                         max(out["burst_r"], 1e-6))
        return out

    def qualities(self, talk_s: NDArray[np.float64], z: NDArray[np.float64]
                  ) -> dict[str, NDArray[np.float64]]:
        """:meth:`quality` of many calls at once: ``talk_s`` each, ``z`` the standard
        normal draw of each one's first packet delay (what :meth:`quality` draws).

        Returns arrays ``MOS``, ``loss`` and ``delay_ms``, equal to the per-call values
        bit for bit (the same arithmetic, vectorised; the adaptive buffer call by call).
        """
        talk_s, z = np.asarray(talk_s, dtype=float), np.asarray(z, dtype=float)
        d_s, sd = self.delay_s, self.jitter_s
        if self.media.jitter_buffer == "fixed" or sd == 0.0:
            first = np.maximum(d_s + sd * z, 0.0)
            playout = first + self.buffer_s
            if sd > 0.0:
                scale = sd * math.sqrt(2.0)
                p_late = 0.5 * np.array([math.erfc(x) for x in ((playout - d_s) / scale
                                                                ).tolist()], dtype=float)
            else:
                p_late = np.zeros(z.size)
            p_loss, burst = self.loss_model.stats_array(p_late)
            playout_ms = playout * 1e3
        else:
            rows = [self._fast(self.packets(t), first=max(d_s + sd * x, 0.0))
                    for t, x in zip(talk_s.tolist(), z.tolist(), strict=True)]
            p_loss = np.array([r["loss"] for r in rows], dtype=float)
            burst = np.array([r["burst_r"] for r in rows], dtype=float)
            playout_ms = np.array([r["playout_ms"] for r in rows], dtype=float)
        delay_ms = playout_ms + self.media.ptime_ms + self.codec.lookahead_ms
        if self.codec.emodel_name is None:
            mos = np.full(z.size, math.nan)
        else:
            name, plc = self.codec.emodel_name, self.media.plc
            keys = (_round(delay_ms, 1), _round(np.clip(p_loss, 0.0, 1.0), 5),
                    _round(np.maximum(burst, 1e-6), 3))
            # the distinct (delay, loss, burst) triples, each rated once: a 1-D unique of
            # each column, their codes combined into one integer (a row-wise unique of
            # the three columns sorts rows, ten times slower on 200,000 calls)
            code = np.zeros(z.size, dtype=np.int64)
            for k in keys:
                values, inverse = np.unique(k, return_inverse=True)
                code = code * values.size + inverse.reshape(-1)
            _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
            rated = np.array([_rate_rounded(name, plc, d, p, b)[1] for d, p, b in zip(
                keys[0][first].tolist(), keys[1][first].tolist(), keys[2][first].tolist(),
                strict=True)], dtype=float)
            mos = rated[inverse.reshape(-1)] if first.size else np.empty(0)
        return {"MOS": mos, "loss": p_loss, "delay_ms": delay_ms}

    def _fast(self, n: int, rng: np.random.Generator | None = None,
              first: float | None = None) -> dict[str, float]:
        d_s, sd = self.delay_s, self.jitter_s
        if first is None:
            assert rng is not None
            first = max(d_s + sd * float(rng.standard_normal()), 0.0)  # always one draw
        p_net = self._p_net
        if self.media.jitter_buffer == "fixed" or sd == 0.0:
            playout = first + self.buffer_s
            if sd > 0.0:  # P(max(d + sd·Z, 0) > t) = P(Z > (t − d)/sd) for t >= 0
                p_late_rx = 0.5 * math.erfc((playout - d_s) / (sd * math.sqrt(2.0)))
            else:
                p_late_rx = 0.0
        else:
            from scipy.special import ndtr

            levels, weights = self._adaptive_expected(n, first, p_net)
            late = np.where(levels < 0.0, 1.0, ndtr((d_s - levels) / sd))
            p_late_rx = float(late @ weights)  # of the packets that arrive
            playout = float(levels @ weights)
        p_loss, burst = self.loss_model.stats(p_late_rx)
        return {"packets": float(n), "loss_network": p_net,
                "loss_late": p_loss - p_net, "loss": p_loss, "burst_r": burst,
                "network_ms": first * 1e3, "playout_ms": playout * 1e3,
                "jitter_ms": 2.0 * sd / math.sqrt(math.pi) * 1e3}

    def _adaptive_expected(self, n: int, first: float, p_net: float
                           ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Expected Ramjee playout delay per adaptation interval, and interval weights."""
        d_s, sd = self.delay_s, self.jitter_s
        per = max(1, round(ADAPT_INTERVAL_S / self.ptime_s))
        # after _SETTLED intervals (≥ 64 s at 20 ms: 6 time constants) the buffer has
        # settled; the last explicit interval stands for the rest of the call
        starts = np.arange(0, min(n, _SETTLED * per), per, dtype=float)
        weights = np.minimum(per, n - starts)
        weights[-1] = n - starts[-1]
        weights /= n
        u0 = d_s / sd  # mean of the clipped normal delay
        mean = d_s * 0.5 * math.erfc(-u0 / math.sqrt(2.0)) + sd * math.exp(-0.5 * u0 * u0) / (
            math.sqrt(2 * math.pi))
        rate = 1.0 - p_net  # the estimator moves on received packets only
        d_hat = mean + (first - mean) * RAMJEE_ALPHA ** (starts * rate)
        from scipy.special import ndtr

        # v̂ is an EWMA of E|d̂ − n| = sd·(2φ(u) + u(2Φ(u) − 1)), u = (d̂ − d)/sd, which
        # shrinks as d̂ converges: take it at each interval's middle, then smooth per
        # interval, v_k = A·v_(k−1) + (1 − A)·g_(k−1), A = α^(packets per interval),
        # from v_0 = jitter_buffer_ms/4 (closed form: a weighted cumulative sum).
        u = (mean + (first - mean) * RAMJEE_ALPHA ** ((starts + per / 2) * rate) - d_s) / sd
        spread = sd * (2.0 * np.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)
                       + u * (2.0 * ndtr(u) - 1.0))
        a = RAMJEE_ALPHA ** (per * rate)
        powers = a ** np.arange(starts.size)
        past = np.concatenate(([0.0], np.cumsum(spread[:-1] / powers[1:])))
        v_hat = powers * (0.25 * self.buffer_s + (1.0 - a) * past)
        return d_hat + 4.0 * v_hat, weights

    def _packets(self, n: int, rng: np.random.Generator) -> dict[str, float]:
        lm = self.loss_model
        # delays first: packet 0's delay is the fast path's one draw (common random numbers)
        delay = np.maximum(self.delay_s + self.jitter_s * rng.standard_normal(n), 0.0)
        lost = gilbert_elliott(n, lm.p_gb, lm.p_bg, lm.loss_good, lm.loss_bad, rng)
        rx = np.flatnonzero(~lost)
        if rx.size == 0:
            return {"packets": float(n), "loss_network": 1.0, "loss_late": 0.0, "loss": 1.0,
                    "burst_r": 1.0, "network_ms": math.nan,
                    "playout_ms": (self.delay_s + self.buffer_s) * 1e3, "jitter_ms": math.nan}
        d_rx = delay[rx]
        if self.media.jitter_buffer == "fixed":
            playout = np.full(n, d_rx[0] + self.buffer_s)
        else:
            playout = self._adaptive_playout(n, rx, d_rx)
        late = np.zeros(n, dtype=bool)
        late[rx] = d_rx > playout[rx]
        late[rx[0]] = False  # the first packet sets the playout point
        gone = lost | late
        jitter = float(rfc3550_jitter(d_rx).mean()) if d_rx.size > 1 else 0.0
        return {"packets": float(n), "loss_network": float(lost.mean()),
                "loss_late": float(late.mean()), "loss": float(gone.mean()),
                "burst_r": burst_ratio(gone), "network_ms": float(d_rx[0]) * 1e3,
                "playout_ms": float(playout.mean()) * 1e3, "jitter_ms": jitter * 1e3}

    def _adaptive_playout(self, n: int, rx: NDArray[np.intp], d_rx: NDArray[np.float64]
                          ) -> NDArray[np.float64]:
        """Ramjee algorithm 1 over received packets; playout delay per packet."""
        from scipy.signal import lfilter

        a = RAMJEE_ALPHA
        d_hat = lfilter([1.0 - a], [1.0, -a], d_rx, zi=[a * d_rx[0]])[0]
        v_hat = lfilter([1.0 - a], [1.0, -a], np.abs(d_hat - d_rx),
                        zi=[a * 0.25 * self.buffer_s])[0]
        estimate = d_hat + 4.0 * v_hat
        per = max(1, round(ADAPT_INTERVAL_S / self.ptime_s))
        starts = np.arange(0, n, per)
        last = np.searchsorted(rx, starts, side="left") - 1  # last received before the start
        level = np.where(last >= 0, estimate[np.maximum(last, 0)], d_rx[0] + self.buffer_s)
        level[0] = d_rx[0] + self.buffer_s
        return np.repeat(level, per)[:n]
