"""The geometry report's answers past the paper's assumptions (SPEC §10): the answers that open the
report and the sections they come from (p < C here, with where minority collapse exists; hard
negatives and whether training reaches G* in training.py)."""

from __future__ import annotations

import functools
from collections import defaultdict

import numpy as np

from jaxcl.engine.protocol import Section
from jaxcl.experiments.geometry.report import training
from jaxcl.experiments.geometry.report.stats import (
    MATCH,
    WITHIN,
    cos_of,
    effective_ranks,
    gram,
    loss_kwargs,
    mean_cell,
    minor_cos,
    range_cell,
    share_cell,
)
from jaxcl.tables import md_row, num

MAP_MAJOR, MAP_MINOR = (1, 2, 3, 4), (2, 3, 4)  # the ρ* map's class counts (InfoNCE, k 8, τ 0.5)
MAP_K, MAP_TAU = 8, 0.5


@functools.lru_cache(maxsize=None)
def _rho(n_major, n_minor, k, tau, rank, kw) -> float:
    from jaxcl.experiments.geometry.optimal import collapse_threshold

    return collapse_threshold(
        n_major, n_minor, k, tau, **dict(kw), rank=rank, n_starts=2 if rank is None else 4
    )


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
    for part in (_rank_part, training.hard_part, training.reach_part, _counts_part):
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


# ------------------------------------------------------------------ 1. p < C


