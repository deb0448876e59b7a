"""How fast the step could be with cheaper or no Gaussian noise: the engine's step against the
same step with the noise's generator swapped, timed side by side.

    .venv/bin/python benchmarks/ceiling.py                     # d = 16, 32; L = 4; 7 repeats
    .venv/bin/python benchmarks/ceiling.py --d 32 --L 8

The per-step data x = M z + σ ξ (SPEC §1) needs K·L·d1 Gaussian draws per view, each a 20-round
Threefry hash and an erfinv (`jaxcl.experiments.liao.data.standard_normals`). Swapped in at
trace time, one config per CPU device (as `jaxcl run` runs them), everything else unchanged:
- `engine`: the step as it is;
- `noise_free`: ξ = 0. Not the model: an upper bound on what any generator could give;
- `both_words`: both output words of each hash, half the hashes (different draws);
- `box_muller`: both words through Box–Muller (log, sqrt, cos, sin; different draws).
It prints config-steps/s, the speed-up over `engine` and each variant's share of the matmul peak
under `_bench.flops_per_config_step` (the FLOP model `throughput.py` reports), the peak timed
among each row's samples (its median), then the noise's cost per draw split into the hash and the
erfinv, and writes benchmarks/results/ceiling-<machine>-L<L>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.abspath(__file__))


def noise_free(keys_Vx2, shape):
    """ξ = 0, shaped like standard_normals(keys, shape) (the keys stay live, so nothing
    upstream of the noise is dropped)."""
    import jax.numpy as jnp

    zero_V = (keys_Vx2[:, 0] & 0).astype(jnp.float32)
    return jnp.broadcast_to(zero_V.reshape((-1,) + (1,) * len(shape)), (keys_Vx2.shape[0], *shape))


def _hash_pairs(keys_Vx2, n: int):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcl.experiments.liao import data

    return data.threefry2x32(
        keys_Vx2[:, :1],
        keys_Vx2[:, 1:],
        jax.lax.iota(jnp.uint32, -(-n // 2))[None, :],
        np.uint32(0),
    )


def both_words(keys_Vx2, shape):
    """N(0, 1) from both words of each hash (`data.normal`'s transform): half the hashes."""
    import jax.numpy as jnp

    from jaxcl.experiments.liao import data

    n = math.prod(shape)
    y0, y1 = _hash_pairs(keys_Vx2, n)
    return data.normal(jnp.concatenate([y0, y1], axis=1)[:, :n]).reshape(
        (keys_Vx2.shape[0], *shape)
    )


def box_muller(keys_Vx2, shape):
    """N(0, 1) pairs (r cos θ, r sin θ), r = √(−2 log u1), θ = 2π u2, from one hash each."""
    import jax.numpy as jnp
    import numpy as np

    n = math.prod(shape)
    y0, y1 = _hash_pairs(keys_Vx2, n)
    u1 = ((y0 >> np.uint32(9)).astype(jnp.float32) + np.float32(0.5)) * np.float32(2.0**-23)
    theta = (y1 >> np.uint32(9)).astype(jnp.float32) * np.float32(2 * math.pi * 2.0**-23)
    r = jnp.sqrt(np.float32(-2.0) * jnp.log(u1))
    z = jnp.concatenate([r * jnp.cos(theta), r * jnp.sin(theta)], axis=1)[:, :n]
    return z.reshape((keys_Vx2.shape[0], *shape))


VARIANTS = {
    "engine": None,
    "noise_free": noise_free,
    "both_words": both_words,
    "box_muller": box_muller,
}


@contextlib.contextmanager
def generator(fn):
    """data.standard_normals replaced by fn while tracing (place_views looks it up by name)."""
    from jaxcl.experiments.liao import data

    old = data.standard_normals
    data.standard_normals = fn or old
    try:
        yield
    finally:
        data.standard_normals = old


def noise_parts(shape, repeats: int) -> dict:
    """Nanoseconds per draw on one device of the noise of `shape` (V views of (K, L, d1)): the
    whole fused draw (`standard_normals`), the Threefry hash alone, and the erfinv alone."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import _bench
    from jaxcl.experiments.liao import data
    from jaxcl.engine import programs

    n = math.prod(shape)
    keys = data.fold_many(jnp.array([0, 7], jnp.uint32), 1, np.arange(shape[0]))
    u = jax.random.uniform(jax.random.PRNGKey(0), (n,), minval=-0.999, maxval=0.999)
    parts = {
        "fused_draw": (lambda k: data.standard_normals(k, shape[1:]), keys),
        "threefry_hash": (
            lambda k: data.threefry2x32(
                k[0, 0], k[0, 1], jax.lax.iota(jnp.uint32, n), np.uint32(0)
            )[0],
            keys,
        ),
        "erfinv": (jax.scipy.special.erfinv, u),
    }
    out = {}
    for name, (fn, arg) in parts.items():
        f = jax.jit(fn).lower(arg).compile(programs.compiler_options())
        jax.block_until_ready(f(arg))
        out[name] = (
            1e9
            * float(np.median([_bench._time_calls(lambda: f(arg), 50) for _ in range(repeats)]))
            / n
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--L", type=int, default=4)
    ap.add_argument("--K", type=int, default=64)
    ap.add_argument("--C-m", type=float, default=1.5)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--chunks", type=int, default=4, help="chunks of 50 steps per timed sample")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "results"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(ROOT))
    sys.path.insert(0, ROOT)
    from jaxcl.engine.cli import split_cpu

    split_cpu(None)
    import jax
    import numpy as np

    import _bench
    from jaxcl.experiments.liao.config import Config

    rows = []
    for d in args.d:
        static = Config(d=d, C_m=args.C_m, K=args.K, L=args.L).static()
        progs = {}
        for name, fn in VARIANTS.items():
            with generator(fn):
                progs[name] = _bench.chunk_per_device(d, args.L, args.K, args.C_m)
        for runs in progs.values():
            _bench.run_chunks(runs, 1)
        samples, peaks = {name: [] for name in progs}, []
        for _ in range(args.repeats):  # interleaved: the machine's drift hits every variant
            peaks.append(_bench.matmul_peak(2048, 3))  # and the peak
            for name, runs in progs.items():
                t0 = time.perf_counter()
                _bench.run_chunks(runs, args.chunks)
                samples[name].append((time.perf_counter() - t0) / (args.chunks * 50))
        n_dev = len(jax.devices())
        flops = _bench.flops_per_config_step(args.K, args.L, d, static.d1, static.m, False)["total"]
        row = {
            "d": d,
            "m": static.m,
            "d1": static.d1,
            "K": args.K,
            "L": args.L,
            "n_devices": n_dev,
            "flops_per_cfg_step": flops,
            "s_per_step_per_device": samples,
            "matmul_peak_samples": peaks,
            "matmul_peak": float(np.median(peaks)),
        }
        rate = {k: n_dev / float(np.median(v)) for k, v in samples.items()}
        row["cfg_steps_per_s"] = rate
        row["over_engine"] = {k: v / rate["engine"] for k, v in rate.items()}
        rows.append(row)
    static = Config(d=args.d[-1], C_m=args.C_m, K=args.K, L=args.L).static()
    parts = noise_parts((32, args.K, args.L, static.d1), args.repeats)  # 16 steps' worth
    print(
        f"one config per device on {rows[0]['n_devices']} CPU device(s), median of "
        f"{args.repeats} interleaved samples of {args.chunks * 50} steps, each row with the "
        "float32 2048^2 matmul peak timed among its samples (GFLOP/s)"
    )
    print(f"{'d':>4} {'L':>2} {'peak':>5} " + "".join(f"{k:>24}" for k in VARIANTS))
    for row in rows:
        row["pct_peak"] = {
            k: 100 * row["flops_per_cfg_step"] * v / row["matmul_peak"]
            for k, v in row["cfg_steps_per_s"].items()
        }
        print(
            f"{row['d']:>4} {row['L']:>2} {row['matmul_peak'] / 1e9:>5.0f} "
            + "".join(
                f"{row['cfg_steps_per_s'][k]:>8,.0f} {row['over_engine'][k]:>5.2f}x "
                f"{row['pct_peak'][k]:>5.1f}%  "
                for k in VARIANTS
            )
        )
    print("(config-steps/s, speed-up over engine, % of the matmul peak under the FLOP model)")
    print(
        f"noise at d = {args.d[-1]}, L = {args.L} (16 steps' worth), one device, ns per draw: "
        + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
    )
    result = {
        "machine": _bench.machine_info(),
        "command": " ".join(sys.argv),
        "args": vars(args),
        "rows": rows,
        "noise_ns_per_draw": {"d": args.d[-1], **parts},
    }
    print(
        "wrote",
        _bench.write_result(
            result, args.out_dir, f"ceiling-{result['machine']['machine']}-L{args.L}.json"
        ),
    )


if __name__ == "__main__":
    main()
