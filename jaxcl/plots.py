"""Paper-ready figures from saved run artifacts (plain numpy in, PNG out)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxcl.config import Config  # noqa: E402
from jaxcl.rundir import RunDir  # noqa: E402


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
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 4.0), squeeze=False,
                             constrained_layout=True)
    im = None
    for ax, (title, c_MxD, n_major) in zip(axes[0], panels):
        shown = c_MxD[:n_neurons]
        im = ax.imshow(shown, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto",
                       interpolation="nearest")
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


def figure1_for_run(rd: RunDir, configs: list[Config]) -> str | None:
    """figure1.png of a run: the lowest-seed finished config of each ratio (first shape group)."""
    chosen: dict[float, Config] = {}
    first_static = configs[0].static() if configs else None
    for c in sorted(configs, key=lambda c: c.seed):
        if c.static() == first_static and c.ratio not in chosen and rd.has_final(c.config_id):
            chosen[c.ratio] = c
    if not chosen:
        return None
    panels = []
    for ratio in sorted(chosen):
        arrays, info = rd.load_final(chosen[ratio].config_id)
        panels.append((f"ε_min/ε_max = {ratio:g} (seed {info['seed']})",
                       cos2_np(arrays["w"], arrays["M"]), info["n_major"]))
    path = rd.p("figure1.png")
    figure1(panels, path)
    return path
