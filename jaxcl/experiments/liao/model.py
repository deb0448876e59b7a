"""Encoder f: single-head attention with W_Q = W_K = W_V = I (or trained, SPEC §2's extension),
then a bilateral-ReLU MLP (SPEC §2)."""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp


def attention(x_NxLxD1):
    """H = softmax(X Xᵀ / sqrt(d1)) X, softmax over each row; X of shape (..., L, d1)."""
    d1 = x_NxLxD1.shape[-1]
    scores_NxLxL = jnp.einsum("...ld,...rd->...lr", x_NxLxD1, x_NxLxD1) / jnp.sqrt(float(d1))
    return jnp.einsum("...lr,...rd->...ld", jax.nn.softmax(scores_NxLxL, axis=-1), x_NxLxD1)


class AttnParams(NamedTuple):
    """The trainable attention matrices of SPEC §2's extension, each (d1, d1), I at init."""

    wq: Any
    wk: Any
    wv: Any

    @classmethod
    def identity(cls, d1: int) -> "AttnParams":
        return cls(jnp.eye(d1), jnp.eye(d1), jnp.eye(d1))


def attention_qkv(x_NxLxD1, attn: AttnParams):
    """H = softmax(X W_Q (X W_K)ᵀ / sqrt(d1)) X W_V, softmax over each row (tokens as rows);
    `attention` is this at W_Q = W_K = W_V = I."""
    d1 = x_NxLxD1.shape[-1]
    q_NxLxD1 = x_NxLxD1 @ attn.wq
    k_NxLxD1 = x_NxLxD1 @ attn.wk
    scores_NxLxL = jnp.einsum("...ld,...rd->...lr", q_NxLxD1, k_NxLxD1) / jnp.sqrt(float(d1))
    return jnp.einsum(
        "...lr,...rd->...ld", jax.nn.softmax(scores_NxLxL, axis=-1), x_NxLxD1 @ attn.wv
    )


def effective_weights(w_MxD1, attn: AttnParams | None):
    """Weights on the attended raw tokens: ⟨w_i, H_r⟩ = ⟨W_V w_i, Σ_r' a_rr' x_r'⟩, so W W_Vᵀ
    (W itself when attention is frozen). The observables' A_ij = ⟨w_i, M_j⟩ read these."""
    return w_MxD1 if attn is None else w_MxD1 @ attn.wv.T


def brelu(s, b):
    """BReLU_b(s) = ReLU(s − b) − ReLU(−s − b); b broadcast on the last axis."""
    return jax.nn.relu(s - b) - jax.nn.relu(-s - b)


def preactivations(w_MxD1, h_NxLxD1, matmul_dtype=jnp.float32):
    """⟨w_i, H_r⟩ for every token: (..., L, d1) -> (..., L, m), as one (N·L, d1) × (d1, m) matmul.

    Operands are cast to `matmul_dtype`; products accumulate in float32.
    """
    d1 = h_NxLxD1.shape[-1]
    h_RxD1 = jnp.reshape(h_NxLxD1, (-1, d1)).astype(matmul_dtype)
    pre_RxM = jax.lax.dot_general(
        h_RxD1,
        w_MxD1.astype(matmul_dtype),
        (((1,), (1,)), ((), ())),
        preferred_element_type=jnp.float32,
    )
    return jnp.reshape(pre_RxM, h_NxLxD1.shape[:-1] + w_MxD1.shape[:1])


# Neuron-major forms, used by the training step. With the neuron axis first, both the forward
# W Hᵀ and the backward dpre H are plain row-major matmuls; the token-major backward contracts
# the leading axis of both operands, which XLA's batched CPU matmul ran ~1.6x slower.
def preactivations_by_neuron(w_MxD1, h_NxLxD1, matmul_dtype=jnp.float32):
    """`preactivations` with the neuron axis first: (..., L, d1) -> (m, ..., L)."""
    d1 = h_NxLxD1.shape[-1]
    h_RxD1 = jnp.reshape(h_NxLxD1, (-1, d1)).astype(matmul_dtype)
    pre_MxR = jax.lax.dot_general(
        w_MxD1.astype(matmul_dtype),
        h_RxD1,
        (((1,), (1,)), ((), ())),
        preferred_element_type=jnp.float32,
    )
    return jnp.reshape(pre_MxR, w_MxD1.shape[:1] + h_NxLxD1.shape[:-1])


