"""`jaxcl status RUN_DIR`: per shape group and in total, configs pending / running / done /
failed (with reasons), steps done, rate and ETA from the rows' timestamps, and the last
checkpoint's age. Read-only: it takes no lock and writes nothing, so it works while a run goes."""

from __future__ import annotations

import os
import time

from jaxcl.engine import protocol
from jaxcl.engine.rundir import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    RunDir,
    RunDirLock,
    Shard,
    load_sweep,
)
from jaxcl.engine.sweep import group_by_static, shard_configs


def status(run_dir: str, now: float | None = None) -> dict:
    """The state of a run directory as plain data (what `--json` prints).

    Returns:
      {"run_dir", "active" (a process holds the lock; None if unknown), "holder",
       "groups": [{"experiment", "group", "configs", counts..., "steps_done", "steps_total"}],
       "total": {counts..., "steps_done", "steps_total", "rate" (config-steps/s over the last
       10 minutes of rows), "eta_s"}, "failed": {config_id: reason}, "last_checkpoint_age_s"}.
      A config marked running while no process holds the lock counts as "interrupted".
    """
    now = time.time() if now is None else now
    _, sweep = load_sweep(run_dir, "not a jaxcl run directory (or not started yet)")
    rd = RunDir(run_dir)
    lock = RunDirLock(run_dir)
    active = lock.active()
    live = _live_configs(rd, lock, sweep.configs()) if active else set()
    groups, total, failed, times = [], _zero(), {}, []
    for (name, static), cfgs in group_by_static(sweep.configs()).items():
        g = _zero()
        for c in cfgs:
            st = rd.status(c.config_id)
            state = st["state"]
            if state == RUNNING and active is not None and c.config_id not in live:
                state = "interrupted"
            if state == FAILED:
                failed[c.config_id] = st.get("reason", "")
            g[state] += 1
            rows = rd.rows(c.config_id)
            done = c.n_steps if state == DONE else (rows[-1]["step"] if rows else 0)
            g["steps_done"] += min(done, c.n_steps)
            g["steps_total"] += c.n_steps
            times += [
                (r["time"], min(r["step"], c.n_steps) - (rows[i - 1]["step"] if i else 0))
                for i, r in enumerate(rows)
                if "time" in r
            ]
        groups.append(
            {
                "experiment": name,
                "group": protocol.get(name).describe(static),
                "configs": len(cfgs),
                **g,
            }
        )
        for k, v in g.items():
            total[k] += v
    recent = [(t, n) for t, n in times if t >= now - 600]
    rate = None
    if len(recent) >= 2:
        span = max(t for t, _ in recent) - min(t for t, _ in recent)
        rate = sum(n for _, n in recent) / span if span > 0 else None
    left = total["steps_total"] - total["steps_done"]
    total.update(
        configs=sum(g["configs"] for g in groups),
        rate=rate,
        eta_s=(left / rate if rate and active else None),
    )
    return {
        "run_dir": run_dir,
        "active": active,
        "holder": lock.holders() if active else None,
        "groups": groups,
        "total": total,
        "failed": failed,
        "last_checkpoint_age_s": _checkpoint_age(run_dir, now),
    }


def _live_configs(rd: RunDir, lock: RunDirLock, configs: list) -> set:
    """Config ids that a live process is running: every config for a whole run that holds the
    lock, a slice's configs for a job-array task whose byte is held."""
    live = set()
    for r in rd.invocations():
        if r.get("outcome") != "running":
            continue
        if not r.get("shard"):
            if lock.active(whole=True):
                return {c.config_id for c in configs}
            continue
        shard = Shard(*map(int, r["shard"].split("/")))
        if lock.active(shard):
            live |= {c.config_id for c in shard_configs(configs, shard)}
    if not rd.invocations():  # no invocation records (an older directory): the lock alone
        return {c.config_id for c in configs}
    return live


def _zero() -> dict:
    return {
        PENDING: 0,
        RUNNING: 0,
        "interrupted": 0,
        DONE: 0,
        FAILED: 0,
        "steps_done": 0,
        "steps_total": 0,
    }


def _checkpoint_age(run_dir: str, now: float) -> float | None:
    root = os.path.join(run_dir, "checkpoints")
    ages = [
        now - os.path.getmtime(os.path.join(root, b, s))
        for b in (os.listdir(root) if os.path.isdir(root) else [])
        if os.path.isdir(os.path.join(root, b)) and not b.endswith(".damaged")
        for s in os.listdir(os.path.join(root, b))
        if s.isdigit()
    ]
    return min(ages) if ages else None


def format_status(s: dict) -> str:
    """The human-readable table of `status`."""

    def counts(g):
        parts = [f"{g[k]} {k}" for k in (DONE, RUNNING, "interrupted", PENDING, FAILED) if g[k]]
        return ", ".join(parts) or "nothing"

    t = s["total"]
    state = (
        "running (" + s["holder"] + ")"
        if s["active"]
        else "not running"
        if s["active"] is False
        else "unknown (no lock answer)"
    )
    lines = [
        f"{s['run_dir']}: {state}",
        f"total: {t['configs']} configs: {counts(t)}; steps {t['steps_done']:,} of "
        f"{t['steps_total']:,} ({100 * t['steps_done'] / max(t['steps_total'], 1):.1f}%)"
        + (f"; {t['rate']:,.0f} config-steps/s" if t["rate"] else "")
        + (f"; ETA {format_duration(t['eta_s'])}" if t["eta_s"] else ""),
    ]
    if s["last_checkpoint_age_s"] is not None:
        lines.append(f"last checkpoint: {format_duration(s['last_checkpoint_age_s'])} ago")
    for g in s["groups"]:
        lines.append(
            f"  {g['experiment']} {g['group']}: {g['configs']} configs: {counts(g)}; "
            f"steps {g['steps_done']:,} of {g['steps_total']:,}"
        )
    for cid, why in s["failed"].items():
        lines.append(f"  failed {cid}: {why}")
    if t["interrupted"]:
        lines.append(
            "  (interrupted: marked running, but no jaxcl run holds the directory; "
            "rerun the same command to continue)"
        )
    return "\n".join(lines)


def format_duration(seconds: float) -> str:
    """A duration for people, to the second: `1h02m03s`, `2m05s`, `7s` (`jaxcl status`'s ETA,
    `jaxcl plan`'s estimates)."""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"
