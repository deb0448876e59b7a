"""Liao's Figure 1 from saved run artifacts (plain numpy in, PNG out)."""

from __future__ import annotations

import os

import matplotlib

if not os.environ.get("MPLBACKEND"):  # headless PNGs; a Jupyter kernel sets its own
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


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
