"""Theorem 3.3 / Lemma C.1 predictions (SPEC §6): exponents, stage-time scales, and the finite-d
expected sizes of the ordinary set M_j (eq. 16), lucky set M_j* (eq. 17) and N_i(0) at Gaussian init.

Finite-d expectations. w_i(0) ~ N(0, σ0² I_{d1}) and M has orthonormal columns, so
A_i(0) = Mᵀ w_i(0) ~ N(0, σ0² I_d) (for every M: rotation invariance) and the direction
u = A_i/‖A_i‖ is uniform on the sphere S^{d−1}, independent of σ0. Every set of eqs. 16–17 is an
event about u alone, with U_j = u_j² = A_ij²/S_i ~ Beta(1/2, (d−1)/2):
- P(i ∈ M_j) = P(U_j ≥ c2 log d/d), exact through the regularized incomplete beta function;
- P(i ∈ M_j*) = P(U_j ≥ x1, u_j'² ≤ x2 ∀ j' ≠ j) with x_k = c_k log d/d. Given U_j = s the
  other coordinates are √(1−s)·v with v uniform on S^{d−2}, so with V = max_j' v_j'²,
  P = E_V[ P(U_j ≥ max(x1, 1 − x2/V)) ], a one-dimensional Monte Carlo over V whose inner
  probability is exact. The same formula with x1 = x2 gives P(N_i(0) = {j}).
"""

from __future__ import annotations

import functools
import math

import numpy as np


# ---- exponents and scales (SPEC §6)
def omega1(C_m: float, ratio: float, gamma_c0: float = 5e-4) -> float:
    """ω1 = C_m − (ε_max/ε_min)²(1 + γc0): |M_j*| ≥ Ω(d^ω1) (Lemma C.1(c), eq. 20)."""
    return C_m - (1.0 / ratio) ** 2 * (1.0 + gamma_c0)


def omega2(C_m: float, ratio: float, gamma_c0: float = 5e-4) -> float:
    """ω2 = C_m − (ε_min/ε_max)²(1 − γc0): |M_j| ≤ O(d^ω2) (Lemma C.1(c), eq. 20)."""
    return C_m - ratio**2 * (1.0 - gamma_c0)


def n_exponent(ratio: float, gamma_c0: float = 5e-4) -> float:
    """|N_i| = O(d^{1 − (ε_min/ε_max)²(1 − γc0)}) (Theorem 3.3)."""
    return 1.0 - ratio**2 * (1.0 - gamma_c0)


def T1_scale(d: int, eta: float) -> float:
    """T_1 = Θ(d log d / (η log log d)) (SPEC §6), constant 1."""
    return d * math.log(d) / (eta * math.log(math.log(d)))


def T2_scale(d: int, eta: float, eps_max: float = 1.0) -> float:
    """T_2 = Θ(d log d / (ε_max η log log d)) (SPEC §6), constant 1."""
    return d * math.log(d) / (eps_max * eta * math.log(math.log(d)))


def thresholds(ratio: float, gamma_c0: float = 5e-4) -> tuple[float, float]:
    """(c1, c2) of SPEC §5 for ε_min/ε_max = ratio."""
    return 2.0 * (1.0 + gamma_c0) / ratio**2, 2.0 * (1.0 - gamma_c0) * ratio**2


