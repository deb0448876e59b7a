"""InfoNCE with StopGrad on the second view and in-batch negatives (eqs. 1–2, SPEC §3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl.model import encode


def nce_from_embeddings(fa_KxM, fb_KxM, tau):
    """mean_k ℓ_k with s_kl = ⟨f(X_k), StopGrad(f(X'_l))⟩ (eq. 1); returns (loss, top-1 accuracy)."""
    s_KxK = fa_KxM @ jax.lax.stop_gradient(fb_KxM).T / tau
    loss = jnp.mean(jax.nn.logsumexp(s_KxK, axis=1) - jnp.diagonal(s_KxK))
    acc = jnp.mean(jnp.argmax(s_KxK, axis=1) == jnp.arange(s_KxK.shape[0]))
    return loss, acc


def nce_and_grad_by_neuron(fa_MxK, fb_MxK, tau):
    """`nce_from_embeddings` of neuron-major embeddings (m, K), with its gradient in fa.

    ∂ℓ/∂s = (softmax_rows(s) − I)/K, so ∂L/∂fa = fb (∂ℓ/∂s)ᵀ/τ (eq. 1; StopGrad on fb).
    Written out so that each matmul reads its operands in their stored layout.
    Returns (loss, top-1 accuracy, ∂loss/∂fa of shape (m, K)).
    """
    K = fa_MxK.shape[1]
    s_KxK = jnp.matmul(fa_MxK.T, fb_MxK) / tau  # the one transpose: (K, m) from (m, K)
    lse_K = jax.nn.logsumexp(s_KxK, axis=1)
    loss = jnp.mean(lse_K - jnp.diagonal(s_KxK))
    acc = jnp.mean(jnp.argmax(s_KxK, axis=1) == jnp.arange(K))
    ds_KxK = (jnp.exp(s_KxK - lse_K[:, None]) - jnp.eye(K, dtype=s_KxK.dtype)) / (K * tau)
    return loss, acc, jnp.matmul(fb_MxK, ds_KxK.T)


def info_nce(w, b, Xa, Xb, tau, lam):
    """The regularized InfoNCE objective L = mean_k ℓ_k + (λ/2)‖W‖_F² (eq. 2).

    Args:
      w: neuron weights, shape (m, d1).
      b: biases, shape (m,).
      Xa: anchors, shape (K, L, d1).
      Xb: second views, shape (K, L, d1); row k is the positive of Xa's row k, and the other
        rows are its negatives. Gradients do not flow through Xb's embeddings (StopGrad).
      tau: temperature τ > 0.
      lam: weight decay λ.

    Returns:
      The scalar loss.
    """
    loss, _ = nce_from_embeddings(encode(w, b, Xa), encode(w, b, Xb), tau)
    return loss + 0.5 * lam * jnp.sum(w * w)
