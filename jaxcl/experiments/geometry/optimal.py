"""The convex program of SPEC §9: the minimizer G* of the collapsed objective over Gram matrices
of unit vectors (a float64 BFGS over unit-row factors, several starts, a KKT certificate), and
the minority-collapse threshold ρ*. The objective itself is in `objective.py`."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.errors import ConfigError
from jaxcl.experiments.geometry.bfgs import bfgs
from jaxcl.experiments.geometry.objective import (_check_int, _check_positive,
                                                  _check_solver_inputs, _objective,
                                                  negative_counts)
# Also public through this module (tests and jaxcl.geometry import them from here):
from jaxcl.experiments.geometry.objective import (  # noqa: F401
    MAX_ENUMERATE, N_DRAWS, collapsed_objective, multinomial_counts, n_count_vectors,
    simplex_etf)

COLLAPSE_TOL = 1e-4  # SPEC §9: minority c ≠ c' collapsed when G*_cc' ≥ 1 − 1e-4


# ---------------------------------------------------------------------------------------------
# the minimizer G* and its optimality certificate


def _gram(V_CxP):
    """G = V̂ V̂ᵀ with unit rows V̂_c = V_c / ‖V_c‖: PSD with unit diagonal (and rank ≤ p) by
    construction."""
    Vn = V_CxP / jnp.linalg.norm(V_CxP, axis=1, keepdims=True)
    eye = jnp.eye(V_CxP.shape[0], dtype=V_CxP.dtype)
    return (Vn @ Vn.T) * (1.0 - eye) + eye  # diag exactly 1 (it is fixed in the program)


@functools.partial(jax.jit, static_argnames=("loss", "psi", "phi"))
def _solve(V0_SxCxP, pi_C, counts_NxC, weights_N, tau, alpha, beta, *, loss, psi, phi):
    """Every start of the Burer–Monteiro form min_V F(V̂ V̂ᵀ), vmapped; V0 is (S, C, p).

    Returns G_S (S, C, C), F_S (S,), accepted BFGS steps (S,) and ∇_G F at each G_S (S, C, C),
    the last for the certificate without a second compile.
    """
    def F(G):
        return _objective(G, pi_C, counts_NxC, weights_N, tau, loss, alpha, beta, psi, phi)

    # F is invariant to the row norms of V, and its gradient in row c is ∝ π_c / ‖V_c‖ (row c's
    # curvature ∝ π_c / ‖V_c‖²): starting the rows at ‖V_c‖ = √(π_c / max π) gives every row an
    # O(1) curvature, so the first steps and the stopping test treat a minority row like a
    # majority one. The norms barely move (each step is orthogonal to V_c, to first order).
    row_scale_C = jnp.sqrt(pi_C / jnp.max(pi_C))
    V0_SxCxP = (V0_SxCxP / jnp.linalg.norm(V0_SxCxP, axis=2, keepdims=True)
                * row_scale_C[None, :, None])

    def one(V0):
        V, value, steps = bfgs(lambda V: F(_gram(V)), V0)
        G = _gram(V)
        return G, value, steps, jax.grad(F)(G)

    return jax.vmap(one)(V0_SxCxP)


@functools.partial(jax.jit, static_argnames=("loss", "psi", "phi"))
def _grad(G_CxC, pi_C, counts_NxC, weights_N, tau, alpha, beta, *, loss, psi, phi):
    return jax.grad(_objective)(G_CxC, pi_C, counts_NxC, weights_N, tau, loss, alpha, beta, psi,
                                phi)


def _kkt(grad_CxC: np.ndarray, G: np.ndarray, pi: np.ndarray) -> dict:
    """KKT residuals of min F(G) s.t. G ⪰ 0, diag G = 1, from ∇F and G (float64 numpy)."""
    # F is read as a function of the symmetric G: its gradient is the symmetrized one
    grad = 0.5 * (grad_CxC + grad_CxC.T)
    # Stationarity ∇F = Z + Diag(μ) with the complementarity Z G = 0 gives μ_c = (∇F G)_cc; the
    # diagonal of ∇F cancels out of Z_cc = −Σ_{c'≠c} ∇F_cc' G_c'c, so it is handled consistently.
    mu = np.diag(grad @ G)
    Z = grad - np.diag(mu)
    ZG = Z @ G
    # Row c of ∇F scales with π_c, so tiny classes hide in the absolute residuals. Z ⪰ 0 and
    # Z G = 0 are unchanged by the congruence D^{-1/2} Z D^{-1/2} (D = Diag π) and by D^{-1} Z G,
    # which put every row on a majority's scale: the "_scaled" residuals.
    isqrt = 1.0 / np.sqrt(pi)
    Z_scaled = Z * isqrt[:, None] * isqrt[None, :]
    return {"min_eig_Z": float(np.linalg.eigvalsh(Z).min()),
            "ZG_max": float(np.abs(ZG).max()),
            "min_eig_Z_scaled": float(np.linalg.eigvalsh(Z_scaled).min()),
            "ZG_max_scaled": float(np.abs(ZG / pi[:, None]).max())}


def kkt_residuals(G, pi, k: int, tau, loss: str = "infonce", alpha=1.0, beta=1.0,
                  psi: str = "log1p", phi: str = "exp") -> dict:
    """The optimality certificate of a feasible G for min F(G) s.t. G ⪰ 0, diag G = 1.

    With ∇F the symmetrized gradient, μ_c = (∇F G)_cc and Z = ∇F − Diag(μ), a feasible G is
    optimal for the convex program iff Z ⪰ 0 and Z G = 0 (Z is the dual slack of the SDP; the
    diagonal of ∇F drops out of Z). Computed in float64.

    Args:
      G: a Gram matrix of unit vectors, shape (C, C).
      pi, k, tau, loss, alpha, beta, psi, phi: as in `collapsed_objective`.

    Returns:
      {"min_eig_Z": smallest eigenvalue of Z (≥ 0 at the optimum),
       "ZG_max": max |(Z G)_ij| (0 at the optimum),
       "min_eig_Z_scaled", "ZG_max_scaled": the same for D^{-1/2} Z D^{-1/2} and D^{-1} Z G with
       D = Diag(π), which weigh a minority class's rows like a majority's}.

    Raises:
      ConfigError: bad input, naming the field.
    """
    pi, k = _check_solver_inputs(pi, k, tau, loss, alpha, beta, psi, phi)
    G = np.asarray(G, dtype=np.float64)
    if G.shape != (pi.shape[0],) * 2:
        raise ConfigError(f"field 'G' of shape {G.shape}: expected {(pi.shape[0],) * 2}")
    with jax.enable_x64(True):
        counts, weights, _ = negative_counts(pi, k)
        grad = _grad(G, pi, counts, weights, np.float64(tau), np.float64(alpha),
                     np.float64(beta), loss=loss, psi=psi, phi=phi)
        return _kkt(np.asarray(grad, dtype=np.float64), G, pi)


def optimal_gram(pi, k: int, tau, loss: str = "infonce", alpha=1.0, beta=1.0, psi: str = "log1p",
                 phi: str = "exp", n_starts: int = 5, seed: int = 0, return_info: bool = False,
                 rank: int | None = None):
    """G*, the minimizer of the collapsed objective F over Gram matrices of unit vectors (SPEC §9),
    or G*_p, its minimizer over those of rank ≤ p (SPEC §10, `rank=p`).

    Solves min F(G) s.t. G ⪰ 0, diag G = 1 (no rank constraint) in the Burer–Monteiro form
    G = V̂ V̂ᵀ, V ∈ R^{C×C} with normalized rows V̂_c = V_c / ‖V_c‖, by BFGS in float64 (inside
    `jax.enable_x64(True)`; the process-wide flag is left alone). With rank C the factorized
    problem has no spurious local minima (a rank-deficient second-order critical point of a
    convex SDP is optimal), so every start should reach G*; the dense quasi-Newton model absorbs
    the π_c and π_c π_c' scaling of the minority rows' gradients that stalls plain gradient
    descent, the minority rows start at norm √(π_c / max π) so that their curvature is O(1), and
    the stopping test is on the step, not on F. `n_starts` seeded random starts run vmapped and
    the lowest F is kept. One compile per (C, number of count vectors, n_starts, loss, psi, phi);
    π, τ, α, β are traced.

    With `rank=p` the factor is V ∈ R^{C×p} (unit rows), the Burer–Monteiro form of the
    rank-constrained problem, which is not convex for p < C: its starts may end at different
    local minima, and the lowest F is kept (`info["F_spread"]` says how far apart they ended).
    For p ≥ C − 1 and a G* of rank ≤ p it returns G* (`info["convex_max_dev"]`). p = 1 (unit
    rows ±1) is solved exactly by enumerating the 2^(C−1) sign patterns (C ≤ 20).

    Args:
      pi: class proportions π, shape (C,), C ≥ 2, positive, summing to 1 (within 1e-6).
      k: number of negatives per anchor, ≥ 1.
      tau: temperature τ > 0.
      loss, alpha, beta, psi, phi: the loss of SPEC §8 (balanced needs β > 0: with s⁺ = 1 fixed,
        α only adds a constant and β only scales F, so G* does not depend on them).
      n_starts: random starts, ≥ 1.
      seed: seed of the starts (and of the Monte Carlo draws if any).
      return_info: also return the certificate.
      rank: None (no rank constraint: V is C × C) or p ≥ 1, the rank bound.

    Returns:
      G* as a float64 (C, C) numpy array (unit diagonal, symmetric); with return_info,
      (G*, info) where info has "F" (F(G*)), "starts_max_dev" (max over starts of
      max|G_start − G*|), "kkt" (see `kkt_residuals`), "method" ("enumeration" or
      "monte-carlo"), "n_counts" (count vectors or draws) and "steps" (BFGS steps per start).
      With `rank`, also "rank" (p), "starts_F" (F at each start's end), "F_spread" (their max
      minus min), "convex_max_dev" (max|G*_p − G*| against the unconstrained G*, computed when
      p ≥ C − 1, else None) and "convex_rank" (the numerical rank of that G*: eigenvalues above
      1e-6, or None).

    Raises:
      ConfigError: bad input, naming the field ('pi', 'k', 'tau', 'n_starts', 'rank', a loss
        field).
    """
    pi, k = _check_solver_inputs(pi, k, tau, loss, alpha, beta, psi, phi)
    n_starts = _check_int("n_starts", n_starts, 1)
    seed = _check_int("seed", seed, 0)
    C = pi.shape[0]
    p = C if rank is None else _check_int("rank", rank, 1)
    if p == 1 and C > 20:
        raise ConfigError(f"field 'rank' = 1: solved by enumerating 2^(C-1) sign patterns, "
                          f"only for C <= 20 (C = {C})")
    with jax.enable_x64(True):
        counts, weights, method = negative_counts(pi, k, seed=seed)
        if p == 1:
            G_S, F_S, steps_S, grad_S = _signs(pi, counts, weights, tau, alpha, beta, loss, psi,
                                               phi)
        else:
            V0 = np.random.default_rng(seed).standard_normal((n_starts, C, p))
            out = _solve(V0, pi, counts, weights, np.float64(tau), np.float64(alpha),
                         np.float64(beta), loss=loss, psi=psi, phi=phi)
            G_S, F_S, steps_S, grad_S = (np.asarray(a) for a in out)
    best = int(np.argmin(F_S))
    G = np.clip(0.5 * (G_S[best] + G_S[best].T), -1.0, 1.0)
    np.fill_diagonal(G, 1.0)
    if not return_info:
        return G
    info = {"F": float(F_S[best]),
            "starts_max_dev": float(np.abs(G_S - G[None]).max()),
            "kkt": _kkt(grad_S[best].astype(np.float64), G, pi),
            "method": method,
            "n_counts": int(counts.shape[0]),
            "steps": [int(i) for i in steps_S]}
    if rank is not None:
        info.update(rank=p, starts_F=[float(x) for x in F_S],
                    F_spread=float(np.max(F_S) - np.min(F_S)), convex_max_dev=None,
                    convex_rank=None)
        if p >= C - 1:
            G_convex = optimal_gram(pi, k, tau, loss, alpha, beta, psi, phi, n_starts, seed)
            info.update(convex_max_dev=float(np.abs(G - G_convex).max()),
                        convex_rank=int(np.sum(np.linalg.eigvalsh(G_convex) > 1e-6)))
    return G, info


def _signs(pi, counts, weights, tau, alpha, beta, loss, psi, phi):
    """Rank 1: every G = σσᵀ, σ ∈ {±1}^C with σ_0 = 1, evaluated (G_S, F_S, steps, ∇F)."""
    C = pi.shape[0]
    bits = (np.arange(2 ** (C - 1))[:, None] >> np.arange(C - 1)[None, :]) & 1
    sigma = np.concatenate([np.ones((bits.shape[0], 1)), 1.0 - 2.0 * bits], axis=1)
    G_S = sigma[:, :, None] * sigma[:, None, :]
    F_S, grad_S = (np.asarray(a) for a in _values(G_S, pi, counts, weights, np.float64(tau),
                                                  np.float64(alpha), np.float64(beta),
                                                  loss=loss, psi=psi, phi=phi))
    return G_S, F_S, np.zeros(G_S.shape[0], np.int64), grad_S


@functools.partial(jax.jit, static_argnames=("loss", "psi", "phi"))
def _values(G_SxCxC, pi_C, counts_NxC, weights_N, tau, alpha, beta, *, loss, psi, phi):
    """F and ∇F at each of a stack of Gram matrices."""
    return jax.vmap(jax.value_and_grad(
        lambda G: _objective(G, pi_C, counts_NxC, weights_N, tau, loss, alpha, beta, psi, phi)
    ))(G_SxCxC)


# ---------------------------------------------------------------------------------------------
# the minority-collapse threshold ρ*


def _minority_cos(G: np.ndarray, n_major: int) -> float:
    """min G_cc' over distinct minority classes c ≠ c' (classes n_major … C − 1)."""
    M = G[n_major:, n_major:]
    return float(M[~np.eye(M.shape[0], dtype=bool)].min())


def collapse_threshold(n_major: int, n_minor: int, k: int, tau, loss: str = "infonce",
                       alpha=1.0, beta=1.0, psi: str = "log1p", phi: str = "exp",
                       tol: float = 1e-3, n_starts: int = 2, rank: int | None = None) -> float:
    """ρ*, the largest minority ratio at which the minority class means collapse (SPEC §9).

    Classes: n_major of weight 1 and n_minor of weight ρ, π ∝ (1, …, 1, ρ, …, ρ). Collapse is
    G*_cc' ≥ 1 − 1e-4 for every pair of distinct minority classes. Bisection on log ρ over
    [1e-6, 1] to relative tolerance `tol`, assuming collapse for every ρ below ρ* and none above;
    each step is one `optimal_gram` with `n_starts` (default 2, fewer than optimal_gram's 5 for
    speed: F is convex, so starts only guard against a stalled run) sharing one compile.

    Args:
      n_major: number of majority classes, ≥ 1.
      n_minor: number of minority classes, ≥ 2.
      k, tau, loss, alpha, beta, psi, phi: as in `optimal_gram`.
      tol: relative tolerance on ρ*, > 0.
      n_starts: random starts per solve.
      rank: None, or p for the threshold of the rank-constrained G*_p (`optimal_gram`'s rank;
        not convex for p < C − 1, so give it more starts there).

    Returns:
      ρ* ∈ (0, 1), the largest ratio found to collapse: the minorities do not collapse at
      ρ*(1 + tol). 0.0 when they do not collapse even at ρ = 1e-6, 1.0 when they collapse at
      ρ = 1 (not expected: balanced classes give the ETF).

    Raises:
      ConfigError: bad input, naming the field ('n_major', 'n_minor', 'tol', ...).
    """
    n_major = _check_int("n_major", n_major, 1)
    n_minor = _check_int("n_minor", n_minor, 2)
    _check_positive("tol", tol)
    C = n_major + n_minor

    def collapsed(rho: float) -> bool:
        w = np.concatenate([np.ones(n_major), np.full(n_minor, rho)])
        G = optimal_gram(w / w.sum(), k, tau, loss, alpha, beta, psi, phi, n_starts=n_starts,
                         rank=rank)
        return _minority_cos(G, n_major) >= 1.0 - COLLAPSE_TOL

    _check_solver_inputs(np.full(C, 1.0 / C), k, tau, loss, alpha, beta, psi, phi)
    lo, hi = 1e-6, 1.0
    if not collapsed(lo):
        return 0.0
    if collapsed(hi):
        return 1.0
    while hi / lo > 1.0 + tol:  # invariant: collapsed at lo, not at hi
        mid = math.sqrt(lo * hi)
        if collapsed(mid):
            lo = mid
        else:
            hi = mid
    return lo
