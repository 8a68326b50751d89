"""The E-model against ITU-T G.107 (06/2015) clause 7 transcribed independently here,
term by term, over parameter sets that take every branch of the Recommendation
(talker echo below/above T = 1 ms, TERVs for STMR < 9, Idtes for STMR > 20, Idd above
mT, quantisation distortion, noise, loss and burstiness), plus its anchor values:
R = 93.2 and MOS 4.41 with every Table 3 default (clause 7.7 note), the Annex B MOS
mapping, and the exact wording of the errors for bad input.
"""

from __future__ import annotations

import math

import pytest

from lab.emodel import emodel, impairments, mos_from_r, r_factor

DEFAULTS = dict(SLR=8.0, RLR=2.0, STMR=15.0, LSTR=18.0, Ds=3.0, Dr=3.0, TELR=65.0,
                WEPL=110.0, T=0.0, Tr=0.0, Ta=0.0, qdu=1.0, Ie=0.0, Bpl=1.0, Ppl=0.0,
                BurstR=1.0, Nc=-70.0, Nfor=-64.0, Ps=35.0, Pr=35.0, A=0.0, mT=100.0, sT=1.0)


def lg(x: float) -> float:
    return math.log(x, 10)


def g107(**kw: float) -> dict[str, float]:
    """G.107 equations 7-1 ... 7-29, written from the Recommendation's text."""
    p = {**DEFAULTS, **kw}
    SLR, RLR, Ds, Ps, Pr = p["SLR"], p["RLR"], p["Ds"], p["Ps"], p["Pr"]
    OLR = SLR + RLR  # 7-7
    Nos = Ps - SLR - Ds - 100 + 0.004 * (Ps - OLR - Ds - 14) ** 2  # 7-4
    Pre = Pr + 10 * lg(1 + 10 ** ((10 - p["LSTR"]) / 10))  # 7-6
    Nor = RLR - 121 + Pre + 0.008 * (Pre - 35) ** 2  # 7-5
    Nfo = p["Nfor"] + RLR  # 7-8
    No = 10 * lg(10 ** (p["Nc"] / 10) + 10 ** (Nos / 10) + 10 ** (Nor / 10)
                 + 10 ** (Nfo / 10))  # 7-3
    Ro = 15 - 1.5 * (SLR + No)  # 7-2
    Xolr = OLR + 0.2 * (64 + No - RLR)  # 7-10
    Iolr = 20 * ((1 + (Xolr / 8) ** 8) ** 0.125 - Xolr / 8)  # 7-9
    T = p["T"]
    STMRo = -10 * lg(10 ** (-p["STMR"] / 10) + math.exp(-T / 4) * 10 ** (-p["TELR"] / 10))
    Ist = (12 * (1 + ((STMRo - 13) / 6) ** 8) ** (1 / 8)
           - 28 * (1 + ((STMRo + 1) / 19.4) ** 35) ** (1 / 35)
           - 13 * (1 + ((STMRo - 3) / 33) ** 13) ** (1 / 13) + 29)  # 7-11
    Q = 37 - 15 * lg(p["qdu"])  # 7-17
    G = 1.07 + 0.258 * Q + 0.0602 * Q**2  # 7-16
    Y = (Ro - 100) / 15 + 46 / 8.4 - G / 9  # 7-14
    Z = 46 / 30 - G / 40  # 7-15
    Iq = 15 * lg(1 + 10**Y + 10**Z)  # 7-13
    Is = Iolr + Ist + Iq  # 7-8
    Idte = 0.0
    if T >= 1:
        TERV = p["TELR"] - 40 * lg((1 + T / 10) / (1 + T / 150)) + 6 * math.exp(-0.3 * T**2)
        if p["STMR"] < 9:
            TERV += Ist / 2  # TERVs, 7-23
        Roe = -1.5 * (No - RLR)
        Re = 80 + 2.5 * (TERV - 14)
        Idte = ((Roe - Re) / 2 + math.sqrt((Roe - Re) ** 2 / 4 + 100) - 1) * (1 - math.exp(-T))
    if p["STMR"] > 20:
        Idte = math.sqrt(Idte**2 + Ist**2)  # Idtes, 7-24
    Rle = 10.5 * (p["WEPL"] + 7) * (p["Tr"] + 1) ** (-1 / 4)  # 7-26
    Idle = (Ro - Rle) / 2 + math.sqrt((Ro - Rle) ** 2 / 4 + 169)  # 7-25
    Idd = 0.0
    if p["Ta"] > p["mT"]:
        X = math.log2(p["Ta"] / p["mT"])
        k = 6 * p["sT"]
        Idd = 25 * ((1 + X**k) ** (1 / k) - 3 * (1 + (X / 3) ** k) ** (1 / k) + 2)  # 7-27
    Ie, Ppl = p["Ie"], p["Ppl"]
    Ie_eff = Ie + (95 - Ie) * Ppl / (Ppl / p["BurstR"] + p["Bpl"])  # 7-29
    R = Ro - Is - (Idte + Idle + Idd) - Ie_eff + p["A"]  # 7-1
    return dict(Ro=Ro, No=No, Is=Is, Ist=Ist, Idte=Idte, Idle=Idle, Idd=Idd,
                Id=Idte + Idle + Idd, Ie_eff=Ie_eff, R=R)


