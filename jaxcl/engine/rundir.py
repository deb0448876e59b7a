"""Run-directory layout and crash-safe I/O: every file is written whole or not at all.

    RUN_DIR/
      sweep.toml            copy of the sweep file
      manifest.json         sweep fingerprint, config list and each config's state
      status/<id>.json      one config's state, written by the process that owns it
      rows/<id>.jsonl       one config's logged chunks (merged into results.jsonl)
      final/<id>.npz|json   final arrays and fully resolved config (SPEC §7)
      results.jsonl         tidy table: one row per config per logged chunk
      checkpoints/          orbax checkpoints of unfinished blocks
      *.png                 figures an experiment adds (liao: figure1.png)
"""

from __future__ import annotations

import errno
import json
import os
import time
from typing import Iterable

import numpy as np

from jaxcl.errors import ConfigError
from jaxcl.fileio import (DiskFullError, atomic_write, dumps, read_jsonl,  # noqa: F401
                          write_json, write_text)

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"


class RunDirError(ConfigError):
    """The run directory cannot be used for this sweep; nothing in it was changed."""


LOCK_NAME = ".jaxcl.lock"


class RunDirBusy(RuntimeError):
    """Another `jaxcl run` holds this run directory's lock (or locks cannot be taken there)."""


class RunDirLock:
    """An exclusive POSIX record lock (fcntl) on RUN_DIR/.jaxcl.lock, held while a run writes.

    fcntl record locks, unlike flock, hold between the nodes of a cluster on NFS and Lustre
    (flock can be node-local, e.g. Lustre mounted with localflock), and the kernel releases them
    when the process dies, so a killed run never leaves a stale lock. Only the holder writes
    the file (pid, host, since, command) for the message the next run prints. POSIX locks belong
    to the process and are all dropped when it closes any descriptor of the file: nothing else
    in the holding process opens it.
    """

    REFUSED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)

    def __init__(self, path: str):
        self.path = path
        self.file = os.path.join(path, LOCK_NAME)
        self._fd: int | None = None
        self.created = False
        self._note = ""

    def acquire(self, command: str = "") -> bool:
        """Takes the lock, creating the run directory if needed. Returns False (nothing
        written) for an existing directory that is not a jaxcl run directory, which
        RunDir.prepare then refuses.

        Raises:
          RunDirBusy: another process holds the lock, or the file system refuses locks.
        """
        import fcntl
        import socket

        if (os.path.isdir(self.path) and not os.path.exists(self.file)
                and not os.path.exists(os.path.join(self.path, "manifest.json"))
                and os.listdir(self.path)):
            return False
        self.created = not os.path.exists(self.file)
        os.makedirs(self.path, exist_ok=True)
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EACCES, errno.EAGAIN):
                raise RunDirBusy(f"run directory {self.path!r} is in use by another jaxcl run "
                                 f"({self.holder()}); wait for it to finish, or stop it (a "
                                 "killed run releases the lock) and run again") from None
            if e.errno in self.REFUSED:
                raise RunDirBusy(f"run directory {self.path!r}: the file system refuses locks "
                                 f"({os.strerror(e.errno)}), so two runs could write it at once; "
                                 "pass --no-lock to run unlocked if you are sure no other run "
                                 "uses it") from None
            raise
        self._fd = fd
        self._note = dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command})
        return True

    def write_note(self) -> None:
        """Who holds the lock, for the message of the next run (once the run is accepted)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, (self._note + "\n").encode(), 0)

    def active(self) -> bool | None:
        """Whether some process holds the lock now, asked with F_GETLK: it takes no lock (for
        `jaxcl status`; closing this descriptor drops nothing since this process holds none).
        None where the file system does not answer."""
        import fcntl
        import struct

        if not os.path.exists(self.file):
            return False
        fmt = "hhqqi4x"  # struct flock on 64-bit Linux: type, whence, start, len, pid
        try:
            fd = os.open(self.file, os.O_RDONLY)
        except OSError:
            return None
        try:
            got = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(fmt, fcntl.F_WRLCK, 0, 0, 0, 0))
            return struct.unpack(fmt, got)[0] != fcntl.F_UNLCK
        except (OSError, struct.error):
            return None
        finally:
            os.close(fd)

    def holder(self) -> str:
        """Who holds the lock, from the holder's note (read by another process)."""
        try:
            with open(self.file) as f:
                info = json.loads(f.read() or "{}")
        except (OSError, ValueError):
            info = {}
        if not info:
            return "holder unknown"
        return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}: "
                f"{info.get('command') or 'jaxcl run'}")

    def release(self, refused: bool = False) -> None:
        """Drops the lock (closing the file does); the note stays for the record. A run refused
        before writing anything (`refused`) also removes a lock file it created itself."""
        if self._fd is not None:
            if refused and self.created:
                os.unlink(self.file)
            os.close(self._fd)
            self._fd = None


