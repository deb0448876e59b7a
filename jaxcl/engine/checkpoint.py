"""Checkpoint-and-resume of a block's training state with orbax-checkpoint.

A block (the configs of one vmapped program) checkpoints into `RUN_DIR/checkpoints/<block_id>/`,
one orbax step directory per saved chunk boundary, named by the global step. Each step holds two
items: `state`, the whole training-state pytree of every row of the block (flattened to a dict of
arrays, restored with the same NamedSharding), and `meta`, a JSON record of the block's identity
(config ids, padded row count) and position (chunk index, step). Saves happen only at chunk
boundaries, so a resumed block runs exactly the compiled programs an uninterrupted one would run,
and its arrays come out bitwise equal. Orbax writes each step into a temporary directory and
renames it on commit, so a crash or a full disk never leaves a half-written checkpoint that looks
complete; a damaged committed one is detected on restore and the previous one is used instead.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import time
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxcl import fileio
from jaxcl.engine.options import CheckpointOptions
from jaxcl.fileio import DiskFullError, format_bytes

SUBDIR = "checkpoints"


def block_id(config_ids: list[str]) -> str:
    """Names a block by its ordered config list, so checkpoints only restore into that block."""
    return hashlib.sha256(json.dumps(list(config_ids)).encode()).hexdigest()[:16]


def _leaf_names(tree) -> tuple[list[str], Any]:
    """Stable, storage-safe names for a pytree's leaves, and its treedef."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = [
        f"{i:02d}_" + re.sub(r"[^A-Za-z0-9]+", "_", jax.tree_util.keystr(p)).strip("_")
        for i, (p, _) in enumerate(paths)
    ]
    return names, treedef


def _flat(tree) -> dict:
    # A dict of leaves rather than the State itself: optax's empty states (EmptyState()) are
    # pytree nodes without leaves, which orbax's PyTree handler does not round-trip.
    names, _ = _leaf_names(tree)
    return dict(zip(names, jax.tree.leaves(tree)))


def _first_words(e: BaseException, limit: int = 240) -> str:
    """The gist of an error: tensorstore appends kilobytes of JSON spec to its messages."""
    text = str(e).split(" [tensorstore_spec")[0].strip()
    return text if len(text) <= limit else text[:limit] + " ..."


def _is_disk_full(e: BaseException | None) -> bool:
    """ENOSPC anywhere in the chain: an OSError, or tensorstore's ValueError("RESOURCE_EXHAUSTED:
    ... No space left on device [os_error_code='28']") from orbax's writer threads."""
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if _NO_SPACE.search(str(e)):
            return True
        e = e.__cause__ or e.__context__
    return False


_NO_SPACE = re.compile(r"No space left on device|os_error_code='%d'" % errno.ENOSPC)


class _QuietNoSpace:
    """While saving, drops the log records orbax's writer threads emit (with tracebacks, through
    absl's logger) for an ENOSPC: the caller turns it into one DiskFullError message."""

    def filter(self, record) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (_NO_SPACE.search(record.getMessage()) or _is_disk_full(exc))

    def __enter__(self):
        import logging

        self._loggers = [logging.getLogger(n) for n in ("absl", "orbax", "asyncio", "")]
        for lg in self._loggers:
            lg.addFilter(self)
        return self

    def __exit__(self, *exc):
        for lg in self._loggers:
            lg.removeFilter(self)


