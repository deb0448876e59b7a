"""A third experiment, defined here and registered, runs through the unchanged engine: the
protocol is all the engine needs (the example of docs/experiments.md)."""

import dataclasses
import json
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl.configbase import BaseConfig, check_types, require
from jaxcl.engine import protocol, runner
from jaxcl.engine.sweep import loads
from jaxcl.errors import ConfigError


# ---- the whole experiment: a config, its static/traced split, init, run_chunk, finals
@dataclasses.dataclass(frozen=True)
class DecayConfig(BaseConfig):
    """x ← (1 − lr) x for `steps` steps: the smallest trainable thing."""

    experiment: str = "decay"
    dim: int = 3
    lr: float = 0.1
    steps: int = 20
    log_every: int = 10
    seed: int = 0

    def __post_init__(self):
        check_types(self)
        require(0 < self.lr < 1, "lr", self.lr, "must be in (0, 1)")

    @property
    def n_steps(self) -> int:
        return self.steps

    def id_prefix(self) -> str:
        return f"decay_lr{self.lr:g}_s{self.seed}"

    def resolved(self) -> dict:
        return dataclasses.asdict(self)

    def static(self):
        return (self.dim, self.log_every)  # any hashable value: one compile per distinct one

    def hparams(self):
        return DecayHParams(seed=self.seed, lr=self.lr, steps=self.steps)


class DecayHParams(NamedTuple):
    seed: Any
    lr: Any
    steps: Any
    INT_FIELDS = ("seed", "steps")


class DecayState(NamedTuple):
    x: Any
    t: Any


class Decay(protocol.Experiment):
    name = "decay"
    Config = DecayConfig

    def init(self, static, hp):
        dim, _ = static
        return DecayState(x=jax.random.normal(jax.random.PRNGKey(hp.seed), (dim,)), t=jnp.int32(0))

    def run_chunk(self, static, hp, state):
        _, log_every = static

        def body(st, _):
            active = st.t < hp.steps
            x = jnp.where(active, (1 - hp.lr) * st.x, st.x)
            return DecayState(x=x, t=st.t + active.astype(jnp.int32)), None

        t0 = state.t
        state, _ = jax.lax.scan(body, state, None, length=log_every)
        return state, {
            "step": state.t,
            "logged": t0 < hp.steps,
            "bad_step": jnp.int32(-1),
            "finite": jnp.all(jnp.isfinite(state.x)),
            "norm2": jnp.sum(state.x * state.x),
        }

    def final_arrays(self, state):
        return {"x": state.x}


@pytest.fixture(scope="module")
def decay():
    exp = protocol.register(Decay())
    yield exp
    protocol._REGISTRY.pop("decay")


@pytest.mark.numerics
def test_a_new_experiment_runs_through_the_engine(decay, tmp_path):
    sweep = loads('[base]\nexperiment = "decay"\n[grid]\nlr = [0.1, 0.5]\nseed = [0, 1, 2]\n')
    summary = runner.run(sweep, str(tmp_path / "out"), progress=False, log=lambda *_: None)
    assert len(summary.done) == 6 and not summary.failed
    for cfg in sweep.configs():
        x0 = np.asarray(decay.init(cfg.static(), cfg.hparams()).x)
        with np.load(tmp_path / "out" / "final" / (cfg.config_id + ".npz")) as z:
            np.testing.assert_allclose(z["x"], x0 * (1 - cfg.lr) ** 20, rtol=1e-5)
        info = json.loads((tmp_path / "out" / "final" / (cfg.config_id + ".json")).read_text())
        assert info["experiment"] == "decay" and info["lr"] == cfg.lr
    rows = [json.loads(r) for r in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6 * 2 and {r["step"] for r in rows} == {10, 20}


def test_unknown_experiment_and_foreign_field_refused(decay):
    with pytest.raises(ConfigError, match="'experiment' = 'decoy'.*decay"):
        loads('[base]\nexperiment = "decoy"\n')
    with pytest.raises(ConfigError, match="'eta'.*'decay'"):
        loads('[base]\nexperiment = "decay"\neta = 1.0\n')
