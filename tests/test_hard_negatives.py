"""Hard negatives (SPEC §10, `hard_beta`): the weighted losses against numpy, their gradients
with constant weights against finite differences and (liao's written-out InfoNCE gradient)
against autodiff, the weighted collapsed objective against a plain enumeration, its convexity,
G*(β) and the constant-weight rest point G°(β), β = 0 bitwise unchanged, bad β refused."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcl
from jaxcl import geometry, losses
from jaxcl.errors import ConfigError
from jaxcl.experiments.geometry import train as geo_train
from jaxcl.experiments.geometry.config import Config as GeoConfig
from jaxcl.experiments.liao import loss as liao_loss
from jaxcl.experiments.liao.config import Config as LiaoConfig

from reference import count_vectors, random_gram

LOSSES = [
    dict(loss="infonce"),
    dict(loss="balanced", alpha=0.7, beta=1.3),
    dict(loss="decoupled"),
    dict(loss="generalized", psi="log1p", phi="exp"),
    dict(loss="generalized", psi="log1p", phi="softplus"),
    dict(loss="generalized", psi="identity", phi="exp"),
    dict(loss="generalized", psi="identity", phi="softplus"),
]
IDS = ["-".join(map(str, x.values())) for x in LOSSES]


def numpy_ell(
    sp, negs, tau, hard_beta, loss="infonce", alpha=1.0, beta=1.0, psi="log1p", phi="exp", v=None
):
    """ℓ of SPEC §8 with SPEC §10's weights v_i = n e^{β s_i} / Σ_l e^{β s_l} (or given v)."""
    negs = np.asarray(negs, np.float64)
    if v is None:
        e = np.exp(hard_beta * negs)
        v = len(negs) * e / e.sum()
    if loss in ("infonce", "balanced"):
        a, b = (1.0, 1.0) if loss == "infonce" else (alpha, beta)
        return -a * sp / tau + b * math.log(math.exp(sp / tau) + (v * np.exp(negs / tau)).sum())
    if loss == "decoupled":
        return -sp / tau + math.log((v * np.exp(negs / tau)).sum())
    u = (negs - sp) / tau
    total = (v * (np.exp(u) if phi == "exp" else np.log1p(np.exp(u)))).sum()
    return math.log1p(total) if psi == "log1p" else total


