"""Per-neuron sets near T_2 and 2 T_2 (`snapshot_sets`) and the counts that read Theorem 3.3
with the paper's N_i(0), against numpy on the trained weights: the snapshot equals eq. 16 at
the first chunk end past its step, the npz's N_0 / N_T / argmax0 equal numpy's, and the
json counts equal counts of the numpy sets."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference
from jaxcl.experiments.liao import EXPERIMENT, train
from jaxcl.experiments.liao.config import Config

pytestmark = [pytest.mark.numerics, pytest.mark.slow]  # trains a config (slow)

CFG = Config(d=16, C_m=1.5, ratio=1.0, L=3, K=16, steps=300, log_every=25, snapshot_sets=True)


def _numpy_sets(w, M, d, c2):
    a = np.asarray(w, np.float64) @ np.asarray(M, np.float64)
    a2 = a * a
    return a2 >= (c2 * np.log(d) / d) * a2.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def trained():
    """Chunk by chunk, with numpy's N_i(t) at every chunk end."""
    static, hp = CFG.static(), jax.tree.map(jnp.asarray, CFG.hparams())
    chunk = jax.jit(train.run_chunk, static_argnums=0)
    state = jax.jit(train.init, static_argnums=0)(static, hp)
    ends = []
    for _ in range(train.n_chunks_for(CFG.n_steps, CFG.log_every)):
        state, _ = chunk(static, hp, state)
        ends.append((int(state.t), int(state.T2), np.asarray(state.w)))
    return static, hp, state, ends


def test_snapshots_are_eq16_at_the_first_chunk_end_past_t2_and_2t2(trained):
    static, hp, state, ends = trained
    c2 = 2 * (1 - CFG.gamma_c0) * CFG.ratio**2
    T2 = int(state.T2)
    assert T2 > 0 and int(state.sets.t[1]) > 0, "the config must pass 2 T_2 for this test"
    t1 = next(t for t, T2_now, _ in ends if T2_now >= 0)
    t2 = next(t for t, _, _ in ends if t >= 2 * T2)
    assert list(np.asarray(state.sets.t)) == [t1, t2]
    w_at = {t: w for t, _, w in ends}
    M = np.asarray(state.M)
    assert np.array_equal(np.asarray(state.sets.N_T2), _numpy_sets(w_at[t1], M, 16, c2))
    assert np.array_equal(np.asarray(state.sets.N_2T2), _numpy_sets(w_at[t2], M, 16, c2))


def test_npz_sets_and_json_counts_match_numpy(trained):
    static, hp, state, _ = trained
    arrays = {k: np.asarray(v) for k, v in EXPERIMENT.final_arrays(state).items()}
    arrays = EXPERIMENT.finalize(CFG, arrays)
    ref = reference.sets(arrays["w0"], arrays["w"], arrays["b"], arrays["M"], arrays["eps"],
                         CFG.gamma_c0)  # fmt: skip
    assert [set(np.flatnonzero(r)) for r in arrays["N_0"]] == ref["N0"]
    assert [set(np.flatnonzero(r)) for r in arrays["N_T"]] == ref["N"]
    a0 = arrays["w0"].astype(np.float64) @ arrays["M"].astype(np.float64)
    assert np.array_equal(arrays["argmax0"], np.argmax(np.abs(a0), axis=1))
    obs = jax.tree.map(np.asarray, jax.jit(EXPERIMENT.final_observables, static_argnums=0)(
        static, hp, state))  # fmt: skip
    n0, nT = ref["N0"], ref["N"]
    assert int(obs["N0_nonempty"]) == sum(bool(s) for s in n0)
    assert int(obs["N_subset_nonempty0"]) == sum(bool(a) and b <= a for a, b in zip(n0, nT))
    assert int(obs["N0_empty_learned"]) == sum(not a and bool(b) for a, b in zip(n0, nT))
    snap = [set(np.flatnonzero(r)) for r in np.asarray(state.sets.N_2T2)]
    assert int(obs["N_2T2_max"]) == max(len(s) for s in snap)
    assert int(obs["N_subset_nonempty0_2T2"]) == sum(bool(a) and b <= a for a, b in zip(n0, snap))
    c = (arrays["w"].astype(np.float64) @ arrays["M"].astype(np.float64)) ** 2
    assert int(obs["argmax0_kept"]) == int(np.sum(np.argmax(c, axis=1) == arrays["argmax0"]))


def test_snapshot_sets_off_keeps_state_and_config_id():
    off = dataclasses.replace(CFG, snapshot_sets=False)
    state = train.init(off.static(), jax.tree.map(jnp.asarray, off.hparams()))
    assert state.sets is None
    # the field is left out of the id's hash at its default: the id this config had before
    # the field existed (literal), so existing run directories keep their configs
    assert off.config_id == "d16_m64_r1_s0_c7674c547f"
    assert CFG.config_id != off.config_id
