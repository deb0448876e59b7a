"""Markdown table cells for the reports: numbers, seed means ± sd, escaped pipes."""

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


def ci_cell(v, nd=3) -> str:
    """'mean [lo, hi]' of mean_ci."""
    m, lo, hi = mean_ci(v)
    if not math.isfinite(m):
        return "—"
    if not math.isfinite(lo):
        return num(m, nd)
    return f"{num(m, nd)} [{num(lo, nd)}, {num(hi, nd)}]"
