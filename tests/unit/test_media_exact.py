"""Media arithmetic with hand-computed answers: RTP bandwidth per layer (RFC 3550/768/791
headers, IEEE 802.3 framing), link and relay capacity, the RFC 3550 section 6.4.1
jitter recursion on a fixed sequence, Python-exact rounding, and the mouth-to-ear
delay of a jitter-free path (network + buffer + one ptime + codec look-ahead).

The adaptive jitter buffer: against Ramjee et al. (INFOCOM 1994) algorithm 1 written
as a plain per-packet loop, and the fast path's expected playout against the model
its docstring states, evaluated interval by interval here. Also the all-lost call.

Algorithm 1: d̂ ← α·d̂ + (1 − α)·n, v̂ ← α·v̂ + (1 − α)·|d̂ − n| per received packet,
playout delay d̂ + 4·v̂, re-set every ADAPT_INTERVAL_S (1 s) to the estimate after the
last packet received before the interval; the first interval plays at d_first + B
(d̂ starts at d_first and 4·v̂ at the buffer B).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from lab.codecs import CODECS
from lab.emodel import emodel
from lab.spec import Media, Network
from twin.media import (
    ADAPT_INTERVAL_S,
    RAMJEE_ALPHA,
    MediaPath,
    _round,
    bandwidth_kbps,
    link_calls,
    relay_capacity,
    rfc3550_jitter,
)


@pytest.mark.parametrize(("codec", "ptime", "layer", "ipv6", "kbps"), [
    # G.711: 64 kbit/s -> 8 B/ms; headers RTP 12, UDP 8, IPv4 20 / IPv6 40, Ethernet 18,
    # preamble + SFD + IFG 20
    ("G711", 20, "payload", False, 64.0),
    ("G711", 20, "rtp", False, (160 + 12) * 8 / 20),
    ("G711", 20, "ip", False, (160 + 40) * 8 / 20),
    ("G711", 20, "ethernet", False, (160 + 58) * 8 / 20),
    ("G711", 20, "wire", False, (160 + 78) * 8 / 20),
    ("G711", 20, "ip", True, (160 + 60) * 8 / 20),
    ("G711", 20, "ethernet", True, (160 + 78) * 8 / 20),
    ("G711", 20, "rtp", True, (160 + 12) * 8 / 20),  # no IP header at this layer
    ("G711", 20, "payload", True, 64.0),
    ("G711", 30, "ethernet", False, (240 + 58) * 8 / 30),
    ("G711", 1, "ip", False, (8 + 40) * 8 / 1),  # 1 ms is eight G.711 frames
    ("G729A", 20, "ethernet", False, (20 + 58) * 8 / 20),
    ("G729A", 10, "ip", False, (10 + 40) * 8 / 10),
])
def test_bandwidth_by_hand(codec: str, ptime: float, layer: str, ipv6: bool,
                           kbps: float) -> None:
    assert bandwidth_kbps(codec, ptime, layer, ipv6=ipv6) == pytest.approx(kbps, rel=1e-12)


def test_bandwidth_defaults_and_bitrate_override() -> None:
    assert bandwidth_kbps("G711") == pytest.approx(87.2, rel=1e-12)  # 20 ms, Ethernet
    # Opus at 24 kbit/s, 20 ms: 60 B payload + 58 B
    assert bandwidth_kbps("OPUS", 20, bitrate_kbps=24.0) == pytest.approx(118 * 8 / 20)


@pytest.mark.parametrize(("codec", "ptime", "match"), [
    ("G729A", 15, r"^ptime_ms: must be a positive multiple of G729A's 10 ms frame, got 15$"),
    ("G711", 0, r"^ptime_ms: must be a positive multiple of G711U's 0\.125 ms frame, got 0$"),
    ("G711", -20, r"^ptime_ms: must be a positive multiple"),
])
def test_bandwidth_rejects_a_ptime_off_the_frame(codec: str, ptime: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bandwidth_kbps(codec, ptime)


def test_bandwidth_rejects_an_unknown_layer() -> None:
    with pytest.raises(ValueError, match=r"^layer: must be one of \['payload', 'rtp', 'ip', "
                                         r"'ethernet', 'wire'\], got 'udp'$"):
        bandwidth_kbps("G711", 20, "udp")  # type: ignore[arg-type]


def test_link_calls_by_hand() -> None:
    assert link_calls(1000.0, "G711") == 11  # 1000 / 87.2 = 11.47
    assert link_calls(872.0, "G711", 20) == 10  # exactly ten streams fit
    assert link_calls(800.0, "G711", 20, "ip") == 10  # 80 kbit/s a stream at the IP layer
    assert link_calls(800.0, "G711", 20, "ethernet") == 9
    assert link_calls(50.0, "G711") == 0


def test_relay_capacity_by_hand() -> None:
    assert relay_capacity(4, 0.5) == 800  # 400 % of a core / 0.5 % per call
    assert relay_capacity(4, 0.5, transcode=True) == 800  # no transcoding cost given
    assert relay_capacity(4, 0.5, resample=True) == 800
    assert relay_capacity(4, 0.5, transcode_cost_pct=4.5) == 800  # not transcoding
    assert relay_capacity(4, 0.5, resample_cost_pct=0.5) == 800  # not resampling
    assert relay_capacity(4, 0.5, transcode_cost_pct=4.5, transcode=True) == 80
    assert relay_capacity(4, 0.5, resample_cost_pct=0.5, resample=True) == 400
    assert relay_capacity(2, 1.0, transcode_cost_pct=1.0, resample_cost_pct=2.0,
                          transcode=True, resample=True) == 50
    assert relay_capacity(3, 0.7, max_utilization=0.7) == 300  # exactly 300 despite floats
    assert relay_capacity(1, 30.0) == 3
    assert relay_capacity(1, 0.5, max_utilization=1.0) == 200


@pytest.mark.parametrize("kwargs", [
    {"cores": 0, "call_cost_pct": 1.0},
    {"cores": -1, "call_cost_pct": 1.0},
    {"cores": 1, "call_cost_pct": 0.0},
    {"cores": 1, "call_cost_pct": -1.0},
    {"cores": 1, "call_cost_pct": 1.0, "max_utilization": 0.0},
    {"cores": 1, "call_cost_pct": 1.0, "max_utilization": 1.5},
    {"cores": 1, "call_cost_pct": 1.0, "max_utilization": -0.5},
])
def test_relay_capacity_rejects_bad_input(kwargs: dict) -> None:
    with pytest.raises(ValueError) as err:
        relay_capacity(**kwargs)
    assert str(err.value) == "relay: cores and call cost must be > 0, max_utilization in (0, 1]"


def test_rfc3550_jitter_recursion_by_hand() -> None:
    # transits 0, 16, 16, 48 ms: |D| = 16, 0, 32; J += (|D| - J)/16 from J = 0
    got = rfc3550_jitter(np.array([0.0, 0.016, 0.016, 0.048]))
    j1 = 0.016 / 16
    j2 = j1 + (0.0 - j1) / 16
    j3 = j2 + (0.032 - j2) / 16
    assert got.tolist() == pytest.approx([j1, j2, j3], rel=1e-12)
    assert j3 == pytest.approx(0.00287890625, rel=1e-12)
    assert rfc3550_jitter(np.array([0.05, 0.03])).tolist() == pytest.approx([0.02 / 16])


def test_round_is_pythons_round() -> None:
    x = np.array([0.125, 2.675, 1.005, 0.5, 1.5, 2.5, -0.125, 12.3449999, 7.0])
    assert _round(x, 2).tolist() == [round(v, 2) for v in x.tolist()]
    assert _round(x, 0).tolist() == [round(v, 0) for v in x.tolist()]
    assert _round(np.array([0.05, 0.15, 0.25, 0.35]), 1).tolist() == [0.1, 0.1, 0.2, 0.3]


@pytest.mark.parametrize(("codec", "lookahead"), [("G711", 0.0), ("G729A", 5.0)])
@pytest.mark.parametrize("method", ["fast", "packets"])
def test_jitter_free_path_delay_and_loss(codec: str, lookahead: float, method: str) -> None:
    path = MediaPath(Media(codec=codec, ptime_ms=20, jitter_buffer_ms=30.0),
                     Network(delay_ms=25.0))
    q = path.quality(10.0, np.random.default_rng(0), method=method)
    assert q["packets"] == 500.0  # 10 s / 20 ms
    assert q["network_ms"] == pytest.approx(25.0)
    assert q["playout_ms"] == pytest.approx(25.0 + 30.0)
    assert q["delay_ms"] == pytest.approx(25.0 + 30.0 + 20.0 + lookahead)
    assert q["loss"] == 0.0 and q["loss_late"] == 0.0 and q["loss_network"] == 0.0
    assert q["burst_r"] == pytest.approx(1.0)


def test_jitter_of_a_call_with_two_received_packets() -> None:
    # two packets, both received: one transit difference D, J = |D|/16
    path = MediaPath(Media(ptime_ms=20), Network(delay_ms=30.0, jitter_ms=5.0))
    q = path.quality(0.04, np.random.default_rng(9), method="packets")
    d = np.maximum(0.03 + 0.005 * np.random.default_rng(9).standard_normal(2), 0.0)
    assert q["packets"] == 2.0
    assert q["jitter_ms"] == pytest.approx(abs(d[1] - d[0]) / 16 * 1e3, rel=1e-12)


def test_qualities_needs_one_draw_per_call() -> None:
    path = MediaPath(Media(jitter_buffer="adaptive"), Network(delay_ms=30.0, jitter_ms=5.0))
    with pytest.raises(ValueError):
        path.qualities(np.array([10.0, 20.0]), np.array([0.0]))


def test_packet_count_rounds_up_and_is_at_least_one() -> None:
    path = MediaPath(Media(ptime_ms=20), Network())
    assert path.packets(10.0) == 500
    assert path.packets(10.01) == 501
    assert path.packets(0.0) == 1
    assert path.packets(0.02) == 1


def test_fixed_buffer_late_probability_is_the_normal_tail() -> None:
    # first packet at exactly the mean delay (z = 0): late iff d > d_first + B, i.e.
    # P(Z > B/sd) = 0.5·erfc(B/(sd·√2)); 40 ms buffer, 20 ms jitter -> P(Z > 2)
    path = MediaPath(Media(jitter_buffer_ms=40.0), Network(delay_ms=50.0, jitter_ms=20.0))
    out = path.qualities(np.array([60.0]), np.array([0.0]))
    p_late = 0.5 * math.erfc(2.0 / math.sqrt(2.0))
    assert out["loss"].tolist() == pytest.approx([p_late], rel=1e-12)
    assert out["delay_ms"].tolist() == pytest.approx([50.0 + 40.0 + 20.0])


# ------------------------------------------------------------- adaptive jitter buffer
A = RAMJEE_ALPHA


def phi(u: float) -> float:
    return math.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)


def cdf(u: float) -> float:
    return 0.5 * math.erfc(-u / math.sqrt(2))


def ramjee_playout(d_rx: list[float], rx: list[int], n: int, per: int, buffer_s: float
                   ) -> list[float]:
    """Per-packet playout delay, by the loop of algorithm 1."""
    est: list[float] = []
    d_hat, v_hat = d_rx[0], 0.25 * buffer_s
    for x in d_rx:
        d_hat = A * d_hat + (1 - A) * x
        v_hat = A * v_hat + (1 - A) * abs(d_hat - x)
        est.append(d_hat + 4 * v_hat)
    out = []
    for i in range(n):
        start = (i // per) * per
        before = [j for j, k in enumerate(rx) if k < start]
        out.append(est[before[-1]] if start > 0 and before else d_rx[0] + buffer_s)
    return out


@pytest.mark.parametrize(("loss", "seed"), [(0.0, 5), (0.2, 11)])
def test_packet_level_adaptive_buffer_is_algorithm_1(loss: float, seed: int) -> None:
    path = MediaPath(Media(jitter_buffer="adaptive", jitter_buffer_ms=10.0, ptime_ms=20),
                     Network(delay_ms=50.0, jitter_ms=15.0, loss=loss))
    n, per = 250, round(ADAPT_INTERVAL_S / 0.02)  # 5 s of 20 ms packets, 50 per interval
    q = path.quality(5.0, np.random.default_rng(seed), method="packets")
    # the same draws, in the order the model takes them: delays, then loss flags
    rng = np.random.default_rng(seed)
    delay = np.maximum(0.05 + 0.015 * rng.standard_normal(n), 0.0).tolist()
    lost = (rng.random(n) < loss).tolist()
    rx = [i for i in range(n) if not lost[i]]
    d_rx = [delay[i] for i in rx]
    playout = ramjee_playout(d_rx, rx, n, per, 0.01)
    late = [i != rx[0] and delay[i] > playout[i] for i in rx]
    assert q["packets"] == n
    assert q["loss_network"] == pytest.approx(sum(lost) / n, abs=1e-12)
    assert q["loss_late"] == pytest.approx(sum(late) / n, abs=1e-12)
    assert q["loss"] == pytest.approx((sum(lost) + sum(late)) / n, abs=1e-12)
    assert q["playout_ms"] == pytest.approx(sum(playout) / n * 1e3, rel=1e-9)
    assert q["network_ms"] == pytest.approx(d_rx[0] * 1e3, rel=1e-12)
    assert q["delay_ms"] == pytest.approx(q["playout_ms"] + 20.0, rel=1e-12)
    j, js = 0.0, []
    for a, b in itertools.pairwise(d_rx):
        j += (abs(b - a) - j) / 16
        js.append(j)
    assert q["jitter_ms"] == pytest.approx(sum(js) / len(js) * 1e3, rel=1e-9)
    assert sum(late) > 0  # the case exercises late discards


@pytest.mark.parametrize("rx", [
    list(range(120, 250)),         # the first two intervals lost whole: no estimate yet
    [3, *range(160, 250)],         # one packet early, then three intervals with only it
], ids=["late-start", "lone-first"])
def test_adaptive_buffer_resets_with_no_packet_since_the_start(rx: list[int]) -> None:
    """An interval re-sets its playout point from the last packet received before it;
    with none received yet it keeps the first packet's delay plus the buffer."""
    path = MediaPath(Media(jitter_buffer="adaptive", jitter_buffer_ms=10.0, ptime_ms=20),
                     Network(delay_ms=50.0, jitter_ms=15.0))
    n, per = 250, round(ADAPT_INTERVAL_S / 0.02)
    d_rx = np.maximum(0.05 + 0.015 * np.random.default_rng(3).standard_normal(len(rx)), 0.0)
    got = path._adaptive_playout(n, np.asarray(rx, dtype=np.intp), d_rx)
    want = ramjee_playout(d_rx.tolist(), rx, n, per, 0.01)
    assert got.tolist() == pytest.approx(want, rel=1e-12)
    assert len(set(want[:per])) == 1 and want[0] == pytest.approx(d_rx[0] + 0.01)


