"""The claim-by-claim reading of Liao's Theorem 3.3, Lemma C.1 and the proof's steps (SPEC §6),
each as the paper states it ("for each j": the minimum or maximum over atoms; N_i the paper's,
fixed at init, or the time-indexed N_i(t) read from T_2 on, named so), judged under the proof's
hypotheses (hypotheses.py) by the rules of rules.py and verdicts.py, grouped into findings
(findings.py); every claim left undecided names the cheapest design that would decide it."""

from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import Callable, NamedTuple

import numpy as np

from jaxcl import fit
from jaxcl.engine.protocol import Section
from jaxcl.experiments.liao import theory
from jaxcl.experiments.liao.report import claim_rows, findings, hypotheses, rules, verdicts
from jaxcl.experiments.liao.report.verdicts import CONTRADICTS, SUPPORTS, UNDECIDED
from jaxcl.fileio import read_jsonl
from jaxcl.tables import num as _f


class Quantity(NamedTuple):
    """A per-config seed mean the scaling section fits over d (mean over atoms or neurons): the
    context of the claims, and the trend a long run is set beside (report/long_run.py)."""

    key: str
    label: str
    get: Callable  # a final json's observables -> the per-config value
    theta: Callable  # (C_m, ratio, γc0) -> the bound's exponent (SPEC §6)
    ekey: str  # the theory.expected_counts key of its exact expectation at Gaussian init


QUANTITIES = [
    Quantity(
        "lucky",
        "|M_j*| (eq. 17, init)",
        lambda o: np.mean(o["lucky_counts"]),
        lambda c, r, g: theory.omega1(c, r, g),
        "lucky",
    ),
    Quantity(
        "ordinary",
        "|M_j| (eq. 16, init)",
        lambda o: np.mean(o["ordinary_counts"]),
        lambda c, r, g: theory.omega2(c, r, g),
        "ordinary",
    ),
    Quantity(
        "N",
        "mean |N_i(T)|",
        lambda o: np.mean(o["N_sizes"]),
        lambda c, r, g: theory.n_exponent(r, g),
        "N0",
    ),
    Quantity(
        "pure",
        "pure count P_j(T)",
        lambda o: np.mean(o["pure_counts"]),
        lambda c, r, g: theory.omega1(c, r, g),
        "single",
    ),
]


class Claim(NamedTuple):
    """A claim over d: its statistic per config, the rule that reads it, its hypotheses."""

    key: str
    words: str
    source: str
    bound: str  # "lower" (Ω), "upper" (O), or "max" (a maximum against the extreme-value law)
    get: Callable  # (final json, windows) -> the per-config statistic (None: not measured)
    init: str | None  # the init-stats record key it is read from beyond the trained d
    theta: Callable  # (C_m, ratio, γc0) -> exponent
    ekey: str | None  # theory.expected_counts key of its exact expectation (see verdicts)
    trivial: Callable | None = None  # C_m -> the exponent the quantity never exceeds
    objects: str = "m"  # "max": the maximum is over m neurons or d atoms
    mean0: Callable | None = None  # "max": (final json) -> the per-object mean it is read from
    premises: tuple = ()  # hypotheses.THEOREM for Theorem 3.3 and its proof's steps


def _late(f: dict, windows: dict) -> float | None:
    """max over neurons of |N_i(t)| and over logged t ∈ [T_2, T_4] of results.jsonl; None where
    stage 2 never ended or the rows log no N_max."""
    w = windows.get(f["config_id"])
    return None if w is None or w.get("N_max_late") is None else float(w["N_max_late"])


def _obs(key: str) -> Callable:
    return lambda f, w: f["observables"].get(key)


def _mean_sizes(f: dict) -> float:
    return float(np.mean(f["observables"]["N_sizes"]))


