"""Where a trained class-mean geometry stopped: the collapsed objective F on the manifold of
unit-row factors V ∈ R^{C×p} (G = V Vᵀ), its Riemannian gradient and Hessian there, the gap
to G*_p, and a continuation by the solver's BFGS, read as "global minimum", "local minimum",
"saddle" or "not converged"."""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.errors import ConfigError
from jaxcl.experiments.geometry.bfgs import bfgs
from jaxcl.experiments.geometry.factored import STATIC, gram, objective, problem, tidy
from jaxcl.experiments.geometry.objective import check_int, check_solver_inputs, negative_counts
from jaxcl.experiments.geometry.minimizer import optimal_gram

VERDICTS = ("global minimum", "local minimum", "saddle", "not converged", "undecided")
EIG_TOL = 1e-6  # smallest scaled Hessian eigenvalue off the gauge above this: positive definite
F_TOL = 1e-9  # F above F(G*_p) by more than this: not the global minimum (F ≈ 1 in float64)
MOVE_TOL = 0.02  # max|ΔG| of the continuation, or a Newton step's largest turn (radians), above
# this: the point is not at a critical point (0.02: the report's bar for "reaches G*")


def factor(G, p: int) -> np.ndarray:
    """A unit-row factor V (C, p) with V Vᵀ ≈ G: the top p eigenpairs of G, rows normalized.

    Args:
      G: a Gram matrix of unit vectors, shape (C, C), of rank ≤ p (up to rounding).
      p: the factor's width, ≥ 1.

    Returns:
      V as a float64 (C, p) numpy array with unit rows.
    """
    G = np.asarray(G, np.float64)
    p = check_int("p", p, 1)
    lam, U = np.linalg.eigh(0.5 * (G + G.T))
    lam, U = lam[::-1][:p], U[:, ::-1][:, :p]
    V = U * np.sqrt(np.maximum(lam, 0.0))[None, :]
    if V.shape[1] < p:  # p > C: pad with zero columns (the same Gram matrix)
        V = np.pad(V, ((0, 0), (0, p - V.shape[1])))
    return V / np.linalg.norm(V, axis=1, keepdims=True)


def relabelings(pi, limit: int = 10**6) -> np.ndarray:
    """Every permutation of the classes that maps π to itself (classes of equal size swapped).

    F is invariant under them, so G*_p and every critical point come in such orbits: for
    p < C − 1 the rank-p optimum need not be unique (balanced 2+2 at p = 2 puts either pair of
    classes opposite), and a run at a relabeled G*_p has reached it.

    Args:
      pi: class proportions, shape (C,).
      limit: refuse more permutations than this.

    Returns:
      int array (M, C), row m the permutation σ_m (class c ↦ σ_m[c]); the identity first.

    Raises:
      ConfigError: more than `limit` permutations ('pi').
    """
    pi = np.asarray(pi, np.float64)
    groups = []
    for c in range(pi.shape[0]):
        for g in groups:
            if abs(pi[g[0]] - pi[c]) <= 1e-9 * pi[c]:
                g.append(c)
                break
        else:
            groups.append([c])
    if np.prod([math.factorial(len(g)) for g in groups]) > limit:
        raise ConfigError(f"field 'pi' = {pi.tolist()}: more than {limit} relabelings")
    perms = []
    for parts in itertools.product(*(itertools.permutations(g) for g in groups)):
        sigma = np.empty(pi.shape[0], np.int64)
        for g, part in zip(groups, parts):
            sigma[g] = part
        perms.append(sigma)
    return np.stack(perms)


def max_dev_relabeled(G, G_ref, pi) -> float:
    """min over `relabelings(pi)` σ of max|G − G_ref[σ, σ]|: the distance to G_ref's orbit.

    Args:
      G, G_ref: Gram matrices, shape (C, C).
      pi: class proportions, shape (C,).

    Returns:
      The distance as a float.
    """
    G, G_ref = np.asarray(G, np.float64), np.asarray(G_ref, np.float64)
    P = relabelings(pi)
    return float(np.abs(G[None] - G_ref[P[:, :, None], P[:, None, :]]).max(axis=(1, 2)).min())


