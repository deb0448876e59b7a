"""The claim-by-claim summary that opens Liao's report: each claim of Theorem 3.3, Lemma C.1 and
the proof's steps (SPEC §6) measured as the paper states it ("for each j": the minimum over
atoms; "for each neuron, t ∈ [T_3, T_4]": the maximum over neurons and logged t), judged by the
rules of verdicts.py on the tail of the d range, with the whole-range slope beside it, and, for
every claim left undecided, the cheapest design that would decide it."""

from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import Callable, NamedTuple

import numpy as np

from jaxcl import fit
from jaxcl.engine.protocol import Section
from jaxcl.experiments.liao import theory
from jaxcl.experiments.liao.report import claim_rows, verdicts
from jaxcl.experiments.liao.report.verdicts import CONTRADICTS, SUPPORTS, UNDECIDED
from jaxcl.fileio import read_jsonl
from jaxcl.tables import num as _f


class Quantity(NamedTuple):
    """A per-config seed mean the scaling section fits over d (mean over atoms or neurons): the
    context of the claims, and the trend a long run is set beside (report_long)."""

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
    """A growth claim: its statistic per config, the bound, and the expectation that tests it."""

    key: str
    words: str
    source: str
    bound: str  # "lower" (Ω) or "upper" (O)
    get: Callable  # (final json, windows) -> the per-config statistic
    init: str | None  # the init-stats record key it is read from beyond the trained d
    theta: Callable  # (C_m, ratio, γc0) -> exponent
    ekey: str | None  # theory.expected_counts key of an expectation that bounds it (see verdicts)
    trivial: Callable | None = None


def _n_window(f: dict, windows: dict, key: str = "N_max") -> float | None:
    """max over neurons of |N_i(t)| and over logged t ∈ [T_3, T_4] (key "N_max") or
    t ∈ [max(T_2, T_3), T_4] ("N_max_late") of results.jsonl. None where there is no such
    window (stage 2 never ended); for runs that logged no N_max (before it existed), the final
    max for "N_max" and None for "N_max_late"."""
    w = windows.get(f["config_id"])
    if w is None:
        return float(max(f["observables"]["N_sizes"])) if key == "N_max" else None
    return None if w.get(key) is None else float(w[key])


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
        "upper",
        lambda f, w: max(f["observables"]["ordinary_counts"]),
        "ordinary_counts",
        lambda c, r, g: theory.omega2(c, r, g),
        "ordinary",
        lambda c: c,
    ),
    Claim(
        "N0_max",
        "each neuron is ordinary for O(1) features at init: max_i |N_i(0)| = O(1)",
        "Lemma C.1(f)",
        "upper",
        lambda f, w: max(f["observables"]["N0_sizes"]),
        "N0_max",
        lambda c, r, g: 0.0,
        "N0",
    ),
    Claim(
        "N_max",
        "each neuron learns few features: max_i |N_i(t)| over t ∈ [T_3, T_4] = "
        "O(d^(1 − r²(1 − γc0)))",
        "Theorem 3.3",
        "upper",
        _n_window,
        None,
        lambda c, r, g: theory.n_exponent(r, g),
        None,
        lambda c: 1.0,
    ),
    Claim(
        "N_max_late",
        "the same after stage 2: max_i |N_i(t)| over t ∈ [max(T_2, T_3), T_4]",
        "Theorem 3.3 (window from T_2)",
        "upper",
        lambda f, w: _n_window(f, w, "N_max_late"),
        None,
        lambda c, r, g: theory.n_exponent(r, g),
        None,
        lambda c: 1.0,
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
    ),
]


def _init_values(stats: list[dict], key: tuple) -> dict:
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


