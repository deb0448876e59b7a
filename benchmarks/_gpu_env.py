"""benchmarks/gpu_run.py's env stage (env.json, nvidia-smi) and the JSON writer of every stage."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _gpu import Sizes


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


def _write(out: str, name: str, obj) -> None:
    path = os.path.join(out, name)
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1, default=float)
    os.replace(path + ".tmp", path)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
