"""The sparse-coding sampler against SPEC §1's distribution."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl.experiments.liao.data import (
    dictionary,
    frequencies,
    orthonormalize,
    presence_prob,
    sample_pairs,
)

pytestmark = pytest.mark.numerics  # every test here compares numbers with a reference


@pytest.mark.parametrize("kind", ["qr", "identity"])
def test_dictionary_orthonormal_with_complement(kind):
    M, Mp = dictionary(jax.random.PRNGKey(0), 6, 13, kind)
    Q = np.concatenate([np.asarray(M), np.asarray(Mp)], axis=1)
    assert M.shape == (13, 6) and Mp.shape == (13, 7)
    np.testing.assert_allclose(Q.T @ Q, np.eye(13), atol=1e-5)


def test_frequencies_and_presence_probability():
    eps = np.asarray(frequencies(9, 5, 1.0, 0.25))
    np.testing.assert_allclose(eps, [1] * 5 + [0.25] * 4)
    p = np.asarray(presence_prob(jnp.asarray(eps), 4.0, 9))
    np.testing.assert_allclose(p, np.minimum(1, eps * 4 * math.log(math.log(9)) / 9), rtol=1e-6)


@pytest.mark.slow
def test_pairs_share_signed_features_and_have_the_stated_statistics():
    d, d1, L, K = 6, 12, 5, 4000
    M, Mp = dictionary(jax.random.PRNGKey(1), d, d1, "qr")
    p = jnp.asarray([0.5, 0.5, 0.5, 0.1, 0.1, 0.1])
    sigma, scale = 0.05, 1.5
    xa, xb, coef = sample_pairs(jax.random.PRNGKey(2), M, p, L, K, scale, sigma, False)
    xa, xb, coef, M, Mp = map(np.asarray, (xa, xb, coef, M, Mp))
    # presence frequency within 4 standard errors of p_j; signs balanced; magnitude exact
    present = coef != 0
    se = np.sqrt(np.asarray(p) * (1 - np.asarray(p)) / K)
    assert np.all(np.abs(present.mean(0) - np.asarray(p)) < 4 * se)
    assert np.all(np.abs(coef[present]) == scale)
    assert abs(np.mean(coef[present] > 0) - 0.5) < 4 * 0.5 / np.sqrt(present.sum())
    # each view: Σ_ℓ Mᵀx^(ℓ) recovers the codes up to noise (same support and sign in both views)
    for x in (xa, xb):
        zsum = (x @ M).sum(axis=1)
        assert np.max(np.abs(zsum - coef)) < 10 * sigma * np.sqrt(L)
    # a present feature sits on exactly one token; positions independent across the views
    za, zb = xa @ M, xb @ M
    on_a = np.abs(za) > scale / 2
    assert np.all(on_a.sum(axis=1) == present)
    same_pos = (np.argmax(np.abs(za), 1) == np.argmax(np.abs(zb), 1))[present]
    assert abs(same_pos.mean() - 1 / L) < 0.05
    # noise: isotropic N(0, σ²) in the complement
    noise = (xa @ Mp).ravel()
    assert abs(noise.std() / sigma - 1) < 0.03


def test_qr_dictionary_is_the_sign_fixed_qr_factor():
    """Gram–Schmidt gives LAPACK's Q with R's diagonal made positive (the Haar-distributed factor)."""
    g = jax.random.normal(jax.random.PRNGKey(3), (24, 24), jnp.float32)
    q, r = np.linalg.qr(np.asarray(g, np.float64))
    q = q * np.sign(np.diagonal(r))[None, :]
    np.testing.assert_allclose(np.asarray(orthonormalize(g)), q, atol=2e-5)


def test_threefry_known_answers_and_jax_agreement():
    """The written-out hash is Threefry-2x32-20: Random123's known-answer vectors, and bitwise
    jax's own primitive on many counters."""
    from jax.extend.random import threefry2x32_p

    from jaxcl.experiments.liao.data import threefry2x32

    u = lambda *v: [jnp.uint32(x) for x in v]  # noqa: E731
    for key, ctr, want in [
        ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF,) * 2, (0xFFFFFFFF,) * 2, (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ]:
        got = threefry2x32(*u(*key), *u(*ctr))
        assert [int(g) for g in got] == list(want)
    x0 = jnp.arange(1000, dtype=jnp.uint32)
    x1 = x0 * np.uint32(2654435761)
    k0, k1 = (jnp.full((1000,), v, jnp.uint32) for v in (0xDEADBEEF, 12345))
    mine = jax.jit(threefry2x32)(k0, k1, x0, x1)
    ref = threefry2x32_p.bind(k0, k1, x0, x1)
    for a, b in zip(mine, ref):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_positions_uniform_for_any_L_and_noise_standard_normal():
    from jaxcl.experiments.liao.data import sample_codes, standard_normal

    K, d, L = 20000, 3, 3  # L not a power of two
    _, pos = sample_codes(jax.random.PRNGKey(5), jnp.full((d,), 0.5), K, 1.0, L, 2)
    counts = np.bincount(np.asarray(pos).ravel(), minlength=L)
    n = counts.sum()
    chi2 = np.sum((counts - n / L) ** 2 / (n / L))
    assert chi2 < 13.8  # chi-square, 2 dof, p = 0.001
    # the two views' positions are independent: equal with probability 1/L
    same = np.mean(np.asarray(pos[0]) == np.asarray(pos[1]))
    assert abs(same - 1 / L) < 4 * np.sqrt((1 / L) * (1 - 1 / L) / (K * d))
    z = np.sort(np.asarray(standard_normal(jax.random.PRNGKey(6), (200, 500))).ravel())
    assert np.all(np.isfinite(z)) and np.max(np.abs(z)) < 5.4
    # Kolmogorov–Smirnov distance to Φ, against its 0.1% critical value 1.95/sqrt(n)
    phi = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    ecdf = np.arange(1, z.size + 1) / z.size
    assert np.max(np.abs(ecdf - phi)) < 1.95 / np.sqrt(z.size)


