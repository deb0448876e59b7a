"""The stages of benchmarks/gpu_run.py, one prepared run on a GPU lent for a few minutes: the
environment, the gpu_smoke tests, the engine against batched PyTorch, "highest" float32 matmuls
against TF32, and a slice of the Theorem 3.3 regime sweep that `jaxcl plan` says fits.

Each stage runs as its own process under a time budget (a stuck compile cannot overrun the
whole: the process is stopped, and the summary says so) and writes one file of at most 8 under
--out: env.json, smoke.xml (pytest's JUnit XML), bench.json, precision.json, science.tar.gz
(the science run's finals and rows), summary.json and gpu_run.log. `--dry-run` runs every stage
on the CPU at tiny sizes, so that the test suite keeps the script working.

The driver is here; the stages are in benchmarks/_gpu_env.py and benchmarks/_gpu_stages.py.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

# the stages (each in its own process), here for benchmarks/gpu_run.py and the tests
from _gpu_env import env_stage, nvidia_smi  # noqa: F401
from _gpu_stages import (  # noqa: F401
    REGIME,
    STARTUP_SECONDS,
    bench_row,
    bench_stage,
    matmul_rates,
    precision_stage,
    regime_slice,
    science_plan_stage,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_run.py")
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
    "benchmarks/_gpu_env.py",
    "benchmarks/_gpu_stages.py",
    "benchmarks/_bench.py",
    "benchmarks/_bench_tools.py",
    "benchmarks/peers.py",
    "benchmarks/_peers_torch.py",
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
