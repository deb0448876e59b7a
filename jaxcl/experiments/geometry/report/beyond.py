"""The geometry report's answers past the paper's assumptions (SPEC §10): the answers that open the
report and the sections they come from (p < C here, with where minority collapse exists; hard
negatives and whether training reaches G* in training.py)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from jaxcl.engine.protocol import Section
from jaxcl.experiments.geometry.report import rank, training
from jaxcl.experiments.geometry.report.stats import (
    cos_of,
    effective_ranks,
    gram,
    mean_cell,
    minor_cos,
    rho_star,
    share_cell,
)
from jaxcl.tables import md_row, num

MAP_MAJOR, MAP_MINOR = (1, 2, 3, 4), (2, 3, 4)  # the ρ* map's class counts (InfoNCE, k 8, τ 0.5)
MAP_K, MAP_TAU = 8, 0.5


def _floor_cos(n_major, n_minor) -> float:
    """The minority cosine of G* at ρ = 1e-6 (InfoNCE, k 8, τ 0.5): below 1 where ρ* = 0."""
    w = np.concatenate([np.ones(n_major), np.full(n_minor, 1e-6)])
    G = gram(tuple(w / w.sum()), MAP_K, MAP_TAU, None, 0.0, _kw_infonce())[0]
    M = G[n_major:, n_major:]
    return float(M[~np.eye(n_minor, dtype=bool)].min())


def _kw_infonce():
    return tuple(dict(loss="infonce", alpha=1.0, beta=1.0, psi="log1p", phi="exp").items())


def report(run_dir, finals, label) -> tuple[Section, Section]:
    """The four questions, each only where the finals hold its data.

    Args:
      run_dir: the run directory (final/<id>.npz read for the effective rank of Z), or None.
      finals: the geometry final jsons.
      label: the loss label of a final (stats.loss_label: loss with its fields and hard β).

    Returns:
      (the answers, for the top of the report; the sections they come from, for its end, with
      their numbers as report.json `beyond`). Both empty where no question has its data.
    """
    erank = effective_ranks(run_dir, finals)
    answers, lines, summary = [], [], {}
    for part in (rank.rank_part, training.hard_part, training.reach_part, _counts_part):
        res = part(finals, label, erank)
        if res is not None:
            a, sec, key, data = res
            answers.append(a)
            lines += sec
            summary[key] = data
    if answers:
        answers = (
            [
                "## Answers past the paper's assumptions (SPEC §10)",
                "",
                "Seed means with their normal 95% interval in brackets; shares x/n with "
                "their Clopper–Pearson 95% interval. Details in the sections at the end.",
                "",
            ]
            + [f"- {a}" for a in answers]
            + [""]
        )
    return Section(answers), Section(lines, {"beyond": summary} if summary else {})


# ------------------------------------------------------- 4. where minority collapse exists


def _counts_part(finals, label, erank):
    plain = [
        f
        for f in finals
        if not f.get("hard_beta")
        and f["n_minor_classes"] >= 2
        and f["p"] >= f["n_major_classes"] + f["n_minor_classes"]
    ]
    counts = {(f["n_major_classes"], f["n_minor_classes"]) for f in plain}
    if len(counts) < 3:
        return None
    kw = _kw_infonce()
    rho = {(a, b): rho_star(a, b, MAP_K, MAP_TAU, None, kw) for a in MAP_MAJOR for b in MAP_MINOR}
    lines = [
        "## Where minority collapse exists",
        "",
        f"ρ* of the convex program (InfoNCE, k = {MAP_K}, τ = {MAP_TAU:g}) per majority × "
        "minority class count; in brackets the minority cosine of G* at ρ = 1e-6 (where "
        "ρ* = 0 it levels off below 1).",
        "",
        md_row("majority \\ minority", *map(str, MAP_MINOR)),
        "|---|" + "---|" * len(MAP_MINOR),
    ]
    for a in MAP_MAJOR:
        lines.append(
            md_row(
                str(a), *(f"{num(rho[(a, b)], 3)} ({num(_floor_cos(a, b), 3)})" for b in MAP_MINOR)
            )
        )
    lines.append("")
    yes = sorted(c for c, r in rho.items() if r > 0)
    no = sorted(c for c, r in rho.items() if r <= 0)
    by_major = "; ".join(
        f"{a} majority: " + (", ".join(str(b) for b in MAP_MINOR if rho[(a, b)] > 0) or "none")
        for a in MAP_MAJOR
    )
    only_two = bool(yes) and all(b == 2 for _, b in yes)
    trained = defaultdict(list)
    for f in plain:
        if (
            (f["loss"], f["negatives"], f["tau"]) == ("infonce", MAP_K, MAP_TAU)
            and (f["n_major_classes"], f["n_minor_classes"]) != (2, 2)
            and f["ratio"] < 1
        ):
            trained[(f["n_major_classes"], f["n_minor_classes"], f["ratio"])].append(f)
    lines += [
        md_row(
            "trained classes",
            "ratio",
            "ρ*",
            "seeds",
            "minority cos",
            "pred. cos",
            "collapsed (cos ≥ 0.99)",
            "predicted",
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    checks = []
    for a, b, r in sorted(trained):
        fs = trained[(a, b, r)]
        rs = rho.get((a, b)) if (a, b) in rho else rho_star(a, b, MAP_K, MAP_TAU, None, kw)
        pred = minor_cos(np.asarray(fs[0]["observables"]["G_opt"]), a)
        coll = sum(cos_of(f) >= 0.99 for f in fs)
        want = "yes" if pred >= 1 - 1e-4 else "no"
        lines.append(
            md_row(
                f"{a}+{b}",
                f"{r:g}",
                num(rs, 3),
                str(len(fs)),
                mean_cell([cos_of(f) for f in fs]),
                num(pred, 3),
                share_cell(coll, len(fs)),
                want,
            )
        )
        checks.append(
            f"{a}+{b} at ratio {r:g} (ρ* = {num(rs, 3)}): minority cos "
            f"{mean_cell([cos_of(f) for f in fs])} against {num(pred, 3)} predicted, "
            f"collapsed in {share_cell(coll, len(fs))} seeds (predicted: {want})"
        )
    lines.append("")
    fmt = lambda cs: ", ".join(f"{a}+{b}" for a, b in cs) or "none"  # noqa: E731
    answer = (
        f"**Where minority collapse exists** (InfoNCE, k = {MAP_K}, τ = {MAP_TAU:g}): "
        f"ρ* > 0 for {fmt(yes)}; ρ* = 0 (no collapse at any ratio ≥ 1e-6) for {fmt(no)}. "
        + f"Minority counts that collapse, by majority count: {by_major}. "
        + (
            "The threshold is a property of two minority classes only. "
            if only_two
            else "The threshold is not a property of two minority classes only. "
            if yes
            else ""
        )
        + ("Trained: " + "; ".join(checks) + "." if checks else "")
    )
    lines += [answer.split("): ", 1)[1], ""]
    return (
        answer,
        lines,
        "counts",
        {
            "rho_star": {f"{a}+{b}": r for (a, b), r in rho.items()},
            "trained": [
                {"classes": [a, b], "ratio": r, "minority_cos": [cos_of(f) for f in fs]}
                for (a, b, r), fs in sorted(trained.items())
            ],
        },
    )
