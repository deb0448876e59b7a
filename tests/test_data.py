"""The sparse-coding sampler against SPEC §1's distribution."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl.data import dictionary, frequencies, orthonormalize, presence_prob, sample_pairs


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
