"""The CLI end to end on a tiny grid: run-directory layout (SPEC §7), resume, divergence."""

import json
import math
import os

import numpy as np
import pytest

from jaxcl.engine.cli import main
from jaxcl.experiments.liao import EXPERIMENT
from support import tiny_sweep
from jaxcl.engine.sweep import loads, parse_set

SWEEP = tiny_sweep(steps=40)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    (root / "sweep.toml").write_text(SWEEP)
    assert (
        main(
            [
                "run",
                str(root / "sweep.toml"),
                "--out",
                str(root / "out"),
                "--set",
                "lam=0.02",
                "--no-progress",
            ]
        )
        == 0
    )
    return root / "out"


@pytest.mark.slow
def test_layout_and_final_arrays(run_dir):
    finals = sorted(p.name for p in (run_dir / "final").iterdir())
    assert len(finals) == 12  # 6 configs x (npz + json)
    for name in finals:
        if not name.endswith(".json"):
            continue
        info = json.loads((run_dir / "final" / name).read_text())
        for field in ("seed", "ratio", "d", "d1", "m", "T1", "T2", "lam", "tau", "eta"):
            assert field in info
        assert info["lam"] == 0.02 and info["d1"] == 10 and info["m"] == 6
        with np.load(run_dir / "final" / name.replace(".json", ".npz")) as z:
            assert z["w0"].shape == (6, 10) and z["w"].shape == (6, 10)
            assert z["b"].shape == (6,) and z["M"].shape == (10, 5) and z["eps"].shape == (5,)
            np.testing.assert_allclose(z["M"].T @ z["M"], np.eye(5), atol=1e-5)
            np.testing.assert_allclose(z["eps"], [1, 1, 1, info["ratio"], info["ratio"]])
    assert (run_dir / "figure1.png").stat().st_size > 10_000
    assert (run_dir / "sweep.toml").read_text() == SWEEP


@pytest.mark.slow
def test_results_table_is_tidy(run_dir):
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6 * 4  # one row per config per logged chunk
    keys = set(rows[0])
    assert all(set(r) == keys for r in rows)
    for col in (
        "config_id",
        "step",
        "loss",
        "acc",
        "cov_major",
        "cov_minor",
        "alive_frac",
        "T1",
        "T2",
        "ratio",
        "seed",
        "lam",
    ):
        assert col in keys
    assert sorted({r["step"] for r in rows}) == [10, 20, 30, 40]


