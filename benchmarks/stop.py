"""How long a `jaxcl run` takes to stop after SIGTERM on a large grid of small configs (issue 23).

    .venv/bin/python benchmarks/stop.py --when rows --after 20   # 100,000 configs at d = 8
    .venv/bin/python benchmarks/stop.py --src /path/to/other/checkout --label before

Writes an n-config sweep, starts `jaxcl run` of it (compile cache off), waits
until training starts (`--when start`: the run's invocation record is written) or until the
first rows are written (`--when rows`), and `--after` seconds more, sends SIGTERM and measures the time until the process
exits: what a stop request waits for (compile, the running chunk, rows, the checkpoint).
Prints the figures and writes benchmarks/results/stop-<machine>[-label].json.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import write_result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = """# written by benchmarks/stop.py
[base]
d = {d}
K = {K}
L = {L}
steps = {steps}
log_every = {log_every}
[grid]
ratio = {ratios}
seed = {seeds}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--K", type=int, default=32)
    ap.add_argument("--L", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--src", default=ROOT, help="the jaxcl checkout to run")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--label", default="", help="added to the result file's name")
    ap.add_argument("--batching", default=None, help="jaxcl run's --batching (default: auto)")
    ap.add_argument("--chunk-seconds", type=float, default=None, help="jaxcl run's --chunk-seconds")
    ap.add_argument(
        "--when",
        choices=("rows", "start"),
        default="start",
        help="send SIGTERM once training starts (the run's invocation record is "
        "written: the signal waits for the compile and the first chunk) or once "
        "the first rows are written (a chunk boundary just passed)",
    )
    ap.add_argument(
        "--after",
        type=float,
        default=0.0,
        metavar="S",
        help="and then S seconds more (past setup, into the training)",
    )
    args = ap.parse_args()
    ratios = [round(0.1 * k, 1) for k in range(1, 11)]
    seeds = list(range(-(-args.configs // len(ratios))))
    tmp = tempfile.mkdtemp(prefix="jaxcl-stop-")
    toml = os.path.join(tmp, "sweep.toml")
    with open(toml, "w") as f:
        f.write(
            SWEEP.format(
                d=args.d,
                K=args.K,
                L=args.L,
                steps=args.steps,
                log_every=args.log_every,
                ratios=ratios,
                seeds=seeds,
            )
        )
    out = os.path.join(tmp, "run")
    env = {**os.environ, "PYTHONPATH": args.src}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
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
            "off",
        ]
        + (["--batching", args.batching] if args.batching else [])
        + ([] if args.chunk_seconds is None else ["--chunk-seconds", str(args.chunk_seconds)]),
        cwd=args.src,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    rows, records = os.path.join(out, "rows"), os.path.join(out, "invocations")
    deadline = t0 + args.timeout
    while proc.poll() is None and time.perf_counter() < deadline:
        if args.when == "start" and os.path.isdir(records) and os.listdir(records):
            break
        if (
            args.when == "rows"
            and os.path.isdir(rows)
            and any(os.path.getsize(os.path.join(rows, n)) for n in os.listdir(rows)[:64])
        ):
            break
        time.sleep(0.2)
    t_ready = time.perf_counter()
    while proc.poll() is None and time.perf_counter() < t_ready + args.after:
        time.sleep(0.2)
    t_signal = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=args.timeout)
    t_exit = time.perf_counter()
    result = {
        "when": args.when,
        "after": args.after,
        "configs": len(ratios) * len(seeds),
        "d": args.d,
        "K": args.K,
        "L": args.L,
        "steps": args.steps,
        "log_every": args.log_every,
        "batching": args.batching or "auto",
        "chunk_seconds": args.chunk_seconds,
        "src": args.src,
        "seconds_to_signal": round(t_signal - t0, 1),
        "seconds_to_stop": round(t_exit - t_signal, 1),
        "returncode": proc.returncode,
    }
    print(log[-3000:])
    print(result)
    import socket

    name = f"stop-{socket.gethostname()}{'-' + args.label if args.label else ''}.json"
    print("wrote", write_result(result, os.path.join(ROOT, "benchmarks", "results"), name))


if __name__ == "__main__":
    main()