class RunDir:
    """One sweep's run directory. Only the owning process writes a config's files."""

    def __init__(self, path: str):
        self.path = path

    def p(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    # ---- creation and identity
    @classmethod
    def prepare(cls, path: str, sweep, configs: list[object], *, force_new: bool = False,
                is_main: bool = True) -> "RunDir":
        """Opens `path` for `sweep`, creating it if new; refuses a directory of another sweep.

        With force_new, an existing directory is moved aside to `<path>.prev-<time>` (never
        deleted) and a fresh one is started.
        """
        rd = cls(path)
        ids = [c.config_id for c in configs]
        if os.path.exists(rd.p("manifest.json")):
            with open(rd.p("manifest.json")) as f:
                old = json.load(f)
            if old.get("config_ids") != ids:
                if not force_new:
                    raise RunDirError(
                        f"run directory {path!r} was made by a different sweep "
                        f"({_describe_diff(old.get('fingerprint', {}), sweep.fingerprint())}); "
                        "use another --out, or --force-new to move it aside and start anew")
                rd._move_aside(is_main)
        elif os.path.isdir(path) and set(os.listdir(path)) - {LOCK_NAME}:
            if not force_new:
                raise RunDirError(f"run directory {path!r} exists, is not empty and has no "
                                  "manifest.json: not a jaxcl run directory; use another --out")
            rd._move_aside(is_main)
        if is_main and not os.path.exists(rd.p("manifest.json")):
            for sub in ("final", "rows", "status"):
                os.makedirs(rd.p(sub), exist_ok=True)
            write_text(rd.p("sweep.toml"), sweep.text)
            rd.write_manifest(sweep, configs)
        return rd

    moved_aside = False

    def _move_aside(self, is_main: bool) -> None:
        self.moved_aside = True
        if is_main:
            dest = f"{self.path}.prev-{time.strftime('%Y%m%d-%H%M%S')}"
            os.replace(self.path, dest)
            print(f"jaxcl: moved the existing run directory aside to {dest}")

    def write_manifest(self, sweep, configs: list[object], invocation: dict | None = None
                       ) -> None:
        """manifest.json: the sweep's identity, each config's state, and the history of the
        `jaxcl run` invocations that wrote this directory (kept across rewrites)."""
        states = {c.config_id: self.status(c.config_id) for c in configs}
        invocations = []
        if os.path.exists(self.p("manifest.json")):
            try:
                with open(self.p("manifest.json")) as f:
                    invocations = json.load(f).get("invocations", [])
            except (OSError, ValueError):
                invocations = []
        if invocation is not None:
            invocations = invocations + [invocation]
        write_json(self.p("manifest.json"), {
            "invocations": invocations,
            "fingerprint": sweep.fingerprint(),
            "fingerprint_hash": sweep.fingerprint_hash(),
            "config_ids": [c.config_id for c in configs],
            "configs": states,
            "counts": {s: sum(v["state"] == s for v in states.values())
                       for s in (PENDING, RUNNING, DONE, FAILED)},
        })

    # ---- per-config state
    def status(self, config_id: str) -> dict:
        path = self.p("status", config_id + ".json")
        if os.path.exists(path):
            with open(path) as f:
                st = json.load(f)
            if st["state"] != DONE or self.has_final(config_id):
                return st
        return {"state": PENDING}

    def set_status(self, config_id: str, state: str, **info) -> None:
        write_json(self.p("status", config_id + ".json"), {"state": state, **info})

    def has_final(self, config_id: str) -> bool:
        return all(os.path.exists(self.p("final", config_id + ext)) for ext in (".npz", ".json"))

    # ---- rows
    def reset_rows(self, config_id: str, keep_until_step: int = -1) -> None:
        """Drops rows past `keep_until_step` (all rows for -1), e.g. when a config restarts."""
        path = self.p("rows", config_id + ".jsonl")
        kept = [r for r in read_jsonl(path) if r["step"] <= keep_until_step]
        write_text(path, "".join(dumps(r) + "\n" for r in kept))

    def append_rows(self, config_id: str, rows: Iterable[dict]) -> None:
        """Appends and flushes (a killed process loses nothing; a torn last line is dropped on
        read). No fsync per chunk: rows are re-derived from the checkpointed state if lost."""
        text = "".join(dumps(r) + "\n" for r in rows)
        if not text:
            return
        try:
            with open(self.p("rows", config_id + ".jsonl"), "a") as f:
                f.write(text)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise DiskFullError(errno.ENOSPC, "no space left on device while logging "
                                    f"rows of {config_id}") from None
            raise

    def merge_results(self, configs: list[object]) -> int:
        """Concatenates every config's rows, in grid order, into results.jsonl (atomically)."""
        parts = []
        for c in configs:
            path = self.p("rows", c.config_id + ".jsonl")
            parts.extend(dumps(r) + "\n" for r in read_jsonl(path))
        write_text(self.p("results.jsonl"), "".join(parts))
        return len(parts)

    # ---- finals (SPEC §7)
    def write_final(self, cfg, arrays: dict[str, np.ndarray], info: dict) -> None:
        """final/<id>.npz (w0, w, b, M, eps) then final/<id>.json; the json marks completion."""
        cid = cfg.config_id
        atomic_write(self.p("final", cid + ".npz"),
                     lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}))
        write_json(self.p("final", cid + ".json"),
                   {**cfg.resolved(), "config_id": cid, **info})

    def load_info(self, config_id: str) -> dict:
        """final/<id>.json: the resolved config, its final scalars and observables."""
        with open(self.p("final", config_id + ".json")) as f:
            return json.load(f)

    def load_final(self, config_id: str) -> tuple[dict[str, np.ndarray], dict]:
        with np.load(self.p("final", config_id + ".npz")) as z:
            arrays = {k: z[k] for k in z.files}
        with open(self.p("final", config_id + ".json")) as f:
            return arrays, json.load(f)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _describe_diff(old: dict, new: dict) -> str:
    a, b = _flatten(old), _flatten(new)
    diffs = [f"{k}: {a.get(k, '<unset>')!r} there vs {b.get(k, '<unset>')!r} here"
             for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return "fields that differ: " + "; ".join(diffs) if diffs else "its config list differs"
