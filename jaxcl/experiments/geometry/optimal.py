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
from jaxcl.experiments.geometry.objective import (_check_int, _check_positive,
                                                  _check_solver_inputs, _objective,
                                                  negative_counts)
# Also public through this module (tests and jaxcl.geometry import them from here):
from jaxcl.experiments.geometry.objective import (  # noqa: F401
    MAX_ENUMERATE, N_DRAWS, collapsed_objective, multinomial_counts, n_count_vectors,
    simplex_etf)

COLLAPSE_TOL = 1e-4  # SPEC §9: minority c ≠ c' collapsed when G*_cc' ≥ 1 − 1e-4
_MAX_EVALS = 5000  # evaluations of F and ∇F per start; typical solves need 20–300
_MAX_TRIALS = 40  # trial steps of one linesearch
_XTOL = 1e-12  # a step turning every row by less than this (radians) is "no move"
_SMALL_STEPS = 3  # that many such steps in a row: converged
_PATIENCE = 100  # steps without a new smallest gradient norm: at the noise floor


# ---------------------------------------------------------------------------------------------
# the minimizer G* and its optimality certificate


def _gram(V_CxC):
    """G = V̂ V̂ᵀ with unit rows V̂_c = V_c / ‖V_c‖: PSD with unit diagonal by construction."""
    Vn = V_CxC / jnp.linalg.norm(V_CxC, axis=1, keepdims=True)
    eye = jnp.eye(V_CxC.shape[0], dtype=V_CxC.dtype)
    return (Vn @ Vn.T) * (1.0 - eye) + eye  # diag exactly 1 (it is fixed in the program)


