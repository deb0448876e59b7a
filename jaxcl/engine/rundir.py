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


class Shard(tuple):
    """(index, count): task `index` of `count` runs a deterministic slice of the grid."""

    def __new__(cls, index: int, count: int):
        return super().__new__(cls, (index, count))

    index = property(lambda self: self[0])
    count = property(lambda self: self[1])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def byte(self) -> int:
        """This slice's byte in the lock file: byte 0 guards the whole run, then one byte per
        slice, the counts' ranges one after another (1: [1, 2), 2: [2, 4), 3: [4, 7), ...)."""
        return 1 + self.count * (self.count - 1) // 2 + self.index


class RunDirLock:
    """A POSIX record lock (fcntl) on RUN_DIR/.jaxcl.lock, held while a run writes.

    fcntl record locks, unlike flock, hold between the nodes of a cluster on NFS and Lustre
    (flock can be node-local, e.g. Lustre mounted with localflock), and the kernel releases them
    when the process dies, so a killed run never leaves a stale lock. POSIX locks belong to the
    process and are all dropped when it closes any descriptor of the file: nothing else in the
    holding process opens it.

    A whole run locks the whole file. A slice of a job array (`Shard` I/N) takes a shared lock
    on byte 0 and an exclusive one on its own byte (`Shard.byte`): slices run side by side, a
    slice twice or a whole run beside any slice is refused, and so are slices of another count
    while these run (their slices would overlap). The holder's note (pid, host, since, command)
    is the lock file's text for a whole run and `.jaxcl.lock.I-of-N` beside it for a slice.
    """

    REFUSED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)

    def __init__(self, path: str, shard: Shard | None = None):
        self.path = path
        self.shard = shard
        self.file = os.path.join(path, LOCK_NAME)
        self._fd: int | None = None
        self.created = False
        self._note = ""

    @property
    def note_file(self) -> str:
        if self.shard is None:
            return self.file
        return f"{self.file}.{self.shard.index}-of-{self.shard.count}"

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
                and _foreign(os.listdir(self.path))):
            return False
        self.created = not os.path.exists(self.file)
        os.makedirs(self.path, exist_ok=True)
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        what = "" if self.shard is None else f"slice {self.shard} of "
        try:
            if self.shard is None:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, 0)
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self.shard.byte())
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EACCES, errno.EAGAIN):
                raise RunDirBusy(f"{what}run directory {self.path!r} is in use by another jaxcl "
                                 f"run ({self.holders()}); wait for it to finish, or stop it (a "
                                 "killed run releases the lock) and run again") from None
            if e.errno in self.REFUSED:
                raise RunDirBusy(f"run directory {self.path!r}: the file system refuses locks "
                                 f"({os.strerror(e.errno)}), so two runs could write it at once; "
                                 "pass --no-lock to run unlocked if you are sure no other run "
                                 "uses it") from None
            raise
        if self.shard is not None:
            n = self.shard.count
            lo, hi = Shard(0, n).byte(), Shard(0, n).byte() + n
            if (lo > 1 and _held(fd, 1, lo - 1)) or _held(fd, hi, 0):
                os.close(fd)
                raise RunDirBusy(f"run directory {self.path!r}: slices of another count are "
                                 f"running ({self.holders()}); every task of a job array must "
                                 f"use the same N as --shard I/{n}")
        self._fd = fd
        self._note = dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command,
                            "shard": None if self.shard is None else str(self.shard)})
        return True

    def write_note(self) -> None:
        """Who holds the lock, for the message of the next run (once the run is accepted)."""
        if self._fd is None:
            return
        if self.shard is None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, (self._note + "\n").encode(), 0)
        else:  # not the lock file: closing another descriptor of it would drop the lock
            write_text(self.note_file, self._note + "\n")

    def active(self, shard: Shard | None = None, whole: bool = False) -> bool | None:
        """Whether some process holds the lock now (or, with `shard`, that slice's byte; with
        `whole`, a whole run's lock: a byte far past every slice's), asked with F_GETLK: it
        takes no lock (for `jaxcl status`; closing this descriptor drops nothing since this
        process holds none). None where the file system does not answer."""
        if not os.path.exists(self.file):
            return False
        try:
            fd = os.open(self.file, os.O_RDONLY)
        except OSError:
            return None
        try:
            if whole:
                return _held(fd, 1 << 40, 1)
            return _held(fd, 0, 0) if shard is None else _held(fd, shard.byte(), 1)
        except OSError:
            return None
        finally:
            os.close(fd)

    def holders(self) -> str:
        """Who holds the lock, from the holders' notes (read by another process)."""
        notes = []
        for name in sorted(os.listdir(self.path)) if os.path.isdir(self.path) else []:
            if name == LOCK_NAME or name.startswith(LOCK_NAME + "."):
                try:
                    with open(os.path.join(self.path, name)) as f:
                        info = json.loads(f.read() or "{}")
                except (OSError, ValueError):
                    continue
                if not info:
                    continue
                if info.get("shard"):
                    shard = Shard(*map(int, info["shard"].split("/")))
                    if self.active(shard) is False:
                        continue  # a slice that ended: its note is history
                notes.append(f"{'slice ' + info['shard'] + ': ' if info.get('shard') else ''}"
                             f"pid {info.get('pid')} on {info.get('host')} since "
                             f"{info.get('since')}: {info.get('command') or 'jaxcl run'}")
        return "; ".join(notes) or "holder unknown"

    holder = holders

    def release(self, refused: bool = False) -> None:
        """Drops the lock (closing the file does); the note stays for the record. A run refused
        before writing anything (`refused`) also removes a lock file it created itself."""
        if self._fd is not None:
            if refused and self.created:
                os.unlink(self.file)
            os.close(self._fd)
            self._fd = None


