"""What the run directory records about each `jaxcl run`: the invocation record (when, what, where,
how long, how it ended) and the command line it was started with."""

from __future__ import annotations

import os
import sys
import time

import jax

from jaxcl.engine.lock import Shard


def invocation(
    started: str,
    t0: float,
    outcome: str,
    summary,
    shard: Shard | None = None,
    env_changed: list[str] | None = None,
    matmul_precision: str | None = None,
) -> dict:
    """One `jaxcl run` for the manifest's history: when, what, where, how long, how it ended,
    and what decides its last bits: the environment (`environment`) and the float32 matmul
    precision its programs were compiled at (None: `precision.DEFAULT`); `env_changed` lists
    how these differ from the run directory's previous invocation (`environment_changes`)."""
    from jaxcl.engine import precision
    from jaxcl.engine import slurm

    leg = slurm.leg()  # the job and leg under Slurm
    return {
        **({"slurm": leg} if leg else {}),
        **provenance(started, t0),
        "outcome": outcome,
        "shard": None if shard is None else str(shard),
        "done": len(summary.done),
        "failed": len(summary.failed),
        "resumed": summary.resumed,
        "checkpoints": summary.checkpoints,
        "checkpoint_seconds": round(summary.checkpoint_seconds, 2),
        "environment_changed": env_changed or [],
        "matmul_precision": precision.check(matmul_precision),
    }


def provenance(started: str, t0: float) -> dict:
    """What any jaxcl command that writes results records about itself (`jaxcl run`'s
    invocations, `jaxcl init-stats`): when it started, how long it took, the command line, the
    machine, the commit and the environment."""
    import platform
    import socket
    import subprocess

    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=7"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "started": started,
        "seconds": round(time.perf_counter() - t0, 1),
        "command": command(),
        "host": socket.gethostname(),
        "cpu": f"{cpu_model() or platform.machine()}, {os.cpu_count()} cores",
        "commit": commit or "unknown",
        "devices": f"{jax.device_count()} {jax.default_backend()} device(s), "
        f"{jax.process_count()} process(es)",
        "environment": environment(),
    }


# What decides a result's last bits besides its config: the compiler and its target (docs/engine.md,
# "Reproducing across machines"). The device count does not: configs are sharded, never split.
BITWISE_KEYS = ("jax", "jaxlib", "backend", "cpu", "isa", "xla_flags")


def environment() -> dict:
    """The versions, CPU and compiler flags a run was compiled under, and which of the
    packages that compute its numbers differ from requirements.lock (`lock_differences`)."""
    import platform

    import jaxlib

    return {
        "jax": jax.__version__,
        "jaxlib": getattr(jaxlib, "__version__", "?"),
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "cpu": cpu_model() or platform.machine(),
        "isa": cpu_isa(),
        # the device count is recorded under "devices" and changes no result
        "xla_flags": " ".join(
            f
            for f in os.environ.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")
        ),
        "lock_differences": lock_differences(),
    }


# requirements.lock of a source checkout (absent from an installed wheel): the exact versions
# behind results/ and CI
LOCK = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "requirements.lock"
)
# The packages whose version can change a result's numbers: the compiler and runtime, and what
# computes inside the programs or writes their arrays
NUMERIC_PACKAGES = ("jax", "jaxlib", "numpy", "ml_dtypes", "optax", "chex", "orbax-checkpoint")


def locked_versions(path: str = LOCK) -> dict[str, str]:
    """{package: version} pinned by a requirements.lock ({} if there is none)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    pins = (line.split("#")[0].strip().split("==") for line in lines)
    return {p[0].strip().lower().replace("_", "-"): p[1].strip() for p in pins if len(p) == 2}


def lock_differences(packages=NUMERIC_PACKAGES, path: str = LOCK) -> list[str]:
    """The installed packages among `packages` (None: every locked one) whose version is not
    requirements.lock's, as "jax 0.11.2 (requirements.lock: 0.10.2)"; [] without a lock."""
    from importlib import metadata

    locked = locked_versions(path)
    names = locked if packages is None else [p.lower().replace("_", "-") for p in packages]
    out = []
    for name in names:
        if name not in locked:
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if installed != locked[name]:
            out.append(f"{name} {installed} (requirements.lock: {locked[name]})")
    return out


def environment_changes(
    previous: list[dict], now: dict, matmul_precision: str | None = None
) -> list[str]:
    """How `now` (and, if given, the run's `matmul_precision`) differs from the last recorded
    environment (and precision) of `previous` invocation records, oldest first; records from
    before either was recorded are skipped."""
    before = next((r["environment"] for r in reversed(previous) if r.get("environment")), None)
    changed = [
        f"{k}: {before.get(k, '?')!r} -> {now.get(k, '?')!r}"
        for k in BITWISE_KEYS
        if before is not None and before.get(k) != now.get(k)
    ]
    was = next((r["matmul_precision"] for r in reversed(previous) if "matmul_precision" in r), None)
    if matmul_precision is not None and was is not None and was != matmul_precision:
        changed.append(f"matmul_precision: {was!r} -> {matmul_precision!r}")
    return changed


def command() -> str:
    import shlex

    if sys.argv and sys.argv[0].endswith(("jaxcl", "__main__.py", "cli.py")):
        return shlex.join(["jaxcl"] + sys.argv[1:])
    return "jaxcl.engine.runner.run"


def cpu_isa() -> str:
    """The widest x86 vector extension the CPU reports (avx512f, avx2, avx, sse4_2), or the
    machine's architecture elsewhere. XLA compiles for it unless XLA_FLAGS caps it."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return next(
                        (x for x in ("avx512f", "avx2", "avx", "sse4_2") if x in flags),
                        platform.machine(),
                    )
    except OSError:
        pass
    return platform.machine()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""