_N_EXP = lambda c, r, g: theory.n_exponent(r, g)  # noqa: E731
_TRIVIAL_1 = lambda c: 1.0  # noqa: E731  (|N_i| ≤ d)
CLAIMS = [
    Claim(
        "lucky_min",
        "every feature has many lucky neurons at init: min_j |M_j*| = Ω(d^ω1)",
        "Lemma C.1(c)",
        "lower",
        lambda f, w: min(f["observables"]["lucky_counts"]),
        "lucky_counts",
        lambda c, r, g: theory.omega1(c, r, g),
        "lucky",
    ),
    Claim(
        "ordinary_max",
        "few neurons are ordinary for any feature at init: max_j |M_j| = O(d^ω2)",
        "Lemma C.1(c)",
        "max",
        lambda f, w: max(f["observables"]["ordinary_counts"]),
        "ordinary_counts",
        lambda c, r, g: theory.omega2(c, r, g),
        "ordinary",
        lambda c: c,
        objects="d",
    ),
    Claim(
        "N0_max",
        "each neuron is ordinary for O(1) features at init: max_i |N_i(0)| = O(1)",
        "Lemma C.1(f)",
        "max",
        lambda f, w: max(f["observables"]["N0_sizes"]),
        "N0_max",
        lambda c, r, g: 0.0,
        "N0",
    ),
    Claim(
        "N0_thm",
        "each neuron's N_i (the paper's, fixed at init) is small: max_i |N_i(0)| = "
        "O(d^(1 − r²(1 − γc0)))",
        "Theorem 3.3(i)",
        "max",
        lambda f, w: max(f["observables"]["N0_sizes"]),
        None,
        _N_EXP,
        "N0",
        _TRIVIAL_1,
        premises=hypotheses.THEOREM,
    ),
    Claim(
        "N_t_late",
        "each neuron learns few features after stage 2: max_i |N_i(t)| over logged "
        "t ∈ [T_2, T_4] = O(d^(1 − r²(1 − γc0)))",
        "Theorem 3.3(i), N_i(t)",
        "max",
        _late,
        None,
        _N_EXP,
        None,
        _TRIVIAL_1,
        mean0=_mean_sizes,
        premises=hypotheses.THEOREM,
    ),
    Claim(
        "N_t_2T2",
        "the same at t ≈ 2 T_2: max_i |N_i(2 T_2)|",
        "Theorem 3.3(i), N_i(t)",
        "max",
        _obs("N_2T2_max"),
        None,
        _N_EXP,
        None,
        _TRIVIAL_1,
        mean0=lambda f: f["observables"]["N_2T2_mean"],
        premises=hypotheses.THEOREM,
    ),
    Claim(
        "N_t_T",
        "the same at the end: max_i |N_i(T)|",
        "Theorem 3.3(i), N_i(t)",
        "max",
        lambda f, w: max(f["observables"]["N_sizes"]),
        None,
        _N_EXP,
        None,
        _TRIVIAL_1,
        mean0=_mean_sizes,
        premises=hypotheses.THEOREM,
    ),
    Claim(
        "pure_min",
        "for each atom, Ω(d^ω1) neurons end pure: min_j P_j(T) = Ω(d^ω1)",
        "Theorem 3.3",
        "lower",
        lambda f, w: min(f["observables"]["pure_counts"]),
        None,
        lambda c, r, g: theory.omega1(c, r, g),
        None,
        premises=hypotheses.THEOREM,
    ),
]


def windows(path: str, finals: list[dict]) -> dict:
    """{config_id: {"N_max": max of results.jsonl's N_max over logged t ∈ [T_3, T_4],
    "N_max_late": the same over t ≥ T_2 (None if stage 2 never ended), "T3_before_T2": whether
    T_3 < T_2}} for the configs whose rows log N_max."""
    if not os.path.exists(path):
        return {}
    info = {f["config_id"]: f for f in finals}
    out = {}
    for r in read_jsonl(path):
        f = info.get(r.get("config_id"))
        if f is None or "N_max" not in r or not f["T3"] <= r["step"] <= f["T4"] + 1:
            continue
        w = out.setdefault(
            f["config_id"],
            {"N_max": 0, "N_max_late": None, "T3_before_T2": not (0 < f["T2"] <= f["T3"])},
        )
        w["N_max"] = max(w["N_max"], r["N_max"])
        if 0 < f["T2"] <= r["step"]:
            w["N_max_late"] = max(w["N_max_late"] or 0, r["N_max"])
    return out


