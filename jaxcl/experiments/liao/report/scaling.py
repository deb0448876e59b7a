"""The scaling sections of Liao's report: Theorem 3.3 exponent tables over d (measured, 95%
interval, theory, finite-d expectation) with their log-log plot and the init counts against their
expectation, and the same for init-only counts at large d (`jaxcl init-stats`)."""

from __future__ import annotations

import functools
from collections import defaultdict

import numpy as np
import pandas as pd

from jaxcl import fit
from jaxcl.engine.protocol import Section
from jaxcl.experiments.liao import theory
from jaxcl.experiments.liao.report import claims, plots, verdicts
from jaxcl.tables import md as _md, md_row as _md_row, num as _f


def _expectations(keys) -> dict:
    """theory.expected_counts per (d, m, ratio, gamma_c0), computed once."""
    return {k: theory.expected_counts(*k) for k in sorted(set(keys))}


def scaling_section(finals: list[dict]) -> Section:
    """Exponent table and log-log plot (scaling.png) of the seed means over d, per (ratio, C_m)
    with no pruning: the context of the claims (which read minima and maxima), and the trend a
    long run is set beside (report.json `trend`)."""
    base = [f for f in finals if f["prune_fraction"] == 0] or finals
    series = defaultdict(list)
    for f in base:
        series[(f["ratio"], f["C_m"], f["gamma_c0"])].append(f)
    exp = _expectations((f["d"], f["m"], f["ratio"], f["gamma_c0"]) for f in base)
    lines = [
        "## Scaling exponents (Theorem 3.3, Lemma C.1)",
        "",
        "Slope of log(seed mean) on log d; 95% bootstrap interval over seeds. `theory` is "
        "the exponent of SPEC §6 (a bound: lucky and pure counts are lower bounds Ω(d^ω1), "
        "|M_j| and |N_i| upper bounds); `finite-d` is the slope of the exact expected count "
        "at the same d under Gaussian init (for |N_i(T)| and P_j(T): of their values at init, "
        "E|N_i(0)| and E#{i : N_i(0) = {j}}). These are means over atoms or neurons, not "
        "the claims' minima and maxima, and whole-range slopes: no verdict is read from "
        "them (the claims above are judged on the tail).",
        "",
        "| quantity | ratio | C_m | measured | 95% interval | theory | finite-d | "
        "tail slope [95%] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    table = pd.DataFrame(
        [
            {
                "ratio": f["ratio"],
                "C_m": f["C_m"],
                "gamma_c0": f["gamma_c0"],
                "d": f["d"],
                **{q.label: float(q.get(f["observables"])) for q in claims.QUANTITIES},
            }
            for f in base
        ]
    )
    fits = fit.by_key(
        fit.exponent(
            table,
            x="d",
            y=[q.label for q in claims.QUANTITIES],
            by=["ratio", "C_m", "gamma_c0"],
            name="{y} at ratio {ratio:g}",
        )
    )
    warnings, panels, trend = [], [], []
    for key, label, get, theta_fn, ekey in claims.QUANTITIES:
        panel = {"title": label, "ylabel": label, "series": []}
        for (ratio, C_m, g), fs in sorted(series.items()):
            by_d = defaultdict(list)
            for f in fs:
                by_d[f["d"]].append(float(get(f["observables"])))
            ds = sorted(by_d)
            ft = fits[(label, ratio, C_m, g)]
            warnings += ft.warnings
            theta = theta_fn(C_m, ratio, g)
            m_of = {f["d"]: f["m"] for f in fs}
            e = [exp[(d, m_of[d], ratio, g)][ekey] for d in ds]
            e_slope = fit.fit_curve(ft.d_used, [e[ds.index(d)] for d in ft.d_used])
            tail = verdicts.tail_fit(by_d)
            lines.append(
                f"| {_md(label)} | {ratio:g} | {C_m:g} | {_f(ft.slope)} | "
                f"[{_f(ft.lo)}, {_f(ft.hi)}] | {theta:.3g} | {_f(e_slope)} | "
                f"{_f(tail.slope)} [{_f(tail.lo)}, {_f(tail.hi)}] |"
            )
            trend.append(
                {
                    "claim": key,
                    "ratio": ratio,
                    "C_m": C_m,
                    "slope": ft.slope,
                    "lo": ft.lo,
                    "hi": ft.hi,
                    "means": {str(d): float(np.mean(by_d[d])) for d in ds},
                }
            )
            panel["series"].append(
                {
                    "label": f"ratio {ratio:g}, C_m {C_m:g}",
                    "d": ds,
                    "mean": [np.mean(by_d[d]) for d in ds],
                    "sd": [np.std(by_d[d]) for d in ds],
                    "fit": ft,
                    "theory": theta,
                    "expected": e,
                }
            )
        panels.append(panel)
    lines += [
        "",
        "The verdict per claim is at the top of this section "
        "([claim by claim](#theorem-33-and-lemma-c1-claim-by-claim)).",
        "",
        "![scaling](scaling.png)",
        "",
    ]
    if warnings:
        lines += ["**Fit warnings:**", ""] + [f"- {w}" for w in warnings] + [""]
    lines += [
        "Measured init counts vs their finite-d expectation (mean over features and seeds):",
        "",
        _md_row("d", "m", "ratio", "|M_j|", "E|M_j|", "|M_j*|", "E|M_j*|", "|N_i(0)|", "E|N_i(0)|"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (ratio, C_m, g), fs in sorted(series.items()):
        for d in sorted({f["d"] for f in fs}):
            at = [f for f in fs if f["d"] == d]
            e = exp[(d, at[0]["m"], ratio, g)]
            o = [f["observables"] for f in at]
            lines.append(
                f"| {d} | {at[0]['m']} | {ratio:g} | "
                f"{_f(np.mean([np.mean(x['ordinary_counts']) for x in o]))} | "
                f"{_f(e['ordinary'])} | {_f(np.mean([np.mean(x['lucky_counts']) for x in o]))}"
                f" | {_f(e['lucky'])} | {_f(np.mean([np.mean(x['N0_sizes']) for x in o]))}"
                f" | {_f(e['N0'])} |"
            )
    lines.append("")
    return Section(
        lines, {"trend": trend}, [("scaling.png", functools.partial(plots.scaling, panels=panels))]
    )


def init_section(stats: dict, png: str = "init_scaling.png") -> Section:
    """Init-only counts at large d (an init_stats.json) against their finite-d expectations
    and the exponents, with their plot (`png`)."""
    from jaxcl.experiments.liao import initstats

    C_m, g = stats["C_m"], stats["gamma_c0"]
    lines = [f"## Init-only counts (C_m = {C_m:g}, large d)", ""]
    r = stats.get("invocation")
    if r:  # written by `jaxcl init-stats` since it records itself
        env = r.get("environment") or {}
        lines += [
            f"Counted by `{r['command']}` on {r['host']} ({r['cpu']}), {r['started']}, "
            f"{r['seconds']:.0f} s; jax {env.get('jax', '?')}, {env.get('isa', '?')}; "
            f"jaxcl {r['commit']}.",
            "",
        ]
    lines += [
        "Totals over features and seeds, with the z-score (measured − expected)/sd under "
        "the exact sampling law (jaxcl.initstats.agreement). Lucky sets at ratio < 1 need "
        "ω1 > 0 to be non-empty.",
        "",
        _md_row(
            "d",
            "m",
            "ratio",
            "seeds",
            "Σ|M_j|",
            "E",
            "z",
            "Σ|M_j*|",
            "E",
            "z",
            "Σ#{N_i(0)={j}}",
            "E",
            "z",
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in initstats.agreement(stats):
        cells = []
        for key in ("ordinary", "lucky", "single"):
            t, e, z = row[key]
            cells += [str(t), _f(e, 4), f"{z:+.2f}"]
        lines.append(
            f"| {row['d']} | {row['m']} | {row['ratio']:g} | {row['seeds']} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "Means over features (the claims read the minimum or maximum over features, "
        "and are judged in the claim-by-claim section when these counts extend a sweep "
        "over d):",
        "",
        "| quantity | ratio | measured slope | 95% interval | theory | "
        "finite-d | tail slope [95%] |",
        "|---|---|---|---|---|---|---|",
    ]
    exp = {(e["d"], e["ratio"]): e for e in stats["expected"]}
    quantities = (
        ("lucky_counts", "|M_j*|", lambda r: theory.omega1(C_m, r, g), "lucky", "lower"),
        ("ordinary_counts", "|M_j|", lambda r: theory.omega2(C_m, r, g), "ordinary", "upper"),
        ("single_counts", "#{N_i(0) = {j}}", lambda r: theory.omega1(C_m, r, g), "single", "lower"),
    )
    table = pd.DataFrame(
        [
            {
                "ratio": r["ratio"],
                "d": r["d"],
                **{q[1]: float(np.mean(r[q[0]])) for q in quantities},
            }
            for r in stats["records"]
        ]
    )
    fits = fit.by_key(
        fit.exponent(
            table,
            x="d",
            y=[q[1] for q in quantities],
            by=["ratio"],
            name="init {y} at ratio {ratio:g}",
        )
    )
    panels, warnings = [], []
    for key, label, theta_fn, ekey, bound in quantities:
        panel = {"title": f"{label} at init", "ylabel": label, "series": []}
        for ratio in sorted({r["ratio"] for r in stats["records"]}):
            by_d = defaultdict(list)
            for r in stats["records"]:
                if r["ratio"] == ratio:
                    by_d[r["d"]].append(float(np.mean(r[key])))
            ds = sorted(by_d)
            ft = fits[(label, ratio)]
            tail = verdicts.tail_fit(by_d)
            warnings += ft.warnings
            e = [exp[(d, ratio)][ekey] for d in ds]
            lines.append(
                f"| {_md(label)} | {ratio:g} | {_f(ft.slope)} | [{_f(ft.lo)}, {_f(ft.hi)}] | "
                f"{theta_fn(ratio):.3g} | "
                f"{_f(fit.fit_curve(ft.d_used, [e[ds.index(d)] for d in ft.d_used]))} | "
                f"{_f(tail.slope)} [{_f(tail.lo)}, {_f(tail.hi)}] |"
            )
            panel["series"].append(
                {
                    "label": f"ratio {ratio:g}",
                    "d": ds,
                    "mean": [np.mean(by_d[d]) for d in ds],
                    "sd": [np.std(by_d[d]) for d in ds],
                    "fit": ft,
                    "theory": theta_fn(ratio),
                    "expected": e,
                }
            )
        panels.append(panel)
    lines += ["", f"![init scaling]({png})", ""]
    if warnings:
        lines += ["**Fit warnings:**", ""] + [f"- {w}" for w in warnings] + [""]
    return Section(lines, files=[(png, functools.partial(plots.scaling, panels=panels))])
