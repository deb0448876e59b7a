"""The geometry experiment (SPEC §9): sampling, the batch loss against numpy, the optimizer
step against autodiff of a plain composition, the observables against numpy, padding rows,
and a tiny sweep end to end (run directory contract, report, a grid over experiments)."""

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcl
from jaxcl.engine.cli import main
from jaxcl.errors import ConfigError
from jaxcl.experiments.geometry import observables, train
from jaxcl.experiments.geometry.config import Config
from jaxcl.experiments.geometry.optimal import simplex_etf

TINY = dict(
    n_major_classes=2,
    n_minor_classes=2,
    samples_major=5,
    ratio=0.4,
    p=4,
    batch=16,
    negatives=3,
    steps=20,
    log_every=10,
)


def _setup(**kw):
    c = Config(**{**TINY, **kw})
    return c, c.static(), c.hparams()


@pytest.mark.slow
def test_sampling_respects_classes_and_padding():
    """Anchors and negatives are valid rows, uniform over the N samples; a positive shares
    its anchor's class and differs from it (itself only for a one-sample class)."""
    c, st, hp = _setup(batch=4096, negatives=4)
    a, pos, neg = jax.jit(functools.partial(train.sample, st))(hp, jax.random.PRNGKey(3))
    a, pos, neg = map(np.asarray, (a, pos, neg))
    S = c.samples_major
    valid = [r for cl, n in enumerate(c.class_sizes) for r in range(cl * S, cl * S + n)]
    assert c.class_sizes == [5, 5, 2, 2] and c.n_samples == 14
    for rows in (a, pos, neg.ravel()):
        assert set(rows.tolist()) <= set(valid)
    assert np.all(pos // S == a // S) and np.all(pos != a)
    # uniform over the 14 samples: chi-square with 13 dof, far below its 0.1% point (34.5)
    counts = np.array([np.sum(neg == r) for r in valid])
    expected = neg.size / len(valid)
    assert ((counts - expected) ** 2 / expected).sum() < 34.5
    _, st1, hp1 = _setup(ratio=0.2)  # minority classes of one sample: the positive is itself
    a1, pos1, _ = train.sample(st1, hp1, jax.random.PRNGKey(0))
    minor = np.asarray(a1) // S >= 2
    assert minor.any() and np.all(np.asarray(pos1)[minor] == np.asarray(a1)[minor])


def _numpy_loss(u, rows, tau, loss="infonce"):
    z = u / np.linalg.norm(u, axis=1, keepdims=True)
    a, pos, neg = (np.asarray(r) for r in rows)
    out = []
    for b in range(len(a)):
        sp = z[a[b]] @ z[pos[b]]
        sn = [z[a[b]] @ z[j] for j in neg[b]]
        if loss == "infonce":
            out.append(
                -sp / tau + math.log(math.exp(sp / tau) + sum(math.exp(x / tau) for x in sn))
            )
        else:  # decoupled
            out.append(-sp / tau + math.log(sum(math.exp(x / tau) for x in sn)))
    return np.mean(out)


@pytest.mark.parametrize("loss", ["infonce", "decoupled"])
@pytest.mark.numerics
@pytest.mark.slow
def test_batch_loss_matches_numpy(loss):
    c, st, hp = _setup(loss=loss)
    state = train.init(st, hp)
    rows = train.sample(st, hp, jax.random.PRNGKey(1))
    got = float(train.batch_loss(st, hp, state.u, rows))
    np.testing.assert_allclose(
        got, _numpy_loss(np.asarray(state.u, np.float64), rows, c.tau, loss), rtol=1e-5
    )


@pytest.mark.numerics
@pytest.mark.slow
def test_sgd_step_is_gradient_descent_on_the_public_loss():
    """One SGD step moves u by −lr_t ∇ of jaxcl.contrastive_loss on the sampled similarities
    (autodiff of a plain composition), with lr_t the cosine schedule at t = 0 (= lr)."""
    c, st, hp = _setup(optimizer="sgd", loss="balanced", loss_alpha=0.8, loss_beta=1.3)
    s0 = train.init(st, hp)
    rows = train.sample(st, hp, jax.random.fold_in(jax.random.fold_in(s0.key, train._DATA), 0))

    def plain(u):
        z = u / jnp.linalg.norm(u, axis=1, keepdims=True)
        a, pos, neg = rows
        s_pos = jnp.sum(z[a] * z[pos], axis=1)
        s_neg = jnp.einsum("bp,bkp->bk", z[a], z[neg])
        return jaxcl.contrastive_loss(s_pos, s_neg, c.tau, loss="balanced", alpha=0.8, beta=1.3)

    s1, loss = train.step(st, hp, s0)
    np.testing.assert_allclose(loss, plain(s0.u), rtol=1e-5)
    np.testing.assert_allclose(s1.u, s0.u - c.lr * jax.grad(plain)(s0.u), rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_padding_rows_never_move():
    c, st, hp = _setup(optimizer="adam", steps=40)
    s0 = train.init(st, hp)
    s, _ = jax.jit(functools.partial(train.run_chunk, st))(hp, s0)
    moved = np.any(np.asarray(s.u) != np.asarray(s0.u), axis=1)
    _, valid = observables.layout(st, hp)
    assert np.all(moved == np.asarray(valid))  # every sample moved, no padding row did


@pytest.mark.numerics
@pytest.mark.slow
def test_observables_match_numpy():
    """G, class-mean norms, NC1 (numpy's pinv) and the minority cosine, on random u."""
    c, st, hp = _setup()
    u = np.asarray(jax.random.normal(jax.random.PRNGKey(5), (st.n_rows, st.p)), np.float64)
    got = jax.jit(functools.partial(observables.summary, st))(hp, jnp.asarray(u, jnp.float32))
    z = u / np.linalg.norm(u, axis=1, keepdims=True)
    S = c.samples_major
    labels = np.repeat(np.arange(4), c.class_sizes)
    zz = np.concatenate([z[cl * S : cl * S + n] for cl, n in enumerate(c.class_sizes)])
    means = np.stack([zz[labels == k].mean(0) for k in range(4)])
    unit = means / np.linalg.norm(means, axis=1, keepdims=True)
    G = unit @ unit.T
    resid = zz - means[labels]
    sw = resid.T @ resid / len(zz)
    cen = means - means.mean(0)
    sb = cen.T @ cen / 4
    nc1 = np.trace(sw @ np.linalg.pinv(sb)) / 4
    np.testing.assert_allclose(got["G"], G, atol=1e-5)
    np.testing.assert_allclose(got["class_norms"], np.linalg.norm(means, axis=1), rtol=1e-5)
    np.testing.assert_allclose(got["nc1"], nc1, rtol=1e-3)
    np.testing.assert_allclose(got["minority_cos"], G[2, 3], atol=1e-5)
    np.testing.assert_allclose(got["G_max_dev"], np.abs(G - np.asarray(hp.G_opt)).max(), atol=1e-5)


@pytest.mark.numerics
@pytest.mark.slow
def test_jacobi_eigh_matches_numpy():
    rng = np.random.default_rng(0)
    for n in (2, 5, 8):
        x = rng.normal(size=(n, n - 1))  # rank-deficient PSD, like Σ_B
        a = x @ x.T
        lam, v = observables.jacobi_eigh(jnp.asarray(a, jnp.float32))
        np.testing.assert_allclose(np.sort(np.asarray(lam)), np.linalg.eigvalsh(a), atol=1e-4)
        np.testing.assert_allclose(
            np.asarray(v) @ np.diag(np.asarray(lam)) @ np.asarray(v).T, a, atol=1e-4
        )


def test_config_derived_values_and_bad_input():
    c = Config(n_major_classes=2, n_minor_classes=2, samples_major=200, ratio=0.01)
    assert c.class_sizes == [200, 200, 2, 2] and abs(sum(c.pi) - 1) < 1e-12
    assert Config(ratio=0.001).samples_minor == 1  # max(1, round(ratio * samples_major))
    for kw, field in (
        (dict(negatives=0), "'negatives'"),
        (dict(p=0), "'p'"),
        (dict(tau=0.0), "'tau'"),
        (dict(loss="hinge"), "'loss'"),
        (dict(n_major_classes=1, n_minor_classes=0), "'n_minor_classes'"),
        (dict(optimizer="rmsprop"), "'optimizer'"),
        (dict(experiment="liao"), "'experiment'"),
    ):
        with pytest.raises(ConfigError, match=field):
            Config(**kw)
    with pytest.raises(ConfigError, match="'d'.*'geometry'"):
        Config.from_dict({"experiment": "geometry", "d": 9})


SWEEP = """
[base]
steps = 40
log_every = 20

[[grid]]
experiment = ["liao"]
d = [5]
m = [6]
L = [3]
K = [8]
ratio = [0.5]

[[grid]]
experiment = ["geometry"]
samples_major = [5]
p = [4]
batch = [16]
negatives = [3]
ratio = [1.0, 0.4]
seed = [0, 1]
"""


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("geo")
    (root / "s.toml").write_text(SWEEP)
    assert main(["run", str(root / "s.toml"), "--out", str(root / "out"), "--no-progress"]) == 0
    assert main(["report", str(root / "out")]) == 0
    return root / "out"


@pytest.mark.numerics
@pytest.mark.slow
def test_mixed_sweep_writes_each_experiments_finals(mixed_run):
    """A grid over experiments: liao and geometry configs in one run directory, each with its
    own final arrays (SPEC §7, §9) and observables."""
    infos = [json.loads(p.read_text()) for p in (mixed_run / "final").glob("*.json")]
    assert sorted(i["experiment"] for i in infos) == ["geometry"] * 4 + ["liao"]
    for info in infos:
        with np.load(mixed_run / "final" / (info["config_id"] + ".npz")) as z:
            if info["experiment"] == "liao":
                assert set(z.files) == {"w0", "w", "b", "M", "eps"}
                continue
            n = info["n_samples"]
            assert z["Z"].shape == (n, 4) and z["labels"].shape == (n,)
            np.testing.assert_allclose(np.linalg.norm(z["Z"], axis=1), 1, rtol=1e-5)
            assert z["G"].shape == (4, 4) and z["G_opt"].shape == (4, 4)
            np.testing.assert_array_equal(np.bincount(z["labels"]), info["class_sizes"])
            o = info["observables"]
            for key in ("G_max_dev", "minority_cos", "nc1", "mean_norm_major", "mean_norm_minor"):
                assert isinstance(o[key], float), key
            np.testing.assert_allclose(o["G"], z["G"], atol=1e-4)  # jit vs numpy
            np.testing.assert_allclose(o["G_max_dev"], np.abs(z["G"] - z["G_opt"]).max(), atol=1e-4)
            if info["ratio"] == 1.0:
                np.testing.assert_allclose(z["G_opt"], simplex_etf(4), atol=1e-4)
    rows = [json.loads(x) for x in (mixed_run / "results.jsonl").read_text().splitlines()]
    geo = [r for r in rows if r["experiment"] == "geometry"]
    assert len(geo) == 4 * 2 and all("nc1" in r and "loss" in r for r in geo)


@pytest.mark.slow
def test_report_has_geometry_sections(mixed_run):
    text = (mixed_run / "report.md").read_text()
    for words in (
        "# Geometry",
        "collapse threshold",
        "Trained against predicted",
        "In plain words",
        "# Liao",
    ):
        assert words in text
    for png in ("minority_cos.png", "gram.png", "nc1.png", "figure1.png"):
        assert (mixed_run / png).stat().st_size > 5_000, png


@pytest.mark.numerics
@pytest.mark.slow
def test_balanced_classes_reach_the_simplex_etf():
    """Balanced classes, p ≥ C: trained class means reach G* = ETF (max|G − G*| ≤ 0.02)."""
    for C in (2, 3):
        c, st, hp = _setup(
            n_major_classes=C,
            n_minor_classes=0,
            samples_major=20,
            p=4,
            batch=64,
            negatives=4,
            steps=1500,
            log_every=1500,
            lr=0.1,
        )
        np.testing.assert_allclose(np.asarray(hp.G_opt), simplex_etf(C), atol=1e-4)
        s, m = jax.jit(functools.partial(train.run_chunk, st))(hp, train.init(st, hp))
        assert float(m["G_max_dev"]) <= 0.02, (C, float(m["G_max_dev"]))
        assert float(m["nc1"]) < 0.05


@pytest.mark.slow
def test_diverging_geometry_config_fails_alone(tmp_path):
    """NaN isolation for this experiment too: τ = 1e-38 overflows s/τ at the first step; that
    config is marked failed with its step, the other finishes, the exit code is 1."""
    (tmp_path / "s.toml").write_text(
        '[base]\nexperiment = "geometry"\nsamples_major = 5\np = 4\nbatch = 16\nnegatives = 3\n'
        "steps = 20\nlog_every = 10\n[grid]\ntau = [0.5, 1e-38]\n"
    )
    assert (
        main(["run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    )
    states = json.loads((tmp_path / "o" / "manifest.json").read_text())["configs"]
    failed = [v for v in states.values() if v["state"] == "failed"]
    assert len(failed) == 1 and sum(v["state"] == "done" for v in states.values()) == 1
    assert failed[0]["reason"] == "non-finite loss at step 0"
