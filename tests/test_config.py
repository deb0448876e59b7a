"""Every bad input of SPEC §7 is refused, naming the field and value, before anything compiles."""

import os
import dataclasses

import pytest

from jaxcl.engine import block
from jaxcl.engine.cli import main
from jaxcl.engine.options import CheckpointOptions, RunOptions
from jaxcl.experiments.geometry.config import Config as GeoConfig
from jaxcl.experiments.liao.config import Config, ConfigError
from jaxcl.engine.sweep import loads


@pytest.fixture
def no_compile(monkeypatch):
    """Fails the test if the engine tries to build its compiled programs."""

    def boom(*a, **k):
        raise AssertionError("compiled before the bad input was refused")

    monkeypatch.setattr(block, "compiled", boom)


BAD = [  # (sweep text, words the error must contain)
    ("[base]\nd = 9\nbogus = 1\n", ["bogus", "1"]),
    ("[base]\nd = 9.5\n", ["'d'", "9.5"]),
    ('[base]\nd = "nine"\n', ["'d'", "nine"]),
    ("[base]\nsteps = true\n", ["'steps'", "True"]),
    ("[base]\nd = 2\n", ["'d'", "2"]),
    ("[grid]\nratio = [0.5, 0.0]\n", ["'ratio'", "0.0"]),
    ("[grid]\nratio = [1.5]\n", ["'ratio'", "1.5"]),
    ("[base]\nm = 0\n", ["'m'", "0"]),
    ("[base]\ntau = -1.0\n", ["'tau'", "-1.0"]),
    ("[base]\ntau = 0\n", ["'tau'", "0"]),
    ("[base]\neta = 0.0\n", ["'eta'", "0.0"]),
    ("[base]\neta = -0.1\n", ["'eta'", "-0.1"]),
    ('[base]\nsteps = "T5"\n', ["'steps'", "T5"]),
    ("[base\nd = 9\n", ["malformed TOML"]),
    ("[grid]\nratio = 0.5\n", ["'ratio'", "0.5", "list"]),
    ("[oops]\nd = 9\n", ["oops"]),
    ('[base]\nexperiment = "simclr"\n', ["'experiment'", "simclr", "liao"]),
    ('[base]\nexperiment = "liao"\nsamples_major = 3\n', ["samples_major", "'liao'"]),
    ('[base]\nloss = "triplet"\n', ["'loss'", "triplet"]),
    ('[base]\nloss = "infonce"\nloss_beta = 2.0\n', ["'loss_beta'", "2.0", "balanced"]),
    (
        '[grid]\nloss = ["infonce", "generalized"]\nloss_phi = ["exp", "tanh"]\n',
        ["'loss_phi'", "tanh"],
    ),
    ('[grid]\nv = [{loss = "balanced"}, 3]\n', ["'v'", "tables"]),
    ('[grid]\nv = [{loss = "balanced", loss_beta = -1.0}]\n', ["'loss_beta'", "-1.0"]),
    ("[base]\nratio = nan\n", ["'ratio'", "nan", "must be a finite number"]),
    ("[grid]\neta = [0.1, inf]\n", ["'eta'", "inf", "must be a finite number"]),
    ("[base]\ntau = -inf\n", ["'tau'", "-inf", "must be a finite number"]),
]


@pytest.mark.parametrize("text,words", BAD, ids=[w[0] for _, w in BAD])
def test_bad_sweep_refused_before_compile(tmp_path, capsys, no_compile, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        loads(text)
    for w in words:
        assert w in str(e.value)
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words)
    assert err.count("grid point") <= 1  # the point is named once
    assert not (tmp_path / "run").exists()


def test_bad_set_override_refused(tmp_path, capsys, no_compile):
    path = tmp_path / "ok.toml"
    path.write_text("[base]\nd = 9\n")
    assert main(["run", str(path), "--out", str(tmp_path / "r"), "--set", "ratio=2"]) == 2
    assert "'ratio'" in capsys.readouterr().err


def test_out_naming_a_file_refused_in_one_line(tmp_path, capsys, no_compile):
    """`--out` naming an existing file: one line naming it, exit 2, the file untouched."""
    path = tmp_path / "ok.toml"
    path.write_text("[base]\nd = 5\nm = 6\n")
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err and "is a file" in err
    assert out.read_text() == "mine"
    assert main(["report", str(tmp_path), "--out", str(out)]) == 2
    assert "is a file" in capsys.readouterr().err and out.read_text() == "mine"


