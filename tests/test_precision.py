"""The float32 matmul precision of jaxcl's programs: every dot of the compiled init, training
chunk and final observables of both experiments carries the precision asked for ("highest"
unless a run chooses another), and on the CPU the pinned default is bitwise jax's own result."""

import functools
import re

import jax
import numpy as np
import pytest

from jaxcl.engine import precision, programs, protocol
from jaxcl.errors import ConfigError
from jaxcl.experiments.geometry.config import Config as GeometryConfig
from jaxcl.experiments.liao.config import Config as LiaoConfig

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
