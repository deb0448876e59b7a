"""Pure init/step/run_chunk of the unconstrained-features model (SPEC §9): one free vector per
sample on the unit sphere, trained on a loss of SPEC §8 with sampled positives and negatives.

Rows of the representation array are laid out class by class, `samples_major` rows per class;
a minority class uses its first `samples_minor` rows (traced) and the rest are padding that is
never sampled, so its gradient and its optimizer moments stay exactly zero.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxcl import losses
from jaxcl.experiments.geometry import observables
from jaxcl.experiments.geometry.config import HParams, Static

# Streams folded out of a config's seed key; fixed so results never depend on batching.
_INIT, _DATA = 1, 2


class State(NamedTuple):
    """Whole training state of one config (all that a checkpoint must hold)."""

    u: Any  # (R, p) free representations, R = C * samples_major rows (minority rows padded)
    opt_state: Any  # optax state
    t: Any  # int32 steps taken
    key: Any  # (2,) uint32 base key of the config


def _direction(static: Static) -> optax.GradientTransformation:
    """The optimizer's step direction; the (decaying) learning rate is applied in `step`."""
    return optax.scale_by_adam() if static.optimizer == "adam" else optax.identity()


def init(static: Static, hp: HParams) -> State:
    """u_n(0) ~ N(0, init_scale² I_p), padding rows included (they never move)."""
    key = jax.random.PRNGKey(hp.seed)
    u = hp.init_scale * jax.random.normal(jax.random.fold_in(key, _INIT), (static.n_rows, static.p))
    return State(u=u, opt_state=_direction(static).init(u), t=jnp.int32(0), key=key)


def class_size(static: Static, hp: HParams, c):
    """n_c: samples_major for a majority class, samples_minor for a minority one."""
    return jnp.where(c < static.n_major_classes, static.samples_major, hp.samples_minor)


def n_samples(static: Static, hp: HParams):
    """N = Σ_c n_c."""
    return static.n_major_classes * static.samples_major + static.n_minor_classes * hp.samples_minor


def row_of(static: Static, hp: HParams, i):
    """The row of the i-th valid sample (i < N; classes in order, each its first n_c rows)."""
    head = static.n_major_classes * static.samples_major
    j = jnp.maximum(i - head, 0)
    minor_row = (
        static.n_major_classes + j // hp.samples_minor
    ) * static.samples_major + j % hp.samples_minor
    return jnp.where(i < head, i, minor_row)


def _uniform_index(u01, n):
    """floor(u · n) for u uniform on [0, 1), kept below n against rounding."""
    return jnp.minimum((u01 * n).astype(jnp.int32), n - 1)


def sample(static: Static, hp: HParams, key):
    """A step's rows (SPEC §9): `batch` anchors uniform over the N samples; for each, a positive
    uniform over the other samples of its class (itself if the class has one sample), and
    `negatives` samples uniform over all N (possibly of the anchor's class).

    Returns (anchor rows (B,), positive rows (B,), negative rows (B, k)).
    """
    B, k, S = static.batch, static.negatives, static.samples_major
    u_Bx2 = jax.random.uniform(key, (B, 2 + k))
    n = n_samples(static, hp)
    a_B = row_of(static, hp, _uniform_index(u_Bx2[:, 0], n))
    c_B, off_B = a_B // S, a_B % S
    size_B = class_size(static, hp, c_B)
    shift_B = 1 + _uniform_index(u_Bx2[:, 1], jnp.maximum(size_B - 1, 1))
    pos_B = c_B * S + jnp.where(size_B > 1, (off_B + shift_B) % size_B, off_B)
    neg_BxK = row_of(static, hp, _uniform_index(u_Bx2[:, 2:], n))
    return a_B, pos_B, neg_BxK


def normalize(u_RxP):
    """z = u / ‖u‖ row by row.

    As u · rsqrt(‖u‖²): written as a division, XLA:CPU compiled the gradient to programs whose
    last bits differed between a plain jit and the engine's shard_map on two devices; with
    rsqrt they agree bitwise (tests/test_distributed.py checks 1, 2 and 4 devices).
    """
    return u_RxP * jax.lax.rsqrt(jnp.maximum(jnp.sum(u_RxP * u_RxP, axis=1, keepdims=True), 1e-30))


