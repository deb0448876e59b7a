"""The long-run part of `jaxcl report` (a run at one d through the T_3–T_4 window): the
observables over time with T_1, T_2 (per seed), T_3 and T_4 marked (trajectory.png and
trajectory.csv), the run's history (interruptions, resumes, wall time, checkpoint overhead, from
manifest.json), and, given a report.json of a sweep over smaller d (`--trend`), the final values
beside that sweep's fitted trend extrapolated to this d."""

from __future__ import annotations

import csv
import functools
import json
import math
import os
from collections import defaultdict

import numpy as np

from jaxcl.engine.protocol import Section
from jaxcl.experiments.liao.report.claims import QUANTITIES
from jaxcl.experiments.liao.report.plots import plt, styled
from jaxcl.fileio import read_jsonl
from jaxcl.tables import md as _md, mean_sd as _ms, num as _f

COLUMNS = [
    "cov_major",
    "cov_minor",
    "N_mean",
    "pure_neurons",
    "lucky_pure",
    "alive_frac",
    "noise_frac",
    "stage",
    "b_mean",
    "time",
]


def is_long(finals: list[dict]) -> bool:
    """One d, trained at least to T_3: the window run of sweeps/long-run.toml."""
    return len({f["d"] for f in finals}) == 1 and all(f["steps"] >= f["T3"] for f in finals)


def long_run_section(run_dir: str, finals: list[dict], trend: str | None = None) -> Section:
    """The section, with trajectory.png and trajectory.csv; its summary is report.json
    `long_run`.

    Args:
      run_dir: the run directory (results.jsonl, manifest.json).
      finals: the final jsons of the run (one d).
      trend: a report.json of a sweep over d whose trend the final values are set beside.
    """
    d = finals[0]["d"]
    by_cid = {f["config_id"]: f for f in finals}
    rows = [
        r
        for r in read_jsonl(os.path.join(run_dir, "results.jsonl"))
        if r.get("config_id") in by_cid
    ]
    rows.sort(key=lambda r: (r["seed"], r["step"]))
    marks = {
        "T1": [f["T1"] for f in finals if f["T1"] > 0],
        "T2": [f["T2"] for f in finals if f["T2"] > 0],
        "T3": [finals[0]["T3"]],
        "T4": [finals[0]["T4"]],
    }
    files = [
        ("trajectory.png", functools.partial(_plot, rows=rows, marks=marks, f0=finals[0])),
        ("trajectory.csv", functools.partial(_csv, rows=rows)),
    ]
    lines = [
        f"## The long run: d = {d} through T_3 and T_4",
        "",
        f"{len(finals)} config(s) (seeds {sorted(f['seed'] for f in finals)}), m = "
        f"{finals[0]['m']}, ratio {finals[0]['ratio']:g}, C_m {finals[0]['C_m']:g}, "
        f"η {finals[0]['eta']:g}, λ {finals[0]['lam']:.3g}, {finals[0]['steps']:,} steps. "
        f"T_1 = {_list(marks['T1'])}, T_2 = {_list(marks['T2'])} (per seed), "
        f"T_3 = d^1.01/η = {finals[0]['T3']:,.0f}, T_4 = d^1.99/η = {finals[0]['T4']:,.0f}. "
        "Every logged chunk is in trajectory.csv.",
        "",
        "![trajectory](trajectory.png)",
        "",
    ]
    hist = _history(run_dir)
    lines += hist["lines"]
    lines += [
        "Final values (seed mean ± sd):",
        "",
        "| majority coverage | minority coverage | mean \\|N_i(T)\\| | pure neurons | "
        "lucky and pure | alive | noise fraction |",
        "|---|---|---|---|---|---|---|",
    ]
    last = defaultdict(dict)
    for r in rows:
        last[r["config_id"]] = r
    ls = list(last.values())
    lines.append(
        " | ".join(["", *(_ms([r.get(c) for r in ls]) for c in COLUMNS[:7])]).strip() + " |"
    )
    lines.append("")
    out = {"d": d, "T": {k: v for k, v in marks.items()}, "history": hist["summary"]}
    if trend:
        out["trend"], more = _trend(trend, finals)
        lines += more
    return Section(lines, {"long_run": out}, files)


