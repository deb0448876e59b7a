"""Liao's objective: InfoNCE with StopGrad on the second view and in-batch negatives (eqs. 1–2,
SPEC §3), and any loss of SPEC §8's family on the same similarities."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxcl import losses
from jaxcl.experiments.liao.model import encode


def nce_from_embeddings(fa_KxM, fb_KxM, tau):
    """mean_k ℓ_k with s_kl = ⟨f(X_k), StopGrad(f(X'_l))⟩ (eq. 1); returns (loss, top-1 accuracy)."""
    s_KxK = fa_KxM @ jax.lax.stop_gradient(fb_KxM).T / tau
    loss = jnp.mean(jax.nn.logsumexp(s_KxK, axis=1) - jnp.diagonal(s_KxK))
    acc = jnp.mean(jnp.argmax(s_KxK, axis=1) == jnp.arange(s_KxK.shape[0]))
    return loss, acc


def transposed(a_MxK):
    """aᵀ, stored row-major: a gather that XLA does not fold into the matmul that reads it.

    XLA folds a plain transpose into the dot's dimension numbers, and XLA:CPU runs a dot of a
    transposed left operand as its generic dot, not YNNPACK's: at d = 32, K = 64 that took
    56 µs per step against 20 + 27 µs for this gather and YNNPACK's matmul (XLA's trace,
    benchmarks/profile_step.py and the same on the previous commit).
    """
    m, K = a_MxK.shape
    idx_KxM = jax.lax.broadcasted_iota(jnp.int32, (K, m), 1) * K + jax.lax.broadcasted_iota(
        jnp.int32, (K, m), 0
    )
    return jnp.reshape(a_MxK, (-1,))[idx_KxM]


def top1(s_KxK):
    """Mean over rows k of [argmax_l s_kl == k] (the first maximum, as jnp.argmax picks it),
    written as comparisons: row k is right when s_kk beats every s_kl before it and ties or
    beats every one after it. (XLA:CPU's argmax, an index-carrying reduction, took 14-38 µs
    per step at d = 16 in XLA's trace.) A row holding NaN counts as wrong."""
    K = s_KxK.shape[0]
    diag_Kx1 = jnp.diagonal(s_KxK)[:, None]
    before_KxK = jnp.arange(K)[None, :] < jnp.arange(K)[:, None]
    ok_KxK = jnp.where(before_KxK, s_KxK < diag_Kx1, s_KxK <= diag_Kx1)
    return jnp.mean(jnp.all(ok_KxK, axis=1).astype(jnp.float32))


def nce_and_grad_by_neuron(fa_MxK, fb_MxK, tau, hard_beta=0.0):
    """`nce_from_embeddings` of neuron-major embeddings (m, K), with its gradient in fa.

    ∂ℓ/∂s = (softmax_rows(s) − I)/K, so ∂L/∂fa = fb (∂ℓ/∂s)ᵀ/τ (eq. 1; StopGrad on fb).
    Written out so that each matmul reads its operands in their stored layout.

    With hard_beta = β (SPEC §10) row k's negatives l ≠ k carry the weights
    v_kl = (K − 1) e^{β s_kl} / Σ_{l'≠k} e^{β s_kl'} on the raw similarities, constant in the
    gradient: ℓ_k = log(e^{s_kk/τ} + Σ_{l≠k} v_kl e^{s_kl/τ}) − s_kk/τ, whose ∂ℓ/∂s is the same
    expression with the softmax of s/τ + log v (log v_kk = 0). A concrete 0 runs the code above
    unchanged.
    Returns (loss, top-1 accuracy, ∂loss/∂fa of shape (m, K)).
    """
    K = fa_MxK.shape[1]
    raw_KxK = jnp.matmul(transposed(fa_MxK), fb_MxK)  # the one transpose: (K, m)
    s_KxK = raw_KxK / tau
    logits_KxK = s_KxK
    if not losses.hard_off(hard_beta):
        logits_KxK = s_KxK + hard_log_weights_in_batch(raw_KxK, hard_beta)
    lse_K = jax.nn.logsumexp(logits_KxK, axis=1)
    loss = jnp.mean(lse_K - jnp.diagonal(s_KxK))
    acc = top1(s_KxK)
    ds_KxK = (jnp.exp(logits_KxK - lse_K[:, None]) - jnp.eye(K, dtype=s_KxK.dtype)) / (K * tau)
    return loss, acc, jnp.matmul(fb_MxK, ds_KxK.T)


def hard_log_weights_in_batch(s_KxK, hard_beta):
    """log v_kl of SPEC §10 for in-batch negatives (l ≠ k) of raw similarities s, and 0 on the
    diagonal (the positive is not weighted); constants in the gradient. Shape (K, K)."""
    K = s_KxK.shape[0]
    eye = jnp.eye(K, dtype=bool)
    bs_KxK = jnp.where(eye, -jnp.inf, hard_beta * jax.lax.stop_gradient(s_KxK))
    lv_KxK = (
        jnp.log(jnp.asarray(K - 1, s_KxK.dtype))
        + bs_KxK
        - jax.nn.logsumexp(bs_KxK, axis=1, keepdims=True)
    )
    return jnp.where(eye, 0.0, lv_KxK)


def loss_and_grad_by_neuron(
    fa_MxK,
    fb_MxK,
    tau,
    loss: str = "infonce",
    alpha=1.0,
    beta=1.0,
    psi: str = "log1p",
    phi: str = "exp",
    hard_beta=0.0,
):
    """The chosen loss of SPEC §8 on s_kl = ⟨fa_k, StopGrad(fb_l)⟩ (s⁺ = s_kk, negatives s_kl,
    l ≠ k), with its gradient in the neuron-major anchor embeddings fa (m, K).

    InfoNCE takes the written-out gradient of `nce_and_grad_by_neuron`; the other losses are
    differentiated by autodiff through this cheap part (the embeddings' K × K similarities).
    hard_beta: SPEC §10's hard-negative weights (a concrete 0: uniform, no weights computed).
    Returns (loss, top-1 accuracy, ∂loss/∂fa of shape (m, K)).
    """
    if loss == "infonce":
        return nce_and_grad_by_neuron(fa_MxK, fb_MxK, tau, hard_beta)
    fb_MxK = jax.lax.stop_gradient(fb_MxK)

    def mean_loss(fa_MxK):
        s_KxK = jnp.matmul(fa_MxK.T, fb_MxK)
        ell_K = losses.per_anchor(
            jnp.diagonal(s_KxK),
            losses.off_diagonal(s_KxK),
            tau,
            loss,
            alpha,
            beta,
            psi,
            phi,
            hard_beta,
        )
        return jnp.mean(ell_K), s_KxK

    (value, s_KxK), grad_MxK = jax.value_and_grad(mean_loss, has_aux=True)(fa_MxK)
    return value, top1(s_KxK), grad_MxK


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
    chex.assert_rank(Xa, 3)
    chex.assert_equal_shape([Xa, Xb])  # row k of Xb is the positive of row k of Xa
    loss, _ = nce_from_embeddings(encode(w, b, Xa), encode(w, b, Xb), tau)
    return loss + 0.5 * lam * jnp.sum(w * w)
