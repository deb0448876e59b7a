"""Checkpoint overhead: seconds per checkpoint and its share of run time, per sweep.

    python benchmarks/checkpoint_overhead.py sweeps/figure1.toml sweeps/long-run.toml \
        --steps 0 400 --modes every_chunk default

For each sweep (its steps optionally capped with --steps, 0 = as written) it runs, after a short
compile warm-up, each mode into a fresh temporary run directory: `off` (no checkpoints),
`default` (CheckpointOptions() as the CLI uses them) and `every_chunk` (a checkpoint at every
chunk boundary, which gives the time per checkpoint). It prints a table and writes JSON to
benchmarks/results/checkpoint_overhead.json. The share at the default interval is also
projected as t_checkpoint / every_seconds, since short runs end before the first one is due.
"""

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxcl.engine import runner, sweep as sweep_mod  # noqa: E402
from jaxcl.engine.checkpoint import CheckpointOptions  # noqa: E402


def _flags(c: CheckpointOptions) -> dict:
    """The run options (`RunOptions` fields) of checkpoint options `c`."""
    return {
        "checkpoint_every_steps": c.every_steps,
        "checkpoint_every_seconds": c.every_seconds,
        "keep_checkpoints": c.keep,
    }


MODES = {"off": CheckpointOptions(every_steps=0, every_seconds=0), "default": CheckpointOptions()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweeps", nargs="+")
    ap.add_argument("--steps", type=int, nargs="*", default=[], help="cap per sweep (0: none)")
    ap.add_argument("--modes", nargs="+", default=["off", "default", "every_chunk"])
    ap.add_argument(
        "--out", default=os.path.join(ROOT, "benchmarks", "results", "checkpoint_overhead.json")
    )
    args = ap.parse_args()
    results = []
    for si, path in enumerate(args.sweeps):
        cap = args.steps[si] if si < len(args.steps) else 0
        sw = sweep_mod.load(path, [f"steps={cap}"] if cap else [])
        log_every = sw.configs()[0].log_every
        warm = sweep_mod.load(path, [f"steps={log_every}"])
        with tempfile.TemporaryDirectory() as tmp:
            runner.run(
                warm,
                os.path.join(tmp, "warm"),
                progress=False,
                log=lambda *_: None,
                **_flags(MODES["off"]),
            )  # compiles; later runs hit the jit cache
            for mode in args.modes:
                opts = MODES.get(mode) or CheckpointOptions(every_steps=log_every, every_seconds=0)
                t0 = time.perf_counter()
                s = runner.run(
                    sw,
                    os.path.join(tmp, mode),
                    progress=False,
                    log=lambda *_: None,
                    **_flags(opts),
                )
                wall = time.perf_counter() - t0
                per = s.checkpoint_seconds / s.checkpoints if s.checkpoints else None
                results.append(
                    {
                        "sweep": path,
                        "configs": len(sw.configs()),
                        "steps": sw.configs()[0].n_steps,
                        "mode": mode,
                        "wall_s": wall,
                        "checkpoints": s.checkpoints,
                        "checkpoint_s": s.checkpoint_seconds,
                        "per_checkpoint_s": per,
                        "share": s.checkpoint_seconds / wall,
                        "projected_share_default": (
                            per / CheckpointOptions().every_seconds if per else None
                        ),
                    }
                )
                r = results[-1]
                print(
                    f"{path:28s} {mode:12s} {r['configs']:3d} cfg {r['steps']:6d} steps "
                    f"wall {wall:7.1f}s  ckpts {s.checkpoints:4d}  "
                    f"per ckpt {per * 1e3 if per else float('nan'):7.1f} ms  "
                    f"share {100 * r['share']:5.2f}%",
                    flush=True,
                )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(
            {
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "default": dataclasses.asdict(CheckpointOptions()),
                "results": results,
            },
            f,
            indent=1,
        )
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
