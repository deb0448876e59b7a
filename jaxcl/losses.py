"""The contrastive loss family of SPEC §8: InfoNCE, Lee's balanced loss, the decoupled loss and
the generalized ψ(Σ φ(s_i − s⁺)) family of Nguyen et al., on raw similarities.

Every loss here takes an anchor's positive similarity s⁺ and its n negative similarities
s_1 … s_n (not yet divided by τ) and is shared by every experiment: Liao's model (SPEC §3 with
s⁺ = s_kk and negatives s_kl, l ≠ k) and the geometry experiment (SPEC §9).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.errors import ConfigError

LOSSES = ("infonce", "balanced", "decoupled", "generalized")
PSIS = ("log1p", "identity")
PHIS = ("exp", "softplus")


class LossError(ConfigError):
    """An unknown loss name or a bad loss parameter; the message names the field."""


def hard_off(hard_beta) -> bool:
    """Whether hard-negative weighting is off: hard_beta is None or a concrete 0 (SPEC §10: then
    the unweighted code runs, bitwise the loss without hard negatives). A traced value always takes the weighted path."""
    if hard_beta is None:
        return True
    if isinstance(hard_beta, (int, float, np.integer, np.floating)) and not isinstance(
        hard_beta, bool
    ):
        return hard_beta == 0
    return False


def check_hard_beta(hard_beta) -> None:
    """Refuses a hard_beta that is not a finite number >= 0 (a tracer passes), naming it."""
    if hard_beta is None or isinstance(hard_beta, jax.core.Tracer):
        return
    try:
        ok = (
            not isinstance(hard_beta, bool)
            and np.ndim(hard_beta) == 0
            and bool(np.isfinite(hard_beta))
            and hard_beta >= 0
        )
    except TypeError:
        ok = False
    if not ok:
        raise LossError(f"field 'hard_beta' = {hard_beta!r}: must be a finite number >= 0")


def check(loss: str, alpha=1.0, beta=1.0, psi: str = "log1p", phi: str = "exp") -> None:
    """Refuses an unknown name or a negative weight, naming the field and the value.

    α and β are only checked when they are concrete numbers (not tracers).
    """
    if loss not in LOSSES:
        raise LossError(f"field 'loss' = {loss!r}: expected one of {', '.join(LOSSES)}")
    if psi not in PSIS:
        raise LossError(f"field 'loss_psi' = {psi!r}: expected one of {', '.join(PSIS)}")
    if phi not in PHIS:
        raise LossError(f"field 'loss_phi' = {phi!r}: expected one of {', '.join(PHIS)}")
    for name, v in (("loss_alpha", alpha), ("loss_beta", beta)):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if not v >= 0 or v != v or v in (float("inf"), float("-inf")):
                raise LossError(f"field {name!r} = {v!r}: must be a finite number >= 0")


def check_fields(loss: str, alpha=1.0, beta=1.0, psi: str = "log1p", phi: str = "exp") -> None:
    """`check`, and refuses a parameter set for a loss that does not read it (α, β belong to
    `balanced`; ψ, φ to `generalized`), so that a typo never runs silently as InfoNCE."""
    check(loss, alpha, beta, psi, phi)
    if loss != "balanced":
        for name, v in (("loss_alpha", alpha), ("loss_beta", beta)):
            if v != 1.0:
                raise LossError(
                    f"field {name!r} = {v!r}: only the 'balanced' loss has it (loss = {loss!r})"
                )
    if loss != "generalized":
        for name, v, default in (("loss_psi", psi, "log1p"), ("loss_phi", phi, "exp")):
            if v != default:
                raise LossError(
                    f"field {name!r} = {v!r}: only the 'generalized' loss has it (loss = {loss!r})"
                )


def hard_log_weights(s_neg_KxN, hard_beta):
    """log v_i of Robinson et al.'s importance weights (SPEC §10), shape (K, n).

    v_i = n e^{β s_i} / Σ_l e^{β s_l} over an anchor's n negatives (mean 1 per anchor), computed
    from the raw similarities and held constant in the gradient (stop_gradient).
    """
    n = s_neg_KxN.shape[1]
    s = jax.lax.stop_gradient(s_neg_KxN)
    return jnp.log(jnp.asarray(n, s.dtype)) + jax.nn.log_softmax(hard_beta * s, axis=1)


def per_anchor(
    s_pos_K,
    s_neg_KxN,
    tau,
    loss: str = "infonce",
    alpha=1.0,
    beta=1.0,
    psi: str = "log1p",
    phi: str = "exp",
    hard_beta=0.0,
):
    """ℓ for each anchor (SPEC §8), shape (K,).

    Args:
      s_pos_K: positive similarity s⁺ of each anchor, shape (K,).
      s_neg_KxN: its negative similarities s_1 … s_n, shape (K, n).
      tau: temperature τ > 0.
      loss: "infonce", "balanced", "decoupled" or "generalized".
      alpha, beta: the balanced loss's weights of attraction and repulsion.
      psi, phi: the generalized loss's outer ψ ("log1p" or "identity") and inner φ ("exp" or
        "softplus", φ(u) = e^{u/τ} or log(1 + e^{u/τ})).
      hard_beta: β ≥ 0 of SPEC §10's hard negatives: every sum over negatives becomes Σ_i v_i (·)
        with v_i = n e^{β s_i} / Σ_l e^{β s_l}, constants in the gradient. A concrete 0 (the
        default) runs the unweighted code, bitwise the loss without hard negatives.
    """
    if not hard_off(hard_beta):
        return _per_anchor_hard(s_pos_K, s_neg_KxN, tau, loss, alpha, beta, psi, phi, hard_beta)
    pos_K = s_pos_K / tau
    neg_KxN = s_neg_KxN / tau
    if loss in ("infonce", "balanced"):
        # log(e^{s⁺/τ} + Σ_i e^{s_i/τ}), the positive kept in the denominator
        lse_K = jax.nn.logsumexp(jnp.concatenate([pos_K[:, None], neg_KxN], axis=1), axis=1)
        if loss == "infonce":
            return lse_K - pos_K
        return -alpha * pos_K + beta * lse_K
    if loss == "decoupled":
        return jax.nn.logsumexp(neg_KxN, axis=1) - pos_K
    u_KxN = neg_KxN - pos_K[:, None]  # (s_i − s⁺)/τ
    if phi == "exp":
        if psi == "log1p":  # log(1 + Σ e^u) = logsumexp(0, u_1, …, u_n): stable for large u
            zero_Kx1 = jnp.zeros_like(u_KxN[:, :1])
            return jax.nn.logsumexp(jnp.concatenate([zero_Kx1, u_KxN], axis=1), axis=1)
        return jnp.sum(jnp.exp(u_KxN), axis=1)
    total_K = jnp.sum(jax.nn.softplus(u_KxN), axis=1)
    return jnp.log1p(total_K) if psi == "log1p" else total_K


def _per_anchor_hard(s_pos_K, s_neg_KxN, tau, loss, alpha, beta, psi, phi, hard_beta):
    """`per_anchor` with Σ_i (·) → Σ_i v_i (·): each e^{x_i} gains the factor e^{log v_i}."""
    lv_KxN = hard_log_weights(s_neg_KxN, hard_beta)
    pos_K = s_pos_K / tau
    neg_KxN = s_neg_KxN / tau
    if loss in ("infonce", "balanced"):  # log(e^{s⁺/τ} + Σ_i v_i e^{s_i/τ})
        lse_K = jax.nn.logsumexp(
            jnp.concatenate([pos_K[:, None], neg_KxN + lv_KxN], axis=1), axis=1
        )
        if loss == "infonce":
            return lse_K - pos_K
        return -alpha * pos_K + beta * lse_K
    if loss == "decoupled":
        return jax.nn.logsumexp(neg_KxN + lv_KxN, axis=1) - pos_K
    u_KxN = neg_KxN - pos_K[:, None]
    if phi == "exp":
        if psi == "log1p":  # log(1 + Σ_i v_i e^{u_i})
            zero_Kx1 = jnp.zeros_like(u_KxN[:, :1])
            return jax.nn.logsumexp(jnp.concatenate([zero_Kx1, u_KxN + lv_KxN], axis=1), axis=1)
        return jnp.sum(jnp.exp(u_KxN + lv_KxN), axis=1)
    total_K = jnp.sum(jnp.exp(lv_KxN) * jax.nn.softplus(u_KxN), axis=1)
    return jnp.log1p(total_K) if psi == "log1p" else total_K


def contrastive_loss(
    s_pos,
    s_neg,
    tau,
    loss: str = "infonce",
    alpha=1.0,
    beta=1.0,
    psi: str = "log1p",
    phi: str = "exp",
    hard_beta=0.0,
):
    """The mean over anchors of a loss of SPEC §8's family.

    Pure, jittable and differentiable in s_pos and s_neg (and in tau, alpha, beta).

    Args:
      s_pos: positive similarities s⁺, shape (K,).
      s_neg: negative similarities, shape (K, n); row k holds anchor k's negatives.
      tau: temperature τ > 0.
      loss: "infonce" (default), "balanced", "decoupled" or "generalized".
      alpha, beta: weights of the balanced loss, ℓ = −α s⁺/τ + β log(e^{s⁺/τ} + Σ e^{s_i/τ}).
      psi, phi: ψ ∈ {"log1p", "identity"} and φ ∈ {"exp", "softplus"} of the generalized loss
        ℓ = ψ(Σ_i φ(s_i − s⁺)).
      hard_beta: β ≥ 0, hard-negative weights v_i = n e^{β s_i} / Σ_l e^{β s_l} on every sum
        over negatives (SPEC §10; Robinson et al., ICLR 2021), held constant in the gradient.
        0 (default): uniform negatives.

    Returns:
      The scalar mean of ℓ over the K anchors.

    Raises:
      LossError: an unknown name, or a negative α, β or hard_beta, naming the field.
    """
    check(loss, alpha, beta, psi, phi)
    check_hard_beta(hard_beta)
    s_pos, s_neg = jnp.asarray(s_pos), jnp.asarray(s_neg)
    if s_pos.ndim != 1 or s_neg.ndim != 2 or s_neg.shape[0] != s_pos.shape[0]:
        raise LossError(
            f"s_pos {tuple(s_pos.shape)} and s_neg {tuple(s_neg.shape)}: expected "
            "shapes (K,) and (K, n)"
        )
    return jnp.mean(per_anchor(s_pos, s_neg, tau, loss, alpha, beta, psi, phi, hard_beta))


def off_diagonal(s_KxK):
    """Row k of s without its diagonal entry, shape (K, K − 1): the in-batch negatives."""
    K = s_KxK.shape[0]
    col_KxN = jnp.arange(K - 1)[None, :] + (jnp.arange(K - 1)[None, :] >= jnp.arange(K)[:, None])
    return jnp.take_along_axis(s_KxK, col_KxN, axis=1)


def per_anchor_counts(
    s_pos,
    s_vals_C,
    counts_NxC,
    tau,
    loss: str = "infonce",
    alpha=1.0,
    beta=1.0,
    psi: str = "log1p",
    phi: str = "exp",
    hard_beta=0.0,
    s_weight_C=None,
):
    """ℓ of one anchor (SPEC §8) for each row of counts, shape (N,): negatives given by counts.

    Row n stands for the anchor with positive similarity s⁺ whose negatives are counts[n, c]
    copies of s_vals[c]; it equals `per_anchor` on those negatives written out. The sums over
    negatives become count-weighted (log(e^{s⁺/τ} + Σ_c n_c e^{s_c/τ}) etc.), one (N, C) @ (C,)
    product with only C exponentials, and a class with count 0 contributes nothing, also inside
    the decoupled loss's log Σ (a row of zeros there gives log 0 = −inf).

    The log-sum-exps are shifted by one maximum (over s⁺ and the classes that occur), not per
    row. With s⁺ ≥ every s_c (the geometry program: s⁺ = 1, s_c ∈ [−1, 1]) the s⁺ term never
    underflows, so this is exact; otherwise a row whose terms all lie more than ~85 (float32) or
    ~700 (float64) below that maximum, in units of τ, would underflow to log 0.

    With hard_beta = β (SPEC §10) a negative of class c in row n weighs
    w_nc = k_n e^{β s_c} / Σ_c' n_c' e^{β s_c'} (k_n = Σ_c n_c): the weights of `per_anchor`
    written per class. Here they follow s (no stop_gradient): the collapsed objective is a
    function of G. `s_weight_C` computes them from other similarities instead (held fixed).

    Args:
      s_pos: the positive similarity s⁺, a scalar.
      s_vals_C: the similarity of a negative of each class, shape (C,).
      counts_NxC: how many negatives of each class, shape (N, C), integers ≥ 0 (any dtype).
      tau, loss, alpha, beta, psi, phi: as in `per_anchor`.
      hard_beta: β ≥ 0; a concrete 0 (default) runs the unweighted code (no weights at all).
      s_weight_C: similarities the weights are computed from, shape (C,); None: s_vals_C.
    """
    pos = jnp.asarray(s_pos) / tau
    vals_C = jnp.asarray(s_vals_C) / tau
    counts_NxC = jnp.asarray(counts_NxC).astype(vals_C.dtype)
    # a class absent from every row must not set the shift nor give inf · 0 = nan
    present_C = jnp.any(counts_NxC > 0, axis=0)

    def shifted_exp(x_C, m):  # e^{x_c − m}, 0 for absent classes (no inf reaches the product)
        return jnp.exp(jnp.where(present_C, x_C - m, -jnp.inf))

    if hard_off(hard_beta):

        def wsum(x_C, m):  # Σ_c n_c e^{x_c − m}, shape (N,)
            return counts_NxC @ shifted_exp(x_C, m)
    else:
        sw_C = jnp.asarray(s_vals_C if s_weight_C is None else s_weight_C, vals_C.dtype)
        bw_C = hard_beta * sw_C
        b_C = bw_C - jnp.max(jnp.where(present_C, bw_C, -jnp.inf))  # ≤ 0 where present
        # k_n / Σ_c n_c e^{b_c}: with e^{b_c} below, k_n e^{β s_c} / Σ_c' n_c' e^{β s_c'}
        scale_N = jnp.sum(counts_NxC, axis=1) / (counts_NxC @ shifted_exp(b_C, 0.0))

        def wsum(x_C, m):  # Σ_c n_c w_nc e^{x_c − m}
            return scale_N * (counts_NxC @ shifted_exp(x_C + b_C, m))

    vmax = jnp.max(jnp.where(present_C, vals_C, -jnp.inf))
    if loss in ("infonce", "balanced"):
        # log(e^{s⁺/τ} + Σ_c n_c e^{s_c/τ})
        m = jax.lax.stop_gradient(jnp.maximum(pos, vmax))
        lse_N = m + jnp.log(jnp.exp(pos - m) + wsum(vals_C, m))
        if loss == "infonce":
            return lse_N - pos
        return -alpha * pos + beta * lse_N
    if loss == "decoupled":  # log Σ_c n_c e^{s_c/τ}, the positive left out
        m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(vmax), vmax, 0.0))
        return m + jnp.log(wsum(vals_C, m)) - pos
    u_C = vals_C - pos  # (s_c − s⁺)/τ
    if phi == "exp":
        if psi == "log1p":  # log(1 + Σ_c n_c e^{u_c}), shifted like a logsumexp with a 0 entry
            m = jax.lax.stop_gradient(jnp.maximum(0.0, vmax - pos))
            return m + jnp.log(jnp.exp(-m) + wsum(u_C, m))
        return wsum(u_C, 0.0)
    sp_C = jnp.where(present_C, jax.nn.softplus(jnp.where(present_C, u_C, 0.0)), 0.0)
    if hard_off(hard_beta):
        total_N = counts_NxC @ sp_C
    else:
        total_N = scale_N * (counts_NxC @ (shifted_exp(b_C, 0.0) * sp_C))
    return jnp.log1p(total_N) if psi == "log1p" else total_N