def _rank_part(finals, label, erank):
    base = [f for f in finals if not f.get("hard_beta")]
    groups = defaultdict(lambda: defaultdict(list))
    for f in base:
        key = (
            f["n_major_classes"],
            f["n_minor_classes"],
            label(f),
            f["negatives"],
            f["tau"],
            f["steps"],
            f["ratio"],
        )
        groups[key][f["p"]].append(f)
    groups = {g: ps for g, ps in groups.items() if len(ps) >= 2 and min(ps) < g[0] + g[1]}
    if not groups:
        return None
    lines = [
        "## Representation dimension below the class count (p < C)",
        "",
        f"G*_p: the rank-≤ p optimum (jaxcl.geometry.optimal_gram(..., rank=p), 8 starts); "
        f"G*: the unconstrained one (rank in brackets). Within {WITHIN}: seeds with "
        "max|G − G*_p| ≤ that.",
        "",
        md_row(
            "classes",
            "loss",
            "k",
            "τ",
            "ratio",
            "p",
            "seeds",
            "max|G*_p−G*|",
            "max|G−G*_p|",
            f"within {WITHIN} of G*_p",
            "max|G−G*|",
            f"within {MATCH} of G*",
            "minority cos",
            "pred. cos G*_p (G*)",
            "eff. rank Z",
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    data, verdicts, rho_parts, at_rank = [], [], [], []
    for g in sorted(groups):
        C1, C2, lab, k, tau, steps, ratio = g
        C = C1 + C2
        f0 = groups[g][min(groups[g])][0]
        kw = tuple(loss_kwargs(f0).items())
        G_full, r_full = gram(tuple(f0["pi"]), k, tau, None, 0.0, kw)
        per_p = {}
        for p in sorted(groups[g]):
            fs = groups[g][p]
            Gp = gram(tuple(fs[0]["pi"]), k, tau, p, 0.0, kw)[0]
            dp = [float(np.abs(np.asarray(f["observables"]["G"]) - Gp).max()) for f in fs]
            dfull = [float(np.abs(np.asarray(f["observables"]["G"]) - G_full).max()) for f in fs]
            per_p[p] = (dp, dfull, float(np.abs(Gp - G_full).max()))
            er = [erank[f["config_id"]] for f in fs]
            lines.append(
                md_row(
                    f"{C1}+{C2}",
                    lab,
                    str(k),
                    f"{tau:g}",
                    f"{ratio:g}",
                    str(p) + (" (p < C)" if p < C else ""),
                    str(len(fs)),
                    num(per_p[p][2], 3),
                    mean_cell(dp),
                    share_cell(sum(d <= WITHIN for d in dp), len(fs)),
                    mean_cell(dfull),
                    share_cell(sum(d <= MATCH for d in dfull), len(fs)),
                    mean_cell([cos_of(f) for f in fs]),
                    f"{num(minor_cos(Gp, C1), 3)} ({num(minor_cos(G_full, C1), 3)})",
                    mean_cell(er),
                )
            )
            data.append(
                {
                    "classes": [C1, C2],
                    "loss": lab,
                    "k": k,
                    "tau": tau,
                    "ratio": ratio,
                    "p": p,
                    "G_max_dev_p": dp,
                    "G_max_dev_full": dfull,
                    "Gp_max_dev_full": per_p[p][2],
                    "minority_cos": [cos_of(f) for f in fs],
                    "effective_rank": er,
                }
            )
        verdicts.append(_rank_verdict(f"{C1}+{C2} at ratio {ratio:g}", r_full, per_p))
        at_rank.append(_holds_from(per_p) == r_full)
    lines.append("")
    for C1, C2, lab, k, tau in sorted({g[:5] for g in groups}):
        if C2 < 2 or not any(g[:5] == (C1, C2, lab, k, tau) and g[6] < 1 for g in groups):
            continue
        f0 = next(
            f
            for g in groups
            if g[:5] == (C1, C2, lab, k, tau)
            for fs in groups[g].values()
            for f in fs
        )
        ps = sorted({p for g in groups if g[:5] == (C1, C2, lab, k, tau) for p in groups[g]})
        rhos = [_rho(C1, C2, k, tau, p, tuple(loss_kwargs(f0).items())) for p in ps]
        rho_full = _rho(C1, C2, k, tau, None, tuple(loss_kwargs(f0).items()))
        moves = [p for p, r in zip(ps, rhos) if abs(r - rho_full) > 0.01 * max(rho_full, 1e-9)]
        rho_parts.append(
            f"ρ*_p for {C1}+{C2}, {lab}, k = {k}, τ = {tau:g} is "
            + ", ".join(f"{num(r, 3)} (p = {p})" for p, r in zip(ps, rhos))
            + f" against ρ* = {num(rho_full, 3)}: "
            + (f"it moves at p = {', '.join(map(str, moves))}" if moves else "it does not move")
        )
        data.append(
            {
                "classes": [C1, C2],
                "loss": lab,
                "k": k,
                "tau": tau,
                "rho_star_p": dict(zip(map(str, ps), rhos)),
                "rho_star": rho_full,
            }
        )
    lines += [
        f"The p ≥ C prediction (G = G*) holds at p when trained G is within {MATCH} of "
        f"G* in more than half the seeds. " + "; ".join(verdicts) + ".",
        "",
    ]
    if rho_parts:
        lines += ["; ".join(rho_parts) + " (jaxcl.geometry.collapse_threshold(..., rank=p)).", ""]
    answer = (
        f"**p < C**: the p ≥ C prediction (trained G within {MATCH} of G* in most seeds) "
        f"holds down to p = rank G* (not C) in {sum(at_rank)}/{len(at_rank)} cases: "
        + "; ".join(verdicts)
        + "."
        + (" " + "; ".join(rho_parts) + "." if rho_parts else "")
    )
    return answer, lines, "rank", data


def _holds_from(per_p) -> int | None:
    """The smallest p tried from which on trained G is within MATCH of G* in most seeds."""
    ok = {p: sum(d <= MATCH for d in v[1]) > len(v[1]) / 2 for p, v in per_p.items()}
    return next((p for p in sorted(ok) if all(ok[q] for q in ok if q >= p)), None)


def _rank_verdict(name, r_full, per_p) -> str:
    """Where the p ≥ C prediction stops holding for one (classes, loss, k, τ, ratio)."""
    p0, ps = _holds_from(per_p), sorted(per_p)
    below = [p for p in ps if p0 is None or p < p0]
    head = f"{name} (rank G* = {r_full}): "
    if not below:
        return head + f"holds at every p tried ({', '.join(map(str, ps))})"
    pb = max(below)
    dp, dfull, gap = per_p[pb]
    why = (
        f"the rank binds there (max|G*_p − G*| = {num(gap, 3)}) and trained G is within "
        f"{WITHIN} of G*_p in {share_cell(sum(d <= WITHIN for d in dp), len(dp))} seeds"
        if gap > WITHIN
        else f"there G*_p = G* (max|G*_p − G*| = {num(gap, 2)}), so the departure is training's, "
        "not the rank's"
    )
    return (
        head
        + (f"holds for p ≥ {p0}, " if p0 is not None else "holds at no p tried, ")
        + f"stops at p = {pb}: within {MATCH} of G* in "
        f"{share_cell(sum(d <= MATCH for d in dfull), len(dfull))} seeds, max|G − G*| "
        f"{range_cell(dfull)} over seeds; {why}"
    )


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
    rho = {(a, b): _rho(a, b, MAP_K, MAP_TAU, None, kw) for a in MAP_MAJOR for b in MAP_MINOR}
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
        rs = rho.get((a, b)) if (a, b) in rho else _rho(a, b, MAP_K, MAP_TAU, None, kw)
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
