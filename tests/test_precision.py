"""The float32 matmul precision of jaxcl's programs: every dot of the compiled init, training
chunk and final observables of both experiments carries the precision asked for ("highest"
unless a run chooses another), and on the CPU the pinned default is bitwise jax's own result."""

import functools
import os
import re

import jax
import numpy as np
import pytest

from jaxcl.engine import precision, programs, protocol
from jaxcl.errors import ConfigError
from jaxcl.experiments.geometry.config import Config as GeometryConfig
from jaxcl.experiments.liao.config import Config as LiaoConfig

# each test lowers or runs both experiments' programs (10-25 s each on 2 cores): not in the fast loop
pytestmark = pytest.mark.slow

GEOMETRY = dict(samples_major=5, p=4, batch=16, negatives=3, ratio=0.4, steps=20, log_every=10)


def _configs(experiment, tiny):
    if experiment == "liao":
        return [LiaoConfig(**tiny, seed=s) for s in range(2)]
    return [GeometryConfig(**GEOMETRY, seed=s) for s in range(2)]


def _programs(cfgs, p, batching="auto"):
    """(name, jitted program, its arguments) for the engine's three programs of cfgs."""
    exp, static, sharding = protocol.of(cfgs[0]), cfgs[0].static(), programs.config_mesh()
    hp = jax.tree.map(
        lambda x: programs.global_array(x, sharding), programs.block_hparams(cfgs, len(cfgs))
    )
    init_fn, chunk_fn = programs.compiled(exp, static, sharding, batching=batching, precision=p)
    state = jax.eval_shape(init_fn, hp)  # lowering needs only shapes
    obs = programs.final_observables(exp, static, sharding, p)
    return [("init", init_fn, (hp,)), ("chunk", chunk_fn, (hp, state)), ("obs", obs, (hp, state))]


@pytest.mark.parametrize("experiment", ["liao", "geometry"])
@pytest.mark.parametrize(
    "p,attr", [(None, "HIGHEST"), ("tensorfloat32", "HIGH"), ("default", "DEFAULT")]
)
def test_every_dot_of_the_programs_carries_the_precision(experiment, p, attr, tiny):
    """The lowered programs' dot_general ops (gradients' included) all name it, and the
    compiled training chunk keeps it (XLA's operand_precision, absent for DEFAULT)."""
    for name, fn, args in _programs(_configs(experiment, tiny), p):
        text = fn.lower(*args).as_text()
        dots = [line for line in text.splitlines() if "dot_general" in line]
        if name == "init" and not dots:
            continue  # geometry's init draws its features without a matmul
        assert dots, (experiment, name)
        bad = [d for d in dots if f"precision = [{attr}, {attr}]" not in d]
        assert not bad, (experiment, name, bad[:2])
        if name == "chunk":
            hlo = fn.lower(*args).compile().as_text()
            kept = re.findall(r"operand_precision=\{(\w+),\w+\}", hlo)
            assert kept == ([attr.lower()] * len(kept) if attr != "DEFAULT" else [])
            assert kept or attr == "DEFAULT"


def test_the_default_is_highest_and_unknown_names_are_refused():
    assert precision.check(None) == precision.DEFAULT == "highest"
    assert precision.check("tensorfloat32") == "tensorfloat32"
    with pytest.raises(ConfigError, match="matmul_precision = 'tf32'.*highest"):
        precision.check("tf32")
    with precision.scope():
        assert jax.config.jax_default_matmul_precision == "highest"
    assert jax.config.jax_default_matmul_precision is None  # restored


@pytest.mark.parametrize("experiment", ["liao", "geometry"])
def test_the_pinned_default_is_bitwise_jax_unpinned_on_cpu(experiment, tiny):
    """Trained arrays of the engine's chunk at the default precision against a plain jit of
    the experiment's own functions with no precision set: bitwise, on the CPU (where every
    setting computes float32); so pinning "highest" changed no result there."""
    if jax.default_backend() != "cpu":
        pytest.skip("on GPU/TPU the unpinned default is another precision")
    cfgs = _configs(experiment, tiny)
    (_, init_fn, (hp,)), (_, chunk_fn, _), _ = _programs(cfgs, None, "sequential")
    state = init_fn(hp)
    for _ in range(2):
        state, _ = chunk_fn(hp, state)
    exp, static = protocol.of(cfgs[0]), cfgs[0].static()
    opts = programs.compiler_options()
    one_init = jax.jit(functools.partial(exp.init, static), compiler_options=opts)
    one_chunk = jax.jit(functools.partial(exp.run_chunk, static), compiler_options=opts)
    for i, c in enumerate(cfgs):
        alone = one_init(c.hparams())
        for _ in range(2):
            alone, _ = one_chunk(c.hparams(), alone)
        got = jax.tree.map(lambda x: np.asarray(x[i]), exp.final_arrays(state))
        for k, v in exp.final_arrays(alone).items():
            assert np.array_equal(got[k], np.asarray(v)), (experiment, i, k)


