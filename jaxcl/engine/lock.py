"""The run directory's lock: POSIX record locks (fcntl) on RUN_DIR/.jaxcl.lock, for a whole run
or for one slice of a job array (`Shard`), and the holders' notes that a refused run prints."""

from __future__ import annotations

import errno
import json
import os
import time

from jaxcl.fileio import dumps, write_text

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

        if (
            os.path.isdir(self.path)
            and not os.path.exists(self.file)
            and not os.path.exists(os.path.join(self.path, "manifest.json"))
            and foreign(os.listdir(self.path))
        ):
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
                raise RunDirBusy(
                    f"{what}run directory {self.path!r} is in use by another jaxcl "
                    f"run ({self.holders()}); wait for it to finish, or stop it (a "
                    "killed run releases the lock) and run again"
                ) from None
            if e.errno in self.REFUSED:
                raise RunDirBusy(
                    f"run directory {self.path!r}: the file system refuses locks "
                    f"({os.strerror(e.errno)}), so two runs could write it at once; "
                    "pass --no-lock to run unlocked if you are sure no other run "
                    "uses it"
                ) from None
            raise
        if self.shard is not None:
            n = self.shard.count
            lo, hi = Shard(0, n).byte(), Shard(0, n).byte() + n
            if (lo > 1 and _held(fd, 1, lo - 1)) or _held(fd, hi, 0):
                os.close(fd)
                raise RunDirBusy(
                    f"run directory {self.path!r}: slices of another count are "
                    f"running ({self.holders()}); every task of a job array must "
                    f"use the same N as --shard I/{n}"
                )
        self._fd = fd
        self._note = dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "command": command,
                "shard": None if self.shard is None else str(self.shard),
            }
        )
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
                notes.append(
                    f"{'slice ' + info['shard'] + ': ' if info.get('shard') else ''}"
                    f"pid {info.get('pid')} on {info.get('host')} since "
                    f"{info.get('since')}: {info.get('command') or 'jaxcl run'}"
                )
        return "; ".join(notes) or "holder unknown"

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


def foreign(names: list[str]) -> bool:
    """Whether a directory holds anything but jaxcl's lock and notes."""
    return any(n != LOCK_NAME and not n.startswith(LOCK_NAME + ".") for n in names)
