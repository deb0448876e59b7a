"""The geometry report's figures: minority cosine against ratio with G*'s and ρ*
(minority_cos.png), trained and predicted Gram matrices (gram.png), NC1 over training (nc1.png)."""

from __future__ import annotations

import functools
import os
from collections import defaultdict

import matplotlib

if not os.environ.get("MPLBACKEND"):  # headless PNGs; a Jupyter kernel sets its own
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from jaxcl.engine.protocol import Section
from jaxcl.experiments.geometry.report.stats import pred_cos
from jaxcl.fileio import read_jsonl

COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"]


def figures_section(run_dir: str, fams: list, by_fam: dict, rho: dict) -> Section:
    """The figures with their lines: minority cosine for every family with two or more minority
    classes; Gram matrices and NC1 (from results.jsonl) of the family with the most configs."""
    lines, files = [], []
    # minority cosine against ratio, one panel per (classes, loss), a curve per (k, τ)
    panels = sorted({(f[0], f[1], f[2], f[3]) for f in fams if f[1] >= 2})
    if panels:
        draw = functools.partial(_minority_cos, panels=panels, fams=fams, by_fam=by_fam, rho=rho)
        files.append(("minority_cos.png", draw))
        lines += ["![minority cosine](minority_cos.png)", ""]
    # Gram heatmaps: the family with the most configs (the study's main one), lowest seed,
    # smallest / middle / largest ratio
    fam = max(fams, key=lambda f: (sum(len(v) for v in by_fam[f].values()), f[1] > 0))
    ratios = sorted(by_fam[fam])
    pick = sorted({ratios[0], ratios[len(ratios) // 2], ratios[-1]})
    files.append(("gram.png", functools.partial(_gram, fam=fam, pick=pick, by_fam=by_fam)))
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
        files.append(("nc1.png", functools.partial(_nc1, curves=curves)))
        lines += ["NC1 over training (same family):", "", "![nc1](nc1.png)", ""]
    return Section(lines, files=files)


def _minority_cos(path: str, panels: list, fams: list, by_fam: dict, rho: dict) -> None:
    """One panel per (classes, p, loss), a curve per family: seed mean ± sd, G*'s, ρ*."""
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False, constrained_layout=True
    )
    for ax, pan in zip(axes[0], panels):
        curves = [f for f in fams if f[:4] == pan]
        for ci, fam in enumerate(curves):
            col = COLORS[ci % len(COLORS)]
            ratios = sorted(by_fam[fam])
            mean = [
                np.mean([f["observables"]["minority_cos"] for f in by_fam[fam][r]]) for r in ratios
            ]
            sd = [
                np.std([f["observables"]["minority_cos"] for f in by_fam[fam][r]]) for r in ratios
            ]
            pred = [pred_cos(by_fam[fam][r][0]) for r in ratios]
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
    fig.savefig(path, dpi=150)
    plt.close(fig)


def _gram(path: str, fam: tuple, pick: list, by_fam: dict) -> None:
    """Trained G (top) and G* (bottom) of one family's lowest seed at the ratios `pick`."""
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
    fig.savefig(path, dpi=150)
    plt.close(fig)


def _nc1(path: str, curves: dict) -> None:
    """NC1 against step, the median over seeds, one curve per ratio."""
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
    fig.savefig(path, dpi=150)
    plt.close(fig)