def _spy_programs(monkeypatch, seen):
    """Wraps the training chunk and the final observables `jaxcl run` compiles so that each
    records its lowered text (the program it is about to run) in `seen`, by name. (Not init:
    the run also abstract-evaluates it, which a plain wrapper would turn into a nested jit.)"""
    from jaxcl.engine import block

    def lowering(name, fn):
        def run(*args):
            seen.setdefault(name, fn.lower(*args).as_text())
            return fn(*args)

        return run

    real_compiled, real_obs = block.compiled, block.final_observables

    def compiled(*a, **k):
        init_fn, chunk_fn = real_compiled(*a, **k)
        return init_fn, lowering("chunk", chunk_fn)

    monkeypatch.setattr(block, "compiled", compiled)
    monkeypatch.setattr(block, "final_observables", lambda *a: lowering("obs", real_obs(*a)))


def _dot_precisions(text: str) -> set:
    return set(re.findall(r"dot_general.*precision = \[(\w+), \w+\]", text))


@pytest.mark.parametrize("where", ["flag", "sweep"])
def test_the_run_option_reaches_the_compiled_programs_and_the_record(where, tmp_path, monkeypatch):
    """`jaxcl run --matmul-precision tensorfloat32` (or `matmul_precision` in [sweep]): every
    dot of the training chunk and the final observables it runs is lowered at HIGH (the default run's
    at HIGHEST), the invocation record and the report's provenance line say so, and the
    config ids and the sweep's fingerprint are those of the default run."""
    import glob
    import json

    from jaxcl.engine import report
    from jaxcl.engine.cli import main
    from jaxcl.engine.sweep import load
    from support import tiny_sweep

    text = tiny_sweep(20, "seed = [0, 1]")
    plain = tmp_path / "plain.toml"
    plain.write_text(text)
    path = tmp_path / "s.toml"
    path.write_text(text + ('\n[sweep]\nmatmul_precision = "tensorfloat32"\n' * (where == "sweep")))
    flag = ["--matmul-precision", "tensorfloat32"] if where == "flag" else []
    ran = {}
    for name, sweep, extra in (("default", plain, []), ("tf32", path, flag)):
        seen = ran[name] = {}
        with monkeypatch.context() as m:
            _spy_programs(m, seen)
            out = str(tmp_path / name)
            assert main(["run", str(sweep), "--out", out, "--no-progress", *extra]) == 0
        (rec,) = [json.load(open(p)) for p in glob.glob(os.path.join(out, "invocations", "*"))]
        assert rec["matmul_precision"] == ("tensorfloat32" if name == "tf32" else "highest")
        lines = report.provenance(json.load(open(os.path.join(out, "manifest.json"))))
        assert f"float32 matmuls at {rec['matmul_precision']!r}" in "\n".join(lines)
        assert sorted(os.listdir(os.path.join(out, "final"))) == sorted(
            os.listdir(os.path.join(tmp_path / "default", "final"))
        )  # the same config ids
    for program in ("chunk", "obs"):
        assert _dot_precisions(ran["default"][program]) == {"HIGHEST"}, program
        assert _dot_precisions(ran["tf32"][program]) == {"HIGH"}, program
    assert load(str(path)).fingerprint_hash() == load(str(plain)).fingerprint_hash()


def test_a_run_continued_at_another_precision_records_the_change(tmp_path):
    """A run directory continued under another precision: its invocation lists the change
    (a resumed config would mix precisions), the same precision lists none."""
    from jaxcl.engine import records

    before = [{"environment": records.environment(), "matmul_precision": "highest"}]
    now = records.environment()
    assert records.environment_changes(before, now, "highest") == []
    assert records.environment_changes(before, now, "tensorfloat32") == [
        "matmul_precision: 'highest' -> 'tensorfloat32'"
    ]
    assert records.environment_changes([{"environment": now}], now, "high") == []  # unrecorded


@pytest.mark.parametrize("where", ["flag", "sweep", "api"])
def test_a_bad_precision_is_refused_naming_it_before_anything_compiles(
    where, tmp_path, monkeypatch, capsys
):
    import jaxcl
    from jaxcl.engine import block
    from jaxcl.engine.cli import main
    from support import tiny_sweep

    def boom(*a, **k):
        raise AssertionError("compiled before the bad precision was refused")

    monkeypatch.setattr(block, "compiled", boom)
    text = tiny_sweep(20, "seed = [0, 1]")
    path, out = tmp_path / "s.toml", tmp_path / "out"
    if where == "api":
        with pytest.raises(ConfigError, match="--matmul-precision = 'tf32': expected one of"):
            jaxcl.run(text, str(out), matmul_precision="tf32")
        assert not out.exists()
        return
    path.write_text(text + '\n[sweep]\nmatmul_precision = "tf32"\n' * (where == "sweep"))
    flag = ["--matmul-precision", "tf32"] if where == "flag" else []
    assert main(["run", str(path), "--out", str(out), *flag]) == 2
    err = capsys.readouterr().err
    label = "--matmul-precision" if where == "flag" else "[sweep] option 'matmul_precision'"
    assert f"{label} = 'tf32': expected one of highest" in err, err
    assert not out.exists()
