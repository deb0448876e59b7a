"""Findings from the claim rows: rows that share a cause are one finding, with one statement, the
rows it rests on and its evidence; where an exact computation explains it, its derivation (the
lucky count's e^(−E|N_i(0)|) factor below ratio 1). The report's tally counts findings."""

from __future__ import annotations

import functools
import math
from collections import defaultdict

from jaxcl.engine.protocol import Section
from jaxcl.experiments.liao import theory
from jaxcl.experiments.liao.report import plots
from jaxcl.experiments.liao.report.rules import OUTSIDE, VACUOUS
from jaxcl.experiments.liao.report.verdicts import CONTRADICTS, SUPPORTS, UNDECIDED

HOLDS, FAILS, OPEN = "holds", "fails", "open"
WORD = {SUPPORTS: HOLDS, CONTRADICTS: FAILS, UNDECIDED: OPEN, OUTSIDE: OUTSIDE, VACUOUS: VACUOUS}
# claims that share a cause, and what the family says when its rows agree
FAMILIES = {
    "lucky_min": ("init_lucky", "Lemma C.1(c): every feature has lucky neurons at init"),
    "ordinary_max": ("init_sets", "Lemma C.1(c, f): the initial sets are small"),
    "N0_max": ("init_sets", "Lemma C.1(c, f): the initial sets are small"),
    "N0_thm": ("set_sizes", "Theorem 3.3(i): each neuron learns few features"),
    "N_t_late": ("set_sizes", "Theorem 3.3(i): each neuron learns few features"),
    "N_t_2T2": ("set_sizes", "Theorem 3.3(i): each neuron learns few features"),
    "N_t_T": ("set_sizes", "Theorem 3.3(i): each neuron learns few features"),
    "pure_min": ("purity", "Theorem 3.3: every feature keeps Ω(d^ω1) pure neurons"),
    "lucky_pure": ("set_dynamics", "the proof's sets: a neuron learns what its init set holds"),
    "F1e": ("set_dynamics", "the proof's sets: a neuron learns what its init set holds"),
    "empty_stays": ("set_dynamics", "the proof's sets: a neuron learns what its init set holds"),
    "o_md": ("set_dynamics", "the proof's sets: a neuron learns what its init set holds"),
    "T1": ("stage1", "Theorem 3.3: stage 1 ends at T_1 = Θ(d log d/(η log log d))"),
    "T2": ("stage2", "Theorem 3.3: stage 2 ends at T_2 = Θ(d log d/(ε_max η log log d))"),
    "ratio_N": ("ratio", "Theorem 3.3(ii): a smaller ratio enlarges |N_i|"),
}


def _series(r: dict) -> str:
    arm = f", {r['lam_arm']}" if r.get("lam_arm") else ""
    return f"ratio {r['ratio']:g}, C_m {r['C_m']:g}, η {r['eta']:g}{arm}"


def lucky_derivation(rows: list[dict], gamma_c0: float = 5e-4) -> dict | None:
    """Why Lemma C.1(c)'s lucky count fails below ratio 1: E|M_j*| ≈ d^ω1 · r/√(π(1+γc0) log d)
    · e^(−E|N_i(0)|) (theory.lucky_leading), and E|N_i(0)| ≈ d^(1 − r²(1 − γc0))/√log d grows
    (theory.n0_leading), so the last factor, which the lemma drops, wins. Numbers at the largest
    d each failing row reads; None when no lucky row below ratio 1 fails."""
    failing = [
        r
        for r in rows
        if r["claim"] == "lucky_min" and r["ratio"] < 1 and r["verdict"] == CONTRADICTS
    ]
    if not failing:
        return None
    cells = []
    for r in failing:
        d = max(r["d"])
        m = round(d ** r["C_m"])
        n0 = theory.n0_leading(d, r["ratio"], gamma_c0)
        cells.append(
            {
                "ratio": r["ratio"],
                "C_m": r["C_m"],
                "d": d,
                "E_N0_leading": n0,
                "n0_exponent": theory.n_exponent(r["ratio"], gamma_c0),
                "exp_minus_N0": math.exp(-n0),
                "lucky_leading": theory.lucky_leading(d, m, r["ratio"], gamma_c0),
                "omega1": theory.omega1(r["C_m"], r["ratio"], gamma_c0),
            }
        )
    return {
        "statement": "E|M_j*| = m P(lucky) ≈ d^ω1 · r/√(π(1+γc0) log d) · e^(−E|N_i(0)|): the "
        "last factor is the chance that none of the other d − 1 atoms passes eq. 16's threshold, "
        "and E|N_i(0)| = d P(U ≥ c2 log d/d) ≈ d^(1 − r²(1 − γc0))/(r √(π(1 − γc0) log d)) grows "
        "as a power of d for every ratio below 1, so the expected lucky count falls faster than "
        "any power of d; Lemma C.1(c) keeps the first two factors only.",
        "cells": cells,
    }


