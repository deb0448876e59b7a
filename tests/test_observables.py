"""Observables (SPEC §5) against an independent numpy computation from a run's saved arrays."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference
from jaxcl.experiments.liao import observables, train
from jaxcl.engine.cli import main
from jaxcl.experiments.liao.config import Config

pytestmark = pytest.mark.numerics  # every test here compares numbers with a reference

SWEEP = """
[base]
d = 7
m = 40
L = 3
K = 32
steps = 60
log_every = 20
probe_samples = 256

[grid]
ratio = [0.5, 1.0]
seed = [0, 1]
prune_fraction = [0.0, 0.2]
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("obs")
    (root / "s.toml").write_text(SWEEP)
    assert main(["run", str(root / "s.toml"), "--out", str(root / "out"), "--no-progress"]) == 0
    return root / "out"


def _finals(run_dir):
    for path in sorted((run_dir / "final").glob("*.json")):
        info = json.loads(path.read_text())
        with np.load(path.with_suffix(".npz")) as z:
            yield info, {k: np.asarray(z[k], np.float64) for k in z.files}


@pytest.mark.slow
def test_sets_match_numpy(run_dir):
    n_lucky = 0
    for info, z in _finals(run_dir):
        obs = info["observables"]
        ref = reference.sets(z["w0"], z["w"], z["b"], z["M"], z["eps"], info["gamma_c0"])
        d, m = info["d"], info["m"]
        assert obs["ordinary_counts"] == [len(s) for s in ref["M"]]
        assert obs["lucky_counts"] == [len(s) for s in ref["Mstar"]]
        assert obs["N0_sizes"] == [len(s) for s in ref["N0"]]
        assert obs["N_sizes"] == [len(s) for s in ref["N"]]
        assert obs["F_sizes"] == [len(s) for s in ref["F"]]
        assert obs["pure_counts"] == [sum(n == {j} for n in ref["N"]) for j in range(d)]
        lucky = [(i, j) for j in range(d) for i in ref["Mstar"][j]]
        n_lucky += len(lucky)
        kept = [ref["N"][i] == {j} for i, j in lucky]
        if lucky:
            assert obs["lucky_kept_frac"] == pytest.approx(np.mean(kept), abs=1e-6)
        else:
            assert obs["lucky_kept_frac"] is None
        sub = np.mean([ref["N"][i] <= ref["N0"][i] for i in range(m)])
        jac = np.mean(
            [len(a & b) / len(a | b) if a | b else 1.0 for a, b in zip(ref["N0"], ref["N"])]
        )
        assert obs["N_subset_frac"] == pytest.approx(sub, abs=1e-6)
        assert obs["N_jaccard_mean"] == pytest.approx(jac, abs=1e-6)
        c2 = (z["w"] @ z["M"]) ** 2 / (z["w"] ** 2).sum(1, keepdims=True)
        major = np.arange(d) < info["n_major"]
        assert obs["purity"] == pytest.approx(c2.max(1).mean(), rel=1e-4)
        assert obs["cov_major"] == pytest.approx(c2.max(0)[major].mean(), rel=1e-4)
        assert obs["cov_minor"] == pytest.approx(c2.max(0)[~major].mean(), rel=1e-4)
        kept = np.ones(m, bool)
        kept[
            np.argsort((z["w"] ** 2).sum(1), kind="stable")[: round(info["prune_fraction"] * m)]
        ] = 0
        ck = np.where(kept[:, None], c2, 0.0)
        assert obs["cov_major_kept"] == pytest.approx(ck.max(0)[major].mean(), rel=1e-4)
        assert obs["cov_minor_kept"] == pytest.approx(ck.max(0)[~major].mean(), rel=1e-4)
        assert obs["purity_kept"] == pytest.approx(c2.max(1)[kept].mean(), rel=1e-4)
        noise = 1 - ((z["w"] @ z["M"]) ** 2).sum(1) / (z["w"] ** 2).sum(1)
        assert obs["noise_frac"] == pytest.approx(noise.mean(), rel=1e-3, abs=1e-6)
        assert info["T1"] == obs["T1"] and info["T2"] == obs["T2"]
    assert n_lucky > 0  # ratio 1 at d = 7 has lucky neurons: eq. 17 was exercised


