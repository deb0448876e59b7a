"""The compiled programs of a shape group and the plan that feeds them: the device mesh, how a
device runs its share of the configs (`batching`), and how a group is cut into padded blocks.
Host-side helpers only, no I/O; `runner` drives them and writes the run directory."""

from __future__ import annotations

import functools
import os
import sys

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcl.configbase import stack_hparams
from jaxcl.engine import protocol
from jaxcl.engine.options import BATCHINGS
from jaxcl.engine.precision import pinned
from jaxcl.errors import ConfigError

AXIS = "configs"


def config_mesh(n_devices: int | None = None) -> NamedSharding:
    """Shards the vmapped config axis over every device JAX sees (all processes), or over the
    first n_devices of them (single process only)."""
    mesh = Mesh(np.asarray(jax.devices()[:n_devices]), (AXIS,))
    return NamedSharding(mesh, P(AXIS))


# XLA:CPU gives matmuls to YNNPACK and by default also moves the elementwise work around them
# into YNNPACK subgraphs. For the training step that costs more than it saves: the biases'
# broadcasts get materialized at the size of the pre-activations, and the chunk runs ~20%
# slower than with YNNPACK taking the matmuls alone (benchmarks/throughput.py measures both).
CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
}


@functools.lru_cache(maxsize=None)
def compiler_options(enabled: bool = True) -> dict:
    """CPU_COMPILER_OPTIONS on the CPU backend if this jaxlib knows them; {} elsewhere."""
    if not enabled or jax.default_backend() != "cpu":
        return {}
    try:  # the option is experimental: an XLA that dropped it refuses it at compile time
        jax.jit(lambda x: x + 1, compiler_options=CPU_COMPILER_OPTIONS).lower(
            np.float32(0)
        ).compile()
    except Exception as e:
        print(
            f"jaxcl: note: XLA refused {CPU_COMPILER_OPTIONS} ({str(e).splitlines()[0]}); "
            "compiling with its defaults",
            file=sys.stderr,
        )
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


def compiled(
    exp: protocol.Experiment,
    static,
    sharding: NamedSharding,
    tuned: bool = True,
    batching: str = "auto",
    precision: str | None = None,
):
    """The jitted init and run_chunk of one shape group of an experiment over a sharded config
    axis; compiled once per (experiment, shape, devices, batching, precision), reused.

    batching: see `resolve_batching`. tuned=False compiles without `compiler_options` (for
    benchmarks: what they are worth). precision: the float32 matmul precision every dot of
    both programs is traced at (`jaxcl.engine.precision`; None: its DEFAULT).
    """
    return _compiled(exp, static, sharding, tuned, resolve_batching(batching), precision)


# What a program that runs once is compiled with on CPU, on top of `compiler_options`: LLVM's
# level 1 instead of 2 (which changes last bits, so never for the training state). The final
# observables of one d = 32, L = 8 config compiled in 1.6 s instead of 2.2 s and ran as fast;
# with each device mapping them over its configs instead of vmapping, those of a 16-config
# block compiled in 2.5 s instead of 3.5 s (JAX_LOG_COMPILES=1 on 2 CPU devices).
CPU_ONCE_OPTIONS = {"xla_backend_optimization_level": 1}


@functools.lru_cache(maxsize=None)
def final_observables(
    exp: protocol.Experiment, static, sharding: NamedSharding, precision: str | None = None
):
    """exp.final_observables of one shape group, (hp, state) stacked over configs: each device
    maps it over its own configs one after another (the unbatched program compiles faster than
    the vmapped one, and it runs once), compiled for compile time (CPU_ONCE_OPTIONS), its dots
    at `precision` (as `compiled`)."""
    opts = compiler_options()
    if opts:  # CPU
        opts = {**opts, **CPU_ONCE_OPTIONS}
    return jax.jit(
        pinned(_sequential(functools.partial(exp.final_observables, static), sharding), precision),
        compiler_options=opts,
    )


@functools.lru_cache(maxsize=None)
def _compiled(
    exp: protocol.Experiment,
    static,
    sharding: NamedSharding,
    tuned: bool,
    batching: str,
    precision: str | None,
):
    opts = compiler_options(tuned)
    if batching == "vmap":
        wrap = _batched
    else:
        wrap = functools.partial(_sequential, sharding=sharding)
    init_fn = jax.jit(
        pinned(wrap(functools.partial(exp.init, static)), precision),
        out_shardings=sharding,
        compiler_options=opts,
    )
    chunk_fn = jax.jit(
        pinned(wrap(functools.partial(exp.run_chunk, static)), precision),
        out_shardings=sharding,
        donate_argnums=(1,),
        compiler_options=opts,
    )
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

    return jax.shard_map(
        local, mesh=sharding.mesh, in_specs=P(AXIS), out_specs=P(AXIS), check_vma=False
    )


