"""A config's final arrays do not depend on device count, grid chunking or process count (SPEC §7),
and an interrupted sweep finishes on rerun without redoing finished configs."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxcl.engine import runner
from support import cli_env, mixed_sweep
from jaxcl.engine.sweep import loads

pytestmark = pytest.mark.slow  # every test here runs the sweep again, most in subprocesses

SWEEP = mixed_sweep(steps=30)  # 6 liao and 2 geometry configs: each guarantee, both
N_CONFIGS = 8


@pytest.fixture(scope="module")
def jaxcl_cmd(jax_cache):
    def cmd(*args, devices=2):
        return (
            [sys.executable, "-m", "jaxcl", *args, "--no-progress"],
            cli_env(devices, jax_cache),
        )

    return cmd


def finals(out):
    res = {}
    for name in sorted(os.listdir(os.path.join(out, "final"))):
        if name.endswith(".npz"):
            with np.load(os.path.join(out, "final", name)) as z:
                res[name] = {k: z[k] for k in z.files}
    return res


def assert_same(a, b, exact=True):
    assert a.keys() == b.keys() and len(a) == N_CONFIGS
    for name in a:
        for k in a[name]:
            if exact:
                assert np.array_equal(a[name][k], b[name][k]), (name, k)
            else:  # float32 round-off of a differently compiled program
                np.testing.assert_allclose(a[name][k], b[name][k], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "s.toml"
    path.write_text(SWEEP)
    return path


@pytest.fixture(scope="module")
def reference(sweep_file):
    """The whole grid in one block on this process's 2 devices."""
    out = str(sweep_file.parent / "ref")
    runner.run(loads(SWEEP), out, progress=False, log=lambda *_: None)
    return out


def test_chunking_does_not_change_results(reference, sweep_file):
    out = str(sweep_file.parent / "chunked")
    runner.run(loads(SWEEP), out, max_parallel=1, progress=False, log=lambda *_: None)
    assert_same(finals(reference), finals(out))


def test_vmap_batching_chunking_does_not_change_results(reference, sweep_file):
    """The accelerators' batching, run on CPU: bitwise across chunkings (>= 2 configs per
    device), and within float32 round-off of the sequential reference."""
    outs = []
    for max_parallel in (None, 1):
        outs.append(str(sweep_file.parent / f"vmap{max_parallel}"))
        runner.run(
            loads(SWEEP),
            outs[-1],
            max_parallel=max_parallel,
            batching="vmap",
            progress=False,
            log=lambda *_: None,
        )
    assert_same(finals(outs[0]), finals(outs[1]))
    assert_same(finals(reference), finals(outs[0]), exact=False)


def test_device_count_does_not_change_results(reference, sweep_file, jaxcl_cmd, jax_cache):
    out4 = str(sweep_file.parent / "dev4")
    cmd, env = jaxcl_cmd("run", str(sweep_file), "--out", out4, devices=4)
    subprocess.run(cmd, env=env, check=True, timeout=120, capture_output=True)
    assert_same(finals(reference), finals(out4))
    out1 = str(sweep_file.parent / "dev1")
    cmd, env = jaxcl_cmd("run", str(sweep_file), "--out", out1, devices=1)
    subprocess.run(cmd, env=env, check=True, timeout=120, capture_output=True)
    assert_same(finals(reference), finals(out1))  # CPU batching is sequential: bitwise
    assert os.listdir(jax_cache)  # `jaxcl run --compile-cache` (here via its env var) filled it


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(reference, sweep_file, jaxcl_cmd):
    """jax.distributed on 127.0.0.1: 2 processes x 1 device write the same artifacts."""
    out = str(sweep_file.parent / "twoproc")
    port = _free_port()
    procs = []
    for pid in (0, 1):
        cmd, env = jaxcl_cmd(
            "run",
            str(sweep_file),
            "--out",
            out,
            "--coordinator",
            f"127.0.0.1:{port}",
            "--num-processes",
            "2",
            "--process-id",
            str(pid),
            devices=1,
        )
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    try:
        outs = [p.communicate(timeout=150)[0].decode() for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), outs
    assert_same(finals(reference), finals(out))

    def rows(run):  # every column but the wall-clock `time`
        return [
            {k: v for k, v in json.loads(line).items() if k != "time"}
            for line in open(os.path.join(run, "results.jsonl"))
        ]

    assert rows(out) == rows(reference)
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["counts"]["done"] == N_CONFIGS


def test_killed_sweep_finishes_on_rerun(reference, sweep_file, jaxcl_cmd):
    """SIGKILL once some configs are done; the rerun skips them and matches an unbroken run."""
    out = str(sweep_file.parent / "killed")
    # One config per block, so configs finish one after another; many steps so we can catch it.
    cmd, env = jaxcl_cmd("run", str(sweep_file), "--out", out, "--max-parallel", "1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    final_dir, status_dir = os.path.join(out, "final"), os.path.join(out, "status")

    def done_ids():
        if not os.path.isdir(status_dir):
            return []
        return [
            n
            for n in os.listdir(status_dir)
            if n.endswith(".json") and '"done"' in open(os.path.join(status_dir, n)).read()
        ]

    while time.monotonic() < deadline and proc.poll() is None and not done_ids():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {n: os.stat(os.path.join(final_dir, n)).st_mtime_ns for n in done_ids()}
    assert 1 <= len(done_before) < N_CONFIGS, "the sweep was not caught mid-way"
    cmd, env = jaxcl_cmd("run", str(sweep_file), "--out", out, "--max-parallel", "1")
    res = subprocess.run(cmd, env=env, timeout=120, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"{len(done_before)} of {N_CONFIGS} configs already done" in res.stdout
    for n, mtime in done_before.items():
        assert os.stat(os.path.join(final_dir, n)).st_mtime_ns == mtime
    assert_same(finals(reference), finals(out))
    rows = [json.loads(line) for line in open(os.path.join(out, "results.jsonl"))]
    assert len(rows) == N_CONFIGS * 3  # no duplicated rows from the killed attempt
