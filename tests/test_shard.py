"""Job arrays: `jaxcl run --shard I/N` runs a deterministic slice of the grid into one
run directory. Three slices started at different times, one killed with SIGKILL and rerun, end
with final arrays bitwise equal to one `jaxcl run` of the grid and one results.jsonl without
duplicates; slices lock only their own share of the directory."""

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from jaxcl.engine.cli import parse_shard
from jaxcl.engine.rundir import RunDir, RunDirBusy, RunDirLock, Shard
from jaxcl.engine.sweep import Work, loads, shard_configs
from jaxcl.errors import ConfigError
from support import ROOT, cli_env, tiny_sweep


def test_slices_cover_the_grid_once_in_contiguous_even_pieces():
    configs = list(range(10))
    for n in (1, 2, 3, 4, 7, 10):
        parts = [shard_configs(configs, Shard(i, n)) for i in range(n)]
        assert [c for p in parts for c in p] == configs  # each once, in grid order
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert shard_configs(configs, Shard(1, 3)) == [4, 5, 6]


def test_work_is_the_slice_grouped_by_shape_with_whole_group_sizes():
    """sweep.Work: the slice of shard_configs, grouped by shape in grid order, and the size each
    group has in the whole grid (which the size-1 padding rule follows)."""
    sw = loads(tiny_sweep(20, "d = [5, 6]\nseed = [0, 1, 2]"))
    work = Work.of(sw, Shard(1, 3))
    grid = sw.configs()
    assert work.configs == grid and work.mine == grid[2:4] == shard_configs(grid, Shard(1, 3))
    assert [[c.d for c in g] for g in work.groups.values()] == [[5], [6]]
    assert (
        sorted(work.group_sizes.values()) == [3, 3]
        and work.group_sizes.keys() == work.groups.keys()
    )
    assert Work.of(sw).mine == grid and len(Work.of(sw).groups) == 2
    with pytest.raises(ConfigError, match="only 6 configs, fewer than 7 slices"):
        Work.of(sw, Shard(0, 7))


def test_parse_shard():
    assert parse_shard("2/5") == Shard(2, 5)
    env = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "8"}
    assert parse_shard("auto", env) == Shard(3, 8)  # --array=1-8: task 4 is slice 3
    assert parse_shard(
        "auto", {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"}
    ) == Shard(0, 2)
    for bad, words in [
        ("3/3", "need 0 <= I < N"),
        ("-1/2", "need 0 <= I < N"),
        ("1-3", "expected I/N"),
        ("a/b", "expected I/N"),
    ]:
        with pytest.raises(ConfigError, match=words):
            parse_shard(bad)
    with pytest.raises(ConfigError, match="SLURM_ARRAY_TASK_ID is not set"):
        parse_shard("auto", {})


HOLD = textwrap.dedent("""
    import sys
    from jaxcl.engine.rundir import RunDirLock, Shard
    shard = None if sys.argv[2] == "all" else Shard(*map(int, sys.argv[2].split("/")))
    lock = RunDirLock(sys.argv[1], shard)
    lock.acquire("holder " + sys.argv[2])
    lock.write_note()
    print("held", flush=True)
    sys.stdin.read()  # until the test closes it
""")


def _hold(path, what):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), what],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def _try(path, shard):
    lock = RunDirLock(str(path), shard)
    try:
        lock.acquire()
        return None
    except RunDirBusy as e:
        return str(e)
    finally:
        lock.release()


@pytest.mark.slow
def test_slice_locks_side_by_side_and_their_conflicts(tmp_path):
    """Held by another process (POSIX locks never conflict within one): other slices of the same
    count go; the same slice, a whole run and slices of another count are refused."""
    held = _hold(tmp_path, "0/3")
    try:
        assert _try(tmp_path, Shard(1, 3)) is None and _try(tmp_path, Shard(2, 3)) is None
        err = _try(tmp_path, Shard(0, 3))
        assert "slice 0/3" in err and f"pid {held.pid}" in err and "holder 0/3" in err
        assert "in use" in _try(tmp_path, None)  # a whole run beside a slice
        assert "another count" in _try(tmp_path, Shard(1, 2))
        lock = RunDirLock(str(tmp_path))
        assert lock.active() and lock.active(Shard(0, 3)) and not lock.active(Shard(1, 3))
        assert not lock.active(whole=True)
    finally:
        held.stdin.close()
        held.wait(timeout=30)
    whole = _hold(tmp_path, "all")
    try:
        assert "in use" in _try(tmp_path, Shard(2, 3))  # a slice beside a whole run
        assert RunDirLock(str(tmp_path)).active(whole=True)
    finally:
        whole.stdin.close()
        whole.wait(timeout=30)
    assert _try(tmp_path, Shard(0, 3)) is None  # the kernel released every lock


