"""Pruning read three ways (SPEC §4, `prune_mode`): the masks by hand, neurons_once never
revives a neuron, masked weights only decay, and the default mode trains the stored arrays."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcl
from jaxcl.errors import ConfigError
from jaxcl.experiments.liao import observables, train
from jaxcl.experiments.liao.config import Config, stack_hparams
from jaxcl.experiments.liao.model import prune_mask, weight_prune_mask
from support import ROOT

# Final w and b of two tiny configs with prune_fraction = 0.3 (seeds 0 and 1), trained by
# train.train under jit(vmap) as _vtrain below does, and their ids. Stored from a build of jaxcl
# without prune_mode (commit 9e27e23), so that they are an independent reference for the default
# mode, not this code's own output.
STORED = os.path.join(ROOT, "tests", "fixtures", "prune_neurons_tiny.npz")
STORED_IDS = ["d5_m6_r0.25_s0_b45c7c953d", "d5_m6_r0.25_s1_12c6173f28"]

# 4 neurons of d1 = 3: norms 1, 1, 0.5, 2 (neurons 0 and 1 tie)
W = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.3, 0.4], [2.0, 0.0, 0.0]], np.float32)


@functools.lru_cache(maxsize=None)
def _vtrain(static, n_chunks):
    return jax.jit(jax.vmap(functools.partial(train.train, static, n_chunks=n_chunks)))


_step = jax.jit(train.step, static_argnums=0)


def _with_w(c, w):
    st = train.init(c.static(), c.hparams())
    return st._replace(w=jnp.asarray(w))


@pytest.mark.numerics
@pytest.mark.slow
def test_neuron_masks_by_hand():
    """n_prune = 2 of 4: neuron 2 (norm 0.5) and, of the tied neurons 0 and 1, the lower index."""
    np.testing.assert_array_equal(prune_mask(jnp.asarray(W), 2), [0, 1, 0, 1])
    c = Config(d=3, d1=3, m=4, prune_fraction=0.5)
    mask_W, mask_M = train.forward_mask(c.static(), c.hparams(), _with_w(c, W))
    np.testing.assert_array_equal(mask_W, [[0], [1], [0], [1]])
    np.testing.assert_array_equal(mask_M, [0, 1, 0, 1])
    # neurons_once: nothing masked before the removal, then exactly the stored mask
    c1 = Config(d=3, d1=3, m=4, prune_fraction=0.5, prune_mode="neurons_once")
    st = _with_w(c1, W)
    np.testing.assert_array_equal(train.forward_mask(c1.static(), c1.hparams(), st)[1], [1] * 4)
    st = st._replace(keep=jnp.asarray([1.0, 0.0, 1.0, 0.0]))  # not the norm order, on purpose
    np.testing.assert_array_equal(
        train.forward_mask(c1.static(), c1.hparams(), st)[1], [1, 0, 1, 0]
    )


@pytest.mark.numerics
def test_weight_mask_by_hand():
    """|w| flattened row-major: 1 0 0 | 0 1 0 | 0 .3 .4 | 2 0 0. n_prune = 7 takes the seven zeros
    (flat indices 1, 2, 3, 5, 6, 10, 11), keeping 1, 1, .3, .4, 2."""
    c = Config(d=3, d1=3, m=4, prune_fraction=0.6, prune_mode="weights")
    assert c.n_prune == round(0.6 * 12) == 7
    want = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1], [1, 0, 0]], np.float32)
    np.testing.assert_array_equal(weight_prune_mask(jnp.asarray(W), 7), want)
    # 8: the 0.3 goes too; 9: the 0.4; 10: of the tie |1| = |-1|, the lower flat index (entry 0)
    want8 = want.copy()
    want8[2, 1] = 0
    np.testing.assert_array_equal(weight_prune_mask(jnp.asarray(W), 8), want8)
    want9 = want8.copy()
    want9[2, 2] = 0
    np.testing.assert_array_equal(weight_prune_mask(jnp.asarray(W), 9), want9)
    want10 = want9.copy()
    want10[0, 0] = 0
    np.testing.assert_array_equal(weight_prune_mask(jnp.asarray(W), 10), want10)
    mask_W, mask_M = train.forward_mask(c.static(), c.hparams(), _with_w(c, W))
    np.testing.assert_array_equal(mask_W, want)
    np.testing.assert_array_equal(mask_M, [1, 1, 1, 1])
    # the final observables' kept neurons: those with any kept entry
    cw = Config(d=3, d1=3, m=4, prune_fraction=0.8, prune_mode="weights")  # n_prune = 10
    st = _with_w(cw, W)
    np.testing.assert_array_equal(
        observables.kept_neurons(cw.static(), cw.hparams(), st), [False, True, False, True]
    )


@pytest.mark.numerics
@pytest.mark.slow
def test_neurons_once_removes_at_T1_and_never_revives(tiny):
    """The mask is all ones before T_1, set at T_1 from that step's weights, then fixed; removed
    rows only decay, w_{t+1} = w_t − η(λ w_t), even once they are the largest rows."""
    c = Config(**{**tiny, "prune_fraction": 0.5, "prune_mode": "neurons_once", "stage1_steps": 5})
    static, hp = c.static(), c.hparams()
    st = train.init(static, hp)
    keeps, ws = [], []
    for _ in range(12):
        st, _ = _step(static, hp, st)
        keeps.append(np.asarray(st.keep))
        ws.append(st.w)
    assert int(st.T1) == 5
    np.testing.assert_array_equal(keeps[4], prune_mask(ws[4], c.n_prune))  # T_1's own weights
    assert all(np.all(k == 1) for k in keeps[:4])
    removed = keeps[4] == 0
    assert removed.sum() == c.n_prune == 3
    assert all(np.array_equal(k, keeps[4]) for k in keeps[4:])
    # make the removed rows the largest: a per-step ranking would revive them, the mask does not
    w = np.asarray(st.w).copy()
    w[removed] *= 50.0 / np.linalg.norm(w[removed], axis=1, keepdims=True)
    st = st._replace(w=jnp.asarray(w))
    assert np.all(np.asarray(prune_mask(st.w, c.n_prune))[removed] == 1)
    lam, eta = np.float32(c.LAM), np.float32(c.eta)
    for _ in range(5):
        w_old = np.asarray(st.w)
        st, _ = _step(static, hp, st)
        np.testing.assert_array_equal(np.asarray(st.keep), keeps[4])
        # eq. 2's decay alone, in the float32 order of the update: w + (−η)(λ w)
        np.testing.assert_array_equal(
            np.asarray(st.w)[removed], w_old[removed] + (lam * w_old[removed]) * -eta
        )
        assert not np.allclose(np.asarray(st.w)[~removed], (1 - eta * lam) * w_old[~removed])


@pytest.mark.parametrize("prune_at, removes", [("T2", True), (None, False)])
@pytest.mark.slow
def test_neurons_once_at_T2(tiny, prune_at, removes):
    """prune_at = "T2": the step that ends stage 2 (eq. 67) removes; with T1 that step does not."""
    c = Config(
        **{**tiny, "prune_fraction": 0.5, "prune_mode": "neurons_once"},
        **({} if prune_at is None else {"prune_at": prune_at}),
    )
    static, hp = c.static(), c.hparams()
    st = train.init(static, hp)
    # in stage 2 with tiny ‖w(T_1)‖², so eq. 67 fires on the next step
    st = st._replace(
        stage=jnp.int32(2),
        T1=jnp.int32(3),
        t=jnp.int32(10),
        n2_T1=jnp.full(static.m, 1e-12),
        b=jnp.full(static.m, 1e-4),
    )
    new, _ = _step(static, hp, st)
    assert int(new.stage) == 3 and int(new.T2) == 11
    want = np.asarray(prune_mask(new.w, c.n_prune)) if removes else np.ones(static.m)
    np.testing.assert_array_equal(np.asarray(new.keep), want)


@pytest.mark.numerics
@pytest.mark.slow
def test_weights_mode_step_is_gd_on_masked_info_nce(tiny):
    """One step equals autodiff of the public info_nce at W ⊙ mask (mask by hand) plus eq. 2's
    (λ/2)‖W‖², and the masked entries move by −ηλw exactly (no loss gradient)."""
    c = Config(**{**tiny, "prune_fraction": 0.4, "prune_mode": "weights"})
    static, hp = c.static(), c.hparams()
    st0 = train.init(static, hp)
    st0 = st0._replace(b=jnp.full(static.m, 0.02))
    xa, xb, _ = train.batch(static, hp, st0, train._DATA, st0.t)
    w0 = np.asarray(st0.w)
    n = c.n_prune
    assert n == round(0.4 * c.M_neurons * c.D1)
    flat = np.abs(w0).ravel()
    mask = np.ones(w0.size, np.float32)
    mask[np.argsort(flat, kind="stable")[:n]] = 0
    mask = mask.reshape(w0.shape)
    grad = jax.grad(
        lambda w: jaxcl.info_nce(w * mask, st0.b, xa, xb, c.TAU, 0.0) + 0.5 * c.LAM * jnp.sum(w * w)
    )(st0.w)
    st1, _ = _step(static, hp, st0)
    scale = float(jnp.max(jnp.abs(grad)))
    np.testing.assert_allclose(st1.w, st0.w - c.eta * grad, rtol=1e-5, atol=1e-6 * scale)
    lam, eta = np.float32(c.LAM), np.float32(c.eta)
    pruned = mask == 0
    np.testing.assert_array_equal(np.asarray(st1.w)[pruned], w0[pruned] + (lam * w0[pruned]) * -eta)
    assert not np.allclose(np.asarray(st1.w)[~pruned], w0[~pruned] * (1 - eta * lam))


@pytest.mark.numerics
@pytest.mark.slow
def test_neurons_mode_default_or_written_out_gives_the_stored_ids_and_arrays(tiny):
    """prune_mode = "neurons", left at its default or written out: the stored config ids, and
    the stored final arrays (to 1e-6 relative, like tests/test_liao_10_steps.py)."""
    for explicit in (False, True):
        extra = {"prune_mode": "neurons"} if explicit else {}
        cfgs = [Config(**{**tiny, "prune_fraction": 0.3, "seed": s}, **extra) for s in (0, 1)]
        assert [x.config_id for x in cfgs] == STORED_IDS
        st, _ = _vtrain(cfgs[0].static(), 4)(stack_hparams(cfgs))
        assert st.keep is None
        with np.load(STORED) as want:
            for k in ("w", "b"):
                np.testing.assert_allclose(
                    getattr(st, k),
                    want[k],
                    rtol=1e-6,
                    atol=1e-6 * float(np.abs(want[k]).max()),
                    err_msg=k,
                )


def test_config_ids_and_errors():
    # the default mode written out keeps the default config's literal id
    assert Config(prune_mode="neurons").config_id == "d9_m27_r0.25_s0_73807afa42"
    assert Config().config_id == "d9_m27_r0.25_s0_73807afa42"
    assert Config(prune_mode="weights").config_id != Config().config_id
    assert (
        Config(prune_mode="neurons_once", prune_at="T2").config_id
        != Config(prune_mode="neurons_once").config_id
    )
    with pytest.raises(ConfigError, match="'prune_mode' = 'edges'"):
        Config(prune_mode="edges")
    with pytest.raises(ConfigError, match="'prune_at' = 'T2'.*neurons_once"):
        Config(prune_at="T2")
    with pytest.raises(ConfigError, match="'prune_at' = 'T3'"):
        Config(prune_mode="neurons_once", prune_at="T3")
    assert Config(prune_mode="weights", prune_fraction=0.1, m=10, d=5).n_prune == 10  # of 100