@functools.partial(jax.jit, static_argnames=STATIC)
def _derivatives(V_CxP, prob, *, loss, psi, phi, hard=False, frozen=False):
    """F, ∇ and ∇² of f(V) = F(V̂ V̂ᵀ) (rows normalized) at V, flattened row by row."""
    F = objective(prob, loss, psi, phi, hard, frozen)

    def f(x):
        return F(gram(x.reshape(V_CxP.shape)))

    x = V_CxP.reshape(-1)
    value, grad = jax.value_and_grad(f)(x)
    return value, grad, jax.hessian(f)(x)


@functools.partial(jax.jit, static_argnames=STATIC)
def _continue(V_CxP, prob, *, loss, psi, phi, hard=False, frozen=False):
    """BFGS on f from V (rows scaled as in optimal_gram's solve): (V, F, accepted steps)."""
    F = objective(prob, loss, psi, phi, hard, frozen)
    scale = jnp.sqrt(prob.pi_C / jnp.max(prob.pi_C))[:, None]
    V, value, steps = bfgs(lambda V: F(gram(V)), V_CxP * scale)
    return V / jnp.linalg.norm(V, axis=1, keepdims=True), value, steps


def _tangent_basis(V: np.ndarray) -> np.ndarray:
    """B (C·p, C·(p − 1)): per row c an orthonormal basis of the tangent space v_c^⊥."""
    C, p = V.shape
    B = np.zeros((C * p, C * (p - 1)))
    for c in range(C):
        # the last p − 1 left singular vectors of the column v_c span its orthogonal complement
        U = np.linalg.svd(V[c][:, None], full_matrices=True)[0]
        B[c * p : (c + 1) * p, c * (p - 1) : (c + 1) * (p - 1)] = U[:, 1:]
    return B


def _gauge(V: np.ndarray) -> np.ndarray:
    """The directions V A (A skew-symmetric, p × p), flattened row by row: (C·p, p(p − 1)/2).

    F depends on V only through V Vᵀ, so V ↦ V Q (Q orthogonal) leaves it unchanged: these
    directions (tangent to the sphere of every row, since v_c A v_cᵀ = 0) are exact zeros of
    the Hessian at a critical point and are removed before its spectrum is read."""
    C, p = V.shape
    cols = []
    for i in range(p):
        for j in range(i + 1, p):
            A = np.zeros((p, p))
            A[i, j], A[j, i] = 1.0, -1.0
            cols.append((V @ A).reshape(-1))
    return np.stack(cols, axis=1) if cols else np.zeros((C * p, 0))


