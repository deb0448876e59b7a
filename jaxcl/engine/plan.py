"""`jaxcl plan SWEEP`: what a sweep will cost before it is queued (configs, shape groups,
compiles, memory, steps, a wall-time estimate from a short calibration, and the legs of a job
array's tasks under a time limit). Writes nothing: no run directory, no compile cache."""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import numpy as np

from jaxcl.engine import devices, protocol
from jaxcl.engine.options import RunOptions
from jaxcl.engine.programs import (
    block_hparams,
    compiled,
    config_mesh,
    final_observables,
    global_array,
    memory_limit,
    plan_blocks,
    preflight,
    resolve_batching,
    state_bytes,
)
from jaxcl.engine.status import format_duration
from jaxcl.engine.sweep import group_by_static, shard_configs

# Host work the calibration does not see, measured on whole runs (benchmarks/grid.py: rows,
# status and final files, merging): seconds per config and per config-chunk, and per process
# (start, imports, the figures).
HOST_PER_CONFIG, HOST_PER_CHUNK, HOST_PER_RUN = 0.004, 0.0001, 6.0

# `jaxcl plan --device-memory` on a machine without the device: the time estimate assumes the
# training programs reach this share of the card's float32 peak (an assumption, uncalibrated:
# small per-config matmuls under vmap use a GPU far less than one large one does) and this many
# seconds per compiled block size; an unnamed card is assumed to have an H100's peak.
DEVICE_PEAK_SHARE = 0.10
DEVICE_COMPILE_SECONDS = 30.0
# The share of a device's memory limit a block may fill (as `programs.auto_max_parallel`).
HEADROOM = 0.7


def calibrate(group: list, sharding, batching: str, precision: str | None = None) -> dict:
    """Compiles one shape group's programs for one config per device (their dots at
    `precision`, as the run's) and times them: the compile (init, chunk, final observables)
    and one chunk of one config per device."""
    exp, static, n_dev = protocol.of(group[0]), group[0].static(), sharding.mesh.size
    hp_np = block_hparams(group[:n_dev], n_dev)
    hp_np = hp_np._replace(steps=np.full_like(hp_np.steps, 1 << 30))  # never an idle chunk
    hp = jax.tree.map(lambda x: global_array(x, sharding), hp_np)
    init_fn, chunk_fn = compiled(exp, static, sharding, batching=batching, precision=precision)
    t0 = time.perf_counter()
    state = jax.block_until_ready(init_fn(hp))
    t1 = time.perf_counter()
    state, m = jax.block_until_ready(chunk_fn(hp, state))
    t2 = time.perf_counter()
    runs = []
    for _ in range(2):
        t = time.perf_counter()
        state, m = jax.block_until_ready(chunk_fn(hp, state))
        runs.append(time.perf_counter() - t)
    t3 = time.perf_counter()
    jax.block_until_ready(final_observables(exp, static, sharding, precision)(hp, state))
    t4 = time.perf_counter()
    chunk = min(runs)
    return {"chunk": chunk, "compile": (t1 - t0) + (t2 - t1 - chunk) + (t4 - t3)}


