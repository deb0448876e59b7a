"""Where trained geometry stops (jaxcl/experiments/geometry/landscape.py): the Riemannian
gradient and Hessian on unit-row factors against finite differences in the angles of vectors on
a circle (p = 2, where the manifold is the angles), and the end-point verdicts on a constructed
saddle, a strict local minimum, the global minimum and a point short of any of them."""

import numpy as np
import pytest

from jaxcl.errors import ConfigError
from jaxcl.experiments.geometry import landscape
from jaxcl.experiments.geometry.optimal import optimal_gram
from reference import count_vectors

K, TAU = 8, 0.5
PI_001 = np.array([1.0, 1.0, 0.01, 0.01]) / 2.02  # 2+2 at ratio 0.01: G* has rank 2 = p


def angle_objective(theta_C, pi, k=K, tau=TAU):
    """InfoNCE's F of unit vectors at angles θ on a circle, by plain enumeration (numpy)."""
    G = np.cos(theta_C[:, None] - theta_C[None, :])
    F = 0.0
    for n, prob in count_vectors(pi, k):
        ell = np.log(np.exp(1 / tau) + np.exp(G / tau) @ np.asarray(n, float)) - 1 / tau
        F += prob * (np.asarray(pi) @ ell)
    return F


def angle_derivatives(theta_C, pi, h=1e-4):
    """Central differences of angle_objective: gradient (C,) and Hessian (C, C) in the angles."""
    C = len(theta_C)
    E = np.eye(C) * h
    f = lambda t: angle_objective(t, pi)  # noqa: E731
    grad = np.array([(f(theta_C + E[i]) - f(theta_C - E[i])) / (2 * h) for i in range(C)])
    H = np.empty((C, C))
    for i in range(C):
        for j in range(C):
            H[i, j] = (
                f(theta_C + E[i] + E[j])
                - f(theta_C + E[i] - E[j])
                - f(theta_C - E[i] + E[j])
                + f(theta_C - E[i] - E[j])
            ) / (4 * h * h)
    return grad, 0.5 * (H + H.T)


def off_rotation(H, w):
    """Eigenvalues of w H w on the complement of the common rotation (all angles at once),
    which in the scaled coordinates η = θ / w is the direction 1 / w."""
    Hs = H * w[:, None] * w[None, :]
    u = (1.0 / w) / np.linalg.norm(1.0 / w)
    U = np.linalg.svd(u[:, None], full_matrices=True)[0][:, 1:]
    return np.linalg.eigvalsh(U.T @ Hs @ U)


def on_circle(theta_C):
    return np.stack([np.cos(theta_C), np.sin(theta_C)], axis=1)


def test_factor_reproduces_a_rank_p_gram_matrix():
    rng = np.random.default_rng(0)
    V = rng.standard_normal((5, 3))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    W = landscape.factor(V @ V.T, 3)
    np.testing.assert_allclose(W @ W.T, V @ V.T, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(W, axis=1), 1.0, atol=1e-12)
    assert landscape.factor(V @ V.T, 6).shape == (5, 6)  # p > C: zero columns


