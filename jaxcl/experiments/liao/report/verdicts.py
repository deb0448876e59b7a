"""Verdict rules for asymptotic claims read at finite d (argued in docs/liao.md: "How a claim is
judged"): judged on the tail of the d range, against the exact expectation where one exists, with
exact binomial intervals for shares. Pure functions of numbers, tested with known answers in
tests/test_claims.py; `design` names what would decide an undecided claim, and what it costs."""

from __future__ import annotations

import math

import numpy as np

from jaxcl import asymptotics, fit
from jaxcl.tables import clopper_pearson

SUPPORTS, CONTRADICTS, UNDECIDED = "supports", "contradicts", "cannot decide"
TAIL_D = 3  # the tail: the last three d (the local slope at the largest d)
TOL = 0.1  # exponent tolerance: Θ/O/Ω hide constants; 0.1 moves Q/d^θ by 7% per doubling of d
MAX_WIDTH = 1.0  # a tail interval wider than this (in exponent units) decides no growth claim
GROWTH = 2.0  # O(d^θ) contradicted only if Q/d^θ at the largest d is > GROWTH × its small-d max
SHARE_SUPPORT, SHARE_CONTRADICT = 0.8, 0.5  # shares: supported / contradicted thresholds

# The cost model of `design`'s estimates, which the report prints as CPU time: one config at
# d = REF_D, C_m = REF_C_M trained to T_4 takes REF_MINUTES wall minutes on a 2-core CPU (the
# theorem33 sweep of results/theorem33-cpu spent about 36 of its 46 minutes on its 16 such
# configs); a config's cost grows as m·d1·T_4 ∝ d^C_m · d · d^1.99 = d^(C_m + COST_EXPONENT).
REF_D, REF_C_M, REF_MINUTES = 128, 1.5, 2.3
COST_EXPONENT = 2.99


def tail_fit(by_d: dict[int, list[float]]) -> fit.Fit:
    """The local exponent at the largest d with a positive mean (asymptotics.local_exponent: a
    fit with a curvature term over four or more such d, a line over three; its 95% interval the
    wider of a seed bootstrap and the fit's residual error)."""
    loc = asymptotics.local_exponent({d: v for d, v in by_d.items() if np.mean(v) > 0})
    return fit.Fit(loc.slope, math.nan, loc.lo, loc.hi, loc.d_used, [])


def _moved(by_d: dict, theta: float, tail_start: int, up: bool) -> tuple[float, list]:
    """Q/d^θ at the largest d over its largest (up) or smallest (not up) value at the d below
    the tail (the first tail d when there are none): how far a constant fitted to the small d
    has been left behind. Returns (that ratio, the small d)."""
    ds = sorted(by_d)
    sc = {d: float(np.mean(v)) / d**theta for d, v in by_d.items()}
    small = [d for d in ds if d < tail_start] or [tail_start]
    ref = (max if up else min)(sc[d] for d in small)
    return sc[ds[-1]] / max(ref, 1e-300), small


def expectation_slope(expected: dict, falling: bool) -> float:
    """Local log-slope of an expectation at its largest d (its last two d), from the side that
    is conservative for the test: {d: (E, se)} (a Monte Carlo expectation; se 0 when exact).

    falling=True (does it fall?) takes E + 2se at the largest d over E − 2se at the one before;
    falling=False (does it grow?) E − 2se over E + 2se. NaN where a needed bound is ≤ 0; −inf
    when it is 0 at the largest d, exactly, and positive before (it vanishes).
    """
    ds = sorted(expected)[-2:]
    if len(ds) < 2:
        return math.nan
    (ea, sa), (eb, sb) = (
        expected[d] if isinstance(expected[d], tuple) else (expected[d], 0.0) for d in ds
    )
    a, b = (ea - 2 * sa, eb + 2 * sb) if falling else (ea + 2 * sa, eb - 2 * sb)
    if falling and a > 0 and b <= 0:
        return -math.inf
    if a <= 0 or b <= 0:
        return math.nan
    return math.log(b / a) / math.log(ds[1] / ds[0])


def _e(v) -> float:
    return v[0] if isinstance(v, tuple) else v