def _judge(c: Claim, by_d: dict, fs: list[dict], key: tuple, expected, windows) -> tuple:
    """(verdict, why, extra row fields) of one claim on one series."""
    ratio, C_m, g = key
    theta = c.theta(C_m, ratio, g)
    trivial = c.trivial(C_m) if c.trivial else None
    tail_ds = sorted(by_d)[-verdicts.TAIL_D :]
    if c.premises:
        bad = hypotheses.failed(fs, tail_ds, c.premises)
        if bad:
            return (*rules.outside(bad), {})
    if c.bound == "max":
        v = rules.vacuous(theta, trivial)
        if v:
            return (*v, {})
        d0 = min(by_d)
        if c.mean0 is not None:
            mean0 = float(np.mean([c.mean0(f) for f in fs if f["d"] == d0]))
        else:
            mean0 = float(expected[d0][0] if isinstance(expected[d0], tuple) else expected[d0])
        n = {d: (round(d**C_m) if c.objects == "m" else d) for d in by_d}
        n.update({f["d"]: (f["m"] if c.objects == "m" else f["d"]) for f in fs})
        what = f"{'m neurons' if c.objects == 'm' else 'd atoms'}'"
        v, why, info = rules.maximum(by_d, mean0, n, theta, d0, what=what)
        return v, why, {"max_law": info}
    if c.bound == "upper":
        return (*verdicts.upper(by_d, theta, expected=expected, trivial=trivial), {})
    return (*verdicts.lower(by_d, theta, expected=expected), {})


def claims_section(
    finals: list[dict],
    *,
    windows: dict | None = None,
    init_stats: list[dict] = (),
) -> list[Section]:
    """The hypotheses panel and the claim-by-claim rows (report.json `hypotheses`, `claims`).

    Args:
      finals: final jsons (configs without pruning, InfoNCE, are read; series over d per
        (ratio, C_m, γc0, η, λ arm)).
      windows: {config_id: {"N_max_late": max |N_i(t)| over logged t ∈ [T_2, T_4]}} from
        results.jsonl (`windows`); without it the rows that need it are left out.
      init_stats: parsed init_stats.json files: their counts extend the init claims (Lemma C.1)
        past the trained d, and their expectations to the largest d they computed.
    """
    windows = windows or {}
    rows = []
    groups = claim_rows.series(finals)
    seen = set()
    for (ratio, C_m, g, eta, arm), fs in sorted(groups.items()):
        init_vals, init_exp = claim_rows.init_values(list(init_stats), (ratio, C_m, g))
        m_of = {f["d"]: f["m"] for f in fs}
        e_at = {d: theory.expected_counts(d, m_of[d], ratio, g) for d in sorted(m_of)}
        head = {"ratio": ratio, "C_m": C_m, "eta": eta, "lam_arm": arm}
        for c in CLAIMS:
            if not c.premises and (ratio, C_m, g, eta, c.key) in seen:
                continue  # an init claim does not depend on λ: read once per series
            seen.add((ratio, C_m, g, eta, c.key))
            by_d = defaultdict(list)
            for f in fs:
                val = c.get(f, windows)
                if val is not None:  # None: the statistic does not exist for this config
                    by_d[f["d"]].append(float(val))
            if not by_d:
                continue
            trained = sorted(by_d)
            if c.init:
                for d, v in init_vals.items():
                    if (
                        d > max(trained) and v[c.init] and len(v[c.init]) == len(v["lucky_counts"])
                    ):  # every seed (|N_i(0)| past the histogram: none)
                        by_d[d] = list(v[c.init])
            expected = None
            if c.ekey:
                expected = {d: (e[c.ekey], e.get(c.ekey + "_se", 0.0)) for d, e in e_at.items()}
                expected.update({d: e[c.ekey] for d, e in init_exp.items() if d > max(trained)})
            theta = c.theta(C_m, ratio, g)
            v, why, extra = _judge(c, by_d, fs, (ratio, C_m, g), expected, windows)
            whole = fit.fit_exponent(dict(by_d))
            tail = verdicts.tail_fit(by_d)
            rows.append(
                {
                    **head,
                    "lam_arm": arm if c.premises else None,  # init claims do not depend on λ
                    "claim": c.key,
                    "words": c.words,
                    "source": c.source,
                    "bound": c.bound,
                    "theta": theta,
                    "d": sorted(by_d),
                    "trained_d": trained,
                    "slope": whole.slope,
                    "lo": whole.lo,
                    "hi": whole.hi,
                    "tail_slope": tail.slope,
                    "tail_lo": tail.lo,
                    "tail_hi": tail.hi,
                    "tail_d": tail.d_used,
                    "verdict": v,
                    "why": why,
                    "means": {str(d): float(np.mean(by_d[d])) for d in sorted(by_d)},
                    **extra,
                }
            )
        rows += claim_rows.stage_rows(fs, head)
        rows += claim_rows.proof_rows(fs, head)
    rows += claim_rows.ratio_rows(finals)
    for r in rows:
        if r["verdict"] == UNDECIDED:
            r["decide"] = verdicts.design(r)
    return [
        hypotheses.panel(groups),
        findings.findings_section(rows),
        Section(_lines(rows), {"claims": rows}),
    ]