@pytest.mark.parametrize("spec", LOSSES, ids=IDS)
@pytest.mark.numerics
def test_weighted_loss_and_constant_weight_gradient_against_numpy(spec):
    rng = np.random.default_rng(0)
    K, n, tau, hb = 3, 5, 0.7, 1.7
    s_pos, s_neg = rng.normal(size=K), rng.normal(size=(K, n))
    with jax.enable_x64(True):
        fn = lambda p, q: jaxcl.contrastive_loss(p, q, tau, hard_beta=hb, **spec)  # noqa: E731
        value, (g_pos, g_neg) = jax.value_and_grad(fn, argnums=(0, 1))(
            jnp.asarray(s_pos), jnp.asarray(s_neg)
        )
    want = np.mean([numpy_ell(a, b, tau, hb, **spec) for a, b in zip(s_pos, s_neg)])
    assert float(value) == pytest.approx(want, rel=1e-12)
    # the weights are constants in the gradient: central differences with v frozen at s_neg
    e = np.exp(hb * s_neg)
    v = n * e / e.sum(axis=1, keepdims=True)
    h = 1e-6
    for k, i in [(0, 0), (1, 3), (2, 4)]:

        def f(x, k=k, i=i):
            q = s_neg[k].copy()
            q[i] = x
            return numpy_ell(s_pos[k], q, tau, hb, v=v[k], **spec) / K

        fd = (f(s_neg[k, i] + h) - f(s_neg[k, i] - h)) / (2 * h)
        assert float(g_neg[k, i]) == pytest.approx(fd, rel=1e-6, abs=1e-9)
    fd_pos = (
        numpy_ell(s_pos[1] + h, s_neg[1], tau, hb, v=v[1], **spec)
        - numpy_ell(s_pos[1] - h, s_neg[1], tau, hb, v=v[1], **spec)
    ) / (2 * h * K)
    assert float(g_pos[1]) == pytest.approx(fd_pos, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("spec", LOSSES, ids=IDS)
@pytest.mark.numerics
def test_weighted_counts_match_explicit_negatives(spec):
    counts = np.array([[2, 0, 1, 3], [0, 4, 0, 2], [6, 0, 0, 0]], np.int32)
    s_vals = np.array([0.9, -0.6, 0.2, -0.1])
    negs = [np.repeat(s_vals, row) for row in counts]
    with jax.enable_x64(True):
        got = np.asarray(losses.per_anchor_counts(1.0, s_vals, counts, 0.5, hard_beta=2.0, **spec))
    want = [numpy_ell(1.0, x, 0.5, 2.0, **spec) for x in negs]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def ref_objective(G, pi, k, tau, hard_beta, **kw):
    """F(G) under SPEC §10's weights by brute force: every count vector with Σ n = k, its
    multinomial probability, and the weighted ℓ of the explicit negatives."""
    F = 0.0
    for n, prob in count_vectors(pi, k):
        for c in range(len(pi)):
            F += pi[c] * prob * numpy_ell(1.0, np.repeat(G[c], n), tau, hard_beta, **kw)
    return F


@pytest.mark.parametrize("spec", LOSSES, ids=IDS)
@pytest.mark.numerics
def test_weighted_collapsed_objective_matches_enumeration(spec):
    rng = np.random.default_rng(2)
    pi = np.array([0.5, 0.3, 0.2])
    G = random_gram(rng, 3)
    with jax.enable_x64(True):
        got = float(geometry.collapsed_objective(G, pi, 4, 0.6, hard_beta=1.5, **spec))
    assert got == pytest.approx(ref_objective(G, pi, 4, 0.6, 1.5, **spec), rel=1e-10)


def _midpoint_violations(hard_beta, spec, n_pairs=200):
    rng = np.random.default_rng(3)
    C, k, tau, pi = 4, 8, 0.5, np.array([0.4, 0.4, 0.1, 0.1])
    G1 = np.stack([random_gram(rng, C) for _ in range(n_pairs)])
    G2 = np.stack([random_gram(rng, C) for _ in range(n_pairs)])
    with jax.enable_x64(True):
        F = jax.jit(
            jax.vmap(
                lambda G: geometry.collapsed_objective(G, pi, k, tau, hard_beta=hard_beta, **spec)
            )
        )
        f1, f2, fm = (np.asarray(F(jnp.asarray(G))) for G in (G1, G2, (G1 + G2) / 2))
    return int(np.sum(fm > (f1 + f2) / 2 + 1e-12))


@pytest.mark.parametrize("spec", [LOSSES[0], LOSSES[2], LOSSES[6]], ids=[IDS[0], IDS[2], IDS[6]])
@pytest.mark.numerics
def test_convexity_midpoint_holds_at_small_beta_and_fails_at_large(spec):
    # documented in docs/geometry.md: no violation in these pairs at β ≤ 1, violations at β = 4
    assert _midpoint_violations(1.0, spec) == 0
    assert _midpoint_violations(4.0, spec) > 0


@pytest.mark.numerics
@pytest.mark.slow
def test_minimizer_under_the_weighting_reports_its_starts():
    pi = np.array([0.4, 0.4, 0.1, 0.1])
    G, info = geometry.optimal_gram(pi, 3, 0.5, hard_beta=1.0, n_starts=4, return_info=True)
    assert len(info["starts_F"]) == 4 and info["F"] == min(info["starts_F"])
    F_star = ref_objective(G, pi, 3, 0.5, 1.0)
    assert F_star == pytest.approx(info["F"], rel=1e-10)
    rng = np.random.default_rng(4)
    for other in [geometry.simplex_etf(4)] + [random_gram(rng, 4) for _ in range(4)]:
        assert ref_objective(other, pi, 3, 0.5, 1.0) > F_star


@pytest.mark.numerics
@pytest.mark.slow
def test_rest_point_of_constant_weight_training():
    pi, k, tau, hb = np.array([0.4, 0.4, 0.1, 0.1]), 3, 0.5, 1.0
    G, info = geometry.hard_equilibrium(pi, k, tau, hb, return_info=True)
    assert info["converged"] and info["max_dev_from_minimizer"] > 0.05

    # G° minimizes F with the weights frozen at G° (numpy, weights from G° held fixed): the
    # SDP certificate on a central-difference gradient, and no random Gram matrix does better
    def frozen(Gp):
        F = 0.0
        for n, prob in count_vectors(pi, k):
            for c in range(4):
                e = np.repeat(np.exp(hb * G[c]), n)
                F += pi[c] * prob * numpy_ell(1.0, np.repeat(Gp[c], n), tau, hb, v=k * e / e.sum())
        return F

    grad = np.zeros((4, 4))
    for i, j in itertools.product(range(4), repeat=2):
        E = np.zeros((4, 4))
        E[i, j] = 1e-6
        grad[i, j] = (frozen(G + E) - frozen(G - E)) / 2e-6
    from jaxcl.experiments.geometry.minimizer import kkt_certificate

    kkt = kkt_certificate(grad, G, pi)
    assert kkt["min_eig_Z"] >= -1e-7 and kkt["ZG_max"] <= 1e-6
    rng = np.random.default_rng(5)
    base = frozen(G)
    assert all(frozen(random_gram(rng, 4)) > base for _ in range(3))
    # balanced classes: the simplex ETF for every β (symmetry), and β = 0 is G*
    np.testing.assert_allclose(
        geometry.hard_equilibrium(np.full(4, 0.25), k, tau, 4.0), geometry.simplex_etf(4), atol=1e-6
    )
    np.testing.assert_array_equal(
        geometry.hard_equilibrium(pi, k, tau, 0.0), geometry.optimal_gram(pi, k, tau)
    )


# ---------------------------------------------------------------------------------------------
# liao: the written-out InfoNCE gradient under hard negatives


def _liao_embeddings(seed=0, m=6, K=5):
    rng = np.random.default_rng(seed)
    return (
        jnp.asarray(rng.normal(size=(m, K)), jnp.float32),
        jnp.asarray(rng.normal(size=(m, K)), jnp.float32),
    )


@pytest.mark.parametrize("hb", [0.5, 2.0])
@pytest.mark.numerics
@pytest.mark.slow
def test_liao_hard_infonce_gradient_against_autodiff(hb):
    fa, fb = _liao_embeddings()
    tau = 0.8
    loss, acc, grad = jax.jit(liao_loss.nce_and_grad_by_neuron)(fa, fb, tau, hb)

    def auto(fa):  # SPEC §10 through the shared loss family (stop_gradient weights), autodiff
        s = fa.T @ jax.lax.stop_gradient(fb)
        return jnp.mean(
            losses.per_anchor(jnp.diagonal(s), losses.off_diagonal(s), tau, hard_beta=hb)
        )

    want, want_grad = jax.value_and_grad(auto)(fa)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6)
    # and the weighting matters: the uniform gradient differs
    _, _, plain = liao_loss.nce_and_grad_by_neuron(fa, fb, tau)
    assert float(jnp.max(jnp.abs(plain - grad))) > 1e-3
    # the other losses take the same weights by autodiff through per_anchor
    _, _, g_bal = liao_loss.loss_and_grad_by_neuron(fa, fb, tau, "balanced", 1.0, 1.0, hard_beta=hb)
    np.testing.assert_allclose(g_bal, want_grad, rtol=1e-4, atol=1e-6)


