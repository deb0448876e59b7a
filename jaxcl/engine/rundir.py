"""Run-directory layout and crash-safe I/O: every file is written whole or not at all.

RUN_DIR/
  sweep.toml            copy of the sweep file
  manifest.json         sweep fingerprint, config list and each config's state
  status/<id>.json      one config's state, written by the process that owns it
  rows/<id>.jsonl       one config's logged chunks (merged into results.jsonl)
  final/<id>.npz|json   final arrays and fully resolved config (SPEC §7)
  results.jsonl         tidy table: one row per config per logged chunk
  checkpoints/          orbax checkpoints of unfinished blocks
  *.png                 figures an experiment adds (its after_run hook)
"""

from __future__ import annotations

import errno
import json
import os
import time
from typing import Iterable

import numpy as np

from jaxcl.engine.lock import LOCK_NAME, RunDirBusy, RunDirLock, Shard, foreign  # noqa: F401
from jaxcl.errors import ConfigError
from jaxcl.fileio import DiskFullError, atomic_write, dumps, read_jsonl, write_json, write_text

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"


class RunDirError(ConfigError):
    """The run directory cannot be used for this sweep; nothing in it was changed."""


def load_sweep(run_dir: str, what: str = "not a jaxcl run directory") -> tuple[dict, object]:
    """(manifest.json, the Sweep of RUN_DIR/sweep.toml with the manifest's overrides), for the
    commands that read a run directory without running it (status, merge).

    Raises:
      ConfigError: no manifest.json (`what` says why that may be).
    """
    from jaxcl.engine.sweep import loads

    if not os.path.exists(os.path.join(run_dir, "manifest.json")):
        raise ConfigError(f"run directory {run_dir!r}: no manifest.json, {what}")
    manifest = RunDir(run_dir).manifest()
    with open(os.path.join(run_dir, "sweep.toml")) as f:
        sweep = loads(
            f.read(),
            manifest["fingerprint"].get("overrides", {}),
            source=os.path.join(run_dir, "sweep.toml"),
        )
    return manifest, sweep