def findings(rows: list[dict]) -> list[dict]:
    """Rows grouped into findings: one per (family, verdict, and for rows outside the hypotheses
    the hypotheses that fail), each with its statement, rows and evidence."""
    groups = defaultdict(list)
    for i, r in enumerate(rows):
        fam, _ = FAMILIES.get(r["claim"], (r["claim"], r["words"]))
        word = WORD[r["verdict"]]
        failed = ""
        if word == OUTSIDE:  # one finding per cause, whatever the claim
            failed = "; ".join(sorted(p.split(" fails")[0] for p in r["why"].split("; ")))
            fam = "outside"
        below = word in (FAILS, HOLDS) and fam == "init_lucky" and r["ratio"] < 1
        groups[(fam, word, failed, below)].append(i)
    out = []
    for (fam, word, failed, below), idx in groups.items():
        rs = [rows[i] for i in idx]
        title = FAMILIES.get(rs[0]["claim"], (None, rs[0]["words"]))[1]
        series = sorted({_series(r) for r in rs})
        claims = sorted({r["claim"] for r in rs})
        if word == OUTSIDE:
            statement = (
                f"Theorem 3.3 and its proof's steps cannot be tested in {'; '.join(series)}: "
                f"{failed} fails"
            )
        elif word == VACUOUS:
            statement = f"{title}: the bound cannot fail at these exponents"
        else:
            statement = f"{title[0].upper() + title[1:]}: {word}"
        f = {
            "family": fam,
            "verdict": word,
            "statement": statement,
            "claims": claims,
            "series": series,
            "rows": idx,
            "evidence": (
                sorted({r["why"] for r in rs})  # one cause: say it once
                if word == OUTSIDE
                else [f"{r['claim']} ({_series(r)}): {r['why']}" for r in rs]
            ),
        }
        if below:
            f["derivation"] = lucky_derivation(rs)
            f["statement"] += " below ratio 1, in expectation"
        out.append(f)
    order = {FAILS: 0, HOLDS: 1, OPEN: 2, OUTSIDE: 3, VACUOUS: 4}
    return sorted(out, key=lambda f: (order[f["verdict"]], f["family"]))


def findings_section(rows: list[dict]) -> Section:
    """The findings that open the claims (report.json `findings`), with their tally."""
    fs = findings(rows)
    tally = {w: sum(f["verdict"] == w for f in fs) for w in (HOLDS, FAILS, OPEN, OUTSIDE, VACUOUS)}
    lines = [
        "## Findings",
        "",
        "The claim rows below, grouped by shared cause: each finding names its rows and "
        "evidence. A claim is judged only inside the proof's hypotheses (the panel above); "
        "a bound that cannot fail is vacuous.",
        "",
    ]
    for n, f in enumerate(fs, 1):
        lines.append(
            f"{n}. **{f['statement']}** ({len(f['rows'])} row{'s' * (len(f['rows']) > 1)}: "
            f"{', '.join(f['claims'])}; {'; '.join(f['series'])})."
        )
        for e in f["evidence"]:
            lines.append(f"   - {e}")
        if f.get("derivation"):
            lines.append(f"   - *Derivation.* {f['derivation']['statement']}")
            for c in f["derivation"]["cells"]:
                lines.append(
                    f"     At ratio {c['ratio']:g}, C_m {c['C_m']:g}, d = {c['d']}: "
                    f"E|N_i(0)| ≈ {c['E_N0_leading']:.3g} (∝ d^{c['n0_exponent']:.3g}), "
                    f"e^(−E|N_i(0)|) = {c['exp_minus_N0']:.3g}, leading E|M_j*| ≈ "
                    f"{c['lucky_leading']:.3g} against d^ω1 = {c['d'] ** c['omega1']:.3g}."
                )
    lines += [
        "",
        f"Findings: {tally[HOLDS]} hold, {tally[FAILS]} fail, {tally[OPEN]} open, "
        f"{tally[OUTSIDE]} outside the hypotheses, {tally[VACUOUS]} vacuous "
        f"(from {len(rows)} rows).",
        "",
    ]
    shares = [
        {
            "label": f"{r['claim']}, {_series(r)}",
            "d": [int(d) for d in sorted(r["by_d"], key=int)],
            "k": [r["by_d"][d][0] for d in sorted(r["by_d"], key=int)],
            "n": [r["by_d"][d][1] for d in sorted(r["by_d"], key=int)],
        }
        for r in rows
        if r.get("by_d") and len(r["by_d"]) >= 2
    ]
    files = []
    if shares:
        lines += ["![failure shares](failure_shares.png)", ""]
        files = [("failure_shares.png", functools.partial(plots.failure_shares, series=shares))]
    return Section(lines, {"findings": fs, "tally": tally}, files)
