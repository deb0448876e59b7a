"""Init-only mode: the sizes of M_j (eq. 16), M_j* (eq. 17) and N_i(0) need no training, so they
are counted at large d (up to d = 4096, m = d^1.5 = 262144) in neuron chunks, never holding m × d1.

Only A_i(0) = Mᵀ w_i(0) enters eqs. 16–17. For the `identity` dictionary A_i(0) is the first d
coordinates of w_i(0); for `qr` it is Mᵀ w_i(0), which has the same law N(0, σ0² I_d) by rotation
invariance of the Gaussian. The thresholds are scale-free in σ0. So each chunk draws A directly as
N(0, I_d) rows (the other d1 − d coordinates never enter), from keys folded out of
(seed, init stream, chunk index): a different draw from a training run's w0, with the same law.
"""

from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.experiments.liao import observables, theory

_INIT = 1  # the init stream id of train.py
_BUDGET = 1 << 23  # elements of (seeds, ratios, chunk, d) held at once
N0_BINS = 64  # histogram of |N_i(0)|: bins 0 .. N0_BINS−1 (the last one collects the rest)


def _chunk_counts(a_CxD, valid_C, c1, c2):
    """Per-feature counts of M_j, M_j*, and N_i(0) = {j}, plus the |N_i(0)| histogram."""
    ord_CxD = observables.ordinary_mask(a_CxD, c2) & valid_C[:, None]  # eq. 16
    lucky_CxD = observables.lucky_mask(a_CxD, c1, c2) & valid_C[:, None]  # eq. 17
    single_CxD = observables.pure_mask(ord_CxD)
    n0_C = jnp.sum(ord_CxD, axis=1, dtype=jnp.int32)
    hist_H = (
        jnp.zeros(N0_BINS, jnp.int32)
        .at[jnp.minimum(n0_C, N0_BINS - 1)]
        .add(valid_C.astype(jnp.int32))
    )
    n0sq = jnp.sum(n0_C.astype(jnp.float32) ** 2)  # Σ_i |N_i(0)|², for the variance
    return (
        jnp.sum(ord_CxD, axis=0, dtype=jnp.int32),
        jnp.sum(lucky_CxD, axis=0, dtype=jnp.int32),
        jnp.sum(single_CxD, axis=0, dtype=jnp.int32),
        hist_H,
        n0sq,
    )


