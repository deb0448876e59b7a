"""The stages of benchmarks/gpu_run.py, one prepared run on a GPU lent for a few minutes: the
environment, the gpu_smoke tests, the engine against batched PyTorch, "highest" float32 matmuls
against TF32, and a slice of the Theorem 3.3 regime sweep that `jaxcl plan` says fits.

Each stage runs as its own process under a time budget (a stuck compile cannot overrun the
whole: the process is stopped, and the summary says so) and writes one file of at most 8 under
--out: env.json, smoke.xml (pytest's JUnit XML), bench.json, precision.json, science.tar.gz
(the science run's finals and rows), summary.json and gpu_run.log. `--dry-run` runs every stage
on the CPU at tiny sizes, so that the test suite keeps the script working.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_run.py")
REGIME = os.path.join(ROOT, "sweeps", "theorem33-regime.toml")
TAR_LIMIT = 15 << 20  # a file that comes back from the device is at most 16 MiB
# Seconds kept after the science run for packing its results (and for the run to save a
# checkpoint and merge its rows when stopped)
PACK_SECONDS = 25.0
STOP_GRACE = 20.0  # a stopped stage gets SIGTERM, then this long, then SIGKILL
# What the device image holds that jaxcl, its gpu_smoke tests and this run may import (the
# image: jax 0.11 with its CUDA plugin, optax, orbax-checkpoint, chex, pandas, matplotlib,
# tqdm, pytest, torch, and jax's own numpy and scipy); no package can be installed there.
IMAGE_PACKAGES = (
    "jax",
    "jaxlib",
    "numpy",
    "scipy",
    "optax",
    "orbax-checkpoint",
    "chex",
    "pandas",
    "matplotlib",
    "tqdm",
    "pytest",
    "torch",
)
# Packages jaxcl imports only inside the function that needs them, on a path the device run
# does not take; the image lacks them (what would need them there, and why it is not taken)
NOT_IN_IMAGE = {
    "tomli-w": "jaxcl.run given a sweep as a dict writes it as TOML; this run passes files"
}
# The files the device run imports: the package, this run, and the gpu_smoke tests with the
# test modules whose checks they reuse
IMPORTED = (
    "jaxcl/**/*.py",
    "benchmarks/gpu_run.py",
    "benchmarks/_gpu.py",
    "benchmarks/_bench.py",
    "benchmarks/peers.py",
    "tests/conftest.py",
    "tests/support.py",
    "tests/reference.py",
    "tests/test_gpu_smoke.py",
    "tests/test_layout.py",
    "tests/test_loss.py",
    "tests/test_geometry.py",
    "tests/test_train.py",
)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What each stage runs and for how long: the device run's sizes, or the dry run's.

    budgets: seconds per stage; science takes what is left of total_seconds instead (it is
    sized to fit by `jaxcl plan`). bench_configs: (d, most configs vmapped) pairs; the engine
    takes what fits in memory up to that, and each timed call lasts about bench_call_seconds.
    science_ds: the d of the regime sweep to try, largest first, each with science_seeds seeds
    per arm, more first.
    """

    total_seconds: float = 460.0
    budgets: tuple = (
        ("env", 40),
        ("smoke", 100),
        ("bench", 110),
        ("precision", 60),
        ("science-plan", 90),
    )
    smoke_select: str | None = None
    bench_configs: tuple = ((32, 2048), (128, 512), (512, 32), (1024, 16))
    bench_call_seconds: float = 0.5
    bench_repeats: int = 3
    matmul_size: int = 8192
    precision_d: int = 256
    precision_configs: int = 8
    precision_steps: int = 200
    precisions: tuple = ("highest", "tensorfloat32", "default")
    science_ds: tuple = (256, 128)
    science_seeds: tuple = (4, 2, 1)
    shape: tuple = ()  # (field, value) overrides of the bench and precision configs
    cpu: bool = False  # run on the CPU whatever the machine has


