"""Requeue of a Slurm batch job (or one task of a job array) that was asked to stop before its
time limit, so a long run goes on leg after leg with no one resubmitting it."""

from __future__ import annotations

import os
import signal
import subprocess

# Requeues allowed by `jaxcl run --requeue` without a number.
MAX_REQUEUES = 20


def job_id(env: dict | None = None) -> str | None:
    """This job's id for scontrol: ARRAYJOB_TASK for a job-array task, else $SLURM_JOB_ID;
    None outside Slurm."""
    env = os.environ if env is None else env
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def restarts(env: dict | None = None) -> int:
    """How many times Slurm has requeued this job ($SLURM_RESTART_COUNT; 0 on its first leg)."""
    env = os.environ if env is None else env
    try:
        return int(env.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def leg(env: dict | None = None) -> dict | None:
    """{"job", "leg"} for the invocation record of a run under Slurm (leg 1 is the first)."""
    jid = job_id(env)
    return None if jid is None else {"job": jid, "leg": restarts(env) + 1}


def requeue(max_requeues: int, env: dict | None = None, run=subprocess.run) -> str:
    """Requeues this job with `scontrol requeue` unless it was requeued `max_requeues` times.

    Slurm then stops this leg (SIGTERM), which is ignored from here on: the caller has saved
    everything and is exiting. A failure is returned, not raised: the checkpoint is saved and
    the same command resumes it.

    Returns:
      What happened, for the invocation record ("requeued ..." or "not requeued: ...").
    """
    jid, n = job_id(env), restarts(env)
    if jid is None:
        return "not requeued: not a Slurm job ($SLURM_JOB_ID is not set)"
    if n >= max_requeues:
        return (
            f"not requeued: job {jid} was requeued {n} times, the cap (--requeue "
            f"{max_requeues}); submit it again to continue"
        )
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        proc = run(["scontrol", "requeue", jid], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return f"not requeued: scontrol requeue {jid} failed ({e})"
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        return (
            f"not requeued: scontrol requeue {jid} failed (exit {proc.returncode}"
            + (f": {why[-1]}" if why else "")
            + ")"
        )
    return f"requeued job {jid} for leg {n + 2} (at most {max_requeues} requeues)"