def _bfgs(f, V0):
    """Minimizes f from V0 by BFGS, weak-Wolfe bisection linesearch: (V, f(V), accepted steps).

    One while_loop whose every pass evaluates f and ∇f once (a trial step of the linesearch), so
    f is traced once and the solver compiles about a third faster than optax.lbfgs with its zoom
    linesearch (which traces f several times). The dense inverse-Hessian model (C² ≤ a few
    hundred unknowns) learns the curvature of every direction, which plain gradient descent
    lacks when some π_c are tiny.

    A trial step α along d = −H∇f is accepted when it satisfies the weak Wolfe conditions, with
    Armijo's sufficient decrease replaced near the optimum by the approximate one of Hager and
    Zhang (f within 1e-10 |f| of the current value and φ'(α) ≤ (2δ − 1) φ'(0)): the minority
    entries move F by O(π_c π_c') (≈ 1e-13 at π_c = 5e-7), below float64 resolution of F ≈ 1,
    while their gradient is still resolved. Too long a step halves the bracket, too short a step
    doubles (or bisects) it.

    Stops when `_SMALL_STEPS` accepted steps in a row turn every row V_c by less than `_XTOL`
    radians: near the optimum a BFGS step is a Newton step, the distance left, whatever the scale
    of F (a gradient-norm test is not: at small τ every e^{(G − 1)/τ} makes F flat). Also stops
    when the gradient norm has not reached a new minimum for `_PATIENCE` steps (its noise floor),
    after `_MAX_EVALS` evaluations, or when a linesearch fails twice in a row.
    """
    shape = V0.shape
    n = V0.size
    eye = jnp.eye(n, dtype=V0.dtype)

    def vg(x):
        value, grad = jax.value_and_grad(lambda x: f(x.reshape(shape)))(x)
        return value, grad

    def new_direction(H, g):
        d = -H @ g
        descent = g @ d < 0  # rounding can spoil a nearly singular H: fall back to −∇f
        return jnp.where(descent, d, -g), jnp.where(descent, H, eye)

    def body(c):
        x, fx, g, H, d, alpha, lo, hi, trials, fails, it, small, best, since, evals, done = c
        dphi0 = g @ d
        x_try = x + alpha * d
        f_try, g_try = vg(x_try)
        dphi = g_try @ d
        finite = jnp.isfinite(f_try) & jnp.all(jnp.isfinite(g_try))
        decrease = (f_try <= fx + 1e-4 * alpha * dphi0) | (
            (f_try <= fx + 1e-10 * jnp.abs(fx)) & (dphi <= (2 * 0.1 - 1) * dphi0))
        decrease = finite & decrease
        curvature = dphi >= 0.9 * dphi0
        give_up = trials + 1 >= _MAX_TRIALS
        accept = decrease & (curvature | give_up)
        fail = give_up & ~accept

        # linesearch bracket for the next trial
        lo_n = jnp.where(decrease & ~curvature, alpha, lo)
        hi_n = jnp.where(~decrease, alpha, hi)
        alpha_n = jnp.where(jnp.isinf(hi_n), 2.0 * alpha, 0.5 * (lo_n + hi_n))

        # BFGS update of the inverse Hessian on an accepted step (skipped unless sᵀy > 0)
        s_vec = alpha * d
        y = g_try - g
        sy = s_vec @ y
        H0 = jnp.where(it == 0, eye * jnp.where(sy > 0, sy / (y @ y), 1.0), H)  # first-step scale
        Hy = H0 @ y
        rho = 1.0 / jnp.where(sy > 0, sy, 1.0)
        H_upd = (H0 - rho * (jnp.outer(s_vec, Hy) + jnp.outer(Hy, s_vec))
                 + (rho * rho * (y @ Hy) + rho) * jnp.outer(s_vec, s_vec))
        H_acc = jnp.where(sy > 0, H_upd, H0)
        d_acc, H_acc = new_direction(H_acc, g_try)

        rows_x = jnp.linalg.norm(x_try.reshape(shape), axis=1)
        turn = jnp.max(jnp.linalg.norm(s_vec.reshape(shape), axis=1) / rows_x)
        gnorm = jnp.linalg.norm(g_try)

        # on a failed linesearch restart from steepest descent with a fresh model
        d_fail, H_fail = -g, eye
        x = jnp.where(accept, x_try, x)
        fx = jnp.where(accept, f_try, fx)
        g = jnp.where(accept, g_try, g)
        H = jnp.where(accept, H_acc, jnp.where(fail, H_fail, H))
        d = jnp.where(accept, d_acc, jnp.where(fail, d_fail, d))
        alpha = jnp.where(accept | fail, 1.0, alpha_n)
        lo = jnp.where(accept | fail, 0.0, lo_n)
        hi = jnp.where(accept | fail, jnp.inf, hi_n)
        trials = jnp.where(accept | fail, 0, trials + 1)
        fails = jnp.where(accept, 0, fails + fail.astype(fails.dtype))
        small = jnp.where(accept, jnp.where(turn < _XTOL, small + 1, 0), small)
        since = jnp.where(accept, jnp.where(gnorm < best, 0, since + 1), since)
        best = jnp.where(accept, jnp.minimum(best, gnorm), best)
        it = it + accept.astype(it.dtype)
        done = ((small >= _SMALL_STEPS) | (since >= _PATIENCE) | (fails >= 2)
                | (jnp.linalg.norm(g) == 0))
        return x, fx, g, H, d, alpha, lo, hi, trials, fails, it, small, best, since, evals + 1, done

    def keep_going(c):
        return ~c[-1] & (c[-2] < _MAX_EVALS)

    x0 = V0.reshape(-1)
    f0, g0 = vg(x0)
    zero = jnp.zeros((), jnp.int32)
    # first step: steepest descent scaled to turn the rows by ~0.1 rad; the linesearch adjusts
    alpha0 = 0.1 * jnp.linalg.norm(x0) / jnp.maximum(jnp.linalg.norm(g0), 1e-300)
    init = (x0, f0, g0, eye, -g0 * alpha0, jnp.asarray(1.0, x0.dtype), jnp.asarray(0.0, x0.dtype),
            jnp.asarray(jnp.inf, x0.dtype), zero, zero, zero, zero,
            jnp.asarray(jnp.inf, x0.dtype), zero, zero, jnp.linalg.norm(g0) == 0)
    c = jax.lax.while_loop(keep_going, body, init)
    return c[0].reshape(shape), c[1], c[10]


