"""The flags of `jaxcl run` (every field of RunOptions, the overrides and the multi-process
options), added to its subparser by the command line."""

from __future__ import annotations

import argparse


def add(run: argparse.ArgumentParser, matmul: dict) -> None:
    """Adds `jaxcl run`'s arguments to its subparser; `matmul`: the --matmul-precision keywords
    it shares with `jaxcl plan`."""
    from jaxcl.engine.options import BATCHINGS

    run.add_argument("sweep", help="sweep TOML file with [base] and [grid] tables")
    run.add_argument("--out", required=True, help="run directory")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a Config field in every config of the grid (repeatable)",
    )
    run.add_argument(
        "--max-parallel",
        type=int,
        default=None,
        help="at most this many configs per compiled batch (memory bound)",
    )
    run.add_argument(
        "--batching",
        choices=BATCHINGS,
        default=None,
        help="how each device runs its configs: one after another (sequential, "
        "auto's choice on CPU) or all at once (vmap, auto's choice on GPU/TPU); "
        "default: [sweep] batching, else auto",
    )
    run.add_argument(
        "--force-new",
        action="store_true",
        help="move an existing run directory of another sweep aside and start anew",
    )
    run.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="run slice I of N of the grid (0 <= I < N) into the shared run "
        "directory, as one task of a job array; 'auto' takes I and N from "
        "SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_COUNT",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--no-lock",
        action="store_true",
        help="run without the run directory's lock (only where the file system "
        "refuses locks and no other run uses the directory)",
    )
    run.add_argument(
        "--compile-cache",
        default=None,
        metavar="DIR",
        help="JAX's persistent compilation cache: reruns and resumes skip compiling "
        "(default: $JAXCL_COMPILE_CACHE, else $JAX_COMPILATION_CACHE_DIR, else "
        "~/.cache/jaxcl/xla; 'off' to turn it off)",
    )
    run.add_argument(
        "--cpu-devices",
        type=int,
        default=None,
        metavar="N",
        help="on CPU, split the host into N JAX devices that the configs are "
        "sharded over (default: one per core, at most the smallest shape group's size; "
        "ignored if XLA_FLAGS sets a count)",
    )
    run.add_argument(
        "--chunk-seconds",
        type=float,
        default=None,
        metavar="S",
        help="size blocks so that one chunk takes about S seconds: a stop request "
        "(SIGTERM, Slurm's warning signal) is honoured at the end of the running "
        "chunk (default 10; 0: blocks as large as memory allows). Never changes a "
        "result",
    )
    run.add_argument("--matmul-precision", **matmul)
    run.add_argument(
        "--requeue",
        type=int,
        nargs="?",
        const=20,
        default=None,
        metavar="N",
        help="in a Slurm batch job: after the warning signal (#SBATCH "
        "--signal=B:USR1@SECONDS) or SIGTERM, save, then requeue this job or "
        "array task (scontrol requeue) unless $SLURM_RESTART_COUNT reached N "
        "(default 20); the next leg resumes",
    )
    ck = run.add_argument_group("checkpoints (run options: they never change config ids)")
    ck.add_argument(
        "--checkpoint-every-steps",
        type=int,
        default=None,
        metavar="N",
        help="checkpoint at the first chunk boundary past every N steps (0: off; "
        "default 0, or [sweep] checkpoint_every_steps)",
    )
    ck.add_argument(
        "--checkpoint-every-seconds",
        type=float,
        default=None,
        metavar="S",
        help="checkpoint once S seconds passed since the last one (0: off; "
        "default 300, or [sweep] checkpoint_every_seconds)",
    )
    ck.add_argument(
        "--keep-checkpoints",
        type=int,
        default=None,
        metavar="K",
        help="keep the last K checkpoints of a block (default 3, or [sweep] keep_checkpoints)",
    )
    dist = run.add_argument_group("multi-process (jax.distributed)")
    dist.add_argument("--coordinator", default=None, metavar="HOST:PORT")
    dist.add_argument("--num-processes", type=int, default=None)
    dist.add_argument("--process-id", type=int, default=None)
    dist.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() with auto-detection (Slurm, TPU)",
    )
