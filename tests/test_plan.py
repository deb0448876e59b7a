"""`jaxcl plan`: configs, groups, steps (T_3/T_4 resolved), memory, the time estimate's
arithmetic and a job array's legs, writing nothing."""

import math
import os

import pytest

from jaxcl.engine import plan
from jaxcl.engine.cli import main
from jaxcl.engine.sweep import loads
from support import tiny_sweep

SWEEP = tiny_sweep(None, 'steps = [40, 25, "T3"]\nseed = [0, 1]')


def _tree(path) -> list:
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)


def test_plan_prints_what_a_run_takes_and_writes_nothing(tmp_path, monkeypatch, capsys):
    (tmp_path / "s.toml").write_text(SWEEP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    before = _tree(tmp_path)
    calls = []

    def fake(group, sharding, batching, precision):  # a calibration with known figures
        assert precision == "highest"  # the run's default, as `jaxcl run` compiles
        calls.append(len(group))
        return {"chunk": 0.25, "compile": 3.0}

    monkeypatch.setattr(plan, "calibrate", fake)
    assert (
        main(
            [
                "plan",
                "s.toml",
                "--array",
                "2",
                "--time",
                "1",
                "--signal-seconds",
                "30",
                "--chunk-seconds",
                "0",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert _tree(tmp_path) == before  # no run directory, no compile cache, nothing
    configs = loads(SWEEP).configs()
    t3 = configs[-1].n_steps
    assert configs[-1].steps == "T3" and t3 not in (25, 40)  # resolved from d, m, ...
    lo, hi = min(25, t3), max(40, t3)
    assert "6 configs in 1 shape groups" in text and f"T3 -> {lo:,}..{hi:,}" in text
    assert f"{(40 + 25 + t3) * 2:,} config-steps" in text and "per config" in text
    assert calls == [6]
    # by hand: one block of 6 configs on 2 devices, one compile; chunks of each config
    chunks = 2 * (4 + 3 + math.ceil(t3 / 10))  # log_every 10
    want = (
        plan.HOST_PER_RUN
        + 3.0
        + chunks / 2 * 0.25
        + 6 * plan.HOST_PER_CONFIG
        + chunks * plan.HOST_PER_CHUNK
    )
    got = plan.plan(
        loads(SWEEP), array=2, time_limit=1, signal_seconds=30, chunk_seconds=0, log=lambda m: None
    )
    assert got["seconds"] == pytest.approx(want) and got["compiles"] == 1
    # slices of 3 configs in grid order, each its own compile; the longer one counts
    per = [
        [math.ceil(c.n_steps / 10) for c in configs[:3]],
        [math.ceil(c.n_steps / 10) for c in configs[3:]],
    ]
    task = max(
        plan.HOST_PER_RUN
        + 3.0
        + sum(ch) / 2 * 0.25
        + 3 * plan.HOST_PER_CONFIG
        + sum(ch) * plan.HOST_PER_CHUNK
        for ch in per
    )
    assert got["array"]["seconds_per_task"] == pytest.approx(task)
    assert got["array"]["legs_per_task"] == math.ceil(task / 30)
    assert f"{got['array']['legs_per_task']} leg(s) per task" in text


@pytest.mark.slow
def test_plan_calibrates_for_real_and_refuses_bad_input(tmp_path, capsys):
    (tmp_path / "s.toml").write_text(SWEEP.replace('"T3"', "30"))
    got = plan.plan(loads(SWEEP.replace('"T3"', "30")), log=lambda m: None)
    (g,) = got["groups"]
    assert g["chunk"] > 0 and g["compile"] > 0 and got["seconds"] > g["compile"]
    assert main(["plan", str(tmp_path / "s.toml"), "--time", "nan"]) == 2
    assert "--time = nan: must be a finite number" in capsys.readouterr().err
    assert main(["plan", str(tmp_path / "s.toml"), "--set", "eta=inf"]) == 2
    assert "must be a finite number" in capsys.readouterr().err


def test_plan_for_a_device_sizes_blocks_against_its_memory(monkeypatch, capsys):
    """`--device-memory 80G` / `h100`: blocks and memory against the card's memory as jax
    takes it (75%), vmap as on any accelerator, and a wall time from XLA's FLOPs per step at an
    assumed share of the card's float32 peak, printed as an uncalibrated estimate; nothing is
    compiled or timed on this machine."""
    from jaxcl.engine import devices

    monkeypatch.setattr(plan, "calibrate", lambda *a: pytest.fail("calibrated on the host"))
    sweep = loads(SWEEP.replace('"T3"', "30"))
    cfg = sweep.configs()[0]
    per_config = plan.state_bytes(cfg) + plan.protocol.of(cfg).config_bytes(cfg.static())
    got = {}
    for device, memory in (("80G", 80 << 30), ("h100", devices.KINDS["h100"].memory_bytes)):
        got[device] = plan.plan(sweep, device=device, log=print)
        text = capsys.readouterr().out
        limit = int(memory * 0.75)
        assert got[device]["memory_bytes"] == limit and "on 1 device, batching vmap" in text
        (g,) = got[device]["groups"]
        assert g["configs_per_block"] == 6 and g["blocks"] == 1  # tiny configs: one block
        assert g["config_bytes"] == per_config and g["block_bytes_per_device"] == 6 * per_config
        assert "AN ESTIMATE, not calibrated on the device" in text
        assert ("an H100's float32 peak" in text) == (device == "80G")  # assumed, and said
    flops = plan.step_flops(cfg)
    assert flops > 0
    (g,) = got["h100"]["groups"]
    steps = sum(c.n_steps for c in sweep.configs())
    want = steps * flops / (plan.DEVICE_PEAK_SHARE * devices.KINDS["h100"].f32_flops)
    assert g["seconds"] == pytest.approx(want)
    assert got["h100"]["seconds"] == pytest.approx(
        plan.HOST_PER_RUN
        + want
        + 6 * plan.HOST_PER_CONFIG
        + 2 * (4 + 3 + 3) * plan.HOST_PER_CHUNK
        + plan.DEVICE_COMPILE_SECONDS
    )
    # configs of 100 MiB on a 1 GiB card: 768 MiB for jax, 70% of it for a block: 5 configs
    # fit, so the six run as two even blocks of three
    monkeypatch.setattr(plan, "state_bytes", lambda cfg: 100 << 20)
    (g,) = plan.plan(sweep, device="1G", calibrate_time=False, log=print)["groups"]
    assert (g["blocks"], g["configs_per_block"]) == (2, 3)
    assert g["block_bytes_per_device"] == 3 * g["config_bytes"] <= 0.7 * (768 << 20)


def test_plan_refuses_an_unknown_device_naming_it(tmp_path, capsys):
    (tmp_path / "s.toml").write_text(SWEEP)
    for bad in ("80Q", "h300", "0G"):
        assert main(["plan", str(tmp_path / "s.toml"), "--device-memory", bad]) == 2
        err = capsys.readouterr().err
        assert f"--device-memory = {bad!r}: expected a memory size" in err and "h100" in err