@functools.partial(jax.jit, static_argnames=("loss", "psi", "phi"))
def _solve(V0_SxCxC, pi_C, counts_NxC, weights_N, tau, alpha, beta, *, loss, psi, phi):
    """Every start of the Burer–Monteiro form min_V F(V̂ V̂ᵀ), vmapped.

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
    V0_SxCxC = (V0_SxCxC / jnp.linalg.norm(V0_SxCxC, axis=2, keepdims=True)
                * row_scale_C[None, :, None])

    def one(V0):
        V, value, steps = _bfgs(lambda V: F(_gram(V)), V0)
        G = _gram(V)
        return G, value, steps, jax.grad(F)(G)

    return jax.vmap(one)(V0_SxCxC)


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
                 phi: str = "exp", n_starts: int = 5, seed: int = 0, return_info: bool = False):
    """G*, the minimizer of the collapsed objective F over Gram matrices of unit vectors (SPEC §9).

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

    Args:
      pi: class proportions π, shape (C,), C ≥ 2, positive, summing to 1 (within 1e-6).
      k: number of negatives per anchor, ≥ 1.
      tau: temperature τ > 0.
      loss, alpha, beta, psi, phi: the loss of SPEC §8 (balanced needs β > 0: with s⁺ = 1 fixed,
        α only adds a constant and β only scales F, so G* does not depend on them).
      n_starts: random starts, ≥ 1.
      seed: seed of the starts (and of the Monte Carlo draws if any).
      return_info: also return the certificate.

    Returns:
      G* as a float64 (C, C) numpy array (unit diagonal, symmetric); with return_info,
      (G*, info) where info has "F" (F(G*)), "starts_max_dev" (max over starts of
      max|G_start − G*|), "kkt" (see `kkt_residuals`), "method" ("enumeration" or
      "monte-carlo"), "n_counts" (count vectors or draws) and "steps" (BFGS steps per start).

    Raises:
      ConfigError: bad input, naming the field ('pi', 'k', 'tau', 'n_starts', a loss field).
    """
    pi, k = _check_solver_inputs(pi, k, tau, loss, alpha, beta, psi, phi)
    n_starts = _check_int("n_starts", n_starts, 1)
    seed = _check_int("seed", seed, 0)
    C = pi.shape[0]
    V0 = np.random.default_rng(seed).standard_normal((n_starts, C, C))
    with jax.enable_x64(True):
        counts, weights, method = negative_counts(pi, k, seed=seed)
        out = _solve(V0, pi, counts, weights, np.float64(tau), np.float64(alpha),
                     np.float64(beta), loss=loss, psi=psi, phi=phi)
        G_S, F_S, steps_S, grad_S = (np.asarray(a) for a in out)
    best = int(np.argmin(F_S))
    G = np.clip(0.5 * (G_S[best] + G_S[best].T), -1.0, 1.0)
    np.fill_diagonal(G, 1.0)
    if not return_info:
        return G
    return G, {"F": float(F_S[best]),
               "starts_max_dev": float(np.abs(G_S - G[None]).max()),
               "kkt": _kkt(grad_S[best].astype(np.float64), G, pi),
               "method": method,
               "n_counts": int(counts.shape[0]),
               "steps": [int(i) for i in steps_S]}


# ---------------------------------------------------------------------------------------------
# the minority-collapse threshold ρ*


def _minority_cos(G: np.ndarray, n_major: int) -> float:
    """min G_cc' over distinct minority classes c ≠ c' (classes n_major … C − 1)."""
    M = G[n_major:, n_major:]
    return float(M[~np.eye(M.shape[0], dtype=bool)].min())


def collapse_threshold(n_major: int, n_minor: int, k: int, tau, loss: str = "infonce",
                       alpha=1.0, beta=1.0, psi: str = "log1p", phi: str = "exp",
                       tol: float = 1e-3, n_starts: int = 2) -> float:
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
        G = optimal_gram(w / w.sum(), k, tau, loss, alpha, beta, psi, phi, n_starts=n_starts)
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
