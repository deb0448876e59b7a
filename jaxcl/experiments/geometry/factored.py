"""The factored rank-p form of the geometry program: G = V̂ V̂ᵀ with unit rows V̂ ∈ R^{C×p}, the
traced data of F (`Problem`), F as a function of G, and its jitted multi-start BFGS solve."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.experiments.geometry.bfgs import bfgs
from jaxcl.experiments.geometry.objective import objective_from_counts


def gram(V_CxP):
    """G = V̂ V̂ᵀ with unit rows V̂_c = V_c / ‖V_c‖: PSD with unit diagonal (and rank ≤ p) by
    construction.

    Args:
      V_CxP: the factor, shape (C, p), no zero row.

    Returns:
      G, shape (C, C), with diagonal exactly 1.
    """
    Vn = V_CxP / jnp.linalg.norm(V_CxP, axis=1, keepdims=True)
    eye = jnp.eye(V_CxP.shape[0], dtype=V_CxP.dtype)
    return (Vn @ Vn.T) * (1.0 - eye) + eye  # diag exactly 1 (it is fixed in the program)


STATIC = ("loss", "psi", "phi", "hard", "frozen")  # the static arguments of the jitted solvers


class Problem(NamedTuple):
    """The traced data of F: π, the counts and their probabilities, τ, α, β, hard_beta and the
    Gram matrix the hard-negative weights are frozen at (used only when `frozen`)."""

    pi_C: Any
    counts_NxC: Any
    weights_N: Any
    tau: Any
    alpha: Any
    beta: Any
    hard_beta: Any
    G_weight_CxC: Any


def problem(pi, counts, weights, tau, alpha, beta, hard_beta=0.0, G_weight=None) -> Problem:
    """The traced data of F, scalars as float64.

    Args:
      pi: class proportions, shape (C,).
      counts, weights: the negatives' count vectors (N, C) and their probabilities (N,), as
        `negative_counts` returns them.
      tau, alpha, beta, hard_beta: as in `collapsed_objective`.
      G_weight: the Gram matrix the hard-negative weights are frozen at (default: identity).

    Returns:
      A `Problem`.
    """
    C = pi.shape[0]
    return Problem(
        pi,
        counts,
        weights,
        *(np.float64(x) for x in (tau, alpha, beta, hard_beta)),
        np.eye(C) if G_weight is None else np.asarray(G_weight, np.float64),
    )


def objective(prob: Problem, loss, psi, phi, hard, frozen):
    """G ↦ F(G) for the data in `prob`.

    Args:
      prob: a `Problem`.
      loss, psi, phi: the loss of SPEC §8.
      hard: hard_beta is on (off: exactly SPEC §9's F).
      frozen: the hard-negative weights come from prob.G_weight_CxC, not from G (the field that
        training follows).

    Returns:
      F, a function of a (C, C) Gram matrix.
    """

    def F(G):
        return objective_from_counts(
            G,
            prob.pi_C,
            prob.counts_NxC,
            prob.weights_N,
            prob.tau,
            loss,
            prob.alpha,
            prob.beta,
            psi,
            phi,
            prob.hard_beta if hard else 0.0,
            prob.G_weight_CxC if frozen else None,
        )

    return F


@functools.partial(jax.jit, static_argnames=STATIC)
def solve(V0_SxCxP, prob: Problem, *, loss, psi, phi, hard=False, frozen=False):
    """Every start of the Burer–Monteiro form min_V F(V̂ V̂ᵀ) by BFGS, vmapped.

    Args:
      V0_SxCxP: the starts, shape (S, C, p).
      prob: a `Problem`.
      loss, psi, phi, hard, frozen: as in `objective` (static).

    Returns:
      G_S (S, C, C), F_S (S,), accepted BFGS steps (S,) and ∇_G F at each G_S (S, C, C), the
      last for the certificate without a second compile.
    """
    F = objective(prob, loss, psi, phi, hard, frozen)
    # F is invariant to the row norms of V, and its gradient in row c is ∝ π_c / ‖V_c‖ (row c's
    # curvature ∝ π_c / ‖V_c‖²): starting the rows at ‖V_c‖ = √(π_c / max π) gives every row an
    # O(1) curvature, so the first steps and the stopping test treat a minority row like a
    # majority one. The norms barely move (each step is orthogonal to V_c, to first order).
    row_scale_C = jnp.sqrt(prob.pi_C / jnp.max(prob.pi_C))
    V0_SxCxP = (
        V0_SxCxP / jnp.linalg.norm(V0_SxCxP, axis=2, keepdims=True) * row_scale_C[None, :, None]
    )

    def one(V0):
        V, value, steps = bfgs(lambda V: F(gram(V)), V0)
        G = gram(V)
        return G, value, steps, jax.grad(F)(G)

    return jax.vmap(one)(V0_SxCxP)


@functools.partial(jax.jit, static_argnames=STATIC)
def values(G_SxCxC, prob: Problem, *, loss, psi, phi, hard=False, frozen=False):
    """F and ∇F at each of a stack of Gram matrices.

    Args:
      G_SxCxC: Gram matrices, shape (S, C, C).
      prob, loss, psi, phi, hard, frozen: as in `solve`.

    Returns:
      F_S (S,) and ∇F (S, C, C).
    """
    return jax.vmap(jax.value_and_grad(objective(prob, loss, psi, phi, hard, frozen)))(G_SxCxC)


def tidy(G_CxC: np.ndarray) -> np.ndarray:
    """G made exactly symmetric, with entries in [−1, 1] and unit diagonal.

    Args:
      G_CxC: a Gram matrix up to rounding, shape (C, C).

    Returns:
      The tidied float64 (C, C) array.
    """
    G = np.clip(0.5 * (G_CxC + G_CxC.T), -1.0, 1.0)
    np.fill_diagonal(G, 1.0)
    return G


def signs(C: int) -> np.ndarray:
    """Every rank-1 Gram matrix of unit vectors: G = σσᵀ, σ ∈ {±1}^C with σ_0 = 1.

    Args:
      C: number of classes.

    Returns:
      float array, shape (2^(C−1), C, C).
    """
    bits = (np.arange(2 ** (C - 1))[:, None] >> np.arange(C - 1)[None, :]) & 1
    sigma = np.concatenate([np.ones((bits.shape[0], 1)), 1.0 - 2.0 * bits], axis=1)
    return sigma[:, :, None] * sigma[:, None, :]
