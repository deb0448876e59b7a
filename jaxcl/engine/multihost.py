"""What the processes of a multi-process run (jax.distributed) agree on: the rows of a sharded
config axis each one holds, flags and timings every process must see alike, and barriers. With
one process each of these is a no-op or a plain read."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding


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


def any_process(flag: bool) -> bool:
    """True if any process says so: every process must take part in a checkpoint save."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def max_over_processes(x: float) -> float:
    """The largest of every process's `x` (block sizes must be the same on all of them)."""
    if jax.process_count() == 1:
        return float(x)
    from jax.experimental import multihost_utils

    return float(np.max(multihost_utils.process_allgather(np.float32(x))))


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier of this name."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"jaxcl:{name}")
