"""Liao et al.'s model as a jaxcl experiment: sparse-coding data with majority and minority
features, an attention + bilateral-ReLU encoder trained by GD on a contrastive loss with the
paper's staged bias schedule (SPEC §1–6); its observables, theory, report and init-only mode."""

from __future__ import annotations

import argparse

from jaxcl.engine.protocol import Command, Experiment, Section, register
from jaxcl.experiments.liao import observables, report, train
from jaxcl.experiments.liao.config import Config, HParams, Static


class Liao(Experiment):
    name = "liao"
    Config = Config
    # what names a row of its report.json: a grid point, a claim and its bound, a pruning mode
    id_fields = (
        "claim",
        "bound",
        "source",
        "mode",
        "loss",
        "d",
        "ratio",
        "C_m",
        "eta",
        "prune_fraction",
        "seeds",
        "steps",
        "theta",
    )
    sizing_hint = (
        "For the init-only set sizes of Theorem 3.3 at that size, `jaxcl init-stats "
        "--d ... --C_m ...` counts them without training, in bounded memory"
    )

    def init(self, static: Static, hp: HParams):
        return train.init(static, hp)

    def run_chunk(self, static: Static, hp: HParams, state):
        return train.run_chunk(static, hp, state)

    def final_arrays(self, state) -> dict:
        out = {"w0": state.w0, "w": state.w, "b": state.b, "M": state.M, "eps": state.eps}
        if state.keep is not None:  # prune_mode "neurons_once": the mask removed at T_1/T_2
            out["keep"] = state.keep
        if state.attn is not None:  # train_attention: the trained W_Q, W_K, W_V (d1, d1)
            out.update(W_Q=state.attn.wq, W_K=state.attn.wk, W_V=state.attn.wv)
        if state.sets is not None:  # snapshot_sets: N_i(t) near T_2 and 2 T_2, and those t
            out.update(N_T2=state.sets.N_T2, N_2T2=state.sets.N_2T2, t_snapshots=state.sets.t)
        return out

    def finalize(self, cfg: Config, arrays: dict) -> dict:
        """With snapshot_sets, the npz also holds N_i(0) (eq. 16 at t = 0, the paper's N_i),
        N_i(T) at the end, and each neuron's initial argmax_j |A_ij(0)|, as plain arrays."""
        if "N_T2" not in arrays:
            return arrays
        import numpy as np

        _, c2 = observables.thresholds(cfg.eps_max, cfg.eps_min, cfg.gamma_c0)
        a0_MxD = np.asarray(arrays["w0"], np.float64) @ np.asarray(arrays["M"], np.float64)
        a_MxD = np.asarray(arrays["w"], np.float64) @ np.asarray(arrays["M"], np.float64)
        if "W_V" in arrays:  # trained attention: the weights on the raw tokens, W W_Vᵀ
            a_MxD = (
                np.asarray(arrays["w"], np.float64) @ np.asarray(arrays["W_V"]).T
            ) @ np.asarray(arrays["M"], np.float64)

        def sets(a):
            a2 = a * a
            return a2 >= (c2 * np.log(cfg.d) / cfg.d) * a2.sum(axis=1, keepdims=True)

        return arrays | {
            "N_0": sets(a0_MxD),
            "N_T": sets(a_MxD),
            "argmax0": np.argmax(np.abs(a0_MxD), axis=1).astype(np.int32),
        }

    def final_scalars(self, state) -> dict:
        return {"T1": state.T1, "T2": state.T2}

    def final_observables(self, static: Static, hp: HParams, state) -> dict:
        return observables.final_observables(static, hp, state)

    def describe(self, static: Static) -> str:
        return (
            f"d={static.d} m={static.m} d1={static.d1}"
            + ("" if static.loss == "infonce" else f" {static.loss}")
            + (" attention trained" if static.train_attention else "")
        )

    def config_bytes(self, static: Static) -> int:
        K, L, m, d1 = static.K, static.L, static.m, static.d1
        return 4 * (3 * K * L * m + 4 * m * d1 + 2 * K * L * d1)

    def after_run(self, run_dir: str, finals: list[dict]) -> None:
        from jaxcl.experiments.liao.report import figures

        figures.figure1_for_run(run_dir, finals)

    def report(self, run_dir: str, finals: list[dict], options: dict) -> list[Section]:
        from jaxcl.experiments.liao.report import sections

        return sections.report(run_dir, finals, options)

    def report_arguments(self, parser: argparse.ArgumentParser) -> None:
        report.add_arguments(parser)

    def commands(self) -> dict[str, Command]:
        from jaxcl.experiments.liao import initstats

        return {
            "init-stats": Command(
                help="count M_j, M_j*, N_i(0) at init only (large d)",
                add_arguments=initstats.add_arguments,
                run=initstats.main,
            )
        }


EXPERIMENT = register(Liao())

__all__ = ["Config", "EXPERIMENT", "HParams", "Static"]
