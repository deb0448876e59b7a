"""Report figures (PNG, readable in print): log–log scaling with fitted and theory slopes,
coverage over training with T_1/T_2 marked, |N_i| histograms, and the pruning comparison; the
style every figure of Liao's report is drawn in."""

from __future__ import annotations

import functools
import math
import os

import matplotlib

if not os.environ.get("MPLBACKEND"):  # headless PNGs; a Jupyter kernel sets its own
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

# matplotlib settings of every figure of the report, applied while it is drawn (global settings
# are left alone: other figures, e.g. another experiment's, look as they would without this)
STYLE = {"font.size": 10, "axes.grid": True, "grid.alpha": 0.3}
COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]


def styled(fn):
    """`fn`, drawing in STYLE (matplotlib's rc_context)."""

    @functools.wraps(fn)
    def draw(*args, **kwargs):
        with plt.rc_context(STYLE):
            return fn(*args, **kwargs)

    return draw


@styled
def scaling(path: str, panels: list[dict]) -> None:
    """Log–log panels of Q vs d: seed means ± sd, fitted line, theory slope through the fit.

    Args:
      path: PNG to write.
      panels: each {"title", "ylabel", "series": [{"label", "d": [...], "mean": [...],
        "sd": [...], "fit": Fit or None, "theory": float, "expected": [...] or None}]}.
    """
    n = len(panels)
    cols = min(n, 2)
    rows = -(-n // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False, constrained_layout=True
    )
    for ax, panel in zip(axes.ravel(), panels):
        for k, s in enumerate(panel["series"]):
            col, mk = COLORS[k % len(COLORS)], MARKERS[k % len(MARKERS)]
            d = np.asarray(s["d"], float)
            mean, sd = np.asarray(s["mean"], float), np.asarray(s["sd"], float)
            pos = mean > 0
            ax.errorbar(
                d[pos],
                mean[pos],
                yerr=np.minimum(sd[pos], 0.999 * mean[pos]),
                fmt=mk,
                color=col,
                ms=5,
                capsize=2,
                label=s["label"],
            )
            if s.get("expected") is not None:
                e = np.asarray(s["expected"], float)
                ok = e >= 1e-4  # smaller expected counts are zero for any reachable seed count
                ax.plot(d[ok], e[ok], color=col, lw=1, ls=":", alpha=0.9)
            f = s.get("fit")
            if f is not None and f.ok:
                dd = np.array([min(f.d_used), max(f.d_used)], float)
                ax.plot(dd, np.exp(f.intercept) * dd**f.slope, color=col, lw=1.5)
                if math.isfinite(s["theory"]):
                    mid = math.exp(np.mean(np.log(dd)))
                    q_mid = math.exp(f.intercept) * mid**f.slope
                    ax.plot(dd, q_mid * (dd / mid) ** s["theory"], color=col, lw=1.2, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("d")
        ax.set_ylabel(panel["ylabel"])
        ax.set_title(panel["title"], fontsize=10)
        ax.legend(fontsize=8, loc="best")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle(
        "markers: seed mean ± sd; solid: fit; dashed: theory slope; "
        "dotted: finite-d expectation (where ≥ 1e-4)",
        fontsize=9,
    )
    fig.savefig(path, dpi=150)
    plt.close(fig)


@styled
def coverage(path: str, panels: list[dict]) -> None:
    """Coverage of majority (solid) and minority (dashed) features over training, per panel.

    Args:
      path: PNG to write.
      panels: each {"title", "curves": [{"label", "step", "major", "minor", "T1", "T2"}]}.
    """
    n = len(panels)
    fig, axes = plt.subplots(
        1, n, figsize=(4.6 * n, 3.8), squeeze=False, sharey=True, constrained_layout=True
    )
    for ax, panel in zip(axes[0], panels):
        for k, c in enumerate(panel["curves"]):
            col = COLORS[k % len(COLORS)]
            ax.plot(c["step"], c["major"], color=col, lw=1.6, label=c["label"] + " major")
            ax.plot(c["step"], c["minor"], color=col, lw=1.6, ls="--", label=c["label"] + " minor")
            for t, ls in ((c["T1"], ":"), (c["T2"], "-.")):
                if t is not None and t > 0:
                    ax.axvline(t, color=col, ls=ls, lw=1)
        ax.set_xscale("log")  # T_1, T_2 are early; the log axis shows them and the long tail
        ax.set_xlabel("step (log)  dotted: T1, dash-dot: T2")
        ax.set_title(panel["title"], fontsize=10)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel(r"coverage  mean$_j$ max$_i$ cos$^2$")
    fig.savefig(path, dpi=150)
    plt.close(fig)


@styled
def histograms(path: str, panels: list[dict]) -> None:
    """|N_i(0)| and |N_i(T)| histograms (pooled over seeds), one panel per ratio.

    Args:
      path: PNG to write.
      panels: each {"title", "N0": [...sizes...], "N": [...sizes...]}.
    """
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.5), squeeze=False, constrained_layout=True)
    for ax, panel in zip(axes[0], panels):
        top = max(max(panel["N0"], default=0), max(panel["N"], default=0)) + 1
        bins = np.arange(top + 1) - 0.5
        ax.hist(panel["N0"], bins=bins, alpha=0.5, color=COLORS[1], label="|N_i(0)|", density=True)
        ax.hist(
            panel["N"],
            bins=bins,
            histtype="step",
            lw=2,
            color=COLORS[0],
            label="|N_i(T)|",
            density=True,
        )
        ax.set_xlabel("set size")
        ax.set_title(panel["title"], fontsize=10)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("share of neurons")
    fig.savefig(path, dpi=150)
    plt.close(fig)


@styled
def pruning(path: str, panels: list[dict]) -> None:
    """Quantities vs prune fraction α, one line per ratio (seed mean ± sd).

    Args:
      path: PNG to write.
      panels: each {"ylabel", "series": [{"label", "alpha": [...], "mean": [...], "sd": [...]}]}.
    """
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False, constrained_layout=True)
    for ax, panel in zip(axes[0], panels):
        for k, s in enumerate(panel["series"]):
            ax.errorbar(
                s["alpha"],
                s["mean"],
                yerr=s["sd"],
                color=COLORS[k % len(COLORS)],
                marker=MARKERS[k % len(MARKERS)],
                capsize=2,
                label=s["label"],
            )
        ax.set_xlabel("prune fraction α")
        ax.set_title(panel["ylabel"], fontsize=10)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=150)
    plt.close(fig)


@styled
def failure_shares(path: str, series: list[dict]) -> None:
    """The failure share of each "every … w.h.p." claim against d (log d), one line per claim and
    series, with exact 95% intervals.

    Args:
      path: PNG to write.
      series: each {"label", "d": [...], "k": [...], "n": [...]}.
    """
    from jaxcl.tables import clopper_pearson

    fig, ax = plt.subplots(figsize=(6.0, 4.2), constrained_layout=True)
    for i, s in enumerate(series):
        share = [k / n for k, n in zip(s["k"], s["n"])]
        ci = [clopper_pearson(k, n) for k, n in zip(s["k"], s["n"])]
        err = [[p - lo for p, (lo, _) in zip(share, ci)], [hi - p for p, (_, hi) in zip(share, ci)]]
        ax.errorbar(
            s["d"], share, yerr=err, color=COLORS[i % len(COLORS)],
            marker=MARKERS[i % len(MARKERS)], capsize=3, label=s["label"],
        )  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("d")
    ax.set_ylabel("share that fails")
    ax.set_title('"every … w.h.p.": the failure share must fall')
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
