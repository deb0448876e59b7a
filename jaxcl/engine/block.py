"""One block of same-shape configs trained to the end: its compiled programs run chunk by chunk,
resumed from and saved to its checkpoints, each chunk's rows and each config's final files
written by the process that holds its row. `runner` plans the blocks and calls `run_block`."""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
from jax.sharding import NamedSharding

from jaxcl.engine import checkpoint, protocol
from jaxcl.engine.multihost import any_process, barrier, local_rows, owned_indices
from jaxcl.engine.options import RunOptions
from jaxcl.engine.programs import block_hparams, compiled, final_observables, global_array
from jaxcl.engine.progress import Progress
from jaxcl.engine.rundir import DONE, FAILED, RUNNING, RunDir
from jaxcl.engine.signals import Interrupted, StopSignal
from jaxcl.fileio import to_json


@dataclasses.dataclass
class Summary:
    """What one `jaxcl run` did: config ids done, failed (with why) and already done before."""

    done: list[str]
    failed: dict[str, str]
    skipped: list[str]
    seconds: float
    checkpoints: int = 0  # saved in this invocation
    checkpoint_seconds: float = 0.0  # wall time spent saving them
    resumed: list = dataclasses.field(default_factory=list)  # {"configs", "step"} per block


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
    options: RunOptions,
    stop: StopSignal | None = None,
) -> float:
    """Trains one block of same-shape configs to the end, writing what this process owns.

    Resumes from the block's latest good checkpoint if there is one, saves checkpoints at chunk
    boundaries as `options.checkpoints` says, and on a stop request saves at the end of the
    running chunk (the last one included) and raises Interrupted. `options` are the run's, resolved (`RunOptions.with_sweep`).

    Returns:
      The wall seconds of its slowest chunk but the first (which compiles), or of the first
      if it ran only one (for `pacing.blocks`).
    """
    n = len(cfgs)
    exp = protocol.of(cfgs[0])
    log_every = cfgs[0].log_every  # a static field: the same for the whole group
    hp = jax.tree.map(lambda x: global_array(x, sharding), block_hparams(cfgs, n_pad))
    init_fn, chunk_fn = compiled(
        exp, static, sharding, batching=options.batching, precision=options.matmul_precision
    )
    owned = [i for i in owned_indices(sharding, n_pad) if i < n]
    n_chunks = -(-max(c.n_steps for c in cfgs) // log_every)
    store = checkpoint.BlockCheckpoints(
        rd.path, [c.config_id for c in cfgs], n_pad, options.checkpoints
    )
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
                failed[i] = divergence(m)
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
        # After the last chunk too: finishing the block would compile and run its final
        # observables first (minutes on a loaded CPU), while the resume only computes them.
        stopping = any_process(stop is not None and stop.requested)
        if stopping or (k + 1 < n_chunks and any_process(store.due(step))):
            store.save(step, k + 1, state)
        if stopping:
            summary.checkpoint_seconds += store.seconds_saving
            summary.checkpoints += store.n_saved
            raise Interrupted(
                stop.signum,
                f"at step {step} of {n_chunks * log_every} of a block "
                f"of {n} configs; checkpoint saved in {store.dir}",
            )
    summary.checkpoint_seconds += store.seconds_saving
    summary.checkpoints += store.n_saved
    arrays = local_rows(exp.final_arrays(state))
    scalars = local_rows(exp.final_scalars(state))
    # the final json's observables
    obs = local_rows(final_observables(exp, static, sharding, options.matmul_precision)(hp, state))
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
    barrier("block")
    if jax.process_index() == 0:
        store.remove()  # every final of the block is written: its checkpoints are redundant
    return max(seconds[1:] or seconds or [0.0])


def divergence(m: dict) -> str:
    """Why a config was marked failed: the first non-finite quantity and its step."""
    if m["bad_step"] >= 0:
        return f"non-finite loss at step {int(m['bad_step'])}"
    return f"non-finite weights by step {int(m['step'])}"
