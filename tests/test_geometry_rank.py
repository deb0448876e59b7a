"""The rank-constrained optimum G*_p of SPEC §10 (jaxcl.geometry.optimal_gram(..., rank=p))
against an exhaustive search over unit vectors on a circle (p = 2) and against the convex G*."""

import itertools
import math

import numpy as np
import pytest

from jaxcl import geometry
from jaxcl.errors import ConfigError


def numpy_objective(G_MxCxC, pi, k, tau):
    """InfoNCE's F(G) of SPEC §9 for a stack of Gram matrices, by a plain enumeration of the
    count vectors n (Σ n = k) with their multinomial probabilities."""
    C = len(pi)
    rows = [n for n in itertools.product(range(k + 1), repeat=C) if sum(n) == k]
    counts = np.array(rows, dtype=np.float64)  # (N, C)
    prob = np.array(
        [
            math.factorial(k)
            / math.prod(math.factorial(x) for x in n)
            * math.prod(p**x for p, x in zip(pi, n))
            for n in rows
        ]
    )
    # ℓ(1; negatives) = log(e^{1/τ} + Σ_c' n_c' e^{G_cc'/τ}) − 1/τ for each anchor class c
    sums = np.exp(G_MxCxC / tau) @ counts.T  # (M, C, N)
    ell = np.log(math.exp(1 / tau) + sums) - 1 / tau
    return np.einsum("c,mcn,n->m", np.asarray(pi), ell, prob)


def circle_gram(theta_MxC):
    """Gram matrices of unit vectors at angles θ in R^2: G_cc' = cos(θ_c − θ_c')."""
    return np.cos(theta_MxC[:, :, None] - theta_MxC[:, None, :])


