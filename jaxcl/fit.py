"""Scaling-exponent fits (SPEC §6): least squares of log Q on log d over seed means, with a 95%
bootstrap interval that resamples seeds within each d. Zeros are excluded with a warning."""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass
class Fit:
    """A fitted exponent: Q ≈ exp(intercept) · d^slope."""

    slope: float
    intercept: float
    lo: float  # 2.5% bootstrap quantile of the slope
    hi: float  # 97.5%
    d_used: list[int]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return math.isfinite(self.slope)


def _slope(logd: np.ndarray, logq: np.ndarray) -> tuple[float, float]:
    a = np.stack([logd, np.ones_like(logd)], axis=1)
    (slope, icpt), *_ = np.linalg.lstsq(a, logq, rcond=None)
    return float(slope), float(icpt)


def fit_exponent(values: dict[int, list[float]], n_boot: int = 2000, seed: int = 0,
                 name: str = "Q") -> Fit:
    """Least-squares slope of log(seed mean of Q) on log d, with a 95% bootstrap interval.

    Args:
      values: {d: per-seed values of Q at that d}.
      n_boot: bootstrap replicates (seeds resampled with replacement within each d).
      seed: bootstrap RNG seed.
      name: what Q is, for the warnings.

    Returns:
      A Fit; slope NaN when fewer than two d have a positive mean. A d whose mean is zero is
      left out (warning); a bootstrap replicate with a zero mean at some d drops that d.
    """
    warnings = []
    ds = sorted(values)
    arrs = {d: np.asarray(values[d], np.float64) for d in ds}
    used = [d for d in ds if len(arrs[d]) and arrs[d].mean() > 0]
    dropped = [d for d in ds if d not in used]
    if dropped:
        warnings.append(f"{name}: zero (or no) values at d = {dropped}, excluded from the fit")
    if len(used) < 2:
        warnings.append(f"{name}: fewer than two d with positive values; no fit")
        return Fit(math.nan, math.nan, math.nan, math.nan, used, warnings)
    logd = np.log(np.asarray(used, np.float64))
    slope, icpt = _slope(logd, np.log([arrs[d].mean() for d in used]))
    rng = np.random.default_rng(seed)
    boots, n_partial = [], 0
    for _ in range(n_boot):
        means = np.array([rng.choice(arrs[d], size=len(arrs[d])).mean() for d in used])
        pos = means > 0
        n_partial += not pos.all()
        if pos.sum() >= 2:
            boots.append(_slope(logd[pos], np.log(means[pos]))[0])
    if n_partial:
        warnings.append(f"{name}: {n_partial}/{n_boot} bootstrap replicates had a zero mean at "
                        "some d (that d dropped in those replicates)")
    if any(len(arrs[d]) < 2 for d in used):
        warnings.append(f"{name}: a single seed at some d; the interval ignores its spread")
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (math.nan, math.nan)
    return Fit(slope, icpt, float(lo), float(hi), used, warnings)


def fit_curve(ds: list[int], q: list[float]) -> float:
    """Least-squares slope of log q on log d for deterministic values (e.g. expectations)."""
    pts = [(d, v) for d, v in zip(ds, q) if v > 0]
    if len(pts) < 2:
        return math.nan
    return _slope(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]))[0]