def test_gradient_and_hessian_match_angle_finite_differences():
    pi = np.array([0.4, 0.3, 0.2, 0.1])
    theta = np.array([0.3, 2.0, -1.7, 3.9])  # a generic point: not critical
    d = landscape.manifold_derivatives(on_circle(theta), pi, K, TAU)
    grad, H = angle_derivatives(theta, pi)
    assert d["F"] == pytest.approx(angle_objective(theta, pi), rel=1e-12)
    # the tangent of a unit vector at angle θ has unit length per radian
    assert d["grad_norm"] == pytest.approx(np.linalg.norm(grad), rel=1e-6)
    assert d["grad_scaled"] == pytest.approx(np.max(np.abs(grad) / pi), rel=1e-6)
    assert d["gauge_dim"] == 1
    np.testing.assert_allclose(d["hess_eigs"], off_rotation(H, np.ones(4)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        d["hess_eigs_scaled"], off_rotation(H, 1 / np.sqrt(pi)), rtol=1e-5, atol=1e-6
    )


def test_gauge_dimension_drops_with_the_rank_of_v():
    V = np.zeros((4, 3))
    V[:, :2] = on_circle(np.array([0.0, 1.0, 2.5, 4.0]))  # rank 2 in R^3: rotations about e_3
    d = landscape.manifold_derivatives(V, np.full(4, 0.25), K, TAU)
    # so(3) has dimension 3 and all three rotations move a rank-2 V (none fixes its plane
    # pointwise); only rank 1 would keep one rotation fixed
    assert d["gauge_dim"] == 3
    d1 = landscape.manifold_derivatives(
        np.array([[1.0, 0, 0], [-1, 0, 0], [1, 0, 0], [1, 0, 0]]), np.full(4, 0.25), K, TAU
    )
    assert d1["gauge_dim"] == 2


@pytest.fixture(scope="module")
def rank2_optimum():
    G, info = optimal_gram(PI_001, K, TAU, rank=2, n_starts=8, return_info=True)
    return G, info["F"]


@pytest.mark.slow
def test_global_minimum_is_named(rank2_optimum):
    G, F_opt = rank2_optimum
    r = landscape.classify_end_point(G, PI_001, K, TAU, 2, F_opt=F_opt)
    assert r["verdict"] == "global minimum"
    assert abs(r["F_gap"]) <= 1e-12 and r["moved"] <= 1e-6 and r["min_eig_scaled"] > 1e-3
    assert r["newton_step"] <= 1e-9


def test_strict_local_minimum_with_antipodal_minorities(rank2_optimum):
    # the end point of the two failing seeds at ratio 0.01, p = 2: minority cosine −1
    G_opt, F_opt = rank2_optimum
    theta = np.array([0.05, np.pi - 0.03, np.pi / 2 + 0.02, -np.pi / 2 + 0.04])
    start = landscape.classify_end_point(on_circle(theta) @ on_circle(theta).T, PI_001, K, TAU, 2)
    assert start["verdict"] == "not converged"  # 0.05 rad off: the continuation moves it
    G = np.asarray(start["G_end"])
    r = landscape.classify_end_point(G, PI_001, K, TAU, 2, F_opt=F_opt)
    assert r["verdict"] == "local minimum"
    assert G[2, 3] == pytest.approx(-1.0, abs=1e-6)
    # independently: at the angles of G the numpy gradient vanishes, the angle Hessian is
    # positive definite off the common rotation, and F lies above F(G*_2)
    V = landscape.factor(G, 2)
    th = np.arctan2(V[:, 1], V[:, 0])
    grad, H = angle_derivatives(th, PI_001)
    assert np.max(np.abs(grad)) <= 1e-8
    eig = off_rotation(H, 1 / np.sqrt(PI_001))
    assert eig[0] > 1e-2
    assert r["end_min_eig_scaled"] == pytest.approx(eig[0], rel=1e-4)
    gap = angle_objective(th, PI_001) - F_opt
    assert 1e-4 < gap < 1e-3 and r["F_gap"] == pytest.approx(gap, rel=1e-6)
    assert np.abs(G - G_opt).max() > 1.0


@pytest.mark.parametrize("sigma", [(1, 1, -1, -1), (1, -1, 1, 1)])
def test_constructed_saddle_is_named(sigma):
    # every sign pattern σσᵀ is a critical point on the circle (all sines vanish); splitting a
    # collapsed pair lowers F, so the Hessian has a negative eigenvalue
    s = np.asarray(sigma, float)
    r = landscape.classify_end_point(np.outer(s, s), PI_001, K, TAU, 2)
    assert r["verdict"] == "saddle"
    assert r["grad_scaled"] <= 1e-12 and r["newton_step"] <= 1e-12
    th = np.where(s > 0, 0.0, np.pi)
    _, H = angle_derivatives(th, PI_001)
    eig = off_rotation(H, 1 / np.sqrt(PI_001))
    assert eig[0] < -0.1 and r["min_eig_scaled"] == pytest.approx(eig[0], rel=1e-4)


def test_point_short_of_a_minimum_is_not_converged(rank2_optimum):
    G_opt, F_opt = rank2_optimum
    V = landscape.factor(G_opt, 2)
    th = np.arctan2(V[:, 1], V[:, 0]) + np.array([0.0, 0.1, -0.1, 0.2])
    r = landscape.classify_end_point(on_circle(th) @ on_circle(th).T, PI_001, K, TAU, 2)
    assert r["verdict"] == "not converged"
    assert r["moved"] > 0.02 and r["F_drop"] > 0 and r["newton_step"] > 0.02
    assert abs(r["end_F_gap"]) <= 1e-12  # the continuation reaches G*_2 from there


@pytest.mark.slow
def test_convex_rank_needs_no_hessian():
    pi = np.array([1.0, 1.0, 0.1, 0.1]) / 2.2
    G, info = optimal_gram(pi, K, TAU, return_info=True)  # rank 3 < p: G*_4 = G*
    r = landscape.classify_end_point(G, pi, K, TAU, 4, F_opt=info["F"])
    assert r["verdict"] == "global minimum" and r["min_eig_scaled"] is None
    assert abs(r["F_gap"]) <= 1e-12


def test_bad_input_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="'rank'"):
        landscape.classify_end_point(np.eye(4), PI_001, K, TAU, 1)
    with pytest.raises(ConfigError, match="'V'"):
        landscape.manifold_derivatives(np.ones((3, 2)), PI_001, K, TAU)


def test_relabelings_swap_only_classes_of_equal_size():
    P = landscape.relabelings([0.3, 0.3, 0.2, 0.1, 0.1])
    assert P.shape == (4, 5) and (P[0] == np.arange(5)).all()
    assert {tuple(r) for r in P} == {
        (0, 1, 2, 3, 4),
        (1, 0, 2, 3, 4),
        (0, 1, 2, 4, 3),
        (1, 0, 2, 4, 3),
    }
    assert landscape.relabelings(np.full(4, 0.25)).shape == (24, 4)
    with pytest.raises(ConfigError, match="'pi'"):
        landscape.relabelings(np.full(4, 0.25), limit=10)


def test_balanced_rank2_optima_are_relabelings_of_each_other():
    # 2+2 balanced at p = 2: the square, any pair of classes opposite; all at the same F
    pi = np.full(4, 0.25)
    square = on_circle(np.array([0.0, np.pi / 2, np.pi, 3 * np.pi / 2]))
    other = on_circle(np.array([0.0, np.pi, np.pi / 2, 3 * np.pi / 2]))
    G, H = square @ square.T, other @ other.T
    assert np.abs(G - H).max() == pytest.approx(1.0)
    assert landscape.max_dev_relabeled(G, H, pi) == pytest.approx(0.0, abs=1e-12)
    # classes of different sizes are not swapped
    assert landscape.max_dev_relabeled(G, H, [0.3, 0.3, 0.2, 0.2]) == pytest.approx(1.0)