def test_defaults_are_the_recommendations_anchor() -> None:
    assert round(r_factor(), 1) == 93.2
    out = emodel()
    assert round(out["R"], 1) == 93.2 and round(out["MOS"], 2) == 4.41
    assert impairments() == pytest.approx({**g107(), "A": 0.0}, rel=1e-12, abs=1e-12)


# overrides of the Table 3 parameters; each row takes at least one branch or term
CASES = [
    {},
    {"SLR": 3.0, "RLR": 8.0},
    {"Ps": 55.0, "Pr": 60.0},
    {"Ds": -2.0},
    {"LSTR": 5.0, "STMR": 12.0},
    {"Nc": -50.0, "Nfor": -40.0},
    {"qdu": 4.0},
    {"qdu": 14.0},
    {"T": 0.5, "Ta": 0.5, "Tr": 1.0},
    {"T": 1.0, "Ta": 1.0, "Tr": 2.0},
    {"T": 3.0, "Ta": 3.0, "Tr": 6.0},
    {"T": 60.0, "Ta": 60.0, "Tr": 120.0, "TELR": 40.0},
    {"T": 150.0, "Ta": 150.0, "Tr": 300.0},
    {"T": 300.0, "Ta": 300.0, "Tr": 600.0, "WEPL": 60.0},
    {"T": 20.0, "Ta": 20.0, "Tr": 40.0, "STMR": 5.0},
    {"T": 2.0, "Ta": 2.0, "Tr": 4.0, "STMR": 8.5, "TELR": 30.0},
    {"T": 20.0, "Ta": 20.0, "Tr": 40.0, "STMR": 9.5},  # just above the TERVs threshold
    {"T": 20.0, "Ta": 20.0, "Tr": 40.0, "STMR": 8.99},
    {"T": 20.0, "Ta": 20.0, "Tr": 40.0, "STMR": 9.0},  # TERVs only below 9 dB
    {"STMR": 20.0},  # Idtes only above 20 dB
    {"STMR": 20.5},
    {"STMR": 25.0},
    {"T": 40.0, "Ta": 40.0, "Tr": 80.0, "STMR": 22.0},
    {"Ta": 250.0, "mT": 150.0, "sT": 0.55},
    {"Ta": 500.0, "sT": 2.0},
    {"Ta": 160.0, "mT": 200.0},
    {"A": 10.0},
    {"Ie": 11.0, "Bpl": 19.0},
]


@pytest.mark.parametrize("over", CASES, ids=lambda d: ",".join(f"{k}={v:g}" for k, v in d.items())
                         or "defaults")
def test_every_term_matches_g107(over: dict[str, float]) -> None:
    got = impairments(**over)
    want = g107(**{"Ie": 0.0, "Bpl": 4.3, **over})  # G.711 without PLC unless overridden
    for term, value in want.items():
        assert got[term] == pytest.approx(value, rel=1e-11, abs=1e-11), term
    assert got["A"] == over.get("A", 0.0)


