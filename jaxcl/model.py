"""Encoder f: single-head attention with W_Q = W_K = W_V = I, then a bilateral-ReLU MLP (SPEC §2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def attention(x_NxLxD1):
    """H = softmax(X Xᵀ / sqrt(d1)) X, softmax over each row; X of shape (..., L, d1)."""
    d1 = x_NxLxD1.shape[-1]
    scores_NxLxL = jnp.einsum("...ld,...rd->...lr", x_NxLxD1, x_NxLxD1) / jnp.sqrt(float(d1))
    return jnp.einsum("...lr,...rd->...ld", jax.nn.softmax(scores_NxLxL, axis=-1), x_NxLxD1)


def brelu(s, b):
    """BReLU_b(s) = ReLU(s − b) − ReLU(−s − b); b broadcast on the last axis."""
    return jax.nn.relu(s - b) - jax.nn.relu(-s - b)


def encode_attended(w_MxD1, b_M, h_NxLxD1, matmul_dtype=jnp.float32):
    """h_i(X) = Σ_r BReLU_{b_i}(⟨w_i, H_r⟩)  (eq. 3), from precomputed H of shape (..., L, d1)."""
    pre_NxLxM = jnp.einsum("...ld,md->...lm", h_NxLxD1.astype(matmul_dtype),
                           w_MxD1.astype(matmul_dtype),
                           preferred_element_type=jnp.float32)
    b_b = jnp.reshape(b_M, (1,) * (pre_NxLxM.ndim - 1) + b_M.shape)
    return brelu(pre_NxLxM, b_b).sum(axis=-2)


def encode(w, b, X):
    """Embedding f(X) of SPEC §2.

    Args:
      w: neuron weights, shape (m, d1).
      b: biases, shape (m,).
      X: inputs, shape (..., L, d1).

    Returns:
      f(X) of shape (..., m).
    """
    return encode_attended(w, b, attention(X))
