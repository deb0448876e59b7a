"""benchmarks/_bench.py's options, FLOP model (of its docstring), machine id, timers, writer."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import re
import resource
import socket
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.engine import programs
from jaxcl.experiments.liao import train
from jaxcl.experiments.liao.config import Config, stack_hparams


@dataclasses.dataclass(frozen=True)
class Options:
    ds: tuple = (16, 32, 64, 128)
    ns: tuple = (1, 4, 16, 64)
    C_m: float = 1.5
    steps: int = 50  # training steps per timed call: one chunk at the default log_every
    repeats: int = 5
    min_sample_s: float = 0.25  # one timed sample repeats a call until it lasts at least this
    dictionary: str = "qr"
    matmul_dtype: str = "float32"
    mem_budget_gb: float = 4.0  # skip a combo whose compiled footprint exceeds this
    time_budget_s: float = 120.0  # skip a combo whose estimated timing time exceeds this
    out_dir: str = "benchmarks/results"
    breakdown: tuple | None = (64, 16)  # (d, n) whose step time is split by part


def flops_per_config_step(K: int, L: int, d: int, d1: int, m: int, identity: bool) -> dict:
    """The FLOP model of the module docstring, term by term (per config, per training step)."""
    terms = {
        "forward_both_views": 2 * (2 * K * L * d1 * m),
        "backward_anchor_view": 2 * K * L * d1 * m,
        "attention_both_views": 2 * (4 * K * L * L * d1),
        "infonce": 2 * (2 * K * K * m),
        "sampling_matmul": 0 if identity else 2 * (2 * K * L * d * d1),
    }
    terms["total"] = sum(terms.values())
    return terms


def machine_info() -> dict:
    """Backend, devices and a short machine id for the results file name."""
    devs = jax.devices()
    backend = jax.default_backend()
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            names = re.findall(r"model name\s*:\s*(.*)", f.read())
            cpu = names[0].strip() if names else cpu
    except OSError:
        pass
    kind = devs[0].device_kind if backend != "cpu" else cpu
    slug = re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")[:40] or "unknown"
    cores = os.cpu_count()
    mid = f"{backend}-{slug}-{cores}c" if backend == "cpu" else f"{backend}-{slug}-x{len(devs)}"
    return {
        "machine": mid,
        "backend": backend,
        "device_kind": devs[0].device_kind,
        "n_devices": len(devs),
        "cpu": cpu,
        "cpu_count": cores,
        "hostname": socket.gethostname(),
        "jax": jax.__version__,
        "python": sys.version.split()[0],
    }


def _time(fn, *args) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t


def _time_calls(fn, calls: int) -> float:
    """Seconds per call of fn() over `calls` calls in a row, dispatched asynchronously."""
    t = time.perf_counter()
    for _ in range(calls):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / calls


def chunk_per_device(d: int, L: int, K: int, C_m: float) -> list[list]:
    """[compiled run_chunk, hparams, state] for one config per device (seed = device index),
    as `jaxcl run`'s sequential batching keeps every device busy; the chunk is 50 steps."""
    runs = []
    for seed, dev in enumerate(jax.devices()):
        cfg = Config(d=d, C_m=C_m, K=K, L=L, steps=10**9, log_every=50, seed=seed)
        static = cfg.static()
        hp = jax.device_put(jax.tree.map(lambda x: jnp.asarray(x[0]), stack_hparams([cfg])), dev)
        state = jax.device_put(jax.jit(functools.partial(train.init, static))(hp), dev)
        chunk = (
            jax.jit(
                functools.partial(train.run_chunk, static),
                compiler_options=programs.compiler_options(),
            )
            .lower(hp, state)
            .compile()
        )
        runs.append([chunk, hp, state])
    return runs


def run_chunks(runs: list[list], n: int) -> None:
    """n chunks on every device of `chunk_per_device`'s runs, each device's state carried on."""
    for _ in range(n):
        for r in runs:
            r[2], _ = r[0](r[1], r[2])
    jax.block_until_ready([r[2] for r in runs])


def matmul_peak(n: int, repeats: int) -> float:
    """FLOP/s of an (n, n) @ (n, n) float32 matmul, median of `repeats`."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    return 2 * n**3 / float(np.median([_time(f, a) for _ in range(repeats)]))


def _configs(opt: Options, d: int, n: int) -> list[Config]:
    return [
        Config(
            d=d,
            C_m=opt.C_m,
            steps=10**9,
            log_every=opt.steps,
            seed=s,
            dictionary=opt.dictionary,
            matmul_dtype=opt.matmul_dtype,
        )
        for s in range(n)
    ]


def _memory(compiled) -> int | None:
    try:
        ma = compiled.memory_analysis()
        return int(
            ma.argument_size_in_bytes
            + ma.output_size_in_bytes
            + ma.temp_size_in_bytes
            - ma.alias_size_in_bytes
        )
    except Exception:  # memory_analysis is optional per backend
        return None


def _rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 2**10


def _square_matmul(size: int):
    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    return lambda: f(a)


def fit_exponents(rows: list[dict]) -> dict:
    """Least-squares slope of log(time per config-step) on log d, at the largest n present for
    at least two d, for the engine, the vmapped engine and the loop."""
    out = {}
    by_n: dict[int, list] = {}
    for r in rows:
        by_n.setdefault(r["n_configs"], []).append(r)
    ns = [n for n, rs in by_n.items() if len(rs) >= 2]
    if not ns:
        return out
    n = max(ns, key=lambda k: (len(by_n[k]), k))
    rs = sorted(by_n[n], key=lambda r: r["d"])
    x = np.log([r["d"] for r in rs])
    for key in ("engine", "vmapped", "loop"):
        y = np.log([r[f"{key}_s_per_cfg_step"] for r in rs])
        slope = float(np.polyfit(x, y, 1)[0])
        out[key] = {"exponent": slope, "n_configs": n, "ds": [r["d"] for r in rs]}
    return out


def write_result(result: dict, out_dir: str, name: str) -> str:
    """Writes a benchmark's result as out_dir/name (JSON, numpy scalars as floats); its path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    with open(path, "w") as f:
        json.dump(result, f, indent=1, default=float)
    return path
