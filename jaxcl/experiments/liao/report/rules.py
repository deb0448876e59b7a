"""The rules that read an asymptotic statement where it can be read (docs/liao.md, "How a claim
is judged"): a bound that cannot fail is vacuous, a claim whose hypotheses fail is outside them,
a maximum over many objects is set against the extreme-value law of the claimed per-object size,
a Θ scale is ranked among candidates by AIC, and "every … w.h.p." asks a failure share that
falls with d. Pure functions of numbers; known answers in tests/test_claims.py."""

from __future__ import annotations

import math

import numpy as np

from jaxcl import asymptotics
from jaxcl.experiments.liao.report.verdicts import CONTRADICTS, GROWTH, SUPPORTS, TOL, UNDECIDED

VACUOUS, OUTSIDE = "vacuous", "outside the hypotheses"
SLOPE_EPS = 1e-6  # a logistic slope this close to 0 is 0 (a share equal at every d: round-off)
AIC_SUPPORT, AIC_CONTRADICT = 2.0, 10.0  # ΔAIC to the best candidate: ≤ 2 fits as well, > 10 not


def vacuous(theta: float, trivial: float | None) -> tuple[str, str] | None:
    """(VACUOUS, why) when O(d^θ) with the tolerance reaches the exponent the quantity never
    exceeds (|N_i| ≤ d: 1; |M_j| ≤ m: C_m), so that no data could contradict it; else None."""
    if trivial is not None and theta + TOL >= trivial:
        return VACUOUS, (
            f"O(d^{theta:.3g}) with the tolerance {TOL:g} reaches d^{trivial:g}, which the "
            "quantity never exceeds: the bound cannot fail"
        )
    return None


def outside(failed: dict[str, str]) -> tuple[str, str]:
    """(OUTSIDE, why) naming each failed hypothesis with where it fails."""
    return OUTSIDE, "; ".join(f"{name} fails ({where})" for name, where in failed.items())


def maximum(
    maxima: dict[int, list[float]],
    mean0: float,
    n_objects: dict[int, int],
    theta: float,
    d0: int,
    *,
    what: str,
) -> tuple[str, str, dict]:
    """max over n objects of a per-object count claimed O(d^θ), against the extreme-value law.

    Each observed maximum is divided by the median maximum of n_objects[d] Poisson counts of the
    claimed size mean0·(d/d0)^θ (asymptotics.max_excess). Supported when that excess is at most
    GROWTH in every seed at the last three d (the growth is what extreme values of an O(d^θ)
    count give) and its local exponent's interval does not lie above 0; contradicted when its seed mean exceeds GROWTH at the last two d and its local
    exponent's interval lies above 0 (the per-object count itself outgrows d^θ); else undecided.

    Returns:
      (verdict, why, {"excess": {d: seed mean}, "local": [slope, lo, hi]}).
    """
    ex = asymptotics.max_excess(maxima, mean0, n_objects, theta, d0)
    ds = sorted(ex)
    tail = ds[-3:]
    mean_ex = {d: float(np.mean(ex[d])) for d in ds}
    finite = {d: v for d, v in ex.items() if all(math.isfinite(x) for x in v)}
    loc = asymptotics.local_exponent(finite) if len(finite) >= 3 else None
    info = {
        "excess": {str(d): mean_ex[d] for d in ds},
        "local": [loc.slope, loc.lo, loc.hi] if loc else [math.nan] * 3,
    }
    cells = ", ".join(f"{mean_ex[d]:.3g}" for d in tail)
    where = (
        f"the maximum over the median maximum of {what} Poisson counts of the claimed size "
        f"({mean0:.3g}·(d/{d0})^{theta:.3g}) is {cells} at d = {tail}"
    )
    if len(tail) < 3:
        return UNDECIDED, f"{where}: fewer than three d", info
    if all(max(ex[d]) <= GROWTH for d in tail):
        if loc is not None and math.isfinite(loc.lo) and loc.lo > 0:
            return (
                UNDECIDED,
                (
                    f"{where}: within {GROWTH:g}× in every seed, but the excess rises (local "
                    f"exponent {loc.slope:.3g} [{loc.lo:.3g}, {loc.hi:.3g}]): larger d decide"
                ),
                info,
            )
        return SUPPORTS, f"{where}: within {GROWTH:g}× in every seed, not rising", info
    rising = all(mean_ex[a] < mean_ex[b] for a, b in zip(tail, tail[1:]))
    if all(mean_ex[d] > GROWTH for d in tail[-2:]) and rising:
        return (
            CONTRADICTS,
            f"{where}: past {GROWTH:g}× at the last two d and rising over the last three",
            info,
        )
    return UNDECIDED, f"{where}: neither within {GROWTH:g}× everywhere nor growing past it", info


