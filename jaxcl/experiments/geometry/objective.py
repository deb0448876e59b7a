"""The collapsed objective of SPEC §9: with every sample at its unit class mean, F(G) = Σ_c π_c
E_{n ~ Mult(k, π)} ℓ(1; n_c' copies of G_cc'), its expectation over the negatives' counts
(enumerated, or Monte Carlo past 10⁶ count vectors), and the input checks of the program."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl import losses
from jaxcl.errors import ConfigError

MAX_ENUMERATE = 10**6  # SPEC §9: enumerate the multinomial counts where they are ≤ 10⁶
N_DRAWS = 200_000  # Monte Carlo draws of the counts beyond that


# ---------------------------------------------------------------------------------------------
# validation (before anything compiles; SPEC §7: the message names the field and the value)


def _concrete(x):
    """x as a float64 numpy array, or None when it is a tracer (inside jit)."""
    try:
        return np.asarray(x, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_pi(pi) -> np.ndarray | None:
    """π as float64 (None when traced); refuses all but ≥ 2 positive finite weights summing to 1."""
    try:
        arr = np.asarray(pi, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        if jnp.ndim(pi) != 1 or jnp.shape(pi)[0] < 2:  # traced: only its shape can be checked
            raise ConfigError(
                f"field 'pi' of shape {jnp.shape(pi)}: expected (C,), C >= 2"
            ) from None
        return None
    except (TypeError, ValueError):
        raise ConfigError(f"field 'pi' = {pi!r}: expected a 1-D array of numbers") from None
    if arr.ndim != 1:
        raise ConfigError(f"field 'pi' = {pi!r}: expected a 1-D array, got {arr.ndim}-D")
    if arr.shape[0] < 2:
        raise ConfigError(f"field 'pi' = {pi!r}: needs C >= 2 classes")
    if not np.all(np.isfinite(arr)) or not np.all(arr > 0):
        raise ConfigError(f"field 'pi' = {pi!r}: every entry must be a finite number > 0")
    if abs(arr.sum() - 1.0) > 1e-6:
        raise ConfigError(f"field 'pi' = {pi!r}: must sum to 1 (sums to {arr.sum()!r})")
    return arr / arr.sum()


def check_int(name: str, v, lo: int) -> int:
    """An integer ≥ lo (a bool is refused), as int; else ConfigError naming the field."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ConfigError(f"field {name!r} = {v!r}: expected an integer >= {lo}")
    return int(v)


def check_positive(name: str, v):
    """A finite number > 0; a tracer passes unchecked."""
    arr = _concrete(v)
    if arr is not None and (arr.ndim != 0 or not np.isfinite(arr) or not arr > 0):
        raise ConfigError(f"field {name!r} = {v!r}: must be a finite number > 0")
    return v


def check_solver_inputs(
    pi, k, tau, loss, alpha, beta, psi, phi, hard_beta=0.0
) -> tuple[np.ndarray, int]:
    """Everything optimal_gram / kkt_residuals need, refused before any compile."""
    pi = _check_pi(pi)
    if pi is None:
        raise ConfigError("field 'pi': must be concrete numbers here, not traced")
    k = check_int("k", k, 1)
    check_positive("tau", tau)
    losses.check(loss, alpha, beta, psi, phi)
    losses.check_hard_beta(hard_beta)
    if loss == "balanced" and beta == 0:
        # s⁺ = 1 is fixed in F, so with β = 0 F is the constant −α/τ: every G is a minimizer
        raise losses.LossError(
            "field 'loss_beta' = 0: the collapsed objective is then constant (no unique G*)"
        )
    return pi, k


# ---------------------------------------------------------------------------------------------
# the expectation over the counts of the k negatives


def simplex_etf(C: int) -> np.ndarray:
    """The simplex ETF Gram matrix: 1 on the diagonal, −1/(C − 1) off it (SPEC §9, balanced π).

    Args:
      C: number of classes, ≥ 2.

    Returns:
      A float64 (C, C) numpy array.
    """
    C = check_int("C", C, 2)
    return np.full((C, C), -1.0 / (C - 1)) + np.eye(C) * (1.0 + 1.0 / (C - 1))


