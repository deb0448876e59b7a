"""Where a training step's time goes, kernel by kernel: XLA's own trace of `run_chunk`.

    .venv/bin/python benchmarks/profile_step.py --d 32            # L = 4, K = 64, C_m = 1.5
    .venv/bin/python benchmarks/profile_step.py --d 32 --L 8 --top 12

Runs one config per CPU device (as `jaxcl run`'s sequential batching does, every device busy),
traces a few chunks with jax.profiler and prints, per XLA kernel (thunk), microseconds per
config-step, the kernel's output shape and the jax ops it fuses. The profiler adds a little to
every kernel, so the sum exceeds the untraced step, which is printed first. Kernel names come
from the compiled HLO (`compiled.as_text()`); they change with the program.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--L", type=int, default=4)
    ap.add_argument("--K", type=int, default=64)
    ap.add_argument("--C-m", type=float, default=1.5)
    ap.add_argument("--chunks", type=int, default=10, help="chunks of 50 steps traced per device")
    ap.add_argument("--top", type=int, default=16)
    args = ap.parse_args()
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from jaxcl.engine.cli import split_cpu

    split_cpu(None)
    import jax
    from jax.profiler import ProfileData

    import _bench
    from jaxcl.experiments.liao.config import Config

    runs = _bench.chunk_per_device(args.d, args.L, args.K, args.C_m)
    hlo = runs[0][0].as_text()
    static = Config(d=args.d, C_m=args.C_m, K=args.K, L=args.L).static()

    def go(n):
        _bench.run_chunks(runs, n)

    go(2)
    t0 = time.perf_counter()
    go(args.chunks)
    per_step = (time.perf_counter() - t0) / (args.chunks * 50)  # every device busy
    jax.profiler.start_trace("/tmp/jaxcl-profile-step")
    go(args.chunks)
    jax.profiler.stop_trace()
    space = max(
        (
            os.path.join(dp, f)
            for dp, _, fs in os.walk("/tmp/jaxcl-profile-step")
            for f in fs
            if f.endswith(".xplane.pb")
        ),
        key=os.path.getmtime,
    )
    with open(space, "rb") as f:
        pd = ProfileData.from_serialized_xspace(f.read())
    total = collections.Counter()
    for plane in pd.planes:
        for line in plane.lines:
            for ev in line.events:
                if "Thunk" in ev.name or line.name == "python" or ev.name.startswith("while"):
                    continue
                total[ev.name] += ev.duration_ns
    steps = args.chunks * 50 * len(runs)
    m = static.m
    print(
        f"d={args.d} (m={m}, d1={static.d1}), K={args.K}, L={args.L}, one config per device on "
        f"{len(runs)} CPU device(s): {per_step * 1e6:.0f} us per step per device untraced; "
        f"traced kernels sum to {sum(total.values()) / steps / 1e3:.0f} us per config-step"
    )
    for name, ns in total.most_common(args.top):
        shape, ops = _describe(hlo, name)
        print(f"{ns / steps / 1e3:8.1f} us  {name:<28} {shape:<24} {ops}")


def _describe(hlo: str, name: str) -> tuple[str, str]:
    """The kernel's output shape and the jax ops (op_name metadata) it holds."""
    m = re.search(r"^\s+%" + re.escape(name) + r" = (\S+) [\w-]+\((.*)$", hlo, re.M)
    if not m:
        return "", ""
    calls = re.search(r"calls=(%[\w.\-]+)", m.group(2))
    body = m.group(2)
    if calls:
        b = re.search("^" + re.escape(calls.group(1)) + r" \(.*?\{\n(.*?)\n\}", hlo, re.S | re.M)
        body = b.group(1) if b else body
    ops = sorted({x.split("/")[-1] for x in re.findall(r'op_name="([^"]+)"', body)})
    return m.group(1).split("{")[0], ", ".join(ops[:6])


if __name__ == "__main__":
    main()