# ---- the regularized incomplete beta function, numpy only
def _betacf(a: float, b: float, x: np.ndarray, iters: int = 400) -> np.ndarray:
    """Continued fraction of I_x(a, b) (modified Lentz), vectorized over x."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = np.ones_like(x)
    dd = 1.0 - qab * x / qap
    dd = 1.0 / np.where(np.abs(dd) < tiny, tiny, dd)
    h = dd.copy()
    for k in range(1, iters + 1):
        k2 = 2 * k
        for num in (
            k * (b - k) * x / ((qam + k2) * (a + k2)),
            -(a + k) * (qab + k) * x / ((a + k2) * (qap + k2)),
        ):
            dd = 1.0 + num * dd
            dd = 1.0 / np.where(np.abs(dd) < tiny, tiny, dd)
            c = 1.0 + num / c
            c = np.where(np.abs(c) < tiny, tiny, c)
            delta = dd * c
            h = h * delta
        if np.all(np.abs(delta - 1.0) < 1e-14):
            break
    return h


def betainc(a: float, b: float, x) -> np.ndarray:
    """Regularized incomplete beta I_x(a, b) = P(Beta(a, b) ≤ x), accurate in both tails.

    Args:
      a, b: positive shape parameters.
      x: values in [0, 1] (array-like).

    Returns:
      I_x(a, b), same shape as x (float64).
    """
    x = np.clip(np.asarray(x, np.float64), 0.0, 1.0)
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    out = np.empty_like(x)
    inner = (x > 0) & (x < 1)
    xi = x[inner]
    with np.errstate(divide="ignore"):
        front = np.exp(lbeta + a * np.log(xi) + b * np.log1p(-xi))
    direct = xi < (a + 1.0) / (a + b + 2.0)
    val = np.empty_like(xi)
    val[direct] = front[direct] * _betacf(a, b, xi[direct]) / a
    xs = 1.0 - xi[~direct]
    val[~direct] = 1.0 - front[~direct] * _betacf(b, a, xs) / b
    out[inner] = val
    out[x <= 0] = 0.0
    out[x >= 1] = 1.0
    return out


def tail_U(d: int, s) -> np.ndarray:
    """P(U ≥ s) for U = A_ij²/S_i ~ Beta(1/2, (d−1)/2), i.e. I_{1−s}((d−1)/2, 1/2)."""
    s = np.asarray(s, np.float64)
    return np.where(s <= 0, 1.0, betainc((d - 1) / 2.0, 0.5, 1.0 - s))


# ---- finite-d probabilities and expected counts
def p_ordinary(d: int, c2: float) -> float:
    """P(i ∈ M_j) = P(U_j ≥ c2 log d/d) (eq. 16), exact."""
    return float(tail_U(d, c2 * math.log(d) / d))


@functools.lru_cache(maxsize=2)
def _max_other(d: int, n_mc: int, seed: int, chunk: int = 4096) -> np.ndarray:
    """n_mc draws of V = max_j v_j² for v uniform on S^{d−2} (the d − 1 other coordinates).

    Cached: the lucky and single-feature probabilities of every ratio share one draw per d.
    """
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n_mc, chunk):
        g = rng.standard_normal((min(chunk, n_mc - start), d - 1))
        g2 = g * g
        out.append(g2.max(axis=1) / g2.sum(axis=1))
    return np.concatenate(out)


def default_n_mc(d: int) -> int:
    """Monte Carlo draws of V: many (the lower tail of V matters at ratio < 1), ≤ 4e8 normals."""
    return int(min(200_000, max(20_000, 4e8 // d)))


def p_alone(d: int, c_big: float, c2: float, n_mc: int | None = None, seed: int = 0):
    """P(U_j ≥ c_big log d/d and u_j'² ≤ c2 log d/d ∀ j' ≠ j), by the 1-D Monte Carlo above.

    c_big = c1 gives the lucky set (eq. 17); c_big = c2 gives N_i(0) = {j}. The standard error
    is that of the sample mean; when the event needs a rare V (ratio < 1 at large d) few
    draws carry the estimate and both it and its standard error are rough.

    Returns:
      (estimate, standard error).
    """
    x1, x2 = c_big * math.log(d) / d, c2 * math.log(d) / d
    if x1 >= 1.0:
        return 0.0, 0.0
    v = _max_other(d, n_mc or default_n_mc(d), seed)
    s = 1.0 - x2 / v
    h = np.full(v.shape, float(tail_U(d, x1)))
    above = s > x1
    h[above] = tail_U(d, s[above])  # exact given V
    return float(h.mean()), float(h.std() / math.sqrt(len(h)))


@functools.lru_cache(maxsize=None)  # Monte Carlo; the report asks for each (d, m, ratio) twice
def expected_counts(
    d: int, m: int, ratio: float, gamma_c0: float = 5e-4, n_mc: int | None = None, seed: int = 0
) -> dict:
    """Finite-d expected sizes at Gaussian init.

    Args:
      d: number of features.
      m: number of neurons.
      ratio: ε_min/ε_max.
      gamma_c0: γc0 of the thresholds.
      n_mc: Monte Carlo draws of V for the coupled (lucky / single) probabilities; default
        default_n_mc(d).
      seed: their seed.

    Returns:
      ordinary (E|M_j|), lucky (E|M_j*|), lucky_se, N0 (E|N_i(0)|), single
      (E #{i : N_i(0) = {j}}), single_se, and the per-neuron probabilities p_*.
    """
    c1, c2 = thresholds(ratio, gamma_c0)
    p_ord = p_ordinary(d, c2)
    p_lucky, se_lucky = p_alone(d, c1, c2, n_mc, seed)
    p_single, se_single = p_alone(d, c2, c2, n_mc, seed)
    return {
        "ordinary": m * p_ord,
        "lucky": m * p_lucky,
        "lucky_se": m * se_lucky,
        "N0": d * p_ord,
        "single": m * p_single,
        "single_se": m * se_single,
        "p_ordinary": p_ord,
        "p_lucky": p_lucky,
        "p_single": p_single,
    }


# ---- the proof's hypotheses (App. F), per config
def xi2(d: int, C_m: float, ratio: float, gamma_c0: float = 5e-4) -> float:
    """Ξ_2 = d^ω2, Lemma C.1(c)'s bound on |M_j| (eq. 20)."""
    return float(d) ** omega2(C_m, ratio, gamma_c0)


def all_atoms_lucky(d: int, m: int, p_lucky: float) -> float:
    """P(min_j |M_j*| ≥ 1): every atom has a lucky neuron, the event the proof divides by
    (Def. F.1, eq. 101).

    Exact given p = P(i ∈ M_j*): neurons are independent and each is lucky for at most one atom
    (eq. 17 lets one coordinate alone pass c2), so the lucky total is N ~ Binomial(m, d p) and,
    given N, the lucky neurons fall on the d atoms uniformly; P(all d atoms hit | N) follows by
    the occupancy recursion over how many atoms are hit after each of the N neurons.
    """
    q = d * p_lucky
    if q <= 0:
        return 0.0
    if q >= 1:
        return 1.0
    mean, sd = m * q, math.sqrt(m * q * (1 - q))
    n_hi = min(m, int(mean + 12 * sd + 50))
    # binomial pmf of N in logs, over 0..n_hi
    n = np.arange(n_hi + 1)
    lg = np.vectorize(math.lgamma)
    log_pmf = lg(m + 1) - lg(n + 1) - lg(m - n + 1) + n * math.log(q) + (m - n) * math.log1p(-q)
    occ = np.zeros(d + 1)  # occ[k]: P(k atoms hit) after the neurons so far
    occ[0] = 1.0
    hit = np.zeros(n_hi + 1)  # P(all d atoms hit | N = n)
    stay, move = np.arange(d + 1) / d, (d - np.arange(d + 1)) / d
    for k in range(1, n_hi + 1):
        new = occ * stay
        new[1:] += occ[:-1] * move[:-1]
        occ = new
        hit[k] = occ[d]
    return float(np.sum(np.exp(log_pmf) * hit))


def n0_leading(d: int, ratio: float, gamma_c0: float = 5e-4) -> float:
    """The leading term of E|N_i(0)| = d P(U ≥ c2 log d/d) as d → ∞.

    d U → χ²_1, so P(U ≥ c2 log d/d) → erfc(√(c2 log d / 2)) = erfc(r √((1 − γc0) log d)), and
    erfc(x) ≈ e^{−x²}/(x √π): E|N_i(0)| ≈ d^{1 − r²(1 − γc0)} / (r √(π (1 − γc0) log d)), the
    exponent of Theorem 3.3's |N_i| bound. It grows as a power of d for every ratio below 1 and
    falls like 1/√(log d) at ratio 1.
    """
    x = ratio * math.sqrt((1 - gamma_c0) * math.log(d))
    return d * math.erfc(x)


def lucky_leading(d: int, m: int, ratio: float, gamma_c0: float = 5e-4) -> float:
    """The leading term of E|M_j*| = m P(U_j ≥ c1 log d/d, U_j' ≤ c2 log d/d ∀ j' ≠ j).

    The first factor tends to erfc(√((1 + γc0) log d)/r) ≈ d^{−(1+γc0)/r²} r/√(π (1+γc0) log d);
    given it, the d − 1 other coordinates each pass c2 with about the probability p of eq. 16,
    nearly independently, so all stay below with probability (1 − p)^{d−1} ≈ e^{−E|N_i(0)|}.
    Hence E|M_j*| ≈ d^{ω1} · r/√(π (1+γc0) log d) · e^{−E|N_i(0)|} for m = d^{C_m}. Lemma C.1's
    Ω(d^{ω1}) keeps the first two factors and drops the last; below ratio 1, E|N_i(0)| grows as
    a power of d (n0_leading), so the last factor falls faster than any power, and the
    expected lucky count tends to 0 whatever C_m.
    """
    c1, c2 = thresholds(ratio, gamma_c0)
    first = math.erfc(math.sqrt(c1 * math.log(d) / 2))
    others = (1 - p_ordinary(d, c2)) ** (d - 1)
    return m * first * others


def hypotheses(
    d: int,
    m: int,
    C_m: float,
    ratio: float,
    lam: float,
    eta: float,
    K: int,
    T2: float | None = None,
    gamma_c0: float = 5e-4,
) -> dict:
    """Which of the proof's hypotheses (App. F; SPEC §6) a config meets.

    Args:
      d, m, C_m, ratio, lam, eta, K, gamma_c0: the config's resolved fields.
      T2: its measured T_2 (None or ≤ 0: stage 2 never ended).

    Returns:
      {name: {"value": the number, "holds": bool or None (no verdict), "note": what it is}}
      for omega1 (ω1 > 0), all_lucky (P(min_j |M_j*| ≥ 1) ≥ 0.9, exact law),
      lam (λ d Ξ_2 ≤ 1), window (T_3 ≥ T_2), K (K against d: log K / log d, no verdict) and
      T_eta (T_4 η ≥ m Ξ_2^10, compared as exponents of d: it holds at no d when
      C_m + 10 ω2 > 1.99).
    """
    w1, w2 = omega1(C_m, ratio, gamma_c0), omega2(C_m, ratio, gamma_c0)
    p_all = all_atoms_lucky(d, m, expected_counts(d, m, ratio, gamma_c0)["p_lucky"])
    ld = lam * d * xi2(d, C_m, ratio, gamma_c0)
    T3 = d**1.01 / eta
    need = C_m + 10 * w2  # m Ξ_2^10 = d^(C_m + 10 ω2) against T_4 η = d^1.99
    return {
        "omega1": {"value": w1, "holds": w1 > 0, "note": "ω1 > 0"},
        "all_lucky": {"value": p_all, "holds": p_all >= 0.9,
                      "note": "P(every atom has a lucky neuron) ≥ 0.9"},
        "lam": {"value": ld, "holds": ld <= 1.0, "note": "λ d Ξ_2 ≤ 1"},
        "window": {"value": (T2 / T3) if T2 and T2 > 0 else math.nan,
                   "holds": bool(T2 and 0 < T2 <= T3) if T2 and T2 > 0 else None,
                   "note": "T_3 ≥ T_2 (value: T_2/T_3)"},
        "K": {"value": math.log(K) / math.log(d), "holds": None,
              "note": "K = d^x (value: x); the proof asks K = poly(d)"},
        "T_eta": {"value": need, "holds": need <= 1.99,
                  "note": "T_4 η = d^1.99 ≥ m Ξ_2^10 = d^(C_m + 10 ω2) (value: C_m + 10 ω2)"},
    }  # fmt: skip
