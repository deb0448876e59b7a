"""The rows of Liao's claim-by-claim summary that are not growth over d of a per-config statistic:
stage times against the theory's Θ scale, the proof's shares of neurons (exact binomial
intervals), and Theorem 3.3(ii)'s ratio difference. Each row holds its verdict by the rules of
verdicts.py."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from jaxcl import fit
from jaxcl.experiments.liao import theory
from jaxcl.experiments.liao.report import verdicts
from jaxcl.experiments.liao.report.verdicts import CONTRADICTS, SUPPORTS, UNDECIDED

NO_ENLARGEMENT = 0.1  # (ii): a difference in mean |N_i(T)| below 0.1 feature is no enlargement
STAGES = [
    (
        "T1",
        "stage 1 ends at T_1 = Θ(d log d/(η log log d))",
        lambda d, eta, eps_max=1.0: theory.T1_scale(d, eta),
    ),
    (
        "T2",
        "stage 2 ends at T_2 = Θ(d log d/(ε_max η log log d))",
        lambda d, eta, eps_max=1.0: theory.T2_scale(d, eta, eps_max),
    ),
]


def series(finals: list[dict]) -> dict:
    """The configs the claims read, by (ratio, C_m, γc0, η): without pruning, InfoNCE (all of
    them where none is)."""
    base = [
        f
        for f in finals
        if f["prune_fraction"] == 0 and f.get("loss", "infonce") in ("infonce", None)
    ] or finals
    series = defaultdict(list)
    for f in base:
        series[(f["ratio"], f["C_m"], f["gamma_c0"], f["eta"])].append(f)
    return series


def stage_rows(fs: list[dict], head: dict) -> list[dict]:
    rows = []
    for key, words, scale in STAGES:
        by_d = defaultdict(list)
        for f in fs:
            if f[key] > 0:
                by_d[f["d"]].append(float(f[key]))
        tail_d = sorted(by_d)[-verdicts.TAIL_D :]
        theta = (
            fit.fit_curve(tail_d, [scale(d, head["eta"], fs[0]["eps_max"]) for d in tail_d])
            if len(tail_d) >= 2
            else math.nan
        )
        v, why = (
            verdicts.equal(by_d, theta)
            if len(tail_d) >= 2
            else (
                UNDECIDED,
                f"{key} reached at {len(by_d)} d value(s) only" if by_d else f"{key} never reached",
            )
        )
        whole = fit.fit_exponent(dict(by_d)) if len(by_d) >= 2 else None
        tail = verdicts.tail_fit(by_d) if len(by_d) >= 2 else None
        rows.append(
            {
                **head,
                "claim": key,
                "words": words,
                "source": "Theorem 3.3",
                "bound": "equal",
                "theta": theta,
                "d": sorted(by_d),
                "slope": whole.slope if whole else math.nan,
                "lo": whole.lo if whole else math.nan,
                "hi": whole.hi if whole else math.nan,
                "tail_slope": tail.slope if tail else math.nan,
                "tail_lo": tail.lo if tail else math.nan,
                "tail_hi": tail.hi if tail else math.nan,
                "verdict": v,
                "why": why,
            }
        )
    return rows


def proof_rows(fs: list[dict], head: dict) -> list[dict]:
    """Shares over neurons at the largest trained d, with exact binomial intervals."""
    d_max = max(f["d"] for f in fs)
    at = [f for f in fs if f["d"] == d_max]
    obs = [f["observables"] for f in at]
    n_lucky = int(sum(o.get("lucky_total", 0) for o in obs))
    k_lucky = int(
        round(
            sum(o["lucky_kept_frac"] * o["lucky_total"] for o in obs if o.get("lucky_total", 0) > 0)
        )
    )
    n_neur = int(sum(f["m"] for f in at))
    k_sub = int(round(sum(o["N_subset_frac"] * f["m"] for o, f in zip(obs, at))))
    k_full = int(sum(int(np.sum(np.asarray(o["N_sizes"]) > 0)) for o in obs))
    n_full = int(sum(len(o["N_sizes"]) for o in obs))
    rows = []
    for key, words, source, k, n, what in (
        (
            "lucky_pure",
            "lucky neurons stay pure: a lucky neuron of feature j ends with N_i(T) = {j}",
            "Theorem 3.3 (proof)",
            k_lucky,
            n_lucky,
            "lucky neurons end pure",
        ),
        (
            "N_subset",
            "neurons learn only features they started ordinary for: N_i(T) ⊆ N_i(0)",
            "Lemma F.1(e), Theorem 3.3(i)",
            k_sub,
            n_neur,
            "neurons have N_i(T) ⊆ N_i(0)",
        ),
    ):
        v, why, lo, hi = verdicts.share(k, n, what)
        rows.append(
            {
                **head,
                "claim": key,
                "words": words,
                "source": source,
                "bound": "share",
                "theta": verdicts.SHARE_SUPPORT,
                "d": [d_max],
                "k": k,
                "n": n,
                "slope": k / n if n else math.nan,
                "lo": lo,
                "hi": hi,
                "verdict": v,
                "why": why,
            }
        )
    # "at most o(m/d) neurons i with j ∈ N_i(T), for each j": Σ_j #{i : j ∈ N_i} = Σ_i |N_i|
    # ≥ #{i : N_i ≠ ∅}, so max_j #{i : j ∈ N_i}/(m/d) ≥ the share of neurons with N_i ≠ ∅
    lo, hi = verdicts.clopper_pearson(k_full, n_full)
    ratio_md = float(np.mean([np.mean(o["N_sizes"]) for o in obs]))  # (Σ_i |N_i|/d)/(m/d)
    if lo >= verdicts.SHARE_CONTRADICT:
        v = CONTRADICTS
        why = (
            f"mean over j of #{{i : j ∈ N_i(T)}}/(m/d) is {ratio_md:.3g} at d = {d_max}; the "
            f"max over j is at least the share of neurons with N_i(T) ≠ ∅, {k_full} of "
            f"{n_full} (exact 95% interval [{100 * lo:.0f}%, {100 * hi:.0f}%]): it does not "
            "tend to 0"
        )
    else:
        v = UNDECIDED
        why = (
            f"{k_full} of {n_full} neurons have N_i(T) ≠ ∅ at d = {d_max}: the pigeonhole "
            "bound does not exclude o(m/d)"
        )
    rows.append(
        {
            **head,
            "claim": "o_md",
            "words": "for each j, at most o(m/d) neurons have j ∈ N_i(T)",
            "source": "Theorem 3.3 (proof)",
            "bound": "share",
            "theta": math.nan,
            "d": [d_max],
            "k": k_full,
            "n": n_full,
            "slope": ratio_md,
            "lo": lo,
            "hi": hi,
            "verdict": v,
            "why": why,
        }
    )
    return rows


def ratio_rows(finals: list[dict]) -> list[dict]:
    """(ii): a smaller ratio enlarges |N_i(T)|: mean |N_i(T)| at the smallest ratio minus at
    the largest, per C_m, at the largest d both reach (normal 95% interval over seeds)."""
    out = []
    by = defaultdict(lambda: defaultdict(list))
    for (ratio, C_m, g, eta), fs in series(finals).items():
        for f in fs:
            by[(C_m, g, eta)][(f["d"], ratio)].append(float(np.mean(f["observables"]["N_sizes"])))
    for (C_m, g, eta), cells in sorted(by.items()):
        ratios = sorted({r for _, r in cells})
        if len(ratios) < 2:
            continue
        lo_r, hi_r = ratios[0], ratios[-1]
        ds = sorted({d for d, r in cells if (d, lo_r) in cells and (d, hi_r) in cells})
        if not ds:
            continue
        diffs = {}
        for d in ds:
            a, b = np.asarray(cells[(d, lo_r)]), np.asarray(cells[(d, hi_r)])
            se = (
                math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
                if min(len(a), len(b)) > 1
                else math.nan
            )
            diffs[d] = (float(a.mean() - b.mean()), se)
        diff, se = diffs[ds[-1]]
        lo, hi = diff - 1.96 * se, diff + 1.96 * se
        cells_txt = ", ".join(f"d = {d}: {x:+.3g}" for d, (x, _) in diffs.items())
        if lo > 0:
            v, why = (
                SUPPORTS,
                f"the difference at d = {ds[-1]} is {diff:.3g} [{lo:.3g}, {hi:.3g}] > 0",
            )
        elif hi < NO_ENLARGEMENT:
            v, why = (
                CONTRADICTS,
                (
                    f"the difference at d = {ds[-1]} is {diff:.3g} [{lo:.3g}, "
                    f"{hi:.3g}], below {NO_ENLARGEMENT:g} of a feature per neuron: "
                    "the ratio does not enlarge |N_i(T)| here (the theorem's "
                    "bound on it does grow)"
                ),
            )
        else:
            v, why = UNDECIDED, f"the difference at d = {ds[-1]} is {diff:.3g} [{lo:.3g}, {hi:.3g}]"
        out.append(
            {
                "ratio": lo_r,
                "C_m": C_m,
                "eta": eta,
                "claim": "ratio_N",
                "words": f"(ii) a smaller ratio enlarges |N_i(T)|: mean |N_i(T)| at ratio "
                f"{lo_r:g} minus at ratio {hi_r:g}",
                "source": "Theorem 3.3(ii)",
                "bound": "difference",
                "theta": 0.0,
                "d": ds,
                "slope": diff,
                "lo": lo,
                "hi": hi,
                "verdict": v,
                "why": f"{why} (by d: {cells_txt})",
            }
        )
    return out
