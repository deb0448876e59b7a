"""Checkpoint-and-resume: SIGKILL at random points, SIGTERM, damaged checkpoints, a full disk,
mismatched sweeps and blocks. Every resumed run must end bitwise equal to an uninterrupted one."""

import functools
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxcl import fileio
from jaxcl.engine import checkpoint, programs, signals
from jaxcl.experiments.liao import train
from jaxcl.engine.cli import main
from jaxcl.experiments.liao.config import stack_hparams
from jaxcl.engine.sweep import loads
from support import cli_env


# Every guarantee is checked for both experiments: a grid over experiments, the geometry
# block first (150 steps: the first kills land in it, the later ones in liao's). Liao's shapes
# and log_every are test_runner's, so the in-process compile is shared. 3 liao configs on 2
# devices: the padding row is exercised too.
SWEEP = """
[base]
log_every = 10

[[grid]]
experiment = ["geometry"]
samples_major = [5]
p = [4]
batch = [16]
negatives = [3]
ratio = [0.4]
steps = [150]
seed = [0, 1]

[[grid]]
d = [5]
m = [6]
L = [3]
K = [8]
steps = [600]
seed = [0, 1, 2]
"""
N_CONFIGS = 5


def _liao(configs):
    return [c for c in configs if c.experiment == "liao"]


EVERY_CHUNK = ["--checkpoint-every-steps", "10", "--checkpoint-every-seconds", "0"]


def _args(sweep, out, *extra):
    return ["run", str(sweep), "--out", str(out), "--no-progress", *extra]


def _finals(out) -> dict:
    arrays = {}
    for path in sorted(glob.glob(os.path.join(out, "final", "*.npz"))):
        with np.load(path) as z:
            arrays[os.path.basename(path)] = {k: z[k] for k in z.files}
    return arrays