@pytest.mark.slow
def test_chunk_metrics_agree_with_final(run_dir):
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    for info, _ in _finals(run_dir):
        last = [r for r in rows if r["config_id"] == info["config_id"]][-1]
        obs = info["observables"]
        assert last["N_mean"] == pytest.approx(np.mean(obs["N_sizes"]), abs=1e-5)
        assert last["pure_neurons"] == sum(obs["pure_counts"])
        assert last["N_max"] == max(obs["N_sizes"])  # per-neuron claims read the max
        assert last["pure_min"] == min(obs["pure_counts"])  # "for each j": the min over atoms
        assert last["lucky_pure"] == pytest.approx(
            (obs["lucky_kept_frac"] or 0) * obs["lucky_total"], abs=1e-3
        )


@pytest.mark.slow
def test_probe_matches_numpy(run_dir):
    info, z = next(iter(_finals(run_dir)))
    cfg = Config(**{k: info[k] for k in ("d", "m", "L", "K", "probe_samples", "ratio", "seed")})
    static, hp = cfg.static(), cfg.hparams()
    state = train.init(static, hp)._replace(
        w=jnp.asarray(z["w"], jnp.float32), b=jnp.asarray(z["b"], jnp.float32)
    )
    x, y = map(np.asarray, jax.jit(observables.probe_batch, static_argnums=0)(static, hp, state))
    assert x.shape == (256, 3, 14) and y.shape == (256, 7)
    h = reference.softmax(np.einsum("nld,nrd->nlr", x, x) / np.sqrt(14)) @ x
    s = np.einsum("nld,md->nlm", h, z["w"])
    f = (np.maximum(s - z["b"], 0) - np.maximum(-s - z["b"], 0)).sum(1)  # eq. 3
    want = reference.probe(f[:128], y[:128], f[128:], y[128:], cfg.probe_ridge)
    got = np.array([np.nan if v is None else v for v in info["observables"]["probe_bacc"]])
    np.testing.assert_allclose(got, want, atol=0.02)  # float32 vs float64 near the cut
    assert np.isfinite(want).sum() >= 5
    obs = info["observables"]
    assert obs["probe_gap"] == pytest.approx(obs["probe_major"] - obs["probe_minor"], abs=1e-6)


def test_lucky_and_pure_by_hand():
    # d = 100: log d / d = 0.046; with r = 1, c1 ≈ c2 ≈ 2: threshold ≈ 0.092 · S
    a = np.zeros((3, 100))
    a[0, 3] = 1.0  # alone on 3: lucky and pure
    a[1, 3], a[1, 5] = 1.0, 1.0  # two large: ordinary for both, lucky for none
    a[2] = 0.1  # spread evenly: in no set
    a = jnp.asarray(a, jnp.float32)
    c1, c2 = observables.thresholds(1.0, 1.0, 5e-4)
    lucky = np.asarray(observables.lucky_mask(a, c1, c2))
    ordinary = np.asarray(observables.ordinary_mask(a, c2))
    assert lucky.sum() == 1 and lucky[0, 3]
    assert ordinary[1, 3] and ordinary[1, 5] and ordinary.sum() == 3
    pure = np.asarray(observables.pure_mask(jnp.asarray(ordinary)))
    assert pure.sum() == 1 and pure[0, 3]


@pytest.mark.parametrize("n,k", [(1, 1), (7, 3), (64, 9)])
def test_spd_solve_matches_numpy(n, k):
    """The LAPACK-free solver behind the probe, against numpy.linalg.solve in float64."""
    rng = np.random.default_rng(n)
    z = rng.standard_normal((2 * n, n))
    a, b = z.T @ z + 0.05 * np.eye(n), rng.standard_normal((n, k))
    got = np.asarray(
        jax.jit(observables.spd_solve)(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    )
    want = np.linalg.solve(a, b)
    assert np.max(np.abs(got - want)) < 1e-4 * np.max(np.abs(want))
