"""The pruning part of `jaxcl report` (SPEC §4): across prune modes and fractions α, the probe gap
Δ, majority/minority coverage, purity and noise over kept neurons, pure counts against Ω(m/d), and
per mode a verdict on whether minority-feature learning is restored (95% intervals over seeds)."""

from __future__ import annotations

import functools
import math
from collections import defaultdict

import numpy as np

from jaxcl.engine.protocol import Section
from jaxcl.experiments.liao.report import plots
from jaxcl.experiments.liao.report.losses import NEGLIGIBLE, verdict
from jaxcl.tables import mean_diff_ci, mean_sd as _ms, md_row as _md_row

RESTORED_COVERAGE = 0.5  # some neuron has cos² > 0.5 on the average minority feature
BASELINE = "off"  # the mode label of α = 0: no mask, whatever prune_mode says

# (key, label, direction better for the minority); the first two decide "restored"
VERDICT_METRICS = (
    ("cov_minor_kept", "minority coverage (kept neurons)", +1),
    ("probe_gap", "probe gap Δ", -1),
    ("pure_minor", "pure neurons per minority feature", +1),
    ("noise_frac_kept", "noise fraction (kept neurons)", -1),
)


def mode_label(f: dict) -> str:
    """A final json's pruning mode: "off" at α = 0, else prune_mode (neurons_once with its
    moment); run directories written before prune_mode existed are "neurons"."""
    if f["prune_fraction"] == 0:
        return BASELINE
    mode = f.get("prune_mode", "neurons")
    return f"{mode}@{f.get('prune_at') or 'T1'}" if mode == "neurons_once" else mode


def _minor_mean(f: dict, key: str) -> float:
    o = f["observables"]
    return float(np.mean(o[key][f["n_major"] :])) if f["n_major"] < f["d"] else math.nan


def _value(f: dict, key: str) -> float:
    if key == "pure_minor":
        return _minor_mean(f, "pure_counts")
    v = f["observables"].get(key)  # noise_frac_kept: absent in older run directories
    return math.nan if v is None else float(v)


def significant(d: tuple[float, float, float], direction: int) -> int:
    """+1: better for the minority (95% interval excludes 0 on the good side and |change| ≥
    NEGLIGIBLE), −1: worse by the same test, 0: neither (or too few seeds)."""
    mid, lo, hi = d
    if not math.isfinite(mid) or abs(mid) < NEGLIGIBLE or lo <= 0 <= hi:
        return 0
    return 1 if (mid > 0) == (direction > 0) else -1


def restoration(diffs: dict, cov_minor: float) -> int:
    """2 "yes": minority coverage over kept neurons rises and the probe gap shrinks, both beyond
    their 95% intervals, and minority coverage (seed mean `cov_minor`) reaches RESTORED_COVERAGE;
    1 "partly": at least one of the two improves that way and neither gets worse; 0 "no"."""
    s = [significant(diffs[k], sign) for k, _, sign in VERDICT_METRICS[:2]]
    if s == [1, 1] and cov_minor >= RESTORED_COVERAGE:
        return 2
    return 1 if 1 in s and -1 not in s else 0


WORDS = ("no", "partly", "yes")


def mode_verdicts(finals: list[dict]) -> list[dict]:
    """Per (ratio, d, mode): each α > 0 against α = 0 at the same ratio and d.

    Returns dicts with ratio, d, mode, level (0-2, the best over α), word, and per α the
    differences (mean, lo, hi) of VERDICT_METRICS' keys.
    """
    groups = _groups(finals)
    out = []
    for ratio, d in sorted({k[:2] for k in groups}):
        base = groups.get((ratio, d, BASELINE, 0.0))
        modes = sorted({k[2] for k in groups if k[:2] == (ratio, d) and k[2] != BASELINE})
        for mode in modes:
            entry = {
                "ratio": ratio,
                "d": d,
                "mode": mode,
                "level": None,
                "word": None,
                "by_alpha": {},
            }
            if base is None:
                out.append(entry)
                continue
            for a in sorted(k[3] for k in groups if k[:3] == (ratio, d, mode)):
                cur = groups[(ratio, d, mode, a)]
                diffs = {
                    k: mean_diff_ci([_value(f, k) for f in cur], [_value(f, k) for f in base])
                    for k, _, _ in VERDICT_METRICS
                }
                entry["by_alpha"][a] = diffs
                level = restoration(
                    diffs, float(np.nanmean([_value(f, "cov_minor_kept") for f in cur]))
                )
                if entry["level"] is None or level > entry["level"]:
                    entry["level"], entry["best_alpha"] = level, a
            entry["word"] = WORDS[entry["level"]]
            out.append(entry)
    return out


def _groups(finals: list[dict]) -> dict:
    """(ratio, d, mode label, α) -> finals; α = 0 configs of several modes (identical runs) are
    kept once per seed."""
    groups, seen = defaultdict(list), set()
    for f in finals:
        key = (f["ratio"], f["d"], mode_label(f), float(f["prune_fraction"]))
        if key[2] == BASELINE:
            if (key, f["seed"]) in seen:
                continue
            seen.add((key, f["seed"]))
        groups[key].append(f)
    return groups


