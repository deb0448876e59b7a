"""Scaling-exponent fits (SPEC §6): least squares of log Q on log d over seed means, with a 95%
bootstrap interval that resamples seeds within each d; `exponent` fits columns of a table."""

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

    @classmethod
    def from_row(cls, row) -> "Fit":
        """The Fit of one row of `exponent`'s table."""
        return cls(
            row["slope"],
            row["intercept"],
            row["lo"],
            row["hi"],
            list(row["x_used"]),
            list(row["warnings"]),
        )


def _slope(logd: np.ndarray, logq: np.ndarray) -> tuple[float, float]:
    a = np.stack([logd, np.ones_like(logd)], axis=1)
    (slope, icpt), *_ = np.linalg.lstsq(a, logq, rcond=None)
    return float(slope), float(icpt)


def fit_exponent(
    values: dict[int, list[float]],
    n_boot: int = 2000,
    seed: int = 0,
    name: str = "Q",
    x_name: str = "d",
) -> Fit:
    """Least-squares slope of log(seed mean of Q) on log d, with a 95% bootstrap interval.

    Args:
      values: {d: per-seed values of Q at that d}.
      n_boot: bootstrap replicates (seeds resampled with replacement within each d).
      seed: bootstrap RNG seed.
      name: what Q is, for the warnings.
      x_name: what d is, for the warnings.

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
        warnings.append(
            f"{name}: zero (or no) values at {x_name} = {dropped}, excluded from the fit"
        )
    if len(used) < 2:
        warnings.append(f"{name}: fewer than two {x_name} with positive values; no fit")
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
        warnings.append(
            f"{name}: {n_partial}/{n_boot} bootstrap replicates had a zero mean at "
            f"some {x_name} (that {x_name} dropped in those replicates)"
        )
    if any(len(arrs[d]) < 2 for d in used):
        warnings.append(f"{name}: a single seed at some {x_name}; the interval ignores its spread")
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (math.nan, math.nan)
    return Fit(slope, icpt, float(lo), float(hi), used, warnings)


COLUMNS = ["y", "slope", "lo", "hi", "intercept", "n_x", "x_used", "warnings"]


def exponent(
    df,
    x: str = "d",
    y: str | list[str] | None = None,
    by: str | list[str] = (),
    *,
    n_boot: int = 2000,
    seed: int = 0,
    name: str | None = None,
):
    """Scaling exponents of columns of a table: for each group of `by` and each column of `y`,
    `fit_exponent` of y on x (slope of log(mean y at each x) on log x, 95% bootstrap interval
    resampling the rows at each x, e.g. seeds). The report's exponents are these fits.

    Args:
      df: a pandas DataFrame, e.g. `jaxcl.open(run_dir).finals()`; one row per seed.
      x: the column to fit against (positive).
      y: the column(s) to fit; rows where y or x is missing (NaN/None) are left out (counted in
        the warnings).
      by: columns whose every combination is fitted apart (sorted, as `groupby` does).
      n_boot, seed: bootstrap replicates and RNG seed (as `fit_exponent`; the report's: 2000, 0).
      name: a str.format template for the warnings, from `y`, `x` and the `by` columns (default:
        "<y>", with " at <by> = <value>, ..." when grouped).

    Returns:
      A tidy DataFrame, one row per (group, y): the `by` columns, then "y", "slope", "lo", "hi"
      (the interval), "intercept", "n_x" (how many x were fitted), "x_used" (their list) and
      "warnings" (a list of str). slope is NaN where fewer than two x have a positive mean.

    Raises:
      KeyError: a column that `df` does not have, naming it and the columns it has.
    """
    import pandas as pd

    if y is None:
        raise TypeError("fit.exponent: give y, the column(s) to fit")
    ys = [y] if isinstance(y, str) else list(y)
    by = [by] if isinstance(by, str) else list(by or [])
    missing = [c for c in dict.fromkeys([x, *ys, *by]) if c not in df.columns]
    if missing:
        raise KeyError(f"fit.exponent: no column(s) {missing}; the table has {list(df.columns)}")
    groups = df.groupby(by, sort=True, dropna=False) if by else [((), df)]
    out = []
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        labels = {b: (k.item() if isinstance(k, np.generic) else k) for b, k in zip(by, key)}
        for col in ys:
            label = (
                name.format(y=col, x=x, **labels)
                if name is not None
                else col
                + (" at " + ", ".join(f"{b} = {v}" for b, v in labels.items()) if labels else "")
            )
            sub = part[[x, col]].dropna()
            values: dict = {}
            for xv, yv in zip(sub[x].tolist(), sub[col].tolist()):
                values.setdefault(xv, []).append(float(yv))
            ft = fit_exponent(values, n_boot=n_boot, seed=seed, name=label, x_name=x)
            gone = len(part) - len(sub)
            warnings = [f"{label}: {gone} row(s) without a value left out"] if gone else []
            out.append(
                {
                    **labels,
                    "y": col,
                    "slope": ft.slope,
                    "lo": ft.lo,
                    "hi": ft.hi,
                    "intercept": ft.intercept,
                    "n_x": len(ft.d_used),
                    "x_used": ft.d_used,
                    "warnings": warnings + ft.warnings,
                }
            )
    return pd.DataFrame(out, columns=[*by, *COLUMNS])


def by_key(table) -> dict[tuple, Fit]:
    """`exponent`'s table as {(y, *by values): Fit}."""
    by = list(table.columns[: len(table.columns) - len(COLUMNS)])
    return {
        (row["y"], *(row[b] for b in by)): Fit.from_row(row) for row in table.to_dict("records")
    }


def fit_curve(ds: list[int], q: list[float]) -> float:
    """Least-squares slope of log q on log d for deterministic values (e.g. expectations)."""
    pts = [(d, v) for d, v in zip(ds, q) if v > 0]
    if len(pts) < 2:
        return math.nan
    return _slope(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]))[0]
