"""The minimizer G* of the collapsed objective over Gram matrices of unit vectors (SPEC §9), or
G*_p over those of rank ≤ p (SPEC §10): a float64 BFGS over unit-row factors from several starts
(`factored.py`), its KKT certificate, and the rest point of constant-weight hard-negative
training."""

from __future__ import annotations

import math

import jax
import numpy as np

from jaxcl.errors import ConfigError
from jaxcl.experiments.geometry.factored import problem, signs, solve, tidy, values
from jaxcl.experiments.geometry.objective import (
    check_int,
    check_positive,
    check_solver_inputs,
    negative_counts,
)
from jaxcl.losses import hard_off


def kkt_certificate(grad_CxC: np.ndarray, G: np.ndarray, pi: np.ndarray) -> dict:
    """KKT residuals of min F(G) s.t. G ⪰ 0, diag G = 1, from ∇F and G (float64 numpy).

    Args:
      grad_CxC: ∇F at G, shape (C, C) (symmetrized here).
      G: a feasible Gram matrix, shape (C, C).
      pi: class proportions, shape (C,).

    Returns:
      The residuals as `kkt_residuals` returns them.
    """
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
    return {
        "min_eig_Z": float(np.linalg.eigvalsh(Z).min()),
        "ZG_max": float(np.abs(ZG).max()),
        "min_eig_Z_scaled": float(np.linalg.eigvalsh(Z_scaled).min()),
        "ZG_max_scaled": float(np.abs(ZG / pi[:, None]).max()),
    }


def kkt_residuals(
    G,
    pi,
    k: int,
    tau,
    loss: str = "infonce",
    alpha=1.0,
    beta=1.0,
    psi: str = "log1p",
    phi: str = "exp",
    hard_beta=0.0,
) -> dict:
    """The optimality certificate of a feasible G for min F(G) s.t. G ⪰ 0, diag G = 1.

    With ∇F the symmetrized gradient, μ_c = (∇F G)_cc and Z = ∇F − Diag(μ), a feasible G is
    optimal for the convex program iff Z ⪰ 0 and Z G = 0 (Z is the dual slack of the SDP; the
    diagonal of ∇F drops out of Z). Computed in float64. With hard_beta > 0 F need not be
    convex: the residuals then certify a stationary point only (first-order KKT).

    Args:
      G: a Gram matrix of unit vectors, shape (C, C).
      pi, k, tau, loss, alpha, beta, psi, phi, hard_beta: as in `collapsed_objective`.

    Returns:
      {"min_eig_Z": smallest eigenvalue of Z (≥ 0 at the optimum),
       "ZG_max": max |(Z G)_ij| (0 at the optimum),
       "min_eig_Z_scaled", "ZG_max_scaled": the same for D^{-1/2} Z D^{-1/2} and D^{-1} Z G with
       D = Diag(π), which weigh a minority class's rows like a majority's}.

    Raises:
      ConfigError: bad input, naming the field.
    """
    pi, k = check_solver_inputs(pi, k, tau, loss, alpha, beta, psi, phi, hard_beta)
    G = np.asarray(G, dtype=np.float64)
    if G.shape != (pi.shape[0],) * 2:
        raise ConfigError(f"field 'G' of shape {G.shape}: expected {(pi.shape[0],) * 2}")
    with jax.enable_x64(True):
        counts, weights, _ = negative_counts(pi, k)
        _, grad = values(
            G[None],
            problem(pi, counts, weights, tau, alpha, beta, hard_beta),
            loss=loss,
            psi=psi,
            phi=phi,
            hard=not hard_off(hard_beta),
        )
        return kkt_certificate(np.asarray(grad[0], dtype=np.float64), G, pi)


