"""The summary's confidence intervals equal scipy.stats' (computed without importing it)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lab.results import mean_ci95, wilson_ci95


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 50), (1, 50), (7, 50), (49, 50),
                                 (50, 50), (3, 199_620), (1234, 199_620), (199_619, 199_620)])
def test_wilson_equals_scipy_binomtest(k: int, n: int) -> None:
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert wilson_ci95(k, n) == (float(ci.low), float(ci.high))


@pytest.mark.parametrize("reps", [2, 3, 5, 10, 30])
def test_student_t_interval_equals_scipy(reps: int) -> None:
    vals = np.random.default_rng(reps).normal(10.0, 2.0, reps)
    got = mean_ci95(vals.tolist())
    sem = vals.std(ddof=1) / np.sqrt(reps)
    half = float(stats.t.ppf(0.975, reps - 1)) * float(sem)
    assert got["ci95"] == [max(0.0, float(vals.mean()) - half), float(vals.mean()) + half]
    assert got["replications"] == reps


def test_one_replication_uses_wilson_on_the_counts() -> None:
    got = mean_ci95([0.14], successes=14, trials=100)
    ci = stats.binomtest(14, 100).proportion_ci(0.95, method="wilson")
    assert got["ci95"] == [float(ci.low), float(ci.high)]


def test_the_normal_quantile_is_scipys() -> None:
    from scipy.special import ndtri

    from lab.results import Z975

    assert Z975 == float(ndtri(0.975)) == stats.norm.ppf(0.975)
