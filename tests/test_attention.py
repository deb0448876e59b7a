"""Trainable attention (SPEC §2's extension, `train_attention`): one step against autodiff of a
plain composition, the frozen path untouched, and W_Q/W_K/W_V in the state and final arrays."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcl
from jaxcl.experiments.liao import EXPERIMENT, train
from jaxcl.experiments.liao.config import Config
from jaxcl.experiments.liao.model import AttnParams, encode_attended

_step = jax.jit(train.step, static_argnums=0)
TINY_ID = "d5_m6_r0.25_s0_848df2e0e1"  # Config(**tiny)'s id, literal


@pytest.fixture(scope="module")
def cfg(tiny):
    return Config(**{**tiny, "train_attention": True, "prune_fraction": 0.3})


def _plain_objective(c, b, xa, xb, mask):
    """L of eq. 2 at (W ⊙ mask, W_Q, W_K, W_V), written from scratch: H = softmax(X W_Q
    (X W_K)ᵀ/√d1) X W_V, then the public encode_attended, StopGrad on the second view, the
    public contrastive_loss; (λ/2)‖W‖² on W only."""
    K = c.K
    off = ~np.eye(K, dtype=bool)

    def f(w, wq, wk, wv, x):
        scores = jnp.einsum("kld,krd->klr", x @ wq, x @ wk) / np.sqrt(c.D1)
        h = jnp.einsum("klr,krd->kld", jax.nn.softmax(scores, axis=-1), x @ wv)
        return encode_attended(w * mask, b, h)

    def objective(w, wq, wk, wv):
        s = f(w, wq, wk, wv, xa) @ jax.lax.stop_gradient(f(w, wq, wk, wv, xb)).T
        s_neg = jnp.reshape(s[off], (K, K - 1))
        return jaxcl.contrastive_loss(jnp.diagonal(s), s_neg, c.TAU) + 0.5 * c.LAM * jnp.sum(w * w)

    return objective


@pytest.mark.numerics
@pytest.mark.slow
def test_step_is_gd_on_w_and_attention(cfg):
    """W, W_Q, W_K, W_V after one step equal θ − η ∇_θ L of the plain composition (attention
    matrices moved off I first, so every term of the gradient is exercised)."""
    static, hp = cfg.static(), cfg.hparams()
    st0 = train.init(static, hp)
    np.testing.assert_array_equal(st0.attn.wq, np.eye(cfg.D1))
    rng = np.random.default_rng(0)
    attn = AttnParams(
        *[
            jnp.asarray(np.eye(cfg.D1) + 0.3 * rng.normal(size=(cfg.D1, cfg.D1)), jnp.float32)
            for _ in range(3)
        ]
    )
    st0 = st0._replace(attn=attn, w=30.0 * st0.w0, b=jnp.full(static.m, 0.02))
    xa, xb, _ = train.batch(static, hp, st0, train._DATA, st0.t)
    mask = train.prune_mask(st0.w, cfg.n_prune)[:, None]
    objective = _plain_objective(cfg, st0.b, xa, xb, mask)
    grads = jax.jit(jax.grad(objective, argnums=(0, 1, 2, 3)))(st0.w, *attn)
    st1, metrics = _step(static, hp, st0)
    for got, old, g in zip((st1.w, *st1.attn), (st0.w, *attn), grads):
        scale = float(jnp.max(jnp.abs(g)))
        assert scale > 0
        np.testing.assert_allclose(got, old - cfg.eta * g, rtol=1e-5, atol=1e-5 * cfg.eta * scale)
        assert not np.allclose(got, old)
    np.testing.assert_allclose(metrics.loss, objective(st0.w, *attn), rtol=1e-5)


@pytest.mark.numerics
@pytest.mark.slow
def test_identity_start_matches_frozen_first_step(cfg):
    """At W_Q = W_K = W_V = I the W update is the frozen path's (the attention gradient aside)."""
    frozen = Config(**{**cfg.__dict__, "train_attention": False})
    st_on, _ = _step(cfg.static(), cfg.hparams(), train.init(cfg.static(), cfg.hparams()))
    st_off, _ = _step(
        frozen.static(), frozen.hparams(), train.init(frozen.static(), frozen.hparams())
    )
    np.testing.assert_allclose(st_on.w, st_off.w, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_off_means_no_attention_state(tiny):
    c = Config(**tiny)
    # off, written out or left out: one literal id
    assert c.config_id == Config(**tiny, train_attention=False).config_id == TINY_ID
    assert Config(**tiny, train_attention=True).config_id != TINY_ID
    st = train.init(c.static(), c.hparams())
    assert st.attn is None
    assert set(EXPERIMENT.final_arrays(st)) == {"w0", "w", "b", "M", "eps"}
    on = Config(**tiny, train_attention=True)
    st_on = train.init(on.static(), on.hparams())
    arrays = EXPERIMENT.final_arrays(st_on)
    assert {"W_Q", "W_K", "W_V"} <= set(arrays) and arrays["W_V"].shape == (on.D1, on.D1)


def test_report_puts_frozen_and_trained_side_by_side():
    from jaxcl.experiments.liao.report.attention import attention_section

    def final(on, seed, cov):
        obs = {
            "cov_major": 0.9,
            "cov_minor": cov,
            "probe_gap": 0.1,
            "alive_frac": 1.0,
            "pure_counts": [2, 2, 0, 0],
        }
        return {
            "d": 4,
            "ratio": 0.5,
            "prune_fraction": 0.0,
            "n_major": 2,
            "seed": seed,
            "train_attention": on,
            "observables": obs,
        }

    finals = [final(False, s, 0.1) for s in range(2)] + [final(True, s, 0.3) for s in range(2)]
    finals.append({**final(True, 0, 0.3), "d": 5})  # d = 5 trained only: no row
    lines = attention_section(finals).lines
    rows = [x for x in lines if x.startswith("| 4 |")]
    assert rows == [
        "| 4 | 0.5 | 0 | 2 / 2 | 0.9 [0.9, 0.9] → 0.9 [0.9, 0.9] | "
        "0.1 [0.1, 0.1] → 0.3 [0.3, 0.3] | 0.1 [0.1, 0.1] → 0.1 [0.1, 0.1] | "
        "2 [2, 2] → 2 [2, 2] | 0 [0, 0] → 0 [0, 0] | 1 [1, 1] → 1 [1, 1] |"
    ]
    assert not [x for x in lines if x.startswith("| 5 |")]
