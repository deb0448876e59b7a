"""Blocks sized by wall time, so that a stop request waits for one short chunk, and the blocks a
previous run checkpointed, resumed as they were."""

from __future__ import annotations

import json
import os
from typing import Callable, Iterator

from jax.sharding import NamedSharding

from jaxcl.engine import checkpoint
from jaxcl.engine.programs import plan_blocks, resolve_batching

# The first block of a large group: this many configs per device, timed to size the others.
PROBE_PER_DEVICE = 64


def saved_blocks(run_dir: str) -> list[tuple[list[str], int]]:
    """(config ids in row order, padded rows) of every block that has a checkpoint in
    `run_dir`, oldest first, from the newest readable step's meta record."""
    base = os.path.join(run_dir, checkpoint.SUBDIR)
    found = []
    for name in os.listdir(base) if os.path.isdir(base) else []:
        path = os.path.join(base, name)
        if not os.path.isdir(path) or name.endswith(".damaged"):
            continue
        steps = sorted((int(s) for s in os.listdir(path) if s.isdigit()), reverse=True)
        for step in steps:
            try:
                with open(os.path.join(path, str(step), "meta", "metadata")) as f:
                    meta = json.load(f)
                found.append((os.path.getmtime(path), meta["config_ids"], int(meta["n_rows"])))
                break
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return [(ids, n) for _, ids, n in sorted(found, key=lambda x: x[0])]


def blocks(
    group: list,
    sharding: NamedSharding,
    *,
    saved: list,
    max_parallel: int | None,
    batching: str,
    group_size: int,
    seconds: float,
    timing: Callable[[], float | None],
) -> Iterator[tuple[list, int]]:
    """The (configs, padded rows) blocks of one shape group, to run one after another.

    First the blocks of `saved` (`saved_blocks`) whose configs are all in `group`, exactly as
    they were checkpointed (their rows resume there), then the rest as `plan_blocks` cuts it.
    With no `max_parallel`, a group larger than `PROBE_PER_DEVICE` configs per device runs them
    first as a probe block; `timing()`, called once the probe block has run, gives its seconds
    per chunk (the same on every process), and the other blocks are sized so that a chunk takes
    about `seconds` (a power of two configs per device, so that at most a few block sizes
    compile; under vmap at least two, `plan_blocks`'s least), never more than memory allows.
    Both batchings are sized alike, as if a chunk's time grew linearly with its configs: so it
    does one after another (sequential); vmapped, it grows about as fast on a CPU (its blocks
    are cache-sized) and slower on an accelerator that runs them in parallel, where a block may
    come out smaller than the device could take (`--chunk-seconds 0` sizes by memory alone). None of this changes a result beyond what the batching allows for
    any chunking (`programs.plan_blocks`): bitwise under sequential batching, and under vmap
    bitwise too on two or more devices (round-off on one, see docs/engine.md).
    """
    n_dev = sharding.mesh.size
    by_id = {c.config_id: c for c in group}
    for ids, n_rows in saved:
        if ids and all(i in by_id for i in ids):
            cfgs = [by_id.pop(i) for i in ids]
            yield (
                cfgs,
                (
                    n_rows
                    if n_rows % n_dev == 0 and n_rows >= len(cfgs)
                    else -(-len(cfgs) // n_dev) * n_dev
                ),
            )
    rest = [c for c in group if c.config_id in by_id]
    if not rest:
        return
    plan = plan_blocks(rest, sharding, max_parallel, batching, group_size=group_size)
    probe = PROBE_PER_DEVICE * n_dev
    if max_parallel or seconds <= 0 or max(len(b) for b, _ in plan) <= probe:
        yield from plan
        return
    cap = max(len(b) for b, _ in plan)  # what memory allows
    rest = sorted(rest, key=lambda c: -c.n_steps)  # the longest first, as plan_blocks does
    yield from plan_blocks(rest[:probe], sharding, probe, batching, group_size=group_size)
    per_chunk = timing()
    per_device = (
        PROBE_PER_DEVICE if not per_chunk else max(1, int(PROBE_PER_DEVICE * seconds / per_chunk))
    )
    per_device = 1 << (per_device.bit_length() - 1)  # a power of two
    if resolve_batching(batching) == "vmap":
        per_device = max(2, per_device)  # plan_blocks would pad a block of one per device to two
    yield from plan_blocks(
        rest[probe:], sharding, min(cap, per_device * n_dev), batching, group_size=group_size
    )
