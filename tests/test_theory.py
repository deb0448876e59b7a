"""theory.py (exact tails, finite-d expectations), the init-only counts against them, and fit.py."""

import math

import numpy as np
import pytest

from jaxcl import fit
from jaxcl.experiments.liao import initstats, theory

pytestmark = pytest.mark.numerics  # every test here compares numbers with a reference


def test_betainc_closed_forms():
    x = np.array([0.0, 0.1, 0.4, 0.9, 1.0])
    np.testing.assert_allclose(theory.betainc(1.0, 1.0, x), x, atol=1e-12)
    # Beta(2, 3): I_x = 1 − (1−x)^4 − 4x(1−x)^3
    np.testing.assert_allclose(
        theory.betainc(2.0, 3.0, x), 1 - (1 - x) ** 4 - 4 * x * (1 - x) ** 3, atol=1e-12
    )
    # d = 3: U ~ Beta(1/2, 1), P(U ≥ s) = 1 − √s
    s = np.array([0.01, 0.3, 0.8])
    np.testing.assert_allclose(theory.tail_U(3, s), 1 - np.sqrt(s), rtol=1e-10)


def test_probabilities_against_brute_force():
    rng = np.random.default_rng(0)
    d, n = 12, 400_000
    g = rng.standard_normal((n, d))
    u = g**2 / (g**2).sum(1, keepdims=True)
    for ratio in (1.0, 0.8):
        c1, c2 = theory.thresholds(ratio)
        x1, x2 = c1 * math.log(d) / d, c2 * math.log(d) / d
        p_ord = (u[:, 0] >= x2).mean()
        assert abs(theory.p_ordinary(d, c2) - p_ord) < 4 * math.sqrt(p_ord / n)
        lucky = ((u[:, 0] >= x1) & (u[:, 1:] <= x2).all(1)).mean()
        p, se = theory.p_alone(d, c1, c2, n_mc=20000)
        assert abs(p - lucky) < 4 * math.hypot(se, math.sqrt(lucky / n)), (ratio, p, lucky)
        assert lucky > 100 / n  # the test has power


def test_exponents():
    assert theory.omega1(1.5, 1.0, 0.0) == pytest.approx(0.5)
    assert theory.omega2(1.5, 0.5, 0.0) == pytest.approx(1.25)
    assert theory.n_exponent(0.5, 0.0) == pytest.approx(0.75)
    assert theory.T2_scale(64, 1.0, 0.5) == pytest.approx(2 * theory.T1_scale(64, 1.0))


@pytest.mark.slow
def test_init_counts_match_finite_d_expectation():
    """At small d, the measured |M_j|, |M_j*| and #{N_i(0) = {j}} at init are their exact
    finite-d expectations within sampling error."""
    stats = initstats.run([12, 24], 2.5, [0.75, 1.0], [0, 1, 2], log=lambda *_: None)
    rows = initstats.agreement(stats)
    assert len(rows) == 4
    for row in rows:
        for key in ("ordinary", "lucky", "single"):
            total, mean, z = row[key]
            assert abs(z) < 4.5, (row, key)
    assert sum(r["lucky"][0] for r in rows) > 100  # lucky sets are non-empty: eq. 17 is exercised
    rec = stats["records"][0]
    assert sum(rec["N0_hist"]) == rec["m"]
    assert rec["N0_mean"] * rec["m"] == pytest.approx(sum(rec["ordinary_counts"]))
    assert rec["N0_sq_mean"] >= rec["N0_mean"] ** 2


def test_fit_recovers_slope_with_interval():
    rng = np.random.default_rng(1)
    ds = [8, 16, 32, 64, 128]
    values = {d: list(3.0 * d**0.7 * np.exp(0.2 * rng.standard_normal(5))) for d in ds}
    f = fit.fit_exponent(values, name="Q")
    assert f.lo <= 0.7 <= f.hi and abs(f.slope - 0.7) < 0.1 and f.hi - f.lo < 0.3
    assert not f.warnings
    assert fit.fit_curve(ds, [2 * d**-1.5 for d in ds]) == pytest.approx(-1.5)


