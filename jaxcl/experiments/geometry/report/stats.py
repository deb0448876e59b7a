"""Shared pieces of the geometry report: its bars (MATCH, WITHIN, COLLAPSED), loss labels, share
intervals, solves of the convex program, table cells."""

from __future__ import annotations

import functools
import math
import os

import numpy as np

from jaxcl.tables import ci_cell, clopper_pearson, num

MATCH = 0.05  # max|G − G*| at or below which trained geometry "matches" its prediction
WITHIN = 0.02  # the tighter bar at which a trained run "reaches" G* (or G*_p): SPEC §10's answers
COLLAPSED = 0.99  # a minority cosine at or above this is read as collapsed


def loss_label(f: dict) -> str:
    """A final json's loss with its parameters, and its hard-negative β where it has one."""
    hard = f", hard β={f['hard_beta']:g}" if f.get("hard_beta") else ""  # SPEC §10
    if f["loss"] == "balanced":
        return f"balanced(α={f['loss_alpha']:g}, β={f['loss_beta']:g}){hard}"
    if f["loss"] == "generalized":
        return f"generalized(ψ={f['loss_psi']}, φ={f['loss_phi']}){hard}"
    return f["loss"] + hard


def share_cell(x: int, n: int) -> str:
    """'x/n [lo, hi]' with the Clopper–Pearson 95% interval of the share."""
    if n == 0:
        return "—"
    lo, hi = clopper_pearson(x, n)
    return f"{x}/{n} [{lo:.2f}, {hi:.2f}]"


def loss_kwargs(f: dict) -> dict:
    """A final's loss fields as optimal_gram's keyword arguments."""
    return dict(
        loss=f["loss"],
        alpha=f["loss_alpha"],
        beta=f["loss_beta"],
        psi=f["loss_psi"],
        phi=f["loss_phi"],
    )


@functools.lru_cache(maxsize=None)
def gram(pi, k, tau, rank, hard_beta, kw) -> tuple[np.ndarray, int]:
    """(G*_p, or G* with rank None, or G*(β) with hard_beta; its numerical rank)."""
    from jaxcl.experiments.geometry.optimal import optimal_gram

    G = optimal_gram(np.asarray(pi), k, tau, **dict(kw), n_starts=8, rank=rank, hard_beta=hard_beta)
    return G, int(np.sum(np.linalg.eigvalsh(G) > 1e-6))


@functools.lru_cache(maxsize=None)
def rho_star(n_major, n_minor, k, tau, rank, kw) -> float:
    """ρ* (rank None) or ρ*_p of jaxcl.geometry.collapse_threshold at its default 1e-7 relative
    tolerance (4 starts per solve with a rank bound, where the program is not convex)."""
    from jaxcl.experiments.geometry.optimal import collapse_threshold

    return collapse_threshold(
        n_major, n_minor, k, tau, **dict(kw), rank=rank, n_starts=2 if rank is None else 4
    )


def minor_cos(G: np.ndarray, n_major: int) -> float:
    """Mean G_cc' over pairs of minority classes (NaN with fewer than two)."""
    C = G.shape[0]
    v = [G[i, j] for i in range(n_major, C) for j in range(i + 1, C)]
    return float(np.mean(v)) if v else math.nan


def pred_cos(f: dict) -> float:
    """A final's predicted minority cosine: minor_cos of its G* (`G_opt`)."""
    return minor_cos(np.asarray(f["observables"]["G_opt"], float), f["n_major_classes"])


def effective_ranks(run_dir: str | None, finals) -> dict:
    """config_id -> effective rank of its final Z (final/<id>.npz; NaN where there is none)."""
    from jaxcl.experiments.geometry.observables import effective_rank

    out = {}
    for f in finals:
        path = os.path.join(run_dir or "", "final", f"{f['config_id']}.npz")
        if run_dir and os.path.exists(path):
            with np.load(path) as z:
                out[f["config_id"]] = effective_rank(z["Z"]) if "Z" in z else math.nan
        else:
            out[f["config_id"]] = math.nan
    return out


def dev(f) -> float:
    """A final's max|G − G_opt|."""
    return float(f["observables"]["G_max_dev"])


def cos_of(f) -> float:
    """A final's minority cosine (NaN where it has none)."""
    c = f["observables"]["minority_cos"]
    return math.nan if c is None else float(c)


def mean_cell(v, nd=3) -> str:
    """'mean [lo, hi]' over the finite values (tables.ci_cell)."""
    return ci_cell([x for x in v if x is not None and math.isfinite(x)], nd)


def range_cell(v, nd=3) -> str:
    """'lo–hi' of the finite values: the spread of a non-negative quantity whose seeds end at
    different points (a normal interval there can reach below 0)."""
    v = [x for x in v if x is not None and math.isfinite(x)]
    return f"{num(min(v), nd)}–{num(max(v), nd)}" if v else "—"