def _cmd(sweep, out, shard=None):
    return [
        sys.executable,
        "-m",
        "jaxcl",
        "run",
        str(sweep),
        "--out",
        str(out),
        "--no-progress",
        "--checkpoint-every-seconds",
        "1",
    ] + (["--shard", shard] if shard else [])


def _finals(out):
    arrays = {}
    for path in sorted(glob.glob(os.path.join(out, "final", "*.npz"))):
        with np.load(path) as z:
            arrays[os.path.basename(path)] = {k: z[k] for k in z.files}
    return arrays


@pytest.mark.slow
def test_three_slices_one_killed_end_bitwise_equal_to_one_run(tmp_path, jax_cache):
    sweep = tmp_path / "s.toml"
    # 6 configs, 2 per slice; long enough (seconds of training) for slice 1 to be killed
    # while it trains
    sweep.write_text(tiny_sweep(steps=15_000).replace("log_every = 10", "log_every = 1000"))
    env = cli_env(devices=2, cache=jax_cache)
    ref, out = tmp_path / "ref", tmp_path / "out"
    configs = loads(sweep.read_text()).configs()
    mine = {i: [c.config_id for c in shard_configs(configs, Shard(i, 3))] for i in range(3)}

    procs = {
        1: subprocess.Popen(
            _cmd(sweep, out, "1/3"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    }
    try:
        deadline = time.monotonic() + 180
        first_rows = out / "rows" / (mine[1][0] + ".jsonl")
        while not (first_rows.exists() and first_rows.stat().st_size):  # slice 1 trains
            assert procs[1].poll() is None and time.monotonic() < deadline, procs[1].stdout.read()
            time.sleep(0.05)
        procs[0] = subprocess.Popen(
            _cmd(sweep, out, "0/3"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        os.kill(procs[1].pid, signal.SIGKILL)  # mid-training
        procs[1].wait(timeout=30)
        assert procs[0].wait(timeout=300) == 0, procs[0].stdout.read()
        assert "configs of other slices are not done yet" in procs[0].stdout.read()
        assert not (out / "figure1.png").exists()  # not the last task: no figure yet
        rerun = subprocess.run(
            _cmd(sweep, out, "1/3"), env=env, capture_output=True, text=True, timeout=300
        )  # the killed slice, rerun alone
        assert rerun.returncode == 0, rerun.stderr
        last = subprocess.run(
            _cmd(sweep, out, "2/3"), env=env, capture_output=True, text=True, timeout=300
        )
        assert last.returncode == 0, last.stderr
        single = subprocess.run(
            _cmd(sweep, ref), env=env, capture_output=True, text=True, timeout=300
        )
        assert single.returncode == 0, single.stderr
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()

    a, b = _finals(ref), _finals(out)
    assert sorted(a) == sorted(b) and len(a) == 6
    for name in a:
        for k in a[name]:
            assert np.array_equal(a[name][k], b[name][k]), (name, k)
    with open(out / "results.jsonl") as f:
        rows = [json.loads(line) for line in f]
    keys = [(r["config_id"], r["step"]) for r in rows]
    assert len(keys) == len(set(keys)) == 6 * 15  # every chunk of every config, once
    assert (out / "figure1.png").exists()  # the last task wrote the figure
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["done"] == 6
    outcomes = [(i["shard"], i["outcome"]) for i in manifest["invocations"]]
    assert ("1/3", RunDir.KILLED) in outcomes  # the killed task, marked by its rerun
    assert outcomes.count(("1/3", "finished")) == 1 and ("0/3", "finished") in outcomes


@pytest.mark.slow
def test_merge_writes_what_is_there(tmp_path, jax_cache, capsys):
    """`jaxcl merge` on a directory where only slice 0 ran: the rows and counts it has."""
    from jaxcl.engine import runner

    sweep = loads(tiny_sweep(steps=20))
    out = str(tmp_path / "out")
    runner.run(sweep, out, shard=Shard(0, 3), progress=False)
    assert "not done yet" in capsys.readouterr().out
    os.remove(os.path.join(out, "results.jsonl"))
    counts = runner.merge(out)
    assert counts["done"] == 2 and counts["pending"] == 4
    with open(os.path.join(out, "results.jsonl")) as f:
        assert len(f.readlines()) == 2 * 2
    assert os.path.exists(os.path.join(out, "figure1.png"))  # of the finished configs
    res = subprocess.run(
        [sys.executable, "-m", "jaxcl", "merge", out],
        env=cli_env(),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert res.returncode == 0 and "2 done" in res.stdout and "4 pending" in res.stdout