DEVICE = Sizes()
# Budgets many times what the dry run takes (about a minute on 2 idle cores), so that a loaded
# CI machine does not stop a stage.
DRY = Sizes(
    total_seconds=600.0,
    budgets=(("env", 60), ("smoke", 120), ("bench", 120), ("precision", 120), ("science-plan", 90)),
    smoke_select="private_jax_path or liao-loss-numpy",
    bench_configs=((8, 4),),
    bench_call_seconds=0.05,
    bench_repeats=1,
    matmul_size=128,
    precision_d=8,
    precision_configs=2,
    precision_steps=20,
    precisions=("highest", "default"),
    science_ds=(8,),
    science_seeds=(2, 1),
    shape=(("K", 8), ("L", 2)),
    cpu=True,
)


# ---- the driver (no jax here: every stage is its own process)


def run_all(out: str, work: str, sizes: Sizes, log=print) -> dict:
    """Runs every stage in turn, each stopped at its budget, and writes summary.json.

    Returns:
      The summary: per stage its status ("ok", "failed (exit N)", "stopped at its budget of
      S s"), seconds and budget.
    """
    os.makedirs(out, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    t0 = time.time()
    deadline = t0 + sizes.total_seconds
    logfile = os.path.join(out, "gpu_run.log")
    stages = {}
    dry = ["--dry-run"] if sizes is DRY else []

    def stage(name, cmd, budget, env=None):
        budget = max(1.0, min(budget, deadline - time.time()))
        log(f"gpu_run: stage {name} (budget {budget:.0f} s): {' '.join(cmd)}")
        stages[name] = _run_stage(cmd, budget, logfile, log, env)
        stages[name]["budget"] = round(budget)
        log(f"gpu_run: stage {name}: {stages[name]['status']} in {stages[name]['seconds']} s")

    me = [sys.executable, SCRIPT, "--out", out, "--work", work] + dry
    budgets = dict(sizes.budgets)
    cpu = {"JAX_PLATFORMS": "cpu"} if sizes.cpu else {}
    stage("env", me + ["--stage", "env"], budgets["env"], env=cpu)
    smoke = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "gpu_smoke"]
    smoke += ["-W", "error::DeprecationWarning", "--junitxml", os.path.join(out, "smoke.xml")]
    smoke += ["tests/test_gpu_smoke.py", "tests/test_layout.py"]
    smoke += ["-k", sizes.smoke_select] if sizes.smoke_select else []
    stage("smoke", smoke, budgets["smoke"], env=cpu)
    stages["smoke"]["tests"] = junit_summary(os.path.join(out, "smoke.xml"))
    # jax and torch share the GPU in one process: jax takes memory as it needs it, up to 60%
    shared = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "XLA_PYTHON_CLIENT_MEM_FRACTION": ".6"}
    stage("bench", me + ["--stage", "bench"], budgets["bench"], env={**shared, **cpu})
    stage("precision", me + ["--stage", "precision"], budgets["precision"], env=cpu)
    # the science run: what is left, sized by `jaxcl plan` on this device
    deadline_arg = ["--deadline", f"{deadline - PACK_SECONDS:.1f}"]
    plan_cmd = me + ["--stage", "science-plan"] + deadline_arg
    stage("science-plan", plan_cmd, budgets["science-plan"], env=cpu)
    picked = _read_json(os.path.join(work, "science-plan.json")) or {}
    run_dir = os.path.join(work, "science")
    if picked.get("sweep"):
        cmd = [sys.executable, "-m", "jaxcl", "run", picked["sweep"], "--out", run_dir]
        cmd += ["--no-progress", "--compile-cache", "off"]
        stage("science-run", cmd, deadline - PACK_SECONDS - time.time(), env=cpu)
    stages["science-pack"] = pack_science(run_dir, work, os.path.join(out, "science.tar.gz"))
    summary = {
        "dry_run": sizes is DRY,
        "seconds": round(time.time() - t0, 1),
        "total_budget": sizes.total_seconds,
        "stages": stages,
        "files": sorted({*os.listdir(out), "summary.json"}),
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    log(
        f"gpu_run: done in {summary['seconds']} s; files under {out}: {', '.join(summary['files'])}"
    )
    return summary


def _run_stage(cmd: list, budget: float, logfile: str, log, env: dict | None) -> dict:
    """Runs one stage's process (its output to the log and ours), stopping it at `budget`."""
    t0 = time.time()
    environ = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    environ.update(env or {})
    environ.setdefault("PYTHONUNBUFFERED", "1")
    with open(logfile, "a") as f:
        f.write(f"\n==== {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )  # fmt: skip
        status = None
        timer = _Timer(proc, budget)
        for line in proc.stdout:
            f.write(line)
            f.flush()
            log("  " + line.rstrip())
        proc.wait()
        if timer.fired:
            status = f"stopped at its budget of {budget:.0f} s"
            f.write(f"==== {status}\n")
        timer.cancel()
    if status is None:
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    return {"status": status, "seconds": round(time.time() - t0, 1)}


class _Timer:
    """SIGTERM to a stage's process group once its budget is spent, SIGKILL STOP_GRACE later."""

    def __init__(self, proc, budget: float):
        import threading

        self.fired = False
        self._proc = proc
        self._timers = [
            threading.Timer(budget, self._signal, (signal.SIGTERM,)),
            threading.Timer(budget + STOP_GRACE, self._signal, (signal.SIGKILL,)),
        ]
        for t in self._timers:
            t.daemon = True
            t.start()

    def _signal(self, sig):
        if self._proc.poll() is None:
            self.fired = True
            try:
                os.killpg(self._proc.pid, sig)
            except ProcessLookupError:
                pass

    def cancel(self):
        for t in self._timers:
            t.cancel()


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def junit_summary(path: str) -> dict | None:
    """Counts of pytest's JUnit XML, and the names of the tests that did not pass."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    cases = list(root.iter("testcase"))
    bad = {}
    for c in cases:
        for kind in ("failure", "error", "skipped"):
            el = c.find(kind)
            if el is not None:
                msg = (el.get("message") or "").splitlines()[:1]
                bad[f"{c.get('classname')}::{c.get('name')}"] = f"{kind}: {' '.join(msg)}"[:300]
    return {
        "tests": len(cases),
        "passed": len(cases) - len(bad),
        "not_passed": bad,
        "seconds": round(sum(float(c.get("time") or 0) for c in cases), 1),
    }


def pack_science(run_dir: str, work: str, path: str, limit: int = TAR_LIMIT) -> dict:
    """science.tar.gz: the science run's directory but its checkpoints (sweep, manifest,
    invocation records with versions and precision, rows, statuses, final json, figures),
    science-plan.json, and as many of the final npz files as keep the archive under `limit`
    bytes (smallest first); those left out are listed in its science.json."""
    if not os.path.isdir(run_dir):
        return {"status": "no science run to pack"}
    must, optional = [], []
    for base, _, files in os.walk(run_dir):
        for name in sorted(files):
            p = os.path.join(base, name)
            rel = os.path.relpath(p, run_dir)
            if rel.startswith("checkpoints") or name.startswith("."):  # lock, temporaries
                continue
            (optional if name.endswith(".npz") else must).append((rel, p))
    plan = os.path.join(work, "science-plan.json")
    left_out = []
    with open(path, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        if os.path.exists(plan):
            tar.add(plan, arcname="science/science-plan.json")
        for rel, p in must:
            tar.add(p, arcname=os.path.join("science", rel))
        for rel, p in sorted(optional, key=lambda x: os.path.getsize(x[1])):
            size = os.path.getsize(p)
            if raw.tell() + size + (1 << 20) > limit:  # npz arrays hardly compress
                left_out.append({"file": rel, "bytes": size})
                continue
            tar.add(p, arcname=os.path.join("science", rel))
        note = json.dumps({"npz_left_out": left_out}, indent=1).encode()
        info = tarfile.TarInfo("science/science.json")
        info.size = len(note)
        tar.addfile(info, io.BytesIO(note))
    manifest = _read_json(os.path.join(run_dir, "manifest.json")) or {}
    return {
        "status": "ok",
        "bytes": os.path.getsize(path),
        "files": len(must) + len(optional) - len(left_out),
        "npz_left_out": len(left_out),
        "counts": manifest.get("counts"),
    }


# ---- the stages (each in its own process)


def env_stage(out: str, sizes: Sizes) -> dict:
    """env.json: the devices, the versions (and where they differ from requirements.lock),
    nvidia-smi, and the matmul precision jaxcl pins."""
    import importlib.metadata as md

    import jax

    from jaxcl.engine import devices, precision, records

    dists = sorted(
        {d.metadata["Name"] for d in md.distributions() if d.metadata["Name"]}, key=str.lower
    )
    wanted = ("numpy", "scipy", "optax", "chex", "orbax-checkpoint", "ml_dtypes", "torch")
    versions = {
        n: md.version(n) for n in dists if n.lower().startswith("jax") or n.lower() in wanted
    }
    devs = jax.devices()
    kind = devices.detect(devs[0].device_kind)
    info = {
        "date_utc": _now(),
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "jax": jax.__version__,
        "versions": versions,
        "lock_differences": records.lock_differences(None),
        "jax_differs_from_lock": any(
            x.startswith(("jax ", "jaxlib ")) for x in records.lock_differences()
        ),
        "backend": jax.default_backend(),
        "devices": [
            {
                "id": d.id,
                "platform": d.platform,
                "device_kind": d.device_kind,
                "bytes_limit": (d.memory_stats() or {}).get("bytes_limit"),
            }
            for d in devs
        ],
        "known_kind": dataclasses.asdict(kind) if kind else None,
        "matmul_precision": {
            "jaxcl": precision.DEFAULT,
            "jax_default_matmul_precision": getattr(
                jax.config, "jax_default_matmul_precision", "?"
            ),
        },
        "environment": records.environment(),
        "env_vars": {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("XLA_", "JAX_", "CUDA_", "NVIDIA_"))
        },
        "nvidia_smi": nvidia_smi(),
    }
    _write(out, "env.json", info)
    print(
        f"jax {info['jax']} ({'differs from' if info['jax_differs_from_lock'] else 'as in'} "
        f"requirements.lock); {len(devs)} {info['backend']} device(s): {devs[0].device_kind}"
        + (f" = {kind.label}" if kind else "")
    )
    return info


def nvidia_smi() -> dict | None:
    """nvidia-smi's report and a query of the card's name, memory, clocks and power (None
    where there is no nvidia-smi)."""
    query = "name,memory.total,driver_version,clocks.max.sm,clocks.sm,power.limit,temperature.gpu"
    out = {}
    for key, args in (
        ("report", []),
        ("query", [f"--query-gpu={query}", "--format=csv"]),
    ):
        try:
            proc = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        out[key] = proc.stdout
    return out


def bench_stage(out: str, sizes: Sizes) -> dict:
    """bench.json: per d, the engine's config-steps/s with as many configs vmapped as fit (up
    to the size's cap) against the batched PyTorch peer of benchmarks/peers.py on the same
    device and configs, interleaved; FLOP/s from benchmarks/_bench.py's model as a share of the
    card's float32 and TF32 peaks; and a square float32 matmul at each precision. Written after
    each d, so a stage stopped at its budget leaves what it measured."""
    import jax

    from jaxcl.engine import devices

    kind = devices.detect(jax.devices()[0].device_kind)
    try:
        import torch
    except ImportError:
        torch = None
    on_gpu = jax.default_backend() == "gpu"
    tdev = "cuda" if torch is not None and on_gpu and torch.cuda.is_available() else "cpu"
    result = {
        "date_utc": _now(),
        "device_kind": jax.devices()[0].device_kind,
        "known_kind": dataclasses.asdict(kind) if kind else None,
        "jax": jax.__version__,
        "torch": getattr(torch, "__version__", None),
        "torch_device": tdev if torch is not None else None,
        "torch_float32_matmul": _torch_matmul_setting(torch),
        "matmul_flops_per_s": matmul_rates(sizes.matmul_size, sizes.precisions),
        "rows": [],
    }
    print(f"square float32 matmul FLOP/s: {result['matmul_flops_per_s']}", flush=True)
    _write(out, "bench.json", result)
    for d, cap in sizes.bench_configs:
        row = bench_row(d, cap, sizes, torch, tdev, kind)
        result["rows"].append(row)
        _write(out, "bench.json", result)
    return result


def _torch_matmul_setting(torch) -> dict | None:
    """How torch runs float32 matmuls on CUDA (its default: full float32, no TF32)."""
    if torch is None:
        return None
    m = torch.backends.cuda.matmul
    return {"allow_tf32": m.allow_tf32, "fp32_precision": str(getattr(m, "fp32_precision", "?"))}


def matmul_rates(size: int, precisions: tuple, repeats: int = 5) -> dict:
    """FLOP/s of a (size, size) @ (size, size) float32 matmul at each matmul precision."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcl.engine.precision import pinned

    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32)
    rates = {}
    for p in precisions:
        f = jax.jit(pinned(lambda x: x @ x, p))
        jax.block_until_ready(f(a))
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(f(a))
            times.append(time.perf_counter() - t)
        rates[p] = 2 * size**3 / float(np.median(times))
    return rates


