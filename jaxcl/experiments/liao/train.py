"""Pure init/step/train for one config: GD on W, the bias schedule (eq. 70), T_1/T_2, pruning
(SPEC §4, read three ways: `prune_mode`).

Everything here acts on a single config; the sweep driver vmaps it over a grid and shards the
vmapped axis. Metrics are reduced every `log_every` steps inside jit (STYLE §6).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxcl.experiments.liao import observables, snapshots
from jaxcl.experiments.liao.config import HParams, Static
from jaxcl.experiments.liao.data import dictionary, fold, frequencies, presence_prob, sample_views
from jaxcl.experiments.liao.loss import loss_and_grad_by_neuron
from jaxcl.experiments.liao.model import (
    AttnParams,
    attention,
    attention_qkv,
    effective_weights,
    embed_nonneg_bias_by_neuron,
    preactivations_by_neuron,
    prune_mask,
    weight_grad_by_neuron,
    weight_prune_mask,
)

# Streams folded out of a config's seed key; fixed so results never depend on batching.
_DICT, _INIT, _DATA, _EVAL = 0, 1, 2, 3


class State(NamedTuple):
    """Whole training state of one config (all that a checkpoint must hold)."""

    w: Any  # (m, d1) neuron weights
    b: Any  # (m,) biases
    w0: Any  # (m, d1) initial weights
    M: Any  # (d1, d) dictionary
    eps: Any  # (d,) feature frequencies ε_j
    opt_state: Any  # optax state of plain GD
    t: Any  # int32 steps taken
    stage: Any  # int32 1, 2 or 3
    T1: Any  # int32, -1 until reached
    T2: Any  # int32, -1 until reached
    n2_T1: Any  # (m,) ‖w_i(T_1)‖², for the eq. 67 test
    key: Any  # (2,) uint32 base key of the config
    # prune_mode "neurons_once" only (None otherwise, so other checkpoints keep their leaves):
    # (m,) 1 for kept neurons, all ones until the removal at T_1 or T_2, then fixed for good
    keep: Any = None
    # train_attention only (None otherwise): AttnParams W_Q, W_K, W_V, each (d1, d1)
    attn: Any = None
    # snapshot_sets only (None otherwise): N_i(t) per neuron near T_2 and 2 T_2
    sets: Any = None


class StepMetrics(NamedTuple):
    loss: Any  # L_aug (eq. 2) before the update
    nce: Any  # InfoNCE part only
    acc: Any  # in-batch top-1 retrieval accuracy


def _optimizer(hp: HParams):
    return optax.sgd(hp.eta)  # plain GD; λ enters through the loss (eq. 2)


def init(static: Static, hp: HParams) -> State:
    """Draws M, W^(0) ~ N(0, σ0² I) with Σ_i‖w_i‖² ≈ init_mass·τ/d in expectation (SPEC §2), b = 0."""
    key = jax.random.PRNGKey(hp.seed)
    M_D1xD, _ = dictionary(jax.random.fold_in(key, _DICT), static.d, static.d1, static.dictionary)
    eps_D = frequencies(static.d, hp.n_major, hp.eps_max, hp.eps_min)
    # a Python float: d·m·d1 overflows the int32 that jit makes of a large Python int
    sigma0 = jnp.sqrt(hp.init_mass * hp.tau / float(static.d * static.m * static.d1))
    w0_MxD1 = sigma0 * jax.random.normal(jax.random.fold_in(key, _INIT), (static.m, static.d1))
    attn = AttnParams.identity(static.d1) if static.train_attention else None  # SPEC §2: W = I
    params = w0_MxD1 if attn is None else (w0_MxD1, attn)
    return State(
        w=w0_MxD1,
        b=jnp.zeros(static.m),
        w0=w0_MxD1,
        M=M_D1xD,
        eps=eps_D,
        opt_state=_optimizer(hp).init(params),
        t=jnp.int32(0),
        stage=jnp.int32(1),
        T1=jnp.int32(-1),
        T2=jnp.int32(-1),
        n2_T1=jnp.zeros(static.m),
        key=key,
        keep=jnp.ones(static.m) if static.prune_mode == "neurons_once" else None,
        attn=attn,
        sets=snapshots.empty(static) if static.snapshot_sets else None,
    )


def forward_mask(static: Static, hp: HParams, state: State):
    """The mask applied to W in the forward pass of this step, by `prune_mode` (SPEC §4).

    "neurons": the n_prune smallest-‖w_i‖ neurons, re-ranked every step (SPEC §4);
    "neurons_once": the neurons removed for good at T_1 or T_2 (`state.keep`; none before);
    "weights": the n_prune entries of W with the smallest |w_ik|, re-ranked every step.
    Returns (mask broadcastable to W: (m, 1) or (m, d1); (m,) 1 for neurons with any kept entry).
    """
    if not static.prune:  # ranking costs ~6% of a step; a group without pruning skips it
        mask_M = jnp.ones(state.w.shape[:1], state.w.dtype)
        return mask_M[:, None], mask_M
    if static.prune_mode == "weights":
        mask_MxD1 = weight_prune_mask(state.w, hp.n_prune)
        return mask_MxD1, jnp.any(mask_MxD1 > 0, axis=1).astype(state.w.dtype)
    mask_M = state.keep if static.prune_mode == "neurons_once" else prune_mask(state.w, hp.n_prune)
    return mask_M[:, None], mask_M


def batch(static: Static, hp: HParams, state: State, stream: int, index):
    """The positive pairs of step/chunk `index` of a stream; depends only on (seed, stream, index).

    Returns (Xa, Xb, coef): anchors and positives (K, L, d1), and the signed codes (K, d).
    """
    x_2xKxLxD1, coef_KxD = batch_views(static, hp, state, stream, index)
    return x_2xKxLxD1[0], x_2xKxLxD1[1], coef_KxD


def batch_views(static: Static, hp: HParams, state: State, stream: int, index):
    """`batch` with both views in one array: (X (2, K, L, d1), coef (K, d)), X[0] the anchors."""
    key = fold(state.key, stream, index)  # stream >= 1, apart from jax.random.fold_in's (0, n)
    p_D = presence_prob(state.eps, hp.C_z, static.d)
    return sample_views(
        key,
        state.M,
        p_D,
        static.L,
        static.K,
        hp.feature_scale,
        hp.sigma_xi,
        static.dictionary == "identity",
    )


def update_bias(static: Static, hp: HParams, state: State, w_new, mask_M=None):
    """Bias schedule: b = 0 in stage 1, eq. 70 in stage 2, b ∝ ‖w‖ (or frozen) in stage 3.

    Stage 1 ends when every neuron the pruning mask keeps has grown as eq. 41 says (pruned
    neurons only decay, so counting them would keep stage 1 going forever).
    Returns (b, stage, T1, T2, n2_T1) after the step that produced w_new.
    """
    log_d = jnp.log(float(static.d))
    n2_old_M = jnp.sum(state.w * state.w, axis=1)
    n2_new_M = jnp.sum(w_new * w_new, axis=1)
    n2_0_M = jnp.sum(state.w0 * state.w0, axis=1)
    growth_M = jnp.sqrt(n2_new_M / jnp.maximum(n2_old_M, 1e-30))
    t_new = state.t + 1
    if mask_M is None:
        mask_M = jnp.ones_like(n2_new_M)

    g1 = (1.0 + hp.eps_min * hp.C_z * log_d) ** 2  # eq. 41
    reach1 = jnp.where(
        hp.stage1_steps > 0,
        t_new >= hp.stage1_steps,
        jnp.all((n2_new_M >= g1 * n2_0_M) | (mask_M == 0)),
    )
    enter2 = (state.stage == 1) & reach1
    reach2 = jnp.any(n2_new_M >= static.d * state.n2_T1)  # eq. 67
    enter3 = (state.stage == 2) & reach2

    b_at_T1_M = hp.c_b * jnp.sqrt(log_d / static.d) * jnp.sqrt(n2_new_M)
    b_stage2_M = jnp.maximum(state.b * (1.0 + hp.bias_rate), state.b * growth_M)  # eq. 70
    b_stage3_M = state.b if static.stage3_freeze else state.b * growth_M
    b_M = jnp.where(
        state.stage == 1,
        jnp.where(enter2, b_at_T1_M, 0.0),
        jnp.where(state.stage == 2, b_stage2_M, b_stage3_M),
    )
    stage = state.stage + enter2.astype(jnp.int32) + enter3.astype(jnp.int32)
    T1 = jnp.where(enter2, t_new, state.T1)
    T2 = jnp.where(enter3, t_new, state.T2)
    n2_T1_M = jnp.where(enter2, n2_new_M, state.n2_T1)
    return b_M, stage, T1, T2, n2_T1_M


def step(static: Static, hp: HParams, state: State) -> tuple[State, StepMetrics]:
    """One GD step W ← (1 − ηλ)W − η∇L(W ⊙ mask) and the bias update; a no-op once t ≥ steps.

    Masked neurons or entries get the weight decay alone: their loss gradient is zero, since the
    forward pass sees W ⊙ mask (SPEC §4). With `train_attention`, W_Q, W_K, W_V take the same GD
    step on the loss gradient (autodiff), without weight decay.
    """
    x_2xKxLxD1, _ = batch_views(static, hp, state, _DATA, state.t)  # anchors, positives
    mask_W, mask_M = forward_mask(static, hp, state)  # mask_W: (m, 1) or (m, d1)
    if static.train_attention:
        nce, acc, grad_MxD1, grad_attn = _grads_with_attention(
            static, hp, state, x_2xKxLxD1[0], x_2xKxLxD1[1], mask_W
        )
    else:
        nce, acc, grad_MxD1 = _grads(static, hp, state, x_2xKxLxD1, mask_W)
    # eq. 2; the row norms are the ones update_bias needs too, so XLA computes them once
    loss = nce + 0.5 * hp.lam * jnp.sum(jnp.sum(state.w * state.w, axis=1))
    if static.train_attention:  # the same GD step (η) on W and on W_Q, W_K, W_V
        updates, opt_state = _optimizer(hp).update(
            (grad_MxD1, grad_attn), state.opt_state, (state.w, state.attn)
        )
        w_new, attn_new = optax.apply_updates((state.w, state.attn), updates)
    else:
        updates, opt_state = _optimizer(hp).update(grad_MxD1, state.opt_state, state.w)
        w_new = optax.apply_updates(state.w, updates)
    b, stage, T1, T2, n2_T1 = update_bias(static, hp, state, w_new, mask_M)
    changed = dict(
        w=w_new, b=b, opt_state=opt_state, t=state.t + 1, stage=stage, T1=T1, T2=T2, n2_T1=n2_T1
    )
    if static.train_attention:
        changed["attn"] = attn_new
    if static.prune_mode == "neurons_once":
        # the step that starts stage prune_stage (T_1 or T_2) removes the n_prune smallest
        # ‖w_i‖ of its new weights; the mask never changes again (no neuron is revived)
        now = (state.stage < hp.prune_stage) & (stage >= hp.prune_stage)
        # ranked only at that step (a cond; under vmap a select, which evaluates both branches)
        changed["keep"] = jax.lax.cond(
            now, lambda: prune_mask(w_new, hp.n_prune), lambda: state.keep
        )
    # Past its own `steps` a config stands still; only the fields a step changes are selected
    # (w0, M, eps and the key are constants).
    active = state.t < hp.steps
    new = state._replace(
        **{
            k: jax.tree.map(lambda n, o: jnp.where(active, n, o), v, getattr(state, k))
            for k, v in changed.items()
        }
    )
    return new, StepMetrics(loss=loss, nce=nce, acc=acc)


def _hard_beta(static: Static, hp: HParams):
    """SPEC §10's β where the config has one, else the concrete 0 that compiles the unweighted
    loss (no weights computed)."""
    return hp.hard_beta if static.hard else 0.0


def _grads(static: Static, hp: HParams, state: State, x_2xKxLxD1, mask_W):
    """InfoNCE (or SPEC §8's loss), top-1 accuracy and ∇_W of eq. 2 at W ⊙ mask, with
    W_Q = W_K = W_V = I frozen, on the views X[0] (anchors) and X[1] (positives).
    Returns (nce, acc, grad (m, d1))."""
    # The attention is frozen, so H is data: computed once, outside the gradient, for both
    # views at once (one kernel per part of the step instead of one per view).
    h_2xKxLxD1 = attention(x_2xKxLxD1)
    dtype = jnp.dtype(static.matmul_dtype)
    wm_MxD1 = state.w * mask_W
    # W enters only through the pre-activations ⟨w_i ⊙ mask_i, H_r⟩, so autodiff is applied to
    # the cheap rest (the loss of the embeddings) and the chain rule through BReLU and the matmul
    # is written out: one forward matmul over both views' tokens and one backward matmul for the
    # anchor view alone (the StopGrad view needs no backward pass). Pre-activations are
    # neuron-major (m, 2, K, L), which keeps both matmuls in the layout XLA runs fastest.
    pre_Mx2xKxL = preactivations_by_neuron(wm_MxD1, h_2xKxLxD1, dtype)
    f_Mx2xK = embed_nonneg_bias_by_neuron(pre_Mx2xKxL, state.b)
    fa_MxK, fb_MxK, pre_MxKxL = f_Mx2xK[:, 0], f_Mx2xK[:, 1], pre_Mx2xKxL[:, 0]
    nce, acc, dfa_MxK = loss_and_grad_by_neuron(
        fa_MxK,
        fb_MxK,
        hp.tau,
        static.loss,
        hp.loss_alpha,
        hp.loss_beta,
        static.loss_psi,
        static.loss_phi,
        _hard_beta(static, hp),
    )  # SPEC §8, §10
    # BReLU_b'(s) = 1 where |s| > b, else 0 (eq. 3); ∇_W of eq. 2 adds the weight decay's λW.
    b_Mx1x1 = jnp.reshape(state.b, (-1, 1, 1))
    dpre_MxKxL = (jnp.abs(pre_MxKxL) > b_Mx1x1).astype(jnp.float32) * dfa_MxK[:, :, None]
    grad_MxD1 = weight_grad_by_neuron(dpre_MxKxL, h_2xKxLxD1[0], dtype) * mask_W + hp.lam * state.w
    return nce, acc, grad_MxD1


def _grads_with_attention(static: Static, hp: HParams, state: State, xa_KxLxD1, xb_KxLxD1, mask_W):
    """`_grads` with W_Q, W_K, W_V trained (SPEC §2's extension), by autodiff through the
    attention and the encoder of the anchor view (the second view is StopGrad, eq. 1).

    Eq. 2's weight decay (λ/2)‖W‖² is on W alone, as the SPEC writes it: the attention matrices
    get the loss gradient only. Returns (nce, acc, ∇_W (m, d1), ∇ of AttnParams).
    """
    dtype = jnp.dtype(static.matmul_dtype)

    def embed(w_MxD1, attn, x_KxLxD1):
        h_KxLxD1 = attention_qkv(x_KxLxD1, attn)
        return embed_nonneg_bias_by_neuron(
            preactivations_by_neuron(w_MxD1 * mask_W, h_KxLxD1, dtype), state.b
        )

    fb_MxK = jax.lax.stop_gradient(embed(state.w, state.attn, xb_KxLxD1))
    fa_MxK, pullback = jax.vjp(lambda w, attn: embed(w, attn, xa_KxLxD1), state.w, state.attn)
    nce, acc, dfa_MxK = loss_and_grad_by_neuron(
        fa_MxK,
        fb_MxK,
        hp.tau,
        static.loss,
        hp.loss_alpha,
        hp.loss_beta,
        static.loss_psi,
        static.loss_phi,
        _hard_beta(static, hp),
    )  # SPEC §8, §10
    grad_MxD1, grad_attn = pullback(dfa_MxK)
    return nce, acc, grad_MxD1 + hp.lam * state.w, grad_attn


def _scan_body(static: Static, hp: HParams, carry, _):
    """One step inside a chunk: accumulate metrics of active steps, note the first NaN/Inf."""
    state, sums, bad_step = carry
    active = state.t < hp.steps
    t = state.t
    state, m = step(static, hp, state)
    sums = StepMetrics(*[s + jnp.where(active, x, 0.0) for s, x in zip(sums, m)])
    bad_step = jnp.where((bad_step < 0) & active & ~jnp.isfinite(m.loss), t, bad_step)
    return (state, sums, bad_step), active.astype(jnp.float32)


def run_chunk(static: Static, hp: HParams, state: State) -> tuple[State, dict]:
    """`log_every` steps under lax.scan; returns the new state and this chunk's reduced metrics.

    A config already past its own `steps` skips the chunk: a real branch where configs run one
    at a time (unvmapped, or the runner's sequential batching), so a group whose configs train
    for different numbers of steps costs what each needs; under vmap both branches run and the
    result is selected, as for the steps inside a chunk.
    """
    chunk = functools.partial(_chunk, static)
    return jax.lax.cond(state.t < hp.steps, chunk, functools.partial(_idle, chunk), hp, state)


def _idle(chunk, hp: HParams, state: State) -> tuple[State, dict]:
    """A chunk of a finished config: its state unchanged, its metrics marked not logged."""
    shapes = jax.eval_shape(chunk, hp, state)[1]
    metrics = {k: jnp.zeros(v.shape, v.dtype) for k, v in shapes.items()}
    metrics.update(
        step=state.t,
        logged=jnp.bool_(False),
        finite=jnp.bool_(True),
        bad_step=jnp.int32(-1),
        stage=state.stage,
        T1=state.T1,
        T2=state.T2,
    )
    return state, metrics


def _chunk(static: Static, hp: HParams, state: State) -> tuple[State, dict]:
    t_start = state.t
    zeros = StepMetrics(*(jnp.float32(0.0) for _ in StepMetrics._fields))
    (state, sums, bad_step), active = jax.lax.scan(
        functools.partial(_scan_body, static, hp),
        (state, zeros, jnp.int32(-1)),
        None,
        length=static.log_every,
    )
    if static.snapshot_sets:
        state = state._replace(sets=snapshots.take(hp, state))
    n = jnp.maximum(jnp.sum(active), 1.0)
    metrics = {
        "step": state.t,
        "logged": t_start < hp.steps,  # False for chunks after this config finished
        "loss": sums.loss / n,
        "nce": sums.nce / n,
        "acc": sums.acc / n,
        "finite": (bad_step < 0) & jnp.all(jnp.isfinite(state.w)),
        "bad_step": bad_step,
        "stage": state.stage,
        "T1": state.T1,
        "T2": state.T2,
    }
    eval_x, _, _ = batch(static, hp, state, _EVAL, state.t)
    metrics.update(
        observables.chunk_summary(state.w, state.b, state.M, hp.n_major, eval_x, state.attn)
    )
    metrics.update(
        observables.set_summary(
            effective_weights(state.w, state.attn), state.b, state.w0, state.M, hp
        )
    )
    return state, metrics


def train(static: Static, hp: HParams, n_chunks: int) -> tuple[State, dict]:
    """init, then `n_chunks` chunks under lax.scan; metrics stacked per chunk (not per step)."""
    state = init(static, hp)

    def body(state, _):
        return run_chunk(static, hp, state)

    return jax.lax.scan(body, state, None, length=n_chunks)


def n_chunks_for(steps: int, log_every: int) -> int:
    return -(-steps // log_every)