def test_every_packet_lost() -> None:
    path = MediaPath(Media(jitter_buffer_ms=40.0), Network(delay_ms=30.0, loss=1.0))
    q = path.quality(1.0, np.random.default_rng(0), method="packets")
    assert q["packets"] == 50.0
    assert (q["loss_network"], q["loss_late"], q["loss"], q["burst_r"]) == (1.0, 0.0, 1.0, 1.0)
    assert math.isnan(q["network_ms"]) and math.isnan(q["jitter_ms"])
    assert q["playout_ms"] == pytest.approx(30.0 + 40.0)
    assert q["delay_ms"] == pytest.approx(30.0 + 40.0 + 20.0)


def test_a_single_received_packet_has_no_jitter_estimate() -> None:
    path = MediaPath(Media(ptime_ms=20), Network(delay_ms=30.0, jitter_ms=5.0))
    q = path.quality(0.02, np.random.default_rng(0), method="packets")
    assert q["packets"] == 1.0 and q["jitter_ms"] == 0.0 and q["loss"] == 0.0


def expected_adaptive(n: int, first: float, d: float, sd: float, buffer_s: float,
                      ptime_s: float, p_net: float) -> tuple[float, float]:
    """(P(late | received), mean playout delay) of the fast path's stated model."""
    per = max(1, round(ADAPT_INTERVAL_S / ptime_s))
    starts = list(range(0, min(n, 64 * per), per))
    weights = [min(per, n - s) / n for s in starts]
    weights[-1] = (n - starts[-1]) / n  # the last explicit interval stands for the rest
    mean = d * cdf(d / sd) + sd * phi(d / sd)  # E max(d + sd·Z, 0)
    rate = 1 - p_net
    big_a = A ** (per * rate)
    v, late, playout = 0.25 * buffer_s, 0.0, 0.0
    for k, s in enumerate(starts):
        if k:
            mid = mean + (first - mean) * A ** ((starts[k - 1] + per / 2) * rate)
            u = (mid - d) / sd
            g = sd * (2 * phi(u) + u * (2 * cdf(u) - 1))  # E|d̂ − n| at the interval's middle
            v = big_a * v + (1 - big_a) * g
        level = mean + (first - mean) * A ** (s * rate) + 4 * v
        late += weights[k] * (1.0 if level < 0 else cdf((d - level) / sd))
        playout += weights[k] * level
    return late, playout


