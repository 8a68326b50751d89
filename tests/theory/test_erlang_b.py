"""The trunk alone is an M/G/c/c loss system: its blocking is Erlang B.

With no network delay and no proxy service time a call holds a channel for exactly its
hold time, so the twin's blocking must match the analytic Erlang B value -- for
exponential holds and, by the insensitivity of Erlang B, for any hold distribution with
the same mean.

The runs are sized by the precision they reach (:mod:`tests.theory.precision`):
replications of a few hundred thousand calls each, cut into batches thousands of holds
long, are added until the 99 % Student-t half-width of the blocking is at most 1 % of
Erlang B. Each case must reach that target and put Erlang B inside its interval, so a
modelling error that moves blocking by 2-3 % fails it (a hold 1.7 % too long moves B by
the number of idle channels, ``c - A(1 - B)``, times 1.7 %: 5 % at 10 channels and 8 E).
"""

from __future__ import annotations

import numpy as np
import pytest

from lab.erlang import erlang_b
from lab.plan import make_plan
from tests.conftest import experiment
from tests.theory.precision import (
    Estimate,
    LossSystem,
    batch_means,
    estimates,
    run_until_precise,
)

HOLD_S = 20.0
EXPONENTIAL = {"dist": "exponential", "mean": HOLD_S}


def blocking(system: LossSystem) -> Estimate:
    """The twin's blocking of ``system``, run until the half-width target is reached."""
    est = run_until_precise(system, {"blocking": erlang_b(system.channels, system.erlangs)},
                            max_replications=60)["blocking"]
    print(est)
    return est


@pytest.mark.slow
@pytest.mark.parametrize(("channels", "erlangs"), [
    (1, 0.5),     # one channel, light load: B = 1/3
    (5, 3.0),     # light load, 0.6 E a channel: B = 11 %
    (10, 8.0),    # B = 12 %
    (20, 20.0),   # full load on a larger group: B = 16 %
    (10, 15.0),   # overload, 1.5 E a channel: B = 41 %
])
def test_exponential_hold_matches_erlang_b(channels: int, erlangs: float) -> None:
    """Blocking within a 99 % interval whose half-width is at most 1 % of Erlang B."""
    est = blocking(LossSystem(channels, erlangs, EXPONENTIAL))
    assert est.precise, str(est)
    assert est.covers, str(est)


@pytest.mark.slow
@pytest.mark.parametrize("hold", [
    HOLD_S,                                                     # deterministic
    {"dist": "lognormal", "median": 14.0, "p95": 50.0},         # heavy-ish tail
    {"dist": "uniform", "loc": 0.0, "scale": 2 * HOLD_S},       # any scipy.stats name
], ids=["deterministic", "lognormal", "uniform"])
def test_insensitivity_to_hold_distribution(hold: dict | float) -> None:
    """Erlang B depends on the hold only through its mean: 10 E offered to 10 channels
    (whatever the mean) blocks B(10, 10) = 21.5 %, to 1 % of B at 99 %."""
    est = blocking(LossSystem(10, 10.0, hold))
    assert est.precise, str(est)
    assert est.covers, str(est)


def test_littles_law_on_active_calls() -> None:
    """L = λW with L and W from independent sources: L is the trunk's own count of
    channels in use, sampled while the twin runs at Poisson epochs (PASTA: they see the
    time average), and λW comes from the call records' admit and release times.

    The same run checks the blocking against Erlang B at the load the records imply: a
    channel is held for the talk plus the BYE's trip, so the offered load is λ times that
    measured hold, and by Erlang B's insensitivity the blocking is B(8, λW) whatever the
    hold's shape. Its 99 % interval over 40 batch means (each 160 holds long) must hold
    that value and be at most 3 % of it wide (half-width)."""
    from twin.model import Twin

    rate, channels, warmup = 0.6, 8, 300.0
    exp = experiment(duration_s=100_000, warmup_s=warmup,
                     load={"arrivals": {"kind": "poisson", "rate_cps": rate}},
                     scenarios={"talk": {"hold_s": {"dist": "exponential", "mean": 15}}},
                     deployment={"trunk": {"channels": channels}, "network": {"delay_ms": 30},
                                 "proxy": {"service_ms": 1.0}})
    twin = Twin(exp, 0, make_plan(exp, 0))
    horizon = exp.duration_s
    gaps = np.random.default_rng(99).exponential(0.2, int(1.2 * horizon / 0.2))
    seen: list[int] = []

    def sampler():  # a timeout-only process: yields the delay to its next look
        for gap in gaps:
            now = yield float(gap)
            if now >= horizon:
                return
            seen.append(twin.trunk.active)

    twin.env.start(sampler())
    twin.run(None)
    calls = twin.log.frame()
    held = calls.dropna(subset=["admit_s"])
    # λW over [0, horizon): the channel-seconds the records say were held in it
    inside = np.clip(held.release_s, 0, horizon) - np.clip(held.admit_s, 0, horizon)
    assert len(seen) > 300_000 and max(seen) <= channels
    assert np.mean(seen) == pytest.approx(float(inside.sum()) / horizon, rel=0.005)
    w = float((held.release_s - held.admit_s).mean())
    # W is the hold plus the signaling time the channel is held for (BYE's trip)
    assert w == pytest.approx(float(held.duration_s.mean()) + 0.030 + 0.001, rel=0.02)
    blocked = calls.outcome.eq("blocked").to_numpy(float)
    est = estimates({"blocking": erlang_b(channels, rate * w)},
                    {"blocking": [batch_means(calls.start_s.to_numpy(), blocked, warmup,
                                              horizon, batches=40)]}, 1,
                    {"blocking": 0.03})["blocking"]
    print(est)
    assert est.precise, str(est)
    assert est.covers, str(est)
