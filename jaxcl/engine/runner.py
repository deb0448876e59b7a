"""The one driver that does I/O: runs a sweep's groups as the sharded programs of `programs`,
block by block (`block.run_block`), and writes the run directory. Everything inside jit is the
experiment's (through `protocol`); everything here is host-side."""

from __future__ import annotations

import dataclasses
import os
import time

import jax

from jaxcl import fileio
from jaxcl.engine import checkpoint, pacing, protocol, slurm
from jaxcl.engine.block import Summary, run_block
from jaxcl.engine.multihost import any_process, barrier, max_over_processes
from jaxcl.engine.options import RunOptions
from jaxcl.engine.programs import config_mesh, preflight, resolve_batching, state_bytes
from jaxcl.engine.progress import Progress
from jaxcl.engine.records import command, environment, environment_changes, invocation
from jaxcl.engine.rundir import DONE, FAILED, LOCK_NAME, RunDir, RunDirLock, load_sweep
from jaxcl.engine.signals import Interrupted, StopSignal
from jaxcl.engine.sweep import Sweep, Work
from jaxcl.errors import ConfigError
from jaxcl.fileio import format_bytes

__all__ = ["Summary", "merge", "run", "run_block"]


def run(
    sweep: Sweep | Work,
    out: str,
    options: RunOptions | None = None,
    *,
    log=print,
    **fields,
) -> Summary:
    """Runs every config of `sweep` (or of its slice `options.shard`) not yet done in `out`,
    resuming from checkpoints, holding the run directory's lock (`RunDirLock`; a slice's share
    of it) on process 0 for the whole run.

    Args:
      sweep: the parsed sweep, or its `Work` when the caller already sliced and grouped it.
      out: the run directory (created, or continued if it holds this sweep).
      options: the run options; the sweep's [sweep] table fills those not given.
      log: where messages go.
      **fields: RunOptions fields, a shorthand for `options` (e.g. `progress=False`).

    Returns:
      What was done, skipped and failed.

    Raises:
      ConfigError: `out` is a file or cannot be created; a config cannot fit in memory
        (`preflight`); --force-new with --shard.
      RunDirBusy: another `jaxcl run` holds `out` (or this slice), before anything is written.
      Interrupted: after SIGTERM/SIGINT/SIGUSR1, once a checkpoint is saved and the results
        merged; running the same command again resumes.
    """
    options = dataclasses.replace(options or RunOptions(), **fields)
    work = sweep if isinstance(sweep, Work) else Work.of(sweep, options.shard)
    if work.shard != options.shard:
        raise ValueError(f"runner.run: Work of slice {work.shard}, options of {options.shard}")
    options = options.with_sweep(work.sweep.options)
    resolve_batching(options.batching)  # a bad value is refused before anything compiles
    if options.shard is not None and options.force_new:
        raise ConfigError(
            "--force-new with --shard: the tasks of a job array share one run "
            "directory, so none of them may move it aside"
        )
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(
            f"--out = {out!r}: is a file, not a run directory; name a directory "
            "(new, or one of this sweep's runs)"
        )
    preflight([g[0] for g in work.groups.values()])  # refused before anything is written
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"--out = {out!r}: the run directory cannot be created there ({e.strerror})"
        ) from None
    held = None
    if options.lock and jax.process_index() == 0:
        held = RunDirLock(out, options.shard)
        if not held.acquire(command()):
            held = None  # not a run directory: RunDir.prepare refuses it, writing nothing
    try:
        return _run(work, out, held, options, log)
    except ConfigError:  # refused before anything was written (e.g. another sweep's directory)
        if held is not None:
            held.release(refused=True)
            held = None
        raise
    finally:
        if held is not None:
            held.release()


def _run(work: Work, out: str, held, options: RunOptions, log) -> Summary:
    """`run` once the lock is held: prepares the run directory, records the invocation, trains
    (`_train`), merges the results and, once the whole grid is finished, runs the experiments'
    after-run hooks."""
    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    sweep, configs, shard = work.sweep, work.configs, work.shard
    is_main = jax.process_index() == 0
    # Only process 0 checks and creates the directory; the others wait, then read it.
    rd = (
        RunDir.prepare(out, sweep, configs, force_new=options.force_new) if is_main else RunDir(out)
    )
    if held is not None and rd.moved_aside:  # the lock moved with the old directory
        held.release()
        held.path, held.file = out, os.path.join(out, LOCK_NAME)
        held.acquire(command())
    if held is not None:
        held.write_note()
    summary = Summary(done=[], failed={}, skipped=[], seconds=0.0)
    record, changed = None, []
    if is_main:
        if held is not None:
            rd.close_stale(shard)  # the lock proves their processes dead
        changed = environment_changes(rd.invocations(), environment(), options.matmul_precision)
        if not any(rd.status(c.config_id)["state"] != DONE for c in work.mine):
            changed = []  # nothing to train: nothing mixes
        if changed:  # said once per invocation, and kept in its record
            log(
                "jaxcl: this run directory was written under another environment ("
                + "; ".join(changed)
                + "); continuing. Configs resumed from a checkpoint will "
                "not be bitwise those of one uninterrupted run, only statistically equal "
                "(docs/engine.md, 'Reproducing across machines')"
            )
        record = rd.start_invocation(
            invocation(started, t0, "running", summary, shard, changed, options.matmul_precision)
        )

    def outcome(text: str) -> dict:
        return invocation(started, t0, text, summary, shard, changed, options.matmul_precision)

    try:
        _train(rd, work, summary, options, log)
    except Interrupted as e:
        if is_main:
            rd.update_invocation(record, outcome("interrupted"))
            rd.write_manifest(sweep, configs)
            if options.requeue is not None:
                e.requeue = slurm.requeue(options.requeue)
                rd.update_invocation(record, {**outcome("interrupted"), "requeue": e.requeue})
        raise
    except BaseException as e:
        if is_main:
            try:  # on a full disk this may fail too; the next run then marks it killed
                rd.update_invocation(
                    record, outcome(f"stopped by {type(e).__name__}: {str(e)[:300]}")
                )
            except OSError:
                pass
        raise
    barrier("trained")
    if is_main:
        rd.merge_results(configs)
        rd.update_invocation(record, outcome("failed configs" if summary.failed else "finished"))
        rd.write_manifest(sweep, configs)
        left = [c for c in configs if rd.status(c.config_id)["state"] not in (DONE, FAILED)]
        if not left:  # the whole grid is finished (the last task of a job array gets here)
            _after_run(rd, configs)
        else:
            log(
                f"jaxcl: slice {shard} finished; {len(left)} configs of other slices are not "
                "done yet: the task that finishes last (or `jaxcl merge " + out + "`) writes "
                "the complete results.jsonl and figures"
            )
    barrier("finished")
    summary.seconds = time.perf_counter() - t0
    for cid, why in summary.failed.items():
        log(f"jaxcl: config {cid} failed: {why}")
    return summary


