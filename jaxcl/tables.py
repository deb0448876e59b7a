"""Markdown table cells for the reports (numbers, seed means ± sd, escaped pipes) and the
intervals they print (normal over seeds, exact binomial)."""

from __future__ import annotations

import math

import numpy as np


def md(text: str) -> str:
    """A table cell: pipes escaped."""
    return text.replace("|", "\\|")


def md_row(*cells: str) -> str:
    return "| " + " | ".join(md(c) for c in cells) + " |"


def num(x, nd=3) -> str:
    """A number to `nd` significant digits; — for None or non-finite."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{nd}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def mean_sd(v) -> str:
    """Seed mean ± sd of the finite values (— if none)."""
    v = [x for x in v if x is not None and math.isfinite(x)]
    if not v:
        return "—"
    return f"{np.mean(v):.3g} ± {np.std(v):.2g}" if len(v) > 1 else f"{v[0]:.3g}"


def mean_ci(v, z: float = 1.96) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of the finite values and its normal 95% interval over seeds
    (t-free; NaN width for a single value)."""
    v = np.asarray([x for x in v if x is not None and math.isfinite(x)], float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    if len(v) == 1:
        return float(v[0]), math.nan, math.nan
    half = z * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def mean_diff_ci(a, b) -> tuple[float, float, float]:
    """(mean of a − mean of b, lo, hi): the difference of two groups' means over their finite
    values and its normal 95% interval (independent seeds); NaN with fewer than two in either."""
    a = np.asarray([x for x in a if x is not None and math.isfinite(x)], float)
    b = np.asarray([x for x in b if x is not None and math.isfinite(x)], float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan, math.nan
    d = a.mean() - b.mean()
    half = 1.96 * math.hypot(a.std(ddof=1) / math.sqrt(len(a)), b.std(ddof=1) / math.sqrt(len(b)))
    return float(d), float(d - half), float(d + half)


def clopper_pearson(x: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper–Pearson) interval of a binomial share x/n.

    lo solves P(X ≥ x | lo) = (1 − level)/2 and hi solves P(X ≤ x | hi) = (1 − level)/2, by
    bisection on the binomial tail summed in log space (any n). lo = 0 when x = 0, hi = 1 when
    x = n. Used by the liao claims (verdicts.share) and the geometry report.

    Args:
      x: successes, 0 ≤ x ≤ n.
      n: trials, ≥ 1.
      level: coverage, in (0, 1).

    Returns:
      (lo, hi).
    """
    if not (isinstance(n, int) and n >= 1 and isinstance(x, int) and 0 <= x <= n):
        raise ValueError(f"clopper_pearson: need integers 0 <= x <= n, n >= 1 (x={x}, n={n})")
    a = (1.0 - level) / 2
    i = np.arange(n + 1, dtype=np.float64)
    logc = np.array(
        [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in range(n + 1)]
    )

    def cdf(q, p):  # P(X ≤ q) for X ~ Bin(n, p), 0 < p < 1
        t = logc[: q + 1] + i[: q + 1] * math.log(p) + (n - i[: q + 1]) * math.log1p(-p)
        top = t.max()
        return min(1.0, math.exp(top) * float(np.exp(t - top).sum()))

    def solve(f):  # the root of an increasing f on (0, 1)
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
        return 0.5 * (lo + hi)

    low = 0.0 if x == 0 else solve(lambda p: (1 - cdf(x - 1, p)) - a)
    high = 1.0 if x == n else solve(lambda p: a - cdf(x, p))
    return low, high


def ci_cell(v, nd=3) -> str:
    """'mean [lo, hi]' of mean_ci."""
    m, lo, hi = mean_ci(v)
    if not math.isfinite(m):
        return "—"
    if not math.isfinite(lo):
        return num(m, nd)
    return f"{num(m, nd)} [{num(lo, nd)}, {num(hi, nd)}]"


def int_runs(values) -> str:
    """Integers as sorted runs: [0, 1, 2, 3, 7, 9, 10] -> "0–3, 7, 9, 10" (a run of three or more
    as first–last)."""
    xs, out, i = sorted(set(values)), [], 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out += [f"{xs[i]}–{xs[j]}"] if j - i >= 2 else [str(x) for x in xs[i : j + 1]]
        i = j + 1
    return ", ".join(out)
