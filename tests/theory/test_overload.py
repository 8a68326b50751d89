"""SIP overload: congestion collapse without control, goodput held with it (twin).

Shen, Schulzrinne & Nahum (2008) and RFC 6357: over UDP a proxy past its capacity
collapses, because a 503 costs about as much as serving a call and late answers draw
retransmissions; RFC 7339 (loss-based) and RFC 7415 (rate-based) control keep the
useful throughput near capacity (RFC 5390). The proxy here has 4 workers at 4 ms a
message -- 1,000 messages/s, and a call crosses it 6 times (INVITE, 180, 200, ACK, BYE,
its 200): about 167 calls/s at most.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lab.cli import main
from lab.plan import make_plan
from lab.spec import SpecError, validate
from tests.conftest import experiment
from twin.backend import run_replication
from twin.model import Twin
from twin.monitors import BusyTime
from twin.overload import REJECTED_BY
from twin.proxy import WorkerPool

DURATION_S, WARMUP_S = 60.0, 20.0
PEAK_GRID_CPS = (120.0, 140.0, 155.0, 165.0, 175.0, 190.0)


def overload_exp(rate_cps: float, seed: int = 3, **proxy: Any) -> Any:
    return experiment(
        seed=seed, duration_s=DURATION_S, warmup_s=WARMUP_S,
        load={"arrivals": {"kind": "poisson", "rate_cps": rate_cps}},
        scenarios={"talk": {"hold_s": 1}},
        deployment={"network": {"delay_ms": 5}, "trunk": {"channels": 100000},
                    "proxy": {"workers": 4, "service_ms": 4.0, **proxy}})


def counted(calls: pd.DataFrame) -> pd.DataFrame:
    return calls[(calls.start_s >= WARMUP_S) & (calls.start_s < DURATION_S)]


def goodput(rate_cps: float, **proxy: Any) -> float:
    """Calls answered per second between the warm-up and the end of the arrivals
    (counted when answered: an overloaded queue would otherwise drain after the end)."""
    exp = overload_exp(rate_cps, **proxy)
    calls = run_replication(exp, 0, make_plan(exp, 0)).calls
    ok = calls[calls.outcome == "answered"]
    at = ok.start_s + ok.setup_ms / 1000.0
    return float(((at >= WARMUP_S) & (at < DURATION_S)).sum()) / (DURATION_S - WARMUP_S)


@pytest.fixture(scope="module")
def peak() -> tuple[float, float]:
    """(load, goodput) at the top of the uncontrolled goodput curve."""
    curve = {load: goodput(load) for load in PEAK_GRID_CPS}
    load = max(curve, key=lambda k: curve[k])
    assert load < PEAK_GRID_CPS[-1], f"no peak inside the grid: {curve}"
    return load, curve[load]


def test_peak_is_near_the_proxy_capacity(peak: tuple[float, float]) -> None:
    assert 140.0 <= peak[1] <= 1000.0 / 6.0 + 2.0


def test_without_control_goodput_collapses_at_three_times_the_peak_load(
        peak: tuple[float, float]) -> None:
    load, best = peak
    assert goodput(3.0 * load) <= 0.5 * best


def test_loss_based_control_holds_goodput_at_twice_the_peak_load(
        peak: tuple[float, float]) -> None:
    load, best = peak
    assert goodput(2.0 * load, overload_control={"kind": "loss"}) >= 0.9 * best


def test_refused_calls_are_counted_never_sent() -> None:
    exp = overload_exp(330.0, overload_control={"kind": "loss"})
    calls = run_replication(exp, 0, make_plan(exp, 0)).calls
    held = calls[calls.rejected_by == REJECTED_BY]
    assert len(held) > 0.3 * len(calls)
    assert (held.outcome == "rejected").all() and (held.final_code == 503).all()
    assert (held.invite_tx == 0).all() and (held.end_s == held.start_s).all()
    assert len(calls) == len(make_plan(exp, 0))  # every planned call has its row


@pytest.mark.parametrize(("limit_cps", "tau_s"), [(100.0, 1.0), (40.0, 0.0)])
def test_rate_based_control_caps_the_invite_rate(limit_cps: float, tau_s: float) -> None:
    exp = overload_exp(300.0, overload_control={"kind": "rate", "limit_cps": limit_cps,
                                                "tau_s": tau_s})
    calls = run_replication(exp, 0, make_plan(exp, 0)).calls
    sent = np.sort(calls.start_s[calls.rejected_by != REJECTED_BY].to_numpy())
    # RFC 7415's leaky bucket: in any window of W seconds at most (W + tau) * X + 1
    for window_s in (1.0, 10.0):
        most = np.searchsorted(sent, sent + window_s, side="left") - np.arange(sent.size)
        assert most.max() <= (window_s + tau_s) * limit_cps + 1
    steady = counted(calls)
    rate = float((steady.rejected_by != REJECTED_BY).sum()) / (DURATION_S - WARMUP_S)
    # with no tolerance a Poisson stream loses the wait for the next call after each gap
    expected = limit_cps if tau_s > 0 else 1.0 / (1.0 / limit_cps + 1.0 / 300.0)
    assert rate == pytest.approx(expected, rel=0.03)
    answered = (steady.outcome == "answered").sum() / (DURATION_S - WARMUP_S)
    assert answered == pytest.approx(rate, rel=0.01)  # below capacity: all answered


def test_same_seed_same_results_bit_for_bit() -> None:
    exp = overload_exp(330.0, overload_control={"kind": "loss"})
    a = run_replication(exp, 0, make_plan(exp, 0)).calls
    b = run_replication(exp, 0, make_plan(exp, 0)).calls
    pd.testing.assert_frame_equal(a, b, check_exact=True)


# ---------------------------------------------------------------- what a worker spends
def busy_s(pool: WorkerPool) -> float:
    pool.flush()
    return float(pool.busy.array(100).sum())


@pytest.mark.parametrize("cost", [0.0, 0.5, 1.0, 3.0])
def test_a_503_occupies_a_worker_for_reject_cost_times_service(cost: float) -> None:
    pool = WorkerPool(1, 0.01, 10, BusyTime(), reject_cost=cost)
    assert pool.book(0.0, new_call=True) == pytest.approx(0.01)
    # queued behind the first message (a free 503, the old model, leaves at once)
    assert pool.reject(0.0) == pytest.approx(0.01 + cost * 0.01 if cost else 0.0)
    assert pool.book(0.0) == pytest.approx(0.02 + cost * 0.01)  # the next one waits for it
    assert busy_s(pool) == pytest.approx((2.0 + cost) * 0.01)
    assert pool.rejects == 1


@pytest.mark.parametrize("cost", [0.0, 0.25, 1.0, 2.0])
def test_an_absorbed_retransmission_occupies_a_worker_for_its_cost(cost: float) -> None:
    pool = WorkerPool(2, 0.01, None, BusyTime(), retransmission_cost=cost)
    pool.book(0.0)
    assert pool.absorb(0.5) == pytest.approx(0.5 + cost * 0.01)
    assert busy_s(pool) == pytest.approx((1.0 + cost) * 0.01)
    assert pool.absorbed == 1


@pytest.mark.parametrize(("reject_cost", "retransmission_cost"), [(1.0, 1.0), (2.5, 0.5)])
def test_the_workers_busy_time_is_every_message_at_its_cost(
        reject_cost: float, retransmission_cost: float) -> None:
    """In a whole overloaded run, with retransmissions and 503s: busy seconds =
    plain messages x service + 503s x reject cost + absorbed copies x their cost."""
    exp = overload_exp(400.0, reject_cost=reject_cost,
                       retransmission_cost=retransmission_cost)
    twin = Twin(exp, 0, make_plan(exp, 0))
    twin.run()
    pool, s = twin.proxy, 0.004
    assert pool.rejects > 100 and pool.absorbed > 100
    plain = pool.messages - pool.rejects - pool.absorbed
    want = s * (plain + reject_cost * pool.rejects + retransmission_cost * pool.absorbed)
    got = float(twin.proxy_busy.array(10**5).sum())  # work may outlast the last event
    assert got == pytest.approx(want, rel=1e-9)


def test_default_costs_rejects_are_dearer_than_free_503s() -> None:
    """The modelling fix: with free 503s the proxy sheds load for nothing."""
    free = goodput(330.0, reject_cost=0.0)
    dear = goodput(330.0)
    assert dear < 0.5 * free


# ---------------------------------------------------------------- the spec
@pytest.mark.parametrize(("proxy", "says"), [
    ({"reject_cost": -1}, "deployment.proxy.reject_cost: must be a number >= 0"),
    ({"retransmission_cost": "x"}, "deployment.proxy.retransmission_cost: must be a number"),
    ({"overload_control": {"kind": "fifo"}}, "deployment.proxy.overload_control.kind: unknown"),
    ({"overload_control": {"kind": "rate"}},
     "deployment.proxy.overload_control.limit_cps: required key is missing"),
    ({"overload_control": {"kind": "rate", "limit_cps": 0}},
     "deployment.proxy.overload_control.limit_cps: must be a number > 0"),
    ({"overload_control": {"kind": "loss", "max_step": 1}},
     "deployment.proxy.overload_control.max_step: must be a number > 1"),
    ({"overload_control": {"kind": "loss", "max_loss": 1.5}},
     "deployment.proxy.overload_control.max_loss: must be a number <= 1"),
    ({"overload_control": {"kind": "loss", "gain": 2}},
     "deployment.proxy.overload_control.gain: unknown key"),
])
def test_bad_overload_keys_name_the_key(proxy: dict[str, Any], says: str) -> None:
    with pytest.raises(SpecError) as err:
        validate({"deployment": {"proxy": proxy}})
    assert str(err.value).startswith(says)


def test_bad_overload_key_on_the_command_line_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "e.yaml"
    exp.write_text("name: small\nduration_s: 10\n")
    code = main(["run", str(exp), "--out", str(tmp_path / "out"), "--quiet",
                 "--set", "deployment.proxy.overload_control.kind=rate"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "deployment.proxy.overload_control.limit_cps" in err[0]
    assert not (tmp_path / "out").exists()


def test_defaults() -> None:
    proxy = validate({}).deployment.proxy
    assert (proxy.reject_cost, proxy.retransmission_cost, proxy.overload_control) == (
        1.0, 1.0, None)
    loss = validate({"deployment": {"proxy": {"overload_control": {"kind": "loss"}}}})
    ctl = loss.deployment.proxy.overload_control
    assert ctl is not None and ctl.model_dump() == {
        "kind": "loss", "target_delay_ms": 50.0, "interval_ms": 100.0, "max_step": 1.25,
        "max_loss": 0.99}