@pytest.mark.parametrize(("talk_s", "ptime_ms", "z", "loss"), [
    (3.0, 20, 0.0, 0.0),
    (3.0, 20, 1.5, 0.0),
    (7.3, 20, -2.0, 0.0),
    (100.0, 20, 0.7, 0.0),  # longer than the 64 explicit intervals
    (20.0, 30, -0.4, 0.1),
    (40.0, 1000, 0.3, 0.0),  # one packet an interval
    (40.0, 2000, 0.3, 0.0),  # a packet longer than the interval
])
def test_fast_adaptive_expected_playout(talk_s: float, ptime_ms: int, z: float,
                                        loss: float) -> None:
    path = MediaPath(Media(jitter_buffer="adaptive", jitter_buffer_ms=60.0, ptime_ms=ptime_ms),
                     Network(delay_ms=40.0, jitter_ms=12.0, loss=loss))
    n = path.packets(talk_s)
    first = max(0.04 + 0.012 * z, 0.0)
    late, playout = expected_adaptive(n, first, 0.04, 0.012, 0.06, ptime_ms / 1000.0, loss)
    out = path.qualities(np.array([talk_s]), np.array([z]))
    assert out["loss"][0] == pytest.approx(1 - (1 - loss) * (1 - late), rel=1e-9, abs=1e-12)
    assert out["delay_ms"][0] == pytest.approx(playout * 1e3 + ptime_ms, rel=1e-9)
    rng_q = path.quality(talk_s, np.random.default_rng(0))
    first_q = max(0.04 + 0.012 * float(np.random.default_rng(0).standard_normal()), 0.0)
    late_q, playout_q = expected_adaptive(n, first_q, 0.04, 0.012, 0.06, ptime_ms / 1000.0,
                                          loss)
    assert rng_q["playout_ms"] == pytest.approx(playout_q * 1e3, rel=1e-9)
    assert rng_q["loss_late"] == pytest.approx(
        1 - (1 - loss) * (1 - late_q) - loss, rel=1e-9, abs=1e-12)
    assert rng_q["network_ms"] == pytest.approx(first_q * 1e3, rel=1e-12)


