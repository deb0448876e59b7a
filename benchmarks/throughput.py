"""Sweep throughput, roofline and d-scaling of jaxcl's training step (issue 6).

    .venv/bin/python benchmarks/throughput.py            # full grid, a few minutes on 2 CPU cores
    .venv/bin/python benchmarks/throughput.py --quick    # d <= 64, n <= 16

Prints a table and writes benchmarks/results/<machine>.json. Runs unchanged on CPU or GPU (it
reports the backend it ran on). The logic is in benchmarks/_bench.py.
"""

import argparse
import os
import sys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="d in 16 32 64, n in 1 4 16, 3 repeats")
    ap.add_argument("--d", type=int, nargs="+", help="feature counts (default 16 32 64 128)")
    ap.add_argument("--n", type=int, nargs="+", help="configs per program (default 1 4 16 64)")
    ap.add_argument("--steps", type=int, help="training steps per timed call (default 50)")
    ap.add_argument("--repeats", type=int, help="timed calls per figure (default 5)")
    ap.add_argument("--dictionary", choices=["qr", "identity"], default="qr")
    ap.add_argument("--matmul-dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--mem-budget-gb", type=float, default=4.0)
    ap.add_argument("--time-budget-s", type=float, default=120.0)
    ap.add_argument(
        "--cpu-devices",
        type=int,
        help="split the CPU into this many JAX devices (sets XLA_FLAGS; CPU only; default: "
        "one per core, as jaxcl run does)",
    )
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from jaxcl.engine.cli import split_cpu  # no JAX backend has started yet: XLA_FLAGS still counts

    split_cpu(args.cpu_devices)  # as `jaxcl run` does: one CPU device per core by default
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _bench

    quick = dict(ds=(16, 32, 64), ns=(1, 4, 16), repeats=3) if args.quick else {}
    given = dict(
        ds=args.d and tuple(args.d),
        ns=args.n and tuple(args.n),
        steps=args.steps,
        repeats=args.repeats,
    )
    opt = _bench.Options(
        **{
            **quick,
            **{k: v for k, v in given.items() if v},
            "dictionary": args.dictionary,
            "matmul_dtype": args.matmul_dtype,
            "mem_budget_gb": args.mem_budget_gb,
            "time_budget_s": args.time_budget_s,
            "out_dir": args.out_dir,
        }
    )
    result = _bench.run(opt)
    print("wrote", _bench.save(result, opt.out_dir))


if __name__ == "__main__":
    main()