@pytest.mark.slow
def test_both_views_in_one_pass_are_the_per_view_draws():
    """sample_views draws both views in one pass; each view is what `place` draws alone with
    its own folded key (counter-based: nothing depends on drawing them together), and
    `stored` and `fold_many` are the identity and `fold`."""
    from jaxcl.experiments.liao.data import (
        fold,
        fold_many,
        place,
        sample_codes,
        sample_views,
        standard_normal,
        stored,
    )

    key = jax.random.PRNGKey(9)
    M, _ = dictionary(jax.random.PRNGKey(1), 8, 16, "qr")
    p = presence_prob(frequencies(8, 4, 1.0, 0.25), 3.0, 8)
    x, coef = jax.jit(lambda k: sample_views(k, M, p, 4, 32, 1.5, 0.3, False))(key)
    coef1, pos = sample_codes(fold(key, 1, 0), p, 32, 1.5, 4, 2)
    np.testing.assert_array_equal(np.asarray(coef), np.asarray(coef1))
    for v in range(2):
        one = jax.jit(lambda k, c, q: place(k, c, q, M, 4, 0.3, False))(
            fold(key, 1, 1 + v), coef1, pos[v]
        )
        np.testing.assert_array_equal(np.asarray(x[v]), np.asarray(one))
        # and both are M z + σ ξ with ξ the view key's standard_normal draws (numpy one-hot z)
        z = np.asarray(coef1)[:, None, :] * (
            np.asarray(pos[v])[:, None, :] == np.arange(4)[None, :, None]
        )
        xi = np.asarray(standard_normal(fold(key, 1, 1 + v), (32, 4, 16)))
        np.testing.assert_allclose(
            np.asarray(x[v]), z @ np.asarray(M).T + 0.3 * xi, rtol=1e-5, atol=1e-6
        )
    np.testing.assert_array_equal(
        np.asarray(fold_many(key, 1, np.arange(3))),
        np.stack([np.asarray(fold(key, 1, i)) for i in range(3)]),
    )
    w = jnp.asarray(np.random.default_rng(0).integers(0, 2**32, 100, dtype=np.uint64), jnp.uint32)
    np.testing.assert_array_equal(np.asarray(jax.jit(stored)(w)), np.asarray(w))
