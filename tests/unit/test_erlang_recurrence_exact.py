"""Erlang B and C against their closed forms in exact rational arithmetic, and the
validation each public function promises (the argument it names, the bound it states).

Oracles: B(N, A) = (A^N / N!) / sum_{k<=N} A^k / k!  (Erlang 1917);
C(N, A) = N·B / (N − A·(1 − B)), equivalently the Poisson-sum form
(A^N/N! · N/(N−A)) / (sum_{k<N} A^k/k! + A^N/N! · N/(N−A));  W_q = C·s / (N − A).
Computed here with :class:`fractions.Fraction`, not with the code under test.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from lab.erlang import (
    channels_for_blocking,
    erlang_b,
    erlang_c,
    erlang_c_mean_wait,
    offered_load,
)


def b_exact(n: int, a: Fraction) -> Fraction:
    terms = [a**k / math.factorial(k) for k in range(n + 1)]
    return terms[-1] / sum(terms)


def c_exact(n: int, a: Fraction) -> Fraction:
    top = a**n / math.factorial(n) * Fraction(n) / (n - a)
    return top / (sum(a**k / math.factorial(k) for k in range(n)) + top)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 12])
@pytest.mark.parametrize("a", [Fraction(1, 2), Fraction(1), Fraction(5, 2), Fraction(9)])
def test_erlang_b_equals_the_closed_form(n: int, a: Fraction) -> None:
    assert erlang_b(n, float(a)) == pytest.approx(float(b_exact(n, a)), rel=1e-12)


def test_erlang_b_hand_values() -> None:
    # N = 1: A/(1 + A); N = 2, A = 1: (1/2)/(1 + 1 + 1/2) = 1/5
    assert erlang_b(1, 3.0) == pytest.approx(0.75, rel=1e-15)
    assert erlang_b(2, 1.0) == pytest.approx(0.2, rel=1e-15)
    assert erlang_b(0, 4.0) == 1.0
    assert erlang_b(3, 0.0) == 0.0  # zero load is valid and blocks nothing


@pytest.mark.parametrize("n", [1, 2, 3, 6, 10])
@pytest.mark.parametrize("a", [Fraction(1, 4), Fraction(1, 2), Fraction(9, 10)])
def test_erlang_c_equals_the_closed_form(n: int, a: Fraction) -> None:
    load = a * n  # utilisation a of n servers
    assert erlang_c(n, float(load)) == pytest.approx(float(c_exact(n, load)), rel=1e-12)


def test_erlang_c_hand_values_and_mean_wait() -> None:
    # M/M/1: C = rho; M/M/2 at A = 1: C = 1/3 (the docstring's table value)
    assert erlang_c(1, 0.25) == pytest.approx(0.25, rel=1e-15)
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3, rel=1e-15)
    # W_q = C·s/(N − A): M/M/1 at rho = 1/2, s = 4 -> 1/2 · 4 / (1/2) = 4
    assert erlang_c_mean_wait(1, 0.5, 4.0) == pytest.approx(4.0, rel=1e-15)
    # M/M/3 at A = 2, s = 6: C = 4/9, W_q = 4/9 · 6 / 1 = 8/3
    assert erlang_c(3, 2.0) == pytest.approx(4 / 9, rel=1e-14)
    assert erlang_c_mean_wait(3, 2.0, 6.0) == pytest.approx(8 / 3, rel=1e-14)
    assert erlang_c_mean_wait(3, 0.0, 6.0) == 0.0
    assert erlang_c_mean_wait(2, 1.0, 0.0) == 0.0  # zero service time is valid


def test_erlang_c_at_and_beyond_saturation() -> None:
    assert erlang_c(4, 4.0) == 1.0
    # exactly 1 at A = N (documented), not the formula's rounding (0.99999999999999978
    # at N = 3, 1.0000000000000002 at N = 7)
    assert erlang_c(3, 3.0) == 1.0 and erlang_c(7, 7.0) == 1.0
    assert erlang_c(4, 5.5) == 1.0
    assert erlang_c_mean_wait(4, 4.0, 1.0) == math.inf
    assert erlang_c_mean_wait(4, 9.0, 1.0) == math.inf


@pytest.mark.parametrize("a", [Fraction(1, 2), Fraction(3), Fraction(21, 2), Fraction(40)])
@pytest.mark.parametrize("target", [Fraction(1, 2), Fraction(1, 10), Fraction(1, 100),
                                    Fraction(1, 1000)])
def test_channels_for_blocking_is_the_smallest_by_the_closed_form(a: Fraction,
                                                                  target: Fraction) -> None:
    n = 0
    while b_exact(n, a) > target:
        n += 1
    assert channels_for_blocking(float(a), float(target)) == n


def test_channels_for_blocking_edges() -> None:
    assert channels_for_blocking(0.0, 0.01) == 0  # no traffic, no channel
    assert channels_for_blocking(50.0, 1.0) == 0  # any blocking is acceptable
    assert channels_for_blocking(1.0, 0.5) == 1  # B(1, 1) = 1/2 exactly meets the target
    # integers are numbers: B(3, 2) = 4/19 > 0.2 >= B(4, 2) = 2/21
    assert channels_for_blocking(2, 0.2) == 4


def test_offered_load_is_rate_times_hold() -> None:
    assert offered_load(0.5, 180.0) == 90.0
    assert offered_load(3, 2) == 6.0
    assert offered_load(0.0, 100.0) == 0.0


@pytest.mark.parametrize(("call", "match"), [
    (lambda: erlang_b(-1, 1.0), r"^channels: must be an integer >= 0, got -1$"),
    (lambda: erlang_b(2.0, 1.0), r"^channels: must be an integer >= 0, got 2\.0$"),
    (lambda: erlang_b(True, 1.0), r"^channels: must be an integer >= 0, got True$"),
    (lambda: erlang_b(2, -0.5), r"^erlangs: must be a finite number >= 0, got -0\.5$"),
    (lambda: erlang_b(2, math.inf), r"^erlangs: must be a finite number >= 0, got inf$"),
    (lambda: erlang_b(2, math.nan), r"^erlangs: must be a finite number >= 0, got nan$"),
    (lambda: erlang_b(2, False), r"^erlangs: must be a finite number >= 0, got False$"),
    (lambda: erlang_b(2, "1"), r"^erlangs: must be a finite number >= 0, got '1'$"),
    (lambda: erlang_c(0, 0.5), r"^agents: must be an integer >= 1, got 0$"),
    (lambda: erlang_c(1.5, 0.5), r"^agents: must be an integer >= 1, got 1\.5$"),
    (lambda: erlang_c(2, -1.0), r"^erlangs: must be a finite number >= 0, got -1\.0$"),
    (lambda: erlang_c_mean_wait(2, 1.0, -1.0),
     r"^mean_service_s: must be a finite number >= 0, got -1\.0$"),
    (lambda: erlang_c_mean_wait(0, 1.0, 1.0), r"^agents: must be an integer >= 1, got 0$"),
    (lambda: offered_load(-1.0, 2.0), r"^rate_per_s: must be a finite number >= 0, got -1\.0$"),
    (lambda: offered_load(1.0, -2.0),
     r"^mean_hold_s: must be a finite number >= 0, got -2\.0$"),
    (lambda: channels_for_blocking(-3.0, 0.1), r"^erlangs: must be a finite number >= 0, got -3"),
    (lambda: channels_for_blocking(3.0, 0.0),
     r"^target: must be a probability in \(0, 1\], got 0\.0$"),
    (lambda: channels_for_blocking(3.0, 1.5),
     r"^target: must be a probability in \(0, 1\], got 1\.5$"),
    (lambda: channels_for_blocking(3.0, True),
     r"^target: must be a probability in \(0, 1\], got True$"),
    (lambda: channels_for_blocking(3.0, "0.1"),
     r"^target: must be a probability in \(0, 1\], got '0\.1'$"),
])
def test_bad_arguments_are_named_in_the_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
