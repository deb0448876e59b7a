"""encode and info_nce against the plain-numpy reference, and their W-gradient against float64
central finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcl
from reference import encode as np_encode, info_nce as np_info_nce

SHAPES = [  # (m, d1, L, K)
    (3, 4, 2, 3),
    (7, 10, 4, 5),
    (16, 6, 1, 4),
]


def _inputs(m, d1, L, K, seed):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(m, d1))
    b = np.abs(rng.normal(size=m)) * 0.3
    b[0] = 0.0  # b = 0 (stage 1) covered too
    Xa = rng.normal(size=(K, L, d1))
    Xb = Xa + 0.3 * rng.normal(size=(K, L, d1))
    return w, b, Xa, Xb


def _f32(*xs):
    return [jnp.asarray(x, jnp.float32) for x in xs]


def _rel(a, b):
    return np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b)


@pytest.mark.parametrize("m,d1,L,K", SHAPES)
@pytest.mark.numerics
def test_encode_matches_numpy(m, d1, L, K):
    w, b, Xa, _ = _inputs(m, d1, L, K, 0)
    assert _rel(jaxcl.encode(*_f32(w, b, Xa)), np_encode(w, b, Xa)) < 1e-5
    # arbitrary leading batch axes: (2, K, L, d1) -> (2, K, m)
    X4 = np.stack([Xa, Xa[::-1]])
    got = jax.jit(jaxcl.encode)(*_f32(w, b, X4))
    assert got.shape == (2, K, m)
    assert _rel(got, np_encode(w, b, X4)) < 1e-5


@pytest.mark.parametrize("m,d1,L,K", SHAPES)
@pytest.mark.numerics
def test_info_nce_value_matches_numpy(m, d1, L, K):
    w, b, Xa, Xb = _inputs(m, d1, L, K, 1)
    tau, lam = 1.7, 0.05
    got = jax.jit(jaxcl.info_nce)(*_f32(w, b, Xa, Xb), tau, lam)
    want = np_info_nce(w, b, Xa, Xb, tau, lam)
    assert abs(float(got) - want) / abs(want) < 1e-5


@pytest.mark.parametrize("m,d1,L,K", SHAPES)
@pytest.mark.numerics
@pytest.mark.slow
def test_info_nce_grad_matches_finite_differences(m, d1, L, K):
    w, b, Xa, Xb = _inputs(m, d1, L, K, 2)
    tau, lam = 2.0, 0.1
    fb = np_encode(w, b, Xb)  # StopGrad: the second view's embeddings are constants
    h = 1e-6
    fd = np.zeros_like(w)
    for idx in np.ndindex(*w.shape):
        e = np.zeros_like(w)
        e[idx] = h
        fd[idx] = (
            np_info_nce(w + e, b, Xa, Xb, tau, lam, fb)
            - np_info_nce(w - e, b, Xa, Xb, tau, lam, fb)
        ) / (2 * h)
    got = jax.grad(jaxcl.info_nce)(*_f32(w, b, Xa, Xb), tau, lam)
    assert _rel(got, fd) < 1e-5


@pytest.mark.numerics
@pytest.mark.slow
def test_stopgrad_blocks_second_view():
    """Perturbing how the *second* view depends on W must not enter the gradient."""
    w, b, Xa, Xb = _inputs(4, 5, 2, 3, 3)
    tau, lam = 1.0, 0.0
    g_full = jax.grad(jaxcl.info_nce)(*_f32(w, b, Xa, Xb), tau, lam)

    def loss_both_views(w_):  # gradient through both views: must differ
        fa = jaxcl.encode(w_, jnp.asarray(b, jnp.float32), jnp.asarray(Xa, jnp.float32))
        fb = jaxcl.encode(w_, jnp.asarray(b, jnp.float32), jnp.asarray(Xb, jnp.float32))
        s = fa @ fb.T / tau
        return jnp.mean(jax.nn.logsumexp(s, axis=1) - jnp.diagonal(s))

    g_both = jax.grad(loss_both_views)(jnp.asarray(w, jnp.float32))
    assert _rel(g_full, np.asarray(g_both, np.float64)) > 1e-3


def test_public_boundary_checks_shapes():
    """encode and info_nce refuse mismatched shapes at trace time (chex), naming them."""
    import chex

    w, b = jnp.zeros((4, 6)), jnp.zeros(4)
    with pytest.raises(AssertionError, match="6"):
        jaxcl.encode(w, b, jnp.zeros((2, 3, 5)))  # d1 = 5, not 6
    with pytest.raises(AssertionError):
        jaxcl.encode(w, jnp.zeros(3), jnp.zeros((2, 3, 6)))  # b of 3 neurons, w of 4
    with pytest.raises(AssertionError):
        jaxcl.info_nce(w, b, jnp.zeros((2, 3, 6)), jnp.zeros((3, 3, 6)), 1.0, 0.0)
    f = jax.jit(jaxcl.encode)(w, b, jnp.ones((2, 3, 6)))
    chex.assert_shape(f, (2, 4))
    chex.assert_trees_all_close(f, jaxcl.encode(w, b, jnp.ones((2, 3, 6))))


@pytest.mark.numerics
def test_top1_and_transposed_against_numpy():
    """The written-out pieces of the InfoNCE step: top-1 accuracy by comparisons is
    mean(argmax == k) with argmax's first-maximum rule (ties included), and the gathered
    transpose is the transpose."""
    from jaxcl.experiments.liao.loss import top1, transposed

    rng = np.random.default_rng(3)
    s = rng.integers(0, 3, size=(40, 7, 7)).astype(np.float32)  # many ties on purpose
    s[:, 2, 2] = 2.0  # a row whose diagonal ties the maximum
    s[:, 4, :4] = 2.0  # ... and one where an earlier column ties it
    s[:, 4, 4] = 2.0
    for x in s:
        want = np.mean(np.argmax(x, axis=1) == np.arange(7))
        assert float(top1(jnp.asarray(x))) == pytest.approx(want)
    a = rng.normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(jax.jit(transposed)(jnp.asarray(a))), a.T)
