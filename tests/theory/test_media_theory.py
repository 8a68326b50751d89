"""Media layer against theory: Gilbert–Elliott, burst ratio, jitter buffers, fast path.

Seeded, so each check is deterministic; tolerances are several standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from lab.loss import LossModel, burst_ratio, gilbert_elliott
from lab.spec import Media, Network
from twin.media import MediaPath


def _runs(lost: np.ndarray) -> np.ndarray:
    """Lengths of the loss runs."""
    edges = np.diff(np.concatenate([[0], lost.astype(np.int8), [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def test_gilbert_loss_and_mean_burst() -> None:
    p_gb, p_bg = 0.01, 0.25
    lost = gilbert_elliott(2_000_000, p_gb, p_bg, 0.0, 1.0, np.random.default_rng(1))
    runs = _runs(lost)
    assert lost.mean() == pytest.approx(p_gb / (p_gb + p_bg), rel=0.03)  # 0.0385
    assert runs.mean() == pytest.approx(1 / p_bg, rel=0.03)  # 4 packets
    assert burst_ratio(lost) == pytest.approx(1 / (p_gb + p_bg), rel=0.03)


def test_gilbert_elliott_with_loss_in_both_states() -> None:
    model = LossModel(p_gb=0.02, p_bg=0.2, loss_good=0.01, loss_bad=0.5)
    lost = gilbert_elliott(2_000_000, model.p_gb, model.p_bg, model.loss_good,
                           model.loss_bad, np.random.default_rng(2))
    loss, burst_r = model.stats()
    assert loss == pytest.approx(0.02 / 0.22 * 0.5 + 0.2 / 0.22 * 0.01)
    assert lost.mean() == pytest.approx(loss, rel=0.03)
    assert burst_ratio(lost) == pytest.approx(burst_r, rel=0.03)
    assert burst_r > 1.2


def test_burst_ratio_is_one_for_random_loss() -> None:
    for p in (0.01, 0.05, 0.2):
        lost = np.random.default_rng(3).random(1_000_000) < p
        assert burst_ratio(lost) == pytest.approx(1.0, abs=0.02)
        assert LossModel(0.0, 1.0, p, p).stats() == pytest.approx((p, 1.0))


def test_fixed_buffer_late_loss_given_the_first_packet() -> None:
    d, sd, b = 100.0, 10.0, 15.0
    path = MediaPath(Media(jitter_buffer_ms=b), Network(delay_ms=d, jitter_ms=sd))
    q = path.quality(2000.0, np.random.default_rng(4), "packets")  # 100,000 packets
    expected = norm.sf((q["network_ms"] + b - d) / sd)  # P(jitter > anchor + buffer)
    assert q["loss_late"] == pytest.approx(expected, abs=0.005)
    assert q["loss"] == q["loss_late"]


@pytest.mark.parametrize("method", ["fast", "packets"])
def test_fixed_buffer_late_loss_over_calls(method: str) -> None:
    # anchored at a random first packet: late when X_i − X_1 > B, X_i − X_1 ~ N(0, 2σ²)
    d, sd, b = 100.0, 10.0, 15.0
    path = MediaPath(Media(jitter_buffer_ms=b), Network(delay_ms=d, jitter_ms=sd))
    rng = np.random.default_rng(5)
    calls = 20_000 if method == "fast" else 3_000
    late = [path.quality(5.0, rng, method)["loss_late"] for _ in range(calls)]  # type: ignore[arg-type]
    assert np.mean(late) == pytest.approx(norm.sf(b / (sd * math.sqrt(2))), abs=0.01)


def test_adaptive_buffer_settles_at_d_plus_4v() -> None:
    d, sd = 100.0, 10.0
    path = MediaPath(Media(jitter_buffer_ms=40, jitter_buffer="adaptive"),
                     Network(delay_ms=d, jitter_ms=sd))
    q = path.quality(1200.0, np.random.default_rng(6), "packets")
    steady = d + 4 * sd * math.sqrt(2 / math.pi)  # d̂ → d, v̂ → E|X − d| = σ√(2/π)
    assert q["playout_ms"] == pytest.approx(steady, abs=1.0)
    assert q["loss_late"] == pytest.approx(norm.sf(4 * math.sqrt(2 / math.pi)), abs=0.002)


def test_rfc3550_jitter_estimator_by_hand() -> None:
    """The estimator against a sequence worked by hand from RFC 3550 section 6.4.1 (and
    A.8), in RTP timestamp units of an 8 kHz clock, 160 per 20 ms packet.

    Transit of packet i: arrival R_i minus RTP timestamp S_i; D = transit_i - transit_(i-1);
    J_i = J_(i-1) + (|D| - J_(i-1)) / 16 from J_0 = 0. A gain of 1/8 makes J_1 = 2, D
    without abs makes J_2 = -1/16, starting from the first |D| makes J_1 = 16: each fails.

    ====  ====  =======  =====  ===================================================
    S     R     transit  D      J
    ====  ====  =======  =====  ===================================================
    0     1000  1000
    160   1176  1016     +16    0 + (16 - 0)/16                 = 1
    320   1320  1000     -16    1 + (16 - 1)/16                 = 31/16 = 1.9375
    480   1512  1032     +32    31/16 + (32 - 31/16)/16         = 977/256
    640   1640  1000     -32    977/256 + (32 - 977/256)/16     = 22847/4096
    800   1768  968      -32    22847/4096 + (32 - ...)/16      = 473777/65536
    960   1928  968      0      473777/65536 · 15/16            = 7106655/1048576
    ====  ====  =======  =====  ===================================================
    """
    from twin.media import rfc3550_jitter

    rtp_ts = np.array([0, 160, 320, 480, 640, 800, 960])
    arrival_ts = np.array([1000, 1176, 1320, 1512, 1640, 1768, 1928])
    want = [1.0, 1.9375, 3.81640625, 5.577880859375, 7.2292633056640625,
            7106655 / 1048576]
    assert want[2:] == [977 / 256, 22847 / 4096, 473777 / 65536, 6.777434349060059]
    transit_s = (arrival_ts - rtp_ts) / 8000.0  # the twin's unit: seconds
    got = rfc3550_jitter(transit_s) * 8000.0
    assert got.tolist() == pytest.approx(want, rel=1e-12)


def test_rfc3550_jitter_of_normal_delays() -> None:
    sd = 8.0
    path = MediaPath(Media(), Network(delay_ms=100.0, jitter_ms=sd))
    q = path.quality(1000.0, np.random.default_rng(7), "packets")
    assert q["jitter_ms"] == pytest.approx(2 * sd / math.sqrt(math.pi), rel=0.03)


CASES = {
    "fixed-random": (Media(jitter_buffer_ms=20), Network(delay_ms=50, jitter_ms=10, loss=0.01)),
    "adaptive-random": (Media(jitter_buffer_ms=20, jitter_buffer="adaptive"),
                        Network(delay_ms=50, jitter_ms=10, loss=0.01)),
    "fixed-gilbert": (Media(jitter_buffer_ms=40),
                      Network(delay_ms=30, jitter_ms=5, loss=0.03,
                              burst={"mean_burst_packets": 4})),  # type: ignore[arg-type]
    "adaptive-ge-g729": (Media(codec="G729A", jitter_buffer_ms=60, jitter_buffer="adaptive"),
                         Network(delay_ms=30, jitter_ms=15,
                                 burst={"p_gb": 0.01, "p_bg": 0.3,  # type: ignore[arg-type]
                                        "loss_good": 0.005, "loss_bad": 0.6})),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_path_matches_packet_level(case: str) -> None:
    """Same seed per call (so the same first-packet delay); 400 one-minute calls.

    Tolerances on the means: loss 10 % + 0.001, burst ratio 5 % + 0.02, delay 1 ms,
    MOS 0.02. Per call, with random loss, the median MOS difference is under 0.05;
    with bursty loss a one-minute call sees only ~20 bursts, so its own loss scatters
    around the mean that the fast path returns (a documented omission).
    """
    path = MediaPath(*CASES[case])
    fast = [path.quality(60.0, np.random.default_rng(i), "fast") for i in range(400)]
    slow = [path.quality(60.0, np.random.default_rng(i), "packets") for i in range(400)]

    def mean(rows: list[dict[str, float]], key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    loss = mean(slow, "loss")
    assert mean(fast, "loss") == pytest.approx(loss, abs=0.1 * loss + 0.001)
    burst = mean(slow, "burst_r")
    assert mean(fast, "burst_r") == pytest.approx(burst, abs=0.05 * burst + 0.02)
    assert mean(fast, "delay_ms") == pytest.approx(mean(slow, "delay_ms"), abs=1.0)
    assert mean(fast, "MOS") == pytest.approx(mean(slow, "MOS"), abs=0.02)
    per_call = np.abs([f["MOS"] - s["MOS"] for f, s in zip(fast, slow, strict=True)])
    if path.network.burst is None:
        assert np.median(per_call) < 0.05
