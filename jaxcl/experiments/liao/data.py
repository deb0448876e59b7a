"""Sparse-coding data with majority and minority features, and positive pairs (SPEC §1, Def. 3.1)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


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


# Counter-based random numbers for the per-step data. Every draw is a pure function of
# (key, counter), so a config's data never depend on how configs are batched or sharded.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 with 20 rounds (Salmon et al., SC'11, the hash behind jax.random).

    Written out round by round: jax lowers its own Threefry on CPU as a 5-iteration loop, each
    iteration a separate pass over memory, while these elementwise ops let XLA fuse all 20
    rounds with whatever consumes the bits (the Gaussian transform below) into one pass.
    Arguments are uint32 and broadcast against each other; returns the two output words.
    """
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))) ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def fold(key_2, a, b):
    """A new (2,) uint32 key: the hash of the counter (a, b) under key.

    jax.random.fold_in(key, n) is this hash at (0, n); jaxcl folds its streams in at a ≥ 1.
    """
    y0, y1 = threefry2x32(key_2[0], key_2[1], jnp.uint32(a), jnp.uint32(b))
    return jnp.stack([y0, y1])


def fold_many(key_2, a, b_N):
    """fold(key, a, b) for each b of b_N, as one hash call: (N, 2) uint32 keys."""
    y0, y1 = threefry2x32(key_2[0], key_2[1], jnp.uint32(a), jnp.asarray(b_N, jnp.uint32))
    return jnp.stack([y0, y1], axis=1)


def words(key_2, tag: int, n: int):
    """Two uint32 arrays of n random words each: the hashes of the counters (i, tag), i < n.

    The written-out hash, which XLA fuses into the words' consumer; words that a larger array
    reads several times go through `stored` first.
    """
    return threefry2x32(key_2[0], key_2[1], jax.lax.iota(jnp.uint32, n), np.uint32(tag))


def stored(words_N):
    """The same uint32 words, computed in one pass and stored, not fused into their readers.

    XLA fuses elementwise producers into their consumers, even into ones that read each element
    many times (the one-hot placement reads each code word once per token and view), and drops
    optimization barriers on CPU before fusing. A reduction is a fusion root that XLA does not
    fuse into what reads it, so the words pass through one: the sum of (words, 0), exact in
    uint32. No control flow, so under vmap and sharding it adds no collective.
    """
    return jnp.sum(jnp.stack([words_N, jnp.zeros_like(words_N)]), axis=0, dtype=words_N.dtype)


def unit(w):
    """Uniform on [0, 1) from a word's top 24 bits (exact in float32)."""
    return (w >> np.uint32(8)).astype(jnp.float32) * np.float32(2.0**-24)


def normal(w):
    """N(0, 1) from a word: √2 erfinv(u), u uniform on the 2²³ bin midpoints of (−1, 1).

    23 bits keep every step exact in float32 (the largest u is 1 − 2⁻²³, never 1); the
    extreme draws are ±5.3σ.
    """
    u = ((w >> np.uint32(9)).astype(jnp.float32) + np.float32(0.5)) * np.float32(2.0**-22) - 1.0
    return np.float32(math.sqrt(2.0)) * jax.scipy.special.erfinv(u)


def standard_normal(key_2, shape):
    """N(0, 1) draws of the given shape, one hash each (`standard_normals` of one key)."""
    return standard_normals(key_2[None], shape)[0]


def standard_normals(keys_Vx2, shape):
    """standard_normal(keys[v], shape) for each of V keys, in one pass: (V, *shape).

    Only the first output word is used: a fused consumer computes the whole hash per element
    either way, and a single output keeps the draws in one pass with no concatenation.
    """
    y0_VxN, _ = threefry2x32(
        keys_Vx2[:, :1],
        keys_Vx2[:, 1:],
        jax.lax.iota(jnp.uint32, math.prod(shape))[None, :],
        np.uint32(0),
    )
    return jnp.reshape(normal(y0_VxN), (keys_Vx2.shape[0], *shape))


