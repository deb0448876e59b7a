"""Blocks sized by wall time (the stop request's latency) and checkpointed blocks resumed as they
were saved: neither changes any result bitwise."""

import glob
import os
import signal

import numpy as np
import pytest

from jaxcl.engine import checkpoint, pacing, programs, runner, signals
from jaxcl.engine.sweep import loads
from jaxcl.experiments.liao.config import Config
from support import tiny_sweep

SWEEP = tiny_sweep(40, "seed = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]")


def _finals(out) -> dict:
    got = {}
    for path in sorted(glob.glob(os.path.join(out, "final", "*.npz"))):
        with np.load(path) as z:
            got[os.path.basename(path)] = {k: z[k] for k in z.files}
    return got


def _assert_bitwise(a: dict, b: dict):
    assert sorted(a) == sorted(b) and a
    for name in a:
        for k in a[name]:
            assert np.array_equal(a[name][k], b[name][k]), (name, k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One block of all 10 configs, as memory allows (no pacing)."""
    out = str(tmp_path_factory.mktemp("ref") / "out")
    runner.run(loads(SWEEP), out, progress=False, log=lambda m: None, chunk_seconds=0)
    return _finals(out)


def test_blocks_probe_then_sized_by_time_saved_first(tiny, monkeypatch):
    """A large group: a probe block of PROBE_PER_DEVICE per device, then blocks of a power of
    two per device sized by the probe's seconds per chunk; a saved block comes first, as it was
    saved; with pacing off (seconds = 0, vmap or --max-parallel) the blocks are plan_blocks's;
    every config exactly once."""
    monkeypatch.setattr(pacing, "PROBE_PER_DEVICE", 2)
    sharding = programs.config_mesh()
    n_dev = sharding.mesh.size
    group = [Config(**tiny, seed=s) for s in range(41)]
    kw = dict(batching="sequential", group_size=41, max_parallel=None)
    asked = []

    def timing():
        asked.append(1)
        return 0.5  # s per chunk of the probe (2 per device): 8 per device fit in 2 s

    saved = [
        ([group[7].config_id, group[3].config_id, group[5].config_id], 4),
        (["not-in-this-group"], 2),
    ]
    got = list(pacing.blocks(group, sharding, saved=saved, seconds=2.0, timing=timing, **kw))
    assert got[0] == ([group[7], group[3], group[5]], 4)
    assert len(got[1][0]) == 2 * n_dev and asked == [1]
    assert all(len(b) <= 8 * n_dev and n_pad % n_dev == 0 for b, n_pad in got[2:])
    ids = [c.config_id for b, _ in got for c in b]
    assert sorted(ids) == sorted(c.config_id for c in group)
    # an unknown chunk time (a probe of one chunk that compiled) keeps the probe's size
    got = list(pacing.blocks(group, sharding, saved=[], seconds=2.0, timing=lambda: None, **kw))
    assert max(len(b) for b, _ in got) == 2 * n_dev
    for off in (dict(seconds=0.0), dict(seconds=2.0, max_parallel=1000)):
        args = {**kw, "seconds": 2.0, "timing": timing, **off}
        assert list(pacing.blocks(group, sharding, saved=[], **args)) == programs.plan_blocks(
            group, sharding, args["max_parallel"], args["batching"], group_size=41
        )
    assert asked == [1]  # no probe when pacing is off


def test_vmap_blocks_are_sized_by_time_too(tiny, monkeypatch):
    """Under vmap as under sequential batching: a probe block, then blocks of a power of two
    per device sized by its seconds per chunk, but never fewer than two per device (the least
    a vmapped block is padded to) and never more than memory allows; every config once."""
    monkeypatch.setattr(pacing, "PROBE_PER_DEVICE", 2)
    sharding = programs.config_mesh()
    n_dev = sharding.mesh.size
    group = [Config(**tiny, seed=s) for s in range(41)]
    kw = dict(batching="vmap", group_size=41, max_parallel=None, saved=[])
    cap = max(len(b) for b, _ in programs.plan_blocks(group, sharding, batching="vmap"))
    assert cap == 41  # memory alone: one block of the whole group
    for per_chunk, per_device in ((0.5, 8), (100.0, 2), (1e-6, cap)):
        got = list(pacing.blocks(group, sharding, seconds=2.0, timing=lambda: per_chunk, **kw))
        assert len(got[0][0]) == 2 * n_dev == got[0][1]
        sizes = [len(b) for b, _ in got[1:]]
        assert max(sizes) <= min(cap, per_device * n_dev), (per_chunk, sizes)
        assert max(sizes) > min(cap, per_device * n_dev) // 2, (per_chunk, sizes)
        assert all(n_pad >= 2 * n_dev and n_pad % n_dev == 0 for _, n_pad in got)
        ids = [c.config_id for b, _ in got for c in b]
        assert sorted(ids) == sorted(c.config_id for c in group)


@pytest.fixture(scope="module")
def vmap_reference(tmp_path_factory):
    """The 10 configs under vmap in one block, as memory allows (no pacing)."""
    out = str(tmp_path_factory.mktemp("vref") / "out")
    runner.run(
        loads(SWEEP), out, progress=False, log=lambda m: None, chunk_seconds=0, batching="vmap"
    )
    return _finals(out)


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [(2, 1), (1, 4)])
def test_vmap_stop_is_honoured_after_one_chunk_of_a_time_sized_block(
    vmap_reference, stop_at, tmp_path, monkeypatch, capsys
):
    """`--batching vmap` on CPU with a tiny chunk budget: a probe block (one config per device,
    padded to two), then blocks of two per device; SIGTERM during chunk c of block b stops the
    run at the end of that chunk (the block's last chunk too: saved, its finals left to the
    resume), and the rerun ends bitwise equal to one unpaced vmap run on these 2 devices."""
    from jaxcl.engine import block

    monkeypatch.setattr(pacing, "PROBE_PER_DEVICE", 1)
    sizes, calls = [], []
    real_run, real_rows = runner.run_block, block.local_rows

    def spy_block(rd, static, cfgs, *a, **k):
        sizes.append(len(cfgs))
        calls.clear()
        return real_run(rd, static, cfgs, *a, **k)

    def rows(x):  # called once per chunk, as it ends
        calls.append(1)
        if (len(sizes), len(calls)) == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_rows(x)

    monkeypatch.setattr(runner, "run_block", spy_block)
    out = str(tmp_path / "out")
    run = dict(progress=False, chunk_seconds=1e-9, batching="vmap")
    with monkeypatch.context() as m:
        m.setattr(block, "local_rows", rows)
        with pytest.raises(signals.Interrupted) as e:
            runner.run(loads(SWEEP), out, **run)
    b, c = stop_at
    assert f"at step {10 * c} of 40 of a block of {sizes[-1]} configs" in str(e.value)
    assert len(sizes) == b and sizes[:2] == [2, 4][:b]
    assert [len(ids) for ids, _ in pacing.saved_blocks(out)] == [sizes[-1]]
    capsys.readouterr()
    summary = runner.run(loads(SWEEP), out, **run)
    assert len(summary.done) == 10 - (b - 1) * 2
    assert f"resuming {sizes[b - 1]} configs from the checkpoint at step {10 * c}" in (
        capsys.readouterr().out
    )
    _assert_bitwise(_finals(out), vmap_reference)


@pytest.mark.slow
def test_paced_blocks_are_bitwise_the_unpaced_run(reference, tmp_path, monkeypatch):
    """A probe of one config per device, then blocks as small as a tiny chunk budget makes
    them: the same finals, bit for bit, as one block of all configs."""
    monkeypatch.setattr(pacing, "PROBE_PER_DEVICE", 1)
    sizes = []
    real = runner.run_block

    def spy(rd, static, block, *a, **k):
        sizes.append(len(block))
        return real(rd, static, block, *a, **k)

    monkeypatch.setattr(runner, "run_block", spy)
    out = str(tmp_path / "out")
    summary = runner.run(loads(SWEEP), out, progress=False, log=lambda m: None, chunk_seconds=1e-9)
    assert len(summary.done) == 10 and sum(sizes) == 10 and max(sizes) <= 2 < len(sizes)
    _assert_bitwise(_finals(out), reference)


@pytest.mark.slow
def test_saved_block_resumes_as_saved_under_another_plan(reference, tmp_path, monkeypatch, capsys):
    """A block checkpointed by an unpaced run is resumed whole by a paced run (which would
    plan other blocks) and ends bitwise equal: no leg loses the work of the block it stopped."""

    class Crash(Exception):
        pass

    real = checkpoint.BlockCheckpoints.save

    def save(self, *a, **k):
        real(self, *a, **k)
        raise Crash

    out = str(tmp_path / "out")
    every = dict(checkpoint_every_steps=20, checkpoint_every_seconds=0)
    with monkeypatch.context() as m:
        m.setattr(checkpoint.BlockCheckpoints, "save", save)
        with pytest.raises(Crash):
            runner.run(loads(SWEEP), out, progress=False, chunk_seconds=0, **every)
    ((ids, n_rows),) = pacing.saved_blocks(out)
    assert len(ids) == 10 and n_rows % 2 == 0
    monkeypatch.setattr(pacing, "PROBE_PER_DEVICE", 1)
    capsys.readouterr()
    summary = runner.run(loads(SWEEP), out, progress=False, chunk_seconds=1e-9)
    assert len(summary.done) == 10
    assert "resuming 10 configs from the checkpoint at step 20" in capsys.readouterr().out
    _assert_bitwise(_finals(out), reference)
    assert pacing.saved_blocks(out) == []


def test_signal_before_training_is_a_recorded_stop(tmp_path, monkeypatch):
    """SIGTERM or Slurm's SIGUSR1 that comes before training starts (imports, the grid's
    statuses) does not kill the run unrecorded: the run stops before its first block with the
    record "interrupted"; the handlers and the flag are gone afterwards."""
    import json

    monkeypatch.setattr(runner, "run_block", lambda *a, **k: pytest.fail("trained"))
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        before = signal.getsignal(sig)
        out = str(tmp_path / f"out{int(sig)}")
        with signals.StopSignal.early():
            os.kill(os.getpid(), sig)
            with pytest.raises(signals.Interrupted, match="between blocks") as e:
                runner.run(loads(SWEEP), out, progress=False, log=lambda m: None)
        assert e.value.signum == sig
        assert signal.getsignal(sig) is before and not signals.StopSignal._early
        (rec,) = [json.load(open(p)) for p in glob.glob(os.path.join(out, "invocations", "*"))]
        assert rec["outcome"] == "interrupted"