def test_fast_adaptive_with_no_buffer_and_a_first_packet_at_zero_delay() -> None:
    # z = -10 clips the first delay to 0 and B = 0 puts the first playout level at 0:
    # packets later than 0 (all of them) are late in that interval, P = Phi(d/sd)
    path = MediaPath(Media(jitter_buffer="adaptive", jitter_buffer_ms=0.0),
                     Network(delay_ms=40.0, jitter_ms=12.0))
    n = path.packets(3.0)
    late, playout = expected_adaptive(n, 0.0, 0.04, 0.012, 0.0, 0.02, 0.0)
    out = path.qualities(np.array([3.0]), np.array([-10.0]))
    assert out["loss"][0] == pytest.approx(late, rel=1e-9)
    assert out["delay_ms"][0] == pytest.approx(playout * 1e3 + 20.0, rel=1e-9)


@pytest.mark.parametrize("buffer", ["fixed", "adaptive"])
def test_zero_jitter_plays_every_packet_a_buffer_after_the_delay(buffer: str) -> None:
    path = MediaPath(Media(jitter_buffer=buffer, jitter_buffer_ms=30.0), Network(delay_ms=25.0))
    q = path.quality(10.0, np.random.default_rng(0))
    assert q["playout_ms"] == pytest.approx(55.0) and q["loss"] == 0.0
    assert q["jitter_ms"] == 0.0