def test_out_that_cannot_be_created_refused_in_one_line(tmp_path, capsys, no_compile):
    """`--out` where no directory can be made (under /proc, under a file): one line naming
    `--out` and the path, exit 2, no traceback."""
    path = tmp_path / "ok.toml"
    path.write_text("[base]\nd = 5\nm = 6\nL = 3\nK = 8\nsteps = 20\nlog_every = 10\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    for out in ("/proc/jaxcl-run", str(blocker / "run")):
        assert main(["run", str(path), "--out", out, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith(f"jaxcl: error: --out = {out!r}: the run directory cannot be")
    assert blocker.read_text() == "mine"


def test_different_sweep_in_run_dir_refused_and_untouched(tmp_path, capsys, no_compile, tiny):
    """A run dir made by another sweep is refused naming what differs; nothing is changed."""
    from jaxcl.engine.rundir import RunDir

    first = loads("[base]\nd = 5\nm = 6\n[grid]\nseed = [0, 1]\n")
    RunDir.prepare(str(tmp_path / "run"), first, first.configs())
    (tmp_path / "run" / "final" / "keep.npz").write_bytes(b"precious")
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    path = tmp_path / "other.toml"
    path.write_text("[base]\nd = 5\nm = 6\n[grid]\nseed = [0, 2]\n")
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "different sweep" in err and "grid.seed" in err
    after = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert after == before


def test_run_options_flag_beats_sweep_table_then_defaults():
    """RunOptions.with_sweep: a given flag wins, the [sweep] table fills the rest of its
    options, then the defaults (batching auto, 10 s chunks, CheckpointOptions())."""
    table = {"max_parallel": 2, "batching": "vmap", "keep_checkpoints": 5, "name": "x"}
    got = RunOptions(max_parallel=3, chunk_seconds=0).with_sweep(table)
    assert (got.max_parallel, got.batching, got.chunk_seconds) == (3, "vmap", 0)
    assert got.checkpoints == CheckpointOptions(every_steps=0, every_seconds=300.0, keep=5)
    plain = RunOptions().with_sweep({})
    assert (plain.max_parallel, plain.batching, plain.chunk_seconds) == (None, "auto", 10.0)
    assert plain.checkpoints == CheckpointOptions(every_steps=0, every_seconds=300.0, keep=3)
    assert plain.with_sweep(table) == dataclasses.replace(plain, max_parallel=2)
    assert RunOptions(shard="1/4").shard == (1, 4)
    with pytest.raises(ConfigError, match="--cpu-devices = 0: must be >= 1"):
        RunOptions(cpu_devices=0)
    with pytest.raises(ConfigError, match="--requeue = 1.5: expected int"):
        RunOptions(requeue=1.5)


def test_defaults_resolve_to_conventions():
    import math

    c = Config(d=16)
    r = c.resolved()
    assert r["d1"] == 32 and r["m"] == round(16**1.5)
    assert r["tau"] == pytest.approx(math.log(16))
    assert r["sigma_xi"] == pytest.approx(math.sqrt(math.log(16)) / 16)
    assert r["n_major"] == round(16 * 5 / 9)
    # λ keeps its d = 9 ratio to eq. 45's growth rate log log d / (d τ)
    assert Config(d=9).LAM == 0.03

    def g(d):
        return math.log(math.log(d)) / (d * math.log(d))

    assert Config(d=64).LAM == pytest.approx(0.03 * g(64) / g(9))
    assert Config(d=64, lam=0.1).LAM == 0.1 and Config(d=64, lam=0.1).resolved()["lam"] == 0.1
    assert Config(d=9, eta=0.5, steps="T4").n_steps == math.ceil(9**1.99 / 0.5)
    assert Config(d=9, eta=0.5, steps="0.5*T3").n_steps == math.ceil(0.5 * 9**1.01 / 0.5)


def test_config_is_frozen_and_id_changes_with_any_field():
    c = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.d = 10
    assert Config(lam=0.031).config_id != c.config_id
    assert Config().config_id == c.config_id
    # the id is computed once per config: a replaced config gets its own, not the original's
    assert dataclasses.replace(c, lam=0.031).config_id == Config(lam=0.031).config_id


# Literal ids that existing run directories carry: one config of each study's run behind results/
# (runs/<study>/final/<id>.json). A change to how config_id hashes, or to the default of a hashed
# field, would orphan those files; a rerun would start every config again.
RUN_DIRECTORY_IDS = [  # (study, config class, its fields, its id)
    (
        "balanced-loss",
        Config,
        dict(d=16, ratio=0.5, steps=1500, seed=1, loss="balanced", loss_beta=0.5),
        "d16_m64_r0.5_s1_ca95813ba0",
    ),
    (
        "pruning",
        Config,
        dict(
            d=32,
            ratio=0.5,
            steps="T4",
            log_every=90,
            prune_fraction=0.1,
            prune_mode="neurons_once",
            seed=1,
        ),
        "d32_m181_r0.5_s1_ccdac1fcea",
    ),
    (
        "attention",
        Config,
        dict(m=30, ratio=0.5, train_attention=True, seed=1),
        "d9_m30_r0.5_s1_55e07b87fb",
    ),
    (
        "eta",
        Config,
        dict(d=32, ratio=1.0, eta=0.5, steps="T4", seed=1),
        "d32_m181_r1_s1_1a33e3a16c",
    ),
    (
        "geometry",
        GeoConfig,
        dict(
            ratio=0.1,
            batch=256,
            negatives=4,
            tau=1.0,
            loss="decoupled",
            lr=0.1,
            steps=4000,
            log_every=500,
            seed=1,
        ),
        "geo_C2+2_r0.1_k4_s1_d599ae9ac7",
    ),
]


@pytest.mark.parametrize(
    "study, cls, fields, want", RUN_DIRECTORY_IDS, ids=[r[0] for r in RUN_DIRECTORY_IDS]
)
def test_config_ids_are_those_of_existing_run_directories(study, cls, fields, want):
    assert cls(**fields).config_id == want


def test_sweep_expands_once_and_hands_out_fresh_lists():
    sw = loads("[base]\nd = 5\n[grid]\nseed = [0, 1, 2]\n")
    first = sw.configs()
    first.pop()
    again = sw.configs()
    assert [c.seed for c in again] == [0, 1, 2]
    assert all(a is b for a, b in zip(again, sw.configs()))  # the same frozen configs


def test_split_cpu_sets_a_device_count_and_keeps_the_users(monkeypatch):
    from jaxcl.engine.cli import split_cpu

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_foo=1")
    split_cpu(3)
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_foo=1 --xla_force_host_platform_device_count=3"
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=5")
    split_cpu(3)
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=5"


def test_compile_cache_directory(monkeypatch, tmp_path):
    """--compile-cache, else $JAXCL_COMPILE_CACHE, else $JAX_COMPILATION_CACHE_DIR, else the
    XDG cache home; "off" turns it off. Sets JAX's own option (nothing compiles here)."""
    import jax

    from jaxcl.engine.cli import compile_cache

    for var in ("JAXCL_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    before = jax.config.jax_compilation_cache_dir
    try:
        assert compile_cache() == str(tmp_path / "jaxcl" / "xla")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jaxcl" / "xla")
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/from/jax")
        assert compile_cache() == "/from/jax"
        monkeypatch.setenv("JAXCL_COMPILE_CACHE", "/from/jaxcl")
        assert compile_cache() == "/from/jaxcl"
        assert compile_cache("/from/flag") == "/from/flag"
        monkeypatch.setenv("JAXCL_COMPILE_CACHE", "off")
        assert compile_cache() is None
        assert compile_cache("off") is None
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_grid_bundles_set_fields_together():
    """A [grid] list of inline tables sets each table's fields together (a loss and its
    parameters), crossed with the other grid lists."""
    sw = loads(
        '[base]\nd = 9\n[grid]\nloss = [{loss = "infonce"}, '
        '{loss = "balanced", loss_alpha = 1.0, loss_beta = 2.0}]\nseed = [0, 1]\n'
    )
    got = sorted((c.loss, c.loss_beta, c.seed) for c in sw.configs())
    assert got == [
        ("balanced", 2.0, 0),
        ("balanced", 2.0, 1),
        ("infonce", 1.0, 0),
        ("infonce", 1.0, 1),
    ]


def test_config_too_big_for_memory_refused_before_anything(tmp_path, capsys, no_compile):
    """`--set d=4096 --set C_m=2` (m = 16.7 M neurons): exit 2 before the run directory exists,
    with the estimate and the limit; nothing compiled, and no OverflowError traceback."""
    (tmp_path / "s.toml").write_text("[base]\nd = 9\n[grid]\nseed = [0, 1]\n")
    out = tmp_path / "big"
    assert (
        main(
            [
                "run",
                str(tmp_path / "s.toml"),
                "--out",
                str(out),
                "--set",
                "d=4096",
                "--set",
                "C_m=2",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "d=4096 m=16777216 d1=8192" in err and "GiB" in err and "host's memory" in err
    assert "init-stats" in err and "Traceback" not in err
    assert not out.exists()


def test_group_that_fits_one_config_at_a_time_is_split_not_refused(monkeypatch, tiny):
    from jaxcl.engine import programs

    group = [Config(**tiny, seed=s) for s in range(7)]
    one = programs.state_bytes(group[0])
    step = group[0].static()
    limit = 3 * one + programs.protocol.of(group[0]).config_bytes(step)
    programs.preflight(group, limit=(limit, "a test budget"))  # 7 configs > limit: not refused
    monkeypatch.setattr(programs, "CPU_STATE_BYTES", 2 * one)  # two states per device
    blocks = programs.plan_blocks(group, programs.config_mesh(), batching="sequential")
    assert len(blocks) > 1 and [c for b, _ in blocks for c in b] == group
    assert all(n_pad <= 2 * programs.config_mesh().mesh.size for _, n_pad in blocks)
    with pytest.raises(ConfigError, match="a test budget"):
        programs.preflight(group, limit=(one // 2, "a test budget"))