def _statement(v: dict) -> str:
    where = f"ratio {v['ratio']:g}, d {v['d']}, {v['mode']}"
    if v["level"] is None:
        return f"{where}: no α = 0 baseline to compare with"
    parts = []
    for a, diffs in v["by_alpha"].items():
        parts.append(
            f"α = {a:g}: "
            + "; ".join(verdict(name, sign, diffs[k]) for k, name, sign in VERDICT_METRICS)
        )
    head = {
        2: f"**yes** (at α = {v['best_alpha']:g}: minority coverage over kept neurons rises "
        f"to {RESTORED_COVERAGE:g} or more and the probe gap shrinks, both changes beyond "
        "their 95% intervals)",
        1: f"**partly** (at α = {v['best_alpha']:g}: minority coverage over kept neurons or "
        "the probe gap improves beyond its 95% interval and neither gets worse, but "
        f"minority coverage stays below {RESTORED_COVERAGE:g} or only one of them moves)",
        0: "**no** (no α raises minority coverage or shrinks the probe gap beyond its 95% "
        "interval without worsening the other)",
    }[v["level"]]
    return f"{where}: {head}. " + " — ".join(parts) + "."


def pruning_section(finals: list[dict]) -> Section:
    """Table per (ratio, d, mode, α), a plot (pruning.png), and per mode a plain verdict; the
    verdicts are its summary, report.json `pruning`."""
    groups = _groups(finals)
    lines = [
        "## Pruning (SPEC §4)",
        "",
        "Seed mean ± sd. Modes: `neurons` masks the α smallest-‖w_i‖ neurons in the "
        "forward pass at every step (SPEC §4); `neurons_once@T1/T2` removes them for good "
        "when stage 1 (or 2) ends; `weights` masks the α smallest |w_ik| entries at every "
        "step; `off` is α = 0. Coverage, purity and noise are over the neurons the mode's "
        "final mask keeps (for `weights`: neurons with any kept entry; a pruned neuron only "
        "decays, so it keeps its random initial direction); `cov_minor (all)` counts every "
        "neuron, as SPEC §5 defines it. `pure/minor` is the mean over minority features of "
        "the number of neurons with N_i = {j}; `learners/minor` the same for neurons purely "
        "learning j (argmax, |cos| > 0.5); m/d is the Ω(m/d) scale of the claim.",
        "",
        _md_row(
            "ratio",
            "d",
            "mode",
            "α",
            "seeds",
            "Δ = probe_major − probe_minor",
            "probe_major",
            "probe_minor",
            "cov_major",
            "cov_minor",
            "purity",
            "noise",
            "cov_minor (all)",
            "pure/minor",
            "learners/minor",
            "m/d",
            "|M*| total (init)",
            "alive",
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cols = {
        "Δ probe gap": lambda f: f["observables"]["probe_gap"],
        "minority coverage (kept neurons)": lambda f: f["observables"]["cov_minor_kept"],
        "purity (kept neurons)": lambda f: f["observables"]["purity_kept"],
        "pure neurons per minority feature": lambda f: _minor_mean(f, "pure_counts"),
    }
    panels = {k: {"ylabel": k, "series": []} for k in cols}
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2] != BASELINE, k[2], k[3])):
        ratio, d, mode, a = key
        fs = groups[key]
        o = [f["observables"] for f in fs]
        lines.append(
            _md_row(
                f"{ratio:g}",
                str(d),
                mode,
                f"{a:g}",
                str(len(fs)),
                *[
                    _ms([x[k] for x in o])
                    for k in (
                        "probe_gap",
                        "probe_major",
                        "probe_minor",
                        "cov_major_kept",
                        "cov_minor_kept",
                        "purity_kept",
                    )
                ],
                _ms([_value(f, "noise_frac_kept") for f in fs]),
                _ms([x["cov_minor"] for x in o]),
                _ms([_minor_mean(f, "pure_counts") for f in fs]),
                _ms([_minor_mean(f, "pure_learner_counts") for f in fs]),
                f"{fs[0]['m'] / d:.3g}",
                _ms([x["lucky_total"] for x in o]),
                _ms([x["alive_frac"] for x in o]),
            )
        )
    for ratio, d, mode in sorted({k[:3] for k in groups if k[2] != BASELINE}):
        keys = [k for k in groups if k[:2] == (ratio, d) and k[2] in (mode, BASELINE)]
        alphas = sorted(k[3] for k in keys)
        for name, get in cols.items():
            vals = [[get(f) for f in groups[k]] for k in sorted(keys, key=lambda k: k[3])]
            panels[name]["series"].append(
                {
                    "label": f"{mode}, ratio {ratio:g}, d {d}",
                    "alpha": alphas,
                    "mean": [np.nanmean(v) if np.isfinite(v).any() else np.nan for v in vals],
                    "sd": [np.nanstd(v) if np.isfinite(v).any() else 0 for v in vals],
                }
            )
    verdicts = mode_verdicts(finals)
    lines.append("")
    lines += [
        "![pruning](pruning.png)",
        "",
        "**Does pruning restore minority-feature learning "
        "here?** Per mode, each α against α = 0 at the same ratio and d: seed mean "
        "difference [95% interval]; a change counts when its interval excludes 0 and it is "
        f'at least {NEGLIGIBLE:g}. "Restored" (yes) needs minority coverage over kept '
        f"neurons up to {RESTORED_COVERAGE:g} or more and the probe gap down; pure minority "
        "neurons and the noise fraction are reported beside them.",
        "",
    ]
    lines += [f"- {_statement(v)}" for v in verdicts] + [""]
    summary = [
        {k: v[k] for k in ("ratio", "d", "mode", "word")} | {"best_alpha": v.get("best_alpha")}
        for v in verdicts
    ]
    plot = functools.partial(plots.pruning, panels=list(panels.values()))
    return Section(lines, {"pruning": summary}, [("pruning.png", plot)])
