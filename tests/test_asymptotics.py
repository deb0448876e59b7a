"""jaxcl.asymptotics against known answers: power laws and levelling curves for the local
exponent, the generating scale among candidates, falling and flat failure shares, and the
maximum of Poisson counts against scipy's CDF and simulation."""

import math

import numpy as np
import pytest
from scipy import stats

from jaxcl import asymptotics as A

DS = [8, 16, 32, 64, 128, 256, 512, 1024]


def test_local_exponent_of_a_power_law_with_seed_noise():
    rng = np.random.default_rng(0)
    by_d = {d: list(3.0 * d**0.7 * np.exp(0.05 * rng.standard_normal(4))) for d in DS}
    f = A.local_exponent(by_d)
    assert f.method == "curvature" and f.d_used == DS
    assert f.lo < 0.7 < f.hi and f.hi - f.lo < 0.3
    assert f.slope == pytest.approx(0.7, abs=0.1)


def test_local_exponent_reads_a_levelling_curve_as_levelling():
    # Q = d / (1 + d/128): slope 1 at small d, d log Q/d log d = 1/(1 + d/128) = 0.11 at 1024
    by_d = {d: [d / (1 + d / 128)] * 4 for d in DS}
    f = A.local_exponent(by_d)
    whole = np.polyfit(np.log(DS), np.log([d / (1 + d / 128) for d in DS]), 1)[0]
    assert whole > 0.5  # a straight line over the range averages the early growth in
    assert f.lo < 1 / 9 < f.hi and f.hi < 0.2


def test_identical_seeds_still_give_an_interval_from_the_residuals():
    # integer maxima equal in every seed: the seed bootstrap alone has zero width
    by_d = {d: [v] * 4 for d, v in zip(DS[:5], [1, 2, 3, 4, 6])}
    f = A.local_exponent(by_d)
    assert f.hi - f.lo > 0.1


def test_three_d_fit_a_line_and_fewer_none():
    by_d = {8: [1.0], 16: [2.0], 32: [4.0]}
    assert A.local_exponent(by_d).method == "line"
    assert A.local_exponent(by_d).slope == pytest.approx(1.0)
    assert not A.local_exponent({8: [1.0], 16: [2.0]}).ok


def test_compare_scales_finds_the_generating_scale_and_computes_aic_by_hand():
    rng = np.random.default_rng(1)

    def theorem(d):
        return d * math.log(d) / math.log(math.log(d))

    cands = {"d": lambda d: d, "d log d": lambda d: d * math.log(d), "theorem": theorem,
             "d^2": lambda d: d * d}  # fmt: skip
    by_d = {d: list(5 * theorem(d) * np.exp(0.03 * rng.standard_normal(4))) for d in DS}
    rows = A.compare_scales(by_d, cands)
    assert rows[0]["name"] == "theorem" and rows[1]["delta"] > 10
    # AIC = n log(RSS/n) + 2 with RSS of log Q − log s(d) about its mean
    y = np.array([math.log(v) - math.log(d) for d in DS for v in by_d[d]])
    rss = float(((y - y.mean()) ** 2).sum())
    row = next(r for r in rows if r["name"] == "d")
    assert row["aic"] == pytest.approx(len(y) * math.log(rss / len(y)) + 2)
    assert row["C"] == pytest.approx(math.exp(y.mean()))
    assert sum(r["weight"] for r in rows) == pytest.approx(1.0)


def test_failure_trend_falls_stays_flat_or_is_separated():
    rng = np.random.default_rng(2)
    falling = [(d, s, rng.binomial(400, 0.5 / math.sqrt(d)), 400) for d in DS for s in range(4)]
    t = A.failure_trend(falling)
    assert t["hi"] < 0 and t["lo"] < -0.3  # logit of a small p ≈ log p: slope ≈ −0.5
    flat = [(d, s, rng.binomial(400, 0.2), 400) for d in DS for s in range(4)]
    t = A.failure_trend(flat)
    assert t["lo"] < 0 < t["hi"]
    none = [(d, s, 0, 100) for d in DS for s in range(4)]
    assert A.failure_trend(none)["separated"]
    assert A.failure_trend([(64, 0, 3, 10)])["d"] == [64]  # one d: no trend


@pytest.mark.parametrize("mean,n", [(1.0, 1), (1.0, 1448), (0.3, 16384), (12.0, 64)])
def test_poisson_max_quantile_against_scipy(mean, n):
    for q in (0.025, 0.5, 0.975):
        k = A.poisson_max_quantile(mean, n, q)
        assert stats.poisson.cdf(k, mean) ** n >= q
        assert k == 0 or stats.poisson.cdf(k - 1, mean) ** n < q


def test_poisson_max_median_against_simulation():
    rng = np.random.default_rng(3)
    sim = np.median([rng.poisson(1.0, 4096).max() for _ in range(400)])
    assert A.poisson_max_quantile(1.0, 4096, 0.5) == sim


def test_max_of_order_one_counts_grows_but_its_excess_does_not():
    rng = np.random.default_rng(4)
    n = {d: int(d**1.5) for d in DS}
    maxima = {d: [float(rng.poisson(1.0, n[d]).max()) for _ in range(4)] for d in DS}
    assert np.mean(maxima[1024]) >= 1.5 * np.mean(maxima[8])  # the raw maximum grows
    ex = A.max_excess(maxima, 1.0, n, 0.0, 8)
    assert all(max(ex[d]) <= 2.0 for d in DS[-3:])
    grow = {d: [float(rng.poisson(d**0.5, n[d]).max()) for _ in range(4)] for d in DS}
    ex = A.max_excess(grow, 8**0.5, n, 0.0, 8)  # per-object mean d^0.5 against an O(1) claim
    assert min(ex[1024]) > 2.0
    assert A.local_exponent(ex).lo > 0