def upper(
    by_d: dict[int, list[float]],
    theta: float,
    *,
    trivial: float | None = None,
    expected: dict[int, float] | None = None,
) -> tuple[str, str]:
    """Q = O(d^θ) for a quantity measured per seed at several d.

    Supported when the tail slope's interval stays at or below θ + TOL (a bounded or levelling
    quantity supports any O(d^θ ≥ 0)). Contradicted when the tail interval lies above θ + TOL
    *and* Q/d^θ at the largest d exceeds GROWTH × its largest value at the smaller d (no constant
    that fits the small d covers it), or when the exact expectation of a quantity Q bounds from
    below grows faster than d^(θ + TOL) at the largest d computed. Otherwise undecided.
    """
    if trivial is not None and theta >= trivial:
        return UNDECIDED, (
            f"vacuous bound: O(d^{theta:.3g}) is at or above d^{trivial:.3g}, "
            "which the quantity never exceeds"
        )
    e_note = ""
    if expected:
        es = expectation_slope(expected, falling=False)
        d_far = max(expected)
        if math.isfinite(es) and es > theta + TOL:
            return CONTRADICTS, (
                f"fails in expectation: its exact expectation grows with local "
                f"slope {es:.3g} > {theta:.3g} + {TOL:g} at d = {d_far}"
            )
        if math.isfinite(es):
            e_note = f"; its exact expectation has local slope {es:.3g} at d = {d_far}"
    ds = sorted(by_d)
    tail_ds = [d for d in ds][-TAIL_D:]
    if all(np.mean(by_d[d]) <= 0 for d in tail_ds):
        return SUPPORTS, f"zero at d = {tail_ds}: within any O(·){e_note}"
    t = tail_fit(by_d)
    if len(t.d_used) < TAIL_D or not t.ok:
        return (
            UNDECIDED,
            f"too few d with a positive value ({t.d_used}) for a local exponent{e_note}",
        )
    where = (
        f"the local exponent at d = {t.d_used[-1]} (fit over d = {t.d_used}) is {t.slope:.3g} "
        f"[{t.lo:.3g}, {t.hi:.3g}]"
    )
    if t.hi <= theta + TOL:
        return SUPPORTS, f"{where}, at most {theta:.3g} + {TOL:g}{e_note}"
    excess, small = _moved(by_d, theta, t.d_used[-TAIL_D], up=True)
    if t.lo > theta + TOL:
        if excess > GROWTH:
            return CONTRADICTS, (
                f"{where}, above {theta:.3g} + {TOL:g}, and Q/d^θ at d = "
                f"{ds[-1]} is {excess:.3g}× its largest value at d = {small}"
                f"{e_note}"
            )
        return UNDECIDED, (
            f"{where}, above {theta:.3g} + {TOL:g}, but Q/d^θ at d = {ds[-1]} is "
            f"only {excess:.3g}× its small-d values (≤ {GROWTH:g}×): a constant "
            f"cannot be ruled out{e_note}"
        )
    if t.hi - t.lo > MAX_WIDTH:
        return UNDECIDED, f"{where}: wider than {MAX_WIDTH:g}{e_note}"
    return UNDECIDED, f"{where}: it straddles {theta:.3g} + {TOL:g}{e_note}"