def sample_codes(key_2, p_D, K: int, feature_scale, L: int, n_views: int):
    """Signed feature coefficients (K, d), and each feature's token in each of n_views views.

    Feature j is present with probability p_j (to 2⁻²⁴) and has a fair random sign: the top 24
    bits of one word decide presence and its lowest bit the sign, independently. A position is
    a word mod L: exactly uniform when L is a power of two, within L·2⁻³² otherwise.
    All words come from one pass of the written-out hash whose result is stored (`stored`):
    fused into its readers, the hash would be redone for every token of every view that reads
    a word; jax's own Threefry primitive gives the same words but lowers on CPU to a loop of
    five passes and a dozen copies (a third of a d = 16 step).

    Returns (coef (K, d) float32, pos (n_views, K, d) int32).
    """
    d = p_D.shape[0]
    n = K * d
    n_hash = -(-(1 + n_views) * n // 2)  # two words per hash
    y0, y1 = (stored(y) for y in words(key_2, 0, n_hash))
    w = jnp.concatenate([y0, y1])
    w_KxD = jnp.reshape(w[:n], (K, d))
    present_KxD = unit(w_KxD) < p_D[None, :]
    sign_KxD = jnp.where((w_KxD & np.uint32(1)) == 1, 1.0, -1.0)
    coef_KxD = jnp.where(present_KxD, sign_KxD * feature_scale, 0.0).astype(jnp.float32)
    pos_VxKxD = jnp.reshape(w[n : (1 + n_views) * n] % np.uint32(L), (n_views, K, d))
    return coef_KxD, pos_VxKxD.astype(jnp.int32)


def place(key_2, coef_KxD, pos_KxD, M_D1xD, L: int, sigma_xi, identity: bool):
    """One view: feature j of sample k on token pos[k, j], plus N(0, σ_ξ² I) noise.

    x^(ℓ) = M z^(ℓ) + ξ^(ℓ) (SPEC §1); returns X of shape (K, L, d1).
    """
    return place_views(key_2[None], coef_KxD, pos_KxD[None], M_D1xD, L, sigma_xi, identity)[0]


def place_views(keys_Vx2, coef_KxD, pos_VxKxD, M_D1xD, L: int, sigma_xi, identity: bool):
    """`place` for V views at once (view v with key keys[v] and positions pos[v]), each view's
    draws those `place` makes alone, in one pass per part: returns X of shape (V, K, L, d1)."""
    (K, d), d1 = coef_KxD.shape, M_D1xD.shape[0]
    z_VxKxLxD = coef_KxD[None, :, None, :] * jax.nn.one_hot(pos_VxKxD, L, axis=2, dtype=jnp.float32)
    if identity:  # M = first d standard basis vectors: no matmul needed
        signal_VxKxLxD1 = jnp.pad(z_VxKxLxD, ((0, 0),) * 3 + ((0, d1 - d),))
    else:
        signal_VxKxLxD1 = jnp.einsum("vkld,ed->vkle", z_VxKxLxD, M_D1xD)

    return signal_VxKxLxD1 + sigma_xi * standard_normals(keys_Vx2, (K, L, d1))


def sample_views(key_2, M_D1xD, p_D, L: int, K: int, feature_scale, sigma_xi, identity: bool):
    """K positive pairs as one array: X[0] the anchors, X[1] their positives (same signed
    features, redrawn positions, fresh noise). Returns (X (2, K, L, d1), coef (K, d))."""
    keys_3x2 = fold_many(key_2, 1, np.arange(3))  # fold(key, 1, i): codes, view 0, view 1
    coef_KxD, pos_2xKxD = sample_codes(keys_3x2[0], p_D, K, feature_scale, L, 2)
    x_2xKxLxD1 = place_views(keys_3x2[1:], coef_KxD, pos_2xKxD, M_D1xD, L, sigma_xi, identity)
    return x_2xKxLxD1, coef_KxD


def sample_pairs(key_2, M_D1xD, p_D, L: int, K: int, feature_scale, sigma_xi, identity: bool):
    """K positive pairs (X_k, X'_k): same signed features, redrawn positions, fresh noise.

    key_2 is a (2,) uint32 key (e.g. jax.random.PRNGKey(seed)). Returns (Xa, Xb, coef) with
    Xa, Xb of shape (K, L, d1) and coef (K, d).
    """
    x_2xKxLxD1, coef_KxD = sample_views(key_2, M_D1xD, p_D, L, K, feature_scale, sigma_xi, identity)
    return x_2xKxLxD1[0], x_2xKxLxD1[1], coef_KxD
