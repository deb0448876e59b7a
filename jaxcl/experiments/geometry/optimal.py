"""The convex program of SPEC §9: the minimizer G* of the collapsed objective over Gram matrices
of unit vectors (a float64 BFGS over unit-row factors, several starts, a KKT certificate), and
the minority-collapse threshold ρ*. The objective itself is in `objective.py`."""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.errors import ConfigError
from jaxcl.experiments.geometry.bfgs import bfgs
from jaxcl.losses import hard_off
from jaxcl.experiments.geometry.objective import (
    check_int,
    check_positive,
    check_solver_inputs,
    objective_from_counts,
    negative_counts,
)

# Also public through this module (tests and jaxcl.geometry import them from here):
from jaxcl.experiments.geometry.objective import (  # noqa: F401
    MAX_ENUMERATE,
    N_DRAWS,
    collapsed_objective,
    multinomial_counts,
    n_count_vectors,
    simplex_etf,
)

COLLAPSE_TOL = 1e-4  # SPEC §9: minority c ≠ c' collapsed when G*_cc' ≥ 1 − 1e-4


# ---------------------------------------------------------------------------------------------
# the minimizer G* and its optimality certificate


def _gram(V_CxP):
    """G = V̂ V̂ᵀ with unit rows V̂_c = V_c / ‖V_c‖: PSD with unit diagonal (and rank ≤ p) by
    construction."""
    Vn = V_CxP / jnp.linalg.norm(V_CxP, axis=1, keepdims=True)
    eye = jnp.eye(V_CxP.shape[0], dtype=V_CxP.dtype)
    return (Vn @ Vn.T) * (1.0 - eye) + eye  # diag exactly 1 (it is fixed in the program)


_STATIC = ("loss", "psi", "phi", "hard", "frozen")


class _Problem(NamedTuple):
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


def _problem(pi, counts, weights, tau, alpha, beta, hard_beta=0.0, G_weight=None) -> _Problem:
    C = pi.shape[0]
    return _Problem(
        pi,
        counts,
        weights,
        *(np.float64(x) for x in (tau, alpha, beta, hard_beta)),
        np.eye(C) if G_weight is None else np.asarray(G_weight, np.float64),
    )


def _F(prob: _Problem, loss, psi, phi, hard, frozen):
    """G ↦ F(G). `hard`: hard_beta is on (off: exactly SPEC §9's F); `frozen`: the hard-negative
    weights come from prob.G_weight_CxC, not from G (the field that training follows)."""

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