def lower(
    by_d: dict[int, list[float]],
    theta: float,
    *,
    count: bool = True,
    expected: dict[int, float] | None = None,
) -> tuple[str, str]:
    """Q = Ω(d^θ) for a count (or a positive quantity) measured per seed at several d.

    θ > 0: supported only when the tail interval lies above max(θ − TOL, 0) (it excludes 0);
    contradicted when it lies below θ − TOL and Q/d^θ at the largest d is under 1/GROWTH of its
    smallest value at the smaller d. θ ≤ 0: for a count, Ω(d^θ) asks only that it is not 0
    (count ≥ c d^θ > 0): supported when it is > 0 in every seed at the tail d, contradicted when
    it is 0 in every seed at every tail d (for θ > 0 too). Either sign: contradicted when the exact expectation
    (of a quantity bounding Q from above) falls faster than d^(θ − TOL) at the largest d: a count
    that is ≥ c d^θ with high probability has expectation ≥ (1 − o(1)) c d^θ.
    """
    e_note = ""
    if expected:
        es = expectation_slope(expected, falling=True)
        d_far = max(expected)
        if (es == -math.inf or math.isfinite(es)) and es < theta - TOL:
            vals = ", ".join(f"{_e(expected[d]):.3g}" for d in sorted(expected)[-3:])
            return CONTRADICTS, (
                f"fails in expectation: its exact expectation falls with local "
                f"slope {es:.3g} < {theta:.3g} − {TOL:g} at d = {d_far} (last "
                f"values {vals})"
            )
        if math.isfinite(es):
            e_note = f"; its exact expectation has local slope {es:.3g} at d = {d_far}"
    ds = sorted(by_d)
    tail_ds = ds[-TAIL_D:]
    if count and theta > 0 and all(all(v <= 0 for v in by_d[d]) for d in tail_ds):
        return CONTRADICTS, (
            f"0 in every seed at d = {tail_ds}: a count ≥ c d^θ > 0 is ≥ 1 "
            f"(θ = {theta:.3g}){e_note}"
        )
    if theta <= 0 and count:
        zero = [d for d in tail_ds if all(v <= 0 for v in by_d[d])]
        if all(min(by_d[d]) > 0 for d in tail_ds):
            return SUPPORTS, (
                f"> 0 in every seed at d = {tail_ds}: Ω(d^{theta:.3g}) with "
                f"θ ≤ 0 asks a count only not to vanish{e_note}"
            )
        if zero == tail_ds:
            return CONTRADICTS, (
                f"0 in every seed at d = {tail_ds}: Ω(d^{theta:.3g}) asks a "
                f"count ≥ c d^θ > 0{e_note}"
            )
        return UNDECIDED, f"0 in some seeds at d = {tail_ds}{e_note}"
    t = tail_fit(by_d)
    if len(t.d_used) < TAIL_D or not t.ok:
        zeros = [d for d in tail_ds if np.mean(by_d[d]) <= 0]
        return UNDECIDED, (
            f"zero at d = {zeros}: no local exponent"
            if zeros
            else f"too few d ({t.d_used}) for a local exponent"
        ) + e_note
    where = (
        f"the local exponent at d = {t.d_used[-1]} (fit over d = {t.d_used}) is {t.slope:.3g} "
        f"[{t.lo:.3g}, {t.hi:.3g}]"
    )
    if t.lo > max(theta - TOL, 0.0):
        return SUPPORTS, f"{where}, above {theta:.3g} − {TOL:g} and 0{e_note}"
    shortfall, small = _moved(by_d, theta, t.d_used[-TAIL_D], up=False)
    if t.hi < theta - TOL:
        if shortfall < 1 / GROWTH:
            return CONTRADICTS, (
                f"{where}, below {theta:.3g} − {TOL:g}, and Q/d^θ at d = "
                f"{ds[-1]} is {shortfall:.3g}× its smallest value at d = "
                f"{small}{e_note}"
            )
        return UNDECIDED, (
            f"{where}, below {theta:.3g} − {TOL:g}, but Q/d^θ has fallen only to "
            f"{shortfall:.3g}× its small-d values{e_note}"
        )
    if t.lo <= 0 < theta:
        return UNDECIDED, f"{where}: it contains 0 (no growth shown){e_note}"
    return UNDECIDED, f"{where}: it reaches below {theta:.3g} − {TOL:g}{e_note}"


def equal(by_d: dict[int, list[float]], theta: float) -> tuple[str, str]:
    """Q = Θ(d^θ) (stage times): the tail interval against θ ± TOL, where θ is the slope of the
    theory's scale over the same tail d. Contradicted, as for O and Ω, only when also Q/d^θ at
    the largest d has moved past GROWTH× (or 1/GROWTH×) its small-d values."""
    t = tail_fit(by_d)
    if len(t.d_used) < TAIL_D or not t.ok:
        return UNDECIDED, f"reached at {len(t.d_used)} d only: no local exponent"
    where = (
        f"the local exponent at d = {t.d_used[-1]} (fit over d = {t.d_used}) is {t.slope:.3g} "
        f"[{t.lo:.3g}, {t.hi:.3g}]"
    )
    if t.hi < theta - TOL or t.lo > theta + TOL:
        above = t.lo > theta + TOL
        ds = sorted(by_d)
        moved, _ = _moved(by_d, theta, t.d_used[-TAIL_D], up=above)
        side = "above" if above else "below"
        if (above and moved > GROWTH) or (not above and moved < 1 / GROWTH):
            return CONTRADICTS, (
                f"{where}, entirely {side} {theta:.3g} ± {TOL:g}, and Q/d^θ at "
                f"d = {ds[-1]} is {moved:.3g}× its small-d values"
            )
        return UNDECIDED, (
            f"{where}, entirely {side} {theta:.3g} ± {TOL:g}, but Q/d^θ at "
            f"d = {ds[-1]} is {moved:.3g}× its small-d values (within "
            f"{GROWTH:g}×): a constant still settling cannot be ruled out"
        )
    if t.hi - t.lo > MAX_WIDTH:
        return UNDECIDED, f"{where}: wider than {MAX_WIDTH:g}"
    return SUPPORTS, f"{where}: it meets {theta:.3g} ± {TOL:g}"