def _one_seed(d: int, m: int, chunk: int, seed, c1_R, c2_R):
    """Counts for one seed and every ratio, accumulated over ceil(m / chunk) neuron chunks."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), _INIT)
    n_chunks = -(-m // chunk)
    per_ratio = jax.vmap(_chunk_counts, in_axes=(None, None, 0, 0))

    def body(k, acc):
        a_CxD = jax.random.normal(jax.random.fold_in(key, k), (chunk, d))
        valid_C = k * chunk + jnp.arange(chunk) < m
        return jax.tree.map(jnp.add, acc, per_ratio(a_CxD, valid_C, c1_R, c2_R))

    n_r = c1_R.shape[0]
    zeros = (jnp.zeros((n_r, d), jnp.int32),) * 3 + (
        jnp.zeros((n_r, N0_BINS), jnp.int32),
        jnp.zeros(n_r, jnp.float32),
    )
    return jax.lax.fori_loop(0, n_chunks, body, zeros)


@functools.lru_cache(maxsize=None)
def _compiled(d: int, m: int, n_seeds: int, n_ratios: int):
    chunk = int(max(1, min(m, _BUDGET // (d * n_seeds * n_ratios))))
    fn = functools.partial(_one_seed, d, m, chunk)
    return jax.jit(jax.vmap(fn, in_axes=(0, None, None)))


def count(d: int, m: int, seeds: list[int], ratios: list[float], gamma_c0: float = 5e-4):
    """Init counts for every (seed, ratio) at one (d, m).

    Returns:
      numpy arrays ordinary, lucky, single of shape (seeds, ratios, d), N0_hist of shape
      (seeds, ratios, N0_BINS) (last bin: N0_BINS − 1 or more) and Σ_i |N_i(0)|² (seeds, ratios).
    """
    c = np.array([theory.thresholds(r, gamma_c0) for r in ratios], np.float32)
    out = _compiled(d, m, len(seeds), len(ratios))(np.asarray(seeds, np.int32), c[:, 0], c[:, 1])
    return [np.asarray(x) for x in out]


def run(
    ds: list[int],
    C_m: float,
    ratios: list[float],
    seeds: list[int],
    gamma_c0: float = 5e-4,
    log=print,
) -> dict:
    """Counts at init over a d grid (m = round(d^C_m)) with finite-d expectations (theory.py).

    Returns:
      {"C_m", "gamma_c0", "records": [...one per (d, seed, ratio)...],
       "expected": [...one per (d, ratio)...], "seconds": {d: wall time}}.
    """
    records, expected, seconds = [], [], {}
    for d in ds:
        m = round(d**C_m)
        t0 = time.perf_counter()
        ordinary, lucky, single, hist, n0sq = count(d, m, seeds, ratios, gamma_c0)
        seconds[d] = time.perf_counter() - t0
        log(
            f"jaxcl init-stats: d={d} m={m}: {len(seeds)} seeds x {len(ratios)} ratios "
            f"in {seconds[d]:.1f}s"
        )
        for ri, r in enumerate(ratios):
            for si, s in enumerate(seeds):
                h = hist[si, ri]
                records.append(
                    {
                        "d": d,
                        "m": m,
                        "ratio": r,
                        "seed": s,
                        "ordinary_counts": ordinary[si, ri].tolist(),
                        "lucky_counts": lucky[si, ri].tolist(),
                        "single_counts": single[si, ri].tolist(),
                        "N0_hist": h.tolist(),
                        "N0_mean": float(ordinary[si, ri].sum() / m),  # Σ_j |M_j| = Σ_i |N_i(0)|
                        "N0_sq_mean": float(n0sq[si, ri] / m),
                    }
                )
            e = theory.expected_counts(d, m, r, gamma_c0)
            expected.append(
                {
                    "d": d,
                    "m": m,
                    "ratio": r,
                    **e,
                    "omega1": theory.omega1(C_m, r, gamma_c0),
                    "omega2": theory.omega2(C_m, r, gamma_c0),
                }
            )
    return {
        "C_m": C_m,
        "gamma_c0": gamma_c0,
        "records": records,
        "expected": expected,
        "seconds": seconds,
    }


def csv_rows(stats: dict) -> list[dict]:
    """One row per (d, ratio, seed): mean counts over features next to their expectations."""
    exp = {(e["d"], e["ratio"]): e for e in stats["expected"]}
    rows = []
    for r in stats["records"]:
        e = exp[(r["d"], r["ratio"])]
        rows.append(
            {
                "d": r["d"],
                "m": r["m"],
                "ratio": r["ratio"],
                "seed": r["seed"],
                "ordinary_mean": float(np.mean(r["ordinary_counts"])),
                "E_ordinary": e["ordinary"],
                "lucky_mean": float(np.mean(r["lucky_counts"])),
                "E_lucky": e["lucky"],
                "single_mean": float(np.mean(r["single_counts"])),
                "E_single": e["single"],
                "N0_mean": r["N0_mean"],
                "E_N0": e["N0"],
            }
        )
    return rows


def write(stats: dict, out_dir: str) -> tuple[str, str]:
    """init_stats.json and init_stats.csv in out_dir (atomic writes)."""
    import os

    from jaxcl.fileio import write_json, write_text

    os.makedirs(out_dir, exist_ok=True)
    jpath, cpath = os.path.join(out_dir, "init_stats.json"), os.path.join(out_dir, "init_stats.csv")
    write_json(jpath, stats)
    rows = csv_rows(stats)
    cols = list(rows[0]) if rows else []
    write_text(
        cpath,
        ",".join(cols)
        + "\n"
        + "".join(
            ",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + "\n"
            for r in rows
        ),
    )
    return jpath, cpath


def agreement(stats: dict) -> list[dict]:
    """Per (d, ratio): totals over features and seeds vs expectation, in standard errors.

    Σ_j |M_j*| and Σ_j #{i : N_i(0) = {j}} are Binomial(m, d·p) per seed (the events are
    disjoint across j, independent across neurons); Σ_j |M_j| = Σ_i |N_i(0)| is a sum of m
    i.i.d. per-neuron counts whose variance is estimated from Σ_i |N_i(0)|².
    """
    exp = {(e["d"], e["ratio"]): e for e in stats["expected"]}
    groups: dict = {}
    for r in stats["records"]:
        groups.setdefault((r["d"], r["ratio"]), []).append(r)
    out = []
    for (d, ratio), recs in sorted(groups.items()):
        e, m, n = exp[(d, ratio)], recs[0]["m"], len(recs)
        row = {"d": d, "m": m, "ratio": ratio, "seeds": n}
        for key, p_key, counts in (
            ("lucky", "p_lucky", "lucky_counts"),
            ("single", "p_single", "single_counts"),
        ):
            total = sum(sum(r[counts]) for r in recs)
            mean = n * m * d * e[p_key]
            sd = math.sqrt(max(n * m * d * e[p_key] * (1 - d * e[p_key]), 0.0))
            mc_sd = n * m * d * e[key + "_se"] / m  # Monte Carlo error of the expectation
            row[key] = (total, mean, (total - mean) / max(math.hypot(sd, mc_sd), 1e-12))
        total = sum(sum(r["ordinary_counts"]) for r in recs)
        mean = n * m * d * e["p_ordinary"]
        var = np.mean([r["N0_sq_mean"] for r in recs]) - np.mean([r["N0_mean"] for r in recs]) ** 2
        row["ordinary"] = (total, mean, (total - mean) / max(math.sqrt(n * m * var), 1e-12))
        out.append(row)
    return out


def add_arguments(ap) -> None:
    """`jaxcl init-stats` options."""
    ap.add_argument("--out", required=True, help="directory for init_stats.json / .csv")
    ap.add_argument("--d", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048, 4096])
    ap.add_argument("--C_m", type=float, default=1.5, help="m = round(d^C_m)")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.75, 1.0])
    ap.add_argument("--seeds", type=int, default=2, help="seeds 0 .. N-1")
    ap.add_argument("--gamma-c0", type=float, default=5e-4)


def main(args) -> int:
    """`jaxcl init-stats`: validate, count, write json and csv."""
    from jaxcl.errors import ConfigError

    for d in args.d:
        if d < 3:
            raise ConfigError(f"--d {d}: must be >= 3")
    for r in args.ratios:
        if not 0 < r <= 1:
            raise ConfigError(f"--ratios {r}: must be in (0, 1]")
    if args.seeds < 1 or args.C_m <= 0:
        raise ConfigError(f"--seeds {args.seeds} / --C_m {args.C_m}: must be positive")
    stats = run(sorted(args.d), args.C_m, args.ratios, list(range(args.seeds)), args.gamma_c0)
    if hasattr(args, "provenance"):  # set by `jaxcl`: the report names command and commit
        stats["invocation"] = args.provenance()
    paths = write(stats, args.out)
    print(f"jaxcl: init stats -> {paths[0]}, {paths[1]}", flush=True)
    return 0
