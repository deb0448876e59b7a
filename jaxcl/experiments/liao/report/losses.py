"""The loss-family part of Liao's report (SPEC §8): per ratio, minority coverage, the probe gap
and the alive fraction of each loss against InfoNCE, with 95% intervals over seeds."""

from __future__ import annotations

import functools
import math
import re
from collections import defaultdict

import numpy as np

from jaxcl.engine.protocol import Section
from jaxcl.experiments.liao.report.plots import COLORS, MARKERS, plt, styled
from jaxcl.tables import ci_cell, mean_ci, mean_diff_ci, md_row

# (observable key, label, which direction is "better for the minority")
METRICS = (
    ("cov_minor", "minority coverage", +1),
    ("probe_gap", "probe gap Δ", -1),
    ("alive_frac", "alive fraction", +1),
    ("cov_major", "majority coverage", +1),
    ("probe_minor", "minority probe accuracy", +1),
)


def loss_label(f: dict) -> str:
    """A final json's loss, with its parameters (configs written before the family: InfoNCE)."""
    loss = f.get("loss", "infonce")
    if loss == "balanced":
        return f"balanced(α={f['loss_alpha']:g}, β={f['loss_beta']:g})"
    if loss == "generalized":
        return f"generalized(ψ={f['loss_psi']}, φ={f['loss_phi']})"
    return loss


NEGLIGIBLE = 0.01  # a change in a share (coverage, accuracy, alive) this small is no finding


def verdict_word(d: tuple[float, float, float]) -> str:
    """The verdict on a change (mean, lo, hi): "raises"/"lowers" when its 95% interval excludes
    0 and it is at least NEGLIGIBLE, "negligible" when it is smaller, else "none"."""
    mid, lo, hi = d
    if not math.isfinite(mid):
        return "too few seeds"
    if lo > 0 or hi < 0:
        return "negligible" if abs(mid) < NEGLIGIBLE else ("raises" if mid > 0 else "lowers")
    return "none"


def verdict(name: str, direction: int, d: tuple[float, float, float]) -> str:
    """`verdict_word` in a sentence: 'raises X by …' / 'lowers X by …', 'a negligible change
    in X', or 'no detectable change in X'."""
    mid, lo, hi = d
    word = verdict_word(d)
    if word == "too few seeds":
        return f"{name}: too few seeds to compare"
    if word == "negligible":
        return f"a negligible change in {name} ({mid:+.2g} [{lo:+.2g}, {hi:+.2g}], below {NEGLIGIBLE:g})"
    if word in ("raises", "lowers"):
        good = (mid > 0) == (direction > 0)
        return (
            f"{word} {name} by {abs(mid):.3g} [{lo:+.3g}, {hi:+.3g}]"
            f" ({'better' if good else 'worse'} for the minority)"
        )
    return f"no detectable change in {name} ({mid:+.3g} [{lo:+.3g}, {hi:+.3g}])"


def loss_section(finals: list[dict]) -> Section:
    """Table per (d, ratio, loss), a plot (losses.png), and one plain statement per loss and
    ratio. Its summary, report.json `losses`, holds the table's rows, each loss's with its
    change against InfoNCE (`vs_infonce`: mean, lo, hi and `verdict_word` per observable)."""
    groups = defaultdict(list)
    etas = [f.get("eta", 1.0) for f in finals]
    eta_ref = max(set(etas), key=lambda e: (etas.count(e), -e))  # the losses' common step
    for f in finals:
        eta = f.get("eta", 1.0)
        lab = loss_label(f) + ("" if eta == eta_ref else f" at η={eta:g}")
        groups[(f["d"], f["ratio"], f["prune_fraction"], lab)].append(f["observables"])
    labels = sorted({k[3] for k in groups}, key=lambda s: (s != "infonce", s))
    lines = [
        "## The loss family (SPEC §8)",
        "",
        "Seed mean [95% interval over seeds] of the final observables, per loss. "
        "`balanced(α, β)` weighs attraction (α) against repulsion (β): "
        "ℓ = −α s⁺/τ + β log(e^{s⁺/τ} + Σ_i e^{s_i/τ}); α = β = 1 is InfoNCE.",
        "",
        md_row("d", "ratio", "α_prune", "loss", "seeds", *[m[1] for m in METRICS]),
        "|---|---|---|---|---|" + "---|" * len(METRICS),
    ]
    table, rows = [], {}
    for (d, ratio, a, lab), obs in sorted(
        groups.items(), key=lambda kv: (kv[0][:3], labels.index(kv[0][3]))
    ):
        lines.append(
            md_row(
                str(d),
                f"{ratio:g}",
                f"{a:g}",
                lab,
                str(len(obs)),
                *[ci_cell([o[k] for o in obs]) for k, _, _ in METRICS],
            )
        )
        table.append(
            {
                "d": d,
                "ratio": ratio,
                "prune_fraction": a,
                "loss": lab,
                "seeds": len(obs),
                **{
                    k: dict(zip(("mean", "lo", "hi"), mean_ci([o[k] for o in obs])))
                    for k, _, _ in METRICS
                },
            }
        )
        rows[(d, ratio, a, lab)] = table[-1]
    lines += [
        "",
        "**What it shows** (each loss against InfoNCE at the same d, ratio and "
        "pruning; a change counts when its 95% interval excludes 0 and it is at least "
        f"{NEGLIGIBLE:g}):",
        "",
    ]
    for d, ratio, a in sorted({k[:3] for k in groups}):
        base = groups.get((d, ratio, a, "infonce"))
        if base is None:
            continue
        for lab in labels[1:]:
            obs = groups.get((d, ratio, a, lab))
            if obs is None:
                continue
            diffs = {
                k: mean_diff_ci([o[k] for o in obs], [o[k] for o in base])
                for k, _, _ in METRICS[:3]
            }
            rows[(d, ratio, a, lab)]["vs_infonce"] = {
                k: {**dict(zip(("mean", "lo", "hi"), x)), "verdict": verdict_word(x)}
                for k, x in diffs.items()
            }
            parts = [verdict(name, sign, diffs[k]) for k, name, sign in METRICS[:3]]
            lines.append(
                f"- d {d}, ratio {ratio:g}"
                + (f", α_prune {a:g}" if a else "")
                + f", {lab}: "
                + "; ".join(parts)
                + "."
            )
    lines.append("")
    lines += _step_control(groups, rows, eta_ref)
    lines += ["![losses](losses.png)", ""]
    plot = functools.partial(_plot, groups=groups, labels=labels)
    return Section(lines, {"losses": table}, [("losses.png", plot)])