def _plain_nce_and_grad(fa_MxK, fb_MxK, tau):
    """InfoNCE over neurons with uniform negatives and its written-out gradient in f(X): the
    formula liao.loss.nce_and_grad_by_neuron takes at β = 0, without any weighting code."""
    K = fa_MxK.shape[1]
    s_KxK = jnp.matmul(liao_loss.transposed(fa_MxK), fb_MxK) / tau
    lse_K = jax.nn.logsumexp(s_KxK, axis=1)
    loss = jnp.mean(lse_K - jnp.diagonal(s_KxK))
    acc = liao_loss.top1(s_KxK)
    ds_KxK = (jnp.exp(s_KxK - lse_K[:, None]) - jnp.eye(K, dtype=s_KxK.dtype)) / (K * tau)
    return loss, acc, jnp.matmul(fb_MxK, ds_KxK.T)


@pytest.mark.numerics
def test_beta_zero_is_bitwise_the_uniform_infonce_step():
    fa, fb = _liao_embeddings(1, m=9, K=16)
    got = jax.jit(functools.partial(liao_loss.loss_and_grad_by_neuron, hard_beta=0.0))(fa, fb, 0.6)
    plain = jax.jit(_plain_nce_and_grad)(fa, fb, 0.6)
    for a, b in zip(got, plain):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the weighted path at a traced β = 0 agrees to float32 rounding
    traced = jax.jit(liao_loss.nce_and_grad_by_neuron)(fa, fb, 0.6, jnp.float32(0.0))
    np.testing.assert_allclose(traced[2], plain[2], rtol=1e-5, atol=1e-7)


