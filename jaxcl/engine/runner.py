"""The one driver that does I/O: runs a sweep's groups as the sharded programs of `programs`,
block by block, and writes the run directory. Everything inside jit is the experiment's (through
`protocol`); everything here is host-side."""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np
from jax.sharding import NamedSharding

from jaxcl.engine import checkpoint, pacing, protocol, slurm
from jaxcl.engine.progress import Progress
from jaxcl.engine.records import command, environment, environment_changes, invocation
from jaxcl.engine.programs import (
    block_hparams,
    compiled,
    config_mesh,
    final_observables,
    global_array,
    preflight,
    resolve_batching,
    state_bytes,
)
from jaxcl.engine.rundir import (
    DONE,
    FAILED,
    LOCK_NAME,
    RUNNING,
    RunDir,
    RunDirLock,
    Shard,
    load_sweep,
)
from jaxcl.engine.sweep import Sweep, group_by_static, shard_configs
from jaxcl.errors import ConfigError
from jaxcl.fileio import to_json


@dataclasses.dataclass
class Summary:
    done: list[str]
    failed: dict[str, str]
    skipped: list[str]
    seconds: float
    checkpoints: int = 0  # saved in this invocation
    checkpoint_seconds: float = 0.0  # wall time spent saving them
    resumed: list = dataclasses.field(default_factory=list)  # {"configs", "step"} per block


def owned_indices(sharding: NamedSharding, n: int) -> list[int]:
    """Rows of the config axis held by this process's devices (the configs it writes)."""
    rows = set()
    for index in sharding.addressable_devices_indices_map((n,)).values():
        rows.update(range(*index[0].indices(n)))
    return sorted(rows)


def local_rows(tree) -> dict[int, dict]:
    """{row: leaf values} for rows of a config-sharded pytree held by this process."""
    leaves, treedef = jax.tree.flatten(tree)
    out: dict[int, list] = {}
    for li, leaf in enumerate(leaves):
        n = leaf.shape[0]
        for shard in leaf.addressable_shards:
            data = np.asarray(shard.data)
            for j, row in enumerate(range(*shard.index[0].indices(n))):
                out.setdefault(row, [None] * len(leaves))[li] = data[j]
    return {row: jax.tree.unflatten(treedef, vals) for row, vals in out.items()}


def _scalar(x):
    x = np.asarray(x)
    return x.item() if x.ndim == 0 else x.tolist()


