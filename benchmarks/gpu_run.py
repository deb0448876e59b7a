"""One prepared run on a GPU (the logic and what each stage writes: benchmarks/_gpu.py).

    PYTHONPATH=. python3 benchmarks/gpu_run.py --out $OUT            # on the device, <= 8 min
    PYTHONPATH=. python3 benchmarks/gpu_run.py --out /tmp/g --dry-run  # every stage on CPU, tiny

It runs with the device image's python3 and installs nothing. `--stage` (internal) runs one
stage in this process; without it, every stage runs in turn, each in its own process.
"""

import argparse
import os
import sys
import tempfile

import _gpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="where the (at most 8) result files go")
    ap.add_argument("--work", default=None, help="scratch: the science run directory (temp)")
    ap.add_argument("--dry-run", action="store_true", help="every stage on CPU, tiny sizes")
    ap.add_argument("--stage", choices=["env", "bench", "precision", "science-plan"])
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = _gpu.DRY if args.dry_run else _gpu.DEVICE
    work = args.work or tempfile.mkdtemp(prefix="gpu_run-")
    if args.stage == "env":
        _gpu.env_stage(args.out, sizes)
    elif args.stage == "bench":
        _gpu.bench_stage(args.out, sizes)
    elif args.stage == "precision":
        _gpu.precision_stage(args.out, sizes)
    elif args.stage == "science-plan":
        _gpu.science_plan_stage(work, sizes, args.deadline)
    else:
        summary = _gpu.run_all(os.path.abspath(args.out), os.path.abspath(work), sizes)
        return 0 if all(s["status"] == "ok" for s in summary["stages"].values()) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
