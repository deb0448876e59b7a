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
from jaxcl.experiments.liao.report import hypotheses, rules, verdicts
from jaxcl.experiments.liao.report.verdicts import CONTRADICTS, SUPPORTS, UNDECIDED

NO_ENLARGEMENT = 0.1  # (ii): a difference in mean |N_i(T)| below 0.1 feature is no enlargement
# Θ claims on the stage times: the theory's scale against these alternatives, one constant each
# (ε_max and η scale all of them alike within a series, which changes no ranking)
STAGES = [
    ("T1", "stage 1 ends at T_1 = Θ(d log d/(η log log d))", "d log d/(η log log d)"),
    ("T2", "stage 2 ends at T_2 = Θ(d log d/(ε_max η log log d))", "d log d/(η log log d)"),
]
SCALES = {
    "d log d/(η log log d)": lambda d: theory.T1_scale(d, 1.0),
    "d/η": lambda d: float(d),
    "d log d/η": lambda d: d * math.log(d),
    "d^1.5/η": lambda d: d**1.5,
    "d²/η": lambda d: float(d) ** 2,
}


def series(finals: list[dict]) -> dict:
    """The configs the claims read, by (ratio, C_m, γc0, η, λ arm): without pruning, InfoNCE (all
    of them where none is)."""
    base = [
        f
        for f in finals
        if f["prune_fraction"] == 0 and f.get("loss", "infonce") in ("infonce", None)
    ] or finals
    series = defaultdict(list)
    for f in base:
        series[(f["ratio"], f["C_m"], f["gamma_c0"], f["eta"], hypotheses.lam_arm(f))].append(f)
    return series


def _premises(fs: list[dict], ds: list[int]) -> tuple[str, str] | None:
    """(OUTSIDE, why) where Theorem 3.3's hypotheses fail at any of the d read; else None."""
    bad = hypotheses.failed(fs, ds[-verdicts.TAIL_D :])
    return rules.outside(bad) if bad else None


def stage_rows(fs: list[dict], head: dict) -> list[dict]:
    """T_1, T_2 = Θ(scale): the theory's scale ranked among SCALES by AIC (rules.scale)."""
    rows = []
    for key, words, named in STAGES:
        by_d = defaultdict(list)
        for f in fs:
            if f[key] > 0:
                by_d[f["d"]].append(float(f[key]))
        ranking = []
        if not by_d:
            v, why = UNDECIDED, f"{key} never reached"
        else:
            v, why = _premises(fs, sorted(by_d)) or (None, None)
            if v is None:
                v, why, ranking = rules.scale(by_d, named, SCALES)
        whole = fit.fit_exponent(dict(by_d)) if len(by_d) >= 2 else None
        rows.append(
            {
                **head,
                "claim": key,
                "words": words,
                "source": "Theorem 3.3",
                "bound": "scale",
                "theta": math.nan,
                "d": sorted(by_d),
                "slope": whole.slope if whole else math.nan,
                "lo": whole.lo if whole else math.nan,
                "hi": whole.hi if whole else math.nan,
                "scales": ranking,
                "verdict": v,
                "why": why,
            }
        )
    return rows


def _cells(fs: list[dict], get) -> list[tuple]:
    """(d, seed, failures, objects) per config, where get(f) -> (failures, objects) or None."""
    out = []
    for f in fs:
        kn = get(f)
        if kn is not None:
            out.append((f["d"], f["seed"], *kn))
    return out


def _lucky_fail(f: dict):
    o = f["observables"]
    n = int(o.get("lucky_total", 0))
    return (n - int(round(o["lucky_kept_frac"] * n)) if n else 0), n


def _f1e_fail(f: dict):
    o = f["observables"]
    if "N0_nonempty" not in o:
        return None
    return int(o["N0_nonempty"]) - int(o["N_subset_nonempty0"]), int(o["N0_nonempty"])


def _empty_fail(f: dict):
    o = f["observables"]
    if "N0_nonempty" not in o:
        return None
    return int(o["N0_empty_learned"]), int(f["m"]) - int(o["N0_nonempty"])


