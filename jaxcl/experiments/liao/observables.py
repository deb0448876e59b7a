"""Observables of SPEC §5 (Theorem 3.3's sets, purity, coverage, probe), computed inside jit.

Every function here is pure jnp on one config's arrays (vmap it over a grid). With
A_ij = ⟨w_i, M_j⟩ and S_i = ‖M Mᵀ w_i‖² = Σ_j A_ij² (M has orthonormal columns):
ordinary set M_j (eq. 16), lucky set M_j* (eq. 17), learned set N_i(t) (eq. 16's threshold at
time t), pure neurons P_j = #{i : N_i = {j}}, F_i(t) = {j : |A_ij| > b_i}.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxcl.experiments.liao.data import fold, place, presence_prob, sample_codes
from jaxcl.experiments.liao.model import (
    effective_weights,
    encode_with,
    prune_mask,
    weight_prune_mask,
)

# Key stream of the probe's fresh samples; train.py uses streams 0-3 (dict, init, data, eval).
PROBE_STREAM = 4


def alignment(w_MxD1, M_D1xD):
    """A_ij = ⟨w_i, M_j⟩, shape (m, d)."""
    return w_MxD1 @ M_D1xD


def cos2(w_MxD1, M_D1xD):
    """cos2_ij = A_ij² / ‖w_i‖² (the paper's Figure 1 quantity), shape (m, d)."""
    a_MxD = alignment(w_MxD1, M_D1xD)
    n2_M = jnp.sum(w_MxD1 * w_MxD1, axis=1)
    return a_MxD**2 / jnp.maximum(n2_M, 1e-30)[:, None]


def noise_frac(w_MxD1, M_D1xD):
    """‖M_perpᵀ w_i‖² / ‖w_i‖² = 1 − S_i/‖w_i‖² (M ⊕ M_perp is orthonormal), shape (m,)."""
    a_MxD = alignment(w_MxD1, M_D1xD)
    n2_M = jnp.sum(w_MxD1 * w_MxD1, axis=1)
    return jnp.clip(1.0 - jnp.sum(a_MxD**2, axis=1) / jnp.maximum(n2_M, 1e-30), 0.0, 1.0)


def thresholds(eps_max, eps_min, gamma_c0):
    """c1 = (ε_max/ε_min)² 2(1 + γc0), c2 = (ε_min/ε_max)² 2(1 − γc0) (SPEC §5, Lemma C.1)."""
    r = eps_min / eps_max
    return 2.0 * (1.0 + gamma_c0) / r**2, 2.0 * (1.0 - gamma_c0) * r**2


def ordinary_mask(a_MxD, c2):
    """i ∈ M_j ⟺ A_ij² ≥ c2 log d / d · S_i (eq. 16); applied at time t it gives j ∈ N_i(t)."""
    d = a_MxD.shape[1]
    a2_MxD = a_MxD**2
    s_M = jnp.sum(a2_MxD, axis=1)
    return a2_MxD >= (c2 * math.log(d) / d) * s_M[:, None]


def lucky_mask(a_MxD, c1, c2):
    """i ∈ M_j* ⟺ A_ij² ≥ c1 log d/d · S_i and A_ij'² ≤ c2 log d/d · S_i ∀ j' ≠ j (eq. 17)."""
    d = a_MxD.shape[1]
    a2_MxD = a_MxD**2
    s_M = jnp.sum(a2_MxD, axis=1)[:, None]
    big_MxD = a2_MxD >= (c1 * math.log(d) / d) * s_M
    over_c2_MxD = a2_MxD > (c2 * math.log(d) / d) * s_M
    n_over_M = jnp.sum(over_c2_MxD, axis=1)
    others_small_MxD = (n_over_M[:, None] - over_c2_MxD.astype(n_over_M.dtype)) == 0
    return big_MxD & others_small_MxD


def pure_mask(n_MxD):
    """N_i = {j} (neuron i learns feature j only), shape (m, d)."""
    return n_MxD & (jnp.sum(n_MxD, axis=1) == 1)[:, None]


def fires_alone(a_MxD, b_M):
    """j ∈ F_i ⟺ |A_ij| > b_i (meaningful once b > 0; at b = 0 every non-zero A_ij counts)."""
    return jnp.abs(a_MxD) > b_M[:, None]


def alive_frac(w_MxD1, b_M, x_KxLxD1, attn=None):
    """Share of neurons with a non-zero output on at least one sample of the batch."""
    f_KxM = encode_with(w_MxD1, b_M, x_KxLxD1, attn)
    return jnp.mean(jnp.any(f_KxM != 0, axis=0))


def _major_minor_means(v_D, n_major):
    """(mean over majority features, mean over minority features) of v, NaNs ignored."""
    major_D = jnp.arange(v_D.shape[0]) < n_major
    ok_D = ~jnp.isnan(v_D)
    v0_D = jnp.where(ok_D, v_D, 0.0)

    def mean(sel_D):
        n = jnp.sum(sel_D & ok_D)
        return jnp.where(n > 0, jnp.sum(jnp.where(sel_D, v0_D, 0.0)) / jnp.maximum(n, 1), jnp.nan)

    return mean(major_D), mean(~major_D)


def chunk_summary(w_MxD1, b_M, M_D1xD, n_major, eval_x_KxLxD1, attn=None) -> dict:
    """Cheap per-chunk summaries: coverage by majority/minority, purity, alive fraction.

    With trained attention (`attn`), cos² reads the effective weights W W_Vᵀ.
    """
    c_MxD = cos2(effective_weights(w_MxD1, attn), M_D1xD)
    d = c_MxD.shape[1]
    major_D = jnp.arange(d) < n_major
    coverage_D = jnp.max(c_MxD, axis=0)
    n_minor = jnp.maximum(d - n_major, 1)
    return {
        "cov_major": jnp.sum(jnp.where(major_D, coverage_D, 0.0)) / jnp.maximum(n_major, 1),
        "cov_minor": jnp.sum(jnp.where(major_D, 0.0, coverage_D)) / n_minor,
        "purity": jnp.mean(jnp.max(c_MxD, axis=1)),
        "alive_frac": alive_frac(w_MxD1, b_M, eval_x_KxLxD1, attn),
        "b_mean": jnp.mean(b_M),
        "w_norm_mean": jnp.mean(jnp.sqrt(jnp.sum(w_MxD1 * w_MxD1, axis=1))),
    }


def set_summary(w_MxD1, b_M, w0_MxD1, M_D1xD, hp) -> dict:
    """Per-chunk scalars of Theorem 3.3's sets (columns of results.jsonl).

    Args:
      w_MxD1: current weights.
      b_M: current biases.
      w0_MxD1: initial weights (for the lucky sets, eq. 17).
      M_D1xD: dictionary.
      hp: the config's HParams (eps_max, eps_min, gamma_c0 traced).

    Returns:
      N_mean (mean |N_i(t)|), N_max (max over neurons of |N_i(t)|: Theorem 3.3 bounds every
      neuron), pure_neurons (#i with |N_i(t)| = 1), pure_min (min over features j of
      P_j(t) = #{i : N_i(t) = {j}}: the theorem says "for each j"), lucky_pure (#i ∈ some M_j*
      with N_i(t) = {j}), F_mean (mean |F_i(t)|), noise_frac (mean over neurons).
    """
    c1, c2 = thresholds(hp.eps_max, hp.eps_min, hp.gamma_c0)
    a_MxD = alignment(w_MxD1, M_D1xD)
    n_MxD = ordinary_mask(a_MxD, c2)
    pure_MxD = pure_mask(n_MxD)
    lucky_MxD = lucky_mask(alignment(w0_MxD1, M_D1xD), c1, c2)
    n_M = jnp.sum(n_MxD, axis=1)
    return {
        "N_mean": jnp.mean(n_M.astype(jnp.float32)),
        "N_max": jnp.max(n_M).astype(jnp.int32),
        "pure_neurons": jnp.sum(pure_MxD).astype(jnp.int32),
        "pure_min": jnp.min(jnp.sum(pure_MxD, axis=0)).astype(jnp.int32),
        "lucky_pure": jnp.sum(lucky_MxD & pure_MxD).astype(jnp.int32),
        "F_mean": jnp.mean(jnp.sum(fires_alone(a_MxD, b_M), axis=1).astype(jnp.float32)),
        "noise_frac": jnp.mean(noise_frac(w_MxD1, M_D1xD)),
    }


def linear_probe(f_train_NxM, y_train_NxD, f_test_NxM, y_test_NxD, ridge):
    """Ridge regression from |f(X)| to feature presence; per-feature balanced test accuracy.

    f is odd in X (BReLU and the attention are odd), so no linear map of f can tell a present
    feature from an absent one irrespective of its sign; |f| is the sign-invariant readout.
    Columns are standardized on the training half; a prediction is positive above the midpoint
    of the training means of the two classes. Balanced accuracy is NaN for a feature that is
    never or always present in either half.

    Args:
      f_train_NxM, f_test_NxM: embeddings of the two halves.
      y_train_NxD, y_test_NxD: presence (bool) of each feature.
      ridge: λ of (ZᵀZ + nλI)β = Zᵀ(y − ȳ).

    Returns:
      Balanced accuracy per feature, shape (d,).
    """
    n, m = f_train_NxM.shape
    g_tr_NxM, g_te_NxM = jnp.abs(f_train_NxM), jnp.abs(f_test_NxM)
    mu_M = jnp.mean(g_tr_NxM, axis=0)
    sd_M = jnp.std(g_tr_NxM, axis=0)
    scale_M = jnp.where(sd_M > 1e-12, 1.0 / jnp.maximum(sd_M, 1e-12), 0.0)
    z_tr_NxM = (g_tr_NxM - mu_M[None, :]) * scale_M[None, :]
    z_te_NxM = (g_te_NxM - mu_M[None, :]) * scale_M[None, :]
    y_NxD = y_train_NxD.astype(jnp.float32)
    ybar_D = jnp.mean(y_NxD, axis=0)
    yc_NxD = y_NxD - ybar_D[None, :]
    if m <= n:  # primal (m x m) or dual (n x n) form, whichever is smaller (static choice)
        beta_MxD = spd_solve(z_tr_NxM.T @ z_tr_NxM + n * ridge * jnp.eye(m), z_tr_NxM.T @ yc_NxD)
    else:
        beta_MxD = z_tr_NxM.T @ spd_solve(z_tr_NxM @ z_tr_NxM.T + n * ridge * jnp.eye(n), yc_NxD)
    pred_tr_NxD = z_tr_NxM @ beta_MxD
    pos_D = jnp.sum(y_NxD, axis=0)
    mean_pos_D = jnp.sum(pred_tr_NxD * y_NxD, axis=0) / jnp.maximum(pos_D, 1.0)
    mean_neg_D = jnp.sum(pred_tr_NxD * (1 - y_NxD), axis=0) / jnp.maximum(n - pos_D, 1.0)
    cut_D = 0.5 * (mean_pos_D + mean_neg_D)
    hat_NxD = (z_te_NxM @ beta_MxD) > cut_D[None, :]
    yt_NxD = y_test_NxD.astype(bool)
    n_pos_D = jnp.sum(yt_NxD, axis=0)
    n_neg_D = yt_NxD.shape[0] - n_pos_D
    tpr_D = jnp.sum(hat_NxD & yt_NxD, axis=0) / jnp.maximum(n_pos_D, 1)
    tnr_D = jnp.sum(~hat_NxD & ~yt_NxD, axis=0) / jnp.maximum(n_neg_D, 1)
    ok_D = (n_pos_D > 0) & (n_neg_D > 0) & (pos_D > 0) & (pos_D < n)
    return jnp.where(ok_D, 0.5 * (tpr_D + tnr_D), jnp.nan)


def spd_solve(a_NxN, b_NxK):
    """A⁻¹B for symmetric positive definite A: Cholesky A = LLᵀ, then two substitutions.

    Written with loops of matrix-vector products instead of LAPACK: under vmap on several CPU
    devices, jaxlib's batched LAPACK kernels wait on the intra-op thread pool that the other
    devices' programs hold, and the sweep deadlocks (as `data.orthonormalize` explains).
    """
    n = a_NxN.shape[0]
    idx_N = jnp.arange(n)

    def chol_column(j, l_NxN):  # column j of L from the columns before it
        v_N = a_NxN[:, j] - l_NxN @ l_NxN[j, :]  # columns >= j of L are still zero
        v_N = jnp.where(idx_N >= j, v_N, 0.0)
        return l_NxN.at[:, j].set(v_N / jnp.sqrt(v_N[j]))

    l_NxN = jax.lax.fori_loop(0, n, chol_column, jnp.zeros_like(a_NxN))

    def forward(i, y_NxK):  # L y = b, row i from the rows before it
        return y_NxK.at[i].set((b_NxK[i] - l_NxN[i] @ y_NxK) / l_NxN[i, i])

    def backward(k, x_NxK):  # Lᵀ x = y, row i = n-1-k from the rows after it
        i = n - 1 - k
        return x_NxK.at[i].set((y_NxK[i] - l_NxN[:, i] @ x_NxK) / l_NxN[i, i])

    y_NxK = jax.lax.fori_loop(0, n, forward, jnp.zeros_like(b_NxK))
    return jax.lax.fori_loop(0, n, backward, jnp.zeros_like(b_NxK))


def probe_batch(static, hp, state):
    """probe_samples fresh single views and their presence labels, from PROBE_STREAM.

    Drawn like train.batch (key folded from the config's seed, the stream and index 0) but as
    one batch of probe_samples first views: the second view is not needed.
    """
    key = fold(state.key, PROBE_STREAM, 0)
    k_code, k_place = fold(key, 1, 0), fold(key, 1, 1)
    p_D = presence_prob(state.eps, hp.C_z, static.d)
    coef_NxD, pos_1xNxD = sample_codes(
        k_code, p_D, static.probe_samples, hp.feature_scale, static.L, 1
    )
    x_NxLxD1 = place(
        k_place,
        coef_NxD,
        pos_1xNxD[0],
        state.M,
        static.L,
        hp.sigma_xi,
        static.dictionary == "identity",
    )
    return x_NxLxD1, coef_NxD != 0


def _paper_sets(ord_MxD, n_MxD, learner_MxD, a0_MxD, c_MxD) -> dict:
    """Counts that read Theorem 3.3 with the paper's N_i, fixed at initialisation (N_i(0),
    Table 1), against the end of training: Lemma F.1(e) on the neurons that have a set, whether
    the neurons without one learn a feature anyway, and whether a neuron's initial argmax
    feature is still its argmax."""
    nonempty0_M = jnp.any(ord_MxD, axis=1)
    subset_M = jnp.all(~n_MxD | ord_MxD, axis=1)  # N_i(T) ⊆ N_i(0)
    argmax0_M = jnp.argmax(jnp.abs(a0_MxD), axis=1)
    return {
        "N0_nonempty": jnp.sum(nonempty0_M).astype(jnp.int32),
        "N_subset_nonempty0": jnp.sum(nonempty0_M & subset_M).astype(jnp.int32),
        "N0_empty_learned": jnp.sum(~nonempty0_M & jnp.any(n_MxD, axis=1)).astype(jnp.int32),
        "N0_empty_pure_learner": jnp.sum(~nonempty0_M & jnp.any(learner_MxD, axis=1)).astype(
            jnp.int32
        ),
        "argmax0_kept": jnp.sum(jnp.argmax(c_MxD, axis=1) == argmax0_M).astype(jnp.int32),
    }


def kept_neurons(static, hp, state):
    """(m,) bool: the neurons the final mask of the config's prune_mode keeps (SPEC §4).

    "neurons": the mask of the final weights; "neurons_once": the mask set at T_1 or T_2 (all
    neurons if the run stopped before); "weights": the neurons with at least one kept entry.
    """
    if static.prune_mode == "neurons_once":
        return state.keep > 0
    if static.prune_mode == "weights":
        return jnp.any(weight_prune_mask(state.w, hp.n_prune) > 0, axis=1)
    return prune_mask(state.w, hp.n_prune) > 0


def final_observables(static, hp, state) -> dict:
    """Everything the final json's `observables` key holds, for one config's final state.

    Args:
      static: the config's Static (shapes).
      hp: its HParams.
      state: its final train.State (w, b, w0, M, eps, T1, T2, key).

    Returns:
      A dict of arrays: per-feature counts (d,), per-neuron sizes (m,), and scalars.
    """
    c1, c2 = thresholds(hp.eps_max, hp.eps_min, hp.gamma_c0)
    # trained attention: A_ij of the weights on the raw tokens, W W_Vᵀ (W_V = I at init)
    w_MxD1 = effective_weights(state.w, state.attn)
    a0_MxD = alignment(state.w0, state.M)
    a_MxD = alignment(w_MxD1, state.M)
    ord_MxD = ordinary_mask(a0_MxD, c2)  # eq. 16 at t = 0: M_j, and N_i(0)
    lucky_MxD = lucky_mask(a0_MxD, c1, c2)  # eq. 17
    n_MxD = ordinary_mask(a_MxD, c2)  # N_i(T)
    pure_MxD = pure_mask(n_MxD)
    f_MxD = fires_alone(a_MxD, state.b)
    in_lucky_M = jnp.any(lucky_MxD, axis=1)
    n_lucky = jnp.sum(in_lucky_M)
    lucky_kept = jnp.sum(lucky_MxD & pure_MxD)
    inter_M = jnp.sum(ord_MxD & n_MxD, axis=1)
    union_M = jnp.sum(ord_MxD | n_MxD, axis=1)
    jaccard_M = jnp.where(union_M > 0, inter_M / jnp.maximum(union_M, 1), 1.0)
    subset_M = jnp.all(~n_MxD | ord_MxD, axis=1)  # N_i(T) ⊆ N_i(0)
    c_MxD = cos2(w_MxD1, state.M)
    purity_M = jnp.max(c_MxD, axis=1)
    # "purely learns j": j is the argmax and |cos| > 0.5 (SPEC §5)
    learner_MxD = (
        jax.nn.one_hot(jnp.argmax(c_MxD, axis=1), static.d, dtype=bool) & (purity_M > 0.25)[:, None]
    )
    coverage_D = jnp.max(c_MxD, axis=0)
    cov_major, cov_minor = _major_minor_means(coverage_D, hp.n_major)
    # Pruned neurons (SPEC §4) only decay, so they keep their random initial direction and
    # would count in the coverage; the *_kept values use the final prune mask's neurons only.
    kept_M = kept_neurons(static, hp, state)
    c_kept_MxD = jnp.where(kept_M[:, None], c_MxD, 0.0)
    cov_major_kept, cov_minor_kept = _major_minor_means(jnp.max(c_kept_MxD, axis=0), hp.n_major)
    n_kept = jnp.maximum(jnp.sum(kept_M), 1)
    purity_kept = jnp.sum(jnp.where(kept_M, purity_M, 0.0)) / n_kept
    noise_M = noise_frac(w_MxD1, state.M)
    noise_kept = jnp.sum(jnp.where(kept_M, noise_M, 0.0)) / n_kept

    x_NxLxD1, y_NxD = probe_batch(static, hp, state)
    f_NxM = encode_with(state.w, state.b, x_NxLxD1, state.attn)
    half = f_NxM.shape[0] // 2
    bacc_D = linear_probe(f_NxM[:half], y_NxD[:half], f_NxM[half:], y_NxD[half:], hp.probe_ridge)
    probe_major, probe_minor = _major_minor_means(bacc_D, hp.n_major)
    out = _paper_sets(ord_MxD, n_MxD, learner_MxD, a0_MxD, c_MxD)
    if state.sets is not None:  # snapshot_sets: the same reading near T_2 and 2 T_2
        out.update(t_snapshots=state.sets.t)
        for name, snap_MxD in (("T2", state.sets.N_T2), ("2T2", state.sets.N_2T2)):
            nonempty0_M = jnp.any(ord_MxD, axis=1)
            out[f"N_{name}_max"] = jnp.max(jnp.sum(snap_MxD, axis=1)).astype(jnp.int32)
            out[f"N_{name}_mean"] = jnp.mean(jnp.sum(snap_MxD, axis=1).astype(jnp.float32))
            out[f"N_subset_nonempty0_{name}"] = jnp.sum(
                nonempty0_M & jnp.all(~snap_MxD | ord_MxD, axis=1)
            ).astype(jnp.int32)
    return out | {
        "ordinary_counts": jnp.sum(ord_MxD, axis=0).astype(jnp.int32),
        "lucky_counts": jnp.sum(lucky_MxD, axis=0).astype(jnp.int32),
        "N0_sizes": jnp.sum(ord_MxD, axis=1).astype(jnp.int32),
        "N_sizes": jnp.sum(n_MxD, axis=1).astype(jnp.int32),
        "F_sizes": jnp.sum(f_MxD, axis=1).astype(jnp.int32),
        "pure_counts": jnp.sum(pure_MxD, axis=0).astype(jnp.int32),
        "pure_learner_counts": jnp.sum(learner_MxD, axis=0).astype(jnp.int32),
        "lucky_total": n_lucky.astype(jnp.int32),
        "lucky_kept_frac": jnp.where(n_lucky > 0, lucky_kept / jnp.maximum(n_lucky, 1), jnp.nan),
        "N_subset_frac": jnp.mean(subset_M.astype(jnp.float32)),
        "N_jaccard_mean": jnp.mean(jaccard_M),
        "T1": state.T1,
        "T2": state.T2,
        "alive_frac": jnp.mean(jnp.any(f_NxM != 0, axis=0)),
        "purity": jnp.mean(purity_M),
        "cov_major": cov_major,
        "cov_minor": cov_minor,
        "cov_major_kept": cov_major_kept,
        "cov_minor_kept": cov_minor_kept,
        "purity_kept": purity_kept,
        "noise_frac_kept": noise_kept,
        "noise_frac": jnp.mean(noise_M),
        "probe_bacc": bacc_D,
        "probe_major": probe_major,
        "probe_minor": probe_minor,
        "probe_gap": probe_major - probe_minor,
    }
