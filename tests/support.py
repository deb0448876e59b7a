"""Shared by the end-to-end tests: a tiny sweep, and the environment of a `jaxcl` subprocess."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_sweep(steps: int | None, grid: str = "ratio = [0.5, 1.0]\nseed = [0, 1, 2]") -> str:
    """Tiny liao configs in one shape group: by default 6 (2 ratios x 3 seeds); `grid` replaces
    the [grid] table's lines, and `steps = None` leaves steps to it."""
    steps_line = "" if steps is None else f"steps = {steps}\n"
    return f"""
[base]
d = 5
m = 6
L = 3
K = 8
{steps_line}log_every = 10

[grid]
{grid}
"""


def mixed_sweep(steps: int) -> str:
    """tiny_sweep's 6 liao configs and 2 geometry configs: a grid over experiments."""
    return f"""
[base]
steps = {steps}
log_every = 10

[[grid]]
d = [5]
m = [6]
L = [3]
K = [8]
ratio = [0.5, 1.0]
seed = [0, 1, 2]

[[grid]]
experiment = ["geometry"]
samples_major = [5]
p = [4]
batch = [16]
negatives = [3]
ratio = [0.4]
seed = [0, 1]
"""


def xla_flags(devices: int) -> str:
    """The caller's XLA_FLAGS with `devices` CPU devices: its other flags are kept, so that a
    subprocess compiles as this process does (dev.py's second pass runs under an ISA cap)."""
    flags = [
        f
        for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    return " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])


def cli_env(devices: int = 2, cache: str | None = None) -> dict:
    """Environment for `python -m jaxcl` from this checkout with `devices` CPU devices.

    `cache`: a persistent compilation cache directory shared by the subprocesses (each would
    otherwise spend most of its time compiling the same programs).
    """
    env = {
        **os.environ,
        "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "XLA_FLAGS": xla_flags(devices),
    }
    env["JAXCL_COMPILE_CACHE"] = cache or "off"  # never the user's ~/.cache from a test
    if cache:
        env.update(
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )
    return env
