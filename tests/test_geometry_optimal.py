"""The convex program of SPEC §9 (jaxcl.experiments.geometry.optimal) and
jaxcl.losses.per_anchor_counts, against independent numpy computations."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import losses
from jaxcl.errors import ConfigError
from jaxcl.experiments.geometry import optimal

from reference import count_vectors, random_gram

# every loss of SPEC §8: (loss, keyword arguments)
ALL_LOSSES = [
    ("infonce", {}),
    ("balanced", dict(alpha=0.7, beta=1.3)),
    ("decoupled", {}),
    ("generalized", dict(psi="log1p", phi="exp")),
    ("generalized", dict(psi="log1p", phi="softplus")),
    ("generalized", dict(psi="identity", phi="exp")),
    ("generalized", dict(psi="identity", phi="softplus")),
]
LOSS_IDS = [loss + "-" + "-".join(f"{v}" for v in kw.values()) for loss, kw in ALL_LOSSES]


def ref_loss(s_pos, negs, tau, loss, alpha=1.0, beta=1.0, psi="log1p", phi="exp"):
    """ℓ of SPEC §8 written out with math/numpy on an explicit list of negatives."""
    negs = np.asarray(negs, dtype=np.float64)
    if loss in ("infonce", "balanced"):
        lse = math.log(math.exp(s_pos / tau) + np.exp(negs / tau).sum())
        a, b = (1.0, 1.0) if loss == "infonce" else (alpha, beta)
        return -a * s_pos / tau + b * lse
    if loss == "decoupled":
        return -s_pos / tau + math.log(np.exp(negs / tau).sum())
    u = (negs - s_pos) / tau
    total = (np.exp(u) if phi == "exp" else np.log1p(np.exp(u))).sum()
    return math.log1p(total) if psi == "log1p" else total


def ref_objective(G, pi, k, tau, loss, **kw):
    """F(G) of SPEC §9 by brute force: every n ∈ {0..k}^C with Σ n = k, multinomial weights."""
    F = 0.0
    for n, prob in count_vectors(pi, k):
        for c in range(len(pi)):
            negs = np.repeat(G[c], n)  # n_c' negatives of similarity G_cc' (G_cc = 1 for own class)
            F += pi[c] * prob * ref_loss(1.0, negs, tau, loss, **kw)
    return F


def imbalanced(rho, n_major=2, n_minor=2):
    w = np.concatenate([np.ones(n_major), np.full(n_minor, rho)])
    return w / w.sum()


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss,kw", ALL_LOSSES, ids=LOSS_IDS)
@pytest.mark.numerics
def test_collapsed_objective_matches_brute_force(loss, kw):
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        for C, k in [(2, 1), (2, 4), (3, 1), (3, 2), (3, 4)]:
            pi = rng.uniform(0.1, 1.0, C)
            pi /= pi.sum()
            G = random_gram(rng, C)
            tau = 0.5 if C == 2 else 1.3
            got = float(optimal.collapsed_objective(G, pi, k, tau, loss, **kw))
            want = ref_objective(G, pi, k, tau, loss, **kw)
            assert got == pytest.approx(want, rel=1e-10, abs=1e-12), (C, k)


@pytest.mark.numerics
def test_collapsed_objective_under_jit_with_traced_gram():
    rng = np.random.default_rng(1)
    pi = np.array([0.5, 0.3, 0.2])
    G = random_gram(rng, 3)
    with jax.enable_x64(True):
        jitted = jax.jit(lambda G, pi: optimal.collapsed_objective(G, pi, 4, 0.5, "decoupled"))
        got = float(jitted(jnp.asarray(G), jnp.asarray(pi)))  # π traced too
        grad = np.asarray(jax.grad(lambda G: optimal.collapsed_objective(G, pi, 4, 0.5))(G))
    assert got == pytest.approx(ref_objective(G, pi, 4, 0.5, "decoupled"), rel=1e-10)
    # the gradient of F in G_01 against a central difference of the brute force
    E = np.zeros((3, 3))
    E[0, 1] = 1e-6
    fd = (
        ref_objective(G + E, pi, 4, 0.5, "infonce") - ref_objective(G - E, pi, 4, 0.5, "infonce")
    ) / 2e-6
    assert grad[0, 1] == pytest.approx(fd, rel=1e-6)


@pytest.mark.numerics
def test_multinomial_counts_are_the_compositions():
    counts, log_coef = optimal.multinomial_counts(5, 3)
    assert counts.shape == (optimal.n_count_vectors(5, 3), 3) == (21, 3)
    want = sorted(n for n in itertools.product(range(6), repeat=3) if sum(n) == 5)
    assert sorted(map(tuple, counts.tolist())) == want
    coef = [math.factorial(5) / math.prod(math.factorial(x) for x in n) for n in counts.tolist()]
    np.testing.assert_allclose(np.exp(log_coef), coef, rtol=1e-12)
    pi = np.array([0.6, 0.3, 0.1])
    rows, weights, method = optimal.negative_counts(pi, 5)
    assert method == "enumeration" and weights.sum() == pytest.approx(1.0, abs=1e-12)
    # beyond max_enumerate: fixed Monte Carlo draws of Mult(k, π), the same for the same seed
    rows, weights, method = optimal.negative_counts(pi, 5, max_enumerate=10, n_draws=5_000)
    again, _, _ = optimal.negative_counts(pi, 5, max_enumerate=10, n_draws=5_000)
    assert method == "monte-carlo" and rows.shape == (5_000, 3)
    assert np.array_equal(np.asarray(rows), np.asarray(again))
    assert np.all(np.asarray(rows).sum(axis=1) == 5)
    assert float(np.sum(weights)) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(np.asarray(rows).mean(axis=0), 5 * pi, atol=0.06)


@pytest.mark.parametrize("loss,kw", ALL_LOSSES, ids=LOSS_IDS)
@pytest.mark.numerics
def test_collapsed_objective_is_convex_midpoint(loss, kw):
    rng = np.random.default_rng(2)
    C, k, tau = 4, 4, 0.5
    pi = rng.uniform(0.05, 1.0, C)
    pi /= pi.sum()
    G1 = np.stack([random_gram(rng, C) for _ in range(20)])
    G2 = np.stack([random_gram(rng, C) for _ in range(20)])
    with jax.enable_x64(True):
        F = jax.jit(jax.vmap(lambda G: optimal.collapsed_objective(G, pi, k, tau, loss, **kw)))
        f1, f2, fmid = (np.asarray(F(jnp.asarray(G))) for G in (G1, G2, (G1 + G2) / 2))
    assert np.all(fmid <= (f1 + f2) / 2 + 1e-12), np.max(fmid - (f1 + f2) / 2)


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["infonce", "decoupled"])
@pytest.mark.parametrize("C", [2, 3, 4, 8])
@pytest.mark.numerics
@pytest.mark.slow
def test_balanced_classes_give_the_simplex_etf(C, loss):
    G, info = optimal.optimal_gram(np.full(C, 1.0 / C), 8, 0.5, loss, return_info=True)
    etf = optimal.simplex_etf(C)
    assert np.abs(G - etf).max() <= 1e-4
    assert info["method"] == "enumeration" and info["n_counts"] == math.comb(8 + C - 1, C - 1)
    assert info["kkt"]["min_eig_Z"] >= -1e-8 and info["kkt"]["ZG_max"] <= 1e-8
    # every eigenvalue but one ETF direction is (C / (C − 1)); the ones vector is its kernel
    np.testing.assert_allclose(etf @ np.ones(C), 0.0, atol=1e-12)


@pytest.mark.numerics
@pytest.mark.slow
def test_imbalanced_starts_agree_and_kkt_certifies():
    pi = imbalanced(0.1)
    G, info = optimal.optimal_gram(pi, 8, 0.5, "infonce", n_starts=5, return_info=True)
    assert info["starts_max_dev"] <= 1e-4
    kkt = info["kkt"]
    assert kkt["min_eig_Z"] >= -1e-6 and kkt["ZG_max"] <= 1e-5
    assert kkt["min_eig_Z_scaled"] >= -1e-6 and kkt["ZG_max_scaled"] <= 1e-5
    # the public certificate agrees, and refuses a feasible G that is not optimal (the ETF)
    again = optimal.kkt_residuals(G, pi, 8, 0.5)
    assert again["ZG_max"] == pytest.approx(kkt["ZG_max"], abs=1e-12)
    bad = optimal.kkt_residuals(optimal.simplex_etf(4), pi, 8, 0.5)
    assert bad["ZG_max"] > 1e-3 or bad["min_eig_Z"] < -1e-3
    # G* is feasible and no random feasible G (nor the ETF) does better on the brute-force F
    assert np.allclose(np.diag(G), 1.0) and np.linalg.eigvalsh(G).min() >= -1e-10
    F_star = ref_objective(G, pi, 8, 0.5, "infonce")
    assert F_star == pytest.approx(info["F"], rel=1e-10)
    rng = np.random.default_rng(3)
    for other in [optimal.simplex_etf(4)] + [random_gram(rng, 4) for _ in range(5)]:
        assert ref_objective(other, pi, 8, 0.5, "infonce") > F_star
    # imbalance bends the geometry: the majority pair is pushed further apart than the ETF's
    assert G[0, 1] < -1.0 / 3 - 0.1
    assert jnp.zeros(1).dtype == jnp.float32  # float64 stayed local to the solver


@pytest.mark.numerics
def test_tiny_minorities_converge():
    # plain gradient descent stalls here: the minority rows' gradients scale with π_c
    G, info = optimal.optimal_gram(np.array([0.495, 0.495, 0.005, 0.005]), 8, 0.5, return_info=True)
    assert info["starts_max_dev"] <= 1e-6 and G[2, 3] >= 1 - 1e-4
    assert info["kkt"]["ZG_max_scaled"] <= 1e-8 and info["kkt"]["min_eig_Z_scaled"] >= -1e-8


@pytest.mark.numerics
@pytest.mark.slow
def test_minority_collapse_and_threshold():
    G_small = optimal.optimal_gram(imbalanced(0.005), 8, 0.5)
    assert G_small[2, 3] >= 1 - 1e-4
    G_one = optimal.optimal_gram(imbalanced(1.0), 8, 0.5)
    assert G_one[2, 3] == pytest.approx(-1.0 / 3, abs=1e-4)
    rho = optimal.collapse_threshold(2, 2, 8, 0.5, "infonce")
    assert 0.0 < rho < 1.0
    below = optimal.optimal_gram(imbalanced(0.5 * rho), 8, 0.5, n_starts=2)
    above = optimal.optimal_gram(imbalanced(2.0 * rho), 8, 0.5, n_starts=2)
    assert below[2, 3] >= 1 - 1e-4
    assert above[2, 3] < 1 - 1e-4


@pytest.mark.parametrize("phi", ["exp", "softplus"])
@pytest.mark.numerics
def test_identity_psi_objective_is_linear_in_k(phi):
    # with ψ = identity, F = k Σ_c Σ_c' π_c π_c' φ(G_cc' − 1): k only scales F (so G* and ρ* do
    # not depend on k), and the enumeration must reproduce that pairwise form exactly
    rng = np.random.default_rng(5)
    pi = np.array([0.4, 0.3, 0.2, 0.1])
    G = random_gram(rng, 4)
    u = (G - 1.0) / 0.7
    pairwise = pi @ (np.exp(u) if phi == "exp" else np.log1p(np.exp(u))) @ pi
    with jax.enable_x64(True):
        for k in (1, 3, 7):
            F = float(
                optimal.collapsed_objective(G, pi, k, 0.7, "generalized", psi="identity", phi=phi)
            )
            assert F == pytest.approx(k * pairwise, rel=1e-12)


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda: optimal.optimal_gram([0.5, 0.4], 8, 0.5), "'pi'"),
        (lambda: optimal.optimal_gram([1.2, -0.2], 8, 0.5), "'pi'"),
        (lambda: optimal.optimal_gram([1.0], 8, 0.5), "'pi'"),
        (lambda: optimal.optimal_gram([[0.5, 0.5]], 8, 0.5), "'pi'"),
        (lambda: optimal.optimal_gram([0.5, float("nan")], 8, 0.5), "'pi'"),
        (lambda: optimal.optimal_gram([0.5, 0.5], 0, 0.5), "'k'"),
        (lambda: optimal.optimal_gram([0.5, 0.5], 2.5, 0.5), "'k'"),
        (lambda: optimal.optimal_gram([0.5, 0.5], 4, 0.0), "'tau'"),
        (lambda: optimal.optimal_gram([0.5, 0.5], 4, -1.0), "'tau'"),
        (lambda: optimal.optimal_gram([0.5, 0.5], 4, 0.5, loss="nope"), "'loss'"),
        (lambda: optimal.optimal_gram([0.5, 0.5], 4, 0.5, "generalized", psi="sqrt"), "'loss_psi'"),
        (lambda: optimal.optimal_gram([0.5, 0.5], 4, 0.5, "balanced", beta=-1.0), "'loss_beta'"),
        (lambda: optimal.optimal_gram([0.5, 0.5], 4, 0.5, n_starts=0), "'n_starts'"),
        (lambda: optimal.collapsed_objective(np.eye(2), [0.5, 0.6], 4, 0.5), "'pi'"),
        (lambda: optimal.collapsed_objective(np.eye(2), [0.5, 0.5], 0, 0.5), "'k'"),
        (lambda: optimal.kkt_residuals(np.eye(2), [0.5, 0.5], 4, 0.0), "'tau'"),
        (lambda: optimal.collapse_threshold(2, 1, 8, 0.5), "'n_minor'"),
        (lambda: optimal.collapse_threshold(2, 2, 0, 0.5), "'k'"),
    ],
)
def test_bad_input_is_refused_naming_the_field(call, field):
    with pytest.raises(ConfigError, match=field):
        call()


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss,kw", ALL_LOSSES, ids=LOSS_IDS)
@pytest.mark.numerics
def test_per_anchor_counts_matches_explicit_negatives(loss, kw):
    rng = np.random.default_rng(4)
    C, k, N = 4, 6, 12
    counts = np.zeros((N, C), dtype=np.int32)
    for row in counts:  # rows summing to k; class 3 never occurs, some rows miss more classes
        for c in rng.choice(rng.integers(1, 4), size=k):
            row[c] += 1
    assert np.all(counts.sum(axis=1) == k) and np.any(counts[:, :3] == 0)
    for s_pos, s_vals in [
        (1.0, np.array([0.3, -0.8, 0.95, 0.1])),  # the geometry regime
        (0.2, np.array([2.5, -3.0, 0.7, 40.0])),
    ]:  # s⁺ below negatives; an
        # absent class with a huge value must neither shift nor poison (inf · 0) the sums
        negs = np.stack([np.repeat(s_vals, row) for row in counts])
        with jax.enable_x64(True):
            got = np.asarray(losses.per_anchor_counts(s_pos, s_vals, counts, 0.5, loss, **kw))
            want = np.asarray(losses.per_anchor(np.full(N, s_pos), negs, 0.5, loss, **kw))
            grad = jax.grad(
                lambda v: losses.per_anchor_counts(s_pos, v, counts, 0.5, loss, **kw).sum()
            )(s_vals)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        assert np.all(np.isfinite(np.asarray(grad))) and float(grad[3]) == 0.0
