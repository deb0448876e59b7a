"""Sparse-coding data with majority and minority features, and positive pairs (SPEC §1, Def. 3.1)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry_2x32


def dictionary(key, d: int, d1: int, kind: str):
    """Orthonormal dictionary M (d1, d) and its complement M_perp (d1, d1 - d).

    "qr": Q of a Gaussian (d1, d1) matrix (Haar distributed); "identity": the standard basis
    (statistically equivalent, since Gaussian init and isotropic noise are rotation invariant).
    """
    if kind == "identity":
        basis_D1xD1 = jnp.eye(d1, dtype=jnp.float32)
    else:
        basis_D1xD1 = orthonormalize(jax.random.normal(key, (d1, d1), jnp.float32))
    return basis_D1xD1[:, :d], basis_D1xD1[:, d:]


def orthonormalize(g_NxN):
    """Q of the QR decomposition of g with R's diagonal positive (Gram–Schmidt, applied twice).

    That Q is Haar distributed when g is Gaussian. Written with matmuls instead of LAPACK's
    geqrf: under vmap with several CPU devices, the batched LAPACK kernel waits on the shared
    intra-op thread pool that the other devices' programs occupy, and deadlocks.
    """
    n = g_NxN.shape[1]

    def column(j, q_NxN):
        v_N = g_NxN[:, j]
        for _ in range(2):  # the second pass restores orthogonality lost to rounding
            v_N = v_N - q_NxN @ (q_NxN.T @ v_N)  # columns >= j of q are still zero
        return q_NxN.at[:, j].set(v_N / jnp.linalg.norm(v_N))

    return jax.lax.fori_loop(0, n, column, jnp.zeros_like(g_NxN))


def frequencies(d: int, n_major, eps_max, eps_min):
    """ε_j: the first n_major features are majority (ε_max), the rest minority (ε_min)."""
    return jnp.where(jnp.arange(d) < n_major, eps_max, eps_min).astype(jnp.float32)


def presence_prob(eps_D, C_z, d: int):
    """p_j = min(1, ε_j C_z log log d / d)  (Def. 3.1: Θ(ε_j log log d / d))."""
    return jnp.minimum(1.0, eps_D * C_z * jnp.log(jnp.log(float(d))) / d)


def sample_codes(key, p_D, K: int, feature_scale):
    """Signed feature coefficients per sample, (K, d); zero where the feature is absent."""
    k_present, k_sign = jax.random.split(key)
    d = p_D.shape[0]
    present_KxD = jax.random.uniform(k_present, (K, d)) < p_D[None, :]
    sign_KxD = jnp.where(jax.random.bernoulli(k_sign, 0.5, (K, d)), 1.0, -1.0)
    return jnp.where(present_KxD, sign_KxD * feature_scale, 0.0).astype(jnp.float32)


def standard_normal(key, shape):
    """N(0, 1) draws made as `jax.random.normal` makes them (√2·erfinv of a uniform on (−1, 1)).

    The bits come from Threefry-2x32 with both output words of each hash used, as in JAX's
    original (non-partitionable) scheme; the default partitionable scheme XORs the two words
    into one, doing twice the hashing. The noise is most of the sampling cost, so this matters.
    """
    key_2 = jax.random.key_data(key)
    bits_N = threefry_2x32((key_2[0], key_2[1]), jax.lax.iota(jnp.uint32, math.prod(shape)))
    # 23 random mantissa bits -> a float in [1, 2) -> [0, 1) -> [lo, 1), as jax.random.uniform.
    unit_N = jax.lax.bitcast_convert_type((bits_N >> 9) | jnp.uint32(0x3F800000), jnp.float32) - 1.0
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    u_N = jnp.maximum(lo, unit_N * (1.0 - lo) + lo)
    return jnp.reshape(np.float32(math.sqrt(2.0)) * jax.scipy.special.erfinv(u_N), shape)


def place(key, coef_KxD, M_D1xD, L: int, sigma_xi, identity: bool):
    """One view: each present feature on a uniformly drawn token, plus N(0, σ_ξ² I) noise.

    x^(ℓ) = M z^(ℓ) + ξ^(ℓ) (SPEC §1); returns X of shape (K, L, d1).
    """
    k_pos, k_noise = jax.random.split(key)
    K, d = coef_KxD.shape
    d1 = M_D1xD.shape[0]
    pos_KxD = jax.random.randint(k_pos, (K, d), 0, L)
    z_KxLxD = coef_KxD[:, None, :] * jax.nn.one_hot(pos_KxD, L, axis=1, dtype=jnp.float32)
    if identity:  # M = first d standard basis vectors: no matmul needed
        signal_KxLxD1 = jnp.pad(z_KxLxD, ((0, 0), (0, 0), (0, d1 - d)))
    else:
        signal_KxLxD1 = jnp.einsum("kld,ed->kle", z_KxLxD, M_D1xD)
    return signal_KxLxD1 + sigma_xi * standard_normal(k_noise, (K, L, d1))


def sample_pairs(key, M_D1xD, p_D, L: int, K: int, feature_scale, sigma_xi, identity: bool):
    """K positive pairs (X_k, X'_k): same signed features, redrawn positions, fresh noise.

    Returns (Xa, Xb, coef) with Xa, Xb of shape (K, L, d1) and coef (K, d).
    """
    k_code, k_a, k_b = jax.random.split(key, 3)
    coef_KxD = sample_codes(k_code, p_D, K, feature_scale)
    xa_KxLxD1 = place(k_a, coef_KxD, M_D1xD, L, sigma_xi, identity)
    xb_KxLxD1 = place(k_b, coef_KxD, M_D1xD, L, sigma_xi, identity)
    return xa_KxLxD1, xb_KxLxD1, coef_KxD
