"""jaxcl.run and jaxcl.open (jaxcl/api.py) against the run directory's files, read here with json
and numpy alone: dict, TOML string and TOML file sweeps, rows, finals, arrays, status, report,
the lock, and an interrupted run resumed by calling jaxcl.run again."""

import glob
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import tomllib

import numpy as np
import pytest

import jaxcl
from jaxcl.api import load_sweep, sweep_toml
from jaxcl.engine import sweep as sweep_mod
from jaxcl.engine.cli import main
from jaxcl.engine.rundir import RunDirBusy

SWEEP = {
    "base": {"d": 5, "m": 6, "L": 3, "K": 8, "steps": 40, "log_every": 10},
    "grid": {"ratio": [0.5, 1.0], "seed": [0, 1]},
}
TOML = """
[base]
d = 5
m = 6
L = 3
K = 8
steps = 40
log_every = 10

[grid]
ratio = [0.5, 1.0]
seed = [0, 1]
"""


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    return jaxcl.run(SWEEP, tmp_path_factory.mktemp("api") / "run", progress=False)


def _ids(sw) -> list[str]:
    return [c.config_id for c in sw.configs()]


def _jsonl(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def _same(value, expected) -> bool:
    """A table cell against its json value (pandas holds a json null as None or NaN)."""
    if expected is None:
        return value is None or (isinstance(value, float) and math.isnan(value))
    return value == expected


def test_dict_toml_string_and_file_give_the_same_sweep(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(TOML)
    ref = sweep_mod.loads(TOML)
    for given in (SWEEP, TOML, str(path), path):
        sw = load_sweep(given)
        assert _ids(sw) == _ids(ref) and sw.fingerprint() == ref.fingerprint(), given
    # overrides: a dict or the CLI's field=value strings
    a = load_sweep(SWEEP, {"eta": 0.5, "dictionary": "identity"})
    b = load_sweep(str(path), ["eta=0.5", 'dictionary="identity"'])
    assert _ids(a) == _ids(b) and a.fingerprint() == b.fingerprint()
    assert all(c.eta == 0.5 for c in a.configs())
    # [[grid]] and bundles (inline tables)
    grids = {
        "base": {"d": 5, "m": 6},
        "sweep": {"max_parallel": 2},
        "grid": [
            {"seed": [0, 1]},
            {"loss": [{"loss": "infonce"}, {"loss": "balanced", "loss_beta": 0.5}], "seed": [2]},
        ],
    }
    text = """[base]\nd = 5\nm = 6\n[sweep]\nmax_parallel = 2\n[[grid]]\nseed = [0, 1]
[[grid]]\nloss = [{loss = "infonce"}, {loss = "balanced", loss_beta = 0.5}]\nseed = [2]\n"""
    assert _ids(load_sweep(grids)) == _ids(sweep_mod.loads(text))
    assert load_sweep(grids).options == {"max_parallel": 2}


def test_sweep_toml_round_trips_awkward_values():
    doc = {
        "base": {
            "name": 'a "quoted"\\ line\n\ttab é \x7f \x01',
            "x": 1e-05,
            "y": -0.0,
            "big": 1e300,
            "inf": math.inf,
            "flag": False,
            "n": np.int64(3),
            "f": np.float32(0.5),
            "arr": np.arange(3),
            "t": (1, 2),
            "key with space": 1,
        },
        "grid": {"g": [{"a": 1, "b": [1.5, "s"]}]},
    }
    back = tomllib.loads(sweep_toml(doc))
    assert back["base"] == {
        "name": 'a "quoted"\\ line\n\ttab é \x7f \x01',
        "x": 1e-05,
        "y": -0.0,
        "big": 1e300,
        "inf": math.inf,
        "flag": False,
        "n": 3,
        "f": 0.5,
        "arr": [0, 1, 2],
        "t": [1, 2],
        "key with space": 1,
    }
    assert back["grid"] == doc["grid"]
    assert math.isnan(tomllib.loads(sweep_toml({"base": {"v": math.nan}}))["base"]["v"])


def test_dict_sweeps_keep_their_fingerprints_and_ids():
    """A dict sweep written as TOML (by tomli_w) parses to the sweep of the same file: the
    fingerprints of the test's dicts are the literal ones they had when hand-written."""
    grids = {
        "base": {"d": 5, "m": 6},
        "sweep": {"max_parallel": 2},
        "grid": [
            {"seed": [0, 1]},
            {"loss": [{"loss": "infonce"}, {"loss": "balanced", "loss_beta": 0.5}], "seed": [2]},
        ],
    }
    assert load_sweep(SWEEP).fingerprint_hash() == "461453088a33e66f"
    assert load_sweep(grids).fingerprint_hash() == "ae6abe0bdb96f545"
    assert load_sweep(SWEEP, {"eta": 0.5, "dictionary": "identity"}).fingerprint_hash() == (
        "938f519d70cb3b91"
    )
    assert _ids(load_sweep(SWEEP)) == _ids(sweep_mod.loads(TOML))
    assert tomllib.loads(sweep_toml(grids)) == grids


def test_bad_input_is_refused_naming_it(tmp_path):
    with pytest.raises(jaxcl.ConfigError, match=r"\[base\] d = None"):
        load_sweep({"base": {"d": None}, "grid": {"seed": [0]}})
    with pytest.raises(jaxcl.ConfigError, match="'d'.*2"):
        load_sweep({"base": {"d": 2}, "grid": {"seed": [0]}})
    with pytest.raises(jaxcl.ConfigError, match="unknown top-level entry 'gird'"):
        load_sweep({"gird": {"seed": [0]}})
    with pytest.raises(jaxcl.ConfigError, match="nope.toml"):
        load_sweep("nope.toml")
    with pytest.raises(TypeError, match="'max_paralel'"):
        jaxcl.run(SWEEP, tmp_path / "r", max_paralel=2)
    with pytest.raises(jaxcl.ConfigError, match="--max-parallel = 0"):
        jaxcl.run(SWEEP, tmp_path / "r", max_parallel=0)
    with pytest.raises(jaxcl.ConfigError, match="--chunk-seconds = 'ten'"):
        jaxcl.run(SWEEP, tmp_path / "r", chunk_seconds="ten")
    with pytest.raises(jaxcl.ConfigError, match="--shard = '3/2'"):
        jaxcl.run(SWEEP, tmp_path / "r", shard="3/2")
    with pytest.raises(jaxcl.ConfigError, match="--batching = 'fast'"):
        jaxcl.run(SWEEP, tmp_path / "r", batching="fast")
    with pytest.raises(jaxcl.ConfigError, match="option lock = 'no'"):
        jaxcl.run(SWEEP, tmp_path / "r", lock="no")
    with pytest.raises(jaxcl.ConfigError, match=r"\[sweep\] option 'keep_checkpoints' = 0"):
        jaxcl.run({**SWEEP, "sweep": {"keep_checkpoints": 0}}, tmp_path / "r")
    assert not (tmp_path / "r").exists()  # refused before anything was written
    with pytest.raises(jaxcl.ConfigError, match="no manifest.json"):
        jaxcl.open(tmp_path)


@pytest.mark.slow
def test_run_writes_the_run_directory_of_the_toml(done, tmp_path, capsys):
    with open(os.path.join(done.path, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["config_ids"] == _ids(sweep_mod.loads(TOML)) == done.config_ids
    assert sorted(done.summary.done) == sorted(manifest["config_ids"])
    assert tomllib.loads(open(os.path.join(done.path, "sweep.toml")).read()) == SWEEP
    # the CLI takes the directory as its own sweep's (same fingerprint): all already done
    (tmp_path / "s.toml").write_text(TOML)
    assert main(["run", str(tmp_path / "s.toml"), "--out", done.path, "--no-progress"]) == 0
    assert "4 already done" in capsys.readouterr().out


@pytest.mark.slow
def test_rows_are_results_jsonl(done):
    rows = _jsonl(os.path.join(done.path, "results.jsonl"))
    df = done.rows()
    assert len(df) == len(rows) == 4 * 4
    for rec, row in zip(df.to_dict("records"), rows):
        assert set(rec) >= set(row)
        assert all(_same(rec[k], v) for k, v in row.items()), row["config_id"]
    fields = set(sweep_mod.loads(TOML).configs()[0].resolved()) - {"loss"}  # liao's row "loss"
    assert fields <= set(df.columns)  # is L_aug (docs/run-directory.md), the metric


@pytest.mark.slow
def test_rows_of_a_running_run_come_from_the_rows_files(done, tmp_path):
    live = tmp_path / "live"
    shutil.copytree(done.path, live)  # copy2 keeps mtimes: results.jsonl is the newest
    cid = done.config_ids[1]
    extra = {**_jsonl(live / "rows" / f"{cid}.jsonl")[-1], "step": 50}
    with open(live / "rows" / f"{cid}.jsonl", "a") as f:  # a chunk logged after the merge
        f.write(json.dumps(extra) + "\n")
    df = jaxcl.open(live).rows()
    expected = [r for c in done.config_ids for r in _jsonl(live / "rows" / f"{c}.jsonl")]
    assert len(df) == len(expected) == 17
    assert df["step"].tolist() == [r["step"] for r in expected]
    assert df["config_id"].tolist() == [r["config_id"] for r in expected]
    shutil.rmtree(live / "rows")  # a directory without rows/: results.jsonl alone
    assert len(jaxcl.open(live).rows()) == 16


@pytest.mark.slow
def test_finals_are_the_json_files(done):
    df = done.finals()
    paths = sorted(glob.glob(os.path.join(done.path, "final", "*.json")))
    assert len(paths) == len(df) == 4
    assert list(df.index) == done.config_ids and df.index.name == "config_id"
    for path in paths:
        with open(path) as f:
            info = json.load(f)
        row = df.loc[info["config_id"]]
        obs = info.pop("observables")
        for k, v in info.items():
            if k != "config_id":
                assert _same(row[k], v), k
        for k, v in obs.items():
            col = f"observables.{k}" if k in info else k
            assert _same(row[col], v) if not isinstance(v, list) else list(row[col]) == v, k
        assert "observables.T1" in df.columns and "lucky_counts" in df.columns


@pytest.mark.slow
def test_arrays_are_the_npz(done):
    for cid in done.config_ids:
        with np.load(os.path.join(done.path, "final", cid + ".npz")) as z:
            want = {k: z[k] for k in z.files}
        got = done.arrays(cid)
        assert sorted(got) == sorted(want) == ["M", "b", "eps", "w", "w0"]
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    with pytest.raises(KeyError, match="not a config of this sweep"):
        done.arrays("nope")


@pytest.mark.slow
def test_status_is_jaxcl_status_json(done, capsys):
    st = done.status()
    assert main(["status", done.path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(st))
    states = [
        json.load(open(p))["state"] for p in glob.glob(os.path.join(done.path, "status", "*.json"))
    ]
    assert st["total"]["done"] == states.count("done") == 4
    assert st["total"]["steps_done"] == st["total"]["steps_total"] == 4 * 40


@pytest.mark.slow
def test_report_writes_report_md_and_json(done, tmp_path):
    path = done.report(out=tmp_path / "rep")
    assert path == str(tmp_path / "rep" / "report.md") and os.path.getsize(path) > 0
    with open(tmp_path / "rep" / "report.json") as f:
        rep = json.load(f)
    with open(os.path.join(done.path, "manifest.json")) as f:
        assert rep["fingerprint_hash"] == json.load(f)["fingerprint_hash"]
    assert "## Stage times and liveness" in open(path).read()


@pytest.mark.slow
def test_open_reads_a_held_directory_and_run_refuses_it(done):
    # a stand-in for a `jaxcl run` in progress: another process holding the lock
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
            "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('held', flush=True); "
            "sys.stdin.read()",
            os.path.join(done.path, ".jaxcl.lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        r = jaxcl.open(done.path)
        assert r.status()["active"] is True
        assert len(r.rows()) == 16 and len(r.finals()) == 4
        with pytest.raises(RunDirBusy, match="in use by another jaxcl run"):
            jaxcl.run(SWEEP, done.path, progress=False)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert jaxcl.open(done.path).status()["active"] is False


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signal handlers need the main thread",
)
@pytest.mark.slow
def test_interrupt_leaves_a_partial_run_that_a_second_call_resumes(done, tmp_path, monkeypatch):
    from jaxcl.engine.progress import Progress

    update = Progress.update
    sent = []

    def update_then_stop(self, n):  # the notebook's stop button after the first chunk
        update(self, n)
        if n and not sent:
            sent.append(n)
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(Progress, "update", update_then_stop)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt, match="call jaxcl.run again"):
        jaxcl.run(SWEEP, out, progress=False)
    monkeypatch.setattr(Progress, "update", update)
    partial = jaxcl.open(out)
    st = partial.status()
    assert st["total"]["interrupted"] == 4 and st["total"]["done"] == 0
    assert len(partial.finals()) == 0
    assert partial.rows()["step"].max() == 10  # the chunk before the stop, as results.jsonl
    assert glob.glob(str(out / "checkpoints" / "*" / "*"))
    again = jaxcl.run(SWEEP, out, progress=False)
    assert again.summary.resumed == [{"configs": 4, "step": 10}]
    for cid in done.config_ids:  # the same bits as the uninterrupted run (same process)
        for k, v in done.arrays(cid).items():
            np.testing.assert_array_equal(again.arrays(cid)[k], v)
    drop = ["time"]
    assert again.rows().drop(columns=drop).to_dict("records") == done.rows().drop(
        columns=drop
    ).to_dict("records")


def test_public_surface_is_what_users_meet():
    """The errors jaxcl.run raises, the registry and each experiment's public pieces are
    importable from jaxcl, and the top-level Config/encode/info_nce stay liao's."""
    from jaxcl.engine import lock, protocol, signals
    from jaxcl.experiments.geometry import optimal
    from jaxcl.experiments.liao import config, loss, model

    assert jaxcl.RunDirBusy is lock.RunDirBusy and jaxcl.Interrupted is signals.Interrupted
    assert issubclass(jaxcl.DiskFullError, OSError) and issubclass(jaxcl.ConfigError, ValueError)
    assert jaxcl.experiment_names() == ["geometry", "liao"] == protocol.names()
    liao = jaxcl.experiment("liao")
    assert liao is protocol.get("liao") and liao.Config is config.Config
    assert jaxcl.experiment("geometry").Config is jaxcl.geometry.Config
    with pytest.raises(jaxcl.ConfigError, match="'nope'.*geometry, liao"):
        jaxcl.experiment("nope")
    assert (jaxcl.liao.Config, jaxcl.liao.encode, jaxcl.liao.info_nce) == (
        config.Config,
        model.encode,
        loss.info_nce,
    )
    assert (jaxcl.Config, jaxcl.encode, jaxcl.info_nce) == (
        jaxcl.liao.Config,
        jaxcl.liao.encode,
        jaxcl.liao.info_nce,
    )
    assert jaxcl.geometry.optimal_gram is optimal.optimal_gram
    for name in jaxcl.__all__:
        assert getattr(jaxcl, name) is not None, name
