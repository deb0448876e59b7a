"""benchmarks/_bench.py: its FLOP model against XLA's own count, and one tiny timed row end to
end (speed itself is measured in benchmarks/, never asserted here)."""

import functools
import os
import sys

import jax
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import _bench

from jaxcl.engine import programs
from jaxcl.experiments.liao import train
from jaxcl.experiments.liao.config import Config

pytestmark = pytest.mark.slow  # the benchmarks' code: a d = 64 compile, a timed row, 2^16 draws


@pytest.mark.numerics
def test_flop_model_counts_the_steps_matmuls():
    """XLA's cost analysis of one compiled step counts every FLOP (elementwise ones too), so it
    bounds the model's matmul-only count from above, and at d = 64 the matmuls dominate."""
    c = Config(d=64, C_m=1.5)
    static, hp = c.static(), c.hparams()
    state = jax.jit(functools.partial(train.init, static))(hp)
    cost = jax.jit(functools.partial(train.step, static)).lower(hp, state).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    model = _bench.flops_per_config_step(static.K, static.L, 64, static.d1, static.m, False)
    assert model["total"] == sum(v for k, v in model.items() if k != "total")
    assert model["total"] <= cost["flops"] <= 1.25 * model["total"]


def test_bench_one_tiny_row():
    """3 configs on 2 devices: one padding row; the row's figures are consistent."""
    n, opt = 3, _bench.Options(steps=2, repeats=1, min_sample_s=0.0)
    sharding = programs.config_mesh()
    r = _bench.bench_one(opt, 8, n, sharding, big=64)
    for key in ("engine", "vmapped", "loop"):
        assert r[f"{key}_cfg_steps_per_s"] > 0
        assert r[f"{key}_s_per_cfg_step"] == pytest.approx(1 / r[f"{key}_cfg_steps_per_s"])
    assert r["speedup"] == pytest.approx(r["engine_cfg_steps_per_s"] / r["loop_cfg_steps_per_s"])
    assert r["batching"] == "sequential"  # the CPU default
    assert sum(r["engine_blocks"]) == n and r["n_padded"] % sharding.mesh.size == 0
    assert r["engine_flops_per_s"] == pytest.approx(
        r["flops_per_cfg_step"]["total"] * r["engine_cfg_steps_per_s"]
    )


@pytest.mark.numerics
def test_ceiling_generators_are_standard_normal_and_restored():
    """benchmarks/ceiling.py's swapped generators: the right shape, N(0, 1) moments (to 5
    standard errors over 32,768 draws) and a tail like a Gaussian's, ξ = 0 for the bound; the
    engine's generator is back in place after each swap."""
    import ceiling
    import numpy as np

    from jaxcl.experiments.liao import data

    keys = data.fold_many(jax.numpy.array([3, 4], jax.numpy.uint32), 1, np.arange(2))
    shape = (64, 4, 64)
    n = 2 * int(np.prod(shape))
    for name in ("both_words", "box_muller"):
        original = data.standard_normals
        with ceiling.generator(ceiling.VARIANTS[name]):
            assert data.standard_normals is ceiling.VARIANTS[name]
            z = np.asarray(data.standard_normals(keys, shape), np.float64)
        assert data.standard_normals is original
        assert z.shape == (2, *shape)
        assert abs(z.mean()) < 5 / np.sqrt(n), name
        assert abs(z.var() - 1) < 5 * np.sqrt(2 / n), name
        assert abs(np.mean(np.abs(z) > 2) - 0.0455) < 0.006, name  # P(|N(0,1)| > 2)
        assert not np.allclose(z, np.asarray(data.standard_normals(keys, shape))), name
    z0 = ceiling.noise_free(keys, shape)
    assert z0.shape == (2, *shape) and not np.any(np.asarray(z0))
