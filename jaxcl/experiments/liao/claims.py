"""The claim-by-claim summary that opens Liao's report: for each claim of Theorem 3.3 and Lemma
C.1 (SPEC §6), the claim in words, the measured exponent with its 95% interval, the bound, and
whether this d range supports it, contradicts it, or cannot decide, and why (a vacuous bound, too
few d, a zero count, an interval too wide). `verdict` and `share_verdict` are pure functions of
numbers, tested with known answers in tests/test_claims.py; the table under the summary shows
the numbers each verdict is read from."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd

from jaxcl import fit
from jaxcl.experiments.liao import theory
from jaxcl.tables import mean_ci, num as _f

SUPPORTS, CONTRADICTS, UNDECIDED = "supports", "contradicts", "cannot decide"
MIN_D = 3  # d values a slope needs before its interval says anything about a trend
MAX_WIDTH = 1.0  # a 95% interval wider than this (in exponent units) decides nothing
# "Lucky neurons stay pure" (Theorem 3.3's proof: a lucky neuron of feature j ends with
# N_i = {j}): supported at a seed mean >= 80%, contradicted when the 95% interval is below 50%.
SHARE_SUPPORT, SHARE_CONTRADICT = 0.8, 0.5
STAGE_TOL = 0.1  # T_1, T_2 = Θ(scale): exponents within ±0.1 of the scale's agree


def verdict(kind: str, slope: float, lo: float, hi: float, theta: float, n_d: int, *,
            trivial: float | None = None, zeros: tuple = (), max_width: float = MAX_WIDTH,
            tol: float = 0.0) -> tuple[str, str]:
    """Whether a fitted exponent supports a bound over the d range it was fitted on.

    Args:
      kind: "lower" (Q = Ω(d^θ)), "upper" (Q = O(d^θ)) or "equal" (Q = Θ(d^θ)).
      slope, lo, hi: the measured exponent and its 95% interval (NaN: no fit).
      theta: the bound's exponent.
      n_d: how many d values the fit used.
      trivial: the exponent the quantity can never exceed (|M_j| ≤ m = d^C_m, |N_i| ≤ d): an
        upper bound at or above it says nothing.
      zeros: d values where the quantity's seed mean is 0 (left out of the fit).
      max_width: a wider interval cannot decide.
      tol: for "equal", exponents within θ ± tol count as agreement (a Θ claim over a finite d
        range: a slope off by 0.1 changes the ratio Q/scale by 2^0.1 = 7% per doubling of d).

    Returns:
      (SUPPORTS | CONTRADICTS | UNDECIDED, the reason in words).
    """
    if kind == "lower" and theta <= 0:
        return UNDECIDED, (f"vacuous bound: Ω(d^{theta:.3g}) with an exponent ≤ 0 holds for any "
                           "count that does not vanish")
    if kind == "upper" and trivial is not None and theta >= trivial:
        return UNDECIDED, (f"vacuous bound: O(d^{theta:.3g}) is at or above d^{trivial:.3g}, "
                           "which the quantity never exceeds")
    if not math.isfinite(slope):
        if zeros:
            return UNDECIDED, f"zero count at d = {list(zeros)}: no exponent to fit"
        return UNDECIDED, "no fit"
    if n_d < MIN_D:
        return UNDECIDED, f"too few d: a slope over {n_d} d values shows no trend"
    below, above = hi < theta - tol, lo > theta + tol
    if (kind == "lower" and below) or (kind == "upper" and above) or (
            kind == "equal" and (below or above)):
        side = "below" if below else "above"
        ref = f"{theta:.3g}" if not tol else f"{theta:.3g} ± {tol:g}"
        return CONTRADICTS, f"the 95% interval [{lo:.3g}, {hi:.3g}] lies entirely {side} {ref}"
    if hi - lo > max_width:
        return UNDECIDED, (f"the 95% interval [{lo:.3g}, {hi:.3g}] is wider than "
                           f"{max_width:g}")
    zero_note = f" (d = {list(zeros)} left out: zero count)" if zeros else ""
    if kind == "equal":
        ref = f"{theta:.3g}" if not tol else f"a point of {theta:.3g} ± {tol:g}"
        return SUPPORTS, f"the 95% interval [{lo:.3g}, {hi:.3g}] contains {ref}{zero_note}"
    side = "reaches" if kind == "lower" else "stays within"
    return SUPPORTS, (f"the 95% interval [{lo:.3g}, {hi:.3g}] {side} {theta:.3g}{zero_note}")


def share_verdict(mean: float, lo: float, hi: float, n_lucky: int) -> tuple[str, str]:
    """Whether lucky neurons stay pure: the seed mean of the share of lucky neurons that end
    with N_i = {j}, with its 95% interval, and the number of lucky neurons it is over."""
    if n_lucky == 0 or not math.isfinite(mean):
        return UNDECIDED, "no lucky neurons at init (ω1 ≤ 0 leaves the lucky sets empty)"
    if mean >= SHARE_SUPPORT:
        return SUPPORTS, f"{100 * mean:.0f}% of {n_lucky} lucky neurons end pure (≥ 80%)"
    if hi < SHARE_CONTRADICT:
        return CONTRADICTS, (f"{100 * mean:.0f}% of {n_lucky} lucky neurons end pure "
                             f"(95% interval [{100 * lo:.0f}%, {100 * hi:.0f}%], below 50%)")
    return UNDECIDED, (f"{100 * mean:.0f}% of {n_lucky} lucky neurons end pure "
                       f"(95% interval [{100 * lo:.0f}%, {100 * hi:.0f}%]: between 50% and 80%)")


class Quantity(NamedTuple):
    """A quantity Theorem 3.3 / Lemma C.1 bounds, as the report fits it over d."""

    key: str
    label: str  # table label
    words: str  # the claim in words
    source: str
    bound: str  # "lower" (Ω) or "upper" (O)
    get: Callable  # a final json's observables -> the per-config value
    theta: Callable  # (C_m, ratio, γc0) -> the bound's exponent (SPEC §6)
    trivial: Callable | None  # C_m -> the exponent the quantity never exceeds
    ekey: str  # the theory.expected_counts key of its exact expectation at Gaussian init


QUANTITIES = [
    Quantity("lucky", "|M_j*| (eq. 17, init)",
             "every feature has many lucky neurons at init, |M_j*| = Ω(d^ω1)", "Lemma C.1",
             "lower", lambda o: np.mean(o["lucky_counts"]),
             lambda c, r, g: theory.omega1(c, r, g), None, "lucky"),
    Quantity("ordinary", "|M_j| (eq. 16, init)",
             "few neurons are ordinary for a feature at init, |M_j| = O(d^ω2)", "Lemma C.1",
             "upper", lambda o: np.mean(o["ordinary_counts"]),
             lambda c, r, g: theory.omega2(c, r, g), lambda c: c, "ordinary"),
    Quantity("N", "mean |N_i(T)|",
             "each neuron ends learning few features, |N_i(T)| = O(d^(1 − r²(1 − γc0)))",
             "Theorem 3.3", "upper", lambda o: np.mean(o["N_sizes"]),
             lambda c, r, g: theory.n_exponent(r, g), lambda c: 1.0, "N0"),
    Quantity("pure", "pure count P_j(T)", "Ω(d^ω1) neurons per feature end pure, N_i(T) = {j}",
             "Theorem 3.3", "lower", lambda o: np.mean(o["pure_counts"]),
             lambda c, r, g: theory.omega1(c, r, g), None, "single"),
]
STAGE_CLAIMS = [
    ("T1", "stage 1 ends at T_1 = Θ(d log d/(η log log d))",
     lambda d, eta, eps_max=1.0: theory.T1_scale(d, eta)),
    ("T2", "stage 2 ends at T_2 = Θ(d log d/(ε_max η log log d))",
     lambda d, eta, eps_max=1.0: theory.T2_scale(d, eta, eps_max)),
]


def claims_section(finals: list[dict], lines: list[str]) -> list[dict]:
    """Appends the claim-by-claim summary and the table it is read from (configs without
    pruning, InfoNCE, per (ratio, C_m) series over d). Returns the table's rows (report.json)."""
    base = [f for f in finals if f["prune_fraction"] == 0
            and f.get("loss", "infonce") in ("infonce", None)] or finals
    series = defaultdict(list)
    for f in base:
        series[(f["ratio"], f["C_m"], f["gamma_c0"], f["eta"])].append(f)
    by = ["ratio", "C_m", "gamma_c0", "eta"]
    table = pd.DataFrame([{**{k: f[k] for k in by}, "d": f["d"],
                           **{q.key: float(q.get(f["observables"])) for q in QUANTITIES},
                           # stage times: fitted where reached (T > 0), as NaN (left out) if not
                           **{k: float(f[k]) if f[k] > 0 else math.nan for k, *_ in STAGE_CLAIMS}}
                          for f in base])
    fits = fit.by_key(fit.exponent(table, x="d", y=[q.key for q in QUANTITIES]
                                   + [k for k, *_ in STAGE_CLAIMS], by=by, name="{y}"))
    rows = []
    for key, _, words, source, kind, get, theta_fn, trivial_fn, ekey in QUANTITIES:
        for (ratio, C_m, g, eta), fs in sorted(series.items()):
            by_d = defaultdict(list)
            m_of = {}
            for f in fs:
                by_d[f["d"]].append(float(get(f["observables"])))
                m_of[f["d"]] = f["m"]
            ft = fits[(key, ratio, C_m, g, eta)]
            e_slope = fit.fit_curve(ft.d_used, [theory.expected_counts(d, m_of[d], ratio, g)[ekey]
                                                for d in ft.d_used])
            zeros = tuple(d for d in sorted(by_d) if np.mean(by_d[d]) <= 0)
            theta = theta_fn(C_m, ratio, g)
            v, why = verdict(kind, ft.slope, ft.lo, ft.hi, theta, len(ft.d_used),
                             trivial=trivial_fn(C_m) if trivial_fn else None, zeros=zeros)
            if math.isfinite(e_slope):
                at = "at init " if key in ("N", "pure") else ""
                why += f" (the exact finite-d expectation {at}has slope {e_slope:.3g} over these d)"
            rows.append({"claim": key, "words": words, "source": source, "bound": kind,
                         "ratio": ratio, "C_m": C_m, "eta": eta, "d": sorted(by_d),
                         "slope": ft.slope, "lo": ft.lo, "hi": ft.hi, "theta": theta,
                         "finite_d_slope": e_slope, "verdict": v, "why": why,
                         "means": {str(d): float(np.mean(by_d[d])) for d in sorted(by_d)}})
    for key, words, scale in STAGE_CLAIMS:
        for (ratio, C_m, g, eta), fs in sorted(series.items()):
            by_d = defaultdict(list)
            for f in fs:
                if f[key] > 0:
                    by_d[f["d"]].append(float(f[key]))
            ds = sorted(by_d)
            ft = fits[(key, ratio, C_m, g, eta)] if len(ds) >= 2 else None
            theta = (fit.fit_curve(ds, [scale(d, eta, fs[0]["eps_max"]) for d in ds])
                     if len(ds) >= 2 else math.nan)
            if ft is None:
                v, why = UNDECIDED, (f"{key} reached at {len(ds)} d value(s) only"
                                     if ds else f"{key} never reached")
                slope = lo = hi = math.nan
            else:
                slope, lo, hi = ft.slope, ft.lo, ft.hi
                v, why = verdict("equal", slope, lo, hi, theta, len(ft.d_used), tol=STAGE_TOL)
            rows.append({"claim": key, "words": words, "source": "Theorem 3.3", "bound": "equal",
                         "ratio": ratio, "C_m": C_m, "eta": eta, "d": ds, "slope": slope,
                         "lo": lo, "hi": hi, "theta": theta, "verdict": v, "why": why})
    for (ratio, C_m, g, eta), fs in sorted(series.items()):
        d_max = max(f["d"] for f in fs)
        at = [f["observables"] for f in fs if f["d"] == d_max]
        shares = [o["lucky_kept_frac"] for o in at if o.get("lucky_kept_frac") is not None
                  and o.get("lucky_total", 0) > 0]
        n_lucky = int(sum(o.get("lucky_total", 0) for o in at))
        mean, lo, hi = mean_ci(shares) if shares else (math.nan,) * 3
        v, why = share_verdict(mean, lo, hi, n_lucky)
        rows.append({"claim": "lucky_pure", "words": "lucky neurons stay pure: a lucky neuron "
                     "of feature j ends with N_i(T) = {j}", "source": "Theorem 3.3 (proof)",
                     "bound": "share", "ratio": ratio, "C_m": C_m, "eta": eta, "d": [d_max],
                     "slope": mean, "lo": lo, "hi": hi, "theta": SHARE_SUPPORT, "verdict": v,
                     "why": why})
    _write(rows, lines)
    return rows