def weight_grad_by_neuron(dpre_MxNxL, h_NxLxD1, matmul_dtype=jnp.float32):
    """W-gradient of `preactivations_by_neuron` from dpre (m, ..., L): Σ_r dpre_{i,r} H_r, (m, d1)."""
    m, d1 = dpre_MxNxL.shape[0], h_NxLxD1.shape[-1]
    dpre_MxR = jnp.reshape(dpre_MxNxL, (m, -1)).astype(matmul_dtype)
    h_RxD1 = jnp.reshape(h_NxLxD1, (-1, d1)).astype(matmul_dtype)
    return jax.lax.dot_general(
        dpre_MxR, h_RxD1, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32
    )


def embed(pre_NxLxM, b_M):
    """h_i(X) = Σ_r BReLU_{b_i}(pre_{r,i})  (eq. 3): (..., L, m) -> (..., m)."""
    b_b = jnp.reshape(b_M, (1,) * (pre_NxLxM.ndim - 1) + b_M.shape)
    return brelu(pre_NxLxM, b_b).sum(axis=-2)


def embed_nonneg_bias_by_neuron(pre_MxNxL, b_M):
    """h_i(X) of neuron-major pre-activations (m, N, L) -> (m, N), for b ≥ 0, as Σ_r (s − clip(s, −b, b)).

    Equal to Σ_r BReLU_b(s) when b ≥ 0 (always so in training); XLA on CPU fuses this form
    without materializing broadcasts of the ReLUs' zeros.
    """
    b_Mx1x1 = jnp.reshape(b_M, b_M.shape + (1,) * (pre_MxNxL.ndim - 1))
    return jnp.sum(pre_MxNxL - jnp.clip(pre_MxNxL, -b_Mx1x1, b_Mx1x1), axis=-1)


def encode_attended(w_MxD1, b_M, h_NxLxD1, matmul_dtype=jnp.float32):
    """h_i(X) = Σ_r BReLU_{b_i}(⟨w_i, H_r⟩)  (eq. 3), from precomputed H of shape (..., L, d1)."""
    return embed(preactivations(w_MxD1, h_NxLxD1, matmul_dtype), b_M)


def encode(w, b, X):
    """Embedding f(X) of SPEC §2.

    Args:
      w: neuron weights, shape (m, d1).
      b: biases, shape (m,).
      X: inputs, shape (..., L, d1).

    Returns:
      f(X) of shape (..., m).
    """
    # The public boundary: shapes checked at trace time (free under jit), naming what is off.
    chex.assert_rank(w, 2)
    chex.assert_shape(b, (w.shape[0],))
    chex.assert_axis_dimension(X, -1, w.shape[1])  # X (..., L, d1)
    return encode_attended(w, b, attention(X))


def encode_with(w, b, X, attn: AttnParams | None = None):
    """`encode`, with trained attention matrices when `attn` is given (SPEC §2's extension)."""
    return encode(w, b, X) if attn is None else encode_attended(w, b, attention_qkv(X, attn))


def prune_mask(w_MxD1, n_prune):
    """1 for kept neurons, 0 for the n_prune smallest ‖w_i‖ (SPEC §4; ties broken by index)."""
    m = w_MxD1.shape[0]
    order_M = jnp.argsort(jnp.sum(w_MxD1 * w_MxD1, axis=1))  # stable: ties by index
    rank_M = jnp.zeros(m, jnp.int32).at[order_M].set(jnp.arange(m, dtype=jnp.int32))
    return (rank_M >= n_prune).astype(w_MxD1.dtype)


def weight_prune_mask(w_MxD1, n_prune):
    """1 for kept entries, 0 for the n_prune entries of W with the smallest |w_ik| (unstructured
    magnitude pruning; ties broken by the row-major index, as `prune_mask` breaks them), (m, d1)."""
    n = w_MxD1.size
    order_N = jnp.argsort(jnp.reshape(jnp.abs(w_MxD1), (-1,)))  # stable: ties by index
    rank_N = jnp.zeros(n, jnp.int32).at[order_N].set(jnp.arange(n, dtype=jnp.int32))
    return jnp.reshape(rank_N >= n_prune, w_MxD1.shape).astype(w_MxD1.dtype)