def _lines(rows: list[dict]) -> list[str]:
    lines = [
        "## Theorem 3.3 and Lemma C.1, claim by claim",
        "",
        'Each claim as the paper states it: "for each j" is the minimum (or maximum) over '
        "atoms; N_i is the paper's set, fixed at init, and a claim on the time-indexed N_i(t) "
        "(eq. 16 at time t) says so and is read from T_2 on. Claims of Theorem 3.3 and its "
        "proof are judged only where its hypotheses hold (the panel above); elsewhere they read "
        f"**{rules.OUTSIDE}**, naming the one that fails. A bound whose exponent with the "
        f"tolerance {verdicts.TOL:g} reaches the trivial one (|N_i| ≤ d, |M_j| ≤ m) is "
        f"**{rules.VACUOUS}**. A maximum over neurons or atoms is divided by the median maximum "
        "of as many Poisson counts of the claimed size: within "
        f"{verdicts.GROWTH:g}× in every seed at the last three d supports, past it and still "
        "growing contradicts. Ω bounds read the local exponent at the largest d (a fit with a "
        "curvature term, its interval from a seed bootstrap widened by the fit's own error). "
        f"Stage times rank the theory's scale among alternatives by AIC (within "
        f"{rules.AIC_SUPPORT:g} of the best supports, more than {rules.AIC_CONTRADICT:g} behind "
        '"contradicts"). "Every … w.h.p." reads the failure share\'s trend in d (a logistic fit '
        "in log d, seed-clustered bootstrap): it must fall. Exact expectations (Lemma C.1's "
        'init counts) decide "fails in expectation". The rules are argued in docs/liao.md '
        '("How a claim is judged").',
        "",
    ]
    for c in dict.fromkeys(r["claim"] for r in rows):
        rs = [r for r in rows if r["claim"] == c]
        lines.append(f"- **{rs[0]['words']}** ({rs[0]['source']}):")
        for r in rs:
            measured = ""
            if r["bound"] in ("lower", "upper", "max"):
                measured = (
                    f": local exponent {_f(r.get('tail_slope'))} [{_f(r.get('tail_lo'))}, "
                    f"{_f(r.get('tail_hi'))}], whole range {_f(r['slope'])}"
                    + (f", θ = {r['theta']:.3g}" if math.isfinite(r["theta"]) else "")
                )
            decide = f" *To decide:* {r['decide']}." if r.get("decide") else ""
            arm = f", {r['lam_arm']}" if r.get("lam_arm") else ""
            lines.append(
                f"  - ratio {r['ratio']:g}, C_m {r['C_m']:g}, η {r['eta']:g}{arm}, "
                f"d ∈ {r['d']}{measured}: **{r['verdict']}**: {r['why']}.{decide}"
            )
    counts = {
        v: sum(r["verdict"] == v for r in rows)
        for v in (SUPPORTS, CONTRADICTS, UNDECIDED, rules.OUTSIDE, rules.VACUOUS)
    }
    lines += [
        "",
        f"Rows: {counts[SUPPORTS]} supported, {counts[CONTRADICTS]} contradicted, "
        f"{counts[UNDECIDED]} undecided, {counts[rules.OUTSIDE]} outside the hypotheses, "
        f"{counts[rules.VACUOUS]} vacuous.",
        "",
    ]
    return lines
