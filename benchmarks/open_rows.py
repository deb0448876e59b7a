"""jaxcl.open on a large run directory: Run.rows() (and finals(), status()) of N configs.

    .venv/bin/python benchmarks/open_rows.py                   # 10,000 configs, 6 rows each
    .venv/bin/python benchmarks/open_rows.py --rows-per-config 20

Writes a synthetic run directory without training: the manifest, sweep.toml, status and rows
files of a real N-seed liao sweep (d = 8, K = 32, L = 4; config ids and fields as `jaxcl run`
writes them), each config's rows the runner's columns with random metric values (6 rows: 300
steps at log_every 50, as benchmarks/grid.py; 20: the defaults, 1000 and 50), merged into
results.jsonl as the runner does, and final/<id>.json|npz. Times each reader (median of
--repeats, each on a fresh `jaxcl.open`) and writes benchmarks/results/open-<machine>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SWEEP = """# written by benchmarks/open_rows.py
[base]
d = 8
K = 32
L = 4
steps = {steps}
log_every = 50

[grid]
seed = {seeds}
"""
# the metrics of a liao row beyond its config fields (docs/run-directory.md)
METRICS = [
    "loss",
    "nce",
    "acc",
    "cov_major",
    "cov_minor",
    "purity",
    "alive_frac",
    "b_mean",
    "w_norm_mean",
    "N_mean",
    "F_mean",
    "noise_frac",
]
COUNTS = ["stage", "T1", "T2", "bad_step", "pure_neurons", "lucky_pure"]


def write_run_dir(out: str, n: int, rows_per_config: int, seed: int = 0) -> int:
    """A finished run directory of an n-seed sweep with synthetic values; returns its rows."""
    from jaxcl.engine.rundir import DONE, RunDir
    from jaxcl.engine.sweep import loads
    from jaxcl.fileio import dumps

    sweep = loads(SWEEP.format(steps=50 * rows_per_config, seeds=list(range(n))))
    configs = sweep.configs()
    rd = RunDir.prepare(out, sweep, configs)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    for c in configs:
        base = {**c.resolved(), "config_id": c.config_id}
        vals = rng.random((rows_per_config, len(METRICS)))
        rows = [
            {
                **base,
                **dict(zip(METRICS, map(float, v))),
                **{k: int(rng.integers(-1, 5)) for k in COUNTS},
                "step": 50 * (i + 1),
                "time": round(t0 + i, 3),
            }
            for i, v in enumerate(vals)
        ]
        # plain writes (no fsync per file): this directory is synthetic
        with open(rd.p("rows", c.config_id + ".jsonl"), "w") as f:
            f.write("".join(dumps(r) + "\n" for r in rows))
        with open(rd.p("status", c.config_id + ".json"), "w") as f:
            f.write(json.dumps({"state": DONE}))
        with open(rd.p("final", c.config_id + ".npz"), "wb") as f:
            np.savez(f, w=rng.random((4, 8)).astype(np.float32))
        with open(rd.p("final", c.config_id + ".json"), "w") as f:
            f.write(
                dumps(
                    {
                        **base,
                        "T1": 10,
                        "T2": 20,
                        "observables": {
                            "purity": float(vals[-1, 5]),
                            "lucky_counts": rng.integers(0, 5, 8).tolist(),
                        },
                    }
                )
            )
    n_rows = rd.merge_results(configs)
    rd.write_manifest(sweep, configs)
    return n_rows


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="configs")
    ap.add_argument("--rows-per-config", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "benchmarks", "results"))
    args = ap.parse_args()
    import pandas  # noqa: F401  (imported once here, not inside the first timing)

    import jaxcl

    work = tempfile.mkdtemp(prefix="jaxcl-open-")
    run_dir = os.path.join(work, "run")
    t0 = time.perf_counter()
    n_rows = write_run_dir(run_dir, args.n, args.rows_per_config)
    size = os.path.getsize(os.path.join(run_dir, "results.jsonl"))
    print(
        f"open_rows: {args.n} configs, {n_rows} rows ({size / 2**20:.0f} MiB results.jsonl) "
        f"written in {time.perf_counter() - t0:.1f} s ({run_dir})",
        flush=True,
    )
    shape = {}

    def rows():
        shape["rows"] = jaxcl.open(run_dir).rows().shape

    def finals():
        shape["finals"] = jaxcl.open(run_dir).finals().shape

    times = {
        "rows": _time(rows, args.repeats),
        "finals": _time(finals, args.repeats),
        "status": _time(lambda: jaxcl.open(run_dir).status(), 1),
    }
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(
        "median seconds: "
        + ", ".join(f"{k} {v:.2f}" for k, v in med.items())
        + f"; rows() {shape['rows']}, finals() {shape['finals']}"
    )
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import _bench

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    result = {
        "machine": _bench.machine_info(),
        "command": " ".join(sys.argv),
        "args": vars(args),
        "rows": n_rows,
        "results_jsonl_bytes": size,
        "rows_shape": shape["rows"],
        "finals_shape": shape["finals"],
        "seconds": times,
        "median_s": med,
        "loadavg_after": load,
    }
    shutil.rmtree(work, ignore_errors=True)
    name = f"open-{result['machine']['machine']}-{args.n}x{args.rows_per_config}.json"
    print("wrote", _bench.write_result(result, args.out_dir, name))


if __name__ == "__main__":
    main()
