"""The geometry experiment's report (SPEC §9), in order: trained class-mean geometry against the
convex program's G*, the minority-collapse threshold ρ* per (loss, k, τ) and how it moves, a
plain statement of where training matches the prediction, the figures, and the answers past the
paper's assumptions (SPEC §10, beyond.py)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from jaxcl.engine.protocol import Section
from jaxcl.experiments.geometry.report import beyond, plots
from jaxcl.experiments.geometry.report.stats import COLLAPSED, MATCH, loss_label, pred_cos
from jaxcl.tables import ci_cell, int_runs, md_row, num

APART = 0.9  # a minority cosine at or below this is read as clearly not collapsed


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


def report(run_dir: str, finals: list[dict]) -> list[Section]:
    """The geometry sections of `jaxcl report`, with minority_cos.png, gram.png and nc1.png.
    Their summaries (report.json `geometry`): `families`, per (family, ratio) ρ*, trained and
    predicted minority cosine and max|G − G*|; `beyond`, the SPEC §10 answers' numbers."""
    by_fam = defaultdict(lambda: defaultdict(list))
    first = {}
    for f in finals:
        by_fam[_family(f)][f["ratio"]].append(f)
        first.setdefault(_family(f), f)
    rho = _thresholds(first)
    fams = sorted(by_fam)
    head = [
        "# Geometry: class means under imbalance (SPEC §9)",
        "",
        f"{len(finals)} finished configs in {len(fams)} (classes, p, loss, k, τ) families; "
        f"ratios {sorted({f['ratio'] for f in finals})}; seeds "
        f"{int_runs(f['seed'] for f in finals)}. G is the Gram matrix of the normalized "
        "class means of the trained z; G* minimizes the collapsed objective F(G) "
        "(jaxcl.geometry.optimal_gram, π from the class sizes); ρ* is the largest ratio "
        "at which the minority means coincide in G* (G*_cc' ≥ 1 − 1e-4; "
        "jaxcl.geometry.collapse_threshold, π ∝ (1, …, 1, ρ, …, ρ)).",
        "",
    ]
    answers, details = beyond.report(run_dir, finals, loss_label)
    return [
        Section(head),
        answers,  # SPEC §10's questions open the report, where the data has them
        _threshold_section(fams, rho),
        _table_section(fams, by_fam, rho),
        _statements(fams, by_fam, rho),
        plots.figures_section(run_dir, fams, by_fam, rho),
        details,
    ]


def _families(fams, by_fam, rho) -> list[dict]:
    """report.json `families`: per family and ratio, ρ* and the seeds' minority cosine (with
    G*'s), max|G − G*| and NC1."""
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
                    "minority_cos_pred": pred_cos(by_fam[fam][ratio][0]),
                    "G_max_dev": [x["G_max_dev"] for x in o],
                    "nc1": [x["nc1"] for x in o],
                }
            )
    return out


def _threshold_section(fams, rho) -> Section:
    """ρ* per (classes, loss, k, τ), and how it moves with k and with τ."""
    lines = [
        "## The collapse threshold ρ*",
        "",
        md_row("classes", "loss", "k", "τ", "ρ*"),
        "|---|---|---|---|---|",
    ]
    for fam in sorted({f[:2] + f[3:6]: f for f in fams}.values()):  # ρ* does not depend on p
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
    return Section(lines)


def _trend(seq) -> str:
    d = np.diff(seq)
    if np.all(d > 0):
        return "rises"
    if np.all(d < 0):
        return "falls"
    if np.all(np.abs(d) <= 1e-3 * max(abs(x) for x in seq)):
        return "stays put"
    return "moves non-monotonically"


def _table_section(fams, by_fam, rho) -> Section:
    """Trained against predicted per family and ratio; its summary is report.json `families`."""
    lines = [
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
            pred = pred_cos(fs[0])
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
    return Section(lines, {"families": _families(fams, by_fam, rho)})


def _statements(fams, by_fam, rho) -> Section:
    """Per family: at which ratios trained G matches G*, and collapse below and above ρ*."""
    lines = ["## In plain words", ""]
    for fam in fams:
        C1, C2, p, lab, k, tau, steps = fam
        name = f"{C1}+{C2} classes, p = {p}, {lab}, k = {k}, τ = {tau:g}, {steps} steps"
        if p < C1 + C2:
            lines.append(
                f"- {name}: p < C, so trained G is compared with the rank-p optimum G*_p "
                "(the p < C section below, where the sweep has the data), not here."
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
            sides = (
                [
                    f"below ρ*/2 the minority means collapse (cos ≥ {COLLAPSED}) in "
                    f"{cb}/{len(below)} configs"
                ]
                if below
                else []
            ) + (
                [f"above 2ρ* they stay apart (cos ≤ {APART}) in {ca}/{len(above)}"] if above else []
            )
            parts.append(
                f"ρ* = {num(r, 3)}: "
                + (", ".join(sides) if sides else "no ratio trained below ρ*/2 or above 2ρ*")
            )
        lines.append(f"- {name}: " + "; ".join(parts) + ".")
    lines.append("")
    return Section(lines)
