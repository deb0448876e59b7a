"""The first checks on a new device or a new jax (`pytest -m gpu_smoke`; benchmarks/gpu_run.py runs
them on the GPU): both experiments train through the engine, their losses and gradients match
the suite's references, a resumed run is bitwise an uninterrupted one, and vmap agrees with
sequential batching. jax announces its API changes as DeprecationWarnings: here they are errors.
Nothing assumes the CPU: whatever devices jax sees, the grid is sharded over them."""

import functools
import glob
import json
import os
import signal

import jax
import numpy as np
import pytest

import jaxcl
from jaxcl.engine import checkpoint, precision, protocol
from jaxcl.engine.sweep import loads
from support import mixed_sweep
from test_geometry import (
    test_batch_loss_matches_numpy as _geometry_loss_against_numpy,
    test_sgd_step_is_gradient_descent_on_the_public_loss as _geometry_step_against_autodiff,
)
from test_loss import (
    SHAPES,
    test_info_nce_grad_matches_finite_differences as _liao_grad_against_finite_differences,
    test_info_nce_value_matches_numpy as _liao_loss_against_numpy,
)
from test_train import test_step_is_gradient_descent_on_info_nce as _liao_step_against_autodiff

# slow too: each trains through the engine (the fast loop leaves them to dev.py test)
pytestmark = [
    pytest.mark.gpu_smoke,
    pytest.mark.slow,
    pytest.mark.filterwarnings("error::DeprecationWarning"),
]

# 60 steps of each config of support.mixed_sweep (6 liao, 2 geometry), 6 chunks of 10
SWEEP = mixed_sweep(60)
# vmap against sequential batching: the same programs batched by XLA instead of scanned, so
# float32 round-off (other summation orders) after 60 training steps. Measured on CPU: at most
# 4.4e-7 apart, 3.6e-5 relative among entries above 1e-3; the bound leaves room for a GPU's
# kernels
VMAP_RTOL, VMAP_ATOL = 1e-4, 1e-6


@pytest.mark.parametrize(
    "check",
    [
        pytest.param(lambda tiny: _liao_loss_against_numpy(*SHAPES[1]), id="liao-loss-numpy"),
        pytest.param(
            lambda tiny: _liao_grad_against_finite_differences(*SHAPES[1]),
            id="liao-gradient-finite-differences",
        ),
        pytest.param(lambda tiny: _liao_step_against_autodiff(tiny, 0.0), id="liao-step-autodiff"),
        pytest.param(
            lambda tiny: _geometry_loss_against_numpy("infonce"), id="geometry-loss-numpy"
        ),
        pytest.param(lambda tiny: _geometry_step_against_autodiff(), id="geometry-step-autodiff"),
    ],
)
def test_losses_and_gradients_match_the_references_at_the_pinned_precision(check, tiny):
    """The suite's reference checks (float64 numpy, finite differences, autodiff of the public
    losses; relative 1e-5), under the matmul precision jaxcl compiles its programs with: on a
    GPU whose default runs float32 matmuls as TF32 (about 1e-3), they would fail without it."""
    with precision.scope():
        check(tiny)


def _finals(out) -> dict:
    arrays = {}
    for path in sorted(glob.glob(os.path.join(out, "final", "*.npz"))):
        with np.load(path) as z:
            arrays[os.path.basename(path)[: -len(".npz")]] = {k: z[k] for k in z.files}
    return arrays


def _rows(out) -> list:
    with open(os.path.join(out, "results.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in f]


def _run(out, **options) -> dict:
    jaxcl.run(SWEEP, out, progress=False, **options)
    return _finals(out)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    out = tmp_path_factory.mktemp("sequential") / "out"
    return out, _run(out, batching="sequential")


def test_each_experiment_trains_through_the_engine(sequential):
    """Every config of both experiments finishes, and its final arrays are bitwise those of its
    experiment's init and run_chunk run alone under plain jit (sequential batching runs each
    config's own unvmapped program, docs/engine.md); the geometry loss falls."""
    out, finals = sequential
    configs = loads(SWEEP).configs()
    assert sorted(finals) == sorted(c.config_id for c in configs)
    assert {c.experiment for c in configs} == {"liao", "geometry"}
    programs = {}  # one compile per shape group, as the engine's
    for cfg in configs:
        exp, static, hp = protocol.of(cfg), cfg.static(), cfg.hparams()
        if (exp.name, static) not in programs:
            programs[exp.name, static] = (
                jax.jit(precision.pinned(functools.partial(exp.init, static))),
                jax.jit(precision.pinned(functools.partial(exp.run_chunk, static))),
            )
        init, chunk = programs[exp.name, static]
        state = init(hp)
        for _ in range(-(-cfg.n_steps // cfg.log_every)):
            state, _ = chunk(hp, state)
        want = exp.finalize(cfg, jax.tree.map(np.asarray, exp.final_arrays(state)))
        got = finals[cfg.config_id]
        assert sorted(got) == sorted(want), cfg.config_id
        for k, v in want.items():
            assert np.isfinite(got[k]).all() if got[k].dtype.kind == "f" else True
            assert np.array_equal(got[k], v), (cfg.experiment, cfg.config_id, k)
    losses = [(r["step"], r["loss"]) for r in _rows(out) if r["experiment"] == "geometry"]
    first, last = min(losses)[1], max(losses)[1]
    assert last < first


def test_vmap_agrees_with_sequential_batching(sequential, tmp_path):
    """The same grid under `batching = "vmap"` ends within VMAP_RTOL/VMAP_ATOL of the
    sequential run, array by array, for both experiments."""
    _, want = sequential
    got = _run(tmp_path / "out", batching="vmap")
    assert sorted(got) == sorted(want)
    for cid, arrays in want.items():
        for k, v in arrays.items():
            if v.dtype.kind == "f":
                np.testing.assert_allclose(
                    got[cid][k], v, rtol=VMAP_RTOL, atol=VMAP_ATOL, err_msg=f"{cid} {k}"
                )
            else:
                assert np.array_equal(got[cid][k], v), (cid, k)


def test_a_resumed_run_is_bitwise_an_uninterrupted_one(sequential, tmp_path, monkeypatch):
    """Each block is stopped once (SIGINT at step 30: saved at the next chunk boundary, 40),
    and the run resumed until done: final arrays bitwise, and results.jsonl's rows, equal
    to those of the uninterrupted run."""
    ref_out, ref = sequential
    stopped, due = set(), checkpoint.BlockCheckpoints.due

    def stop_once(store, step):
        if step == 30 and store.block_id not in stopped:
            stopped.add(store.block_id)
            signal.raise_signal(signal.SIGINT)
        return due(store, step)

    monkeypatch.setattr(checkpoint.BlockCheckpoints, "due", stop_once)
    out, interrupted = tmp_path / "out", 0
    for _ in range(4):
        try:
            got = _run(out, batching="sequential")
            break
        except KeyboardInterrupt as e:
            assert "at step 40" in str(e)
            interrupted += 1
    assert interrupted == len(stopped) == 2  # the liao block, then the geometry block
    assert sorted(got) == sorted(ref)
    for cid, arrays in ref.items():
        for k, v in arrays.items():
            assert np.array_equal(got[cid][k], v), (cid, k)
    assert _rows(out) == _rows(ref_out)