def bench_row(d: int, cap: int, sizes: Sizes, torch, tdev: str, kind) -> dict:
    """One d of bench_stage."""
    import jax
    import numpy as np

    import _bench
    import peers
    from jaxcl.engine import programs
    from jaxcl.experiments.liao import EXPERIMENT, train

    sharding = programs.config_mesh()
    probe = dataclasses.replace(_bench._configs(_bench.Options(), d, 1)[0], **dict(sizes.shape))
    static = probe.static()
    flops = _bench.flops_per_config_step(
        static.K, static.L, d, static.d1, static.m, probe.dictionary == "identity"
    )["total"]
    fit = programs.auto_max_parallel(static, probe, sharding, batching="vmap")
    n = max(2, min(cap, fit or cap))
    rate = 0.3 * kind.f32_flops if kind else 2e10  # a guess, only to size the timed calls
    steps = int(min(50, max(2, sizes.bench_call_seconds * rate / (n * flops))))
    cfgs = [
        dataclasses.replace(c, **dict(sizes.shape))
        for c in _bench._configs(_bench.Options(steps=steps), d, n)
    ]
    ((block, n_pad),) = programs.plan_blocks(cfgs, sharding, max_parallel=n, batching="vmap")
    hp = jax.tree.map(
        lambda x: programs.global_array(x, sharding), programs.block_hparams(block, n_pad)
    )
    init_fn, chunk_fn = programs.compiled(EXPERIMENT, static, sharding, batching="vmap")
    t = time.perf_counter()
    state = jax.block_until_ready(init_fn(hp))
    chunk = chunk_fn.lower(hp, state).compile()
    compile_s = time.perf_counter() - t
    mem = _bench._memory(chunk)
    box = [state]

    def engine():
        box[0], metrics = chunk(hp, box[0])
        jax.block_until_ready(metrics["loss"])

    fns = {"engine": engine}
    row = {"d": d, "m": static.m, "d1": static.d1, "K": static.K, "L": static.L}
    row.update(configs=n, configs_fit=fit, configs_cap=cap, steps_per_call=steps)
    if torch is not None:
        first = jax.tree.map(lambda x: np.asarray(x[0]), state)
        c0 = cfgs[0]
        xa, xb, _ = train.batch(static, c0.hparams(), first, train._DATA, 0)
        row["torch_check"] = peers.check(torch, c0, first, xa, xb, device=tdev)
        p = np.asarray(peers._presence(c0))  # the seeds' configs share it
        peer = peers.Peer(
            torch,
            [c.resolved() for c in cfgs],
            np.array(state.M[:n]),
            np.repeat(p[None], n, axis=0),
            np.array(state.w[:n]),
            device=tdev,
        )

        def torch_batched():
            for _ in range(steps):
                peer.step(*peer.batch())
            if tdev == "cuda":
                torch.cuda.synchronize()

        fns["torch_batched"] = torch_batched
    for f in fns.values():
        f()  # warm: the engine's donated state, torch's kernels and allocator
    times = {k: [] for k in fns}
    for _ in range(sizes.bench_repeats):  # interleaved: the device's state hits all alike
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    rates = {k: n * steps / float(np.median(v)) for k, v in times.items()}
    row.update(
        compile_s=round(compile_s, 2),
        memory_bytes=mem,
        flops_per_config_step=flops,
        config_steps_per_s=rates,
        flops_per_s={k: r * flops for k, r in rates.items()},
        pct_f32_peak={k: 100 * r * flops / kind.f32_flops for k, r in rates.items()}
        if kind
        else None,
        pct_tf32_peak={k: 100 * r * flops / kind.tf32_flops for k, r in rates.items()}
        if kind
        else None,
        seconds=times,
    )
    print(
        f"d={d}: {n} configs ({fit or 'no'} fit), {steps} steps per call, compile "
        f"{compile_s:.1f} s; config-steps/s "
        + ", ".join(f"{k} {v:,.0f}" for k, v in rates.items()),
        flush=True,
    )
    return row