def n_count_vectors(k: int, C: int) -> int:
    """Number of count vectors n ∈ ℕ^C with Σ n_c = k (compositions, stars and bars)."""
    return math.comb(k + C - 1, C - 1)


@functools.lru_cache(maxsize=32)
def _compositions(k: int, C: int) -> tuple[np.ndarray, np.ndarray]:
    """All n ∈ ℕ^C with Σ n = k, shape (N, C) int32, and log(k! / Π n_c!), shape (N,)."""

    @functools.cache  # (k_left, parts) recur across branches: build each block once
    def rec(k_left: int, parts: int) -> np.ndarray:
        if parts == 1:
            return np.array([[k_left]], dtype=np.int32)
        blocks = []
        for first in range(k_left, -1, -1):
            rest = rec(k_left - first, parts - 1)
            blocks.append(
                np.concatenate([np.full((rest.shape[0], 1), first, np.int32), rest], axis=1)
            )
        return np.concatenate(blocks, axis=0)

    counts = rec(k, C).copy()
    lgamma = np.array([math.lgamma(j + 1) for j in range(k + 1)])
    log_coef = lgamma[k] - lgamma[counts].sum(axis=1)
    counts.setflags(write=False)
    log_coef.setflags(write=False)
    return counts, log_coef


def multinomial_counts(k: int, C: int) -> tuple[np.ndarray, np.ndarray]:
    """The enumeration of SPEC §9: every count vector of k negatives over C classes.

    Args:
      k: number of negatives, ≥ 1.
      C: number of classes, ≥ 1.

    Returns:
      counts (N, C) int32 with N = C(k + C − 1, C − 1), and the log multinomial coefficients
      log(k! / Π_c n_c!) (N,) float64, so that P(n) = exp(log_coef + n · log π) under Mult(k, π).
      Read-only, cached.
    """
    k = check_int("k", k, 1)
    C = check_int("C", C, 1)
    return _compositions(k, C)


def negative_counts(
    pi, k: int, max_enumerate: int = MAX_ENUMERATE, n_draws: int = N_DRAWS, seed: int = 0
):
    """The distribution Mult(k, π) of the negatives' class counts, as rows and weights.

    Exact (every count vector with its probability) when there are at most `max_enumerate`
    count vectors, else `n_draws` fixed Monte Carlo draws (key `seed`) of weight 1/n_draws each;
    either way F is a nonnegative combination of convex functions of G, so it stays convex.
    π may be traced (inside jit); the draws then depend on π but not on G.

    Args:
      pi: class proportions, shape (C,).
      k: number of negatives per anchor.
      max_enumerate, n_draws, seed: the switch to Monte Carlo and its draws.

    Returns:
      (counts (N, C), weights (N,), method) with method "enumeration" or "monte-carlo".
    """
    k = check_int("k", k, 1)
    pi_np = _concrete(pi)
    C = jnp.shape(pi)[0]
    if n_count_vectors(k, C) <= max_enumerate:
        counts, log_coef = _compositions(k, C)
        # P(n) = k!/Π n_c! Π π_c^{n_c}, the multinomial probability, summed in logs for tiny π;
        # numpy when π is concrete (no op to compile), jnp when it is traced
        if pi_np is not None:
            return counts, np.exp(log_coef + counts @ np.log(pi_np)), "enumeration"
        log_pi = jnp.log(pi)
        return counts, jnp.exp(jnp.asarray(log_coef, log_pi.dtype) + counts @ log_pi), "enumeration"
    log_pi = jnp.log(jnp.asarray(pi))
    idx = jax.random.categorical(jax.random.key(seed), log_pi, shape=(n_draws, k))
    counts = jnp.zeros((n_draws, C), jnp.int32).at[jnp.arange(n_draws)[:, None], idx].add(1)
    return counts, jnp.full((n_draws,), 1.0 / n_draws, log_pi.dtype), "monte-carlo"