def manifold_derivatives(
    V,
    pi,
    k: int,
    tau,
    loss: str = "infonce",
    alpha=1.0,
    beta=1.0,
    psi: str = "log1p",
    phi: str = "exp",
) -> dict:
    """F, its Riemannian gradient and Hessian on the unit-row factors at V (float64).

    The manifold is the product of the unit spheres of the C rows of V ∈ R^{C×p} (the
    Burer–Monteiro form of `optimal_gram(..., rank=p)`). f(V) = F(V̂ V̂ᵀ) with rows normalized
    is invariant to the row norms, so at unit rows its Euclidean gradient is tangent and the
    Hessian restricted to the tangent space is the Riemannian Hessian (normalization is a
    second-order retraction). The rotation gauge V ↦ V Q is removed: the Hessian is read on the
    orthogonal complement of the directions V A, A skew. Row c's gradient and curvature scale
    with π_c, so the scaled versions divide row c by π_c (the gradient) and the Hessian by
    √(π_c π_c') (the congruence D^{-1/2} H D^{-1/2}, D = Diag π per row), which weighs a minority
    row like a majority one; the sign of every eigenvalue is unchanged by that congruence.

    Args:
      V: unit-row factor, shape (C, p), p ≥ 2.
      pi, k, tau, loss, alpha, beta, psi, phi: as in `optimal_gram` (uniform negatives).

    Returns:
      {"F": F(V Vᵀ), "grad_norm": ‖grad‖ (Euclidean over all rows), "grad_scaled": max_c
       ‖grad_c‖ / π_c, "newton_step": the largest turn of a row (radians) in the Newton step off
       the gauge (the distance to the critical point of the quadratic model), "hess_eigs":
       eigenvalues off the gauge, ascending, "hess_eigs_scaled": those of the scaled Hessian,
       "gauge_dim": the dimension removed}.

    Raises:
      ConfigError: bad input, naming the field.
    """
    pi, k = check_solver_inputs(pi, k, tau, loss, alpha, beta, psi, phi)
    V = np.asarray(V, np.float64)
    if V.ndim != 2 or V.shape[0] != pi.shape[0] or V.shape[1] < 2:
        raise ConfigError(f"field 'V' of shape {V.shape}: expected ({pi.shape[0]}, p), p >= 2")
    V = V / np.linalg.norm(V, axis=1, keepdims=True)
    C, p = V.shape
    with jax.enable_x64(True):
        counts, weights, _ = negative_counts(pi, k)
        prob = problem(pi, counts, weights, tau, alpha, beta)
        value, grad, hess = (
            np.asarray(a, np.float64)
            for a in _derivatives(V, prob, loss=loss, psi=psi, phi=phi, hard=False)
        )
    g_CxP = grad.reshape(C, p)
    B = _tangent_basis(V)
    H = B.T @ (0.5 * (hess + hess.T)) @ B
    out = {
        "F": float(value),
        "grad_norm": float(np.linalg.norm(grad)),
        "grad_scaled": float(np.max(np.linalg.norm(g_CxP, axis=1) / pi)),
    }
    # the Newton step off the gauge, −(Nᵀ H N)⁺ Nᵀ g: how far (radians, per row) the nearest
    # critical point of the local quadratic model is; unchanged by the π scaling
    U, s, _ = np.linalg.svd(B.T @ _gauge(V), full_matrices=True)
    N = U[:, int(np.sum(s > 1e-9 * max(s.max(initial=0.0), 1.0))) :]
    step = N @ (np.linalg.pinv(N.T @ H @ N, rcond=1e-10, hermitian=True) @ (N.T @ (B.T @ grad)))
    out["newton_step"] = float(np.max(np.linalg.norm(step.reshape(C, p - 1), axis=1)))
    w = np.repeat(1.0 / np.sqrt(pi), p - 1)  # D^{-1/2} in tangent coordinates
    for key, Hk, gauge in (
        ("hess_eigs", H, B.T @ _gauge(V)),
        ("hess_eigs_scaled", H * w[:, None] * w[None, :], (B.T @ _gauge(V)) / w[:, None]),
    ):
        # orthonormal basis of the gauge directions (their count drops where V has rank < p),
        # then of its orthogonal complement, on which the spectrum is read
        U, s, _ = np.linalg.svd(gauge, full_matrices=True)
        r = int(np.sum(s > 1e-9 * max(s.max(initial=0.0), 1.0)))
        N = U[:, r:]
        out[key] = np.linalg.eigvalsh(N.T @ Hk @ N)
        out["gauge_dim"] = r
    return out


