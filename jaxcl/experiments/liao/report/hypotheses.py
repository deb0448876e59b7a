"""Which of the proof's hypotheses (App. F) each series of a sweep meets at each d: the panel that
opens the claims, and the premises a claim of Theorem 3.3 is read under (a claim whose premises
fail at the d it is judged on reads "outside the hypotheses", naming them)."""

from __future__ import annotations

import functools
import math
from collections import defaultdict

import numpy as np

from jaxcl.engine.protocol import Section
from jaxcl.experiments.liao import theory
from jaxcl.experiments.liao.config import Config

# The hypotheses a claim of Theorem 3.3 (and its proof's steps) is read under. The window
# T_3 ≥ T_2 is not one: those claims are read from T_2 on. T_4 η ≥ m Ξ_2^10 is not one either:
# it holds at no d any CPU or GPU reaches (C_m + 10 ω2 > 1.99), which the panel says.
THEOREM = ("omega1", "all_lucky", "lam")
NAMES = {
    "omega1": "ω1 > 0",
    "all_lucky": "P(every atom has a lucky neuron) ≥ 0.9",
    "lam": "λ d Ξ_2 ≤ 1",
    "window": "T_3 ≥ T_2",
    "K": "K = poly(d)",
    "T_eta": "T_4 η ≥ m Ξ_2^10",
}


def lam_arm(f: dict) -> str:
    """ "λ default" where the config's λ is the default scaling of lam_at_9 (Config.LAM with lam
    unset), "λ set" where the sweep chose it."""
    default = Config(d=f["d"], tau=f["tau"], lam_at_9=f["lam_at_9"]).LAM
    return "λ default" if math.isclose(f["lam"], default, rel_tol=1e-9) else "λ set"


@functools.lru_cache(maxsize=None)
def _at(d, m, C_m, ratio, lam, eta, K, T2, g) -> dict:
    return theory.hypotheses(d, m, C_m, ratio, lam, eta, K, T2, g)


def of(f: dict) -> dict:
    """theory.hypotheses for one final json (its measured T_2)."""
    return _at(
        f["d"], f["m"], f["C_m"], f["ratio"], f["lam"], f["eta"], f["K"], f["T2"], f["gamma_c0"]
    )


def failed(fs: list[dict], ds: list[int], names=THEOREM) -> dict[str, str]:
    """{hypothesis: where it fails} over the configs of `fs` at the d in `ds` (a hypothesis that
    depends on a measured time fails where it fails in any seed)."""
    out = {}
    for name in names:
        bad = defaultdict(list)
        for f in fs:
            if f["d"] in ds:
                h = of(f)[name]
                if h["holds"] is False:
                    bad[f["d"]].append(h["value"])
        if bad:
            cells = ", ".join(
                f"d = {d}: {_cell(name, float(np.median(v)))}" for d, v in bad.items()
            )
            out[NAMES[name]] = cells
    return out


def _cell(name: str, v: float) -> str:
    if name == "omega1":
        return f"ω1 = {v:.3g}"
    if name == "all_lucky":
        return f"P = {v:.2g}"
    if name == "lam":
        return f"λdΞ_2 = {v:.3g}"
    return f"{v:.3g}"


def panel(groups: dict) -> Section:
    """The hypotheses panel: per series ((ratio, C_m, γc0, η, λ arm) -> finals) and d, each
    hypothesis's value (median over seeds where it depends on a measured time) and whether it
    holds; rows in report.json `hypotheses`."""
    rows = []
    for key, fs in sorted(groups.items()):
        ratio, C_m, _, eta, arm = key
        for d in sorted({f["d"] for f in fs}):
            at = [of(f) for f in fs if f["d"] == d]
            row = {"ratio": ratio, "C_m": C_m, "eta": eta, "lam_arm": arm, "d": d}
            for name in NAMES:
                vals = [h[name]["value"] for h in at]
                holds = [h[name]["holds"] for h in at]
                row[name] = {
                    "value": float(np.nanmedian(vals)) if not all(map(math.isnan, vals)) else None,
                    "holds": None if None in holds else all(holds),
                }
            row["K_value"] = next(f["K"] for f in fs if f["d"] == d)
            rows.append(row)
    lines = [
        "## The proof's hypotheses, per series and d",
        "",
        "What App. F assumes, from the exact laws at each config (median over seeds where a "
        "measured T_2 enters). A claim of Theorem 3.3 is judged only where ω1 > 0, every atom "
        "has a lucky neuron with probability ≥ 0.9 and λ d Ξ_2 ≤ 1 hold at every d it is read "
        "on; elsewhere it reads **outside the hypotheses**. Its time-indexed claims are read "
        "from T_2 on, since T_3 < T_2 wherever T_2 is reached. T_4 η ≥ m Ξ_2^10 holds at no d: "
        "it asks d^1.99 ≥ d^(C_m + 10 ω2). K is the batch size against d (the proof asks "
        "K = poly(d); the column is log K / log d).",
        "",
        "| ratio | C_m | η | λ | d | ω1 | P(all lucky) | λ d Ξ_2 | T_2/T_3 | log K/log d "
        "| C_m + 10 ω2 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def c(row, name, fmt):
        h = row[name]
        if h["value"] is None:
            return "never reached"
        mark = "" if h["holds"] is None else (" ✓" if h["holds"] else " ✗")
        return f"{h['value']:{fmt}}{mark}"

    for r in rows:
        lines.append(
            f"| {r['ratio']:g} | {r['C_m']:g} | {r['eta']:g} | {r['lam_arm']} | {r['d']} "
            f"| {c(r, 'omega1', '.3g')} | {c(r, 'all_lucky', '.3g')} | {c(r, 'lam', '.3g')} "
            f"| {c(r, 'window', '.3g')} | {r['K']['value']:.2f} (K = {r['K_value']}) "
            f"| {c(r, 'T_eta', '.3g')} |"
        )
    return Section(lines + [""], {"hypotheses": rows})