class BlockCheckpoints:
    """The checkpoints of one block: periodic saves at chunk boundaries, restore with fallback."""

    def __init__(
        self,
        run_dir: str,
        config_ids: list[str],
        n_rows: int,
        options: CheckpointOptions,
        warn: Callable[[str], None] | None = None,
    ):
        """Names the block's checkpoint directory; nothing is read or written yet.

        Args:
          run_dir: the run directory; checkpoints go to `run_dir/checkpoints/<block_id>/`.
          config_ids: the block's configs, in row order (its identity).
          n_rows: rows of the vmapped arrays, padding included.
          options: when to save and how many to keep.
          warn: where warnings go (stderr by default).
        """
        self.config_ids = list(config_ids)
        self.block_id = block_id(self.config_ids)
        self.dir = os.path.abspath(os.path.join(run_dir, SUBDIR, self.block_id))
        self.n_rows = n_rows
        self.options = options
        self.warn = warn or (
            lambda msg: print(f"jaxcl: warning: {msg}", file=sys.stderr, flush=True)
        )
        self._last_time = time.monotonic()
        self.last_step = 0  # of the last save or restore
        self.seconds_saving = 0.0
        self.n_saved = 0

    @contextlib.contextmanager
    def _manager(self):
        """An orbax manager for one operation: ~10 ms to open, and no thread outlives a crash."""
        mngr = ocp.CheckpointManager(
            self.dir,
            item_names=("state", "meta"),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=self.options.keep,
                create=True,
                # Synchronous: the chunk program donates the state buffers right after a save,
                # and a save that returned is committed (what SIGTERM needs).
                enable_async_checkpointing=False,
                cleanup_tmp_directories=True,
            ),
        )  # leftovers of a save killed midway
        try:
            yield mngr
        finally:
            mngr.close()

    def due(self, step: int) -> bool:
        """Whether the chunk boundary at global `step` should be saved under the options."""
        o = self.options
        by_steps = o.every_steps > 0 and step // o.every_steps > self.last_step // o.every_steps
        by_time = o.every_seconds > 0 and time.monotonic() - self._last_time >= o.every_seconds
        return by_steps or by_time

    def save(self, step: int, chunk: int, state) -> None:
        """Saves the block's state after `chunk` chunks (global step `step`) and commits it.

        Raises:
          DiskFullError: no space left; the partial save was discarded and earlier
            checkpoints are intact.
        """
        t0 = time.perf_counter()
        meta = {
            "block_id": self.block_id,
            "config_ids": self.config_ids,
            "n_rows": self.n_rows,
            "chunk": chunk,
            "step": step,
            "time": time.time(),
        }
        flat = _flat(state)
        need = disk_bytes(sum(x.size * x.dtype.itemsize for x in flat.values()))
        # Refused before orbax starts: its writer threads meet ENOSPC in parallel and print
        # pages of tracebacks (then "Event loop is closed") that no caller can catch.
        free = fileio.free_bytes(os.path.dirname(self.dir))
        if free is not None and free < need:
            raise DiskFullError(
                errno.ENOSPC,
                f"not enough space left on device to save the checkpoint at step "
                f"{step} in {self.dir}: one checkpoint of this block needs about "
                f"{format_bytes(need)} and {format_bytes(free)} is free; "
                f"{self._last_good()}, and nothing was written",
            )
        try:
            with _QuietNoSpace(), self._manager() as mngr:
                mngr.save(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardSave(flat), meta=ocp.args.JsonSave(meta)
                    ),
                    force=True,
                )
                mngr.wait_until_finished()
        except Exception as e:
            if _is_disk_full(e):
                self._remove_partial()
                raise DiskFullError(
                    errno.ENOSPC,
                    f"no space left on device while saving the checkpoint at step "
                    f"{step} in {self.dir} (one checkpoint of this block needs about "
                    f"{format_bytes(need)}); {self._last_good()}, and the "
                    "partial save was removed",
                ) from None
            raise
        self._last_time, self.last_step = time.monotonic(), step
        self.seconds_saving += time.perf_counter() - t0
        self.n_saved += 1

    def _last_good(self) -> str:
        return (
            f"the last good checkpoint is step {self.last_step}, intact"
            if self.last_step
            else "there is no earlier checkpoint of this block"
        )

    def _remove_partial(self) -> None:
        """Deletes orbax's temporary directories of a save that failed (never a committed step)."""
        if jax.process_index() == 0 and os.path.isdir(self.dir):
            for name in os.listdir(self.dir):
                if ".orbax-checkpoint-tmp" in name:
                    shutil.rmtree(os.path.join(self.dir, name), ignore_errors=True)

    def steps(self) -> list[int]:
        """Committed checkpoint steps on disk, oldest first (temporary directories excluded)."""
        if not os.path.isdir(self.dir):
            return []
        with self._manager() as mngr:
            return sorted(mngr.all_steps())

    def restore_latest(self, abstract_state, sharding: NamedSharding):
        """The newest checkpoint that restores cleanly, falling back past damaged ones.

        Args:
          abstract_state: the State pytree as jax.ShapeDtypeStructs (from jax.eval_shape).
          sharding: the NamedSharding of the config axis; restored arrays carry it.

        Returns:
          (state, meta) or None when there is no usable checkpoint.
        """
        damaged = []
        found = None
        if not os.path.isdir(self.dir):
            return None
        with self._manager() as mngr:
            for step in sorted(mngr.all_steps(), reverse=True):
                where = os.path.join(self.dir, str(step))
                try:
                    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
                        "meta"
                    ]
                    if meta.get("config_ids") != self.config_ids:
                        raise ValueError("it belongs to another block (config ids differ)")
                    found = self._restore_state(mngr, step, meta, abstract_state, sharding), meta
                    break
                except Exception as e:  # any damage: orbax, tensorstore, json raise variously
                    self.warn(
                        f"checkpoint {where} cannot be restored ({type(e).__name__}: "
                        f"{_first_words(e)}); falling back to the previous one"
                    )
                    damaged.append(step)
        if damaged:
            self._move_aside(damaged)
        if found is None:
            if damaged:
                self.warn(f"no usable checkpoint in {self.dir}; the block starts from step 0")
            return None
        self.last_step = int(found[1]["step"])
        return found

    def _move_aside(self, steps: list[int]) -> None:
        """Moves damaged steps out of orbax's sight (the run will save those steps again)."""
        aside = f"{self.dir}.damaged"
        if jax.process_index() == 0:
            os.makedirs(aside, exist_ok=True)
            for step in steps:
                dest = os.path.join(aside, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
                os.replace(os.path.join(self.dir, str(step)), dest)
            self.warn(f"moved the damaged checkpoint(s) {steps} aside to {aside}")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("jaxcl:checkpoint-aside")

    def _restore_state(self, mngr, step: int, meta: dict, abstract_state, sharding: NamedSharding):
        names, treedef = _leaf_names(abstract_state)
        leaves = jax.tree.leaves(abstract_state)
        same_rows = meta["n_rows"] == self.n_rows
        # Saved with another device count (another padding): restore replicated, re-pad below.
        target = sharding if same_rows else NamedSharding(sharding.mesh, P())
        abstract = {
            n: jax.ShapeDtypeStruct((meta["n_rows"],) + a.shape[1:], a.dtype, sharding=target)
            for n, a in zip(names, leaves)
        }
        flat = mngr.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )["state"]
        for n, a in zip(names, leaves):
            if flat[n].shape != abstract[n].shape or flat[n].dtype != a.dtype:
                raise ValueError(
                    f"array {n} is {flat[n].dtype}{list(flat[n].shape)}, expected "
                    f"{a.dtype}{list(abstract[n].shape)}"
                )
        if not same_rows:
            self.warn(
                f"checkpoint {step} was saved with {meta['n_rows']} rows and this run pads "
                f"to {self.n_rows} (another device count): re-padding; the result may "
                "differ from an uninterrupted run in the last bits"
            )
            n = len(self.config_ids)
            flat = {
                k: _global(
                    np.concatenate(
                        [np.asarray(v)[:n]] + [np.asarray(v)[n - 1 : n]] * (self.n_rows - n)
                    ),
                    sharding,
                )
                for k, v in flat.items()
            }
        return jax.tree.unflatten(treedef, [flat[n] for n in names])

    def remove(self) -> None:
        """Deletes the block's checkpoints (once its finals are written they are redundant)."""
        shutil.rmtree(self.dir, ignore_errors=True)


# A checkpoint takes about its arrays' bytes plus orbax's metadata (OCDBT manifests, sharding
# and array metadata: ~40 KB measured at d = 32); the margin covers both.
SPACE_FACTOR, SPACE_SLACK = 1.1, 128 << 10


def disk_bytes(array_bytes: int) -> float:
    """The disk space to have free before saving a checkpoint of `array_bytes` of arrays."""
    return array_bytes * SPACE_FACTOR + SPACE_SLACK


def _global(x: np.ndarray, sharding: NamedSharding):
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