def _train(rd: RunDir, work: Work, summary: Summary, options: RunOptions, log) -> None:
    """Trains the configs of `work.mine` not yet done, group by group, block by block."""
    is_main = jax.process_index() == 0
    barrier("prepare")
    done = {c.config_id for c in work.mine if rd.status(c.config_id)["state"] == DONE}
    summary.skipped.extend(c.config_id for c in work.mine if c.config_id in done)
    barrier("planned")  # every process must plan from the same statuses
    if summary.skipped:
        log(
            f"jaxcl: {len(summary.skipped)} of {len(work.mine)} configs"
            f"{'' if work.shard is None else f' of slice {work.shard}'} already done, skipping them"
        )
    groups = {}
    for key, group in work.groups.items():
        todo = [c for c in group if c.config_id not in done]
        if todo:
            groups[key] = todo
    sharding = config_mesh()
    if is_main:
        _warn_space(rd.path, groups, log)
    bar = Progress(sum(c.n_steps for g in groups.values() for c in g), options.progress)
    saved = pacing.saved_blocks(rd.path)  # resumed as they were, whatever the plan says now
    last = [0.0]  # seconds per chunk of the last block run
    try:
        with StopSignal() as stop:
            for gi, ((name, static), group) in enumerate(groups.items()):
                bar.group(
                    f"group {gi + 1}/{len(groups)} {name} "
                    f"{protocol.get(name).describe(static)} ({len(group)} configs)",
                    sum(c.n_steps for c in group),
                )
                for block, n_pad in pacing.blocks(
                    group,
                    sharding,
                    saved=saved,
                    max_parallel=options.max_parallel,
                    batching=options.batching,
                    group_size=work.group_sizes[(name, static)],
                    seconds=options.chunk_seconds,
                    timing=lambda: max_over_processes(last[0]),
                ):
                    if any_process(stop.requested):  # between blocks: nothing to save
                        raise Interrupted(stop.signum, "between blocks")
                    last[0] = run_block(
                        rd, static, block, n_pad, sharding, bar, summary, options, stop
                    )
                    if is_main and jax.process_count() == 1:  # a live view for the watcher
                        rd.write_manifest(work.sweep, work.configs)
    except Interrupted:
        bar.close()
        barrier("interrupted")
        if is_main:  # flush: results.jsonl reflects every finished chunk
            rd.merge_results(work.configs)
        raise
    finally:
        bar.close()


def merge(out: str, log=print) -> dict:
    """`jaxcl merge RUN_DIR`: writes results.jsonl, the manifest and the figures from what the
    run directory holds (e.g. after the tasks of a job array, if the last one could not).
    Takes no lock and trains nothing; configs not finished yet are left out and counted.

    Returns:
      The manifest's counts.
    """
    import json

    _, sweep = load_sweep(out)
    configs = sweep.configs()
    rd = RunDir(out)
    n_rows = rd.merge_results(configs)
    rd.write_manifest(sweep, configs)
    _after_run(rd, configs, skip_empty=True)
    with open(os.path.join(out, "manifest.json")) as f:
        counts = json.load(f)["counts"]
    log(
        f"jaxcl: merged {n_rows} rows of {len(configs)} configs into {out}/results.jsonl "
        f"({', '.join(f'{v} {k}' for k, v in counts.items())})"
    )
    return counts


def _after_run(rd: RunDir, configs: list, skip_empty: bool = False) -> None:
    """Each experiment's after-run hook (e.g. a figure) on its finished configs, grid order."""
    for name in dict.fromkeys(c.experiment for c in configs):
        finals = [
            rd.load_info(c.config_id)
            for c in configs
            if c.experiment == name and rd.has_final(c.config_id)
        ]
        if finals or not skip_empty:
            protocol.get(name).after_run(rd.path, finals)


def _warn_space(out: str, groups: dict, log) -> None:
    """Warns before training when the run directory's file system has less free space than one
    checkpoint of the largest group (as if run in one block) plus every final array to write."""
    free = fileio.free_bytes(out)
    if free is None or not groups:
        return
    per_group = [(state_bytes(g[0]), len(g)) for g in groups.values()]
    ckpt = checkpoint.disk_bytes(max(b * n for b, n in per_group))
    need = ckpt + sum(b * n for b, n in per_group)
    if free < need:
        log(
            f"jaxcl: warning: {format_bytes(free)} free in {out}, less than one checkpoint "
            f"(about {format_bytes(ckpt)}) plus the final arrays (about "
            f"{format_bytes(need - ckpt)}); a checkpoint or a final may not fit"
        )