# ---------------------------------------------------------------------------------------------
# the collapsed objective F(G) of SPEC §9


def objective_from_counts(
    G_CxC,
    pi_C,
    counts_NxC,
    weights_N,
    tau,
    loss,
    alpha,
    beta,
    psi,
    phi,
    hard_beta=0.0,
    G_weight_CxC=None,
):
    """F(G) = Σ_c π_c Σ_n P(n) ℓ(1; n_c' copies of G_cc') (SPEC §9), from precomputed counts.

    With hard_beta (SPEC §10) a negative of class c' weighs e^{β G_cc'} against the anchor's
    other draws; `G_weight_CxC` takes those weights from another Gram matrix (held fixed)."""
    counts_NxC = counts_NxC.astype(G_CxC.dtype)
    G_w = G_CxC if G_weight_CxC is None else G_weight_CxC

    def per_class(g_row_C, gw_row_C):  # anchor of class c: s⁺ = 1, a class-c' negative: G_cc'
        return losses.per_anchor_counts(
            1.0,
            g_row_C,
            counts_NxC,
            tau,
            loss,
            alpha,
            beta,
            psi,
            phi,
            hard_beta,
            None if G_weight_CxC is None else gw_row_C,
        )

    # vmapped over anchor classes: one (N, C) @ (C, C) product, no (C, N, C) intermediate
    ell_CxN = jax.vmap(per_class)(G_CxC, G_w)
    return pi_C.astype(G_CxC.dtype) @ (ell_CxN @ weights_N.astype(G_CxC.dtype))


def collapsed_objective(
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
):
    """The collapsed objective F(G) of SPEC §9 for any loss of SPEC §8.

    F(G) = Σ_c π_c E_{n ~ Mult(k, π)} ℓ(s⁺ = 1; n_c' negatives of similarity G_cc'): every sample
    sits at its unit class mean, so a negative of the anchor's own class has similarity G_cc.
    The expectation is exact by enumeration when there are ≤ 10⁶ count vectors, else Monte Carlo
    with fixed draws (`negative_counts(pi, k)[2]` says which). Computed in G's dtype: call it
    inside `with jax.enable_x64(True):` with a float64 G for float64. Usable inside jit with G
    (and π, τ, α, β) traced; k, loss, psi, phi must be static.

    Args:
      G: Gram matrix of the unit class means, shape (C, C) (its diagonal is used as given).
      pi: class proportions π, shape (C,), positive, summing to 1.
      k: number of negatives per anchor, ≥ 1.
      tau: temperature τ > 0.
      loss, alpha, beta, psi, phi: the loss of SPEC §8 (see `jaxcl.losses.contrastive_loss`).
      hard_beta: β ≥ 0 of SPEC §10: in the anchor of class c's draw n, a negative of class c'
        weighs k e^{β G_cc'} / Σ_c'' n_c'' e^{β G_cc''}; the weights follow G, so F is a function
        of G alone (and need not be convex). 0: uniform negatives, the F of SPEC §9.

    Returns:
      The scalar F(G), a jnp array.

    Raises:
      ConfigError: a bad π ('pi'), k ('k'), τ ('tau'), hard_beta or loss field, naming it.
    """
    _check_pi(pi)
    k = check_int("k", k, 1)
    check_positive("tau", tau)
    losses.check(loss, alpha, beta, psi, phi)
    losses.check_hard_beta(hard_beta)
    G = jnp.asarray(G)
    pi = jnp.asarray(pi, G.dtype)
    if G.shape != (pi.shape[0], pi.shape[0]):
        raise ConfigError(f"field 'G' of shape {G.shape}: expected ({pi.shape[0]}, {pi.shape[0]})")
    counts, weights, _ = negative_counts(pi, k)
    return objective_from_counts(
        G, pi, counts, weights, tau, loss, alpha, beta, psi, phi, hard_beta
    )