def estimate(
    configs: list,
    sharding,
    batching: str,
    max_parallel: int | None,
    chunk_seconds: float,
    cal: dict,
) -> dict:
    """Seconds for one process to run `configs` (calibrations `cal` by group key), and the
    blocks and compiles it takes."""
    n_dev = sharding.mesh.size
    total, blocks, compiles = HOST_PER_RUN, 0, 0
    for key, group in group_by_static(configs).items():
        c = cal[key]
        size = None
        if (
            not max_parallel
            and chunk_seconds > 0
            and resolve_batching(batching) == "sequential"
            and c["chunk"] > 0
        ):
            per_device = max(1, int(chunk_seconds / c["chunk"]))
            size = (1 << (per_device.bit_length() - 1)) * n_dev
        plan = plan_blocks(group, sharding, max_parallel or size, batching)
        pads = {n_pad for _, n_pad in plan}
        compiles += len(pads)
        blocks += len(plan)
        total += len(pads) * c["compile"]
        for block, n_pad in plan:
            chunks = [-(-cfg.n_steps // cfg.log_every) for cfg in block]
            total += sum(chunks) / n_dev * c["chunk"]
            total += len(block) * HOST_PER_CONFIG + sum(chunks) * HOST_PER_CHUNK
    return {"seconds": total, "blocks": blocks, "compiles": compiles}


def plan(
    sweep,
    options: RunOptions | None = None,
    *,
    array: int | None = None,
    time_limit: float | None = None,
    signal_seconds: float = 120.0,
    calibrate_time: bool = True,
    device: str | None = None,
    log=print,
    **fields,
) -> dict:
    """Prints (through `log`) and returns what running `sweep` will take on this machine.

    Args:
      options: the run's options (`max_parallel`, `batching`, `chunk_seconds` matter here);
        the sweep's [sweep] table fills those not given. `**fields` is a shorthand for them.
      array: also the time per task of a job array of this many tasks (`--shard I/N`).
      time_limit: minutes per leg (sbatch --time): the legs per task, each leg using
        the limit less `signal_seconds` (the warning's offset).
      calibrate_time: compile and time each group's programs (off: no time estimate).
      device: plan for one device this machine does not have (`plan_device`): a memory size
        ("80G") or a kind of `devices.KINDS` ("h100").
    """
    options = dataclasses.replace(options or RunOptions(), **fields).with_sweep(sweep.options)
    if device is not None:
        return plan_device(sweep, options, device, estimate_time=calibrate_time, log=log)
    configs = sweep.configs()
    batching = resolve_batching(options.batching)
    max_parallel, chunk_seconds = options.max_parallel, options.chunk_seconds
    sharding = config_mesh()
    n_dev = sharding.mesh.size
    limit, what = memory_limit()
    groups = group_by_static(configs)
    log(
        f"jaxcl plan: {len(configs)} configs in {len(groups)} shape groups on {n_dev} "
        f"{jax.default_backend()} device(s), batching {batching}; memory: {_gib(limit)} "
        f"({what})"
    )
    cal, out = {}, {"configs": len(configs), "groups": []}
    for (name, static), group in groups.items():
        exp = protocol.get(name)
        steps = sorted({c.n_steps for c in group})
        given = sorted({str(c.steps) for c in group})
        state, step = state_bytes(group[0]), exp.config_bytes(static)
        plan_ = plan_blocks(group, sharding, max_parallel, batching)
        per_dev = max(n_pad for _, n_pad in plan_) // n_dev
        block_mem = per_dev * state + (step if batching == "sequential" else per_dev * step)
        if calibrate_time:
            cal[(name, static)] = calibrate(group, sharding, batching, options.matmul_precision)
        g = {
            "experiment": name,
            "shape": exp.describe(static),
            "configs": len(group),
            "steps": steps,
            "steps_given": given,
            "config_bytes": state + step,
            "block_bytes_per_device": block_mem,
            **cal.get((name, static), {}),
        }
        out["groups"].append(g)
        log(
            f"  {name} {g['shape']}: {len(group)} configs; steps {', '.join(given)} -> "
            f"{_range(steps)} ({sum(c.n_steps for c in group):,} config-steps); memory "
            f"{_mib(state + step)} per config, {_mib(block_mem)} per device for its largest "
            f"block ({per_dev} configs per device) of {_gib(limit)}"
            + (
                f"; calibration: compile {g['compile']:.1f} s, a chunk of one config per "
                f"device {g['chunk'] * 1e3:.1f} ms"
                if calibrate_time
                else ""
            )
        )
    if not calibrate_time:
        return out
    est = estimate(configs, sharding, batching, max_parallel, chunk_seconds, cal)
    out.update(est)
    log(
        f"  compiles: {est['compiles']} block sizes ({est['blocks']} blocks); estimated wall "
        f"time on this machine: {format_duration(est['seconds'])}"
    )
    if array:
        from jaxcl.engine.lock import Shard

        tasks = [
            estimate(
                shard_configs(configs, Shard(i, array)),
                sharding,
                batching,
                max_parallel,
                chunk_seconds,
                cal,
            )["seconds"]
            for i in range(array)
        ]
        out["array"] = {"tasks": array, "seconds_per_task": max(tasks)}
        line = (
            f"  a job array of {array} tasks: up to {format_duration(max(tasks))} per task "
            f"(tasks of {len(shard_configs(configs, Shard(0, array)))} configs or fewer)"
        )
        if time_limit:
            usable = time_limit * 60 - signal_seconds
            if usable <= 0:
                line += (
                    f"; --time={time_limit:g} min is not more than the warning's "
                    f"{signal_seconds:g} s: no leg would train"
                )
            else:
                legs = math.ceil(max(tasks) / usable)
                out["array"]["legs_per_task"] = legs
                line += (
                    f"; under --time={time_limit:g} (the warning {signal_seconds:g} s "
                    f"before it) {legs} leg(s) per task"
                )
        log(line)
    return out


def step_flops(cfg, precision: str | None = None) -> float:
    """FLOPs of one training step of one config: XLA's cost analysis of its unbatched chunk
    program, lowered, not compiled (the analysis counts a loop's body once, so a chunk of
    `log_every` steps counts as one step)."""
    import functools

    from jaxcl.engine.precision import pinned

    exp, static = protocol.of(cfg), cfg.static()
    state = jax.eval_shape(functools.partial(exp.init, static), cfg.hparams())
    fn = jax.jit(pinned(functools.partial(exp.run_chunk, static), precision))
    cost = fn.lower(cfg.hparams(), state).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", 0.0))


def plan_device(
    sweep, options: RunOptions, device: str, *, estimate_time: bool = True, log=print
) -> dict:
    """`jaxcl plan --device-memory`: the blocks and memory of `sweep` on one device that this
    machine does not have, and an uncalibrated wall-time estimate (`options` resolved).

    Memory: jax's default share of the card (`devices.JAX_MEMORY_FRACTION`), of which a block
    fills at most HEADROOM, with each config's training state and step temporaries as
    `preflight` counts them; "auto" batching is vmap, as on any accelerator. Time: each group's
    FLOPs per config-step (`step_flops`) at DEVICE_PEAK_SHARE of the card's float32 peak, plus
    DEVICE_COMPILE_SECONDS per block size and the host's work; an assumption until `jaxcl plan`
    runs on the device, which calibrates.

    Raises:
      ConfigError: an unknown device, or a config that cannot fit on it (`preflight`).
    """
    label, memory, kind = devices.target(device)
    peak = (kind or devices.KINDS["h100"]).f32_flops
    batching = "vmap" if options.batching == "auto" else options.batching
    configs = sweep.configs()
    limit = int(memory * devices.JAX_MEMORY_FRACTION)
    what = f"{devices.JAX_MEMORY_FRACTION:.0%} of {_gib(memory)}, jax's default share of a card"
    preflight(configs, (limit, what))
    sharding = config_mesh(1)  # one card: only the block sizes and their padding matter
    groups = group_by_static(configs)
    log(
        f"jaxcl plan for {label} (not this machine): {len(configs)} configs in {len(groups)} "
        f"shape groups on 1 device, batching {batching}; memory: {_gib(limit)} ({what})"
    )
    out = {"configs": len(configs), "device": label, "memory_bytes": limit, "groups": []}
    total, blocks, compiles = HOST_PER_RUN, 0, 0
    for (name, static), group in groups.items():
        exp = protocol.get(name)
        state, step = state_bytes(group[0]), exp.config_bytes(static)
        if options.max_parallel:
            size = options.max_parallel
        elif batching == "vmap":
            size = max(1, int(HEADROOM * limit // (state + step)))
        else:  # sequential: one config's temporaries at a time
            size = max(1, int((HEADROOM * limit - step) // state))
        plan_ = plan_blocks(group, sharding, size, batching)
        per_dev = max(n_pad for _, n_pad in plan_)
        block_mem = per_dev * state + (step if batching == "sequential" else per_dev * step)
        config_steps = sum(c.n_steps for c in group)
        g = {
            "experiment": name,
            "shape": exp.describe(static),
            "configs": len(group),
            "config_bytes": state + step,
            "block_bytes_per_device": block_mem,
            "blocks": len(plan_),
            "configs_per_block": per_dev,
        }
        line = (
            f"  {name} {g['shape']}: {len(group)} configs ({config_steps:,} config-steps); "
            f"memory {_mib(state + step)} per config; {len(plan_)} block(s) of up to {per_dev} "
            f"configs, {_mib(block_mem)} each of {_gib(limit)}"
        )
        blocks += len(plan_)
        compiles += len({n for _, n in plan_})
        if estimate_time:
            g["step_flops"] = step_flops(group[0], options.matmul_precision)
            g["seconds"] = config_steps * g["step_flops"] / (DEVICE_PEAK_SHARE * peak)
            total += g["seconds"] + len(group) * HOST_PER_CONFIG
            total += sum(-(-c.n_steps // c.log_every) for c in group) * HOST_PER_CHUNK
            line += f"; {g['step_flops'] / 1e6:,.2f} MFLOP per config-step"
        out["groups"].append(g)
        log(line)
    out.update(blocks=blocks, compiles=compiles)
    if not estimate_time:
        return out
    total += compiles * DEVICE_COMPILE_SECONDS
    out["seconds"] = total
    out["assumptions"] = {
        "peak_share": DEVICE_PEAK_SHARE,
        "f32_flops": peak,
        "compile_seconds": DEVICE_COMPILE_SECONDS,
    }
    log(
        f"  compiles: {compiles} block sizes ({blocks} blocks); wall time on {label}: about "
        f"{format_duration(total)}, AN ESTIMATE, not calibrated on the device: it assumes "
        f"{DEVICE_PEAK_SHARE:.0%} of "
        + ("its" if kind else "an H100's")
        + f" float32 peak ({peak / 1e12:.1f} TFLOP/s) for XLA's count of each step's FLOPs "
        f"and {DEVICE_COMPILE_SECONDS:.0f} s per compile; `jaxcl plan` on the device "
        "calibrates it"
    )
    return out


def _range(xs: list) -> str:
    return f"{xs[0]:,}" if len(xs) == 1 else f"{xs[0]:,}..{xs[-1]:,}"


def _mib(n: float) -> str:
    return f"{n / (1 << 20):,.2f} MiB"


def _gib(n: float) -> str:
    return f"{n / (1 << 30):,.1f} GiB"
