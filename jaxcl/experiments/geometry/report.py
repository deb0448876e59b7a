"""The geometry experiment's sections of `jaxcl report` (SPEC §9): trained class-mean geometry
against the convex program's G*, the minority-collapse threshold ρ* per (loss, k, τ) and how it
moves, NC1 over training, and a plain statement of where training matches the prediction."""

from __future__ import annotations

import math
import os
from collections import defaultdict

import matplotlib

if not os.environ.get("MPLBACKEND"):  # headless PNGs; a Jupyter kernel sets its own
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from jaxcl.experiments.geometry import report_beyond
from jaxcl.fileio import read_jsonl
from jaxcl.tables import ci_cell, md_row, num

MATCH = 0.05  # max|G − G*| below which trained geometry "matches" (issue's bar at ratio ≥ 0.1)
COLLAPSED, APART = 0.99, 0.9  # minority cosine read as collapsed / clearly not collapsed
COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"]


def loss_label(f: dict) -> str:
    hard = f", hard β={f['hard_beta']:g}" if f.get("hard_beta") else ""  # SPEC §10
    if f["loss"] == "balanced":
        return f"balanced(α={f['loss_alpha']:g}, β={f['loss_beta']:g}){hard}"
    if f["loss"] == "generalized":
        return f"generalized(ψ={f['loss_psi']}, φ={f['loss_phi']}){hard}"
    return f["loss"] + hard


def _family(f: dict) -> tuple:
    """Everything but ratio and seed: one curve of minority cosine against ratio. The first six
    entries fix G* and ρ*; the training length is the seventh."""
    return (
        f["n_major_classes"],
        f["n_minor_classes"],
        f["p"],
        loss_label(f),
        f["negatives"],
        f["tau"],
        f["steps"],
    )


def _thresholds(families) -> dict:
    """ρ* per family with two or more minority classes (None where it does not apply); with
    hard negatives, ρ* of the constant-weight rest point G°(β) (the families' G_opt)."""
    from jaxcl.experiments.geometry.optimal import collapse_threshold

    out, by_problem = {}, {}
    for fam, f in families.items():
        n_major, n_minor = f["n_major_classes"], f["n_minor_classes"]
        problem = fam[:2] + fam[3:6]  # ρ* of the convex program does not depend on p
        if problem not in by_problem:
            by_problem[problem] = (
                collapse_threshold(
                    n_major,
                    n_minor,
                    f["negatives"],
                    f["tau"],
                    loss=f["loss"],
                    alpha=f["loss_alpha"],
                    beta=f["loss_beta"],
                    psi=f["loss_psi"],
                    phi=f["loss_phi"],
                    hard_beta=f.get("hard_beta", 0.0),
                    hard_target="rest",
                )
                if n_minor >= 2
                else None
            )
        out[fam] = by_problem[problem]
    return out


def report(run_dir: str, finals: list[dict], lines: list[str], out_dir: str | None = None) -> dict:
    """Appends the geometry sections and writes gram.png, minority_cos.png and nc1.png into
    out_dir (default run_dir). Returns machine-readable results (for report.json): ρ* per
    family and, per (family, ratio), trained and predicted minority cosine and max|G − G*|."""
    by_fam = defaultdict(lambda: defaultdict(list))
    first = {}
    for f in finals:
        by_fam[_family(f)][f["ratio"]].append(f)
        first.setdefault(_family(f), f)
    rho = _thresholds(first)
    fams = sorted(by_fam)
    lines += [
        "# Geometry: class means under imbalance (SPEC §9)",
        "",
        f"{len(finals)} finished configs in {len(fams)} (classes, p, loss, k, τ) families; "
        f"ratios {sorted({f['ratio'] for f in finals})}; seeds "
        f"{sorted({f['seed'] for f in finals})}. G is the Gram matrix of the normalized "
        "class means of the trained z; G* minimizes the collapsed objective F(G) "
        "(jaxcl.geometry.optimal_gram, π from the class sizes); ρ* is the largest ratio "
        "at which the minority means coincide in G* (G*_cc' ≥ 1 − 1e-4; "
        "jaxcl.geometry.collapse_threshold, π ∝ (1, …, 1, ρ, …, ρ)).",
        "",
    ]
    answers, beyond, beyond_summary = report_beyond.report(run_dir, finals, loss_label)
    lines += answers  # SPEC §10's questions open the report, where the data has them
    _threshold_section(fams, first, rho, lines)
    _table_section(fams, by_fam, rho, lines)
    _statements(fams, by_fam, rho, lines)
    _plots(run_dir, out_dir or run_dir, fams, by_fam, first, rho, finals, lines)
    lines += beyond
    keys = ("n_major_classes", "n_minor_classes", "p", "loss", "negatives", "tau", "steps")
    out = []
    for fam in fams:
        for ratio in sorted(by_fam[fam]):
            o = [f["observables"] for f in by_fam[fam][ratio]]
            out.append(
                {
                    **dict(zip(keys, fam)),
                    "ratio": ratio,
                    "rho_star": rho[fam],
                    "seeds": len(o),
                    "minority_cos": [x["minority_cos"] for x in o],
                    "minority_cos_pred": _pred_cos(by_fam[fam][ratio][0]),
                    "G_max_dev": [x["G_max_dev"] for x in o],
                    "nc1": [x["nc1"] for x in o],
                }
            )
    return {"families": out, **({"beyond": beyond_summary} if beyond_summary else {})}


