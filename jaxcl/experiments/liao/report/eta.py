"""The step-size study of Liao's report: do lucky neurons stay pure as η grows?"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from jaxcl.engine.protocol import Section
from jaxcl.experiments.liao.report.verdicts import SHARE_SUPPORT
from jaxcl.tables import ci_cell, mean_ci


def eta_section(finals: list[dict]) -> Section:
    """The step-size study: per (d, ratio, C_m) and η, the share of lucky neurons that end pure,
    mean |N_i(T)| and P_j(T) (seed means with 95% intervals), and the η above which the share
    falls below 80%, where the theorem's "lucky neurons stay pure" stops holding. Its rows are
    report.json `eta`."""
    groups = defaultdict(list)
    for f in finals:
        if f["prune_fraction"] == 0:
            groups[(f["d"], f["ratio"], f["C_m"])].append(f)
    lines = [
        "## Step size: do lucky neurons stay pure?",
        "",
        "Seed mean [95% interval] at each config's T_4 = d^1.99/η. The theorem's proof "
        "keeps every lucky neuron of feature j on j alone (N_i(T) = {j}); a larger step "
        "can move a neuron between features.",
        "",
        "| d | ratio | C_m | η | seeds | lucky neurons | share pure | mean \\|N_i(T)\\| | "
        "P_j(T) | alive |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows, verdicts = [], []
    for (d, ratio, C_m), fs in sorted(groups.items()):
        by_eta = defaultdict(list)
        for f in fs:
            by_eta[f["eta"]].append(f["observables"])
        if len(by_eta) < 2:
            continue
        holds = {}
        for eta, obs in sorted(by_eta.items()):
            share = [
                o["lucky_kept_frac"]
                for o in obs
                if o.get("lucky_total", 0) > 0 and o.get("lucky_kept_frac") is not None
            ]
            n_lucky = int(sum(o.get("lucky_total", 0) for o in obs))
            m, lo, hi = mean_ci(share) if share else (math.nan,) * 3
            holds[eta] = m >= SHARE_SUPPORT if math.isfinite(m) else None
            rows.append(
                {
                    "d": d,
                    "ratio": ratio,
                    "C_m": C_m,
                    "eta": eta,
                    "seeds": len(obs),
                    "lucky": n_lucky,
                    "share": m,
                    "share_lo": lo,
                    "share_hi": hi,
                    "N_mean": float(np.mean([np.mean(o["N_sizes"]) for o in obs])),
                    "P_mean": float(np.mean([np.mean(o["pure_counts"]) for o in obs])),
                }
            )
            lines.append(
                f"| {d} | {ratio:g} | {C_m:g} | {eta:g} | {len(obs)} | {n_lucky} | "
                f"{ci_cell(share)} | {ci_cell([np.mean(o['N_sizes']) for o in obs])} | "
                f"{ci_cell([np.mean(o['pure_counts']) for o in obs])} | "
                f"{ci_cell([o['alive_frac'] for o in obs])} |"
            )
        verdicts.append(_eta_words(d, ratio, C_m, holds))
    lines += [""] + [f"- {v}" for v in verdicts] + [""]
    return Section(lines, {"eta": rows})


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
        return (
            f"{where}: ≥ 80% of lucky neurons end pure up to η = {max(ok):g}; from "
            f'η = {min(bad):g} on, fewer do: "lucky neurons stay pure" stops holding '
            f"between η = {max(ok):g} and {min(bad):g}."
        )
    return (
        f"{where}: not monotone in η (≥ 80% at η = {ok}, below at η = {bad}): seeds too "
        "few to place a threshold."
    )