@functools.partial(jax.jit, static_argnames=_STATIC)
def _solve(V0_SxCxP, prob: _Problem, *, loss, psi, phi, hard=False, frozen=False):
    """Every start of the Burer–Monteiro form min_V F(V̂ V̂ᵀ), vmapped; V0 is (S, C, p).

    Returns G_S (S, C, C), F_S (S,), accepted BFGS steps (S,) and ∇_G F at each G_S (S, C, C),
    the last for the certificate without a second compile.
    """
    F = _F(prob, loss, psi, phi, hard, frozen)
    # F is invariant to the row norms of V, and its gradient in row c is ∝ π_c / ‖V_c‖ (row c's
    # curvature ∝ π_c / ‖V_c‖²): starting the rows at ‖V_c‖ = √(π_c / max π) gives every row an
    # O(1) curvature, so the first steps and the stopping test treat a minority row like a
    # majority one. The norms barely move (each step is orthogonal to V_c, to first order).
    row_scale_C = jnp.sqrt(prob.pi_C / jnp.max(prob.pi_C))
    V0_SxCxP = (
        V0_SxCxP / jnp.linalg.norm(V0_SxCxP, axis=2, keepdims=True) * row_scale_C[None, :, None]
    )

    def one(V0):
        V, value, steps = bfgs(lambda V: F(_gram(V)), V0)
        G = _gram(V)
        return G, value, steps, jax.grad(F)(G)

    return jax.vmap(one)(V0_SxCxP)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _values(G_SxCxC, prob: _Problem, *, loss, psi, phi, hard=False, frozen=False):
    """F and ∇F at each of a stack of Gram matrices."""
    return jax.vmap(jax.value_and_grad(_F(prob, loss, psi, phi, hard, frozen)))(G_SxCxC)


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
        _, grad = _values(
            G[None],
            _problem(pi, counts, weights, tau, alpha, beta, hard_beta),
            loss=loss,
            psi=psi,
            phi=phi,
            hard=not hard_off(hard_beta),
        )
        return _kkt(np.asarray(grad[0], dtype=np.float64), G, pi)


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
        prob = _problem(pi, counts, weights, tau, alpha, beta, hard_beta)
        if p == 1:
            G_S = _signs(C)
            F_S, grad_S = (np.asarray(a) for a in _values(G_S, prob, **statics))
            steps_S = np.zeros(G_S.shape[0], np.int64)
        else:
            V0 = np.random.default_rng(seed).standard_normal((n_starts, C, p))
            G_S, F_S, steps_S, grad_S = (np.asarray(a) for a in _solve(V0, prob, **statics))
    best = int(np.argmin(F_S))
    G = _tidy(G_S[best])
    if not return_info:
        return G
    info = {
        "F": float(F_S[best]),
        "starts_max_dev": float(np.abs(G_S - G[None]).max()),
        "kkt": _kkt(grad_S[best].astype(np.float64), G, pi),
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


def _tidy(G_CxC: np.ndarray) -> np.ndarray:
    """Symmetric, entries in [−1, 1], unit diagonal (float64)."""
    G = np.clip(0.5 * (G_CxC + G_CxC.T), -1.0, 1.0)
    np.fill_diagonal(G, 1.0)
    return G


def _signs(C: int) -> np.ndarray:
    """Rank 1: every G = σσᵀ, σ ∈ {±1}^C with σ_0 = 1, shape (2^(C−1), C, C)."""
    bits = (np.arange(2 ** (C - 1))[:, None] >> np.arange(C - 1)[None, :]) & 1
    sigma = np.concatenate([np.ones((bits.shape[0], 1)), 1.0 - 2.0 * bits], axis=1)
    return sigma[:, :, None] * sigma[:, None, :]


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
                prob = _problem(pi, counts, weights, tau, alpha, beta, hard_beta, G_weight=G)
                G_S = _solve(V0, prob, loss=loss, psi=psi, phi=phi, hard=True, frozen=True)[0]
                return _tidy(np.asarray(G_S[0]))

            resid = math.inf
            for it in range(1, max_iter + 1):
                TG = T(G)
                new_resid = float(np.abs(TG - G).max())
                if new_resid >= resid:
                    eta = max(eta / 2, 1e-3)
                resid = new_resid
                if resid <= tol:
                    break
                G = _tidy((1 - eta) * G + eta * TG)
    if not return_info:
        return G
    return G, {
        "iterations": it,
        "residual": resid,
        "converged": resid <= tol,
        "damping": eta,
        "max_dev_from_minimizer": float(np.abs(G - G_min).max()),
    }


# ---------------------------------------------------------------------------------------------
# the minority-collapse threshold ρ*


def _minority_cos(G: np.ndarray, n_major: int) -> float:
    """min G_cc' over distinct minority classes c ≠ c' (classes n_major … C − 1)."""
    M = G[n_major:, n_major:]
    return float(M[~np.eye(M.shape[0], dtype=bool)].min())


def _bracket_root(margin, x_lo: float, x_hi: float, width: float, flat: float):
    """Shrinks [x_lo, x_hi] (margin ≥ 0 at x_lo, < 0 at x_hi) to width ≤ `width`.

    The margin is `flat` over a whole range of x (a collapsed minority cosine is exactly 1) and
    smooth below that (1 − cos grows linearly in ρ past a continuous transition), so a secant
    through points on both sides of the root would hug the flat end. Bisection first, down to
    a bracket of 0.01; then each trial is the secant through the last two points off the flat
    part, extrapolated to 0 and moved 0.4 · width toward the end that did not move last (an
    accurate estimate then closes the bracket in two trials), or a bisection while there are
    fewer than two such points, after a trial on the flat part, when the secant leaves the
    bracket, or when two trials in a row failed to halve it (a jump in the margin: a
    discontinuous transition).
    """
    smooth, moved_lo, stalled, fresh = [], False, 0, False
    while x_hi - x_lo > width:
        size, x = x_hi - x_lo, 0.5 * (x_lo + x_hi)
        if size <= 0.01 and len(smooth) >= 2 and stalled < 2 and fresh:
            (x1, m1), (x2, m2) = smooth[-2:]
            est = x2 - m2 * (x2 - x1) / (m2 - m1) if m2 != m1 else math.nan
            est += 0.4 * width if moved_lo else -0.4 * width
            if x_lo < est < x_hi:
                x = min(max(est, x_lo + 0.1 * width), x_hi - 0.1 * width)
        m = margin(x)
        fresh = m < flat * (1.0 - 1e-6)
        if fresh:
            smooth.append((x, m))
        moved_lo = m >= 0
        if moved_lo:
            x_lo = x
        else:
            x_hi = x
        stalled = stalled + 1 if x_hi - x_lo > 0.5 * size else 0
    return x_lo, x_hi


def collapse_threshold(
    n_major: int,
    n_minor: int,
    k: int,
    tau,
    loss: str = "infonce",
    alpha=1.0,
    beta=1.0,
    psi: str = "log1p",
    phi: str = "exp",
    tol: float = 1e-7,
    n_starts: int = 2,
    rank: int | None = None,
    hard_beta=0.0,
    hard_target: str = "minimizer",
) -> float:
    """ρ*, the largest minority ratio at which the minority class means collapse (SPEC §9).

    Classes: n_major of weight 1 and n_minor of weight ρ, π ∝ (1, …, 1, ρ, …, ρ). Collapse is
    G*_cc' ≥ 1 − 1e-4 for every pair of distinct minority classes, assumed for every ρ below ρ*
    and for none above. A root search on log ρ over [1e-6, 1] for the margin min_cc' G*_cc' −
    (1 − 1e-4) (≥ 0 collapsed): bisection, then secant steps where the cosine is below 1
    (`_bracket_root`), until the bracket
    [lo, hi] (collapsed at lo, not at hi) has hi/lo ≤ 1 + `tol`; its geometric midpoint is
    returned, within tol/2 of any ratio in the bracket. Each step is one `optimal_gram` with
    `n_starts` (default 2, fewer than optimal_gram's 5 for speed: F is convex, so starts only
    guard against a stalled run) sharing one compile.

    Args:
      n_major: number of majority classes, ≥ 1.
      n_minor: number of minority classes, ≥ 2.
      k, tau, loss, alpha, beta, psi, phi: as in `optimal_gram`.
      tol: relative width of the final bracket, > 0 (the default gives ρ* to 1e-7 relative,
        as far as the solves resolve the minority cosine: about 1e-9 near ρ*).
      n_starts: random starts per solve.
      rank: None, or p for the threshold of the rank-constrained G*_p (`optimal_gram`'s rank;
        not convex for p < C − 1, so give it more starts there).
      hard_beta: β of the hard negatives.
      hard_target: with hard_beta > 0, whose minority cosine decides collapse: "minimizer"
        (`optimal_gram`'s minimizer of F under the weighting) or "rest" (`hard_equilibrium`,
        where training with constant weights settles; rank must then be None).

    Returns:
      ρ* ∈ (0, 1), the midpoint of the final bracket. 0.0 when the minorities do not collapse
      even at ρ = 1e-6, 1.0 when they collapse at ρ = 1 (not expected: balanced classes give
      the ETF).

    Raises:
      ConfigError: bad input, naming the field ('n_major', 'n_minor', 'tol', ...).
    """
    if hard_target not in ("minimizer", "rest") or (hard_target == "rest" and rank is not None):
        raise ConfigError(
            f"field 'hard_target' = {hard_target!r}: expected 'minimizer' or "
            "'rest' (the latter without rank)"
        )
    n_major = check_int("n_major", n_major, 1)
    n_minor = check_int("n_minor", n_minor, 2)
    check_positive("tol", tol)
    C = n_major + n_minor

    def margin(log_rho: float) -> float:
        w = np.concatenate([np.ones(n_major), np.full(n_minor, math.exp(log_rho))])
        if hard_target == "rest":
            G = hard_equilibrium(
                w / w.sum(), k, tau, hard_beta, loss, alpha, beta, psi, phi, n_starts=n_starts
            )
        else:
            G = optimal_gram(
                w / w.sum(),
                k,
                tau,
                loss,
                alpha,
                beta,
                psi,
                phi,
                n_starts=n_starts,
                rank=rank,
                hard_beta=hard_beta,
            )
        return _minority_cos(G, n_major) - (1.0 - COLLAPSE_TOL)

    check_solver_inputs(np.full(C, 1.0 / C), k, tau, loss, alpha, beta, psi, phi, hard_beta)
    x_lo, x_hi = math.log(1e-6), 0.0
    m_lo = margin(x_lo)
    if m_lo < 0:
        return 0.0
    if margin(x_hi) >= 0:
        return 1.0
    x_lo, x_hi = _bracket_root(margin, x_lo, x_hi, math.log1p(tol), COLLAPSE_TOL)
    return math.exp(0.5 * (x_lo + x_hi))
