"""The stage-times section of Liao's report: T_1, T_2 and the alive fraction against SPEC §6's
scales, and the configs that end with most neurons dead."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from jaxcl.engine.protocol import Section
from jaxcl.experiments.liao import theory
from jaxcl.experiments.liao.report.losses import loss_label
from jaxcl.tables import mean_sd as _ms, num as _f


def stages_section(finals: list[dict]) -> Section:
    """T_1, T_2 and alive fraction per (d, ratio, α) against SPEC §6's scales."""
    lines = [
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
        groups[(f["d"], f["m"], f["ratio"], f["prune_fraction"], loss_label(f), f["eta"])].append(f)
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
    return Section(lines)