def _threshold_section(fams, first, rho, lines) -> None:
    lines += [
        "## The collapse threshold ρ*",
        "",
        md_row("classes", "loss", "k", "τ", "ρ*"),
        "|---|---|---|---|---|",
    ]
    for fam in sorted({f[:6]: f for f in fams}.values()):
        C1, C2, p, lab, k, tau, _ = fam
        lines.append(md_row(f"{C1}+{C2}", lab, str(k), f"{tau:g}", num(rho[fam], 4)))
    lines += ["", "How ρ* moves (same classes and loss):", ""]
    groups = defaultdict(dict)
    for fam in fams:
        if rho[fam] is not None:
            groups[(fam[0], fam[1], fam[3])][(fam[4], fam[5])] = rho[fam]
    for (C1, C2, lab), vals in sorted(groups.items()):
        ks, taus = sorted({k for k, _ in vals}), sorted({t for _, t in vals})
        parts = []
        for tau in taus:
            seq = [vals[(k, tau)] for k in ks if (k, tau) in vals]
            if len(seq) >= 2:
                trend = _trend(seq)
                parts.append(
                    f"at τ = {tau:g}, ρ* {trend} as k grows {ks} "
                    f"({', '.join(num(x, 3) for x in seq)})"
                )
        for k in ks:
            seq = [vals[(k, t)] for t in taus if (k, t) in vals]
            if len(seq) >= 2:
                parts.append(
                    f"at k = {k}, ρ* {_trend(seq)} as τ grows {taus} "
                    f"({', '.join(num(x, 3) for x in seq)})"
                )
        if parts:
            lines.append(f"- {C1}+{C2} classes, {lab}: " + "; ".join(parts) + ".")
    lines.append("")


def _trend(seq) -> str:
    d = np.diff(seq)
    if np.all(d > 0):
        return "rises"
    if np.all(d < 0):
        return "falls"
    if np.all(np.abs(d) <= 1e-3 * max(abs(x) for x in seq)):
        return "stays put"
    return "moves non-monotonically"