@pytest.mark.slow
def test_rerun_skips_done_configs(run_dir, capsys):
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "final").iterdir()}
    assert (
        main(
            [
                "run",
                str(run_dir.parent / "sweep.toml"),
                "--out",
                str(run_dir),
                "--set",
                "lam=0.02",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "6 already done" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "final").iterdir()} == before


@pytest.mark.slow
def test_diverging_config_fails_others_finish(tmp_path):
    (tmp_path / "s.toml").write_text(SWEEP.replace("seed = [0, 1, 2]", "eta = [1.0, 1e30]"))
    assert (
        main(["run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    )
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    states = manifest["configs"]
    failed = {k: v for k, v in states.items() if v["state"] == "failed"}
    assert len(failed) == 2 and sum(v["state"] == "done" for v in states.values()) == 2
    assert all("non-finite" in v["reason"] and "step" in v["reason"] for v in failed.values())
    for cid in failed:
        assert not os.path.exists(tmp_path / "o" / "final" / (cid + ".npz"))


def test_parse_set_reads_toml_literals():
    assert parse_set("eta=0.5") == ("eta", 0.5)
    assert parse_set("steps=T4") == ("steps", "T4")
    assert parse_set('steps="T4"') == ("steps", "T4")
    assert parse_set("m = 30") == ("m", 30)


def test_grid_is_product_and_set_applies_everywhere():
    sw = loads(SWEEP, overrides={"K": 16})
    cfgs = sw.configs()
    assert len(cfgs) == 6 and {c.K for c in cfgs} == {16}
    assert {(c.ratio, c.seed) for c in cfgs} == {(r, s) for r in (0.5, 1.0) for s in (0, 1, 2)}


def test_json_writer_takes_numpy_values_and_rows_reset_only_what_exists(tmp_path):
    """fileio.dumps writes numpy arrays and scalars as the plain values json.loads gives back;
    reset_rows drops the rows past a step, keeps a torn-line-free file, and creates none."""
    from jaxcl import fileio
    from jaxcl.engine.rundir import RunDir

    obj = {
        "a": np.arange(3, dtype=np.int32),
        "b": (np.float32(0.5), np.bool_(True)),
        "c": [{"d": np.float64(0.1), "e": np.array([[1.5, np.nan]])}],
        "f": None,
    }
    back = json.loads(fileio.dumps(obj, sort_keys=True))
    assert back["a"] == [0, 1, 2] and back["b"] == [0.5, True] and back["f"] is None
    assert back["c"][0]["d"] == 0.1 and back["c"][0]["e"][0][0] == 1.5
    assert math.isnan(back["c"][0]["e"][0][1])
    with pytest.raises(TypeError, match="object"):
        fileio.dumps({"x": object()})
    rd = RunDir(str(tmp_path / "r"))
    rd.reset_rows("fresh")
    assert not os.path.exists(rd.p("rows", "fresh.jsonl"))
    rd.append_rows("c", [{"step": s} for s in (50, 100, 150)])
    with open(rd.p("rows", "c.jsonl"), "a") as f:
        f.write('{"step": 2')  # a torn last line, as a kill mid-append leaves
    rd.reset_rows("c", keep_until_step=100)
    with open(rd.p("rows", "c.jsonl")) as f:
        assert f.read() == '{"step": 50}\n{"step": 100}\n'


@pytest.mark.slow
def test_full_disk_is_a_clear_error_and_keeps_earlier_files(tmp_path, monkeypatch, capsys):
    """ENOSPC while writing a final: exit 3 with a message; files already written stay intact."""
    import errno

    from jaxcl import fileio

    (tmp_path / "s.toml").write_text(SWEEP)
    out = tmp_path / "o"
    real_replace = os.replace
    writes = []

    def replace_then_fill(src, dst):  # the disk fills up after the first final npz
        if str(dst).endswith(".npz"):
            writes.append(dst)
            if len(writes) > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", replace_then_fill)
    assert main(["run", str(tmp_path / "s.toml"), "--out", str(out), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "no space left" in err and "rerun the same command" in err
    assert sorted(p.name for p in (out / "final").iterdir()) == sorted(
        [os.path.basename(writes[0]), os.path.basename(writes[0]).replace(".npz", ".json")]
    )
    assert not [p for p in out.rglob("*.tmp")]  # no half-written leftovers
    with np.load(writes[0]) as z:
        assert z["w"].shape == (6, 10)


@pytest.mark.slow
def test_auto_max_parallel_from_device_memory(monkeypatch, tiny):
    """On an accelerator the block size follows from bytes_limit and the compiled program."""

    from jaxcl.engine import programs
    from jaxcl.experiments.liao.config import Config

    sharding = programs.config_mesh()
    cfg = Config(**tiny)
    assert programs.auto_max_parallel(cfg.static(), cfg, sharding) is None  # CPU: unbounded

    class FakeDevice:
        def memory_stats(self):
            return {"bytes_limit": limit}

    monkeypatch.setattr(programs.jax, "local_devices", lambda *a: [FakeDevice()])
    limit = 1 << 30
    big = programs.auto_max_parallel(cfg.static(), cfg, sharding)
    limit = 1 << 24
    small = programs.auto_max_parallel(cfg.static(), cfg, sharding)
    n_dev = sharding.mesh.size
    assert big % n_dev == 0 and small % n_dev == 0
    assert 62 < big / small < 66  # proportional to memory: 2^30 / 2^24 = 64


def test_plan_blocks_even_sizes_and_padding(tiny):
    """Blocks cover the group in order, differ in size by at most one and pad to a multiple of
    the device count; with vmap, to >= 2 configs per device unless the group is a lone config."""
    from jaxcl.engine import programs
    from jaxcl.experiments.liao.config import Config

    sharding = programs.config_mesh()
    n_dev = sharding.mesh.size
    group = [Config(**tiny, seed=s) for s in range(7)]
    for batching, per_device_min in (("vmap", 2), ("sequential", 1)):
        for max_parallel in (1, 3, 4, 100):
            blocks = programs.plan_blocks(group, sharding, max_parallel, batching)
            assert [c for b, _ in blocks for c in b] == group
            sizes = [len(b) for b, _ in blocks]
            assert max(sizes) <= max_parallel and max(sizes) - min(sizes) <= 1
            for b, n_pad in blocks:
                assert n_pad % n_dev == 0
                assert (
                    max(len(b), per_device_min * n_dev) <= n_pad < len(b) + per_device_min * n_dev
                )
        ((lone, n_pad),) = programs.plan_blocks(group[:1], sharding, batching=batching)
        assert lone == group[:1] and n_pad == n_dev
    # default size: tiny states, so the whole group in one block, padded to fill the devices
    ((all7, n_pad),) = programs.plan_blocks(group, sharding, batching="sequential")
    assert all7 == group and n_pad == -(-7 // n_dev) * n_dev


def test_plan_blocks_balances_steps_across_devices(tiny):
    """Configs of different lengths: blocks hold similar lengths (longest first), and with
    sequential batching each device's rows add up to about the same number of steps."""
    from jaxcl.engine import programs
    from jaxcl.experiments.liao.config import Config

    sharding = programs.config_mesh()
    assert sharding.mesh.size == 2
    steps = [100, 400, 100, 100, 400, 100, 30]  # grid order: the long ones are not together
    group = [Config(**{**tiny, "steps": n, "seed": s}) for s, n in enumerate(steps)]
    ((block, n_pad),) = programs.plan_blocks(group, sharding, batching="sequential")
    assert sorted(block, key=lambda c: c.seed) == group and n_pad == 8
    per = n_pad // 2
    rows = [c.n_steps for c in block] + [0] * (n_pad - len(block))  # padding trains no step
    # in grid order the devices would get 100+400+100+100 = 700 and 400+100+30 = 530 steps
    assert (sum(rows[:per]), sum(rows[per:])) == (630, 600)
    # vmap: the same configs, longest first; two blocks of similar lengths
    blocks = programs.plan_blocks(group, sharding, max_parallel=4, batching="vmap")
    assert [[c.n_steps for c in b] for b, _ in blocks] == [[400, 400, 100, 100], [100, 100, 30]]


@pytest.mark.parametrize("batching", ["sequential", "vmap"])
@pytest.mark.numerics
@pytest.mark.slow
def test_engine_equals_each_config_run_alone(tiny, batching):
    """The engine's sharded chunk program against a plain jit of `train.run_chunk` per config:
    bitwise for sequential batching (each device scans the unvmapped program), float32
    round-off for vmap (XLA's batched kernels). 3 configs on 2 devices: one padding row; one
    config stops at step 5, so its second chunk is skipped (sequential) or selected away (vmap)."""
    import functools

    import jax

    from jaxcl.engine import programs
    from jaxcl.experiments.liao import train
    from jaxcl.experiments.liao.config import Config

    cfgs = [
        Config(**{**tiny, "ratio": r, "seed": s, "steps": n})
        for r, s, n in ((0.25, 0, 40), (1.0, 3, 5), (0.5, 7, 40))
    ]
    static, sharding = cfgs[0].static(), programs.config_mesh()
    ((block, n_pad),) = programs.plan_blocks(cfgs, sharding, batching=batching)
    assert sorted(c.seed for c in block) == [0, 3, 7] and n_pad == 4
    hp = jax.tree.map(
        lambda x: programs.global_array(x, sharding), programs.block_hparams(block, n_pad)
    )
    init_fn, chunk_fn = programs.compiled(EXPERIMENT, static, sharding, batching=batching)
    state = init_fn(hp)
    logged = []
    for _ in range(2):
        state, metrics = chunk_fn(hp, state)
        logged.append(np.asarray(metrics["logged"]).tolist())
    short = [c.n_steps == 5 for c in block] + [True]  # the padding row trains no step
    assert logged == [[True] * 3 + [False], [not s for s in short]]
    assert int(state.t[3]) == 0
    opts = programs.compiler_options()
    one_init = jax.jit(functools.partial(train.init, static), compiler_options=opts)
    one_chunk = jax.jit(functools.partial(train.run_chunk, static), compiler_options=opts)
    for i, c in enumerate(block):
        alone = one_init(c.hparams())
        for _ in range(2):
            alone, _ = one_chunk(c.hparams(), alone)
        for name in ("w", "b", "w0", "M"):
            got, want = np.asarray(getattr(state, name)[i]), np.asarray(getattr(alone, name))
            if batching == "sequential":
                assert np.array_equal(got, want), (i, name)
            else:
                np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7, err_msg=f"{i} {name}")
        assert int(state.t[i]) == int(alone.t) == min(c.n_steps, 20)


def test_bad_batching_is_refused_before_compiling(tmp_path, capsys):
    (tmp_path / "s.toml").write_text(SWEEP + '\n[sweep]\nbatching = "scan"\n')
    assert main(["run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "batching" in err and "'scan'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_resume_under_another_cpu_is_recorded(tmp_path, jax_cache):
    """A run continued under other compiler flags (XLA's SSE4.2 target standing in for another
    CPU) says so once, records the change in its invocation, and the report shows it."""
    import subprocess
    import sys

    from support import ROOT, cli_env

    (tmp_path / "s.toml").write_text(tiny_sweep(steps=20))
    out = str(tmp_path / "out")

    def jaxcl(*args, isa=None):
        env = cli_env(cache=jax_cache)  # any ISA cap of the caller's dropped, `isa` set
        env["XLA_FLAGS"] = " ".join(
            [f for f in env["XLA_FLAGS"].split() if not f.startswith("--xla_cpu_max_isa")]
            + ([f"--xla_cpu_max_isa={isa}"] if isa else [])
        )
        res = subprocess.run(
            [sys.executable, "-m", "jaxcl", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, res.stderr
        return res.stdout + res.stderr

    first = jaxcl("run", str(tmp_path / "s.toml"), "--out", out, "--shard", "0/2", "--no-progress")
    assert "another environment" not in first
    second = jaxcl("run", str(tmp_path / "s.toml"), "--out", out, "--no-progress", isa="SSE4_2")
    assert second.count("another environment") == 1 and "xla_flags" in second
    runs = json.loads((tmp_path / "out" / "manifest.json").read_text())["invocations"]
    assert [r["outcome"] for r in runs] == ["finished", "finished"]
    assert runs[0]["environment_changed"] == []
    env0, env1 = runs[0]["environment"], runs[1]["environment"]
    assert "SSE4_2" not in env0["xla_flags"] and "SSE4_2" in env1["xla_flags"]
    assert {env0["jax"], env1["jax"]} == {__import__("jax").__version__}
    assert [c for c in runs[1]["environment_changed"] if c.startswith("xla_flags:")]
    # nothing left to train: no warning, whatever the flags
    assert "another environment" not in jaxcl(
        "run", str(tmp_path / "s.toml"), "--out", out, "--no-progress"
    )
    jaxcl("report", out)
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.count("environment changed since the previous run") == 1
    assert f"jax {env0['jax']}, jaxlib {env0['jaxlib']}, {env0['isa']}" in report


def test_directory_being_created_by_another_task_is_joined(tmp_path):
    """Two tasks of a job array start together: one finds the directory that the other is
    creating (lock, skeleton and sweep.toml, no manifest yet) and joins it instead of refusing it
    as not a jaxcl run directory (a race seen under Slurm). Another sweep's directory, or a
    foreign file, is refused."""
    from jaxcl.engine.rundir import LOCK_NAME, RunDir, RunDirError

    sw, other = loads(SWEEP), loads(tiny_sweep(steps=20))
    cfgs = sw.configs()

    def half_made(name, text):
        d = tmp_path / name
        for sub in ("final", "rows", "status"):
            (d / sub).mkdir(parents=True)
        (d / LOCK_NAME).write_text("")
        (d / "sweep.toml").write_text(text)
        (d / ".manifest.json.k3j9x.tmp").write_text("{")  # fileio's atomic write under way
        return str(d)

    rd = RunDir.prepare(half_made("same", sw.text), sw, cfgs)
    manifest = json.loads(open(rd.p("manifest.json")).read())
    assert manifest["config_ids"] == [c.config_id for c in cfgs]
    with pytest.raises(RunDirError, match="being created by a different sweep"):
        RunDir.prepare(half_made("other", other.text), sw, cfgs)
    d = half_made("foreign", sw.text)
    open(os.path.join(d, "notes.txt"), "w").close()
    with pytest.raises(RunDirError, match="not a jaxcl run directory"):
        RunDir.prepare(d, sw, cfgs)