def share(
    k: int,
    n: int,
    what: str,
    *,
    support: float = SHARE_SUPPORT,
    contradict: float = SHARE_CONTRADICT,
) -> tuple[str, str, float, float]:
    """A share k/n of objects (neurons) with a property the claim gives every one of them.

    Supported when the Clopper–Pearson interval lies at or above `support`; contradicted when it
    lies below `contradict`; otherwise undecided. Returns (verdict, why, lo, hi).
    """
    if n == 0:
        return UNDECIDED, f"none to count ({what}: 0 of 0)", math.nan, math.nan
    lo, hi = clopper_pearson(k, n)
    cell = (
        f"{k} of {n} {what} ({100 * k / n:.0f}%, exact 95% interval [{100 * lo:.0f}%, "
        f"{100 * hi:.0f}%])"
    )
    if lo >= support:
        return SUPPORTS, f"{cell}: at least {100 * support:.0f}%", lo, hi
    if hi < contradict:
        return CONTRADICTS, f"{cell}: below {100 * contradict:.0f}%", lo, hi
    return (
        UNDECIDED,
        (
            f"{cell}: it reaches below {100 * support:.0f}%"
            + (f" and above {100 * contradict:.0f}%" if hi >= contradict else "")
        ),
        lo,
        hi,
    )


def share_sample(
    p: float, support: float = SHARE_SUPPORT, contradict: float = SHARE_CONTRADICT
) -> int | None:
    """The fewest objects at which a share p (k = round(p n)) gets an exact interval at or above
    `support` or below `contradict`; None when p lies between them (no n decides)."""
    if contradict <= p < support or not 0 <= p <= 1:
        return None

    def decided(n):
        lo, hi = clopper_pearson(int(round(p * n)), n)
        return lo >= support or hi < contradict

    n = 1
    while not decided(n):
        n *= 2
        if n > 1 << 24:
            return None
    lo = n // 2
    while n - lo > 1:  # the first decided n after the last undecided power of two
        mid = (lo + n) // 2
        lo, n = (lo, mid) if decided(mid) else (mid, n)
    return n


def design(row: dict) -> str:
    """The cheapest design that would decide an undecided row, with its cost in CPU minutes
    (`cpu_minutes`) where it trains more configs."""
    if row["bound"] == "share" and not row.get("n"):
        return (
            "nothing at this ratio: the lucky sets are empty in expectation (see the lucky "
            "row); a ratio or C_m with ω1 > 0 has lucky neurons to follow"
        )
    if row["bound"] == "share":
        k, n = row.get("k", 0), row.get("n", 0)
        p = k / n if n else 0.8
        need = share_sample(p)
        return (
            f"{need} objects at the measured share {100 * p:.0f}% would put the exact "
            f"interval on one side of {100 * SHARE_SUPPORT:.0f}% or "
            f"{100 * SHARE_CONTRADICT:.0f}%"
            + (
                f" (about {math.ceil(need / max(n, 1)) - 1} × this run's seeds more at "
                f"d = {row['d'][-1]})"
                if n
                else ""
            )
            if need
            else f"the measured share ({100 * p:.0f}% of {n}) lies between the thresholds: more "
            "samples decide only if the true share lies outside them"
        )
    d_top = max(row.get("trained_d") or row["d"] or [8])
    if row["claim"] == "ratio_N":
        return (
            f"more seeds at d = {d_top} (the interval narrows as 1/√seeds: 4× the seeds "
            f"halves it, {12 * cpu_minutes(d_top, row['C_m']):.0f} min for 12 more here), or "
            f"d = {2 * d_top}: {cpu_minutes(2 * d_top, row['C_m']):.0f} min per config"
        )
    if row["claim"] in ("lucky_min", "ordinary_max", "N0_max"):
        top = max(row["d"])
        if top >= 1024:
            return (
                f"`jaxcl init-stats` past d = {top} (d = {2 * top}, {4 * top}; m = "
                f"d^{row['C_m']:g} neurons, init only) with more seeds: the minimum over d "
                "atoms of a count with mean λ(d) leaves 0 only once λ(d) outgrows log d"
            )
        return (
            "`jaxcl init-stats` to d = 4096 at this ratio and C_m (init only; minutes on a "
            "CPU), read by `jaxcl report --init-stats`"
        )
    minutes = 4 * (cpu_minutes(2 * d_top, row["C_m"]) + cpu_minutes(4 * d_top, row["C_m"]))
    return (
        f"two more d (d = {2 * d_top}, {4 * d_top}) at this ratio and C_m, 4 seeds: about "
        f"{minutes / 60:.1f} h on this 2-core CPU" + (" (a GPU's job)" if minutes > 60 else "")
    )


def cpu_minutes(d: int, C_m: float) -> float:
    """Wall minutes of one config at (d, C_m) trained to T_4 on a 2-core CPU, by the cost model
    above (REF_MINUTES at REF_D, REF_C_M, scaled as d^(C_m + COST_EXPONENT))."""
    return REF_MINUTES * (d ** (C_m + COST_EXPONENT)) / (REF_D ** (REF_C_M + COST_EXPONENT))
