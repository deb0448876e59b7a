"""The one driver that does I/O: runs a sweep's groups as sharded, vmapped programs and writes
the run directory. Everything inside jit is in `train`; everything here is host-side."""

from __future__ import annotations

import dataclasses
import functools
import sys
import time

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcl import checkpoint, observables, train
from jaxcl.config import Config, ConfigError, Static, stack_hparams
from jaxcl.rundir import DONE, FAILED, RUNNING, RunDir
from jaxcl.sweep import BATCHINGS, Sweep, group_by_static

AXIS = "configs"


@dataclasses.dataclass
class Summary:
    done: list[str]
    failed: dict[str, str]
    skipped: list[str]
    seconds: float
    checkpoints: int = 0  # saved in this invocation
    checkpoint_seconds: float = 0.0  # wall time spent saving them


def config_mesh(n_devices: int | None = None) -> NamedSharding:
    """Shards the vmapped config axis over every device JAX sees (all processes), or over the
    first n_devices of them (single process only)."""
    mesh = Mesh(np.asarray(jax.devices()[:n_devices]), (AXIS,))
    return NamedSharding(mesh, P(AXIS))


# XLA:CPU gives matmuls to YNNPACK and by default also moves the elementwise work around them
# into YNNPACK subgraphs. For the training step that costs more than it saves: the biases'
# broadcasts get materialized at the size of the pre-activations, and the chunk runs ~20%
# slower than with YNNPACK taking the matmuls alone (benchmarks/throughput.py measures both).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@functools.lru_cache(maxsize=None)
def compiler_options(enabled: bool = True) -> dict:
    """CPU_COMPILER_OPTIONS on the CPU backend if this jaxlib knows them; {} elsewhere."""
    if not enabled or jax.default_backend() != "cpu":
        return {}
    try:  # the option is experimental: an XLA that dropped it refuses it at compile time
        jax.jit(lambda x: x + 1, compiler_options=CPU_COMPILER_OPTIONS).lower(
            np.float32(0)).compile()
    except Exception as e:  # noqa: BLE001 (any refusal means: compile without it)
        print(f"jaxcl: note: XLA refused {CPU_COMPILER_OPTIONS} ({str(e).splitlines()[0]}); "
              "compiling with its defaults", file=sys.stderr)
        return {}
    return dict(CPU_COMPILER_OPTIONS)


def resolve_batching(batching: str = "auto") -> str:
    """How each device runs its share of a block: "sequential" (one config after another) or
    "vmap" (all at once). "auto" picks sequential on CPU and vmap on accelerators.

    On CPU, one config's matmuls already keep a core busy, and vmapping several per device only
    makes a larger working set: in benchmarks/throughput.py (n = 4-64 configs on 2 cores)
    sequential ran 1.06-1.16x vmap at d = 32, 0.99-1.26x at d = 64 and 1.13-1.34x at d = 128,
    where vmap fell below a plain loop; only at d = 16 was vmap ahead (sequential 0.86-1.05x).
    Sequential also runs each config's own unvmapped program, so its arrays are bitwise those
    of the config run alone.
    """
    if batching not in BATCHINGS:
        raise ConfigError(f"batching = {batching!r}: expected one of {', '.join(BATCHINGS)}")
    if batching != "auto":
        return batching
    return "sequential" if jax.default_backend() == "cpu" else "vmap"


def compiled(static: Static, sharding: NamedSharding, tuned: bool = True,
             batching: str = "auto"):
    """The jitted init and run_chunk of one shape group over a sharded config axis; compiled
    once per (shape, devices, batching), reused.

    batching: see `resolve_batching`. tuned=False compiles without `compiler_options` (for
    benchmarks: what they are worth).
    """
    return _compiled(static, sharding, tuned, resolve_batching(batching))


@functools.lru_cache(maxsize=None)
def _compiled(static: Static, sharding: NamedSharding, tuned: bool, batching: str):
    opts = compiler_options(tuned)
    if batching == "vmap":
        wrap = _batched
    else:
        wrap = functools.partial(_sequential, sharding=sharding)
    init_fn = jax.jit(wrap(functools.partial(train.init, static)), out_shardings=sharding,
                      compiler_options=opts)
    chunk_fn = jax.jit(wrap(functools.partial(train.run_chunk, static)),
                       out_shardings=sharding, donate_argnums=(1,), compiler_options=opts)
    return init_fn, chunk_fn


def _one(fn, args):
    """fn on a batch of one: the batch axis dropped on the way in and restored on the way out."""
    out = fn(*jax.tree.map(lambda x: x[0], args))
    return jax.tree.map(lambda x: x[None], out)


