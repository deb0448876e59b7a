"""Per-neuron sets N_i(t) (eq. 16 at time t) snapshotted near T_2 and 2 T_2 inside the training
chunk (`snapshot_sets`), so that Theorem 3.3 can be read with the sets of the paper's windows."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from jaxcl.experiments.liao import observables
from jaxcl.experiments.liao.config import HParams, Static
from jaxcl.experiments.liao.model import effective_weights


class SetSnapshots(NamedTuple):
    """N_i(t) = {j : A_ij(t)² ≥ c2 log d/d · S_i(t)} (eq. 16 at time t) for every neuron, taken
    at the first chunk end at or after T_2 and at or after 2 T_2 (so up to `log_every` steps
    late); `t` holds the steps at which they were taken, −1 until then."""

    N_T2: Any  # (m, d) bool
    N_2T2: Any  # (m, d) bool
    t: Any  # (2,) int32


def take(hp: HParams, state) -> SetSnapshots:
    """The snapshots after a chunk: each taken once, at the first chunk end past its step."""
    snap = state.sets
    _, c2 = observables.thresholds(hp.eps_max, hp.eps_min, hp.gamma_c0)
    w_MxD1 = effective_weights(state.w, state.attn)
    n_MxD = observables.ordinary_mask(observables.alignment(w_MxD1, state.M), c2)
    due_T2 = (state.T2 >= 0) & (snap.t[0] < 0)
    due_2T2 = (state.T2 >= 0) & (state.t >= 2 * state.T2) & (snap.t[1] < 0)
    return SetSnapshots(
        N_T2=jnp.where(due_T2, n_MxD, snap.N_T2),
        N_2T2=jnp.where(due_2T2, n_MxD, snap.N_2T2),
        t=jnp.stack(
            [jnp.where(due_T2, state.t, snap.t[0]), jnp.where(due_2T2, state.t, snap.t[1])]
        ),
    )


def empty(static: Static) -> SetSnapshots:
    """No snapshot taken yet: empty sets, steps −1."""
    empty_MxD = jnp.zeros((static.m, static.d), bool)
    return SetSnapshots(N_T2=empty_MxD, N_2T2=empty_MxD, t=jnp.full((2,), -1, jnp.int32))
