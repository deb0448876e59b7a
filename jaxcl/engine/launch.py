"""Launching a sweep: what `jaxcl run` does once its arguments are parsed, shared by the command
line and `jaxcl.run` (the CPU split into devices, the compile cache, job-array slices,
jax.distributed, checkpoint options)."""

from __future__ import annotations

import os


def parse_shard(text: str, env: dict | None = None):
    """--shard I/N (0 <= I < N), or 'auto': I = SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN,
    N = SLURM_ARRAY_TASK_COUNT (an `sbatch --array=0-7` or `--array=1-8` job).

    Raises:
      ConfigError: naming the value and what it should be.
    """
    from jaxcl.engine.rundir import Shard
    from jaxcl.errors import ConfigError

    env = os.environ if env is None else env
    if text == "auto":
        try:
            i = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
            n = int(env["SLURM_ARRAY_TASK_COUNT"])
        except KeyError as e:
            raise ConfigError(
                f"--shard auto: ${e.args[0]} is not set (not a Slurm job array "
                "task); give --shard I/N"
            ) from None
        except ValueError:
            raise ConfigError(
                "--shard auto: SLURM_ARRAY_TASK_ID/MIN/COUNT are not integers "
                f"({env.get('SLURM_ARRAY_TASK_ID')!r}, "
                f"{env.get('SLURM_ARRAY_TASK_MIN')!r}, "
                f"{env.get('SLURM_ARRAY_TASK_COUNT')!r})"
            ) from None
        where = "--shard auto (from SLURM_ARRAY_TASK_*)"
    else:
        try:
            i, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise ConfigError(f"--shard = {text!r}: expected I/N (e.g. 0/4) or auto") from None
        where = f"--shard = {text!r}"
    if not 0 <= i < n:
        raise ConfigError(f"{where}: slice {i} of {n}: need 0 <= I < N (slices count from 0)")
    return Shard(i, n)


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


_enable_compile_cache = compile_cache  # run_sweep's argument of that name shadows it


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


def _checkpoint_options(options: dict, every_steps, every_seconds, keep):
    """Arguments override the sweep file's [sweep] options, which override the defaults."""
    from jaxcl.engine.checkpoint import CheckpointOptions

    picked = {
        "every_steps": (every_steps, "checkpoint_every_steps"),
        "every_seconds": (every_seconds, "checkpoint_every_seconds"),
        "keep": (keep, "keep_checkpoints"),
    }
    return CheckpointOptions(
        **{
            k: flag if flag is not None else options[key]
            for k, (flag, key) in picked.items()
            if flag is not None or key in options
        }
    )


_compile_cache = compile_cache  # run_sweep's argument of that name shadows the function


def run_sweep(
    sw,
    out: str,
    *,
    shard: str | None = None,
    max_parallel: int | None = None,
    batching: str | None = None,
    force_new: bool = False,
    progress: bool | None = None,
    lock: bool = True,
    compile_cache: str | None = None,
    cpu_devices: int | None = None,
    checkpoint_every_steps: int | None = None,
    checkpoint_every_seconds: float | None = None,
    keep_checkpoints: int | None = None,
    chunk_seconds: float | None = None,
    requeue: int | None = None,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    distributed: bool = False,
    log=print,
):
    """What `jaxcl run` does once the sweep is parsed (the CLI and `jaxcl.run` call this): checks
    the options, splits the CPU into devices, starts jax.distributed if asked, turns on the
    compile cache, and runs the sweep under the run directory's lock. Each argument is the
    `jaxcl run` flag of the same name (`lock=False` is `--no-lock`, `progress=False`
    `--no-progress`; None: the flag's default). Under jax.distributed only process 0 prints.

    Returns:
      runner.Summary: what was done, skipped and failed (this process's configs).

    Raises:
      ConfigError: a bad option or config, before anything compiles.
      RunDirBusy: another run holds the directory.
      signals.Interrupted: stopped by SIGINT/SIGTERM/SIGUSR1 after a checkpoint (with
        `requeue`, its `.requeue` says what the requeue did); rerunning resumes.
    """
    from jaxcl.engine import sweep as sweep_mod
    from jaxcl.errors import ConfigError

    if max_parallel is not None and max_parallel < 1:
        raise ConfigError(f"--max-parallel = {max_parallel}: must be >= 1")
    if cpu_devices is not None and cpu_devices < 1:
        raise ConfigError(f"--cpu-devices = {cpu_devices}: must be >= 1")
    if chunk_seconds is not None and not 0 <= chunk_seconds < float("inf"):
        raise ConfigError(f"--chunk-seconds = {chunk_seconds}: must be a finite number >= 0")
    if requeue is not None and requeue < 0:
        raise ConfigError(f"--requeue = {requeue}: must be >= 0")
    shard = parse_shard(shard) if shard else None
    if shard is not None and shard.count > len(sw.configs()):
        raise ConfigError(
            f"--shard {shard}: the grid has only {len(sw.configs())} configs, "
            f"fewer than {shard.count} slices"
        )
    mine = sweep_mod.shard_configs(sw.configs(), shard) if shard else sw.configs()
    # One device per core, but no more than the smallest shape group has configs: a group
    # smaller than the device count is padded, and padding rows would take cores from it.
    smallest = min(len(g) for g in sweep_mod.group_by_static(mine).values())
    split_cpu(cpu_devices or min(usable_cores(), smallest))
    if coordinator or distributed:
        import jax

        # CPU processes need gloo for the cross-process barriers (GPU/TPU have their own).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
        )
    cache = _compile_cache(compile_cache)
    from jaxcl.engine import runner

    import jax

    if jax.process_index() == 0:  # one banner for the whole job
        log(
            f"jaxcl: {len(mine)} configs in {len(sweep_mod.group_by_static(mine))} shape groups "
            + (f"(slice {shard} of a {len(sw.configs())}-config grid) " if shard else "")
            + f"on {jax.device_count()} {jax.default_backend()} device(s) -> {out}"
            + (f" (compile cache {cache})" if cache else "")
        )
    ckpt = _checkpoint_options(
        sw.options, checkpoint_every_steps, checkpoint_every_seconds, keep_checkpoints
    )
    return runner.run(
        sw,
        out,
        lock=lock,
        shard=shard,
        max_parallel=max_parallel,
        force_new=force_new,
        batching=batching,
        progress=progress,
        checkpoints=ckpt,
        requeue=requeue,
        **({} if chunk_seconds is None else {"chunk_seconds": chunk_seconds}),
    )
