"""Launching a sweep: what `jaxcl run` does once its arguments are parsed, shared by the command
line and `jaxcl.run` (the CPU split into devices, jax.distributed, the compile cache), then the
runner."""

from __future__ import annotations

import dataclasses
import os

from jaxcl.engine.options import RunOptions
from jaxcl.engine.sweep import Work


def compile_cache(path: str | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache and returns its directory (None: off).

    A shape group's programs take seconds each to compile on CPU, most of a small sweep's time
    (sweeps/theorem33.toml: 44-64 s cold, 27-32 s with the cache warm); with the cache, rerunning,
    resuming or sweeping the same shapes again skips that. Directory: `path`, else
    $JAXCL_COMPILE_CACHE, else $JAX_COMPILATION_CACHE_DIR, else $XDG_CACHE_HOME/jaxcl/xla
    (~/.cache/jaxcl/xla); "off" turns it off. A cache that cannot be read or written only warns.
    """
    path = (
        path
        or os.environ.get("JAXCL_COMPILE_CACHE")
        or os.environ.get("JAX_COMPILATION_CACHE_DIR")
        or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
            "jaxcl",
            "xla",
        )
    )
    if path == "off":
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    return path


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def split_cpu(n: int | None = None) -> None:
    """Makes JAX's CPU backend n devices (default: one per usable core) via XLA_FLAGS.

    Sharding the configs over one device per core runs a sweep ~10% faster on CPU than one
    device using every core (benchmarks/throughput.py). Must run before JAX starts a backend;
    a device count already in XLA_FLAGS is the user's and is kept. No effect on GPU/TPU.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    n = usable_cores() if n is None else n
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def cpu_devices(work: Work, requested: int | None = None) -> int:
    """How many CPU devices to split the host into for `work`: `requested`, else one per core
    but no more than the smallest shape group has configs (a group smaller than the device
    count is padded, and padding rows would take cores from it)."""
    return requested or min(usable_cores(), min(len(g) for g in work.groups.values()))


def run_sweep(sw, out: str, options: RunOptions | None = None, *, log=print, **fields):
    """What `jaxcl run` does once the sweep is parsed (the CLI and `jaxcl.run` call this): slices
    and groups the sweep, splits the CPU into devices, starts jax.distributed if asked, turns on
    the compile cache, and runs the sweep under the run directory's lock (`runner.run`). Under
    jax.distributed only process 0 prints.

    Args:
      sw: the parsed sweep.
      out: the run directory.
      options: the run options (`**fields`: a shorthand for them, e.g. `max_parallel=2`).
      log: where messages go.

    Returns:
      runner.Summary: what was done, skipped and failed (this process's configs).

    Raises:
      ConfigError: a bad option or config, before anything compiles.
      RunDirBusy: another run holds the directory.
      signals.Interrupted: stopped by SIGINT/SIGTERM/SIGUSR1 after a checkpoint (with
        `requeue`, its `.requeue` says what the requeue did); rerunning resumes.
    """
    options = dataclasses.replace(options or RunOptions(), **fields).with_sweep(sw.options)
    work = Work.of(sw, options.shard)
    split_cpu(cpu_devices(work, options.cpu_devices))
    if options.coordinator or options.distributed:
        import jax

        # CPU processes need gloo for the cross-process barriers (GPU/TPU have their own).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=options.coordinator,
            num_processes=options.num_processes,
            process_id=options.process_id,
        )
    cache = compile_cache(options.compile_cache)
    import jax

    from jaxcl.engine import runner

    if jax.process_index() == 0:  # one banner for the whole job
        shard = options.shard
        log(
            f"jaxcl: {len(work.mine)} configs in {len(work.groups)} shape groups "
            + (f"(slice {shard} of a {len(work.configs)}-config grid) " if shard else "")
            + f"on {jax.device_count()} {jax.default_backend()} device(s) -> {out}"
            + (f" (compile cache {cache})" if cache else "")
        )
    return runner.run(work, out, options, log=log)