def batch_loss(static: Static, hp: HParams, u_RxP, rows):
    """The loss of SPEC §8 on a step's rows, s = ⟨z, z'⟩ with no StopGrad (SPEC §9), its
    negatives weighted by SPEC §10's v_i (constants in the gradient) where hard_beta > 0.

    Rows are gathered; the backward pass is a scatter-add of B (k + 2) rows. (A dense form,
    one-hot matmuls and the negatives as counts per row, ran 4-5x slower on CPU at batch 64.)
    """
    a_B, pos_B, neg_BxK = rows
    z_RxP = normalize(u_RxP)
    za_BxP = z_RxP[a_B]
    s_pos_B = jnp.sum(za_BxP * z_RxP[pos_B], axis=1)
    s_neg_BxK = jnp.einsum("bp,bkp->bk", za_BxP, z_RxP[neg_BxK])
    hard_beta = hp.hard_beta if static.hard else 0.0  # SPEC §10; 0: the unweighted code
    return jnp.mean(
        losses.per_anchor(
            s_pos_B,
            s_neg_BxK,
            hp.tau,
            static.loss,
            hp.loss_alpha,
            hp.loss_beta,
            static.loss_psi,
            static.loss_phi,
            hard_beta,
        )
    )


def learning_rate(hp: HParams, t):
    """lr · ½(1 + cos(π t / steps)): a cosine decay to 0 at the config's last step (convention),
    so the representations settle instead of jittering at the sampling noise's scale."""
    frac = jnp.minimum(t.astype(jnp.float32) / jnp.maximum(hp.steps, 1), 1.0)
    return hp.lr * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))


def step(static: Static, hp: HParams, state: State) -> tuple[State, Any]:
    """One optimizer step on a fresh sample; a no-op once t ≥ steps. Returns (state, loss)."""
    rows = sample(static, hp, jax.random.fold_in(jax.random.fold_in(state.key, _DATA), state.t))
    loss, grad = jax.value_and_grad(functools.partial(batch_loss, static, hp))(state.u, rows)
    direction, opt_state = _direction(static).update(grad, state.opt_state, state.u)
    u = state.u - learning_rate(hp, state.t) * direction
    active = state.t < hp.steps
    keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
    new = State(
        u=keep(u, state.u),
        opt_state=jax.tree.map(keep, opt_state, state.opt_state),
        t=state.t + active.astype(jnp.int32),
        key=state.key,
    )
    return new, loss


def _scan_body(static: Static, hp: HParams, carry, _):
    state, total, bad_step = carry
    active = state.t < hp.steps
    t = state.t
    state, loss = step(static, hp, state)
    bad_step = jnp.where((bad_step < 0) & active & ~jnp.isfinite(loss), t, bad_step)
    return (state, total + jnp.where(active, loss, 0.0), bad_step), active.astype(jnp.float32)


def run_chunk(static: Static, hp: HParams, state: State) -> tuple[State, dict]:
    """`log_every` steps under lax.scan; the chunk's mean loss and the observables of SPEC §9
    at its end, reduced inside jit."""
    t_start = state.t
    (state, total, bad_step), active = jax.lax.scan(
        functools.partial(_scan_body, static, hp),
        (state, jnp.float32(0.0), jnp.int32(-1)),
        None,
        length=static.log_every,
    )
    n = jnp.maximum(jnp.sum(active), 1.0)
    stats = observables.summary(static, hp, state.u)
    metrics = {
        "step": state.t,
        "logged": t_start < hp.steps,
        "finite": (bad_step < 0) & jnp.all(jnp.isfinite(state.u)),
        "bad_step": bad_step,
        "loss": total / n,
        "lr": learning_rate(hp, state.t),
        **{k: stats[k] for k in observables.SCALARS},
    }
    return state, metrics
