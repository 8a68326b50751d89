"""The spec's distributions, load profiles and named random streams."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lab.dists import Dist, DistError
from lab.plan import make_plan
from lab.profiles import Profile
from lab.spec import SpecError, validate
from lab.streams import Streams


@pytest.mark.parametrize("raw", [
    {"dist": "exponential", "mean": 3.0},
    {"dist": "lognormal", "median": 2.5, "p95": 6.0},
    {"dist": "gamma", "a": 2.0, "scale": 1.5},
    {"dist": "weibull_min", "c": 1.5, "scale": 2.0},
])
def test_samples_match_the_distribution(raw: dict) -> None:
    d = Dist.parse(raw)
    x = d.sample(np.random.default_rng(5), 20000)
    assert x.mean() == pytest.approx(d.mean, rel=0.03)
    assert x.var() == pytest.approx(d.var, rel=0.08)
    assert stats.kstest(x, d.frozen().cdf).pvalue > 0.001


def test_lognormal_quoted_by_median_and_p95() -> None:
    d = Dist.parse({"dist": "lognormal", "median": 350, "p95": 900})
    assert d.frozen().median() == pytest.approx(350)
    assert d.frozen().ppf(0.95) == pytest.approx(900)


def test_constant_and_round_trip() -> None:
    assert Dist.parse(180).sample(np.random.default_rng(0), 3).tolist() == [180.0] * 3
    for raw in (180.0, {"dist": "exponential", "mean": 3.0}, {"dist": "gamma", "a": 2.0}):
        assert Dist.parse(Dist.parse(raw).to_yaml()) == Dist.parse(raw)


def test_sampler_is_batched_but_same_stream() -> None:
    d = Dist.parse({"dist": "exponential", "mean": 2.0})
    draw = d.sampler(np.random.default_rng(9))
    first = [draw() for _ in range(5000)]
    assert first == d.sample(np.random.default_rng(9), 4096).tolist() + first[4096:]
    assert all(isinstance(v, float) for v in first[:10])


@pytest.mark.parametrize("raw", [-1, {"dist": "exponential"}, {"dist": "exponential", "mean": 0},
                                 {"dist": "nosuch", "x": 1}, {"dist": "gamma", "a": -1},
                                 {"dist": "exponential", "mean": 1, "rate": 2}, "fast"])
def test_bad_distributions(raw: object) -> None:
    with pytest.raises(DistError):
        Dist.parse(raw)


def test_streams_are_named_and_independent() -> None:
    a = Streams(1, 0).rng("network.up").random(5)
    assert np.array_equal(a, Streams(1, 0).rng("network.up").random(5))
    assert not np.array_equal(a, Streams(1, 1).rng("network.up").random(5))
    assert not np.array_equal(a, Streams(1, 0).rng("network.down").random(5))
    assert not np.array_equal(a, Streams(2, 0).rng("network.up").random(5))


def test_common_random_numbers_across_deployments() -> None:
    """Changing the deployment never changes the calls the callers place."""
    base = {"duration_s": 500, "load": {"arrivals": {"kind": "poisson", "rate_cps": 1}}}
    p1 = make_plan(validate(base))
    p2 = make_plan(validate({**base, "deployment": {"trunk": {"channels": 3}}}))
    assert p1 == p2


def profile(arrivals: dict, duration_s: float = 3600.0) -> Profile:
    return Profile(validate({"duration_s": duration_s, "load": {"arrivals": arrivals}}
                            ).load.arrivals, duration_s)


@pytest.mark.parametrize(("arrivals", "expected"), [
    ({"kind": "poisson", "rate_cps": 2.0}, 7200),
    ({"kind": "constant", "rate_cps": 2.0}, 7200),
    ({"kind": "ramp", "start_cps": 0.0, "end_cps": 4.0}, 7200),
    ({"kind": "steps", "steps": [{"at_s": 0, "rate_cps": 1}, {"at_s": 1800, "rate_cps": 3}]},
     7200),
    ({"kind": "burst", "base_cps": 1.0, "burst_cps": 11.0, "start_s": 600, "duration_s": 360},
     7200),
    ({"kind": "diurnal", "peak_cps": 4.0, "period_s": 3600}, 4.0 * 3600 * 9.95 / 24),
])
def test_profiles_offer_their_integrated_rate(arrivals: dict, expected: float) -> None:
    p = profile(arrivals)
    n = p.arrival_times(np.random.default_rng(3)).size
    assert p.mean_rate() * 3600 == pytest.approx(expected, rel=0.01)
    assert n == pytest.approx(expected, rel=0.05)  # Poisson: sd = sqrt(7200) ≈ 1.2 %


def test_nonhomogeneous_arrivals_follow_the_rate() -> None:
    p = profile({"kind": "ramp", "start_cps": 0.0, "end_cps": 10.0})
    t = p.arrival_times(np.random.default_rng(1))
    first, second = (t < 1800).sum(), (t >= 1800).sum()
    assert second / first == pytest.approx(3.0, rel=0.05)  # ∫ of a linear ramp: 1 : 3
    assert np.all(np.diff(t) >= 0)


def test_tick_is_a_pure_function_of_elapsed_time() -> None:
    steps = [{"at_s": 0, "rate_cps": 1}, {"at_s": 10, "rate_cps": 5}]
    p = profile({"kind": "steps", "steps": steps}, duration_s=20)
    assert [p.tick(t) for t in (0, 9.99, 10, 19.9, 20)] == [1, 1, 5, 5, None]


def test_dotted_errors_from_nested_models() -> None:
    with pytest.raises(SpecError, match=r"^load\.arrivals\.steps\.0\.rate_cps: must be a number"):
        validate({"load": {"arrivals": {"kind": "steps", "steps": [{"at_s": 0, "rate_cps": -2}]}}})
    with pytest.raises(SpecError, match=r"^load\.arrivals\.kind: unknown kind 'tsunami'"):
        validate({"load": {"arrivals": {"kind": "tsunami"}}})
    with pytest.raises(SpecError, match=r"^seed: must be an integer"):
        validate({"seed": 1.5})