def exhaustive_circle(pi, k, tau, step_deg=2.0):
    """min F over C unit vectors on a circle (θ_0 = 0): a full grid, then finer grids around
    the best point down to 0.001 degree. Returns (F, G)."""
    C = len(pi)
    axis = np.deg2rad(np.arange(0.0, 360.0, step_deg))
    grid = np.stack(np.meshgrid(*([axis] * (C - 1)), indexing="ij"), axis=-1).reshape(-1, C - 1)
    F = np.concatenate(
        [
            numpy_objective(circle_gram(np.pad(g, ((0, 0), (1, 0)))), pi, k, tau)
            for g in np.array_split(grid, max(1, len(grid) // 100_000))
        ]
    )
    best = grid[np.argmin(F)]
    width = np.deg2rad(step_deg)
    while width > np.deg2rad(1e-3):
        local = np.linspace(-width, width, 9)
        cand = best + np.stack(np.meshgrid(*([local] * (C - 1)), indexing="ij"), axis=-1).reshape(
            -1, C - 1
        )
        F = numpy_objective(circle_gram(np.pad(cand, ((0, 0), (1, 0)))), pi, k, tau)
        best = cand[np.argmin(F)]
        width /= 4
    G = circle_gram(np.pad(best[None], ((0, 0), (1, 0))))
    return float(numpy_objective(G, pi, k, tau)[0]), G[0]


@pytest.mark.parametrize("pi", [np.full(3, 1 / 3), np.array([0.6, 0.3, 0.1])])
@pytest.mark.numerics
@pytest.mark.slow
def test_rank2_three_classes_against_angles_on_a_circle(pi):
    G, info = geometry.optimal_gram(pi, 4, 0.5, rank=2, return_info=True)
    F_ref, G_ref = exhaustive_circle(pi, 4, 0.5, step_deg=1.0)
    assert info["F"] == pytest.approx(F_ref, rel=1e-9)  # no angle does better
    np.testing.assert_allclose(G, G_ref, atol=1e-4)
    assert np.linalg.eigvalsh(G)[0] >= -1e-10 and np.sum(np.linalg.eigvalsh(G) > 1e-8) <= 2
    # p = 2 = C − 1 and G* has rank 2: G*_2 is the convex G*
    assert info["convex_rank"] == 2 and info["convex_max_dev"] <= 1e-6


@pytest.mark.numerics
@pytest.mark.slow
def test_rank2_four_classes_binds_and_multistart_finds_the_best_angle():
    # four classes on a circle: the rank bound binds (G* has rank 3), F is not convex in the
    # factor and the starts end at different local minima; the best one is the global one
    # (π without ties, so that no relabelling of classes gives a second optimum)
    pi = np.array([0.45, 0.3, 0.15, 0.1])
    G, info = geometry.optimal_gram(pi, 2, 0.5, rank=2, n_starts=8, return_info=True)
    F_ref, G_ref = exhaustive_circle(pi, 2, 0.5, step_deg=3.0)
    assert info["F"] == pytest.approx(F_ref, rel=1e-9)
    np.testing.assert_allclose(G, G_ref, atol=1e-4)
    assert info["convex_max_dev"] is None  # p < C − 1: no comparison claimed
    G_star = geometry.optimal_gram(pi, 2, 0.5)
    assert float(numpy_objective(G_star[None], pi, 2, 0.5)[0]) < F_ref - 1e-4
    # some starts stop at worse local minima (the spread reports it)
    assert info["F_spread"] == pytest.approx(max(info["starts_F"]) - min(info["starts_F"]))
    assert info["F_spread"] > 1e-4


@pytest.mark.numerics
@pytest.mark.slow
def test_rank_at_least_c_gives_the_convex_optimum():
    pi = np.array([0.4, 0.4, 0.1, 0.1])
    G_star, star = geometry.optimal_gram(pi, 8, 0.5, return_info=True)
    for p in (4, 5):
        G, info = geometry.optimal_gram(pi, 8, 0.5, rank=p, return_info=True)
        np.testing.assert_allclose(G, G_star, atol=1e-6)
        assert info["F"] == pytest.approx(star["F"], rel=1e-12)
        assert info["F_spread"] <= 1e-12 and info["convex_max_dev"] <= 1e-6
        # the SDP's certificate holds for G*_p too (independent of how it was found)
        kkt = geometry.kkt_residuals(G, pi, 8, 0.5)
        assert kkt["min_eig_Z"] >= -1e-7 and kkt["ZG_max"] <= 1e-6


@pytest.mark.numerics
def test_rank1_enumerates_the_signs():
    pi = np.array([0.5, 0.3, 0.2])
    G, info = geometry.optimal_gram(pi, 3, 0.5, rank=1, return_info=True)
    signs = [np.array((1,) + s) for s in itertools.product((1, -1), repeat=2)]
    F = [float(numpy_objective(np.outer(s, s)[None], pi, 3, 0.5)[0]) for s in signs]
    np.testing.assert_array_equal(G, np.outer(signs[int(np.argmin(F))], signs[int(np.argmin(F))]))
    assert info["F"] == pytest.approx(min(F), rel=1e-12)


@pytest.mark.parametrize("rank", [0, -1, 2.5, "2", True])
def test_bad_rank_is_refused_naming_the_field(rank):
    with pytest.raises(ConfigError, match="'rank'"):
        geometry.optimal_gram([0.5, 0.5], 4, 0.5, rank=rank)


# ---- ρ*_2 of 2+2 against a symmetry-reduced problem


def _symmetric_gram(a, b):
    """2+2 on a circle, symmetric under the reflection that swaps both pairs at once: majorities
    at π ± a, minorities at ± b (minority cosine cos 2b). Complex a, b carry a complex step."""
    theta = np.array([np.pi - a, np.pi + a, -b, b])
    return np.cos(theta[:, None] - theta[None, :])


def _family_derivative(i, a, b, pi, h=1e-30):
    """∂F/∂a (i = 0) or ∂F/∂b (i = 1) on the family, by a complex step (exact to rounding)."""
    x = [complex(a), complex(b)]
    x[i] += 1j * h
    return float(numpy_objective(_symmetric_gram(*x)[None], pi, 8, 0.5)[0].imag / h)


@pytest.mark.slow
def test_rank2_threshold_against_the_symmetric_family():
    # Reduced problem: g(b) = min_a F(a, b). The minorities count as collapsed while
    # cos 2b ≥ 1 − 1e-4, i.e. b ≤ b_c; g has one minimum in b (checked on a grid below), so ρ*
    # is the ratio at which it sits at b_c: the root in ρ of ∂F/∂b(a*(b_c), b_c) (envelope
    # theorem), with a*(b) the root of ∂F/∂a, both by brentq to 1e-15.
    from scipy import optimize

    def pi_of(rho):
        w = np.array([1.0, 1.0, rho, rho])
        return w / w.sum()

    def a_star(b, pi):
        return optimize.brentq(
            lambda a: _family_derivative(0, a, b, pi), 1e-3, np.pi / 2 - 1e-9, xtol=1e-15
        )

    b_c = np.arccos(1 - 1e-4) / 2
    slope = lambda rho: _family_derivative(1, a_star(b_c, pi_of(rho)), b_c, pi_of(rho))  # noqa: E731
    rho_ref = optimize.brentq(slope, 0.1, 0.2, xtol=1e-15, rtol=1e-15)
    # the family holds the rank-2 optimum: same F as the solver's 8 starts near ρ*
    pi = pi_of(rho_ref * 1.001)
    _, info = geometry.optimal_gram(pi, 8, 0.5, rank=2, n_starts=8, return_info=True)
    g = lambda b: float(numpy_objective(_symmetric_gram(a_star(b, pi), b)[None], pi, 8, 0.5)[0])  # noqa: E731
    values = [g(b) for b in np.linspace(0.0, np.pi / 2, 91)]
    assert int(np.argmin(values)) <= 1 and np.all(np.diff(values[1:]) > 0)  # one minimum, b ≈ 0
    best = optimize.minimize_scalar(g, bounds=(0.0, 0.1), method="bounded", options={"xatol": 1e-9})
    assert best.fun == pytest.approx(info["F"], abs=1e-13)
    rho = geometry.collapse_threshold(2, 2, 8, 0.5, rank=2, n_starts=4)
    assert rho == pytest.approx(rho_ref, rel=1e-6)
