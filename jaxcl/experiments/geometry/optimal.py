"""G* and ρ* (SPEC §9–§10) in one place: the minority-collapse threshold ρ* is computed here; the
minimizer G*, its certificate and the hard-negative rest point live in `minimizer.py`, the
factored rank-p problem in `factored.py` and the objective F in `objective.py`, and their public
names are importable from this module too."""

from __future__ import annotations

import math

import numpy as np

from jaxcl.errors import ConfigError
from jaxcl.experiments.geometry.objective import check_int, check_positive, check_solver_inputs

# Also public through this module (tests, docs and jaxcl.geometry import them from here):
from jaxcl.experiments.geometry.minimizer import (  # noqa: F401
    hard_equilibrium,
    kkt_certificate,
    kkt_residuals,
    optimal_gram,
)
from jaxcl.experiments.geometry.objective import (  # noqa: F401
    MAX_ENUMERATE,
    N_DRAWS,
    collapsed_objective,
    multinomial_counts,
    n_count_vectors,
    negative_counts,
    simplex_etf,
)

COLLAPSE_TOL = 1e-4  # SPEC §9: minority c ≠ c' collapsed when G*_cc' ≥ 1 − 1e-4


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
