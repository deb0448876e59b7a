"""The exact laws behind the Theorem 3.3 hypotheses panel and findings, against Monte Carlo of
the Gaussian init and against closed forms: P(every atom has a lucky neuron), the leading terms
of E|N_i(0)| and E|M_j*|, and the panel's arithmetic."""

import math

import numpy as np
import pytest

from jaxcl.experiments.liao import theory

pytestmark = pytest.mark.numerics


def _sets_at_init(rng, d, m, ratio, g=5e-4):
    """Ordinary and lucky masks (m, d) of fresh Gaussian weights (eqs. 16-17)."""
    a = rng.standard_normal((m, d))
    u = a**2 / (a**2).sum(axis=1, keepdims=True)
    c1, c2 = theory.thresholds(ratio, g)
    x1, x2 = c1 * math.log(d) / d, c2 * math.log(d) / d
    ordinary = u >= x2
    lucky = (u >= x1) & ((u > x2).sum(axis=1, keepdims=True) - (u > x2) == 0)
    return ordinary, lucky


def test_all_atoms_lucky_against_inclusion_exclusion():
    # multinomial cells of probability p each: P(all ≥ 1) = Σ_k (−1)^k C(d, k) (1 − k p)^m
    for d, m, p in [(5, 30, 0.03), (8, 64, 0.01), (12, 200, 0.004)]:
        exact = sum((-1) ** k * math.comb(d, k) * (1 - k * p) ** m for k in range(d + 1))
        assert theory.all_atoms_lucky(d, m, p) == pytest.approx(exact, rel=1e-9, abs=1e-12)


def test_all_atoms_lucky_against_simulated_inits():
    rng = np.random.default_rng(0)
    d, m, ratio = 8, 80, 1.0
    hits = [bool(_sets_at_init(rng, d, m, ratio)[1].any(axis=0).all()) for _ in range(3000)]
    p = theory.expected_counts(d, m, ratio, n_mc=400_000)["p_lucky"]
    want = theory.all_atoms_lucky(d, m, p)
    assert 0.05 < want < 0.95  # a case that tests something
    assert np.mean(hits) == pytest.approx(want, abs=4 * math.sqrt(want * (1 - want) / 3000))


@pytest.mark.parametrize("ratio", [0.5, 0.75, 1.0])
def test_expected_n0_against_simulated_inits(ratio):
    rng = np.random.default_rng(1)
    d = 64
    ordinary, _ = _sets_at_init(rng, d, 20000, ratio)
    sim = ordinary.sum(axis=1)
    exact = theory.expected_counts(d, 1, ratio)["N0"]
    assert sim.mean() == pytest.approx(exact, abs=4 * sim.std() / math.sqrt(len(sim)))


@pytest.mark.slow
def test_leading_terms_approach_the_exact_expectations():
    for ratio in (0.75, 1.0):
        e = theory.expected_counts(4096, 4096**2, ratio)
        assert theory.n0_leading(4096, ratio) == pytest.approx(e["N0"], rel=0.03)
        assert theory.lucky_leading(4096, 4096**2, ratio) == pytest.approx(e["lucky"], rel=0.5)
    # below ratio 1 the expected lucky count falls at large d whatever C_m; at 1 it grows
    falls = [theory.lucky_leading(d, round(d**4), 0.75) for d in (2**10, 2**14, 2**18)]
    assert falls[0] > falls[1] > falls[2]
    assert theory.n0_leading(2**18, 0.75) > 10 * theory.n0_leading(2**6, 0.75)
    assert theory.n0_leading(2**18, 1.0) < theory.n0_leading(2**6, 1.0)


def test_hypotheses_panel_arithmetic():
    h = theory.hypotheses(128, 16384, 2.0, 1.0, 1.5e-5, 1.0, 64, T2=500.0)
    xi2 = 128 ** (2.0 - (1 - 5e-4))
    assert h["lam"]["value"] == pytest.approx(1.5e-5 * 128 * xi2) and h["lam"]["holds"]
    assert h["omega1"]["holds"] and h["all_lucky"]["holds"]
    assert h["window"]["value"] == pytest.approx(500.0 / 128**1.01) and not h["window"]["holds"]
    assert h["K"]["value"] == pytest.approx(6 / 7) and h["K"]["holds"] is None
    assert h["T_eta"]["value"] == pytest.approx(2.0 + 10 * (2.0 - (1 - 5e-4)))
    assert not h["T_eta"]["holds"]
    # the default weight decay at C_m 1.5, ratio 0.25 is far past the bound; ω1 < 0 there
    h = theory.hypotheses(64, 512, 1.5, 0.25, 0.004, 1.0, 64, T2=-1)
    assert not h["lam"]["holds"] and not h["omega1"]["holds"] and h["window"]["holds"] is None
