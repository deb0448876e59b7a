"""Crash-safe file I/O shared by the engine and the experiments: every file is written whole or
not at all (temporary file, fsync, rename), and JSON-lines readers drop a torn last line."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from typing import Any

import numpy as np


class DiskFullError(OSError):
    """No space left: the file being written was discarded, earlier files are intact."""


def _numpy_value(x: Any):
    """json's fallback for what it cannot write itself: numpy arrays and scalars."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"Object of type {type(x).__name__} is not JSON serializable")


def dumps(obj: Any, **kw) -> str:
    """json.dumps that also writes numpy arrays (as lists) and numpy scalars (as numbers)."""
    return json.dumps(obj, default=_numpy_value, **kw)


def atomic_write(path: str, write) -> None:
    """Writes via a temporary file in the same directory, fsync, then rename over `path`."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from the rest of a group
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if e.errno == errno.ENOSPC:
            raise DiskFullError(
                errno.ENOSPC,
                f"no space left on device while writing {path}; "
                "the earlier version of the file is intact",
            ) from None
        raise
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: str, obj: Any) -> None:
    write_text(path, dumps(obj, indent=1, sort_keys=True) + "\n")


def free_bytes(path: str) -> int | None:
    """Free bytes for this user on the file system `path` is (or would be) on: the nearest
    existing ancestor's; None where the file system cannot be asked."""
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path or ".").free
    except OSError:
        return None


def format_bytes(n: float) -> str:
    """A byte count for people: `512 B`, `2.0 KB`, `3.5 MB`, `1.2 GB` (powers of 1024)."""
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def read_jsonl(path: str) -> list[dict]:
    """Rows of a .jsonl file; a torn last line (a crash mid-append) is dropped."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def to_json(obs: dict) -> dict:
    """Arrays as JSON values: lists for arrays, scalars for 0-d, None for NaN/Inf."""
    out = {}
    for k, v in obs.items():
        v = np.asarray(v)
        if v.dtype.kind == "f":
            v = v.astype(np.float64)
            vals = [None if not np.isfinite(x) else float(x) for x in v.ravel()]
            out[k] = (
                vals[0]
                if v.ndim == 0
                else (np.asarray(vals, object).reshape(v.shape).tolist() if v.ndim > 1 else vals)
            )
        else:
            out[k] = v.item() if v.ndim == 0 else v.tolist()
    return out