def _rows(out) -> list:
    """results.jsonl without the wall-clock `time` column (which no two runs share)."""
    with open(os.path.join(out, "results.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in f]


def _assert_same_as(reference, out):
    ref_arrays, ref_rows = reference
    got = _finals(out)
    assert sorted(got) == sorted(ref_arrays) and len(got) == N_CONFIGS
    for name, arrays in ref_arrays.items():
        for k, v in arrays.items():
            assert np.array_equal(got[name][k], v), (name, k)  # bitwise, not allclose
    assert _rows(out) == ref_rows  # no row lost or repeated across resumes
    blocks = glob.glob(os.path.join(out, "checkpoints", "*"))
    assert not [b for b in blocks if not b.endswith(".damaged")]  # removed once done


def _has_rows(rows_dir) -> bool:
    """Some config has written a row. The runner writes atomically: a hidden temp file, then
    a rename, so a temp file listed a moment ago may be gone by the time it is looked at."""
    try:
        return any(p.stat().st_size for p in rows_dir.iterdir() if not p.name.startswith("."))
    except FileNotFoundError:
        return False


def _ckpt_steps(out) -> list[int]:
    """Committed checkpoint steps (orbax's temporary directories have non-numeric names)."""
    return sorted(
        int(e)
        for d in glob.glob(os.path.join(out, "checkpoints", "*"))
        for e in os.listdir(d)
        if e.isdigit()
    )


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "s.toml"
    path.write_text(SWEEP)
    return path


@pytest.fixture(scope="module")
def reference(sweep_file, jax_cache, tmp_path_factory):
    """An uninterrupted CLI run (default options: no checkpoint in so short a run)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    proc = _cli(sweep_file, out, cache=jax_cache)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return _finals(out), _rows(out)


def _cli(sweep_file, out, *extra, cache=None):
    env = cli_env(devices=2, cache=cache)
    return subprocess.Popen(
        [sys.executable, "-m", "jaxcl", *_args(sweep_file, out, *extra)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(proc, ready, deadline):
    while not ready():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "subprocess too slow"
        time.sleep(0.02)
    return True


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_is_bitwise_identical(
    sweep_file, reference, jax_cache, tmp_path
):
    out = tmp_path / "out"
    rng = random.Random(1234)
    deadline = time.monotonic() + 120
    target = 0
    for _ in range(3):
        # Kill once a checkpoint past the previous kill is committed, plus a random delay so
        # the kill lands anywhere: mid-chunk, mid-append of rows, mid-save of a checkpoint.
        target += rng.choice([40, 80, 120])
        proc = _cli(sweep_file, out, *EVERY_CHUNK, cache=jax_cache)
        try:
            alive = _wait_for(proc, lambda: (_ckpt_steps(out) or [0])[-1] >= target, deadline)
            assert alive, proc.communicate()
            time.sleep(rng.uniform(0.0, 0.15))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    proc = _cli(sweep_file, out, *EVERY_CHUNK, cache=jax_cache)
    _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    assert proc.returncode == 0, err
    _assert_same_as(reference, out)


@pytest.mark.slow
def test_sigterm_saves_exits_nonzero_and_resumes_identically(
    sweep_file, reference, jax_cache, tmp_path, capsys
):
    out = tmp_path / "out"
    # No periodic checkpoints: the only one is the one SIGTERM asks for.
    proc = _cli(sweep_file, out, "--checkpoint-every-seconds", "0", cache=jax_cache)
    rows = out / "rows"
    _wait_for(proc, lambda: _has_rows(rows), time.monotonic() + 60)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM at step" in err and "checkpoint saved" in err
    assert "run the same command again" in err and f"--out {out}" in err
    steps = _ckpt_steps(out)
    assert len(steps) == 1 and 0 < steps[0] < 600
    flushed = _rows(out)  # results.jsonl was merged on the way out
    assert len(flushed) >= 3 and max(r["step"] for r in flushed) <= steps[0]
    capsys.readouterr()
    assert main(_args(sweep_file, out, "--checkpoint-every-seconds", "0")) == 0
    assert f"from the checkpoint at step {steps[0]}" in capsys.readouterr().out
    _assert_same_as(reference, out)


class _Crash(Exception):
    pass


def _crash_after_saves(monkeypatch, n):
    """Makes the n-th checkpoint save the last thing a run does (as if the machine died)."""
    real = checkpoint.BlockCheckpoints.save

    def save(self, *args, **kw):
        real(self, *args, **kw)
        if self.n_saved >= n:
            raise _Crash

    monkeypatch.setattr(checkpoint.BlockCheckpoints, "save", save)


@pytest.mark.slow
def test_corrupted_latest_checkpoint_falls_back_with_warning(
    sweep_file, reference, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _crash_after_saves(m, 3)
        with pytest.raises(_Crash):
            main(_args(sweep_file, out, *EVERY_CHUNK))
    assert _ckpt_steps(out) == [10, 20, 30]
    # Garble bytes in the middle of the latest step's array data (OCDBT checksums catch it).
    (data,) = glob.glob(os.path.join(out, "checkpoints", "*", "30", "state", "d", "*"))
    with open(data, "r+b") as f:
        f.seek(os.path.getsize(data) // 2)
        f.write(b"\xff" * 16)
    capsys.readouterr()
    assert main(_args(sweep_file, out, *EVERY_CHUNK)) == 0
    cap = capsys.readouterr()
    assert "30 cannot be restored" in cap.err and "falling back to the previous one" in cap.err
    assert "from the checkpoint at step 20" in cap.out
    assert glob.glob(os.path.join(out, "checkpoints", "*.damaged", "30-*"))  # kept, not deleted
    _assert_same_as(reference, out)


def _one_message(err: str) -> str:
    """The run's stderr is one jaxcl error line: no traceback, no orbax or asyncio log."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("jaxcl: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.slow
def test_full_disk_is_one_message_and_a_rerun_ends_bitwise_equal(
    sweep_file, reference, tmp_path, monkeypatch, capsys
):
    """Too little space for the third checkpoint (the free-space check before each save):
    exit 3, one message naming the last good checkpoint and the size one needs, nothing
    half-written; with space again, the rerun resumes and ends bitwise equal."""
    out = tmp_path / "out"
    real = fileio.free_bytes
    calls = []

    def free(path):
        calls.append(path)
        return 1000 if len(calls) >= 4 else real(path)  # 1: the run's warning, 2-3: saves

    with monkeypatch.context() as m:
        m.setattr(fileio, "free_bytes", free)
        assert main(_args(sweep_file, out, *EVERY_CHUNK)) == 3
    msg = _one_message(capsys.readouterr().err)
    assert "not enough space left on device to save the checkpoint at step 30" in msg
    assert "the last good checkpoint is step 20, intact" in msg and "1000 B is free" in msg
    need = re.search(r"needs about ([0-9.]+) KB", msg)
    assert need and float(need.group(1)) > 1.0  # the block's state, not a placeholder
    assert "rerun the same command" in msg
    assert _ckpt_steps(out) == [10, 20]
    assert main(_args(sweep_file, out, *EVERY_CHUNK)) == 0
    assert "from the checkpoint at step 20" in capsys.readouterr().out
    _assert_same_as(reference, out)


@pytest.mark.slow
def test_enospc_inside_orbax_is_caught_and_the_partial_save_removed(
    sweep_file, reference, tmp_path, monkeypatch, capsys
):
    """The space runs out while orbax writes (another writer filled the disk): tensorstore's
    ValueError("RESOURCE_EXHAUSTED ... [os_error_code='28']") becomes the same one message, the
    temporary directory the failed save left is deleted, committed steps stay."""
    out = tmp_path / "out"
    real = ocp.CheckpointManager.save
    calls = []

    def save(self, step, *args, **kw):
        calls.append(step)
        if len(calls) >= 3:
            os.makedirs(
                os.path.join(str(self.directory), f"{step}.orbax-checkpoint-tmp-7", "state")
            )
            raise ValueError(
                'RESOURCE_EXHAUSTED: Error writing local file "x": Failed to write '
                "298 bytes to file 18: No space left on device [os_error_code='28']"
            )
        return real(self, step, *args, **kw)

    with monkeypatch.context() as m:
        m.setattr(ocp.CheckpointManager, "save", save)
        assert main(_args(sweep_file, out, *EVERY_CHUNK)) == 3
    msg = _one_message(capsys.readouterr().err)
    assert "no space left on device while saving the checkpoint at step 30" in msg
    assert "the last good checkpoint is step 20, intact" in msg
    assert "partial save was removed" in msg
    (block,) = glob.glob(os.path.join(out, "checkpoints", "*"))
    assert sorted(os.listdir(block)) == ["10", "20"]  # no *.orbax-checkpoint-tmp-* left
    assert main(_args(sweep_file, out, *EVERY_CHUNK)) == 0
    _assert_same_as(reference, out)


@pytest.mark.slow
def test_warns_before_training_when_space_is_short(sweep_file, tmp_path, monkeypatch, capsys):
    with monkeypatch.context() as m:
        m.setattr(fileio, "free_bytes", lambda path: 2048)
        with pytest.raises(Exception):  # the first save is then refused too
            from jaxcl.engine import runner

            runner.run(
                loads(SWEEP),
                str(tmp_path / "out"),
                progress=False,
                checkpoint_every_steps=10,
                checkpoint_every_seconds=0,
            )
    out = capsys.readouterr().out
    assert "warning: 2.0 KB free" in out and "less than one checkpoint" in out


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root to mount")
@pytest.mark.slow
def test_full_tmpfs_from_the_command_line(sweep_file, tmp_path):
    """A real full disk where this machine allows mounting a small tmpfs (the injected tests
    above always run): the `jaxcl` process prints one line and exits 3."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("mount refused here")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "jaxcl", *_args(sweep_file, mnt / "out", *EVERY_CHUNK)],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=300,
        )
        assert proc.returncode == 3, proc.stderr[-3000:]
        _one_message(proc.stderr)
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


@pytest.mark.slow
def test_other_sweep_refused_and_other_blocks_checkpoints_never_restored(
    sweep_file, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _crash_after_saves(m, 2)
        with pytest.raises(_Crash):
            main(_args(sweep_file, out, *EVERY_CHUNK))
    (block,) = glob.glob(os.path.join(out, "checkpoints", "*"))
    before = sorted(os.listdir(block))
    capsys.readouterr()
    # A different sweep in the same run directory: refused before anything runs.
    assert main(_args(sweep_file, out, "--set", "log_every=5")) == 2
    err = capsys.readouterr().err
    assert "different sweep" in err and "log_every" in err and "5" in err and "--force-new" in err
    assert sorted(os.listdir(block)) == before
    # Another block (e.g. --max-parallel 2 splits the 3 liao configs) has its own directory, and
    # a checkpoint planted under its name is refused on restore, never loaded into its rows.
    cfgs = _liao(loads(SWEEP).configs())[:2]
    planted = os.path.join(out, "checkpoints", checkpoint.block_id([c.config_id for c in cfgs]))
    shutil.copytree(block, planted)
    sharding = programs.config_mesh()
    hp = stack_hparams(cfgs)
    abstract = jax.eval_shape(jax.vmap(functools.partial(train.init, cfgs[0].static())), hp)
    warnings = []
    store = checkpoint.BlockCheckpoints(
        str(out),
        [c.config_id for c in cfgs],
        2,
        checkpoint.CheckpointOptions(),
        warn=warnings.append,
    )
    assert store.dir == planted and store.restore_latest(abstract, sharding) is None
    assert "belongs to another block" in warnings[0] and "starts from step 0" in warnings[-1]


def test_checkpoint_schedule_and_signal_handlers_restored():
    opts = checkpoint.CheckpointOptions(every_steps=25, every_seconds=0)
    store = checkpoint.BlockCheckpoints("/nonexistent", ["a"], 1, opts)
    saved = []
    for s in range(10, 110, 10):
        if store.due(s):
            saved.append(s)
            store.last_step = s
    assert saved == [30, 50, 80, 100]  # the first chunk boundary at or past each multiple
    timed = checkpoint.BlockCheckpoints(
        "/nonexistent", ["a"], 1, checkpoint.CheckpointOptions(every_seconds=1e-9)
    )
    assert timed.due(10)
    with pytest.raises(Exception, match="keep"):
        checkpoint.CheckpointOptions(keep=0)

    def mine(signum, frame):
        pass

    old = signal.signal(signal.SIGTERM, mine)
    try:
        with signals.StopSignal() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert stop.requested and stop.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, old)


@pytest.mark.slow
def test_failed_config_stays_failed_across_a_resume(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "s.toml"
    sweep.write_text(SWEEP.replace("seed = [0, 1, 2]", "eta = [1.0, 1e30, 0.5]"))
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _crash_after_saves(m, 14 + 2)  # the geometry block saves 14 times, then liao's twice
        with pytest.raises(_Crash):
            main(_args(sweep, out, *EVERY_CHUNK))
    manifest = lambda: json.loads((out / "manifest.json").read_text())["configs"]  # noqa: E731
    statuses = {p.name: json.loads(p.read_text()) for p in (out / "status").iterdir()}
    (before,) = [st for st in statuses.values() if st["state"] == "failed"]
    assert before["reason"].startswith("non-finite loss at step")
    assert main(_args(sweep, out, *EVERY_CHUNK)) == 1
    failed = {k: v for k, v in manifest().items() if v["state"] == "failed"}
    # The original reason, not a later symptom of the NaNs the restored state carries.
    assert list(failed.values()) == [before]
    assert sum(v["state"] == "done" for v in manifest().values()) == 2 + 2  # liao + geometry
    rows = [r for r in _rows(out) if r["experiment"] == "liao"]
    assert sorted(r["step"] for r in rows) == sorted(2 * list(range(10, 610, 10)))


def test_restore_with_another_padding_repads_rows(tmp_path):
    """A checkpoint saved with another device count (another padded row count) still restores."""
    cfgs = _liao(loads(SWEEP).configs())[:2]
    ids = [c.config_id for c in cfgs]
    sharding = programs.config_mesh()
    one = jax.eval_shape(functools.partial(train.init, cfgs[0].static()), cfgs[0].hparams())
    rng = np.random.default_rng(0)

    def rows(n):
        return jax.tree.map(
            lambda a: jax.ShapeDtypeStruct((n,) + a.shape, a.dtype, sharding=sharding), one
        )

    saved = jax.tree.map(
        lambda a: programs.global_array(rng.normal(size=a.shape).astype(a.dtype), sharding), rows(2)
    )
    opts = checkpoint.CheckpointOptions()
    checkpoint.BlockCheckpoints(str(tmp_path), ids, 2, opts).save(10, 1, saved)
    warnings = []
    state, meta = checkpoint.BlockCheckpoints(
        str(tmp_path), ids, 4, opts, warn=warnings.append
    ).restore_latest(rows(4), sharding)
    assert meta["step"] == 10 and "another device count" in warnings[0]
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(saved)):
        assert got.sharding == sharding
        got, want = np.asarray(got), np.asarray(want)
        assert np.array_equal(got[:2], want) and np.array_equal(got[2], want[1])