def _table_section(fams, by_fam, rho, lines) -> None:
    lines += [
        "## Trained against predicted",
        "",
        "Seed mean [95% interval]; `pred. cos` is the minority pair's entry of G*; "
        f"`max|G−G*|` is the mean over seeds (the worst seed in brackets); "
        f"collapsed: seeds with minority cosine ≥ {COLLAPSED}.",
        "",
        md_row(
            "classes",
            "p",
            "loss",
            "k",
            "τ",
            "steps",
            "ratio",
            "seeds",
            "minority cos",
            "pred. cos",
            "max|G−G*|",
            "NC1",
            "‖mean‖ minor",
            "collapsed (pred.)",
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for fam in fams:
        C1, C2, p, lab, k, tau, steps = fam
        for ratio in sorted(by_fam[fam]):
            fs = by_fam[fam][ratio]
            o = [f["observables"] for f in fs]
            dev = [x["G_max_dev"] for x in o]
            pred = _pred_cos(fs[0])
            coll = sum((x["minority_cos"] or -2) >= COLLAPSED for x in o)
            want = "—" if rho[fam] is None else ("yes" if pred >= 1 - 1e-4 else "no")
            lines.append(
                md_row(
                    f"{C1}+{C2}",
                    str(p) + ("" if p >= C1 + C2 else " (p < C)"),
                    lab,
                    str(k),
                    f"{tau:g}",
                    str(steps),
                    f"{ratio:g}",
                    str(len(fs)),
                    ci_cell([x["minority_cos"] for x in o]),
                    num(pred, 4),
                    f"{num(float(np.mean(dev)), 3)} ({num(float(np.max(dev)), 3)})",
                    num(float(np.median([x["nc1"] for x in o])), 3),
                    ci_cell([x["mean_norm_minor"] for x in o]),
                    f"{coll}/{len(fs)} ({want})",
                )
            )
    lines.append("")


def _pred_cos(f: dict) -> float:
    g = np.asarray(f["observables"]["G_opt"], float)
    n1, C = f["n_major_classes"], f["n_major_classes"] + f["n_minor_classes"]
    vals = [g[i, j] for i in range(n1, C) for j in range(i + 1, C)]
    return float(np.mean(vals)) if vals else math.nan


def _statements(fams, by_fam, rho, lines) -> None:
    lines += ["## In plain words", ""]
    for fam in fams:
        C1, C2, p, lab, k, tau, steps = fam
        name = f"{C1}+{C2} classes, p = {p}, {lab}, k = {k}, τ = {tau:g}, {steps} steps"
        if p < C1 + C2:
            lines.append(
                f"- {name}: p < C, so the convex program (rank up to C) does not "
                "describe the reachable geometry; no comparison is made."
            )
            continue
        ok, bad = [], []
        for ratio in sorted(by_fam[fam]):
            devs = [f["observables"]["G_max_dev"] for f in by_fam[fam][ratio]]
            (ok if sum(d <= MATCH for d in devs) >= 0.875 * len(devs) else bad).append(
                f"{ratio:g} ({sum(d <= MATCH for d in devs)}/{len(devs)})"
            )
        parts = []
        if ok:
            parts.append(
                f"trained G matches G* (max|G − G*| ≤ {MATCH} in ≥ 7/8 of seeds) at "
                f"ratio {', '.join(ok)}"
            )
        if bad:
            parts.append(f"it does not at ratio {', '.join(bad)}")
        r = rho[fam]
        if r is not None:
            below = [f for ratio, fs in by_fam[fam].items() if ratio < r / 2 for f in fs]
            above = [f for ratio, fs in by_fam[fam].items() if ratio > 2 * r for f in fs]
            cb = sum((f["observables"]["minority_cos"] or -2) >= COLLAPSED for f in below)
            ca = sum((f["observables"]["minority_cos"] or 2) <= APART for f in above)
            parts.append(
                f"ρ* = {num(r, 3)}: below ρ*/2 the minority means collapse "
                f"(cos ≥ {COLLAPSED}) in {cb}/{len(below)} configs, above 2ρ* they stay "
                f"apart (cos ≤ {APART}) in {ca}/{len(above)}"
            )
        lines.append(f"- {name}: " + "; ".join(parts) + ".")
    lines.append("")


def _plots(run_dir, out_dir, fams, by_fam, first, rho, finals, lines) -> None:
    # minority cosine against ratio, one panel per (classes, loss), a curve per (k, τ)
    panels = sorted({(f[0], f[1], f[2], f[3]) for f in fams if f[1] >= 2})
    if panels:
        fig, axes = plt.subplots(
            1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False, constrained_layout=True
        )
        for ax, pan in zip(axes[0], panels):
            curves = [f for f in fams if f[:4] == pan]
            for ci, fam in enumerate(curves):
                col = COLORS[ci % len(COLORS)]
                ratios = sorted(by_fam[fam])
                mean = [
                    np.mean([f["observables"]["minority_cos"] for f in by_fam[fam][r]])
                    for r in ratios
                ]
                sd = [
                    np.std([f["observables"]["minority_cos"] for f in by_fam[fam][r]])
                    for r in ratios
                ]
                pred = [_pred_cos(by_fam[fam][r][0]) for r in ratios]
                ax.errorbar(
                    ratios,
                    mean,
                    yerr=sd,
                    color=col,
                    marker="o",
                    ms=4,
                    capsize=2,
                    lw=1.2,
                    label=f"k {fam[4]}, τ {fam[5]:g}, {fam[6]} steps",
                )
                ax.plot(ratios, pred, color=col, ls="--", lw=1)
                if rho[fam]:
                    ax.axvline(rho[fam], color=col, ls=":", lw=1.2)
            ax.set_xscale("log")
            ax.set_xlabel("ratio (minority / majority samples)")
            ax.set_ylabel("minority cosine")
            ax.set_title(f"{pan[0]}+{pan[1]} classes, p {pan[2]}, {pan[3]}", fontsize=9)
            ax.legend(fontsize=7, loc="best")
        fig.suptitle("trained (markers, seed mean ± sd) vs G* (dashed); dotted: ρ*", fontsize=9)
        fig.savefig(os.path.join(out_dir, "minority_cos.png"), dpi=150)
        plt.close(fig)
        lines += ["![minority cosine](minority_cos.png)", ""]
    # Gram heatmaps: the family with the most configs (the study's main one), lowest seed,
    # smallest / middle / largest ratio
    fam = max(fams, key=lambda f: (sum(len(v) for v in by_fam[f].values()), f[1] > 0))
    ratios = sorted(by_fam[fam])
    pick = sorted({ratios[0], ratios[len(ratios) // 2], ratios[-1]})
    fig, axes = plt.subplots(
        2, len(pick), figsize=(3.0 * len(pick), 5.6), squeeze=False, constrained_layout=True
    )
    im = None
    for j, r in enumerate(pick):
        f = min(by_fam[fam][r], key=lambda f: f["seed"])
        for i, (key, title) in enumerate((("G", "trained G"), ("G_opt", "G*"))):
            g = np.asarray(f["observables"][key], float)
            im = axes[i][j].imshow(g, vmin=-1, vmax=1, cmap="RdBu_r")
            axes[i][j].set_title(f"{title}, ratio {r:g} (seed {f['seed']})", fontsize=8)
            axes[i][j].set_xticks(range(len(g)))
            axes[i][j].set_yticks(range(len(g)))
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.7)
    fig.suptitle(
        f"{fam[0]}+{fam[1]} classes, {fam[3]}, k {fam[4]}, τ {fam[5]:g}, {fam[6]} steps", fontsize=9
    )
    fig.savefig(os.path.join(out_dir, "gram.png"), dpi=150)
    plt.close(fig)
    lines += [
        f"Gram matrices, trained (top) and predicted (bottom), for {fam[0]}+{fam[1]} "
        f"classes, {fam[3]}, k = {fam[4]}, τ = {fam[5]:g}:",
        "",
        "![gram](gram.png)",
        "",
    ]
    # NC1 over training for the same family
    ids = {f["config_id"]: f for r in ratios for f in by_fam[fam][r]}
    curves = defaultdict(lambda: defaultdict(list))
    for row in read_jsonl(os.path.join(run_dir, "results.jsonl")):
        f = ids.get(row.get("config_id"))
        if f is not None and row.get("nc1") is not None:
            curves[f["ratio"]][row["step"]].append(row["nc1"])
    if curves:
        fig, ax = plt.subplots(figsize=(5.2, 3.8), constrained_layout=True)
        for ci, r in enumerate(sorted(curves)):
            steps = sorted(curves[r])
            ax.plot(
                steps,
                [np.median(curves[r][s]) for s in steps],
                color=plt.cm.viridis(ci / max(1, len(curves) - 1)),
                label=f"ratio {r:g}",
            )
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("NC1 = tr(Σ_W Σ_B⁺)/C (median over seeds)")
        ax.legend(fontsize=7, ncol=2)
        fig.savefig(os.path.join(out_dir, "nc1.png"), dpi=150)
        plt.close(fig)
        lines += ["NC1 over training (same family):", "", "![nc1](nc1.png)", ""]