def run_block(
    rd: RunDir,
    static,
    cfgs: list,
    n_pad: int,
    sharding: NamedSharding,
    progress: Progress,
    summary: Summary,
    ckpt: checkpoint.CheckpointOptions = checkpoint.CheckpointOptions(),
    stop: checkpoint.StopSignal | None = None,
    batching: str = "auto",
) -> float:
    """Trains one block of same-shape configs to the end, writing what this process owns.

    Resumes from the block's latest good checkpoint if there is one, saves checkpoints at chunk
    boundaries as `ckpt` says, and on a stop request saves and raises checkpoint.Interrupted.

    Returns:
      The wall seconds of its slowest chunk but the first (which compiles), or of the first
      if it ran only one (for `pacing.blocks`).
    """
    n = len(cfgs)
    exp = protocol.of(cfgs[0])
    log_every = cfgs[0].log_every  # a static field: the same for the whole group
    hp = jax.tree.map(lambda x: global_array(x, sharding), block_hparams(cfgs, n_pad))
    init_fn, chunk_fn = compiled(exp, static, sharding, batching=batching)
    owned = [i for i in owned_indices(sharding, n_pad) if i < n]
    n_chunks = -(-max(c.n_steps for c in cfgs) // log_every)
    store = checkpoint.BlockCheckpoints(rd.path, [c.config_id for c in cfgs], n_pad, ckpt)
    abstract = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
        jax.eval_shape(init_fn, hp),
    )
    restored = store.restore_latest(abstract, sharding)
    chunk0, ckpt_step = (restored[1]["chunk"], restored[1]["step"]) if restored else (0, -1)
    failed: dict[int, str] = {}
    row_base = {i: {**cfgs[i].resolved(), "config_id": cfgs[i].config_id} for i in owned}
    for i in owned:
        cid = cfgs[i].config_id
        st = rd.status(cid)
        # A config that failed before the checkpoint stays failed (its status file says when).
        if restored and st["state"] == FAILED and st.get("step", ckpt_step + 1) <= ckpt_step:
            failed[i] = st["reason"]
        else:
            rd.set_status(cid, RUNNING)
        rd.reset_rows(cid, keep_until_step=ckpt_step)  # rows past the checkpoint come again
    state = restored[0] if restored else init_fn(hp)
    if restored:
        summary.resumed.append({"configs": n, "step": int(ckpt_step)})
        print(
            f"jaxcl: resuming {n} configs from the checkpoint at step {ckpt_step} ({store.dir})",
            flush=True,
        )
    progress.update(sum(min(c.n_steps, chunk0 * log_every) for c in cfgs))
    seconds = []
    for k in range(chunk0, n_chunks):
        t0 = time.perf_counter()
        state, metrics = chunk_fn(hp, state)
        local = local_rows(metrics)  # waits for the chunk
        seconds.append(time.perf_counter() - t0)
        for i in owned:
            m = local[i]
            if i in failed or not m["logged"]:
                continue
            if not m["finite"]:
                failed[i] = _divergence(m)
                rd.set_status(cfgs[i].config_id, FAILED, reason=failed[i], step=(k + 1) * log_every)
                continue
            row = {
                **row_base[i],
                **{name: _scalar(v) for name, v in m.items() if name not in ("logged", "finite")},
                "time": round(time.time(), 3),
            }  # wall clock, for jaxcl status's rate and ETA
            rd.append_rows(cfgs[i].config_id, [row])
        progress.update(sum(min(log_every, max(0, c.n_steps - k * log_every)) for c in cfgs))
        step = (k + 1) * log_every
        if k + 1 < n_chunks:
            stopping = _agree(stop is not None and stop.requested)
            if stopping or _agree(store.due(step)):
                store.save(step, k + 1, state)
            if stopping:
                summary.checkpoint_seconds += store.seconds_saving
                summary.checkpoints += store.n_saved
                raise checkpoint.Interrupted(
                    stop.signum,
                    f"at step {step} of {n_chunks * log_every} of a block "
                    f"of {n} configs; checkpoint saved in {store.dir}",
                )
    summary.checkpoint_seconds += store.seconds_saving
    summary.checkpoints += store.n_saved
    arrays = local_rows(exp.final_arrays(state))
    scalars = local_rows(exp.final_scalars(state))
    # the final json's observables
    obs = local_rows(final_observables(exp, static, sharding)(hp, state))
    for i in owned:
        cid = cfgs[i].config_id
        if i in failed:
            summary.failed[cid] = failed[i]
            continue
        rd.write_final(
            cfgs[i],
            exp.finalize(cfgs[i], arrays[i]),
            {**to_json(scalars.get(i, {})), "observables": to_json(obs.get(i, {}))},
        )
        rd.set_status(cid, DONE)
        summary.done.append(cid)
    _barrier("block")
    if jax.process_index() == 0:
        store.remove()  # every final of the block is written: its checkpoints are redundant
    return max(seconds[1:] or seconds or [0.0])


