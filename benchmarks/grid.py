"""Whole `jaxcl run` processes on a large grid of small configs: where the host's own work
(expanding the grid, config ids, rows, status and final files) shows, not the step.

    .venv/bin/python benchmarks/grid.py                          # 1,024 configs at d = 8
    .venv/bin/python benchmarks/grid.py --compare /path/to/other/checkout

Writes an n-seed sweep (d, K, L, steps as given; log_every 50), runs `jaxcl run` of it once to
fill a compile cache (reported, not counted), then `--repeats` rounds into fresh run
directories with that cache warm, so the rounds time everything but compile. With `--compare`,
each round also runs the other checkout's jaxcl (`python -m jaxcl` with PYTHONPATH set to it,
same interpreter and cache directory of its own), interleaved, and checks that both wrote the
same config ids, final files byte for byte, and rows equal but for their wall-clock `time`.
Prints the median seconds and writes benchmarks/results/grid-<machine>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SWEEP = """# written by benchmarks/grid.py
[base]
d = {d}
K = {K}
L = {L}
steps = {steps}

[grid]
seed = {seeds}
"""


def _run(src: str, toml: str, out: str, cache: str) -> float:
    env = {**os.environ, "PYTHONPATH": src}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxcl",
            "run",
            toml,
            "--no-progress",
            "--out",
            out,
            "--compile-cache",
            cache,
        ],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"jaxcl run from {src} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def _same_outputs(a: str, b: str) -> str:
    """'' if the two run directories hold the same results; else what differs."""
    fa, fb = (
        sorted(os.listdir(os.path.join(a, "final"))),
        sorted(os.listdir(os.path.join(b, "final"))),
    )
    if fa != fb:
        return "different config ids / final files"
    for name in fa:
        with (
            open(os.path.join(a, "final", name), "rb") as x,
            open(os.path.join(b, "final", name), "rb") as y,
        ):
            if x.read() != y.read():
                return f"final/{name} differs"
    rows = []
    for d in (a, b):
        with open(os.path.join(d, "results.jsonl")) as f:
            rows.append([{k: v for k, v in json.loads(line).items() if k != "time"} for line in f])
    return "" if rows[0] == rows[1] else "results.jsonl rows differ"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024, help="configs (seeds)")
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--K", type=int, default=32)
    ap.add_argument("--L", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compare", help="another jaxcl checkout, run interleaved with this one")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "benchmarks", "results"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="jaxcl-grid-")
    toml = os.path.join(work, "sweep.toml")
    with open(toml, "w") as f:
        f.write(
            SWEEP.format(d=args.d, K=args.K, L=args.L, steps=args.steps, seeds=list(range(args.n)))
        )
    sources = {"this": ROOT, **({"other": os.path.abspath(args.compare)} if args.compare else {})}
    print(
        f"grid: {args.n} configs at d={args.d}, K={args.K}, L={args.L}, {args.steps} steps; "
        f"{args.repeats} rounds with a warm compile cache (work dir {work})",
        flush=True,
    )
    cold = {
        k: _run(src, toml, os.path.join(work, f"{k}-warm"), os.path.join(work, f"cache-{k}"))
        for k, src in sources.items()
    }
    print("  filling the compile caches: " + ", ".join(f"{k} {v:.1f} s" for k, v in cold.items()))
    times = {k: [] for k in sources}
    differs = ""
    for i in range(args.repeats):
        for k, src in sources.items():
            times[k].append(
                _run(src, toml, os.path.join(work, f"{k}{i}"), os.path.join(work, f"cache-{k}"))
            )
            print(f"  round {i + 1}: {k} {times[k][-1]:.1f} s", flush=True)
        if args.compare:
            differs = differs or _same_outputs(
                os.path.join(work, f"this{i}"), os.path.join(work, f"other{i}")
            )
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    line = "median seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in med.items())
    if args.compare:
        line += f"; this is {med['other'] / med['this']:.2f}x the other; outputs " + (
            f"DIFFER: {differs}"
            if differs
            else "the same (finals byte for byte, rows but their time)"
        )
    print(line)
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    sys.path.insert(0, ROOT)
    import _bench

    result = {
        "machine": _bench.machine_info(),
        "command": " ".join(sys.argv),
        "args": vars(args),
        "seconds": times,
        "median_s": med,
        "fill_cache_s": cold,
        "outputs_differ": differs if args.compare else None,
    }
    shutil.rmtree(work, ignore_errors=True)
    print(
        "wrote",
        _bench.write_result(result, args.out_dir, f"grid-{result['machine']['machine']}.json"),
    )


if __name__ == "__main__":
    main()