# Literal config ids. At β = 0 (written out or left at its default) they are those that existing
# run directories carry (final/<id>.json); any other β gets an id of its own.
CONFIG_IDS = [  # (config class, id at β = 0, id at β = 1)
    (LiaoConfig, "d9_m27_r0.25_s0_73807afa42", "d9_m27_r0.25_s0_e79b9406af"),
    (GeoConfig, "geo_C2+2_r1_k8_s0_5515316ae7", "geo_C2+2_r1_k8_b1_s0_2b7b73f6a6"),
]


@pytest.mark.parametrize("cls, at_zero, at_one", CONFIG_IDS, ids=["liao", "geometry"])
def test_beta_zero_keeps_the_config_ids_of_existing_run_directories(cls, at_zero, at_one):
    assert cls().config_id == at_zero
    assert cls(hard_beta=0.0).config_id == at_zero
    assert cls(hard_beta=1.0).config_id == at_one


@pytest.mark.numerics
@pytest.mark.slow
def test_geometry_step_with_hard_negatives_is_gradient_descent_on_the_public_loss():
    c = GeoConfig(
        n_major_classes=2,
        n_minor_classes=2,
        samples_major=5,
        ratio=0.4,
        p=4,
        batch=16,
        negatives=3,
        steps=20,
        log_every=10,
        optimizer="sgd",
        hard_beta=2.0,
        opt_starts=1,
    )
    st, hp = c.static(), c.hparams()
    s0 = geo_train.init(st, hp)
    rows = geo_train.sample(st, hp, jax.random.fold_in(jax.random.fold_in(s0.key, 2), 0))

    def plain(u):
        z = u / jnp.linalg.norm(u, axis=1, keepdims=True)
        a, pos, neg = rows
        return jaxcl.contrastive_loss(
            jnp.sum(z[a] * z[pos], axis=1),
            jnp.einsum("bp,bkp->bk", z[a], z[neg]),
            c.tau,
            hard_beta=2.0,
        )

    s1, loss = geo_train.step(st, hp, s0)
    np.testing.assert_allclose(loss, plain(s0.u), rtol=1e-5)
    np.testing.assert_allclose(s1.u, s0.u - c.lr * jax.grad(plain)(s0.u), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), "1", True])
def test_bad_hard_beta_is_refused_naming_the_field(bad):
    for call in (
        lambda: GeoConfig(hard_beta=bad),
        lambda: LiaoConfig(hard_beta=bad),
        lambda: jaxcl.contrastive_loss(jnp.zeros(2), jnp.zeros((2, 3)), 0.5, hard_beta=bad),
        lambda: geometry.optimal_gram([0.5, 0.5], 4, 0.5, hard_beta=bad),
        lambda: geometry.collapsed_objective(np.eye(2), [0.5, 0.5], 4, 0.5, hard_beta=bad),
    ):
        with pytest.raises(ConfigError, match="'hard_beta'"):
            call()
