"""The options of a run (`RunOptions`: every `jaxcl run` flag, which `jaxcl.run` takes as keyword
arguments) and of its checkpoints, validated once where they are given. Run options never change
a config id or a result. Imports no JAX: the CLI checks them before any backend starts."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from jaxcl.engine import precision
from jaxcl.engine.lock import Shard
from jaxcl.errors import ConfigError

# A stop request (SIGTERM, Slurm's warning signal) is honoured at the end of the running chunk,
# so the time a chunk of a block takes is the stop's latency. By default blocks are sized for
# chunks of about this many seconds (`--chunk-seconds`).
CHUNK_SECONDS = 10.0

# How a device runs its configs (`programs.resolve_batching`).
BATCHINGS = ("auto", "sequential", "vmap")
# The run options a sweep file's [sweep] table may set (where no flag is given), and the TOML
# type each takes there.
SWEEP_TABLE = {
    "max_parallel": int,
    "batching": str,
    "checkpoint_every_steps": int,
    "checkpoint_every_seconds": int,
    "keep_checkpoints": int,
    "matmul_precision": str,
}
# Each option's type and least value, checked by `RunOptions` (None: any value of the type).
_KINDS = {
    "compile_cache": (str, None),
    "coordinator": (str, None),
    "max_parallel": (int, 1),
    "cpu_devices": (int, 1),
    "num_processes": (int, 1),
    "keep_checkpoints": (int, 1),
    "checkpoint_every_steps": (int, 0),
    "requeue": (int, 0),
    "process_id": (int, 0),
    "checkpoint_every_seconds": (float, 0),
    "chunk_seconds": (float, 0),
}


@dataclasses.dataclass(frozen=True)
class CheckpointOptions:
    """When to checkpoint; run options, not science config (they never change config ids).

    A checkpoint is saved at the first chunk boundary at or past every `every_steps` steps
    and/or once `every_seconds` of wall time have passed since the last one (0 turns either
    off), always on SIGTERM/SIGINT, and the last `keep` are kept.
    """

    every_steps: int = 0
    every_seconds: float = 300.0
    keep: int = 3

    def __post_init__(self):
        for name in ("every_steps", "every_seconds"):
            if getattr(self, name) < 0:
                raise ConfigError(f"checkpoint {name} = {getattr(self, name)!r}: must be >= 0")
        if self.keep < 1:
            raise ConfigError(f"checkpoint keep = {self.keep!r}: must be >= 1")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Every option of `jaxcl run`, named as its flag with underscores (`lock=False` is
    `--no-lock`, `progress=False` `--no-progress`). None means the flag was not given: the
    sweep file's [sweep] table, then the default, decide (`with_sweep`).

    Attributes:
      shard: this task's slice of the grid: a `Shard`, or "I/N" or "auto" (`parse_shard`).
      max_parallel: at most this many configs per compiled block (memory bound).
      batching: how a device runs its configs (`programs.resolve_batching`): "auto",
        "sequential" or "vmap".
      force_new: move a run directory of another sweep aside instead of refusing it.
      progress: progress bars on or off (None: on when stderr is a terminal).
      lock: hold the run directory's lock while running.
      compile_cache: JAX's persistent compilation cache directory, or "off"
        (`launch.compile_cache`).
      cpu_devices: on CPU, split the host into this many JAX devices.
      checkpoint_every_steps, checkpoint_every_seconds, keep_checkpoints: `CheckpointOptions`.
      chunk_seconds: size blocks so that a chunk takes about this long (0: as memory allows).
      matmul_precision: the float32 matmul precision of every compiled program
        (`jaxcl.engine.precision`: "highest" by default); recorded in each invocation record.
      requeue: under Slurm, once stopped and saved, requeue the job unless it was requeued
        this many times.
      coordinator, num_processes, process_id, distributed: jax.distributed.initialize's.

    Raises:
      ConfigError: a bad value, naming the option and the value, before anything compiles.
    """

    shard: Shard | str | None = None
    max_parallel: int | None = None
    batching: str | None = None
    force_new: bool = False
    progress: bool | None = None
    lock: bool = True
    compile_cache: str | None = None
    cpu_devices: int | None = None
    checkpoint_every_steps: int | None = None
    checkpoint_every_seconds: float | None = None
    keep_checkpoints: int | None = None
    chunk_seconds: float | None = None
    matmul_precision: str | None = None
    requeue: int | None = None
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    distributed: bool = False

    def __post_init__(self):
        if isinstance(self.shard, str):
            object.__setattr__(self, "shard", parse_shard(self.shard))
        elif self.shard is not None and not isinstance(self.shard, Shard):
            raise ConfigError(f"--shard = {self.shard!r}: expected I/N (e.g. 0/4) or auto")
        for name in ("force_new", "lock", "distributed", "progress"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (name == "progress" and value is None):
                raise ConfigError(f"option {name} = {value!r}: expected True or False")
        for name, (kind, low) in _KINDS.items():
            _check("--" + name.replace("_", "-"), getattr(self, name), kind, low)
        if self.batching is not None and self.batching not in BATCHINGS:
            raise ConfigError(
                f"--batching = {self.batching!r}: expected one of {', '.join(BATCHINGS)}"
            )
        if self.matmul_precision is not None:
            _precision("--matmul-precision", self.matmul_precision)

    def with_sweep(self, table: dict) -> "RunOptions":
        """These options with the sweep file's [sweep] run options (`SWEEP_TABLE`, checked by
        `check_sweep_table` when the sweep was read) where no flag was given (a flag beats the
        file), and every default filled in: `batching` "auto", `chunk_seconds` CHUNK_SECONDS,
        `matmul_precision` precision.DEFAULT, the checkpoint options CheckpointOptions()'s.
        """
        filled = {n: table[n] for n in SWEEP_TABLE if getattr(self, n) is None and n in table}
        defaults = CheckpointOptions()
        merged = dataclasses.replace(self, **filled)
        return dataclasses.replace(
            merged,
            batching=merged.batching or "auto",
            chunk_seconds=CHUNK_SECONDS if merged.chunk_seconds is None else merged.chunk_seconds,
            matmul_precision=merged.matmul_precision or precision.DEFAULT,
            checkpoint_every_steps=_given(merged.checkpoint_every_steps, defaults.every_steps),
            checkpoint_every_seconds=_given(
                merged.checkpoint_every_seconds, defaults.every_seconds
            ),
            keep_checkpoints=_given(merged.keep_checkpoints, defaults.keep),
        )

    @property
    def checkpoints(self) -> CheckpointOptions:
        """The checkpoint options (those of `with_sweep`'s result; defaults where not given)."""
        given = {
            "every_steps": self.checkpoint_every_steps,
            "every_seconds": self.checkpoint_every_seconds,
            "keep": self.keep_checkpoints,
        }
        return CheckpointOptions(**{k: v for k, v in given.items() if v is not None})

    @classmethod
    def names(cls) -> list[str]:
        """The option names, in the order of `jaxcl run --help`."""
        return [f.name for f in dataclasses.fields(cls)]


def _given(value, default):
    return default if value is None else value


def _check(label: str, value: Any, kind: type, low: float | None) -> None:
    """An option's value against its type (a float option takes an int too) and least value."""
    if value is None:
        return
    ok = isinstance(value, (int, float) if kind is float else kind) and not isinstance(value, bool)
    if ok and kind is float and not math.isfinite(value):
        raise ConfigError(f"{label} = {value!r}: must be a finite number >= {low:g}")
    if not ok:
        raise ConfigError(
            f"{label} = {value!r}: expected {'a number' if kind is float else kind.__name__}"
        )
    if low is not None and value < low:
        raise ConfigError(f"{label} = {value!r}: must be >= {low:g}")


def _precision(label: str, value: Any) -> None:
    if value not in precision.CHOICES:
        raise ConfigError(
            f"{label} = {value!r}: expected one of {', '.join(precision.CHOICES)} "
            "(the float32 matmul precision)"
        )


def check_sweep_table(table: dict, source: str) -> None:
    """A sweep file's [sweep] table: its `name`, and run options of `SWEEP_TABLE`, each of its
    type and in range.

    Raises:
      ConfigError: naming the file, the option and the value.
    """
    known = {"name": str, **SWEEP_TABLE}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(
                f"{source}: [sweep] unknown option {key!r} (value {value!r}); "
                f"known: {', '.join(known)}"
            )
        if not isinstance(value, known[key]) or isinstance(value, bool):
            raise ConfigError(
                f"{source}: [sweep] option {key!r} = {value!r}: expected {known[key].__name__}"
            )
        if key in _KINDS:
            _check(f"{source}: [sweep] option {key!r}", value, *_KINDS[key])
    if "matmul_precision" in table:
        _precision(f"{source}: [sweep] option 'matmul_precision'", table["matmul_precision"])
    if table.get("batching", "auto") not in BATCHINGS:
        raise ConfigError(
            f"{source}: [sweep] option 'batching' = {table['batching']!r}: "
            f"expected one of {', '.join(BATCHINGS)}"
        )


def parse_shard(text: str, env: dict | None = None) -> Shard:
    """--shard I/N (0 <= I < N), or 'auto': I = SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN,
    N = SLURM_ARRAY_TASK_COUNT (an `sbatch --array=0-7` or `--array=1-8` job).

    Raises:
      ConfigError: naming the value and what it should be.
    """
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
