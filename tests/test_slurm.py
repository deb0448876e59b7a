"""Against a real one-node Slurm (tests/slurm.py; skipped where none can be started, with the
reason): a job array of sweeps/slurm-array.sh that Slurm's warning signal interrupts, which
saves, requeues itself and resumes until the grid is done, bitwise equal to one uninterrupted
run; and `srun --ntasks=2 ... --distributed`. One file, so that one test worker runs them."""

import collections
import glob
import json
import os
import sys
import time

import numpy as np
import pytest

import slurm as slurm_helper
from support import ROOT, tiny_sweep, xla_flags

from jaxcl.engine import runner
from jaxcl.engine import slurm as jslurm
from jaxcl.engine.sweep import loads

SWEEP = tiny_sweep(20000, "seed = [0, 1, 2, 3]")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = slurm_helper.unavailable()
    if why:
        pytest.skip(f"no Slurm: {why}")
    s = slurm_helper.Slurm(str(tmp_path_factory.mktemp("slurm")))
    try:
        s.start()
        yield s
    finally:
        s.stop()


def _job_env(tmp, cache) -> dict:
    """What the batch script sees (sbatch exports the submitter's environment)."""
    return {
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
        "PYTHONPATH": ROOT,
        "JAXCL_COMPILE_CACHE": cache,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "XLA_FLAGS": xla_flags(2),  # the caller's flags: the reference run below is in-process
    }


def _finals(out) -> dict:
    got = {}
    for path in sorted(glob.glob(os.path.join(out, "final", "*.npz"))):
        with np.load(path) as z:
            got[os.path.basename(path)] = {k: z[k] for k in z.files}
    return got


def _records(out) -> list[dict]:
    recs = []
    for path in glob.glob(os.path.join(out, "invocations", "*.json")):
        try:
            with open(path) as f:
                recs.append(json.load(f))
        except (OSError, ValueError):  # being replaced right now
            pass
    return recs


def test_requeue_capped_and_said_why():
    """The requeue decision without a scheduler: the job id (array aware), the cap on
    $SLURM_RESTART_COUNT, a failing scontrol, and no Slurm at all."""
    calls = []

    class Done:
        returncode, stdout, stderr = 0, "", ""

    def ok(cmd, **kw):
        calls.append(cmd)
        return Done()

    env = {"SLURM_JOB_ID": "41", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "1"}
    assert jslurm.job_id(env) == "40_1" and jslurm.job_id({"SLURM_JOB_ID": "7"}) == "7"
    assert jslurm.leg({**env, "SLURM_RESTART_COUNT": "2"}) == {"job": "40_1", "leg": 3}
    import signal

    old = signal.getsignal(signal.SIGTERM)
    try:
        got = jslurm.requeue(3, {**env, "SLURM_RESTART_COUNT": "2"}, run=ok)
        assert calls == [["scontrol", "requeue", "40_1"]] and got.startswith("requeued")
        assert "leg 4" in got
        got = jslurm.requeue(3, {**env, "SLURM_RESTART_COUNT": "3"}, run=ok)
        assert got.startswith("not requeued") and "3 times" in got and len(calls) == 1
        Done.returncode, Done.stderr = 1, "Requested operation is presently disabled"
        got = jslurm.requeue(3, env, run=ok)
        assert got.startswith("not requeued") and "presently disabled" in got
    finally:
        signal.signal(signal.SIGTERM, old)
    assert jslurm.requeue(3, {}, run=ok).startswith("not requeued: not a Slurm job")


