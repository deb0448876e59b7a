"""Liao's Figure 1 from saved run artifacts (plain numpy in, PNG out: the run directory's
figure1.png after a run, and the report's), and the report's figures section: Figure 1, coverage
over training, |N_i| histograms and the fate of lucky neurons."""

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
from jaxcl.experiments.liao.report import plots
from jaxcl.fileio import read_jsonl
from jaxcl.tables import mean_sd as _ms


def cos2_np(w_MxD1: np.ndarray, M_D1xD: np.ndarray) -> np.ndarray:
    """cos2_ij = ⟨w_i, M_j⟩² / ‖w_i‖² in plain numpy (SPEC §5)."""
    a_MxD = w_MxD1 @ M_D1xD
    return a_MxD**2 / np.maximum((w_MxD1**2).sum(1), 1e-30)[:, None]


def figure1(panels: list[tuple[str, np.ndarray, int]], path: str, n_neurons: int = 13) -> None:
    """Heatmaps of cos² (first `n_neurons` neurons × atoms, majority atoms first), one per panel.

    Args:
      panels: (title, cos2 of shape (m, d), n_major) per panel.
      path: PNG file to write.
      n_neurons: rows shown, as in the paper's Figure 1.
    """
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.2 * len(panels), 4.0), squeeze=False, constrained_layout=True
    )
    im = None
    for ax, (title, c_MxD, n_major) in zip(axes[0], panels):
        shown = c_MxD[:n_neurons]
        im = ax.imshow(
            shown, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto", interpolation="nearest"
        )
        d = c_MxD.shape[1]
        ax.set_xticks(range(d), [str(j + 1) for j in range(d)] if d <= 16 else None)
        if d > 16:
            ax.set_xticks([])
        ax.set_yticks(range(shown.shape[0]), [str(i + 1) for i in range(shown.shape[0])])
        ax.axvline(n_major - 0.5, color="white", lw=1.5, ls="--")
        ax.set_xlabel(f"atom j (1–{n_major} majority)")
        ax.set_title(title, fontsize=10)
    axes[0][0].set_ylabel("neuron i")
    fig.colorbar(im, ax=axes[0].tolist(), label=r"$\cos^2(w_i, M_j)$", shrink=0.85)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def figure1_for_run(run_dir: str, finals: list[dict]) -> str | None:
    """figure1.png of a run: the lowest-seed finished config of each ratio, among the configs
    shaped like the first one (finals: final json dicts in grid order)."""
    if not finals:
        return None

    def shape(f):
        return tuple(f[k] for k in ("d", "d1", "m", "L", "K"))

    first = shape(finals[0])
    chosen: dict[float, dict] = {}
    for f in sorted(finals, key=lambda f: f["seed"]):
        if shape(f) == first and f["ratio"] not in chosen:
            chosen[f["ratio"]] = f
    panels = []
    for ratio in sorted(chosen):
        info = chosen[ratio]
        with np.load(os.path.join(run_dir, "final", info["config_id"] + ".npz")) as z:
            panels.append(
                (
                    f"ε_min/ε_max = {ratio:g} (seed {info['seed']})",
                    cos2_np(z["w"], z["M"]),
                    info["n_major"],
                )
            )
    path = os.path.join(run_dir, "figure1.png")
    figure1(panels, path)
    return path


def figures_section(run_dir: str, finals: list[dict]) -> Section:
    """Figure 1 heatmap (report_figure1.png), coverage over training (coverage.png), |N_i|
    histograms (N_hist.png) and the fate of lucky neurons, from the run directory's final npz
    files and results.jsonl."""
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
                    cos2_np(z["w"], z["M"]),
                    f["n_major"],
                )
            )
    files = [("report_figure1.png", plots.styled(functools.partial(figure1, panels)))]
    lines = [
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
        files.append(("coverage.png", functools.partial(plots.coverage, panels=cov_panels)))
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
    files.append(("N_hist.png", functools.partial(plots.histograms, panels=hist)))
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
    return Section(lines, files=files)