def optimal_gram(
    pi,
    k: int,
    tau,
    loss: str = "infonce",
    alpha=1.0,
    beta=1.0,
    psi: str = "log1p",
    phi: str = "exp",
    n_starts: int = 5,
    seed: int = 0,
    return_info: bool = False,
    rank: int | None = None,
    hard_beta=0.0,
):
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

    With `hard_beta` = β > 0 (SPEC §10) F weighs each negative by e^{β G_cc'} against the
    anchor's other draws (`collapsed_objective`); that F need not be convex, so the starts are
    the multi-start of SPEC §10 and `info["starts_F"]`, `info["F_spread"]` are reported. (The
    minimizer of F is not what training with constant weights settles at: see
    `hard_equilibrium`.)

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
      hard_beta: β ≥ 0 of the hard negatives (0: uniform, SPEC §9's F).

    Returns:
      G* as a float64 (C, C) numpy array (unit diagonal, symmetric); with return_info,
      (G*, info) where info has "F" (F(G*)), "starts_max_dev" (max over starts of
      max|G_start − G*|), "kkt" (see `kkt_residuals`), "method" ("enumeration" or
      "monte-carlo"), "n_counts" (count vectors or draws) and "steps" (BFGS steps per start).
      With `rank` or `hard_beta`, also "starts_F" (F at each start's end) and "F_spread"
      (their max minus min); with `rank`, "rank" (p), "convex_max_dev" (max|G*_p − G*| against the unconstrained G*, computed when
      p ≥ C − 1, else None) and "convex_rank" (the numerical rank of that G*: eigenvalues above
      1e-6, or None).

    Raises:
      ConfigError: bad input, naming the field ('pi', 'k', 'tau', 'n_starts', 'rank',
        'hard_beta', a loss field).
    """
    pi, k = check_solver_inputs(pi, k, tau, loss, alpha, beta, psi, phi, hard_beta)
    n_starts = check_int("n_starts", n_starts, 1)
    seed = check_int("seed", seed, 0)
    C = pi.shape[0]
    p = C if rank is None else check_int("rank", rank, 1)
    if p == 1 and C > 20:
        raise ConfigError(
            f"field 'rank' = 1: solved by enumerating 2^(C-1) sign patterns, "
            f"only for C <= 20 (C = {C})"
        )
    statics = dict(loss=loss, psi=psi, phi=phi, hard=not hard_off(hard_beta))
    with jax.enable_x64(True):
        counts, weights, method = negative_counts(pi, k, seed=seed)
        prob = problem(pi, counts, weights, tau, alpha, beta, hard_beta)
        if p == 1:
            G_S = signs(C)
            F_S, grad_S = (np.asarray(a) for a in values(G_S, prob, **statics))
            steps_S = np.zeros(G_S.shape[0], np.int64)
        else:
            V0 = np.random.default_rng(seed).standard_normal((n_starts, C, p))
            G_S, F_S, steps_S, grad_S = (np.asarray(a) for a in solve(V0, prob, **statics))
    best = int(np.argmin(F_S))
    G = tidy(G_S[best])
    if not return_info:
        return G
    info = {
        "F": float(F_S[best]),
        "starts_max_dev": float(np.abs(G_S - G[None]).max()),
        "kkt": kkt_certificate(grad_S[best].astype(np.float64), G, pi),
        "method": method,
        "n_counts": int(counts.shape[0]),
        "steps": [int(i) for i in steps_S],
    }
    if rank is not None or statics["hard"]:
        info.update(starts_F=[float(x) for x in F_S], F_spread=float(np.max(F_S) - np.min(F_S)))
    if rank is not None:
        info.update(rank=p, convex_max_dev=None, convex_rank=None)
        if p >= C - 1:
            G_convex = optimal_gram(
                pi, k, tau, loss, alpha, beta, psi, phi, n_starts, seed, hard_beta=hard_beta
            )
            info.update(
                convex_max_dev=float(np.abs(G - G_convex).max()),
                convex_rank=int(np.sum(np.linalg.eigvalsh(G_convex) > 1e-6)),
            )
    return G, info


def hard_equilibrium(
    pi,
    k: int,
    tau,
    hard_beta,
    loss: str = "infonce",
    alpha=1.0,
    beta=1.0,
    psi: str = "log1p",
    phi: str = "exp",
    n_starts: int = 5,
    seed: int = 0,
    max_iter: int = 200,
    tol: float = 1e-9,
    return_info: bool = False,
):
    """G°(β): the geometry that training with constant hard-negative weights settles at.

    Training holds the weights v_i constant in the gradient (SPEC §10), so in the collapsed
    limit it follows ∇_G F(G; w) with w frozen at the current G, not ∇F of `optimal_gram`'s
    F(G; w(G)). Its rest points are the fixed points G = argmin_G' F(G'; w(G)), each inner
    problem convex (constant weights). Found by a damped iteration of that map T from
    `optimal_gram`'s minimizer, G ← (1 − η) G + η T(G) (a convex combination stays a Gram
    matrix of unit vectors), η = 1 halved whenever the residual max|T(G) − G| fails to shrink
    (the undamped map can cycle at large β), each solve warm-started at the current G, until
    the residual is ≤ tol. β = 0 gives G*. A fixed point need not be unique.

    Args:
      pi, k, tau, loss, alpha, beta, psi, phi, n_starts, seed: as in `optimal_gram`.
      hard_beta: β ≥ 0.
      max_iter: iterations of the map, ≥ 1.
      tol: max|ΔG| at which it stops, > 0.
      return_info: also return {"iterations", "residual" (max|T(G°) − G°|), "converged",
        "damping" (the last η), "max_dev_from_minimizer" (max|G° − argmin F|)}.

    Returns:
      G° as a float64 (C, C) numpy array, or (G°, info).

    Raises:
      ConfigError: bad input, naming the field.
    """
    G_min = optimal_gram(
        pi, k, tau, loss, alpha, beta, psi, phi, n_starts, seed, hard_beta=hard_beta
    )
    max_iter = check_int("max_iter", max_iter, 1)
    check_positive("tol", tol)
    pi, k = check_solver_inputs(pi, k, tau, loss, alpha, beta, psi, phi, hard_beta)
    G, it, resid, eta = G_min, 0, 0.0, 1.0
    if not hard_off(hard_beta):
        with jax.enable_x64(True):
            counts, weights, _ = negative_counts(pi, k, seed=seed)

            def T(G):
                lam, U = np.linalg.eigh(G)
                V0 = (U * np.sqrt(np.maximum(lam, 1e-12)))[None]  # a factor of G: warm start
                prob = problem(pi, counts, weights, tau, alpha, beta, hard_beta, G_weight=G)
                G_S = solve(V0, prob, loss=loss, psi=psi, phi=phi, hard=True, frozen=True)[0]
                return tidy(np.asarray(G_S[0]))

            resid = math.inf
            for it in range(1, max_iter + 1):
                TG = T(G)
                new_resid = float(np.abs(TG - G).max())
                if new_resid >= resid:
                    eta = max(eta / 2, 1e-3)
                resid = new_resid
                if resid <= tol:
                    break
                G = tidy((1 - eta) * G + eta * TG)
    if not return_info:
        return G
    return G, {
        "iterations": it,
        "residual": resid,
        "converged": resid <= tol,
        "damping": eta,
        "max_dev_from_minimizer": float(np.abs(G - G_min).max()),
    }
