"""Reading asymptotic statements at finite d: the local exponent at the largest d (a fit with a
curvature term, resampled by seed), candidate scales compared by an information criterion, the
trend in d of a failure share ("every … with high probability"), and maxima over many objects
set against the extreme-value law of a per-object quantity of the claimed size.

Pure numpy; every function takes per-seed values keyed by d and returns plain numbers, so a
report (or a user at a notebook) can read any claim with them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

# two-sided 95% quantiles of Student's t, by degrees of freedom (1 … 30); 1.96 beyond
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def t975(dof: int) -> float:
    """The 97.5% quantile of Student's t with `dof` degrees of freedom (1.96 past 30)."""
    return _T975[dof - 1] if 1 <= dof <= len(_T975) else 1.96


@dataclasses.dataclass
class LocalExponent:
    """d log Q / d log d at the largest d, from log(seed mean) = a + b log d + c log² d."""

    slope: float  # the local exponent at d_used[-1]
    lo: float  # 95% interval: the wider of the seed bootstrap and the fit's residual error
    hi: float
    d_used: list[int]
    curvature: float  # c (0 for the straight-line fit of exactly three d)
    method: str  # "curvature" (≥ 4 d), "line" (3 d) or "none"

    @property
    def ok(self) -> bool:
        return math.isfinite(self.slope)


def _design(logd: np.ndarray, curved: bool) -> np.ndarray:
    cols = [np.ones_like(logd), logd] + ([logd**2] if curved else [])
    return np.stack(cols, axis=1)


def _local(logd: np.ndarray, logq: np.ndarray, curved: bool) -> tuple[float, np.ndarray]:
    """(local slope at the largest log d, the coefficient vector)."""
    x = _design(logd, curved)
    coef, *_ = np.linalg.lstsq(x, logq, rcond=None)
    slope = coef[1] + (2 * coef[2] * logd.max() if curved else 0.0)
    return float(slope), coef


def local_exponent(
    by_d: dict[int, list[float]], n_boot: int = 2000, seed: int = 0
) -> LocalExponent:
    """The local exponent of Q at the largest d with a positive seed mean.

    With four or more such d, log(seed mean) is fitted by a parabola in log d and the slope is
    its derivative at the largest d (a quantity that levels off reads as levelling off, where a
    straight line over the whole range would average its past growth in); with exactly three, a
    straight line. The 95% interval is the wider, on each side, of two: a bootstrap that
    resamples seeds (the k-th value at every d moves together when every d has the same number
    of seeds, as for a sweep's shared seed list; otherwise within each d), and the fit's own
    residual error (t quantile with the fit's degrees of freedom). Identical seeds therefore do
    not give a zero-width interval unless the fit is also exact.

    Args:
      by_d: {d: per-seed values of Q}.
      n_boot: bootstrap replicates.
      seed: bootstrap RNG seed.

    Returns:
      A LocalExponent; slope NaN with fewer than three d of positive mean.
    """
    arrs = {d: np.asarray(v, np.float64) for d, v in by_d.items() if len(v)}
    used = [d for d in sorted(arrs) if arrs[d].mean() > 0]
    if len(used) < 3:
        return LocalExponent(math.nan, math.nan, math.nan, used, math.nan, "none")
    curved = len(used) >= 4
    logd = np.log(np.asarray(used, np.float64))
    means = np.array([arrs[d].mean() for d in used])
    slope, coef = _local(logd, np.log(means), curved)
    # residual error of the local slope: g^T Σ g with Σ = s² (XᵀX)⁻¹
    x = _design(logd, curved)
    dof = len(used) - x.shape[1]
    half_res = 0.0
    if dof > 0:
        resid = np.log(means) - x @ coef
        s2 = float(resid @ resid) / dof
        g = np.array([0.0, 1.0] + ([2 * logd.max()] if curved else []))
        half_res = t975(dof) * math.sqrt(max(s2 * float(g @ np.linalg.pinv(x.T @ x) @ g), 0.0))
    # seed bootstrap
    rng = np.random.default_rng(seed)
    n_seeds = len(arrs[used[0]])
    shared = all(len(arrs[d]) == n_seeds for d in used)
    boots = []
    for _ in range(n_boot):
        if shared:
            idx = rng.integers(0, n_seeds, n_seeds)
            bm = np.array([arrs[d][idx].mean() for d in used])
        else:
            bm = np.array([rng.choice(arrs[d], len(arrs[d])).mean() for d in used])
        if np.all(bm > 0):
            boots.append(_local(logd, np.log(bm), curved)[0])
    b_lo, b_hi = np.percentile(boots, [2.5, 97.5]) if boots else (slope, slope)
    lo = min(float(b_lo), slope - half_res)
    hi = max(float(b_hi), slope + half_res)
    return LocalExponent(
        slope, lo, hi, used, float(coef[2]) if curved else 0.0, "curvature" if curved else "line"
    )


