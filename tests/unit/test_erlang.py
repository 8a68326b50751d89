"""Erlang B / C against published tables, closed forms and properties."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import optimize, stats

from lab.erlang import (
    channels_for_blocking,
    erlang_b,
    erlang_c,
    erlang_c_mean_wait,
    offered_load,
)

loads = st.floats(min_value=0.0, max_value=500.0, allow_nan=False, allow_infinity=False)
channel_counts = st.integers(min_value=0, max_value=600)


def _erlang_b_poisson(n: int, a: float) -> float:
    """Independent form: B(N, A) = P(X = N) / P(X <= N) for X ~ Poisson(A)."""
    return math.exp(stats.poisson.logpmf(n, a) - stats.poisson.logcdf(n, a))


# --- Erlang B ---------------------------------------------------------------------


def test_erlang_b_table_value() -> None:
    # Erlang B tables: N = 10, A = 5 E -> 1.838 % blocking.
    assert erlang_b(10, 5.0) == pytest.approx(0.018385, abs=5e-6)


@pytest.mark.parametrize(
    ("channels", "table_erlangs", "decimals"),
    [(1, 0.0101, 4), (2, 0.153, 3), (5, 1.36, 2), (10, 4.46, 2), (20, 12.03, 2),
     (50, 37.90, 2), (100, 84.06, 2)],
)
def test_erlang_b_one_percent_table(channels: int, table_erlangs: float, decimals: int) -> None:
    # Published Erlang B table, 1 % grade of service: the load that N channels carry at
    # exactly 1 % blocking, rounded to the table's precision.
    exact = optimize.brentq(lambda a: erlang_b(channels, a) - 0.01, 1e-6, 2.0 * channels)
    assert round(exact, decimals) == pytest.approx(table_erlangs, abs=1e-12)
    assert channels_for_blocking(exact * (1 - 1e-9), 0.01) == channels
    assert channels_for_blocking(exact * (1 + 1e-9), 0.01) == channels + 1


@pytest.mark.parametrize("a", [0.0, 0.1, 1.0, 3.0, 250.0])
def test_erlang_b_single_channel(a: float) -> None:
    assert erlang_b(1, a) == pytest.approx(a / (1.0 + a), rel=1e-15)


def test_erlang_b_edges() -> None:
    assert erlang_b(0, 7.0) == 1.0
    assert erlang_b(0, 0.0) == 1.0
    assert erlang_b(5, 0.0) == 0.0


@pytest.mark.parametrize(("n", "a"), [(3, 2.0), (30, 25.0), (200, 180.0), (1000, 1100.0)])
def test_erlang_b_matches_poisson_form(n: int, a: float) -> None:
    assert erlang_b(n, a) == pytest.approx(_erlang_b_poisson(n, a), rel=1e-9)


def test_erlang_b_large_n_is_stable_and_fast() -> None:
    start = time.perf_counter()
    b = erlang_b(10_000, 9_800.0)
    elapsed = time.perf_counter() - start
    assert 0.0 < b < 1.0
    assert b == pytest.approx(_erlang_b_poisson(10_000, 9_800.0), rel=1e-8)
    assert elapsed < 0.5  # a few ms in practice
    # Heavily overloaded: almost all of the excess is blocked, B -> 1 - N/A.
    assert erlang_b(10_000, 20_000.0) == pytest.approx(0.5, abs=1e-3)


@given(n=channel_counts, a=loads)
def test_erlang_b_is_a_probability(n: int, a: float) -> None:
    assert 0.0 <= erlang_b(n, a) <= 1.0


@given(n=channel_counts, a=loads)
def test_erlang_b_falls_with_channels(n: int, a: float) -> None:
    assert erlang_b(n + 1, a) <= erlang_b(n, a)


@given(n=st.integers(min_value=1, max_value=600), a=loads, extra=st.floats(0.01, 50.0))
def test_erlang_b_rises_with_load(n: int, a: float, extra: float) -> None:
    assert erlang_b(n, a + extra) >= erlang_b(n, a)


@pytest.mark.parametrize(
    ("n", "a"), [(-1, 1.0), (2.0, 1.0), (True, 1.0), (3, -0.5), (3, math.nan), (3, math.inf)]
)
def test_erlang_b_rejects_bad_input(n: object, a: float) -> None:
    with pytest.raises(ValueError, match=r"channels|erlangs"):
        erlang_b(n, a)  # type: ignore[arg-type]


# --- inverse ----------------------------------------------------------------------


@given(a=st.floats(0.01, 400.0), target=st.floats(1e-4, 0.5))
def test_channels_for_blocking_is_the_smallest(a: float, target: float) -> None:
    n = channels_for_blocking(a, target)
    assert erlang_b(n, a) <= target
    assert n == 0 or erlang_b(n - 1, a) > target


def test_channels_for_blocking_edges_and_large() -> None:
    assert channels_for_blocking(0.0, 0.01) == 0
    assert channels_for_blocking(50.0, 1.0) == 0
    assert channels_for_blocking(4.46, 0.01) == 10
    assert channels_for_blocking(84.06, 0.01) == 100
    n = channels_for_blocking(9_000.0, 0.01)
    assert erlang_b(n, 9_000.0) <= 0.01 < erlang_b(n - 1, 9_000.0)


@pytest.mark.parametrize("target", [0.0, -0.1, 1.5, math.nan])
def test_channels_for_blocking_rejects_bad_target(target: float) -> None:
    with pytest.raises(ValueError, match="target"):
        channels_for_blocking(10.0, target)


# --- Erlang C ---------------------------------------------------------------------


def test_erlang_c_known_values() -> None:
    # M/M/2 at A = 1: P(wait) = 1/3; M/M/1: P(wait) = rho.
    assert erlang_c(2, 1.0) == pytest.approx(1.0 / 3.0, rel=1e-12)
    assert erlang_c(1, 0.7) == pytest.approx(0.7, rel=1e-12)
    # Call-centre textbook case: 10 agents, 8 E offered -> P(wait) = 0.4092.
    assert erlang_c(10, 8.0) == pytest.approx(0.4092, abs=1e-4)


@pytest.mark.parametrize(("n", "a"), [(3, 2.5), (12, 9.0), (40, 35.5)])
def test_erlang_c_matches_direct_sum(n: int, a: float) -> None:
    terms = sum(a**k / math.factorial(k) for k in range(n))
    top = a**n / math.factorial(n) * n / (n - a)
    assert erlang_c(n, a) == pytest.approx(top / (terms + top), rel=1e-10)


def test_erlang_c_unstable_and_idle() -> None:
    assert erlang_c(5, 5.0) == 1.0
    assert erlang_c(5, 9.0) == 1.0
    assert erlang_c(5, 0.0) == 0.0
    assert erlang_c_mean_wait(5, 5.0, 10.0) == math.inf


def test_erlang_c_mean_wait_known_values() -> None:
    # M/M/1: Wq = rho / (mu - lambda) = rho * S / (1 - rho).
    assert erlang_c_mean_wait(1, 0.5, 2.0) == pytest.approx(2.0, rel=1e-12)
    # M/M/2, A = 1, S = 3 s: Wq = C * S / (N - A) = 1/3 * 3 / 1 = 1 s.
    assert erlang_c_mean_wait(2, 1.0, 3.0) == pytest.approx(1.0, rel=1e-12)


@given(n=st.integers(1, 300), a=loads)
def test_erlang_c_at_least_erlang_b(n: int, a: float) -> None:
    assert erlang_b(n, a) <= erlang_c(n, a) <= 1.0


def test_erlang_c_large_n() -> None:
    c = erlang_c(10_000, 9_900.0)
    assert 0.0 < c < 1.0
    assert erlang_c_mean_wait(10_000, 9_900.0, 1.0) == pytest.approx(c / 100.0)


@pytest.mark.parametrize(("n", "a", "s"), [(0, 1.0, 1.0), (2, -1.0, 1.0), (2, 1.0, -1.0)])
def test_erlang_c_rejects_bad_input(n: int, a: float, s: float) -> None:
    with pytest.raises(ValueError, match=r"agents|erlangs|mean_service_s"):
        erlang_c_mean_wait(n, a, s)


# --- offered load -----------------------------------------------------------------


def test_offered_load() -> None:
    assert offered_load(2.0, 90.0) == 180.0
    assert offered_load(0.0, 90.0) == 0.0
    with pytest.raises(ValueError, match="rate_per_s"):
        offered_load(-1.0, 90.0)
    with pytest.raises(ValueError, match="mean_hold_s"):
        offered_load(1.0, math.inf)