def _write(rows: list[dict], lines: list[str]) -> None:
    lines += ["## Theorem 3.3 and Lemma C.1, claim by claim", "",
              "One line per claim and (ratio, C_m): the measured exponent (slope of log seed mean "
              "on log d) with its 95% bootstrap interval over seeds, the bound's exponent θ, and "
              "what this d range says. A claim is *supported* when the interval reaches the "
              "bound's side of θ (contains θ, for Θ) and is at most 1 wide; *contradicted* when "
              "the whole interval lies on the wrong side (over this d range: the theorem is "
              "asymptotic, and log factors can bend a finite-d slope); otherwise *cannot decide*, "
              f"with the reason. Fits need {MIN_D} or more d values. For T_1 and T_2, θ is the "
              "slope of the theory's scale over the same d, and a slope within "
              f"±{STAGE_TOL:g} of it agrees (Θ hides constants, not exponents; ±{STAGE_TOL:g} "
              "moves T/scale by at most 7% per doubling of d).", ""]
    claims = list(dict.fromkeys(r["claim"] for r in rows))
    for c in claims:
        rs = [r for r in rows if r["claim"] == c]
        lines.append(f"- **{rs[0]['words']}** ({rs[0]['source']}):")
        for r in rs:
            if r["bound"] == "share":
                measured = (f"share at d = {r['d'][0]}: {_f(r['slope'])} "
                            f"[{_f(r['lo'])}, {_f(r['hi'])}]")
            else:
                measured = f"exponent {_f(r['slope'])} [{_f(r['lo'])}, {_f(r['hi'])}]"
                measured += f", θ = {r['theta']:.3g}" if math.isfinite(r["theta"]) else ""
            lines.append(f"  - ratio {r['ratio']:g}, C_m {r['C_m']:g}, η {r['eta']:g}, "
                         f"d ∈ {r['d']}: {measured}: **{r['verdict']}**: {r['why']}.")
    counts = {v: sum(r["verdict"] == v for r in rows) for v in (SUPPORTS, CONTRADICTS, UNDECIDED)}
    lines += ["", f"In all: {counts[SUPPORTS]} supported, {counts[CONTRADICTS]} contradicted, "
              f"{counts[UNDECIDED]} undecided.", ""]