@pytest.mark.parametrize(("codec", "plc", "ie", "bpl"), [
    ("G711", False, 0.0, 4.3), ("G711", True, 0.0, 25.1), ("PCMA", True, 0.0, 25.1),
    ("G729A", False, 11.0, 19.0), ("G729", True, 11.0, 19.0),
])
@pytest.mark.parametrize(("loss", "burst"), [(0.0, 1.0), (0.01, 1.0), (0.05, 2.0), (0.2, 0.5)])
def test_loss_and_codec_follow_eq_7_29(codec: str, plc: bool, ie: float, bpl: float,
                                       loss: float, burst: float) -> None:
    # G.113 Appendix I values: G.711 Ie = 0, Bpl 4.3 (no PLC) / 25.1 (PLC); G.729A Ie = 11,
    # Bpl = 19; Ppl in percent
    got = impairments(codec, plc=plc, delay_ms=80.0, loss=loss, burst_r=burst)
    want = g107(Ie=ie, Bpl=bpl, Ppl=100 * loss, BurstR=burst, T=80.0, Ta=80.0, Tr=160.0)
    assert got["Ie_eff"] == pytest.approx(want["Ie_eff"], rel=1e-12, abs=1e-12)
    assert got["R"] == pytest.approx(want["R"], rel=1e-12)
    # Ie,eff by hand for one row: G.711 + PLC at 1 % random loss: 95·1/(1 + 25.1)
    if (codec, plc, loss, burst) == ("G711", True, 0.01, 1.0):
        assert got["Ie_eff"] == pytest.approx(95 / 26.1, rel=1e-12)


def test_delay_maps_to_t_ta_and_round_trip_tr() -> None:
    got = impairments(delay_ms=123.0)
    want = g107(Ie=0.0, Bpl=4.3, T=123.0, Ta=123.0, Tr=246.0)
    assert got["R"] == pytest.approx(want["R"], rel=1e-12)
    assert got["Idd"] == pytest.approx(want["Idd"], rel=1e-12) and got["Idd"] > 0.0


def test_idd_by_hand_at_200_and_400_ms() -> None:
    # X = 1: 25·(2^(1/6) − 3·(1 + 3^-6)^(1/6) + 2); X = 2: 25·(65^(1/6) − 3·(1 + (2/3)^6)^(1/6) + 2)
    assert impairments(delay_ms=200.0)["Idd"] == pytest.approx(3.0445, abs=1e-4)
    assert impairments(delay_ms=400.0)["Idd"] == pytest.approx(24.07, abs=1e-2)
    assert impairments(delay_ms=100.0)["Idd"] == 0.0  # Ta = mT: no delay impairment


@pytest.mark.parametrize(("r", "mos"), [
    (-5.0, 1.0), (0.0, 1.0), (3.0, 1.0), (6.5, 1.0), (50.0, 1 + 1.75 - 50 * 10 * 50 * 7e-6),
    (60.0, 3.1), (80.0, 1 + 2.8 + 80 * 20 * 20 * 7e-6), (93.2, 4.40929), (100.0, 4.5),
    (100.5, 4.5), (130.0, 4.5),
])
def test_mos_annex_b(r: float, mos: float) -> None:
    assert mos_from_r(r) == pytest.approx(mos, abs=5e-5)