def test_fast_path_reports_the_normal_models_mean_jitter_and_network_loss() -> None:
    # RFC 3550 J of independent normal delays tends to E|D| = 2·sd/sqrt(pi)
    path = MediaPath(Media(), Network(delay_ms=50.0, jitter_ms=10.0, loss=0.03))
    q = path.quality(60.0, np.random.default_rng(2))
    assert q["jitter_ms"] == pytest.approx(2 * 10.0 / math.sqrt(math.pi), rel=1e-12)
    assert q["loss_network"] == pytest.approx(0.03, rel=1e-12)
    first = 0.05 + 0.01 * float(np.random.default_rng(2).standard_normal())
    p_late = 0.5 * math.erfc((first + 0.04 - 0.05) / (0.01 * math.sqrt(2)))  # 40 ms buffer
    assert q["network_ms"] == pytest.approx(first * 1e3, rel=1e-12)
    assert q["loss"] == pytest.approx(1 - 0.97 * (1 - p_late), rel=1e-12)
    assert q["loss_late"] == pytest.approx(q["loss"] - 0.03, rel=1e-12)


def test_anti_bursty_loss_is_rated_with_its_burst_ratio_below_one() -> None:
    # a Gilbert-Elliott chain that mostly alternates: BurstR = mean burst · (1 − p) < 1
    net = Network(delay_ms=20.0, loss=0.0, burst={"p_gb": 0.9, "p_bg": 0.9,
                                                  "loss_good": 0.0, "loss_bad": 1.0})
    path = MediaPath(Media(plc=True), net)
    q = path.quality(30.0, np.random.default_rng(0))
    # stationary loss 1/2, losses start after every non-loss with prob 0.9: burst 1/0.9
    assert q["loss"] == pytest.approx(0.5, rel=1e-12)
    assert q["burst_r"] == pytest.approx(0.5 / 0.9, rel=1e-12)
    want = emodel("G711", True, round(q["delay_ms"], 1), 0.5, round(0.5 / 0.9, 3))
    assert q["MOS"] == pytest.approx(want["MOS"], rel=1e-12)