def test_fit_excludes_zeros_with_warning():
    values = {8: [0.0, 0.0], 16: [4.0, 4.0, 0.0], 32: [16.0, 16.0], 64: [64.0, 64.0]}
    f = fit.fit_exponent(values, name="|M_j*|")
    assert f.d_used == [16, 32, 64]
    assert any("d = [8]" in w and "|M_j*|" in w for w in f.warnings)
    assert any("bootstrap" in w for w in f.warnings)  # the 16 point can resample to zeros
    only = fit.fit_exponent({8: [0.0], 16: [1.0]})
    assert not only.ok and only.warnings


@pytest.mark.slow
def test_exponent_table_per_group_and_column():
    import pandas as pd

    rng = np.random.default_rng(2)
    recs = []
    for ratio, (p, q) in {1.0: (0.7, -0.5), 0.5: (1.5, 0.25)}.items():
        for d in (8, 16, 32, 64):
            for seed in range(4):
                noise = math.exp(0.2 * rng.standard_normal())
                recs.append(
                    {"ratio": ratio, "d": d, "seed": seed, "A": 3.0 * d**p * noise, "B": 2.0 * d**q}
                )  # B: noiseless, the same at every seed
    df = pd.DataFrame(recs).sample(frac=1.0, random_state=0)  # row order must not matter...
    table = fit.exponent(df, x="d", y=["A", "B"], by="ratio")
    assert list(table.columns) == ["ratio", *fit.COLUMNS]
    assert [(r, y) for r, y in zip(table.ratio, table.y)] == [
        (0.5, "A"),
        (0.5, "B"),
        (1.0, "A"),
        (1.0, "B"),
    ]
    for ratio, (p, q) in {1.0: (0.7, -0.5), 0.5: (1.5, 0.25)}.items():
        b = table[(table.ratio == ratio) & (table.y == "B")].iloc[0]
        assert b.slope == pytest.approx(q) and b.lo == pytest.approx(q) == b.hi
        assert b.intercept == pytest.approx(math.log(2.0)) and b.x_used == [8, 16, 32, 64]
        # ...and A's interval is fit_exponent's (the report's) on the seeds grouped here by hand,
        # in the table's order (a bootstrap draw picks seeds by position)
        a = table[(table.ratio == ratio) & (table.y == "A")].iloc[0]
        values = {}
        for r in df[df.ratio == ratio].to_dict("records"):
            values.setdefault(r["d"], []).append(r["A"])
        ref = fit.fit_exponent(values)
        assert (a.slope, a.lo, a.hi, a.intercept) == (ref.slope, ref.lo, ref.hi, ref.intercept)
        assert a.lo <= p <= a.hi
        assert isinstance(a.x_used[0], int) and a.n_x == 4 and a.warnings == []


def test_exponent_leaves_out_missing_values_and_names_columns():
    import pandas as pd

    df = pd.DataFrame({"d": [8, 8, 16, 16, 32], "T": [1.0, None, 4.0, 4.0, 16.0]})
    row = fit.exponent(df, y="T", name="T_1").iloc[0]
    assert row.slope == pytest.approx(2.0) and row.x_used == [8, 16, 32]
    assert row.warnings[0] == "T_1: 1 row(s) without a value left out"
    zero = fit.exponent(pd.DataFrame({"n": [4, 8], "Q": [0.0, 1.0]}), x="n", y="Q").iloc[0]
    assert math.isnan(zero.slope) and "zero (or no) values at n = [4]" in zero.warnings[0]
    with pytest.raises(KeyError, match=r"\['dd'\]"):
        fit.exponent(df, x="dd", y="T")
    with pytest.raises(TypeError, match="give y"):
        fit.exponent(df)
