"""The loss family of SPEC §8 (jaxcl.contrastive_loss) against an independent float64 numpy
version: values, and gradients in s_pos and s_neg against central finite differences."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcl
from jaxcl.errors import ConfigError
from jaxcl.losses import off_diagonal

LOSSES = [
    dict(loss="infonce"),
    dict(loss="balanced", alpha=0.7, beta=1.3),
    dict(loss="balanced", alpha=1.0, beta=0.5),
    dict(loss="decoupled"),
    dict(loss="generalized", psi="log1p", phi="exp"),
    dict(loss="generalized", psi="log1p", phi="softplus"),
    dict(loss="generalized", psi="identity", phi="exp"),
    dict(loss="generalized", psi="identity", phi="softplus"),
]
IDS = ["-".join(map(str, x.values())) for x in LOSSES]


def numpy_loss(s_pos, s_neg, tau, loss="infonce", alpha=1.0, beta=1.0, psi="log1p", phi="exp"):
    """SPEC §8 written out anchor by anchor with math/numpy, float64."""
    out = []
    for sp, sn in zip(s_pos, s_neg):
        if loss in ("infonce", "balanced"):
            a, b = (1.0, 1.0) if loss == "infonce" else (alpha, beta)
            terms = [sp / tau] + [x / tau for x in sn]
            top = max(terms)
            out.append(-a * sp / tau + b * (top + math.log(sum(math.exp(t - top) for t in terms))))
        elif loss == "decoupled":
            top = max(x / tau for x in sn)
            out.append(-sp / tau + top + math.log(sum(math.exp(x / tau - top) for x in sn)))
        else:
            u = [(x - sp) / tau for x in sn]
            total = sum(math.exp(v) if phi == "exp" else math.log1p(math.exp(v)) for v in u)
            out.append(math.log1p(total) if psi == "log1p" else total)
    return float(np.mean(out))


def _fd_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        g[idx] = (f(x + e) - f(x - e)) / (2 * h)
    return g


@pytest.mark.parametrize("K,n", [(1, 1), (3, 2), (5, 7)])
@pytest.mark.parametrize("spec", LOSSES, ids=IDS)
@pytest.mark.numerics
def test_value_and_grad_match_numpy(spec, K, n):
    rng = np.random.default_rng(K * 10 + n)
    s_pos, s_neg, tau = rng.normal(size=K), rng.normal(size=(K, n)) * 1.5, 0.7
    with jax.enable_x64(True):
        fn = lambda p, q: jaxcl.contrastive_loss(p, q, tau, **spec)  # noqa: E731
        value, (g_pos, g_neg) = jax.value_and_grad(fn, argnums=(0, 1))(
            jnp.asarray(s_pos), jnp.asarray(s_neg)
        )
        assert value.dtype == jnp.float64
        want = numpy_loss(s_pos, s_neg, tau, **spec)
        np.testing.assert_allclose(float(value), want, rtol=1e-6)
        fd_pos = _fd_grad(lambda p: numpy_loss(p, s_neg, tau, **spec), s_pos)
        fd_neg = _fd_grad(lambda q: numpy_loss(s_pos, q, tau, **spec), s_neg)
        np.testing.assert_allclose(np.asarray(g_pos), fd_pos, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(np.asarray(g_neg), fd_neg, rtol=1e-6, atol=1e-9)


@pytest.mark.numerics
def test_members_that_are_infonce():
    """ψ = log1p, φ = exp and balanced α = β = 1 are InfoNCE (SPEC §8)."""
    rng = np.random.default_rng(0)
    s_pos, s_neg = rng.normal(size=6), rng.normal(size=(6, 5))
    base = jaxcl.contrastive_loss(s_pos, s_neg, 0.5)
    for spec in (dict(loss="generalized"), dict(loss="balanced", alpha=1.0, beta=1.0)):
        np.testing.assert_allclose(
            jaxcl.contrastive_loss(s_pos, s_neg, 0.5, **spec), base, rtol=1e-6
        )
    # large similarities: the stable forms do not overflow where a naive exp would
    big = jaxcl.contrastive_loss(jnp.zeros(2), jnp.full((2, 3), 200.0), 0.5, loss="generalized")
    assert np.isfinite(float(big)) and abs(float(big) - (400 + math.log(3))) < 1e-3


@pytest.mark.numerics
def test_jittable_and_off_diagonal():
    s = jnp.arange(16.0).reshape(4, 4)
    np.testing.assert_array_equal(
        off_diagonal(s), np.asarray(s)[~np.eye(4, dtype=bool)].reshape(4, 3)
    )
    f = jax.jit(lambda a, b, t: jaxcl.contrastive_loss(a, b, t, loss="decoupled"))
    np.testing.assert_allclose(
        f(jnp.diagonal(s), off_diagonal(s), 2.0),
        jaxcl.contrastive_loss(jnp.diagonal(s), off_diagonal(s), 2.0, loss="decoupled"),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "kw,field",
    [
        (dict(loss="nce"), "'loss'"),
        (dict(loss="generalized", psi="log"), "'loss_psi'"),
        (dict(loss="generalized", phi="relu"), "'loss_phi'"),
        (dict(loss="balanced", alpha=-1.0), "'loss_alpha'"),
    ],
)
def test_bad_names_refused(kw, field):
    with pytest.raises(ConfigError, match=field):
        jaxcl.contrastive_loss(jnp.zeros(2), jnp.zeros((2, 1)), 1.0, **kw)


@pytest.mark.parametrize(
    "kw,field",
    [
        (dict(loss="infonce", loss_alpha=0.5), "'loss_alpha'"),
        (dict(loss="decoupled", loss_phi="softplus"), "'loss_phi'"),
        (dict(loss="bce"), "'loss'"),
    ],
)
def test_config_refuses_parameters_of_another_loss(kw, field):
    """A parameter the chosen loss does not read is refused, not silently ignored."""
    with pytest.raises(ConfigError, match=field):
        jaxcl.Config(**kw)