def _step_control(groups: dict, rows: dict, eta_ref: float) -> list[str]:
    """balanced(α, β) with β > α against InfoNCE at η·β/α: β scales the repulsive gradient, so
    part of a balanced loss's effect may be a larger step. Each such loss's change in minority
    coverage against that step-matched InfoNCE, as lines, and in `rows` (this section's own
    table) as `vs_step_control`."""
    found = []
    for (d, ratio, a, lab), obs in sorted(groups.items()):
        m = re.fullmatch(r"balanced\(α=([\d.e+-]+), β=([\d.e+-]+)\)", lab)
        if not m or float(m.group(2)) <= float(m.group(1)):
            continue
        eta = eta_ref * float(m.group(2)) / float(m.group(1))
        ctrl = groups.get((d, ratio, a, f"infonce at η={eta:g}"))
        if ctrl is None:
            continue
        diffs = {
            k: mean_diff_ci([o[k] for o in obs], [o[k] for o in ctrl]) for k, _, _ in METRICS[:3]
        }
        vs_base = rows[(d, ratio, a, lab)].get("vs_infonce", {}).get("cov_minor", {})
        rows[(d, ratio, a, lab)]["vs_step_control"] = {
            "eta": eta,
            **{
                k: {**dict(zip(("mean", "lo", "hi"), x)), "verdict": verdict_word(x)}
                for k, x in diffs.items()
            },
        }
        gain = vs_base.get("verdict") == "raises"
        word = verdict_word(diffs["cov_minor"])
        if gain:
            tail = (
                "the gain over InfoNCE **survives** the step control"
                if word == "raises"
                else "the gain over InfoNCE is **not shown to survive** the step control"
            )
        else:
            tail = "no minority gain over InfoNCE to explain"
        found.append(
            f"- d {d}, ratio {ratio:g}, {lab} against InfoNCE at η = {eta:g}: "
            + "; ".join(verdict(name, sign, diffs[k]) for k, name, sign in METRICS[:3])
            + f": {tail}."
        )
    if not found:
        return []
    return (
        [
            "**The step control** (β > α also scales the repulsive gradient by β/α: each "
            "such balanced loss against InfoNCE trained with its step multiplied by β/α):",
            "",
        ]
        + found
        + [""]
    )


@styled
def _plot(path: str, groups: dict, labels: list[str]) -> None:
    keys = sorted({k[:3] for k in groups})
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), squeeze=False, constrained_layout=True)
    for ax, (k, name, _) in zip(axes[0], METRICS[:3]):
        for li, lab in enumerate(labels):
            xs, ys, lo, hi = [], [], [], []
            for d, ratio, a in keys:
                obs = groups.get((d, ratio, a, lab))
                if not obs:
                    continue
                mid, low, high = mean_ci([o[k] for o in obs])
                xs.append(ratio)
                ys.append(mid)
                lo.append(mid - low if math.isfinite(low) else 0.0)
                hi.append(high - mid if math.isfinite(high) else 0.0)
            off = (li - (len(labels) - 1) / 2) * 0.012  # side by side, not on top of each other
            ax.errorbar(
                np.asarray(xs) + off,
                ys,
                yerr=[lo, hi],
                color=COLORS[li % len(COLORS)],
                marker=MARKERS[li % len(MARKERS)],
                capsize=2,
                lw=1.2,
                label=lab,
            )
        ax.set_xlabel("ε_min/ε_max")
        ax.set_title(name, fontsize=10)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle("seed mean and 95% interval per loss", fontsize=9)
    fig.savefig(path, dpi=150)
    plt.close(fig)