class RunDir:
    """One sweep's run directory. Only the owning process writes a config's files."""

    def __init__(self, path: str):
        self.path = path

    def p(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    # ---- creation and identity
    @classmethod
    def prepare(
        cls,
        path: str,
        sweep,
        configs: list[object],
        *,
        force_new: bool = False,
        is_main: bool = True,
    ) -> "RunDir":
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
                        "use another --out, or --force-new to move it aside and start anew"
                    )
                rd._move_aside(is_main)
        elif os.path.isdir(path) and foreign(_not_skeleton(os.listdir(path))):
            if not force_new:
                held = sorted(_not_skeleton(os.listdir(path)))
                raise RunDirError(
                    f"run directory {path!r} exists, is not empty (it holds "
                    f"{', '.join(held[:5])}{', ...' if len(held) > 5 else ''}) "
                    "and has no manifest.json: not a jaxcl run directory; use "
                    "another --out"
                )
            rd._move_aside(is_main)
        elif os.path.exists(rd.p("sweep.toml")) and not force_new:
            with open(rd.p("sweep.toml")) as f:  # another task of the array is creating it
                if f.read() != sweep.text:
                    raise RunDirError(
                        f"run directory {path!r} is being created by a different "
                        "sweep (its sweep.toml differs); use another --out"
                    )
        if is_main and not os.path.exists(rd.p("manifest.json")):
            for sub in ("final", "rows", "status"):
                os.makedirs(rd.p(sub), exist_ok=True)
            write_text(rd.p("sweep.toml"), sweep.text)
            rd.write_manifest(sweep, configs)
        return rd

    moved_aside = False

    def manifest(self) -> dict:
        """manifest.json as written last (`write_manifest`)."""
        with open(self.p("manifest.json")) as f:
            return json.load(f)

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
        write_json(
            self.p("manifest.json"),
            {
                "invocations": legacy + self.invocations(),
                "fingerprint": sweep.fingerprint(),
                "fingerprint_hash": sweep.fingerprint_hash(),
                "config_ids": [c.config_id for c in configs],
                "configs": states,
                "counts": {
                    s: sum(v["state"] == s for v in states.values())
                    for s in (PENDING, RUNNING, DONE, FAILED)
                },
            },
        )

    # ---- invocation records
    KILLED = "ended without a record (killed, or its node failed)"

    def start_invocation(self, record: dict) -> str:
        """Records a `jaxcl run` as running (invocations/<start>-<host>-<pid>.json); returns its
        name. A run that is killed leaves it "running" until `close_stale` marks it."""
        import socket

        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{socket.gethostname()}-{os.getpid()}"
        os.makedirs(self.p("invocations"), exist_ok=True)
        write_json(
            self.p("invocations", name + ".json"), {**record, "record": name, "outcome": "running"}
        )
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
    def rows(self, config_id: str) -> list[dict]:
        """rows/<id>.jsonl: one config's logged chunks so far (a torn last line dropped)."""
        return read_jsonl(self.p("rows", config_id + ".jsonl"))

    def reset_rows(self, config_id: str, keep_until_step: int = -1) -> None:
        """Drops rows past `keep_until_step` (all rows for -1), e.g. when a config restarts."""
        path = self.p("rows", config_id + ".jsonl")
        if not os.path.exists(path):  # a config's first run: nothing to drop, nothing to write
            os.makedirs(os.path.dirname(path), exist_ok=True)  # append_rows opens it in place
            return
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
                raise DiskFullError(
                    errno.ENOSPC, f"no space left on device while logging rows of {config_id}"
                ) from None
            raise

    def merge_results(self, configs: list[object]) -> int:
        """Concatenates every config's rows, in grid order, into results.jsonl (atomically)."""
        parts = []
        for c in configs:
            parts.extend(dumps(r) + "\n" for r in self.rows(c.config_id))
        write_text(self.p("results.jsonl"), "".join(parts))
        return len(parts)

    # ---- finals (SPEC §7)
    def write_final(self, cfg, arrays: dict[str, np.ndarray], info: dict) -> None:
        """final/<id>.npz (w0, w, b, M, eps) then final/<id>.json; the json marks completion."""
        cid = cfg.config_id
        atomic_write(
            self.p("final", cid + ".npz"),
            lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}),
        )
        write_json(self.p("final", cid + ".json"), {**cfg.resolved(), "config_id": cid, **info})

    def load_info(self, config_id: str) -> dict:
        """final/<id>.json: the resolved config, its final scalars and observables."""
        with open(self.p("final", config_id + ".json")) as f:
            return json.load(f)

    def load_arrays(self, config_id: str) -> dict[str, np.ndarray]:
        """final/<id>.npz, loaded into memory."""
        with np.load(self.p("final", config_id + ".npz")) as z:
            return {k: z[k] for k in z.files}

    def load_final(self, config_id: str) -> tuple[dict[str, np.ndarray], dict]:
        return self.load_arrays(config_id), self.load_info(config_id)


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
    diffs = [
        f"{k}: {a.get(k, '<unset>')!r} there vs {b.get(k, '<unset>')!r} here"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]
    return "fields that differ: " + "; ".join(diffs) if diffs else "its config list differs"


# What `prepare` writes before manifest.json: a directory holding only these (and the lock) is a
# run directory that another task of the same job array is creating at this moment. fileio's
# atomic writes pass through `.<name>.<random>.tmp` files, sweep.toml's and manifest.json's too.
SKELETON = ("final", "rows", "status", "sweep.toml")


def _not_skeleton(names: list[str]) -> list[str]:
    def writing(n: str) -> bool:
        return n.endswith(".tmp") and any(
            n.startswith(f".{f}.") for f in ("sweep.toml", "manifest.json")
        )

    return [n for n in names if n not in SKELETON and not writing(n)]
