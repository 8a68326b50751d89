"""ITU-T G.107 E-model: defaults, hand-computed terms and monotonicity."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.codecs import CODECS
from lab.emodel import TABLE3_DEFAULTS, emodel, impairments, mos_from_r, r_factor

R_DEFAULT = 93.20620772327571  # G.107 Table 3 defaults (ITU reference value 93.2)


def _idd(ta_ms: float) -> float:
    """G.107 eqs 7-27/7-28 written out by hand, mT = 100 ms, sT = 1."""
    if ta_ms <= 100.0:
        return 0.0
    x = math.log2(ta_ms / 100.0)
    return 25.0 * ((1 + x**6) ** (1 / 6) - 3 * (1 + (x / 3) ** 6) ** (1 / 6) + 2)


# --- defaults ---------------------------------------------------------------------


def test_defaults_give_r_93_2() -> None:
    r = r_factor()
    assert r == pytest.approx(93.2, abs=0.05)
    assert r == pytest.approx(R_DEFAULT, abs=1e-9)  # golden value, pins the formulas


def test_default_terms() -> None:
    t = impairments()
    assert t["No"] == pytest.approx(-61.18, abs=0.01)
    assert t["Ro"] == pytest.approx(94.77, abs=0.01)
    assert t["Is"] == pytest.approx(1.41, abs=0.01)
    assert t["Idte"] == 0.0  # T < 1 ms: echo counts as sidetone
    assert t["Idd"] == 0.0
    assert t["Idle"] == pytest.approx(0.15, abs=0.01)  # finite WEPL even at Tr = 0
    assert t["Ie_eff"] == 0.0
    assert t["R"] == pytest.approx(t["Ro"] - t["Is"] - t["Id"] - t["Ie_eff"] + t["A"])


def test_table3_defaults_are_the_recommendation() -> None:
    assert TABLE3_DEFAULTS["SLR"] == 8 and TABLE3_DEFAULTS["RLR"] == 2
    assert TABLE3_DEFAULTS["STMR"] == 15 and TABLE3_DEFAULTS["LSTR"] == 18
    assert TABLE3_DEFAULTS["TELR"] == 65 and TABLE3_DEFAULTS["WEPL"] == 110
    assert TABLE3_DEFAULTS["Nc"] == -70 and TABLE3_DEFAULTS["Nfor"] == -64
    with pytest.raises(TypeError):
        TABLE3_DEFAULTS["SLR"] = 9  # type: ignore[index]


def test_emodel_dict() -> None:
    out = emodel("G711", plc=False, delay_ms=0.0, loss=0.0, burst_r=1.0)
    assert set(out) == {"R", "MOS"}
    assert out["R"] == pytest.approx(93.2, abs=0.05)
    assert out["MOS"] == pytest.approx(4.41, abs=0.005)


# --- MOS --------------------------------------------------------------------------


def test_mos_from_r_points() -> None:
    assert mos_from_r(93.2) == pytest.approx(4.41, abs=0.005)
    assert mos_from_r(-5.0) == 1.0
    assert mos_from_r(0.0) == 1.0
    assert mos_from_r(100.0) == pytest.approx(4.5)
    assert mos_from_r(120.0) == 4.5
    assert mos_from_r(60.0) == pytest.approx(1 + 0.035 * 60)
    assert mos_from_r(3.0) == 1.0  # the cubic's dip below 1 is held at the floor
    # G.109 category edges: R = 80 -> MOS 4.02, R = 70 -> 3.60, R = 50 -> 2.58.
    assert mos_from_r(80.0) == pytest.approx(4.024, abs=1e-3)
    assert mos_from_r(70.0) == pytest.approx(3.598, abs=1e-3)
    assert mos_from_r(50.0) == pytest.approx(2.575, abs=1e-3)


@given(r1=st.floats(-50, 150), r2=st.floats(-50, 150))
def test_mos_from_r_is_monotone_and_bounded(r1: float, r2: float) -> None:
    lo, hi = sorted((r1, r2))
    assert 1.0 <= mos_from_r(lo) <= mos_from_r(hi) <= 4.5


# --- codecs and loss --------------------------------------------------------------


def test_g729a_costs_its_ie() -> None:
    assert r_factor("G729A") == pytest.approx(R_DEFAULT - 11.0, abs=1e-9)
    assert r_factor("G729A") == pytest.approx(82.2, abs=0.05)
    assert r_factor("G729") == r_factor("G729A")


def test_g711_aliases() -> None:
    assert r_factor("PCMU", loss=0.02) == r_factor("G711", loss=0.02)
    assert r_factor("pcma", loss=0.02) == r_factor("G.711", loss=0.02)


def test_g711_plc_one_percent_random_loss() -> None:
    # Ie,eff = 0 + 95 * 1 / (1/1 + 25.1) = 3.6398 at Ppl = 1 %, BurstR = 1.
    ie_eff = 95.0 * 1.0 / (1.0 + 25.1)
    assert impairments("G711", plc=True, loss=0.01)["Ie_eff"] == pytest.approx(ie_eff)
    assert r_factor("G711", plc=True, loss=0.01) == pytest.approx(R_DEFAULT - ie_eff)
    assert r_factor("G711", plc=True, loss=0.01) == pytest.approx(89.566, abs=1e-3)


def test_g711_without_plc_one_percent() -> None:
    ie_eff = 95.0 * 1.0 / (1.0 + 4.3)
    assert r_factor("G711", plc=False, loss=0.01) == pytest.approx(R_DEFAULT - ie_eff)


def test_g729a_loss_uses_its_bpl() -> None:
    ie_eff = 11.0 + (95.0 - 11.0) * 2.0 / (2.0 / 1.0 + 19.0)
    assert r_factor("G729A", loss=0.02) == pytest.approx(R_DEFAULT - ie_eff)


def test_burst_ratio_lowers_r() -> None:
    # Ppl = 2 %, BurstR = 2: Ie,eff = 95 * 2 / (2/2 + 25.1).
    bursty = r_factor("G711", plc=True, loss=0.02, burst_r=2.0)
    assert bursty == pytest.approx(R_DEFAULT - 95.0 * 2.0 / (1.0 + 25.1))
    assert bursty < r_factor("G711", plc=True, loss=0.02, burst_r=1.0)


@given(loss=st.floats(0.001, 1.0), burst=st.floats(1.01, 8.0))
def test_bursty_loss_is_worse(loss: float, burst: float) -> None:
    assert r_factor(loss=loss, plc=True, burst_r=burst) < r_factor(loss=loss, plc=True)


@given(loss=st.floats(0.0005, 1.0))
def test_plc_helps(loss: float) -> None:
    assert r_factor("G711", plc=True, loss=loss) > r_factor("G711", plc=False, loss=loss)


@given(l1=st.floats(0.0, 1.0), l2=st.floats(0.0, 1.0), plc=st.booleans())
def test_r_falls_with_loss(l1: float, l2: float, plc: bool) -> None:
    lo, hi = sorted((l1, l2))
    assert r_factor(plc=plc, loss=hi) <= r_factor(plc=plc, loss=lo)


def test_total_loss_leaves_about_zero() -> None:
    # Ppl = 100 % with BurstR = 1: Ie,eff -> 95 * 100 / (100 + Bpl), R near zero.
    assert r_factor("G711", plc=True, loss=1.0) < 20.0


# --- delay ------------------------------------------------------------------------


def test_delay_mapping_t_ta_tr() -> None:
    a = impairments(delay_ms=150.0)
    b = impairments(T=150.0, Ta=150.0, Tr=300.0)
    assert a == b


def test_id_at_150_ms() -> None:
    t = impairments(delay_ms=150.0)
    # Idd by hand: X = log2(1.5) = 0.585 -> Idd = 0.1635.
    assert t["Idd"] == pytest.approx(_idd(150.0), rel=1e-12)
    assert t["Idd"] == pytest.approx(0.1635, abs=1e-4)
    # Talker echo at T = 150 ms, TELR = 65 dB (eqs 7-19 to 7-22), by hand.
    no, rlr, telr = t["No"], 2.0, 65.0
    terv = telr - 40 * math.log10((1 + 15) / (1 + 1)) + 6 * math.exp(-0.3 * 150**2)
    roe, re = -1.5 * (no - rlr), 80 + 2.5 * (terv - 14)
    idte = ((roe - re) / 2 + math.sqrt((roe - re) ** 2 / 4 + 100) - 1) * (1 - math.exp(-150))
    assert t["Idte"] == pytest.approx(idte, rel=1e-12)
    # Listener echo at Tr = 300 ms, WEPL = 110 dB (eqs 7-25/7-26).
    rle = 10.5 * (110 + 7) * (300 + 1) ** -0.25
    idle = (t["Ro"] - rle) / 2 + math.sqrt((t["Ro"] - rle) ** 2 / 4 + 169)
    assert t["Idle"] == pytest.approx(idle, rel=1e-12)
    assert t["Id"] == pytest.approx(3.816, abs=1e-3)
    assert r_factor(delay_ms=150.0) == pytest.approx(89.54, abs=0.01)


def test_idd_is_zero_up_to_100_ms_then_grows() -> None:
    assert impairments(delay_ms=100.0)["Idd"] == 0.0
    assert impairments(delay_ms=400.0)["Idd"] == pytest.approx(_idd(400.0), rel=1e-12)
    assert r_factor(delay_ms=400.0) < 70.0  # G.114: beyond 400 ms is unacceptable


@given(d1=st.floats(5.0, 3000.0), d2=st.floats(5.0, 3000.0))
def test_r_falls_with_delay(d1: float, d2: float) -> None:
    lo, hi = sorted((d1, d2))
    assert r_factor(delay_ms=hi) <= r_factor(delay_ms=lo)


@given(d1=st.floats(0.0, 3000.0), d2=st.floats(0.0, 3000.0))
def test_r_never_rises_much_with_delay(d1: float, d2: float) -> None:
    # Below 5 ms the Recommendation's Idte wiggles by at most ~0.11 (see module docs).
    lo, hi = sorted((d1, d2))
    assert r_factor(delay_ms=hi) <= r_factor(delay_ms=lo) + 0.12


# --- overrides and validation -----------------------------------------------------


def test_overrides() -> None:
    assert r_factor(A=5.0) == pytest.approx(R_DEFAULT + 5.0)
    assert r_factor(Ie=5.0) == pytest.approx(R_DEFAULT - 5.0)
    assert r_factor(delay_ms=50.0, TELR=45.0) < r_factor(delay_ms=50.0)
    assert r_factor(STMR=25.0) < r_factor()  # STMR > 20: Idtes branch
    assert r_factor(STMR=5.0, delay_ms=20.0) != r_factor(delay_ms=20.0)  # TERVs branch


@pytest.mark.parametrize("codec", ["G722", "G.722", "opus", "AMR-WB"])
def test_wideband_codecs_are_rejected(codec: str) -> None:
    with pytest.raises(ValueError, match=r"wideband.*G\.107\.1"):
        r_factor(codec)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"codec": "iLBC"}, "unknown codec"),
        ({"delay_ms": -1.0}, "delay_ms"),
        ({"delay_ms": math.nan}, "delay_ms"),
        ({"loss": 1.5}, "loss"),
        ({"loss": -0.01}, "loss"),
        ({"burst_r": 0.0}, "burst_r"),
        ({"Ppl": 2.0}, "Ppl"),
        ({"BurstR": 2.0}, "BurstR"),
        ({"Foo": 1.0}, "Foo"),
        ({"qdu": 0.0}, "qdu"),
    ],
)
def test_bad_input_is_rejected(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        r_factor(**kwargs)  # type: ignore[arg-type]


def test_codec_table_rows() -> None:
    assert CODECS["G711"].ie == 0 and CODECS["G711"].bpl == 25.1
    assert CODECS["G711"].bpl_no_plc == 4.3
    assert CODECS["G729A"].ie == 11 and CODECS["G729A"].bpl == 19.0