def _csv(path: str, rows: list[dict]) -> None:
    """Every logged chunk of the run: its results.jsonl rows, COLUMNS of each."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["config_id", "seed", "ratio", "step"] + COLUMNS)
        for r in rows:
            w.writerow(
                [r["config_id"], r["seed"], r["ratio"], r["step"]] + [r.get(c, "") for c in COLUMNS]
            )


def _list(v) -> str:
    return ", ".join(f"{x:,.0f}" for x in v) if v else "not reached"


def _history(run_dir: str) -> dict:
    """Interruptions, resumes, wall time and checkpoint overhead from the run's records."""
    path = os.path.join(run_dir, "manifest.json")
    runs = []
    if os.path.exists(path):
        with open(path) as f:
            runs = json.load(f).get("invocations", [])
    wall = sum(r.get("seconds", 0.0) for r in runs)
    saving = sum(r.get("checkpoint_seconds", 0.0) for r in runs)
    n_ckpt = sum(r.get("checkpoints", 0) for r in runs)
    stops = [r["outcome"] for r in runs if r.get("outcome") not in ("finished", "running")]
    resumes = [x["step"] for r in runs for x in r.get("resumed") or []]
    summary = {
        "invocations": len(runs),
        "stops": stops,
        "resumed_at": resumes,
        "seconds_recorded": wall,
        "checkpoints": n_ckpt,
        "checkpoint_seconds": saving,
    }
    if not runs:
        return {"lines": [], "summary": summary}
    lines = [
        f"History (from the run's own records, manifest.json `invocations`): "
        f"{len(runs)} `jaxcl run` invocations; stops: "
        f"{'; '.join(stops) if stops else 'none'}; resumed from the checkpoints at steps "
        f"{resumes or 'none'}. {wall:,.0f} s recorded by the invocations that ended "
        "cleanly (a killed one records none); "
        f"{n_ckpt} checkpoints took {saving:.1f} s "
        f"({100 * saving / wall if wall else math.nan:.2f}% of that time).",
        "",
    ]
    return {"lines": lines, "summary": summary}


def _trend(path: str, finals: list[dict]) -> tuple[list[dict], list[str]]:
    """The final values beside a d-sweep's trend (its report.json claims rows: seed means per
    d and the fitted exponent) extrapolated from its largest d to this d: (rows, lines)."""
    with open(path) as f:
        rep = json.load(f)
    liao = rep.get("results", {}).get("liao", {})
    rows = liao.get("trend") or liao.get("claims", [])  # seed means (reports before "trend")
    d = finals[0]["d"]
    key = (finals[0]["ratio"], finals[0]["C_m"])
    out = []
    lines = [
        f"Beside the trend of `{path}` (same ratio and C_m; its exponent fitted over its d, "
        f"extrapolated from its largest d to d = {d}):",
        "",
        "| quantity | trend d | trend exponent [95%] | extrapolated to d | measured here |",
        "|---|---|---|---|---|",
    ]
    for q in QUANTITIES:
        claim, label, get = q.key, q.label, q.get
        match = [
            r
            for r in rows
            if r["claim"] == claim and (r["ratio"], r["C_m"]) == key and r.get("means")
        ]
        here = float(np.mean([get(f["observables"]) for f in finals]))
        if not match:
            lines.append(f"| {_md(label)} | — | — | — | {_f(here)} |")
            continue
        r = match[0]
        means = {int(k): v for k, v in r["means"].items()}
        top = max(means)
        pred = (
            means[top] * (d / top) ** r["slope"]
            if math.isfinite(r["slope"]) and means[top] > 0
            else math.nan
        )
        out.append(
            {
                "claim": claim,
                "trend_d": sorted(means),
                "slope": r["slope"],
                "lo": r["lo"],
                "hi": r["hi"],
                "extrapolated": pred,
                "measured": here,
            }
        )
        lines.append(
            f"| {_md(label)} | {sorted(means)} | {_f(r['slope'])} [{_f(r['lo'])}, "
            f"{_f(r['hi'])}] | {_f(pred)} | {_f(here)} |"
        )
    lines.append("")
    return out, lines


@styled
def _plot(path: str, rows: list[dict], marks: dict, f0: dict) -> None:
    panels = [
        ("coverage", [("cov_major", "majority", "-"), ("cov_minor", "minority", "--")]),
        ("mean |N_i(t)|", [("N_mean", None, "-")]),
        ("neurons", [("pure_neurons", "pure", "-"), ("lucky_pure", "lucky and pure", "--")]),
        ("alive fraction", [("alive_frac", None, "-")]),
        ("noise fraction", [("noise_frac", None, "-")]),
        ("mean bias b", [("b_mean", None, "-")]),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    seeds = sorted({r["seed"] for r in rows})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, series) in zip(axes.flat, panels):
        for si, seed in enumerate(seeds):
            rs = [r for r in rows if r["seed"] == seed]
            steps = [r["step"] for r in rs]
            for key, label, style in series:
                ax.plot(
                    steps,
                    [r.get(key, np.nan) for r in rs],
                    style,
                    color=colors[si % 10],
                    lw=1,
                    label=f"seed {seed}" + (f" {label}" if label else ""),
                )
        for name, vals, ls in (
            ("T1", marks["T1"], ":"),
            ("T2", marks["T2"], "-."),
            ("T3", marks["T3"], "--"),
            ("T4", marks["T4"], "-"),
        ):
            if vals:
                ax.axvline(float(np.mean(vals)), color="grey", ls=ls, lw=0.8)
        ax.set_xscale("log")  # rows start at step log_every > 0
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(
        f"d = {f0['d']}, m = {f0['m']}, ratio {f0['ratio']:g}: grey lines at T_1 (:), "
        "T_2 (-.), T_3 (--), T_4 (-)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