def _batched(fn):
    """vmap(fn), except that a batch of one runs fn itself (the batch size is static).

    A lone config (a block is never padded to one otherwise) then runs exactly the program a
    plain jit of fn would: XLA compiles size-1 batches to slower kernels.
    """
    def run(*args):
        if jax.tree.leaves(args)[0].shape[0] == 1:
            return _one(fn, args)
        return jax.vmap(fn)(*args)

    return run


def _sequential(fn, sharding: NamedSharding):
    """Each device runs its own rows of the config axis one after another: shard_map over the
    axis, and on each device lax.map (a scan) of the unvmapped fn.

    The scan's body is the program a plain jit of fn compiles, so every config's arrays are
    bitwise those of the config run alone, whatever the block, the padding or the device count
    (tests/test_runner.py). check_vma=False: fn's own scans start from constants, which the
    varying-axis check would ask to be cast; the body has no collectives for it to guard.
    """
    def local(*args):
        if jax.tree.leaves(args)[0].shape[0] == 1:
            return _one(fn, args)
        return jax.lax.map(lambda a: fn(*a), args)

    return jax.shard_map(local, mesh=sharding.mesh, in_specs=P(AXIS), out_specs=P(AXIS),
                         check_vma=False)


def auto_max_parallel(static: Static, cfg: Config, sharding: NamedSharding,
                      headroom: float = 0.7, batching: str = "auto") -> int | None:
    """How many configs of this shape fit in device memory at once, or None if unbounded.

    Reads the accelerator's `bytes_limit` (None on CPU, where nothing is chunked) and the
    compiled chunk program's memory analysis for two configs per device.
    """
    stats = jax.local_devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    if not limit:
        return None
    n = 2 * sharding.mesh.size
    hp = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      stack_hparams([cfg] * n))
    init_fn, chunk_fn = compiled(static, sharding, batching=batching)
    state = jax.eval_shape(init_fn, hp)
    mem = chunk_fn.lower(hp, state).compile().memory_analysis()
    per_device = (mem.argument_size_in_bytes + mem.output_size_in_bytes
                  + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
    per_config = max(1, per_device // 2)
    return max(1, int(headroom * limit // per_config)) * sharding.mesh.size


# vmap on CPU: the working set per device that keeps a block's intermediates near cache;
# measured in benchmarks/ (vmapped/loop speedup fell from ~1.4x at 10-40 MB to 0.9x at
# ~600 MB, d = 128).
CPU_BLOCK_BYTES = 32 << 20
# sequential on CPU: one config's intermediates live at a time, so a block is bounded only by
# the training states it holds (W0, W, b, M, ...) per device. Larger blocks mean fewer
# dispatches and less padding; smaller ones a manifest refreshed more often.
CPU_STATE_BYTES = 256 << 20


def config_bytes(static: Static) -> int:
    """Rough float32 working set of one config's step: activations, W and its gradient."""
    K, L, m, d1 = static.K, static.L, static.m, static.d1
    return 4 * (3 * K * L * m + 4 * m * d1 + 2 * K * L * d1)


def state_bytes(cfg: Config) -> int:
    """Bytes of one config's training state (`train.State`), from its abstract shapes."""
    st = jax.eval_shape(functools.partial(train.init, cfg.static()), cfg.hparams())
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(st))


def plan_blocks(group: list[Config], sharding: NamedSharding, max_parallel: int | None = None,
                batching: str = "auto") -> list[tuple[list[Config], int]]:
    """Splits a shape group into (configs, padded size) blocks, run one after another.

    Block size: `max_parallel` if given, else what fits in device memory (accelerators), or on
    CPU a cache-sized working set (vmap) or `CPU_STATE_BYTES` of states per device
    (sequential). Blocks are padded to a multiple of the device count. With vmap, a group of
    two or more configs gets at least two per device: XLA compiles a size-1 vmapped batch to
    other kernels, and a config's result must not depend on how the grid is chunked (SPEC §7);
    a lone config runs unpadded, as it always would. Sequential batching needs neither rule;
    there a block's rows are ordered so that the devices' shares take about the same number of
    steps (`_balance`), and padding rows cost nothing (`block_hparams`).
    """
    static, n_dev = group[0].static(), sharding.mesh.size
    sequential = resolve_batching(batching) == "sequential"
    if sequential:
        cpu = max(1, CPU_STATE_BYTES // state_bytes(group[0])) * n_dev
    else:
        cpu = max(2, CPU_BLOCK_BYTES // config_bytes(static)) * n_dev
    size = (max_parallel or auto_max_parallel(static, group[0], sharding, batching=batching)
            or cpu)
    per_device_min = 2 if len(group) > 1 and not sequential else 1
    # A block trains until its longest config is done: longest first, so blocks are even in
    # length (a stable sort: a group of equal lengths keeps its grid order).
    group = sorted(group, key=lambda c: -c.n_steps)
    n_blocks = -(-len(group) // size)
    blocks, start = [], 0
    for k in range(n_blocks):  # even sizes: no lone remainder padded to a whole extra block
        stop = start + len(group) // n_blocks + (k < len(group) % n_blocks)
        block = group[start:stop]
        n_pad = max(per_device_min, -(-len(block) // n_dev)) * n_dev
        if sequential and len({c.n_steps for c in block}) > 1:
            block = _balance(block, n_dev, n_pad)
        blocks.append((block, n_pad))
        start = stop
    return blocks


def block_hparams(cfgs: list[Config], n_pad: int):
    """The block's stacked hyperparameters, padded to n_pad rows (see plan_blocks).

    A padding row repeats the last config with `steps` = 0, so it never trains: under
    sequential batching its chunks are skipped and cost nothing; it is never written.
    """
    hp = stack_hparams(cfgs + [cfgs[-1]] * (n_pad - len(cfgs)))
    return hp._replace(steps=np.where(np.arange(n_pad) < len(cfgs), hp.steps, 0).astype(np.int32))


def _balance(block: list[Config], n_dev: int, n_pad: int) -> list[Config]:
    """The block's configs in row order such that each device's rows (contiguous, n_pad/n_dev
    of them) add up to about the same number of steps: longest first, each onto the device with
    the fewest steps so far that has a free row. The padding rows, which train no step, are
    the block's last rows (on the last devices)."""
    per = n_pad // n_dev
    free = [sum(r < len(block) for r in range(i * per, (i + 1) * per)) for i in range(n_dev)]
    load, rows = [0] * n_dev, [[] for _ in range(n_dev)]
    for c in sorted(block, key=lambda c: -c.n_steps):
        i = min((i for i in range(n_dev) if free[i] > 0), key=lambda i: load[i])
        rows[i].append(c)
        load[i] += c.n_steps
        free[i] -= 1
    return [c for r in rows for c in r]


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
    """Two live bars, the whole sweep and the current group, in config-steps with rate and ETA.

    Silent when stderr is not a terminal (or when disabled), and on processes other than 0.
    """

    def __init__(self, total: int, enabled: bool | None):
        from tqdm.auto import tqdm

        if enabled is None:
            enabled = sys.stderr.isatty()
        enabled = enabled and jax.process_index() == 0
        self._tqdm = tqdm
        self._kw = dict(unit="cfg·step", unit_scale=True, dynamic_ncols=True,
                        disable=not enabled)
        self.total = tqdm(total=total, desc="sweep", position=0, **self._kw)
        self.bar = None

    def group(self, desc: str, total: int):
        if self.bar is not None:
            self.bar.close()
        self.bar = self._tqdm(total=total, desc=desc, position=1, leave=False, **self._kw)

    def update(self, n: int):
        self.total.update(n)
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        self.total.close()


def run_block(rd: RunDir, static: Static, cfgs: list[Config], n_pad: int,
              sharding: NamedSharding, progress: Progress, summary: Summary,
              ckpt: checkpoint.CheckpointOptions = checkpoint.CheckpointOptions(),
              stop: checkpoint.StopSignal | None = None, batching: str = "auto") -> None:
    """Trains one block of same-shape configs to the end, writing what this process owns.

    Resumes from the block's latest good checkpoint if there is one, saves checkpoints at chunk
    boundaries as `ckpt` says, and on a stop request saves and raises checkpoint.Interrupted.
    """
    n = len(cfgs)
    hp = jax.tree.map(lambda x: global_array(x, sharding), block_hparams(cfgs, n_pad))
    init_fn, chunk_fn = compiled(static, sharding, batching=batching)
    owned = [i for i in owned_indices(sharding, n_pad) if i < n]
    n_chunks = train.n_chunks_for(max(c.n_steps for c in cfgs), static.log_every)
    store = checkpoint.BlockCheckpoints(rd.path, [c.config_id for c in cfgs], n_pad, ckpt)
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                            jax.eval_shape(init_fn, hp))
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
        print(f"jaxcl: resuming {n} configs from the checkpoint at step {ckpt_step} "
              f"({store.dir})", flush=True)
    progress.update(sum(min(c.n_steps, chunk0 * static.log_every) for c in cfgs))
    for k in range(chunk0, n_chunks):
        state, metrics = chunk_fn(hp, state)
        local = local_rows(metrics)
        for i in owned:
            m = local[i]
            if i in failed or not m["logged"]:
                continue
            if not m["finite"]:
                failed[i] = _divergence(m)
                rd.set_status(cfgs[i].config_id, FAILED, reason=failed[i],
                              step=(k + 1) * static.log_every)
                continue
            row = {**row_base[i],
                   **{name: _scalar(v) for name, v in m.items() if name not in ("logged", "finite")}}
            rd.append_rows(cfgs[i].config_id, [row])
        progress.update(sum(min(static.log_every, max(0, c.n_steps - k * static.log_every))
                            for c in cfgs))
        step = (k + 1) * static.log_every
        if k + 1 < n_chunks:
            stopping = _agree(stop is not None and stop.requested)
            if stopping or _agree(store.due(step)):
                store.save(step, k + 1, state)
            if stopping:
                raise checkpoint.Interrupted(
                    stop.signum, f"at step {step} of {n_chunks * static.log_every} of a block "
                    f"of {n} configs; checkpoint saved in {store.dir}")
    summary.checkpoint_seconds += store.seconds_saving
    summary.checkpoints += store.n_saved
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
    _barrier("block")
    if jax.process_index() == 0:
        store.remove()  # every final of the block is written: its checkpoints are redundant


def run(sweep: Sweep, out: str, *, max_parallel: int | None = None, force_new: bool = False,
        progress: bool | None = None, log=print,
        checkpoints: checkpoint.CheckpointOptions | None = None,
        batching: str | None = None) -> Summary:
    """Runs every config of `sweep` not yet done in `out`, resuming from checkpoints.

    Args:
      sweep: the parsed sweep.
      out: the run directory (created, or continued if it holds this sweep).
      max_parallel: at most this many configs per compiled block.
      force_new: move a run directory of another sweep aside instead of refusing it.
      progress: progress bar on/off (None: on when stderr is a terminal).
      log: where messages go.
      checkpoints: when to checkpoint (default CheckpointOptions()).
      batching: how a device runs its configs (`resolve_batching`; default: the sweep's
        `batching` option, else "auto").

    Returns:
      What was done, skipped and failed.

    Raises:
      checkpoint.Interrupted: after SIGTERM/SIGINT, once a checkpoint is saved and the
        results merged; running the same command again resumes.
    """
    t0 = time.perf_counter()
    configs = sweep.configs()  # validated before anything compiles
    is_main = jax.process_index() == 0
    # Only process 0 checks and creates the directory; the others wait, then read it.
    rd = (RunDir.prepare(out, sweep, configs, force_new=force_new) if is_main else RunDir(out))
    _barrier("prepare")
    summary = Summary(done=[], failed={}, skipped=[], seconds=0.0)
    todo = []
    for c in configs:
        (summary.skipped if rd.status(c.config_id)["state"] == DONE else todo).append(c)
    _barrier("planned")  # every process must plan from the same statuses
    if summary.skipped:
        log(f"jaxcl: {len(summary.skipped)} of {len(configs)} configs already done, skipping them")
    sharding = config_mesh()
    max_parallel = max_parallel or sweep.options.get("max_parallel")
    batching = batching or sweep.options.get("batching", "auto")
    resolve_batching(batching)  # a bad value is refused before anything compiles
    groups = group_by_static(todo)
    bar = Progress(sum(c.n_steps for c in todo), progress)
    ckpt = checkpoints or checkpoint.CheckpointOptions()
    try:
        with checkpoint.StopSignal() as stop:
            for gi, (static, group) in enumerate(groups.items()):
                bar.group(f"group {gi + 1}/{len(groups)} d={static.d} m={static.m} "
                          f"({len(group)} configs)", sum(c.n_steps for c in group))
                for block, n_pad in plan_blocks(group, sharding, max_parallel, batching):
                    if _agree(stop.requested):  # between blocks: nothing to save
                        raise checkpoint.Interrupted(stop.signum, "between blocks")
                    run_block(rd, static, block, n_pad, sharding, bar, summary, ckpt, stop,
                              batching)
                    if is_main and jax.process_count() == 1:  # a live view for the watcher
                        rd.write_manifest(sweep, configs)
    except checkpoint.Interrupted:
        bar.close()
        _barrier("interrupted")
        if is_main:  # flush: results.jsonl and the manifest reflect every finished chunk
            rd.merge_results(configs)
            rd.write_manifest(sweep, configs)
        raise
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


def _agree(flag: bool) -> bool:
    """True if any process says so: every process must take part in a checkpoint save."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"jaxcl:{name}")