def scale(
    by_d: dict[int, list[float]], named: str, candidates: dict
) -> tuple[str, str, list[dict]]:
    """Q = Θ(s(d)) for the named candidate s, ranked among `candidates` ({name: s}) by AIC with
    one constant each (asymptotics.compare_scales). Supported when the named scale is within
    AIC_SUPPORT of the best; contradicted when it is more than AIC_CONTRADICT behind it (the
    data favour another scale by a likelihood ratio of e^5 ≈ 150); else undecided."""
    rows = asymptotics.compare_scales(by_d, candidates)
    if len({d for d in by_d if by_d[d]}) < 3 or not rows:
        return UNDECIDED, f"reached at {len(by_d)} d only: fewer than three", rows
    mine = next(r for r in rows if r["name"] == named)
    best = rows[0]
    ranking = ", ".join(f"{r['name']} ΔAIC {r['delta']:.3g}" for r in rows)
    if mine["delta"] <= AIC_SUPPORT:
        return SUPPORTS, f"{named} fits within ΔAIC {AIC_SUPPORT:g} of the best ({ranking})", rows
    if mine["delta"] > AIC_CONTRADICT:
        return (
            CONTRADICTS,
            f"{best['name']} fits better by ΔAIC {mine['delta']:.3g} > {AIC_CONTRADICT:g} "
            f"({ranking})",
            rows,
        )
    why = f"ΔAIC {mine['delta']:.3g} between {AIC_SUPPORT:g} and {AIC_CONTRADICT:g} ({ranking})"
    return UNDECIDED, why, rows


def falls(cells: list[tuple], what: str) -> tuple[str, str, dict]:
    """ "Every … w.h.p.": the share of objects that fail must fall towards 0 as d grows.

    Args:
      cells: (d, seed, failures, objects) per config.
      what: the failing objects, in words.

    Supported when no object fails at any d, or the logistic slope in log d (seed-clustered
    95% interval, asymptotics.failure_trend) lies below 0; contradicted when it lies above 0
    (the failures become more common) or every object fails; else undecided.

    Returns:
      (verdict, why, the failure_trend result with its by_d cells as lists).
    """
    tr = asymptotics.failure_trend(cells)
    by = ", ".join(f"d = {d}: {k}/{n}" for d, (k, n) in tr["by_d"].items())
    info = {**tr, "by_d": {str(d): list(v) for d, v in tr["by_d"].items()}}
    if len(tr["d"]) < 2:
        return UNDECIDED, f"{what}: {by}; one d gives no trend", info
    if tr["separated"]:
        if all(k == 0 for k, _ in tr["by_d"].values()):
            return SUPPORTS, f"no {what} at any d ({by})", info
        return CONTRADICTS, f"every object is one of the {what} ({by})", info
    where = (
        f"{what}: {by}; logistic slope in log d {tr['slope']:.3g} [{tr['lo']:.3g}, {tr['hi']:.3g}]"
    )
    if tr["hi"] < -SLOPE_EPS:
        return SUPPORTS, f"{where}: the share falls", info
    if tr["lo"] > SLOPE_EPS:
        return CONTRADICTS, f"{where}: the share grows with d", info
    return UNDECIDED, f"{where}: no trend shown", info