def run(sweep: Sweep, out: str, *, lock: bool = True, shard: Shard | None = None, **kw) -> Summary:
    """Runs every config of `sweep` (or of its slice `shard`) not yet done in `out` (see
    `_run`), holding the run directory's lock (`RunDirLock`; a slice's share of it) on process
    0 for the whole run.

    Raises:
      ConfigError: `out` is a file; a config cannot fit in memory (`preflight`).
      RunDirBusy: another `jaxcl run` holds `out` (or this slice), before anything is written.
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(
            f"--out = {out!r}: is a file, not a run directory; name a directory "
            "(new, or one of this sweep's runs)"
        )
    mine = shard_configs(sweep.configs(), shard) if shard is not None else sweep.configs()
    preflight(mine)  # a config that cannot fit is refused before anything is written
    held = None
    if lock and jax.process_index() == 0:
        held = RunDirLock(out, shard)
        if not held.acquire(command()):
            held = None  # not a run directory: RunDir.prepare refuses it, writing nothing
    try:
        return _run(sweep, out, held, shard=shard, **kw)
    except ConfigError:  # refused before anything was written (e.g. another sweep's directory)
        if held is not None:
            held.release(refused=True)
            held = None
        raise
    finally:
        if held is not None:
            held.release()


def _run(
    sweep: Sweep,
    out: str,
    held,
    *,
    shard: Shard | None = None,
    max_parallel: int | None = None,
    force_new: bool = False,
    progress: bool | None = None,
    log=print,
    checkpoints: checkpoint.CheckpointOptions | None = None,
    batching: str | None = None,
    chunk_seconds: float = pacing.CHUNK_SECONDS,
    requeue: int | None = None,
) -> Summary:
    """Runs every config of `sweep` not yet done in `out`, resuming from checkpoints.

    Args:
      sweep: the parsed sweep.
      out: the run directory (created, or continued if it holds this sweep).
      shard: run only this job-array slice of the grid (`shard_configs`); the task that finds
        every config finished writes results.jsonl, the manifest and the figures.
      max_parallel: at most this many configs per compiled block.
      force_new: move a run directory of another sweep aside instead of refusing it.
      progress: progress bar on/off (None: on when stderr is a terminal).
      log: where messages go.
      checkpoints: when to checkpoint (default CheckpointOptions()).
      batching: how a device runs its configs (`resolve_batching`; default: the sweep's
        `batching` option, else "auto").
      chunk_seconds: size blocks so that a chunk takes about this long, which bounds the
        wait after a stop request (`pacing.blocks`; 0: blocks as memory allows).
      requeue: under Slurm, once interrupted and saved, requeue the job (`slurm.requeue`)
        unless it was requeued this many times; the record's "requeue" says what happened.

    Returns:
      What was done, skipped and failed.

    Raises:
      checkpoint.Interrupted: after SIGTERM/SIGINT, once a checkpoint is saved and the
        results merged; running the same command again resumes.
    """
    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    configs = sweep.configs()  # validated before anything compiles
    if shard is not None and force_new:
        raise ConfigError(
            "--force-new with --shard: the tasks of a job array share one run "
            "directory, so none of them may move it aside"
        )
    mine = shard_configs(configs, shard) if shard is not None else configs
    is_main = jax.process_index() == 0
    # Only process 0 checks and creates the directory; the others wait, then read it.
    rd = RunDir.prepare(out, sweep, configs, force_new=force_new) if is_main else RunDir(out)
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
        changed = environment_changes(rd.invocations(), environment())
        if not any(rd.status(c.config_id)["state"] != DONE for c in mine):
            changed = []  # nothing to train: nothing mixes
        if changed:  # said once per invocation, and kept in its record
            log(
                "jaxcl: this run directory was written under another environment ("
                + "; ".join(changed)
                + "); continuing. Configs resumed from a checkpoint will "
                "not be bitwise those of one uninterrupted run, only statistically equal "
                "(docs/engine.md, 'Reproducing across machines')"
            )
        record = rd.start_invocation(invocation(started, t0, "running", summary, shard, changed))
    try:
        _train(
            rd,
            sweep,
            configs,
            mine,
            summary,
            shard=shard,
            max_parallel=max_parallel,
            progress=progress,
            log=log,
            checkpoints=checkpoints,
            batching=batching,
            chunk_seconds=chunk_seconds,
        )
    except checkpoint.Interrupted as e:
        if is_main:
            rec = invocation(started, t0, "interrupted", summary, shard, changed)
            rd.update_invocation(record, rec)
            rd.write_manifest(sweep, configs)
            if requeue is not None:
                e.requeue = slurm.requeue(requeue)
                rd.update_invocation(record, {**rec, "requeue": e.requeue})
        raise
    except BaseException as e:
        if is_main:
            try:  # on a full disk this may fail too; the next run then marks it killed
                rd.update_invocation(
                    record,
                    invocation(
                        started,
                        t0,
                        f"stopped by {type(e).__name__}: {str(e)[:300]}",
                        summary,
                        shard,
                        changed,
                    ),
                )
            except OSError:
                pass
        raise
    _barrier("trained")
    if is_main:
        rd.merge_results(configs)
        rd.update_invocation(
            record,
            invocation(
                started,
                t0,
                "failed configs" if summary.failed else "finished",
                summary,
                shard,
                changed,
            ),
        )
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
    _barrier("finished")
    summary.seconds = time.perf_counter() - t0
    for cid, why in summary.failed.items():
        log(f"jaxcl: config {cid} failed: {why}")
    return summary


def _train(
    rd: RunDir,
    sweep: Sweep,
    configs: list,
    mine: list,
    summary: Summary,
    *,
    shard,
    max_parallel,
    progress,
    log,
    checkpoints,
    batching,
    chunk_seconds,
) -> None:
    """Trains the configs of `mine` not yet done, block by block (see `_run`)."""
    is_main = jax.process_index() == 0
    _barrier("prepare")
    todo = []
    for c in mine:
        (summary.skipped if rd.status(c.config_id)["state"] == DONE else todo).append(c)
    _barrier("planned")  # every process must plan from the same statuses
    if summary.skipped:
        log(
            f"jaxcl: {len(summary.skipped)} of {len(mine)} configs"
            f"{'' if shard is None else f' of slice {shard}'} already done, skipping them"
        )
    sharding = config_mesh()
    max_parallel = max_parallel or sweep.options.get("max_parallel")
    batching = batching or sweep.options.get("batching", "auto")
    resolve_batching(batching)  # a bad value is refused before anything compiles
    sizes = {key: len(g) for key, g in group_by_static(configs).items()}
    groups = group_by_static(todo)
    if is_main:
        _warn_space(rd.path, groups, log)
    bar = Progress(sum(c.n_steps for c in todo), progress)
    ckpt = checkpoints or checkpoint.CheckpointOptions()
    saved = pacing.saved_blocks(rd.path)  # resumed as they were, whatever the plan says now
    last = [0.0]  # seconds per chunk of the last block run
    try:
        with checkpoint.StopSignal() as stop:
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
                    max_parallel=max_parallel,
                    batching=batching,
                    group_size=sizes[(name, static)],
                    seconds=chunk_seconds,
                    timing=lambda: _agree_max(last[0]),
                ):
                    if _agree(stop.requested):  # between blocks: nothing to save
                        raise checkpoint.Interrupted(stop.signum, "between blocks")
                    last[0] = run_block(
                        rd, static, block, n_pad, sharding, bar, summary, ckpt, stop, batching
                    )
                    if is_main and jax.process_count() == 1:  # a live view for the watcher
                        rd.write_manifest(sweep, configs)
    except checkpoint.Interrupted:
        bar.close()
        _barrier("interrupted")
        if is_main:  # flush: results.jsonl reflects every finished chunk
            rd.merge_results(configs)
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
    free = checkpoint._free_bytes(out)
    if free is None or not groups:
        return
    per_group = [(state_bytes(g[0]), len(g)) for g in groups.values()]
    ckpt = max(b * n for b, n in per_group) * checkpoint.SPACE_FACTOR + checkpoint.SPACE_SLACK
    need = ckpt + sum(b * n for b, n in per_group)
    if free < need:
        log(
            f"jaxcl: warning: {checkpoint._size(free)} free in {out}, less than one checkpoint "
            f"(about {checkpoint._size(ckpt)}) plus the final arrays (about "
            f"{checkpoint._size(need - ckpt)}); a checkpoint or a final may not fit"
        )


def _divergence(m: dict) -> str:
    """Why a config was marked failed: the first non-finite quantity and its step."""
    if m["bad_step"] >= 0:
        return f"non-finite loss at step {int(m['bad_step'])}"
    return f"non-finite weights by step {int(m['step'])}"


def _agree(flag: bool) -> bool:
    """True if any process says so: every process must take part in a checkpoint save."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def _agree_max(x: float) -> float:
    """The largest of every process's `x` (block sizes must be the same on all of them)."""
    if jax.process_count() == 1:
        return float(x)
    from jax.experimental import multihost_utils

    return float(np.max(multihost_utils.process_allgather(np.float32(x))))


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"jaxcl:{name}")
