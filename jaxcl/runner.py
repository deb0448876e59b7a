"""The one driver that does I/O: runs a sweep's groups as sharded, vmapped programs and writes
the run directory. Everything inside jit is in `train`; everything here is host-side."""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcl import observables, train
from jaxcl.config import Config, Static, stack_hparams
from jaxcl.rundir import DONE, FAILED, RUNNING, RunDir
from jaxcl.sweep import Sweep, group_by_static

AXIS = "configs"


@dataclasses.dataclass
class Summary:
    done: list[str]
    failed: dict[str, str]
    skipped: list[str]
    seconds: float


def config_mesh() -> NamedSharding:
    """Shards the vmapped config axis over every device JAX sees (all processes)."""
    mesh = Mesh(np.asarray(jax.devices()), (AXIS,))
    return NamedSharding(mesh, P(AXIS))


@functools.lru_cache(maxsize=None)
def compiled(static: Static, sharding: NamedSharding):
    """jit(vmap(init)) and jit(vmap(run_chunk)) for one shape group; compiled once, reused."""
    init_fn = jax.jit(jax.vmap(functools.partial(train.init, static)), out_shardings=sharding)
    chunk_fn = jax.jit(jax.vmap(functools.partial(train.run_chunk, static)),
                       out_shardings=sharding, donate_argnums=(1,))
    return init_fn, chunk_fn


def global_array(x: np.ndarray, sharding: NamedSharding):
    """A (n, ...) host array as a global array sharded on axis 0 (works across processes)."""
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


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


class Progress:
    """Config-steps/s and ETA on a tqdm bar; silent when stderr is not a terminal."""

    def __init__(self, total: int, enabled: bool | None):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="cfg·step", unit_scale=True, dynamic_ncols=True,
                        disable=(not sys.stderr.isatty()) if enabled is None else not enabled,
                        desc="sweep")

    def group(self, desc: str):
        self.bar.set_description(desc)

    def update(self, n: int):
        self.bar.update(n)

    def close(self):
        self.bar.close()


def run_block(rd: RunDir, static: Static, cfgs: list[Config], sharding: NamedSharding,
              progress: Progress, summary: Summary) -> None:
    """Trains one block of same-shape configs to the end, writing what this process owns."""
    n_dev = sharding.mesh.size
    n = len(cfgs)
    n_pad = -(-n // n_dev) * n_dev  # padding rows repeat the last config, never written
    hp = jax.tree.map(lambda x: global_array(x, sharding),
                      stack_hparams(cfgs + [cfgs[-1]] * (n_pad - n)))
    init_fn, chunk_fn = compiled(static, sharding)
    owned = [i for i in owned_indices(sharding, n_pad) if i < n]
    for i in owned:
        rd.reset_rows(cfgs[i].config_id)
        rd.set_status(cfgs[i].config_id, RUNNING)
    state = init_fn(hp)
    n_chunks = train.n_chunks_for(max(c.n_steps for c in cfgs), static.log_every)
    failed: dict[int, str] = {}
    for k in range(n_chunks):
        state, metrics = chunk_fn(hp, state)
        local = local_rows(metrics)
        for i in owned:
            m = local[i]
            if i in failed or not m["logged"]:
                continue
            if not m["finite"]:
                failed[i] = _divergence(m)
                rd.set_status(cfgs[i].config_id, FAILED, reason=failed[i])
                continue
            row = {**cfgs[i].resolved(), "config_id": cfgs[i].config_id,
                   **{k: _scalar(v) for k, v in m.items() if k not in ("logged", "finite")}}
            rd.append_rows(cfgs[i].config_id, [row])
        progress.update(sum(min(static.log_every, max(0, c.n_steps - k * static.log_every))
                            for c in cfgs))
    final = local_rows({"w0": state.w0, "w": state.w, "b": state.b, "M": state.M,
                        "eps": state.eps, "T1": state.T1, "T2": state.T2})
    obs = local_rows(observables.final_fn(static)(hp, state))  # SPEC §5, final json
    for i in owned:
        cid = cfgs[i].config_id
        if i in failed:
            summary.failed[cid] = failed[i]
            continue
        f = final[i]
        rd.write_final(cfgs[i], {k: f[k] for k in ("w0", "w", "b", "M", "eps")},
                       {"T1": int(f["T1"]), "T2": int(f["T2"]),
                        "observables": observables.to_json(obs[i])})
        rd.set_status(cid, DONE)
        summary.done.append(cid)


def run(sweep: Sweep, out: str, *, max_parallel: int | None = None, force_new: bool = False,
        progress: bool | None = None, log=print) -> Summary:
    """Runs every config of `sweep` not yet done in `out`; returns what happened."""
    t0 = time.perf_counter()
    configs = sweep.configs()  # validated before anything compiles
    is_main = jax.process_index() == 0
    rd = RunDir.prepare(out, sweep, configs, force_new=force_new, is_main=is_main)
    _barrier("prepare")
    summary = Summary(done=[], failed={}, skipped=[], seconds=0.0)
    todo = []
    for c in configs:
        (summary.skipped if rd.status(c.config_id)["state"] == DONE else todo).append(c)
    if summary.skipped:
        log(f"jaxcl: {len(summary.skipped)} of {len(configs)} configs already done, skipping them")
    sharding = config_mesh()
    max_parallel = max_parallel or sweep.options.get("max_parallel") or len(configs)
    groups = group_by_static(todo)
    bar = Progress(sum(c.n_steps for c in todo), progress)
    try:
        for gi, (static, group) in enumerate(groups.items()):
            for start in range(0, len(group), max_parallel):
                block = group[start:start + max_parallel]
                bar.group(f"group {gi + 1}/{len(groups)} d={static.d} m={static.m} "
                          f"[{start + len(block)}/{len(group)}]")
                run_block(rd, static, block, sharding, bar, summary)
    finally:
        bar.close()
    _barrier("trained")
    if is_main:
        rd.merge_results(configs)
        rd.write_manifest(sweep, configs)
        from jaxcl import plots

        plots.figure1_for_run(rd, configs)
    _barrier("finished")
    summary.seconds = time.perf_counter() - t0
    for cid, why in summary.failed.items():
        log(f"jaxcl: config {cid} failed: {why}")
    return summary


def _divergence(m: dict) -> str:
    """Why a config was marked failed: the first non-finite quantity and its step."""
    if m["bad_step"] >= 0:
        return f"non-finite loss at step {int(m['bad_step'])}"
    return f"non-finite weights by step {int(m['step'])}"


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"jaxcl:{name}")