def claims_section(
    finals: list[dict],
    *,
    windows: dict | None = None,
    init_stats: list[dict] = (),
) -> Section:
    """The claim-by-claim summary, its rows in report.json `claims`.

    Args:
      finals: final jsons (configs without pruning, InfoNCE, are read; series over d per
        (ratio, C_m, γc0, η)).
      windows: {config_id: {"N_max": max over logged t ∈ [T_3, T_4], "T3_before_T2": bool}}
        from results.jsonl (`windows`); without it the final max is read.
      init_stats: parsed init_stats.json files: their counts extend the init claims (Lemma C.1)
        past the trained d, and their expectations to the largest d they computed.
    """
    windows = windows or {}
    rows = []
    for (ratio, C_m, g, eta), fs in sorted(claim_rows.series(finals).items()):
        init_vals, init_exp = _init_values(list(init_stats), (ratio, C_m, g))
        m_of = {f["d"]: f["m"] for f in fs}
        e_at = {d: theory.expected_counts(d, m_of[d], ratio, g) for d in sorted(m_of)}
        head = {"ratio": ratio, "C_m": C_m, "eta": eta}
        for c in CLAIMS:
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
            if c.bound == "upper":
                v, why = verdicts.upper(
                    by_d, theta, expected=expected, trivial=c.trivial(C_m) if c.trivial else None
                )
            else:
                v, why = verdicts.lower(by_d, theta, expected=expected)
            whole = fit.fit_exponent(dict(by_d))
            tail = verdicts.tail_fit(by_d)
            if c.key in ("N_max", "N_max_late"):
                early = sum(bool(windows.get(f["config_id"], {}).get("T3_before_T2")) for f in fs)
                if early:
                    why += (
                        f"; in {early} of {len(fs)} configs T_3 < T_2 (the window starts "
                        "before stage 2 ends, unlike the theorem's)"
                    )
            rows.append(
                {
                    **head,
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
                }
            )
        rows += claim_rows.stage_rows(fs, head)
        rows += claim_rows.proof_rows(fs, head)
    rows += claim_rows.ratio_rows(finals)
    for r in rows:
        if r["verdict"] == UNDECIDED:
            r["decide"] = verdicts.design(r)
    return Section(_lines(rows), {"claims": rows})


def _lines(rows: list[dict]) -> list[str]:
    lines = [
        "## Theorem 3.3 and Lemma C.1, claim by claim",
        "",
        'Each claim as the paper states it: "for each j" is the minimum (or maximum) '
        'over atoms, "for each neuron and t ∈ [T_3, T_4]" the maximum over neurons and '
        "logged t. Growth claims are judged on the **tail**, the slope over the last "
        f"{verdicts.TAIL_D} d (95% bootstrap over seeds), with the whole-range slope "
        "beside it; where the exact finite-d expectation exists (Lemma C.1's init counts) "
        "it is read to the largest d computed. O(d^θ) is contradicted only when the tail "
        f"grows faster than d^(θ + {verdicts.TOL:g}) *and* Q/d^θ at the largest d is more "
        f"than {verdicts.GROWTH:g}× its small-d values; Ω(d^θ > 0) is supported only when "
        f"the tail interval lies above θ − {verdicts.TOL:g} and 0; for a count, "
        "Ω(d^θ ≤ 0) asks that it never vanish. Shares of neurons have exact "
        f"(Clopper–Pearson) intervals: supported from {100 * verdicts.SHARE_SUPPORT:.0f}%, "
        f"contradicted below {100 * verdicts.SHARE_CONTRADICT:.0f}%. The rules are argued "
        'in docs/liao.md ("How a claim is judged").',
        "",
    ]
    for c in dict.fromkeys(r["claim"] for r in rows):
        rs = [r for r in rows if r["claim"] == c]
        lines.append(f"- **{rs[0]['words']}** ({rs[0]['source']}):")
        for r in rs:
            if r["bound"] in ("share", "difference"):
                measured = ""
            else:
                measured = (
                    f": tail {_f(r.get('tail_slope'))} [{_f(r.get('tail_lo'))}, "
                    f"{_f(r.get('tail_hi'))}], whole range {_f(r['slope'])} "
                    f"[{_f(r['lo'])}, {_f(r['hi'])}]"
                    + (f", θ = {r['theta']:.3g}" if math.isfinite(r["theta"]) else "")
                )
            decide = f" *To decide:* {r['decide']}." if r.get("decide") else ""
            lines.append(
                f"  - ratio {r['ratio']:g}, C_m {r['C_m']:g}, η {r['eta']:g}, "
                f"d ∈ {r['d']}{measured}: **{r['verdict']}**: {r['why']}.{decide}"
            )
    counts = {v: sum(r["verdict"] == v for r in rows) for v in (SUPPORTS, CONTRADICTS, UNDECIDED)}
    lines += [
        "",
        f"In all: {counts[SUPPORTS]} supported, {counts[CONTRADICTS]} contradicted, "
        f"{counts[UNDECIDED]} undecided.",
        "",
    ]
    return lines