def precision_stage(out: str, sizes: Sizes) -> dict:
    """precision.json: the same configs trained for N steps by the engine at each matmul
    precision; seconds per chunk, the precision the compiled chunk's dots carry, and how far
    each precision's trained w and b end from "highest"'s."""
    import jax
    import numpy as np

    from jaxcl.engine import programs
    from jaxcl.experiments.liao import EXPERIMENT
    from jaxcl.experiments.liao.config import Config

    n, steps = sizes.precision_configs, sizes.precision_steps
    log_every = max(1, steps // 4)
    shape = dict(sizes.shape)
    cfgs = [
        Config(d=sizes.precision_d, C_m=1.5, steps=steps, log_every=log_every, seed=s, **shape)
        for s in range(n)
    ]
    static, sharding = cfgs[0].static(), programs.config_mesh()
    ((block, n_pad),) = programs.plan_blocks(cfgs, sharding, max_parallel=n, batching="vmap")
    hp = jax.tree.map(
        lambda x: programs.global_array(x, sharding), programs.block_hparams(block, n_pad)
    )
    runs = {}
    for p in sizes.precisions:
        init_fn, chunk_fn = programs.compiled(
            EXPERIMENT, static, sharding, batching="vmap", precision=p
        )
        state = init_fn(hp)
        t = time.perf_counter()
        lowered = chunk_fn.lower(hp, state)
        chunk = lowered.compile()
        compile_s = time.perf_counter() - t
        asked = sorted(set(re.findall(r"precision = \[(\w+), \w+\]", lowered.as_text())))
        compiled = sorted(set(_precision_attributes(chunk.as_text())))
        times, loss = [], None
        for _ in range(-(-steps // log_every)):
            t = time.perf_counter()
            state, metrics = chunk(hp, state)
            loss = np.asarray(metrics["loss"])
            times.append(time.perf_counter() - t)
        runs[p] = {
            "compile_s": round(compile_s, 2),
            "lowered_dot_precisions": asked,
            "compiled_precision_attributes": compiled,
            "seconds_per_chunk": float(np.median(times[1:] or times)),
            "final_loss": loss[:n].tolist(),
            "arrays": {k: np.asarray(getattr(state, k))[:n] for k in ("w", "b")},
        }
        print(
            f"{p}: {runs[p]['seconds_per_chunk'] * 1e3:.1f} ms per chunk; dots traced at "
            f"{asked}, compiled with {compiled}",
            flush=True,
        )
    ref = runs[sizes.precisions[0]]["arrays"]
    result = {
        "date_utc": _now(),
        "device_kind": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "configs": n,
        "d": sizes.precision_d,
        "m": static.m,
        "d1": static.d1,
        "steps": steps,
        "steps_per_chunk": log_every,
        "reference": sizes.precisions[0],
        "runs": {},
    }
    for p, r in runs.items():
        diff = {}
        for k, v in r.pop("arrays").items():
            delta = np.abs(v.astype(np.float64) - ref[k])
            diff[k] = {
                "max_abs": float(delta.max()),
                "max_abs_over_max": float(delta.max() / max(np.abs(ref[k]).max(), 1e-30)),
                "rel_frobenius": float(
                    np.linalg.norm(delta) / max(np.linalg.norm(ref[k].astype(np.float64)), 1e-30)
                ),
            }
        result["runs"][p] = {**r, "difference_from_reference": diff}
    _write(out, "precision.json", result)
    return result


def _precision_attributes(hlo: str) -> list[str]:
    """The precision and algorithm attributes in a compiled program's HLO text: a dot's
    `operand_precision={...}`, and on GPU the backend config of the library call a dot became
    (`"operand_precision":[...]`, `"algorithm":"..."`)."""
    pattern = r'(operand_precision=\{[^}]*\}|"operand_precision":\[[^\]]*\]|"algorithm":"\w+")'
    return re.findall(pattern, hlo)


def regime_slice(d: int, seeds: int, control: bool = True, source: str = REGIME) -> str:
    """A sweep file: sweeps/theorem33-regime.toml's [base] at one d, its arm inside the proof's
    weight-decay hypothesis (lam = 1/(4 d Xi_2) rounded down to two digits) and, with
    `control`, its control arm (jaxcl's default lam), seeds 0..seeds-1 each."""
    from jaxcl.experiments.liao import theory

    with open(source, "rb") as f:
        base = tomllib.load(f)["base"]
    cap = 1 / (4 * d * theory.xi2(d, base["C_m"], base["ratio"]))
    lam = math.floor(cap / 10 ** (math.floor(math.log10(cap)) - 1)) * 10 ** (
        math.floor(math.log10(cap)) - 1
    )
    seed_list = list(range(seeds))
    lines = [
        f"# A slice of sweeps/theorem33-regime.toml at d = {d}, {seeds} seed(s) per arm, written",
        "# by benchmarks/gpu_run.py: its [base]; lam <= 1/(4 d Xi_2) rounded down to two digits"
        + (" and the control arm (jaxcl's default lam)" if control else ""),
        "",
        "[base]",
        *(f"{k} = {_toml(v)}" for k, v in base.items()),
    ]
    if control:
        lines += ["", "[[grid]]", f"d = [{d}]", f"seed = {seed_list}"]
    lines += ["", "[[grid]]", f"d = [{d}]", f"lam = [{float(f'{lam:.2g}')!r}]"]
    lines += [f"seed = {seed_list}", ""]
    return "\n".join(lines)


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def science_plan_stage(work: str, sizes: Sizes, deadline: float) -> dict:
    """science-plan.json and the sweep file of the science run: the largest slice of the regime
    sweep (largest d, then most seeds, both arms before one) whose `jaxcl plan` estimate,
    calibrated on this device, ends before `deadline` (epoch seconds) less the run's start-up.
    """
    import jax

    from jaxcl.engine import plan, programs, protocol
    from jaxcl.engine.options import CHUNK_SECONDS
    from jaxcl.engine.sweep import group_by_static, loads

    sharding = programs.config_mesh()
    batching = programs.resolve_batching("auto")
    tried, chosen = [], None
    for d in sizes.science_ds:
        cands = [(s, True) for s in sizes.science_seeds] + [(min(sizes.science_seeds), False)]
        texts = [regime_slice(d, s, control) for s, control in cands]
        configs = loads(texts[0]).configs()
        t = time.perf_counter()
        cal = {
            k: plan.calibrate(g, sharding, batching) for k, g in group_by_static(configs).items()
        }
        calibration_s = time.perf_counter() - t
        for (seeds, control), text in zip(cands, texts):
            est = plan.estimate(loads(text).configs(), sharding, batching, None, CHUNK_SECONDS, cal)
            left = deadline - time.time() - STARTUP_SECONDS
            entry = {
                "d": d,
                "seeds": seeds,
                "control_arm": control,
                "configs": len(loads(text).configs()),
                "estimated_seconds": round(est["seconds"], 1),
                "seconds_left": round(left, 1),
                "calibration": {
                    f"{k[0]} {protocol.get(k[0]).describe(k[1])}": v for k, v in cal.items()
                },
                "calibration_seconds": round(calibration_s, 1),
            }
            tried.append(entry)
            print(
                f"d={d}, {seeds} seed(s) per arm{'' if control else ', lam arm only'}: "
                f"estimated {est['seconds']:.0f} s, {left:.0f} s left",
                flush=True,
            )
            if est["seconds"] <= left:
                chosen = entry
                break
        if chosen:
            break
    result = {
        "date_utc": _now(),
        "device_kind": jax.devices()[0].device_kind,
        "batching": batching,
        "tried": tried,
        "chosen": chosen,
        "sweep": None,
    }
    if chosen:
        path = os.path.join(work, f"theorem33-regime-d{chosen['d']}-slice.toml")
        with open(path, "w") as f:
            f.write(regime_slice(chosen["d"], chosen["seeds"], chosen["control_arm"]))
        result["sweep"] = path
    _write(work, "science-plan.json", result)
    return result


# `jaxcl run`'s own start (imports, devices) before its first compile
STARTUP_SECONDS = 15.0


def _write(out: str, name: str, obj) -> None:
    path = os.path.join(out, name)
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1, default=float)
    os.replace(path + ".tmp", path)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
