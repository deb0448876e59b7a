"""What the run directory records about each `jaxcl run`: the invocation record (when, what, where,
how long, how it ended) and the command line it was started with."""

from __future__ import annotations

import os
import sys
import time

import jax

from jaxcl.engine.lock import Shard


def invocation(started: str, t0: float, outcome: str, summary,
               shard: Shard | None = None) -> dict:
    """One `jaxcl run` for the manifest's history: when, what, where, how long, how it ended."""
    import platform
    import socket
    import subprocess

    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"],
                                capture_output=True, text=True, timeout=5,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    from jaxcl.engine import slurm

    leg = slurm.leg()  # the job and leg under Slurm
    return {**({"slurm": leg} if leg else {}),
            "started": started, "seconds": round(time.perf_counter() - t0, 1),
            "outcome": outcome, "shard": None if shard is None else str(shard),
            "done": len(summary.done), "failed": len(summary.failed),
            "resumed": summary.resumed, "checkpoints": summary.checkpoints,
            "checkpoint_seconds": round(summary.checkpoint_seconds, 2),
            "command": command(),
            "host": socket.gethostname(), "cpu": f"{cpu_model() or platform.machine()}, "
            f"{os.cpu_count()} cores", "commit": commit or "unknown",
            "devices": f"{jax.device_count()} {jax.default_backend()} device(s), "
                       f"{jax.process_count()} process(es)"}


def command() -> str:
    import shlex

    if sys.argv and sys.argv[0].endswith(("jaxcl", "__main__.py", "cli.py")):
        return shlex.join(["jaxcl"] + sys.argv[1:])
    return "jaxcl.engine.runner.run"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""