def auto_max_parallel(
    static, cfg, sharding: NamedSharding, headroom: float = 0.7, batching: str = "auto"
) -> int | None:
    """How many configs of this shape fit in device memory at once, or None if unbounded.

    Reads the accelerator's `bytes_limit` (None on CPU, where nothing is chunked) and the
    compiled chunk program's memory analysis for two configs per device.
    """
    stats = jax.local_devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    if not limit:
        return None
    key = (cfg.experiment, static, sharding, resolve_batching(batching))
    if key not in _PER_CONFIG_BYTES:  # a compile: once per shape, however often it is planned
        n = 2 * sharding.mesh.size
        hp = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
            stack_hparams([cfg] * n),
        )
        init_fn, chunk_fn = compiled(protocol.of(cfg), static, sharding, batching=batching)
        state = jax.eval_shape(init_fn, hp)
        mem = chunk_fn.lower(hp, state).compile().memory_analysis()
        per_device = (
            mem.argument_size_in_bytes
            + mem.output_size_in_bytes
            + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes
        )
        _PER_CONFIG_BYTES[key] = max(1, per_device // 2)
    return max(1, int(headroom * limit // _PER_CONFIG_BYTES[key])) * sharding.mesh.size


_PER_CONFIG_BYTES: dict = {}  # auto_max_parallel's compiled footprints, by shape


# vmap on CPU: the working set per device that keeps a block's intermediates near cache;
# measured in benchmarks/ (vmapped/loop speedup fell from ~1.4x at 10-40 MB to 0.9x at
# ~600 MB, d = 128).
CPU_BLOCK_BYTES = 32 << 20
# sequential on CPU: one config's intermediates live at a time, so a block is bounded only by
# the training states it holds (W0, W, b, M, ...) per device. Larger blocks mean fewer
# dispatches and less padding; smaller ones a manifest refreshed more often.
CPU_STATE_BYTES = 256 << 20


def state_bytes(cfg) -> int:
    """Bytes of one config's training state, from its abstract shapes."""
    st = jax.eval_shape(functools.partial(protocol.of(cfg).init, cfg.static()), cfg.hparams())
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(st))


def memory_limit() -> tuple[int, str]:
    """(bytes, what): one accelerator's memory limit, or on CPU the host's physical memory."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"the {jax.default_backend()} device's memory"
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no check
        return 1 << 62, "memory (unknown)"
    return int(total), "the host's memory"


def preflight(configs: list, limit: tuple[int, str] | None = None) -> None:
    """Refuses, before anything is written or compiled, a shape group whose single config
    cannot fit in memory: its training state (from abstract shapes, nothing allocated) plus the
    step's working set (the experiment's `config_bytes`) against `memory_limit()`. A group
    that fits one config at a time is run in blocks that fit (`plan_blocks`), never refused.

    Raises:
      ConfigError: naming the config, its shape, the estimate and the limit.
    """
    limit_bytes, what = limit or memory_limit()
    seen = set()
    for cfg in configs:
        key = (cfg.experiment, cfg.static())
        if key in seen:
            continue
        seen.add(key)
        exp = protocol.of(cfg)
        state = state_bytes(cfg)
        step = exp.config_bytes(cfg.static())
        if state + step > limit_bytes:
            gib = 1 << 30
            raise ConfigError(
                f"config {cfg.config_id} ({exp.name}: {exp.describe(cfg.static())}) needs about "
                f"{(state + step) / gib:,.1f} GiB for one config ({state / gib:,.1f} GiB of "
                f"training state, {step / gib:,.1f} GiB of step temporaries), more than the "
                f"{limit_bytes / gib:,.1f} GiB of {what}; use smaller shapes"
                + (f". {exp.sizing_hint}" if exp.sizing_hint else "")
            )


def plan_blocks(
    group: list,
    sharding: NamedSharding,
    max_parallel: int | None = None,
    batching: str = "auto",
    group_size: int | None = None,
) -> list[tuple[list, int]]:
    """Splits a shape group into (configs, padded size) blocks, run one after another.

    Block size: `max_parallel` if given, else what fits in device memory (accelerators), or on
    CPU a cache-sized working set (vmap) or `CPU_STATE_BYTES` of states per device
    (sequential). Blocks are padded to a multiple of the device count. With vmap, a group of
    two or more configs gets at least two per device: XLA compiles a size-1 vmapped batch to
    other kernels, and a config's result must not depend on how the grid is chunked (SPEC §7);
    a lone config runs unpadded, as it always would. Sequential batching needs neither rule;
    there a block's rows are ordered so that the devices' shares take about the same number of
    steps (`_balance`), and padding rows cost nothing (`block_hparams`). `group_size` is the
    whole group's size in the sweep when `group` is part of it (configs already done, or a job
    array's slice): the size-1 rule follows the sweep, not what is left of it.
    """
    static, n_dev = group[0].static(), sharding.mesh.size
    sequential = resolve_batching(batching) == "sequential"
    if sequential:
        cpu = max(1, CPU_STATE_BYTES // state_bytes(group[0])) * n_dev
    else:
        cpu = max(2, CPU_BLOCK_BYTES // protocol.of(group[0]).config_bytes(static)) * n_dev
    size = max_parallel or auto_max_parallel(static, group[0], sharding, batching=batching) or cpu
    per_device_min = 2 if max(len(group), group_size or 0) > 1 and not sequential else 1
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


def block_hparams(cfgs: list, n_pad: int):
    """The block's stacked hyperparameters, padded to n_pad rows (see plan_blocks).

    A padding row repeats the last config with `steps` = 0, so it never trains: under
    sequential batching its chunks are skipped and cost nothing; it is never written.
    """
    hp = stack_hparams(cfgs + [cfgs[-1]] * (n_pad - len(cfgs)))
    return hp._replace(steps=np.where(np.arange(n_pad) < len(cfgs), hp.steps, 0).astype(np.int32))


def _balance(block: list, n_dev: int, n_pad: int) -> list:
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
