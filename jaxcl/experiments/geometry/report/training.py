"""The geometry report on trained runs past the paper: hard negatives; does training reach G*?"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from jaxcl.experiments.geometry.report.stats import (
    WITHIN,
    cos_of,
    dev,
    gram,
    loss_kwargs,
    mean_cell,
    minor_cos,
    share_cell,
)
from jaxcl.tables import md_row, mean_ci, num

LONGER = 4  # the factor of the longer runs that tell slow convergence from a stall


# ------------------------------------------------------------------ 2. hard negatives


def hard_part(finals, label, erank):
    if not any(f.get("hard_beta") for f in finals):
        return None
    groups = defaultdict(lambda: defaultdict(list))
    for f in finals:
        if f["p"] < f["n_major_classes"] + f["n_minor_classes"]:
            continue
        key = (
            f["n_major_classes"],
            f["n_minor_classes"],
            f["p"],
            label({**f, "hard_beta": 0}),
            f["negatives"],
            f["tau"],
            f["steps"],
            f["ratio"],
        )
        groups[key][float(f.get("hard_beta", 0.0))].append(f)
    groups = {g: bs for g, bs in groups.items() if len(bs) >= 2}
    if not groups:
        return None
    lines = [
        "## Hard negatives (hard_beta)",
        "",
        "G°(β) is the config's G_opt with hard_beta > 0: the rest point of training with "
        "the importance weights held constant in the gradient (jaxcl.geometry."
        "hard_equilibrium), not G*(β), the minimizer of the weighted F (its distance in the "
        "last column). Neural collapse: NC1 (median) and the minority cosine; dimensional "
        "collapse: the effective rank of Z (exp of the entropy of its covariance spectrum).",
        "",
        md_row(
            "classes",
            "p",
            "loss",
            "k",
            "τ",
            "ratio",
            "β",
            "seeds",
            "minority cos",
            "pred. cos G°(β)",
            "max|G−G°(β)|",
            "NC1",
            "eff. rank Z",
            "max|G−G*(β)|",
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    data, claims = [], []
    for g in sorted(groups):
        C1, C2, p, lab, k, tau, steps, ratio = g
        stats = {}
        for b in sorted(groups[g]):
            fs = groups[g][b]
            Gs = gram(tuple(fs[0]["pi"]), k, tau, None, b, tuple(loss_kwargs(fs[0]).items()))[0]
            dstar = [float(np.abs(np.asarray(f["observables"]["G"]) - Gs).max()) for f in fs]
            er = [erank[f["config_id"]] for f in fs]
            nc1 = [float(f["observables"]["nc1"]) for f in fs]
            cos = [cos_of(f) for f in fs]
            stats[b] = (er, nc1, cos)
            lines.append(
                md_row(
                    f"{C1}+{C2}",
                    str(p),
                    lab,
                    str(k),
                    f"{tau:g}",
                    f"{ratio:g}",
                    f"{b:g}",
                    str(len(fs)),
                    mean_cell(cos),
                    num(minor_cos(np.asarray(fs[0]["observables"]["G_opt"]), C1), 3),
                    mean_cell([dev(f) for f in fs]),
                    num(float(np.median(nc1)), 3),
                    mean_cell(er),
                    mean_cell(dstar),
                )
            )
            data.append(
                {
                    "classes": [C1, C2],
                    "p": p,
                    "loss": lab,
                    "k": k,
                    "tau": tau,
                    "ratio": ratio,
                    "hard_beta": b,
                    "minority_cos": cos,
                    "G_max_dev": [dev(f) for f in fs],
                    "nc1": nc1,
                    "effective_rank": er,
                    "G_max_dev_minimizer": dstar,
                }
            )
        b0, b1 = min(stats), max(stats)
        claims.append(_claim(f"{C1}+{C2} at ratio {ratio:g}", b0, b1, stats[b0], stats[b1]))
    yes = all(c[0] for c in claims)
    text = "; ".join(c[1] for c in claims)
    lines += [
        f"The claim 'hard negatives trade neural collapse for dimensional collapse' "
        f"(from β = 0 to the largest β, NC1 rises or the minority cosine falls, and the "
        f"effective rank of Z falls, both beyond their intervals): "
        f"{'yes' if yes else 'no'}. {text}.",
        "",
    ]
    answer = (
        f"**Hard negatives** trade neural collapse for dimensional collapse: "
        f"**{'yes' if yes else 'no'}**. {text}."
    )
    return answer, lines, "hard", data


def _apart(a, b) -> int:
    """+1 when b's interval lies above a's, −1 below, 0 when they overlap."""
    ma, la, ha = mean_ci(a)
    mb, lb, hb = mean_ci(b)
    la, ha = (la, ha) if math.isfinite(la) else (ma, ma)
    lb, hb = (lb, hb) if math.isfinite(lb) else (mb, mb)
    return 1 if lb > ha else (-1 if hb < la else 0)


def _claim(name, b0, b1, s0, s1) -> tuple[bool, str]:
    """(whether the trade holds, its sentence) between β = b0 and b1 for one group."""
    (er0, nc0, cos0), (er1, nc1, cos1) = s0, s1
    fin = lambda v: [x for x in v if math.isfinite(x)]  # noqa: E731
    less_nc = _apart(np.log(nc0), np.log(nc1)) > 0 or (
        bool(fin(cos0)) and _apart(fin(cos0), fin(cos1)) < 0
    )
    more_dc = _apart(fin(er0), fin(er1)) < 0
    word = {1: "rises", -1: "falls", 0: "does not move beyond its interval"}
    parts = [
        f"effective rank {mean_cell(er0)} → {mean_cell(er1)} ({word[_apart(fin(er0), fin(er1))]})",
        f"NC1 median {num(float(np.median(nc0)), 2)} → {num(float(np.median(nc1)), 2)} "
        f"({word[_apart(np.log(nc0), np.log(nc1))]})",
    ]
    if fin(cos0):
        parts.append(
            f"minority cos {mean_cell(cos0)} → {mean_cell(cos1)} "
            f"({word[_apart(fin(cos0), fin(cos1))]})"
        )
    return less_nc and more_dc, f"{name}, β {b0:g} → {b1:g}: " + ", ".join(parts)


# ------------------------------------------------------------------ 3. does training reach G*


def reach_part(finals, label, erank):
    plain = [
        f
        for f in finals
        if not f.get("hard_beta") and f["p"] >= f["n_major_classes"] + f["n_minor_classes"]
    ]

    def ident(f):
        return (
            f["n_major_classes"],
            f["n_minor_classes"],
            f["p"],
            label(f),
            f["negatives"],
            f["tau"],
            f["ratio"],
            f["samples_major"],
            f["seed"],
        )

    by = {(ident(f), f["steps"]): f for f in plain}
    longer = {key: by[(key[0], key[1] * LONGER)] for key in by if (key[0], key[1] * LONGER) in by}
    if not longer:
        return None
    short_steps = {s for (_, s) in longer}
    base = [f for f in plain if f["steps"] in short_steps]
    groups = defaultdict(list)
    for f in base:
        groups[(label(f), f["negatives"], f["tau"], f["steps"])].append(f)
    lines = [
        "## Does training reach G*?",
        "",
        f"Per loss, k and τ (every class count, ratio and seed at that training length): "
        f"seeds with max|G − G*| ≤ {WITHIN}. A run not within was rerun {LONGER}× longer "
        f"where the sweep has it: slow convergence when the longer run is within {WITHIN}, "
        "stalled when its max|G − G*| stays above half the short run's, still converging "
        "otherwise; the end point of a longer run still not within is classified below.",
        "",
        md_row(
            "loss",
            "k",
            "τ",
            "steps",
            "runs",
            f"within {WITHIN}",
            "not within: ratios",
            f"{LONGER}× longer: slow / stalled / still converging",
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    from jaxcl.experiments.geometry.report.rank import classify_miss

    # the end point of every longer run still not within, on the (convex) program
    data, tot_in, tot, kinds, worst, ends = [], 0, 0, defaultdict(list), [], {}
    for g in sorted(groups):
        fs = groups[g]
        n_in = sum(dev(f) <= WITHIN for f in fs)
        tot_in, tot = tot_in + n_in, tot + len(fs)
        worst.append((n_in / len(fs), g, n_in, len(fs)))
        out = [f for f in fs if dev(f) > WITHIN]
        cls = defaultdict(int)
        for f in out:
            lf = longer.get((ident(f), f["steps"]))
            if lf is None:
                continue
            c = _classify(dev(f), dev(lf))
            cls[c] += 1
            kinds[c].append((f, lf))
            if dev(lf) > WITHIN:
                ends[lf["config_id"]] = classify_miss(lf)
                cls["end: " + ends[lf["config_id"]]["verdict"]] += 1
        lines.append(
            md_row(
                g[0],
                str(g[1]),
                f"{g[2]:g}",
                str(g[3]),
                str(len(fs)),
                share_cell(n_in, len(fs)),
                ", ".join(f"{r:g}" for r in sorted({f["ratio"] for f in out})) or "—",
                f"{cls['slow']} / {cls['stalled']} / {cls['converging']}",
            )
        )
        data.append(
            {
                "loss": g[0],
                "k": g[1],
                "tau": g[2],
                "steps": g[3],
                "runs": len(fs),
                "within": n_in,
                "slow": cls["slow"],
                "stalled": cls["stalled"],
                "converging": cls["converging"],
                "end_points": {k[5:]: v for k, v in sorted(cls.items()) if k.startswith("end: ")},
            }
        )
    lines.append("")
    if kinds:
        lines += [
            f"Every run not within {WITHIN}, and where its {LONGER}× longer run is still not "
            "within, that run's end point (landscape.classify_end_point; p ≥ C, so no "
            "Hessian: the largest scaled gradient, the F gap to G*, how far a BFGS "
            "continuation moves G, and the verdict they give).",
            "",
            md_row(
                "run (not within)",
                "ratio",
                "max|G−G*|",
                f"{LONGER}× longer",
                "verdict",
                "longer: grad (scaled)",
                "F gap",
                "continuation moves",
                "end point",
            ),
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for c in ("slow", "stalled", "converging"):
            for f, lf in kinds[c]:
                e = ends.get(lf["config_id"])
                lines.append(
                    md_row(
                        f"{f['n_major_classes']}+{f['n_minor_classes']} {label(f)} "
                        f"k {f['negatives']} τ {f['tau']:g} s{f['seed']}",
                        f"{f['ratio']:g}",
                        num(dev(f), 3),
                        num(dev(lf), 3),
                        c,
                        *(
                            ("—",) * 4
                            if e is None
                            else (
                                num(e["grad_scaled"], 2),
                                num(e["F_gap"], 2),
                                num(e["moved"], 2),
                                e["verdict"],
                            )
                        ),
                    )
                )
        lines.append("")
    n_long = sum(len(v) for v in kinds.values())
    worst.sort()
    w = "; ".join(
        f"{g[0]}, k = {g[1]}, τ = {g[2]:g}: {share_cell(x, n)}" for _, g, x, n in worst[:3] if x < n
    )
    ratio_dev = [dev(lf) / dev(f) for v in kinds.values() for f, lf in v]
    end_kinds = defaultdict(int)
    for e in ends.values():
        end_kinds[e["verdict"]] += 1
    answer = (
        f"**Does training reach G\\*?** {share_cell(tot_in, tot)} runs end within {WITHIN} "
        f"of G* over {len(groups)} (loss, k, τ)"
        + (f"; the lowest shares: {w}" if w else "")
        + (
            f". Of the {n_long} runs not within that were rerun {LONGER}× longer, "
            f"{share_cell(len(kinds['slow']), n_long)} reach G* (slow convergence), "
            f"{share_cell(len(kinds['stalled']), n_long)} stay put (max|G − G*| above half "
            f"the short run's), {share_cell(len(kinds['converging']), n_long)} are still "
            f"converging; longer/short max|G − G*| {mean_cell(ratio_dev)}"
            + (
                f". The {len(ends)} longer runs still not within end at: "
                + ", ".join(f"{v} ({n})" for v, n in sorted(end_kinds.items()))
                + " (landscape.classify_end_point; with p ≥ C the program is convex and has "
                "no spurious minima)"
                if ends
                else ""
            )
            if n_long
            else ""
        )
        + "."
    )
    lines += [answer.split("** ", 1)[1], ""]
    return answer, lines, "reach", data


def _classify(short: float, long: float) -> str:
    if long <= WITHIN:
        return "slow"
    if long > 0.5 * short:
        return "stalled"
    return "converging"
