"""Observables of SPEC §5, computed inside jit from (w, b, M, ε)."""

from __future__ import annotations

import jax.numpy as jnp

from jaxcl.model import encode


def alignment(w_MxD1, M_D1xD):
    """A_ij = ⟨w_i, M_j⟩, shape (m, d)."""
    return w_MxD1 @ M_D1xD


def cos2(w_MxD1, M_D1xD):
    """cos2_ij = A_ij² / ‖w_i‖² (the paper's Figure 1 quantity), shape (m, d)."""
    a_MxD = alignment(w_MxD1, M_D1xD)
    n2_M = jnp.sum(w_MxD1 * w_MxD1, axis=1)
    return a_MxD**2 / jnp.maximum(n2_M, 1e-30)[:, None]


def alive_frac(w_MxD1, b_M, x_KxLxD1):
    """Share of neurons with a non-zero output on at least one sample of the batch."""
    f_KxM = encode(w_MxD1, b_M, x_KxLxD1)
    return jnp.mean(jnp.any(f_KxM != 0, axis=0))


def chunk_summary(w_MxD1, b_M, M_D1xD, n_major, eval_x_KxLxD1) -> dict:
    """Cheap per-chunk summaries: coverage by majority/minority, purity, alive fraction."""
    c_MxD = cos2(w_MxD1, M_D1xD)
    d = c_MxD.shape[1]
    major_D = jnp.arange(d) < n_major
    coverage_D = jnp.max(c_MxD, axis=0)
    n_minor = jnp.maximum(d - n_major, 1)
    return {
        "cov_major": jnp.sum(jnp.where(major_D, coverage_D, 0.0)) / jnp.maximum(n_major, 1),
        "cov_minor": jnp.sum(jnp.where(major_D, 0.0, coverage_D)) / n_minor,
        "purity": jnp.mean(jnp.max(c_MxD, axis=1)),
        "alive_frac": alive_frac(w_MxD1, b_M, eval_x_KxLxD1),
        "b_mean": jnp.mean(b_M),
        "w_norm_mean": jnp.mean(jnp.sqrt(jnp.sum(w_MxD1 * w_MxD1, axis=1))),
    }