@pytest.mark.parametrize(("codec", "lookahead"), [("G711", 0.0), ("G729A", 5.0)])
def test_qualities_of_many_calls_by_hand(codec: str, lookahead: float) -> None:
    # fixed 40 ms buffer after the first packet's delay max(d + sd·z, 0): late with
    # P(Z > (first + B − d)/sd); random network loss p on top: 1 − (1 − p)(1 − late);
    # the E-model is read at delay and loss rounded to 0.1 ms and 1e-5 (BurstR = 1)
    path = MediaPath(Media(codec=codec, plc=True, jitter_buffer_ms=40.0),
                     Network(delay_ms=50.0, jitter_ms=10.0, loss=0.01))
    z = np.array([0.0, 1.3, -0.7, 1.3, 2.5, -6.0, 0.0, 0.31, -1.9])
    talk = np.linspace(10.0, 90.0, z.size)
    out = path.qualities(talk, z)
    for i, zi in enumerate(z.tolist()):
        first = max(0.05 + 0.01 * zi, 0.0)
        late = 0.5 * math.erfc((first + 0.04 - 0.05) / (0.01 * math.sqrt(2)))
        loss = 1 - 0.99 * (1 - late)
        delay = (first + 0.04) * 1e3 + 20.0 + lookahead
        assert out["loss"][i] == pytest.approx(loss, rel=1e-12)
        assert out["delay_ms"][i] == pytest.approx(delay, rel=1e-12)
        want = emodel(codec, True, round(delay, 1), round(loss, 5), 1.0)["MOS"]
        assert out["MOS"][i] == pytest.approx(want, rel=1e-12)
    assert out["MOS"][1] == out["MOS"][3] and out["MOS"][0] == out["MOS"][6]


@pytest.mark.parametrize("buffer", ["fixed", "adaptive"])
def test_qualities_equal_quality_call_by_call(buffer: str) -> None:
    path = MediaPath(Media(jitter_buffer=buffer, jitter_buffer_ms=30.0),
                     Network(delay_ms=35.0, jitter_ms=8.0, loss=0.02))
    talk = np.array([5.0, 40.0, 120.0, 5.0])
    seeds = [3, 4, 5, 6]
    z = np.array([float(np.random.default_rng(s).standard_normal()) for s in seeds])
    out = path.qualities(talk, z)
    for i, s in enumerate(seeds):
        q = path.quality(float(talk[i]), np.random.default_rng(s))
        assert out["MOS"][i] == pytest.approx(q["MOS"], rel=1e-12)
        assert out["loss"][i] == pytest.approx(q["loss"], rel=1e-12)
        assert out["delay_ms"][i] == pytest.approx(q["delay_ms"], rel=1e-12)


def test_qualities_of_a_wideband_codec_and_of_no_call() -> None:
    path = MediaPath(Media(codec="G722"), Network(delay_ms=20.0))
    out = path.qualities(np.array([10.0, 20.0]), np.array([0.0, 1.0]))
    assert np.isnan(out["MOS"]).all() and out["MOS"].shape == (2,)
    lookahead = CODECS["G722"].lookahead_ms  # its QMF filter delay, from the codec table
    assert out["delay_ms"].tolist() == pytest.approx([80.0 + lookahead] * 2)
    empty = MediaPath(Media(), Network(delay_ms=20.0)).qualities(np.empty(0), np.empty(0))
    assert empty["MOS"].size == 0 and empty["loss"].size == 0
