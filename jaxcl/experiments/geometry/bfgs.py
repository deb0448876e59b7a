"""A dense BFGS in a single while_loop, for the small factorized programs of the geometry
experiment (`factored.py`): F(V̂ V̂ᵀ) over unit-row factors V."""

from __future__ import annotations

import jax
import jax.numpy as jnp

_MAX_EVALS = 5000  # evaluations of F and ∇F per start; typical solves need 20–300
_MAX_TRIALS = 40  # trial steps of one linesearch
_XTOL = 1e-12  # a step turning every row by less than this (radians) is "no move"
_SMALL_STEPS = 3  # that many such steps in a row: converged
_PATIENCE = 100  # steps without a new smallest gradient norm: at the noise floor


def bfgs(f, V0):
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
            (f_try <= fx + 1e-10 * jnp.abs(fx)) & (dphi <= (2 * 0.1 - 1) * dphi0)
        )
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
        H_upd = (
            H0
            - rho * (jnp.outer(s_vec, Hy) + jnp.outer(Hy, s_vec))
            + (rho * rho * (y @ Hy) + rho) * jnp.outer(s_vec, s_vec)
        )
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
        done = (
            (small >= _SMALL_STEPS)
            | (since >= _PATIENCE)
            | (fails >= 2)
            | (jnp.linalg.norm(g) == 0)
        )
        return x, fx, g, H, d, alpha, lo, hi, trials, fails, it, small, best, since, evals + 1, done

    def keep_going(c):
        return ~c[-1] & (c[-2] < _MAX_EVALS)

    x0 = V0.reshape(-1)
    f0, g0 = vg(x0)
    zero = jnp.zeros((), jnp.int32)
    # first step: steepest descent scaled to turn the rows by ~0.1 rad; the linesearch adjusts
    alpha0 = 0.1 * jnp.linalg.norm(x0) / jnp.maximum(jnp.linalg.norm(g0), 1e-300)
    init = (
        x0,
        f0,
        g0,
        eye,
        -g0 * alpha0,
        jnp.asarray(1.0, x0.dtype),
        jnp.asarray(0.0, x0.dtype),
        jnp.asarray(jnp.inf, x0.dtype),
        zero,
        zero,
        zero,
        zero,
        jnp.asarray(jnp.inf, x0.dtype),
        zero,
        zero,
        jnp.linalg.norm(g0) == 0,
    )
    c = jax.lax.while_loop(keep_going, body, init)
    return c[0].reshape(shape), c[1], c[10]