@pytest.mark.slow
@pytest.mark.slurm
def test_array_requeues_itself_until_done_bitwise(cluster, tmp_path, jax_cache):
    """sbatch sweeps/slurm-array.sh, two tasks. Each task's first leg gets Slurm's warning
    signal, delivered by slurmd to the batch step as `--signal=B:USR1@...` would (`scancel
    --batch --signal=USR1`, so that the test does not wait for Slurm's coarse timer); it saves,
    requeues itself and the second leg resumes and finishes. Every config done, finals bitwise
    those of one uninterrupted run, no (config, step) row twice, every leg recorded."""
    sweep = tmp_path / "s.toml"
    sweep.write_text(SWEEP)
    out = str(tmp_path / "run")
    env = {**_job_env(tmp_path, jax_cache), "SWEEP": str(sweep), "OUT": out}
    jid = cluster.run(
        [
            "sbatch",
            "--parsable",
            "--array=0-1",
            "--cpus-per-task=1",
            "--mem=400M",
            "--time=10",
            f"--output={tmp_path}/slurm-%A_%a.out",
            f"--chdir={ROOT}",
            os.path.join(ROOT, "sweeps", "slurm-array.sh"),
        ],
        env=env,
    ).stdout.strip()
    from jaxcl.engine.lock import Shard
    from jaxcl.engine.sweep import shard_configs

    first = {
        f"{jid}_{i}": shard_configs(loads(SWEEP).configs(), Shard(i, 2))[0].config_id
        for i in (0, 1)
    }

    def training(tid):  # the task's first config has rows: leg 1 is past its first chunk
        path = os.path.join(out, "rows", first[tid] + ".jsonl")
        return os.path.exists(path) and os.path.getsize(path) > 0

    def all_done():
        try:
            with open(os.path.join(out, "manifest.json")) as f:
                return json.load(f)["counts"]["done"] == 4
        except (OSError, ValueError, KeyError):
            return False

    signalled, released, deadline, seen = set(), set(), time.monotonic() + 300, []
    while True:
        # Every job of this private cluster that belongs to the array, by its array job id (%F)
        # or its name (%i): `squeue -j ARRAYJOB` loses a requeued task once `scontrol update`
        # splits it into a job record of its own, and such a task may miss from a listing.
        q = cluster.run(["squeue", "-h", "-r", "-o", "%i %F %K %T %r"]).stdout.split("\n")
        tasks = [
            (f"{jid}_{k}", state, reason)
            for i, f, k, state, reason in (line.split() for line in q if line.strip())
            if f == jid or i.startswith(jid + "_")
        ]
        if not seen or seen[-1] != tasks:
            seen.append(tasks)
        # Done when the grid is finished and no task of the array is queued. A task that never
        # shows again only waits out Slurm's two-minute hold before its next leg.
        if not tasks and all_done():
            break
        for tid, state, reason in tasks:
            if state == "RUNNING" and tid not in signalled and training(tid):
                cluster.run(["scancel", "--batch", "--signal=USR1", tid])
                signalled.add(tid)
            if state == "PENDING" and reason == "BeginTime" and tid not in released:
                # Slurm holds a requeued job for 2 min; shorten that to 10 s, not to "now": a
                # start while the last leg's credential is still being revoked fails the job
                # ("Killing non-startable batch job"), which then ends instead of running again
                cluster.run(["scontrol", "update", f"JobId={tid}", "StartTime=now+10"])
                released.add(tid)
        assert time.monotonic() < deadline, f"tasks still queued: {tasks}"
        time.sleep(0.5)
    logs = "\n".join(open(p).read() for p in sorted(glob.glob(f"{tmp_path}/slurm-*.out")))
    logs += f"\nsqueue: {seen}"
    assert signalled == {f"{jid}_0", f"{jid}_1"}, logs
    recs = sorted(_records(out), key=lambda r: (r["slurm"]["job"], r["slurm"]["leg"]))
    legs = [(r["slurm"]["leg"], r["outcome"]) for r in recs]
    assert legs == [(1, "interrupted"), (2, "finished")] * 2, (legs, logs)
    assert all(r["requeue"].startswith("requeued") for r in recs[::2])
    assert all(r["resumed"] for r in recs[1::2]), "the second legs restarted from step 0"
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f)["counts"]["done"] == 4
    with open(os.path.join(out, "results.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    keys = collections.Counter((r["config_id"], r["step"]) for r in rows)
    assert len(keys) == 4 * 2000 and max(keys.values()) == 1
    ref = str(tmp_path / "ref")
    runner.run(loads(SWEEP), ref, progress=False, log=lambda m: None)
    a, b = _finals(out), _finals(ref)
    assert sorted(a) == sorted(b) and len(a) == 4
    for name in a:
        for k in a[name]:
            assert np.array_equal(a[name][k], b[name][k]), (name, k)


@pytest.mark.slow
@pytest.mark.slurm
def test_srun_two_processes_distributed_bitwise_one_summary(cluster, tmp_path, jax_cache):
    """`srun --ntasks=2 jaxcl run ... --distributed`: jax.distributed finds its coordinator
    from Slurm's variables; the finals are bitwise those of one process, and one banner and
    one summary (counting every config) are printed."""
    sweep = tmp_path / "s.toml"
    sweep.write_text(SWEEP.replace("steps = 20000", "steps = 40"))
    out = str(tmp_path / "run")
    env = {**_job_env(tmp_path, jax_cache), "XLA_FLAGS": xla_flags(1)}
    proc = cluster.run(
        [
            "srun",
            "--ntasks=2",
            "--cpus-per-task=1",
            "--mem-per-cpu=400M",
            "--time=5",
            f"--chdir={ROOT}",
            "jaxcl",
            "run",
            str(sweep),
            "--out",
            out,
            "--distributed",
            "--no-progress",
        ],
        env=env,
        check=False,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("jaxcl: 4 configs in") == 1, proc.stdout
    summary = [line for line in proc.stdout.splitlines() if " done, " in line]
    assert len(summary) == 1 and summary[0].startswith("jaxcl: 4 done, 0 already done, 0 failed")
    (rec,) = _records(out)
    assert rec["outcome"] == "finished" and "2 process(es)" in rec["devices"]
    ref = str(tmp_path / "ref")
    runner.run(
        loads(SWEEP.replace("steps = 20000", "steps = 40")), ref, progress=False, log=lambda m: None
    )
    a, b = _finals(out), _finals(ref)
    assert sorted(a) == sorted(b) and len(a) == 4
    for name in a:
        for k in a[name]:
            assert np.array_equal(a[name][k], b[name][k]), (name, k)
