"""Liao's sections of `jaxcl report RUN_DIR`: Theorem 3.3 exponent tables (measured, 95%
interval, theory, finite-d expectation), stage times, init counts vs expectation, the pruning
study, and PNG plots. Reads only the run directory's plain files (final/*.json, results.jsonl,
init_stats.json)."""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict

import numpy as np
import pandas as pd

from jaxcl import fit
from jaxcl.experiments.liao import claims, report_plots, theory, verdicts
from jaxcl.fileio import read_jsonl
from jaxcl.tables import ci_cell, mean_sd as _ms, md as _md, md_row as _md_row, num as _f


def _expectations(keys) -> dict:
    """theory.expected_counts per (d, m, ratio, gamma_c0), computed once."""
    return {k: theory.expected_counts(*k) for k in sorted(set(keys))}


def scaling_section(finals: list[dict], out_dir: str, lines: list[str]) -> list[dict]:
    """Exponent table and log-log plot of the seed means over d, per (ratio, C_m) with no
    pruning: the context of the claims (which read minima and maxima), and the trend a long
    run is set beside (returned: report.json `trend`)."""
    base = [f for f in finals if f["prune_fraction"] == 0] or finals
    series = defaultdict(list)
    for f in base:
        series[(f["ratio"], f["C_m"], f["gamma_c0"])].append(f)
    exp = _expectations((f["d"], f["m"], f["ratio"], f["gamma_c0"]) for f in base)
    lines += [
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
    report_plots.scaling(os.path.join(out_dir, "scaling.png"), panels)
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
    return trend


def stages_section(finals: list[dict], lines: list[str]) -> None:
    """T_1, T_2 and alive fraction per (d, ratio, α) against SPEC §6's scales."""
    lines += [
        "## Stage times and liveness",
        "",
        "T_1 and T_2 are seed means over configs that reached them; `scale` is "
        "d log d/(η log log d) (T_2: divided by ε_max), constant 1.",
        "",
        "| d | m | ratio | α (loss) | η | seeds | T_1 | T_1/scale | T_2 reached | T_2 | "
        "T_2/scale | alive (final) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = defaultdict(list)
    for f in finals:
        groups[(f["d"], f["m"], f["ratio"], f["prune_fraction"], _loss_label(f), f["eta"])].append(
            f
        )
    several = len({k[4] for k in groups}) > 1
    dead = []
    for (d, m, ratio, a, loss, eta), fs in sorted(groups.items()):
        t1 = [f["T1"] for f in fs if f["T1"] > 0]
        t2 = [f["T2"] for f in fs if f["T2"] > 0]
        s1 = theory.T1_scale(d, fs[0]["eta"])
        s2 = theory.T2_scale(d, fs[0]["eta"], fs[0]["eps_max"])
        alive = [f["observables"]["alive_frac"] for f in fs]
        dead += [f["config_id"] for f in fs if f["observables"]["alive_frac"] < 0.5]
        lines.append(
            f"| {d} | {m} | {ratio:g} | {a:g}{' ' + loss if several else ''} | {eta:g} | "
            f"{len(fs)} | "
            f"{_f(np.mean(t1) if t1 else None)} | "
            f"{_f(np.mean(t1) / s1 if t1 else None)} | {len(t2)}/{len(fs)} | "
            f"{_f(np.mean(t2) if t2 else None)} | {_f(np.mean(t2) / s2 if t2 else None)} "
            f"| {_ms(alive)} |"
        )
    lines.append("")
    if dead:
        lines += [
            f"**{len(dead)} config(s) have fewer than half their neurons alive** (flagged, "
            f"not findings): {', '.join(dead[:10])}{' ...' if len(dead) > 10 else ''}",
            "",
        ]
    else:
        lines += ["Every config ends with at least half of its neurons alive.", ""]


def init_section(
    stats: dict, out_dir: str, lines: list[str], png: str = "init_scaling.png"
) -> None:
    """Init-only counts at large d against their finite-d expectations and the exponents."""
    from jaxcl.experiments.liao import initstats

    C_m, g = stats["C_m"], stats["gamma_c0"]
    lines += [f"## Init-only counts (C_m = {C_m:g}, large d)", ""]
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
    report_plots.scaling(os.path.join(out_dir, png), panels)
    lines += ["", f"![init scaling]({png})", ""]
    if warnings:
        lines += ["**Fit warnings:**", ""] + [f"- {w}" for w in warnings] + [""]


def figures_section(
    run_dir: str, finals: list[dict], lines: list[str], out_dir: str | None = None
) -> None:
    """Figure 1 heatmap, coverage over training, |N_i| histograms."""
    from jaxcl.experiments.liao import figures as plots

    base = [f for f in finals if f["prune_fraction"] == 0] or finals
    d0 = min(f["d"] for f in base)
    chosen = {}
    for f in sorted(base, key=lambda f: f["seed"]):
        if f["d"] == d0:
            chosen.setdefault(f["ratio"], f)
    panels = []
    for ratio, f in sorted(chosen.items()):
        with np.load(os.path.join(run_dir, "final", f["config_id"] + ".npz")) as z:
            panels.append(
                (
                    f"ε_min/ε_max = {ratio:g} (d {d0}, seed {f['seed']})",
                    plots.cos2_np(z["w"], z["M"]),
                    f["n_major"],
                )
            )
    out_dir = out_dir or run_dir
    plots.figure1(panels, os.path.join(out_dir, "report_figure1.png"))
    lines += [
        "## Figures",
        "",
        f"Figure 1 (cos² of the first 13 neurons, d = {d0}):",
        "",
        "![figure 1](report_figure1.png)",
        "",
    ]

    rows = read_jsonl(os.path.join(run_dir, "results.jsonl"))
    by_id = {f["config_id"]: f for f in finals}
    curves = defaultdict(lambda: defaultdict(list))
    for r in rows:
        f = by_id.get(r["config_id"])
        if f is not None:
            curves[(f["ratio"], f["d"], f["prune_fraction"])][r["step"]].append(
                (r["cov_major"], r["cov_minor"])
            )
    cov_panels = []
    for ratio in sorted({k[0] for k in curves}):
        panel = {"title": f"ratio {ratio:g}", "curves": []}
        for (r, d, a), by_step in sorted(curves.items()):
            if r != ratio:
                continue
            steps = sorted(by_step)
            fs = [f for f in finals if (f["ratio"], f["d"], f["prune_fraction"]) == (r, d, a)]
            t1 = [f["T1"] for f in fs if f["T1"] > 0]
            t2 = [f["T2"] for f in fs if f["T2"] > 0]
            panel["curves"].append(
                {
                    "label": f"d {d}" + (f" α {a:g}" if a else ""),
                    "step": steps,
                    "major": [np.mean([x[0] for x in by_step[s]]) for s in steps],
                    "minor": [np.mean([x[1] for x in by_step[s]]) for s in steps],
                    "T1": np.mean(t1) if t1 else None,
                    "T2": np.mean(t2) if t2 else None,
                }
            )
        cov_panels.append(panel)
    if cov_panels:
        report_plots.coverage(os.path.join(out_dir, "coverage.png"), cov_panels)
        lines += [
            "Coverage of majority (solid) and minority (dashed) features over training, seed "
            "means, T_1/T_2 marked:",
            "",
            "![coverage](coverage.png)",
            "",
        ]
    d_max = max(f["d"] for f in base)
    hist = []
    for ratio in sorted({f["ratio"] for f in base}):
        fs = [f for f in base if f["ratio"] == ratio and f["d"] == d_max]
        hist.append(
            {
                "title": f"ratio {ratio:g} (d {d_max}, {len(fs)} seeds)",
                "N0": sum((f["observables"]["N0_sizes"] for f in fs), []),
                "N": sum((f["observables"]["N_sizes"] for f in fs), []),
            }
        )
    report_plots.histograms(os.path.join(out_dir, "N_hist.png"), hist)
    lines += ["|N_i| at init and at the end, per ratio:", "", "![N histograms](N_hist.png)", ""]
    lines += [
        "Fate of lucky neurons and of the initial sets (seed means): share of i ∈ M_j* "
        "ending with N_i = {j}; share of neurons with N_i(T) ⊆ N_i(0); mean Jaccard of "
        "N_i(0) and N_i(T).",
        "",
        "| d | m | ratio | α | lucky (total) | kept pure | N(T) ⊆ N(0) | Jaccard |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups = defaultdict(list)
    for f in finals:
        groups[(f["d"], f["m"], f["ratio"], f["prune_fraction"])].append(f["observables"])
    for (d, m, ratio, a), o in sorted(groups.items()):
        lines.append(
            f"| {d} | {m} | {ratio:g} | {a:g} | {_ms([x['lucky_total'] for x in o])} | "
            f"{_ms([x['lucky_kept_frac'] for x in o])} | "
            f"{_ms([x['N_subset_frac'] for x in o])} | "
            f"{_ms([x['N_jaccard_mean'] for x in o])} |"
        )
    lines.append("")


ATTENTION_METRICS = (
    ("cov_major", "majority coverage"),
    ("cov_minor", "minority coverage"),
    ("probe_gap", "probe gap Δ"),
    ("pure_major", "pure neurons per majority feature"),
    ("pure_minor", "pure neurons per minority feature"),
    ("alive_frac", "alive"),
)


def attention_section(finals: list[dict], lines: list[str]) -> None:
    """Frozen (W_Q = W_K = W_V = I) against trained attention (SPEC §2's extension), side by side
    per (d, ratio, α), where both were run: seed mean [95% interval]."""

    def value(f, key):
        o = f["observables"]
        if key in ("pure_major", "pure_minor"):
            counts = (
                o["pure_counts"][: f["n_major"]]
                if key == "pure_major"
                else o["pure_counts"][f["n_major"] :]
            )
            return float(np.mean(counts)) if counts else math.nan
        return o[key]

    groups = defaultdict(list)
    for f in finals:
        groups[(f["d"], f["ratio"], f["prune_fraction"], bool(f.get("train_attention")))].append(f)
    lines += [
        "## Trained attention (SPEC §2's extension)",
        "",
        "`train_attention = true` trains W_Q, W_K, W_V from I with the same GD step as W (no "
        "weight decay on them: eq. 2 regularizes W alone); coverage and pure counts read the "
        "effective weights W W_Vᵀ. Seed mean [95% interval over seeds], frozen → trained. "
        "The other sections below use the frozen-attention configs only.",
        "",
        _md_row("d", "ratio", "α_prune", "seeds", *[m[1] for m in ATTENTION_METRICS]),
        "|---|---|---|---|" + "---|" * len(ATTENTION_METRICS),
    ]
    for d, ratio, a in sorted({k[:3] for k in groups}):
        off, on = groups.get((d, ratio, a, False)), groups.get((d, ratio, a, True))
        if not off or not on:
            continue
        lines.append(
            _md_row(
                str(d),
                f"{ratio:g}",
                f"{a:g}",
                f"{len(off)} / {len(on)}",
                *[
                    f"{ci_cell([value(f, k) for f in off])} → {ci_cell([value(f, k) for f in on])}"
                    for k, _ in ATTENTION_METRICS
                ],
            )
        )
    lines.append("")


def report(run_dir: str, finals: list[dict], lines: list[str], options: dict) -> bool:
    """Appends Liao's sections to the report and writes their PNGs into run_dir.

    Args:
      run_dir: the run directory (final/*.json with observables, results.jsonl), and/or a
        directory holding init_stats.json.
      finals: the final json of every finished config of this experiment.
      lines: report.md so far.
      options: `init_stats`: path(s) of init_stats.json files to include (default
        RUN_DIR/init_stats.json; each gets an init section, and the claims read them past the
        sweep's d); `trend`: a report.json of a sweep over d to set a long
        run's final values beside; `out_dir`: where the PNGs go (default run_dir); `summary`:
        a dict this adds machine-readable results to (report.json).

    Returns:
      Whether anything was reported (finished configs or init statistics).
    """
    out_dir = options.get("out_dir") or run_dir  # where the PNGs go
    summary = options.setdefault("summary", {}).setdefault("liao", {})
    paths = options.get("init_stats") or [os.path.join(run_dir, "init_stats.json")]
    paths = [paths] if isinstance(paths, str) else list(paths)
    stats = [_load(p) for p in paths if os.path.exists(p)]
    if not finals and not stats:
        return False
    if finals:
        ds = sorted({f["d"] for f in finals})
        lines += [
            "# Liao et al.: training dynamics under imbalance",
            "",
            f"{len(finals)} finished configs; d ∈ {ds}; ratios "
            f"{sorted({f['ratio'] for f in finals})}; prune fractions "
            f"{sorted({f['prune_fraction'] for f in finals})}; losses "
            f"{sorted({_loss_label(f) for f in finals})}; seeds per point "
            f"{sorted({f['seed'] for f in finals})}.",
            "",
        ]
        every = finals
        if len({bool(f.get("train_attention")) for f in finals}) == 2:
            # the other sections read the paper's model (frozen attention) only
            finals = [f for f in finals if not f.get("train_attention")]
        if len(ds) >= 2:
            summary["claims"] = claims.claims_section(
                finals,
                lines,
                windows=claims.windows(os.path.join(run_dir, "results.jsonl"), finals),
                init_stats=stats,
            )
        if every is not finals:
            attention_section(every, lines)
        if len({f["eta"] for f in finals}) >= 2:
            from jaxcl.experiments.liao import report_eta

            summary["eta"] = report_eta.eta_section(finals, lines)
        stages_section(finals, lines)
        from jaxcl.experiments.liao import report_long

        if report_long.is_long(finals):
            summary["long_run"] = report_long.long_run_section(
                run_dir, finals, out_dir, lines, options.get("trend")
            )
        if len(ds) >= 2:
            summary["trend"] = scaling_section(finals, out_dir, lines)
        if len({f["prune_fraction"] for f in finals}) >= 2:
            from jaxcl.experiments.liao import report_pruning

            summary["pruning"] = report_pruning.pruning_section(finals, out_dir, lines)
        if len({_loss_label(f) for f in finals}) >= 2:
            from jaxcl.experiments.liao import report_losses

            summary["losses"] = report_losses.loss_section(finals, out_dir, lines)
        figures_section(run_dir, finals, lines, out_dir)
    for i, st in enumerate(stats):
        init_section(
            st, out_dir, lines, "init_scaling.png" if i == 0 else f"init_scaling_{i + 1}.png"
        )
    return True


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _loss_label(f: dict) -> str:
    """The loss of a final json (configs written before the loss family are InfoNCE)."""
    from jaxcl.experiments.liao.report_losses import loss_label

    return loss_label(f)
