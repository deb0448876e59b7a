"""The trained-attention section of Liao's report: frozen against trained W_Q, W_K, W_V (SPEC §2's
extension), side by side where both were run."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from jaxcl.engine.protocol import Section
from jaxcl.tables import ci_cell, md_row as _md_row


ATTENTION_METRICS = (
    ("cov_major", "majority coverage"),
    ("cov_minor", "minority coverage"),
    ("probe_gap", "probe gap Δ"),
    ("pure_major", "pure neurons per majority feature"),
    ("pure_minor", "pure neurons per minority feature"),
    ("alive_frac", "alive"),
)


def attention_section(finals: list[dict]) -> Section:
    """Frozen (W_Q = W_K = W_V = I) against trained attention (SPEC §2's extension), side by side
    per (d, ratio, α), where both were run: seed mean [95% interval]."""

    def value(f, key):
        o = f["observables"]
        if key in ("pure_major", "pure_minor"):
            counts = (
                o["pure_counts"][: f["n_major"]]
                if key == "pure_major"
                else o["pure_counts"][f["n_major"] :]
            )
            return float(np.mean(counts)) if counts else math.nan
        return o[key]

    groups = defaultdict(list)
    for f in finals:
        groups[(f["d"], f["ratio"], f["prune_fraction"], bool(f.get("train_attention")))].append(f)
    lines = [
        "## Trained attention (SPEC §2's extension)",
        "",
        "`train_attention = true` trains W_Q, W_K, W_V from I with the same GD step as W (no "
        "weight decay on them: eq. 2 regularizes W alone); coverage and pure counts read the "
        "effective weights W W_Vᵀ. Seed mean [95% interval over seeds], frozen → trained. "
        "The other sections below use the frozen-attention configs only.",
        "",
        _md_row("d", "ratio", "α_prune", "seeds", *[m[1] for m in ATTENTION_METRICS]),
        "|---|---|---|---|" + "---|" * len(ATTENTION_METRICS),
    ]
    for d, ratio, a in sorted({k[:3] for k in groups}):
        off, on = groups.get((d, ratio, a, False)), groups.get((d, ratio, a, True))
        if not off or not on:
            continue
        lines.append(
            _md_row(
                str(d),
                f"{ratio:g}",
                f"{a:g}",
                f"{len(off)} / {len(on)}",
                *[
                    f"{ci_cell([value(f, k) for f in off])} → {ci_cell([value(f, k) for f in on])}"
                    for k, _ in ATTENTION_METRICS
                ],
            )
        )
    lines.append("")
    return Section(lines)