def _held(fd: int, start: int, length: int) -> bool:
    """Whether another process holds any lock on [start, start + length) (length 0: to the
    end), asked with F_GETLK for a write lock, which any lock conflicts with."""
    import fcntl
    import struct

    fmt = "hhqqi4x"  # struct flock on 64-bit Linux: type, whence, start, len, pid
    got = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(fmt, fcntl.F_WRLCK, 0, start, length, 0))
    return struct.unpack(fmt, got)[0] != fcntl.F_UNLCK


def _foreign(names: list[str]) -> bool:
    """Whether a directory holds anything but jaxcl's lock and notes."""
    return any(n != LOCK_NAME and not n.startswith(LOCK_NAME + ".") for n in names)


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
        elif os.path.isdir(path) and _foreign(os.listdir(path)):
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

    def write_manifest(self, sweep, configs: list[object]) -> None:
        """manifest.json: the sweep's identity, each config's state, and the history of the
        `jaxcl run` invocations that wrote this directory (`invocations/`, one file each, so
        the tasks of a job array never overwrite each other's)."""
        states = {c.config_id: self.status(c.config_id) for c in configs}
        legacy = []  # written into the manifest itself, before invocations/ existed
        if os.path.exists(self.p("manifest.json")):
            try:
                with open(self.p("manifest.json")) as f:
                    legacy = [i for i in json.load(f).get("invocations", []) if "record" not in i]
            except (OSError, ValueError):
                legacy = []
        write_json(self.p("manifest.json"), {
            "invocations": legacy + self.invocations(),
            "fingerprint": sweep.fingerprint(),
            "fingerprint_hash": sweep.fingerprint_hash(),
            "config_ids": [c.config_id for c in configs],
            "configs": states,
            "counts": {s: sum(v["state"] == s for v in states.values())
                       for s in (PENDING, RUNNING, DONE, FAILED)},
        })

    # ---- invocation records
    KILLED = "ended without a record (killed, or its node failed)"

    def start_invocation(self, record: dict) -> str:
        """Records a `jaxcl run` as running (invocations/<start>-<host>-<pid>.json); returns its
        name. A run that is killed leaves it "running" until `close_stale` marks it."""
        import socket

        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{socket.gethostname()}-{os.getpid()}"
        os.makedirs(self.p("invocations"), exist_ok=True)
        write_json(self.p("invocations", name + ".json"),
                   {**record, "record": name, "outcome": "running"})
        return name

    def update_invocation(self, name: str, record: dict) -> None:
        write_json(self.p("invocations", name + ".json"), {**record, "record": name})

    def invocations(self) -> list[dict]:
        """Every recorded invocation, oldest first."""
        out = []
        if os.path.isdir(self.p("invocations")):
            for fn in sorted(os.listdir(self.p("invocations"))):
                if fn.endswith(".json"):
                    try:
                        with open(self.p("invocations", fn)) as f:
                            out.append(json.load(f))
                    except (OSError, ValueError):
                        continue
        return sorted(out, key=lambda r: (r.get("started", ""), r["record"]))

    def close_stale(self, shard) -> None:
        """Marks as killed the records still "running" that the caller's lock proves dead: all
        of them for a whole run, those of the same slice for a slice."""
        for r in self.invocations():
            if r.get("outcome") == "running" and (shard is None or r.get("shard") == str(shard)):
                self.update_invocation(r["record"], {**r, "outcome": self.KILLED})

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
