"""Observables of the geometry experiment (SPEC §9), inside jit: the Gram matrix of the
normalized class means, the class means' norms (1 = collapsed), NC1 = tr(Σ_W Σ_B⁺)/C, the
mean cosine of minority class means, and the largest deviation of G from the predicted G*."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp

SCALARS = ("G_max_dev", "minority_cos", "nc1", "mean_norm_major", "mean_norm_minor")


def layout(static, hp):
    """(class of each row (R,), whether the row holds a sample (R,))."""
    rows = jnp.arange(static.n_rows)
    cls_R = rows // static.samples_major
    size_R = jnp.where(cls_R < static.n_major_classes, static.samples_major, hp.samples_minor)
    return cls_R, (rows % static.samples_major) < size_R


def jacobi_eigh(a_NxN, sweeps: int = 12):
    """Eigenvalues and eigenvectors of a small symmetric matrix by cyclic Jacobi rotations.

    Matmuls only, no LAPACK: jaxlib's CPU LAPACK kernels can deadlock when several CPU devices
    run their programs at once (see jaxcl.experiments.liao.data.orthonormalize). Twelve sweeps
    reach float32 round-off for the p ≤ 16 matrices used here (convergence is quadratic).
    Returns (eigenvalues (N,), eigenvectors as columns (N, N)).
    """
    n = a_NxN.shape[0]
    eye = jnp.eye(n, dtype=a_NxN.dtype)

    def sweep(_, carry):
        a, v = carry
        for i, j in itertools.combinations(range(n), 2):
            aij = a[i, j]
            theta = 0.5 * jnp.arctan2(2.0 * aij, a[j, j] - a[i, i])
            c, s = jnp.cos(theta), jnp.sin(theta)
            rot = eye.at[i, i].set(c).at[j, j].set(c).at[i, j].set(s).at[j, i].set(-s)
            rot = jnp.where(jnp.abs(aij) > 0, rot, eye)
            a = rot.T @ a @ rot
            v = v @ rot
        return a, v

    a, v = jax.lax.fori_loop(0, sweeps, sweep, (a_NxN, eye))
    return jnp.diagonal(a), v


def pinv_psd(a_NxN, rtol: float = 1e-5):
    """Moore–Penrose inverse of a symmetric PSD matrix, eigenvalues below rtol·max dropped."""
    lam_N, v_NxN = jacobi_eigh(a_NxN)
    keep_N = lam_N > rtol * jnp.maximum(jnp.max(lam_N), 1e-30)
    inv_N = jnp.where(keep_N, 1.0 / jnp.where(keep_N, lam_N, 1.0), 0.0)
    return (v_NxN * inv_N[None, :]) @ v_NxN.T


def summary(static, hp, u_RxP) -> dict:
    """Every observable of SPEC §9 for one config's representations.

    Returns:
      A dict: G (C, C) Gram matrix of the normalized class means of z, class_norms (C,)
      ‖mean of z over class c‖, and the scalars of SCALARS (minority_cos NaN with fewer than
      two minority classes).
    """
    C, n_major = static.n_classes, static.n_major_classes
    cls_R, valid_R = layout(static, hp)
    z_RxP = u_RxP * jax.lax.rsqrt(jnp.maximum(jnp.sum(u_RxP * u_RxP, axis=1, keepdims=True), 1e-30))
    onehot_RxC = jax.nn.one_hot(cls_R, C, dtype=z_RxP.dtype) * valid_R[:, None]
    count_C = jnp.sum(onehot_RxC, axis=0)
    mean_CxP = (onehot_RxC.T @ z_RxP) / count_C[:, None]
    norm_C = jnp.sqrt(jnp.sum(mean_CxP * mean_CxP, axis=1))
    unit_CxP = mean_CxP / jnp.maximum(norm_C, 1e-30)[:, None]
    g_CxC = unit_CxP @ unit_CxP.T
    # NC1 (Papyan et al.): within-class covariance against the between-class one
    resid_RxP = (z_RxP - mean_CxP[cls_R]) * valid_R[:, None]
    sigma_w_PxP = resid_RxP.T @ resid_RxP / jnp.sum(count_C)
    centered_CxP = mean_CxP - jnp.mean(mean_CxP, axis=0, keepdims=True)
    sigma_b_PxP = centered_CxP.T @ centered_CxP / C
    nc1 = jnp.trace(sigma_w_PxP @ pinv_psd(sigma_b_PxP)) / C
    minor = [(i, j) for i, j in itertools.combinations(range(n_major, C), 2)]
    minority_cos = (
        jnp.mean(jnp.stack([g_CxC[i, j] for i, j in minor])) if minor else jnp.float32(jnp.nan)
    )
    return {
        "G": g_CxC,
        "class_norms": norm_C,
        "G_max_dev": jnp.max(jnp.abs(g_CxC - hp.G_opt)),
        "minority_cos": minority_cos,
        "nc1": nc1,
        "mean_norm_major": jnp.mean(norm_C[:n_major]),
        "mean_norm_minor": (jnp.mean(norm_C[n_major:]) if C > n_major else jnp.float32(jnp.nan)),
    }


def final_observables(static, hp, state) -> dict:
    """The final json's `observables`: every key of `summary` and the predicted G*."""
    return {**summary(static, hp, state.u), "G_opt": hp.G_opt}


def effective_rank(Z_NxP) -> float:
    """exp of the entropy of the normalized covariance spectrum of the rows of Z (numpy).

    The effective rank of Roy & Vetterli (2007) on the eigenvalues λ_i of the covariance of Z
    (rows centered), p_i = λ_i / Σ λ: r equal eigenvalues and the rest 0 give r. Dimensional
    collapse (Jing et al., ICLR 2022) is a spectrum concentrated on few directions: a small
    effective rank. Used by the report on the final Z; C collapsed, balanced class means in the
    ETF give C − 1.
    """
    import numpy as np

    Z = np.asarray(Z_NxP, np.float64)
    Zc = Z - Z.mean(axis=0, keepdims=True)
    lam = np.clip(np.linalg.eigvalsh(Zc.T @ Zc / max(len(Z), 1)), 0.0, None)
    if lam.sum() <= 0:
        return 0.0
    p = lam / lam.sum()
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))
