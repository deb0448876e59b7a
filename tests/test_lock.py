"""Two `jaxcl run`s on one run directory: the second exits 4 within seconds with the
holder's pid, host and start, writing nothing; after `kill -9` of the first the lock is free
(the kernel releases it) and a new run finishes the sweep with no duplicated rows. And
`jaxcl status` on that run while it runs, once killed, once finished, and on a failed config."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from support import cli_env, tiny_sweep


def _cmd(sweep, out):
    # checkpoints every 2 s: the run after the kill resumes instead of starting over
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
        "2",
    ]


def _status(out, env):
    res = subprocess.run(
        [sys.executable, "-m", "jaxcl", "status", str(out), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _snapshot(out):
    return {
        os.path.join(r, f): os.stat(os.path.join(r, f)).st_mtime_ns
        for r, _, fs in os.walk(out)
        for f in fs
    }


@pytest.mark.slow
def test_second_run_refused_then_lock_freed_by_kill(tmp_path, jax_cache):
    sweep = tmp_path / "s.toml"
    # long enough (~20 s of training) that the first run is still training when it is killed
    sweep.write_text(tiny_sweep(steps=60_000).replace("log_every = 10", "log_every = 1000"))
    out = tmp_path / "out"
    env = cli_env(devices=2, cache=jax_cache)
    first = subprocess.Popen(
        _cmd(sweep, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        rows = out / "rows"
        while not (
            rows.is_dir()
            and any(p.stat().st_size for p in rows.iterdir() if not p.name.startswith("."))
        ):
            assert first.poll() is None and time.monotonic() < deadline, "first run not running"
            time.sleep(0.05)
        before = _snapshot(out / "final") if (out / "final").exists() else {}
        t0 = time.monotonic()
        second = subprocess.run(
            _cmd(sweep, out), env=env, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 4, second.stderr
        assert time.monotonic() - t0 < 30
        assert (
            f"pid {first.pid}" in second.stderr and "in use by another jaxcl run" in second.stderr
        )
        assert "since" in second.stderr
        assert (_snapshot(out / "final") if (out / "final").exists() else {}) == before
        st = _status(out, env)  # read-only, while the first run holds the directory
        assert st["active"] is True and f"pid {first.pid}" in st["holder"]
        t = st["total"]  # (on a loaded machine the first run may have trained every step)
        assert t["configs"] == 6 and t["running"] + t["done"] == 6 and t["pending"] == 0
        assert 0 < t["steps_done"] <= t["steps_total"] == 6 * 60_000
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    st = _status(out, env)
    t = st["total"]
    assert st["active"] is False and t["eta_s"] is None and t["running"] == 0
    assert t["interrupted"] + t["done"] == 6 and t["interrupted"] > 0
    third = subprocess.run(_cmd(sweep, out), env=env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    keys = [(r["config_id"], r["step"]) for r in rows]
    assert len(keys) == len(set(keys)) == 6 * 60  # every chunk of every config, once
    st = _status(out, env)
    assert st["total"]["done"] == 6 and st["total"]["steps_done"] == 6 * 60_000
    assert not st["failed"]


@pytest.mark.slow
def test_status_of_a_run_with_a_failed_config(tmp_path, capsys):
    from jaxcl.engine.cli import main

    (tmp_path / "s.toml").write_text(
        tiny_sweep(steps=20).replace("seed = [0, 1, 2]", "eta = [1.0, 1e30]")
    )
    out = tmp_path / "o"
    assert main(["run", str(tmp_path / "s.toml"), "--out", str(out), "--no-progress"]) == 1
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "not running" in text and "2 done, 2 failed" in text and "non-finite" in text
    assert main(["status", str(out), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["total"]["failed"] == 2 and len(st["failed"]) == 2 and st["total"]["done"] == 2


def test_lock_is_per_directory_and_not_a_run_directory_is_left_alone(tmp_path):
    from jaxcl.engine.rundir import LOCK_NAME, RunDirLock

    stranger = tmp_path / "photos"
    stranger.mkdir()
    (stranger / "cat.jpg").write_text("meow")
    assert RunDirLock(str(stranger)).acquire() is False  # prepare refuses it; nothing written
    assert sorted(os.listdir(stranger)) == ["cat.jpg"]
    lock = RunDirLock(str(tmp_path / "new"))
    assert lock.acquire("jaxcl run x") is True
    lock.write_note()
    note = json.loads((tmp_path / "new" / LOCK_NAME).read_text())
    assert note["pid"] == os.getpid() and note["command"] == "jaxcl run x"
    lock.release()