# ---- Θ: candidate scales by an information criterion
def compare_scales(
    by_d: dict[int, list[float]], candidates: dict[str, Callable[[float], float]]
) -> list[dict]:
    """Each candidate scale s(d) fitted as Q ≈ C · s(d) (one free constant) to every seed's value,
    in logs, and ranked by Akaike's criterion AIC = n log(RSS/n) + 2 (the same for all, so it
    ranks by the residual sum of squares; the Akaike weights say how much the data prefer one).

    Args:
      by_d: {d: per-seed positive values (e.g. stage times)}.
      candidates: {name: s}, s(d) > 0.

    Returns:
      Rows {name, C, rss, aic, delta (AIC − the best AIC), weight}, best first; empty with
      fewer than two distinct d.
    """
    pts = [(d, v) for d in sorted(by_d) for v in by_d[d] if v > 0]
    if len({d for d, _ in pts}) < 2:
        return []
    n = len(pts)
    rows = []
    for name, s in candidates.items():
        y = np.array([math.log(v) - math.log(s(d)) for d, v in pts])
        log_c = float(y.mean())
        rss = max(float(((y - log_c) ** 2).sum()), 1e-300 * n)
        rows.append(
            {"name": name, "C": math.exp(log_c), "rss": rss, "aic": n * math.log(rss / n) + 2.0}
        )
    best = min(r["aic"] for r in rows)
    w = [math.exp(-(r["aic"] - best) / 2) for r in rows]
    for r, wi in zip(rows, w):
        r["delta"] = r["aic"] - best
        r["weight"] = wi / sum(w)
    return sorted(rows, key=lambda r: r["aic"])


# ---- "every … w.h.p.": the failure share must fall to 0
def _logistic(x: np.ndarray, k: np.ndarray, n: np.ndarray, iters: int = 100):
    """Binomial GLM logit p = a + b x by Newton's method; None where it does not converge
    (complete separation: shares 0 or 1 everywhere on one side)."""
    beta = np.zeros(2)
    xm = np.stack([np.ones_like(x), x], axis=1)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(xm @ beta)))
        grad = xm.T @ (k - n * p)
        hess = (xm * (n * p * (1 - p))[:, None]).T @ xm
        try:
            step = np.linalg.solve(hess + 1e-12 * np.eye(2), grad)
        except np.linalg.LinAlgError:
            return None
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            return beta if np.all(np.abs(beta) < 50) else None
    return None


def failure_trend(cells: list[tuple], n_boot: int = 2000, seed: int = 0) -> dict:
    """The trend in d of a failure share: logit P(fail) = a + b log d over every config's count,
    with a 95% interval for b from a bootstrap that resamples seeds (each seed's configs at all d
    together: the neurons of one config are not independent draws).

    Args:
      cells: (d, seed, failures, objects) per config.
      n_boot: bootstrap replicates.
      seed: bootstrap RNG seed.

    Returns:
      {"slope", "lo", "hi" (NaN where the fit does not exist), "by_d": {d: (failures, objects)},
      "d": the d values, "separated": True when every d has 0 failures or every object failed}.
    """
    by_d: dict[int, list[int]] = {}
    for d, _, k, n in cells:
        acc = by_d.setdefault(int(d), [0, 0])
        acc[0] += int(k)
        acc[1] += int(n)
    out = {
        "by_d": {d: tuple(v) for d, v in sorted(by_d.items())},
        "d": sorted(by_d),
        "slope": math.nan,
        "lo": math.nan,
        "hi": math.nan,
        "separated": False,
    }
    if len(by_d) < 2:
        return out
    arr = np.array([(math.log(d), k, n, s) for d, s, k, n in cells if n > 0], np.float64)
    ks, ns = arr[:, 1], arr[:, 2]
    if ks.sum() == 0 or ks.sum() == ns.sum():
        out["separated"] = True
        return out
    beta = _logistic(arr[:, 0], ks, ns)
    if beta is None:
        out["separated"] = True
        return out
    seeds = sorted(set(arr[:, 3]))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        pick = rng.choice(seeds, len(seeds))
        rows = np.concatenate([arr[arr[:, 3] == s] for s in pick])
        if len(set(rows[:, 0])) < 2:
            continue
        b = _logistic(rows[:, 0], rows[:, 1], rows[:, 2])
        if b is not None:
            boots.append(b[1])
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (math.nan, math.nan)
    out.update(slope=float(beta[1]), lo=float(lo), hi=float(hi))
    return out


# ---- maxima over many objects against the extreme-value law
def poisson_max_quantile(mean: float, n: int, q: float) -> int:
    """The q-quantile of the maximum of n independent Poisson(mean) counts: the smallest k with
    F(k)^n ≥ q, F the Poisson CDF (exact, summed in floating point)."""
    if mean <= 0:
        return 0
    need = q ** (1.0 / n)
    k, pmf = 0, math.exp(-mean)
    cdf = pmf
    while cdf < need and k < 10_000 + 100 * mean:
        k += 1
        pmf *= mean / k
        cdf += pmf
        if pmf == 0.0 and cdf < need:  # underflow past the mode: the rest of the tail is lost
            return k
    return k


def max_excess(
    maxima: dict[int, list[float]],
    mean0: float,
    n_objects: dict[int, int],
    theta: float,
    d0: int,
) -> dict[int, list[float]]:
    """Observed maxima over the median maximum of n_objects[d] independent Poisson counts whose
    mean is the claimed size, mean0 · (d/d0)^θ (mean0: the per-object mean at the reference d0).

    A count made of many rare events (a neuron ordinary for a few of d features, a feature with
    a few of m neurons) is close to Poisson. A maximum over n such counts grows like
    log n / log log n even when each one stays O(1); under the claim this ratio stays bounded
    as d grows, and a ratio that grows says that the per-object count itself outgrows d^θ.

    Returns:
      {d: per-seed ratios} (inf where the reference median is 0 and the maximum is not).
    """
    out = {}
    for d, ms in maxima.items():
        med = poisson_max_quantile(mean0 * (d / d0) ** theta, n_objects[d], 0.5)
        out[d] = [m / med if med > 0 else (1.0 if m <= 0 else math.inf) for m in ms]
    return out