def eta_section(finals: list[dict], lines: list[str]) -> list[dict]:
    """The step-size study: per (d, ratio, C_m) and η, the share of lucky neurons that end pure,
    mean |N_i(T)| and P_j(T) (seed means with 95% intervals), and the η above which the share
    falls below 80%, where the theorem's "lucky neurons stay pure" stops holding."""
    from jaxcl.tables import ci_cell

    groups = defaultdict(list)
    for f in finals:
        if f["prune_fraction"] == 0:
            groups[(f["d"], f["ratio"], f["C_m"])].append(f)
    lines += ["## Step size: do lucky neurons stay pure?", "",
              "Seed mean [95% interval] at each config's T_4 = d^1.99/η. The theorem's proof "
              "keeps every lucky neuron of feature j on j alone (N_i(T) = {j}); a larger step "
              "can move a neuron between features.", "",
              "| d | ratio | C_m | η | seeds | lucky neurons | share pure | mean \\|N_i(T)\\| | "
              "P_j(T) | alive |", "|---|---|---|---|---|---|---|---|---|---|"]
    rows, verdicts = [], []
    for (d, ratio, C_m), fs in sorted(groups.items()):
        by_eta = defaultdict(list)
        for f in fs:
            by_eta[f["eta"]].append(f["observables"])
        if len(by_eta) < 2:
            continue
        holds = {}
        for eta, obs in sorted(by_eta.items()):
            share = [o["lucky_kept_frac"] for o in obs if o.get("lucky_total", 0) > 0
                     and o.get("lucky_kept_frac") is not None]
            n_lucky = int(sum(o.get("lucky_total", 0) for o in obs))
            m, lo, hi = mean_ci(share) if share else (math.nan,) * 3
            holds[eta] = m >= SHARE_SUPPORT if math.isfinite(m) else None
            rows.append({"d": d, "ratio": ratio, "C_m": C_m, "eta": eta, "seeds": len(obs),
                         "lucky": n_lucky, "share": m, "share_lo": lo, "share_hi": hi,
                         "N_mean": float(np.mean([np.mean(o["N_sizes"]) for o in obs])),
                         "P_mean": float(np.mean([np.mean(o["pure_counts"]) for o in obs]))})
            lines.append(
                f"| {d} | {ratio:g} | {C_m:g} | {eta:g} | {len(obs)} | {n_lucky} | "
                f"{ci_cell(share)} | {ci_cell([np.mean(o['N_sizes']) for o in obs])} | "
                f"{ci_cell([np.mean(o['pure_counts']) for o in obs])} | "
                f"{ci_cell([o['alive_frac'] for o in obs])} |")
        verdicts.append(_eta_words(d, ratio, C_m, holds))
    lines += [""] + [f"- {v}" for v in verdicts] + [""]
    return rows


def _eta_words(d: int, ratio: float, C_m: float, holds: dict) -> str:
    """One sentence: up to which η the share of lucky neurons ending pure stays ≥ 80%."""
    where = f"d = {d}, ratio {ratio:g}, C_m {C_m:g}"
    known = {e: h for e, h in holds.items() if h is not None}
    if not known:
        return f"{where}: no lucky neurons, nothing to say."
    ok = [e for e, h in sorted(known.items()) if h]
    bad = [e for e, h in sorted(known.items()) if not h]
    if not bad:
        return f"{where}: ≥ 80% of lucky neurons end pure at every η tried (up to {max(ok):g})."
    if not ok:
        return f"{where}: fewer than 80% of lucky neurons end pure at every η tried."
    if max(ok) < min(bad):
        return (f"{where}: ≥ 80% of lucky neurons end pure up to η = {max(ok):g}; from "
                f"η = {min(bad):g} on, fewer do: \"lucky neurons stay pure\" stops holding "
                f"between η = {max(ok):g} and {min(bad):g}.")
    return (f"{where}: not monotone in η (≥ 80% at η = {ok}, below at η = {bad}): seeds too "
            "few to place a threshold.")
