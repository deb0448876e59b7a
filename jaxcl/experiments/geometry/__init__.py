"""The geometry experiment (SPEC §9): unconstrained features trained on a loss of SPEC §8 under
class imbalance, against the class-mean Gram matrix G* that minimizes the collapsed objective
(a convex program), and minority collapse below the threshold ρ*."""

from __future__ import annotations

import numpy as np

from jaxcl.engine.protocol import Experiment, Section, register
from jaxcl.experiments.geometry import observables, train
from jaxcl.experiments.geometry.config import Config, HParams, Static


class Geometry(Experiment):
    name = "geometry"
    Config = Config
    # what names a row of its report.json: a family (classes, p, loss, k, τ, steps) and a ratio
    id_fields = (
        "loss",
        "ratio",
        "p",
        "tau",
        "negatives",
        "n_major_classes",
        "n_minor_classes",
        "seeds",
        "steps",
    )

    def init(self, static: Static, hp: HParams):
        return train.init(static, hp)

    def run_chunk(self, static: Static, hp: HParams, state):
        return train.run_chunk(static, hp, state)

    def final_arrays(self, state) -> dict:
        return {"u": state.u}

    def final_observables(self, static: Static, hp: HParams, state) -> dict:
        return observables.final_observables(static, hp, state)

    def finalize(self, cfg: Config, arrays: dict) -> dict:
        """Z (N, p): the normalized rows of the N samples (padding cut), labels (N,), the Gram
        matrix G of the normalized class means of Z (numpy, float64) and the predicted G*."""
        u = np.asarray(arrays["u"], np.float64)
        S = cfg.samples_major
        rows = np.concatenate([c * S + np.arange(n) for c, n in enumerate(cfg.class_sizes)])
        labels = np.repeat(np.arange(cfg.n_classes), cfg.class_sizes).astype(np.int32)
        z = u[rows] / np.linalg.norm(u[rows], axis=1, keepdims=True)
        means = np.stack([z[labels == c].mean(axis=0) for c in range(cfg.n_classes)])
        unit = means / np.linalg.norm(means, axis=1, keepdims=True)
        return {
            "Z": z.astype(np.float32),
            "labels": labels,
            "G": unit @ unit.T,
            "G_opt": np.asarray(cfg.G_opt(), np.float64),
        }

    def describe(self, static: Static) -> str:
        return (
            f"C={static.n_major_classes}+{static.n_minor_classes} p={static.p} "
            f"k={static.negatives} {static.loss}" + (" hard" if static.hard else "")
        )

    def config_bytes(self, static: Static) -> int:
        return 4 * (4 * static.n_rows * static.p + static.batch * (static.negatives + 2) * static.p)

    def report(self, run_dir: str, finals: list[dict], options: dict) -> list[Section]:
        if not finals:
            return []
        from jaxcl.experiments.geometry.report import sections

        return sections.report(run_dir, finals)


EXPERIMENT = register(Geometry())

__all__ = ["Config", "EXPERIMENT", "HParams", "Static"]