# "every … w.h.p." claims, read as a failure share that must fall with d (rules.falls)
FAILURE_SHARES = [
    (
        "lucky_pure",
        "every lucky neuron stays pure: a lucky neuron of feature j ends with N_i(T) = {j}",
        "Theorem 3.3 (proof)",
        _lucky_fail,
        "lucky neurons that do not end pure",
    ),
    (
        "F1e",
        "neurons learn only features they started ordinary for: N_i(T) ⊆ N_i(0), on neurons "
        "with N_i(0) ≠ ∅",
        "Lemma F.1(e)",
        _f1e_fail,
        "neurons with N_i(0) ≠ ∅ and N_i(T) ⊄ N_i(0)",
    ),
    (
        "empty_stays",
        "a neuron with N_i(0) = ∅ learns no feature: N_i(T) = ∅",
        "Theorem 3.3(i), the paper's N_i",
        _empty_fail,
        "neurons with N_i(0) = ∅ and N_i(T) ≠ ∅",
    ),
]


def proof_rows(fs: list[dict], head: dict) -> list[dict]:
    """The proof's statements about every neuron: failure shares that must fall with d, and the
    pigeonhole reading of o(m/d) at the largest trained d."""
    d_max = max(f["d"] for f in fs)
    at = [f for f in fs if f["d"] == d_max]
    obs = [f["observables"] for f in at]
    rows = []
    outside = _premises(fs, sorted({f["d"] for f in fs}))
    for key, words, source, get, what in FAILURE_SHARES:
        cells = _cells(fs, get)
        if not cells:
            continue
        v, why, trend = (*outside, {}) if outside else rules.falls(cells, what)
        rows.append(
            {
                **head,
                "claim": key,
                "words": words,
                "source": source,
                "bound": "share",
                "theta": 0.0,
                "d": sorted({c[0] for c in cells}),
                "k": sum(c[2] for c in cells if c[0] == d_max),
                "n": sum(c[3] for c in cells if c[0] == d_max),
                "slope": trend.get("slope", math.nan),
                "lo": trend.get("lo", math.nan),
                "hi": trend.get("hi", math.nan),
                "by_d": trend.get("by_d", {}),
                "verdict": v,
                "why": why,
            }
        )
    # "at most o(m/d) neurons i with j ∈ N_i(T), for each j": Σ_j #{i : j ∈ N_i} = Σ_i |N_i|
    # ≥ #{i : N_i ≠ ∅}, so max_j #{i : j ∈ N_i}/(m/d) ≥ the share of neurons with N_i ≠ ∅
    k_full = int(sum(int(np.sum(np.asarray(o["N_sizes"]) > 0)) for o in obs))
    n_full = int(sum(len(o["N_sizes"]) for o in obs))
    lo, hi = verdicts.clopper_pearson(k_full, n_full)
    ratio_md = float(np.mean([np.mean(o["N_sizes"]) for o in obs]))  # (Σ_i |N_i|/d)/(m/d)
    if outside:
        v, why = outside
    elif lo >= verdicts.SHARE_CONTRADICT:
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
    members = defaultdict(list)
    for (ratio, C_m, g, eta, arm), fs in series(finals).items():
        for f in fs:
            by[(C_m, g, eta, arm)][(f["d"], ratio)].append(
                float(np.mean(f["observables"]["N_sizes"]))
            )
            members[(C_m, g, eta, arm)].append(f)
    for (C_m, g, eta, arm), cells in sorted(by.items()):
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
        bad = hypotheses.failed(members[(C_m, g, eta, arm)], ds[-verdicts.TAIL_D :])
        if bad:
            v, why = rules.outside(bad)
        elif lo > 0:
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
                "lam_arm": arm,
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


def init_values(stats: list[dict], key: tuple) -> dict:
    """{d: {record key: [per seed]}} and {d: (E, se) per ekey} from init-stats files (beyond the
    trained d: same C_m, ratio, γc0)."""
    vals, exp = defaultdict(lambda: defaultdict(list)), defaultdict(dict)
    ratio, C_m, g = key
    for s in stats:
        if (s["C_m"], s["gamma_c0"]) != (C_m, g):
            continue
        for r in s["records"]:
            if r["ratio"] == ratio:
                hist = np.nonzero(r["N0_hist"])[0]
                v = vals[r["d"]]
                v["lucky_counts"].append(min(r["lucky_counts"]))
                v["ordinary_counts"].append(max(r["ordinary_counts"]))
                if not len(hist) or hist[-1] < len(r["N0_hist"]) - 1:  # the last bin is "≥"
                    v["N0_max"].append(float(hist[-1]) if len(hist) else 0.0)
        for e in s["expected"]:
            if e["ratio"] == ratio:
                exp[e["d"]] = {
                    k: (e[k], e.get(k + "_se", 0.0)) for k in ("lucky", "ordinary", "N0")
                }
    return vals, exp
