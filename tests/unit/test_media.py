"""Media layer: bandwidth, relay and link arithmetic, spec keys, E-model agreement."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from lab.codecs import CODECS
from lab.emodel import emodel
from lab.loss import LossModel, burst_ratio
from lab.spec import Media, Network, SpecError, validate
from twin.media import MediaPath, bandwidth_kbps, link_calls, relay_capacity

# --- bandwidth ---------------------------------------------------------------------


def test_textbook_bandwidths_on_ethernet() -> None:
    assert bandwidth_kbps("G711", 20) == pytest.approx(87.2)  # (160 + 40 + 18) B × 50/s
    assert bandwidth_kbps("G729A", 20) == pytest.approx(31.2)  # (20 + 40 + 18) B × 50/s
    assert bandwidth_kbps("PCMA", 20) == pytest.approx(87.2)
    assert bandwidth_kbps("G722", 20) == pytest.approx(87.2)  # 64 kbit/s like G.711


@pytest.mark.parametrize(("layer", "kbps"), [("payload", 64.0), ("rtp", 68.8), ("ip", 80.0),
                                             ("ethernet", 87.2), ("wire", 95.2)])
def test_g711_per_layer(layer: str, kbps: float) -> None:
    assert bandwidth_kbps("G711", 20, layer) == pytest.approx(kbps)  # type: ignore[arg-type]


def test_ptime_ipv6_and_bitrate() -> None:
    assert bandwidth_kbps("G711", 30) == pytest.approx((240 + 58) * 8 / 30)
    assert bandwidth_kbps("G729A", 10) == pytest.approx(54.4)  # headers dominate
    assert bandwidth_kbps("G711", 20, ipv6=True) == pytest.approx(95.2)
    assert bandwidth_kbps("OPUS", 20, bitrate_kbps=32) == pytest.approx(32 + 23.2)
    with pytest.raises(ValueError, match="ptime_ms"):
        bandwidth_kbps("G729A", 15)
    with pytest.raises(ValueError, match="codec"):
        bandwidth_kbps("GSM", 20)


def test_link_calls() -> None:
    assert link_calls(1000, "G711") == 11  # 1000 / 87.2 = 11.47
    assert link_calls(100_000, "G729A") == 3205
    assert link_calls(872, "G711") == 10  # exact fit is not lost to rounding


# --- relay -------------------------------------------------------------------------


def test_relay_capacity_arithmetic() -> None:
    assert relay_capacity(4, 0.5) == 800
    assert relay_capacity(4, 0.5, transcode_cost_pct=4.5) == 800  # not transcoding
    assert relay_capacity(4, 0.5, transcode_cost_pct=4.5, transcode=True) == 80
    assert relay_capacity(4, 0.5, transcode_cost_pct=4.5, resample_cost_pct=1.0,
                          transcode=True, resample=True) == 66  # 400 / 6
    assert relay_capacity(4, 0.5, max_utilization=0.8) == 640
    assert relay_capacity(1, 0.3) == 333
    with pytest.raises(ValueError):
        relay_capacity(0, 0.5)


def _path(**media: object) -> MediaPath:
    exp = validate({"deployment": {"media": media}})
    return MediaPath(exp.deployment.media, exp.deployment.network)


def test_relay_from_spec_knows_when_it_transcodes_and_resamples() -> None:
    relay = {"cores": 8, "call_cost_pct": 0.5, "transcode_cost_pct": 5, "resample_cost_pct": 2}
    same = _path(relay=relay)
    assert not same.transcode and not same.resample and same.relay_calls == 1600
    alaw = _path(relay=relay, agent_codec="G711A")
    assert alaw.transcode and not alaw.resample and alaw.relay_calls == 145  # 800 / 5.5
    wide = _path(relay=relay, agent_codec="G722")
    assert wide.transcode and wide.resample and wide.relay_calls == 106  # 800 / 7.5


def test_caps_default_to_none_and_take_the_tighter() -> None:
    assert _path().max_calls is None
    assert _path(link_kbps=1000).max_calls == 11
    p = _path(link_kbps=100_000, relay={"cores": 1, "call_cost_pct": 1.0})
    assert (p.link_calls, p.relay_calls, p.max_calls) == (1146, 100, 100)


# --- spec --------------------------------------------------------------------------


def test_spec_defaults_keep_todays_behaviour() -> None:
    exp = validate({})
    net, media = exp.deployment.network, exp.deployment.media
    assert net.burst is None
    assert (media.jitter_buffer, media.agent_codec, media.link_kbps, media.relay) == (
        "fixed", None, None, None)


@pytest.mark.parametrize(("section", "match"), [
    ({"network": {"burst": {"p_gb": 0.1}}}, "deployment.network.burst.p_gb"),
    ({"network": {"burst": {"mean_burst_packets": 2, "p_gb": 0.1, "p_bg": 0.5}}},
     "deployment.network.burst.mean_burst_packets"),
    ({"network": {"loss": 0.8, "burst": {"mean_burst_packets": 2}}}, "deployment.network.loss"),
    ({"network": {"burst": {"mean_burst_packets": 0.5}}}, "mean_burst_packets"),
    ({"media": {"relay": {"cores": 2}}}, "deployment.media.relay.call_cost_pct"),
    ({"media": {"jitter_buffer": "magic"}}, "deployment.media.jitter_buffer"),
])
def test_spec_errors_name_the_key(section: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        validate({"deployment": section})


def test_mean_burst_form_is_a_gilbert_chain_with_the_mean_loss() -> None:
    net = Network(loss=0.05, burst={"mean_burst_packets": 4})  # type: ignore[arg-type]
    lm = LossModel.from_network(net)
    assert (lm.p_bg, lm.loss_good, lm.loss_bad) == (0.25, 0.0, 1.0)
    loss, burst_r = lm.stats()
    assert loss == pytest.approx(0.05)
    assert burst_r == pytest.approx(4 * 0.95)  # mean burst × (1 − p)
    assert burst_r == pytest.approx(1 / (lm.p_gb + lm.p_bg))  # the Gilbert formula


# --- burst ratio on fixed patterns -------------------------------------------------


def test_burst_ratio_of_fixed_patterns() -> None:
    pattern = np.array([0, 1, 1, 0, 0, 0, 1, 1, 0, 0], dtype=bool)
    assert burst_ratio(pattern) == pytest.approx(2 * 0.6)  # bursts of 2 at 40 % loss
    assert burst_ratio(np.array([1, 0, 1, 0, 1, 0], dtype=bool)) == pytest.approx(0.5)
    assert burst_ratio(np.zeros(5, dtype=bool)) == 1.0
    assert burst_ratio(np.ones(5, dtype=bool)) == 1.0


# --- quality -----------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["G711", "G711A", "G729A"])
@pytest.mark.parametrize("method", ["fast", "packets"])
def test_zero_jitter_matches_the_emodel(codec: str, method: str) -> None:
    media = Media(codec=codec, plc=True, ptime_ms=20, jitter_buffer_ms=40)  # type: ignore[arg-type]
    path = MediaPath(media, Network(delay_ms=35.0))
    q = path.quality(120.0, np.random.default_rng(3), method)  # type: ignore[arg-type]
    lookahead = CODECS[codec].lookahead_ms
    delay = 35.0 + 40.0 + 20.0 + lookahead
    ref = emodel(CODECS[codec].emodel_name or "", True, delay, 0.0, 1.0)
    assert q["delay_ms"] == pytest.approx(delay)
    assert (q["loss"], q["burst_r"]) == (0.0, 1.0)
    assert q["R"] == pytest.approx(ref["R"], abs=1e-9)
    assert q["MOS"] == pytest.approx(ref["MOS"], abs=1e-9)
    assert q["packets"] == 6000


def test_random_loss_at_zero_jitter_matches_the_emodel() -> None:
    path = MediaPath(Media(), Network(delay_ms=20.0, loss=0.02))
    q = path.quality(180.0, np.random.default_rng(1))
    ref = emodel("G711", True, 80.0, 0.02, 1.0)
    assert q["MOS"] == pytest.approx(ref["MOS"], abs=1e-9)


def test_wideband_codecs_are_not_rated_narrowband() -> None:
    path = MediaPath(Media(codec="OPUS"), Network(delay_ms=20.0))
    q = path.quality(60.0, np.random.default_rng(1))
    assert math.isnan(q["R"]) and math.isnan(q["MOS"])
    assert q["delay_ms"] == pytest.approx(20 + 40 + 20 + 6.5)


@pytest.mark.parametrize("method", ["fast", "packets"])
def test_same_seed_same_numbers(method: str) -> None:
    path = MediaPath(Media(jitter_buffer="adaptive"),
                     Network(delay_ms=30, jitter_ms=8, loss=0.02,
                             burst={"mean_burst_packets": 3}))  # type: ignore[arg-type]
    a = path.quality(90.0, np.random.default_rng(7), method)  # type: ignore[arg-type]
    b = path.quality(90.0, np.random.default_rng(7), method)  # type: ignore[arg-type]
    c = path.quality(90.0, np.random.default_rng(8), method)  # type: ignore[arg-type]
    assert a == b
    assert a != c


def test_fast_path_uses_one_draw_per_call() -> None:
    rng = np.random.default_rng(5)
    MediaPath(Media(), Network(delay_ms=30, jitter_ms=8)).quality(60.0, rng)
    ref = np.random.default_rng(5)
    ref.standard_normal()
    assert rng.random() == ref.random()


@pytest.mark.parametrize("method", ["fast", "packets"])
def test_mos_falls_with_loss_and_delay(method: str) -> None:
    def mos(delay_ms: float, loss: float) -> float:
        path = MediaPath(Media(), Network(delay_ms=delay_ms, jitter_ms=2.0, loss=loss))
        return path.quality(120.0, np.random.default_rng(11), method)["MOS"]  # type: ignore[arg-type]

    by_loss = [mos(40.0, p) for p in (0.0, 0.01, 0.03, 0.1, 0.2)]
    by_delay = [mos(d, 0.01) for d in (10.0, 80.0, 150.0, 300.0, 500.0)]
    assert all(a > b for a, b in itertools.pairwise(by_loss))
    assert all(a > b for a, b in itertools.pairwise(by_delay))


def test_bursty_loss_rates_worse_than_random() -> None:
    rng = np.random.default_rng(2)
    random_loss = MediaPath(Media(), Network(delay_ms=20, loss=0.03)).quality(120, rng)
    bursty = MediaPath(Media(), Network(delay_ms=20, loss=0.03,
                                        burst={"mean_burst_packets": 5})  # type: ignore[arg-type]
                       ).quality(120, rng)
    assert bursty["burst_r"] > 4.0
    assert bursty["R"] < random_loss["R"] - 0.9  # Ie,eff: 95·3/(3/4.85 + 25.1) vs 95·3/28.1


def test_unknown_method_is_an_error() -> None:
    with pytest.raises(ValueError, match="method"):
        MediaPath(Media(), Network()).quality(10.0, np.random.default_rng(), "slow")  # type: ignore[arg-type]