def test_mos_of_r_just_inside_the_scale() -> None:
    # 1 + 0.035·R + R(R − 60)(100 − R)·7e-6 at R = 10: 1.35 − 0.315 = 1.035
    assert mos_from_r(10.0) == pytest.approx(1.035, abs=1e-12)
    assert mos_from_r(99.9) == pytest.approx(1 + 3.4965 + 99.9 * 39.9 * 0.1 * 7e-6, abs=1e-12)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"delay_ms": -1.0}, "delay_ms: must be >= 0, got -1.0"),
    ({"delay_ms": math.inf}, "delay_ms: must be a finite number, got inf"),
    ({"delay_ms": True}, "delay_ms: must be a finite number, got True"),
    ({"delay_ms": "5"}, "delay_ms: must be a finite number, got '5'"),
    ({"loss": 1.5}, "loss: must be a fraction in [0, 1], got 1.5"),
    ({"loss": -0.1}, "loss: must be a fraction in [0, 1], got -0.1"),
    ({"burst_r": 0.0}, "burst_r: must be > 0 (1 = random loss), got 0.0"),
    ({"Ppl": 1.0}, "Ppl: set it with loss= / burst_r=, not as an override"),
    ({"BurstR": 1.0}, "BurstR: set it with loss= / burst_r=, not as an override"),
    ({"qdu": 0.0}, "qdu: out of range, got 0.0"),
    ({"mT": 0.0}, "mT: out of range, got 0.0"),
    ({"sT": 0.0}, "sT: out of range, got 0.0"),
    ({"Bpl": 0.0}, "Bpl: out of range, got 0.0"),
    ({"T": -1.0}, "T: out of range, got -1.0"),
    ({"Tr": -1.0}, "Tr: out of range, got -1.0"),
    ({"Ta": -0.5}, "Ta: out of range, got -0.5"),
    ({"qdu": -1.0}, "qdu: out of range, got -1.0"),
    ({"TELR": math.nan}, "TELR: must be a finite number, got nan"),
    ({"loss": "0.1"}, "loss: must be a finite number, got '0.1'"),
    ({"burst_r": None}, "burst_r: must be a finite number, got None"),
    ({"codec": 711}, "codec: must be a codec name such as 'G711', got 711"),
])
def test_bad_input_messages(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as err:
        r_factor(**kwargs)  # type: ignore[arg-type]
    assert str(err.value) == message


def test_unknown_parameter_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as err:
        r_factor(Foo=1.0)
    text = str(err.value)
    assert text.startswith("Foo: not a G.107 parameter, expected one of ['A', 'Bpl', 'Dr'")
    assert "'Ppl'" not in text and "'BurstR'" not in text and "'WEPL', 'mT', 'qdu', 'sT']" in text


def test_wideband_message_and_mos_input() -> None:
    with pytest.raises(ValueError) as err:
        r_factor("G722")
    assert str(err.value).startswith("codec: 'G722' is a wideband codec; ITU-T G.107 rates "
                                     "narrowband (300-3400 Hz) calls only and wideband needs "
                                     "G.107.1 — use one of ['G711', 'G729A']")
    with pytest.raises(ValueError) as err:
        mos_from_r(math.nan)
    assert str(err.value) == "r: must be a finite number, got nan"


def test_zero_is_a_valid_delay_and_loss_and_bounds_are_inclusive() -> None:
    assert r_factor(delay_ms=0.0, loss=0.0) == pytest.approx(g107(Bpl=4.3)["R"], rel=1e-12)
    assert r_factor(loss=1.0) == pytest.approx(g107(Bpl=4.3, Ppl=100.0)["R"], rel=1e-12)
    assert r_factor(burst_r=1e-3, loss=0.01) == pytest.approx(
        g107(Bpl=4.3, Ppl=1.0, BurstR=1e-3)["R"], rel=1e-12)
    assert r_factor(T=0.0, Ta=0.0, Tr=0.0) == pytest.approx(g107(Bpl=4.3)["R"], rel=1e-12)


def test_emodel_defaults_and_arguments() -> None:
    # emodel() and r_factor() take the same defaults: G.711, no PLC, 0 ms, no loss,
    # random loss (BurstR = 1)
    assert emodel()["R"] == pytest.approx(g107(Bpl=4.3)["R"], rel=1e-12)
    assert emodel(loss=0.02)["R"] == pytest.approx(g107(Bpl=4.3, Ppl=2.0)["R"], rel=1e-12)
    assert emodel(loss=0.02, plc=True)["R"] == pytest.approx(
        g107(Bpl=25.1, Ppl=2.0)["R"], rel=1e-12)
    got = emodel("G729A", False, 150.0, 0.03, 2.5)
    want = g107(Ie=11.0, Bpl=19.0, Ppl=3.0, BurstR=2.5, T=150.0, Ta=150.0, Tr=300.0)["R"]
    assert got["R"] == pytest.approx(want, rel=1e-12)
    assert got["MOS"] == pytest.approx(mos_from_r(want), rel=1e-12)
    assert set(emodel()) == {"R", "MOS"}
    assert r_factor(loss=0.02) == pytest.approx(g107(Bpl=4.3, Ppl=2.0)["R"], rel=1e-12)
    assert impairments(loss=0.02)["R"] == pytest.approx(g107(Bpl=4.3, Ppl=2.0)["R"],
                                                        rel=1e-12)