def classify_end_point(
    G,
    pi,
    k: int,
    tau,
    rank: int,
    loss: str = "infonce",
    alpha=1.0,
    beta=1.0,
    psi: str = "log1p",
    phi: str = "exp",
    F_opt: float | None = None,
    eig_tol: float = EIG_TOL,
    F_tol: float = F_TOL,
    move_tol: float = MOVE_TOL,
) -> dict:
    """Names the point a trained G stopped at on the rank-p problem min F(G), rank G ≤ p.

    G is factored as V (C, p) with unit rows (`factor`); at V: the gradient, the Newton step
    it implies, the smallest scaled Hessian eigenvalue off the gauge (`manifold_derivatives`)
    and the F gap to G*_p; then the solver's BFGS continues from V (its linesearch takes far
    smaller steps than training's last ones near a minimum) to a critical point V', read the
    same way, and max|G' − G| says whether it moved the point. The gradient counts as small
    when its Newton step turns no row by more than move_tol: a trained run sits only as close
    to a critical point as its sampling noise allows, so an absolute bar on the gradient would
    call every run unconverged. The verdict:

    - "saddle": small gradient at V and a negative eigenvalue there (< −eig_tol);
    - "not converged": the gradient at V is not small, or the continuation moves G by more
      than move_tol;
    - "global minimum": else, F(V') within F_tol of F(G*_p);
    - "local minimum": else, for p < C, the Hessian at V' positive definite off the gauge
      (> eig_tol), with F(V') above F(G*_p) by more than F_tol;
    - "undecided": else (a flat direction at a point above G*_p, or p ≥ C and the continuation
      stalled above G*: second order does not decide).

    With p ≥ C the program is convex and has no spurious minima, and G*'s Hessian off the gauge
    is singular where its rank is below p: only the gradient, the gap and the continuation
    decide there.

    Args:
      G: the trained Gram matrix of the normalized class means, shape (C, C).
      pi, k, tau, loss, alpha, beta, psi, phi: as in `optimal_gram`.
      rank: p, the representation dimension the run trained at, ≥ 2.
      F_opt: F(G*_p) if known (else `optimal_gram(..., rank=p, n_starts=8)`).
      eig_tol, F_tol, move_tol: the thresholds above.

    Returns:
      {"verdict", "grad_scaled", "newton_step", "min_eig_scaled" (None for p ≥ C), "F_gap"
       (F(V) − F(G*_p)),
       "moved" (max|G' − G|), "F_drop" (F(V) − F(V')), "end_grad_scaled",
       "end_min_eig_scaled", "end_F_gap", "continuation_steps", "G_end" (G', float64 (C, C))}.

    Raises:
      ConfigError: bad input, naming the field.
    """
    pi, k = check_solver_inputs(pi, k, tau, loss, alpha, beta, psi, phi)
    p = check_int("rank", rank, 2)
    C = pi.shape[0]
    kw = dict(loss=loss, alpha=alpha, beta=beta, psi=psi, phi=phi)
    if F_opt is None:
        F_opt = optimal_gram(pi, k, tau, **kw, n_starts=8, rank=p, return_info=True)[1]["F"]
    V0 = factor(G, p)
    at = manifold_derivatives(V0, pi, k, tau, **kw)
    with jax.enable_x64(True):
        counts, weights, _ = negative_counts(pi, k)
        prob = problem(pi, counts, weights, tau, alpha, beta)
        V1, _, steps = _continue(V0, prob, loss=loss, psi=psi, phi=phi)
        V1 = np.asarray(V1, np.float64)
    end = manifold_derivatives(V1, pi, k, tau, **kw)
    moved = float(np.abs(V1 @ V1.T - V0 @ V0.T).max())
    convex = p >= C
    lam0 = None if convex else float(at["hess_eigs_scaled"][0])
    lam1 = None if convex else float(end["hess_eigs_scaled"][0])
    gap1 = end["F"] - F_opt
    near = at["newton_step"] <= move_tol
    if near and lam0 is not None and lam0 < -eig_tol:
        verdict = "saddle"
    elif not near or moved > move_tol:
        verdict = "not converged"
    elif gap1 <= F_tol:
        verdict = "global minimum"
    elif not convex and lam1 > eig_tol:
        verdict = "local minimum"
    else:
        verdict = "undecided"
    return {
        "verdict": verdict,
        "grad_scaled": at["grad_scaled"],
        "newton_step": at["newton_step"],
        "min_eig_scaled": lam0,
        "F_gap": at["F"] - F_opt,
        "moved": moved,
        "F_drop": at["F"] - end["F"],
        "end_grad_scaled": end["grad_scaled"],
        "end_min_eig_scaled": lam1,
        "end_F_gap": gap1,
        "continuation_steps": int(steps),
        "G_end": tidy(V1 @ V1.T),
    }
