"""benchmarks/gpu_run.py, the prepared GPU run: its dry run end to end on the CPU (so the script
cannot rot before a GPU is lent), the regime slice against the committed sweep, packing under
the size limit, a stage stopped at its budget; and the versions it records against the lock."""

import json
import os
import subprocess
import sys
import tarfile
import time

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import _gpu

from jaxcl.engine import devices, records, report
from jaxcl.engine.sweep import load, loads
from support import ROOT

# the dry run runs every stage as its own process (over a minute on 2 cores): not in the fast loop
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_run") / "out"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, _gpu.SCRIPT, "--out", str(out), "--dry-run"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT, "JAXCL_COMPILE_CACHE": "off"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    return out, proc, time.monotonic() - t0


def test_dry_run_runs_every_stage_and_writes_at_most_8_files(dry_run):
    out, proc, seconds = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(os.listdir(out))
    assert files == sorted(
        ["env.json", "smoke.xml", "bench.json", "precision.json", "science.tar.gz"]
        + ["summary.json", "gpu_run.log"]
    )
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["stages"]
    assert list(stages) == [
        "env",
        "smoke",
        "bench",
        "precision",
        "science-plan",
        "science-run",
        "science-pack",
    ]
    assert all(s["status"] == "ok" for s in stages.values()), stages
    assert stages["smoke"]["tests"]["tests"] == stages["smoke"]["tests"]["passed"] == 2
    assert summary["seconds"] <= seconds
    print(f"dry run: {seconds:.1f} s wall; stages {json.dumps(stages)}")


def test_dry_run_records_versions_precision_and_the_engine(dry_run):
    """env.json names this jax and the lock's verdict on it; the bench row's engine trained; on
    the CPU every precision computes the same float32 numbers, and the traced program carries
    the precision asked for."""
    out, _, _ = dry_run
    env = json.loads((out / "env.json").read_text())
    assert env["jax"] == jax.__version__ and env["versions"]["jax"] == jax.__version__
    assert env["jax_differs_from_lock"] == bool(records.lock_differences(("jax", "jaxlib")))
    assert env["matmul_precision"]["jaxcl"] == "highest"
    assert env["backend"] == "cpu" and env["environment"]["jax"] == jax.__version__
    bench = json.loads((out / "bench.json").read_text())
    ((row,),) = [bench["rows"]]
    assert row["d"] == 8 and row["configs"] == 4 and row["config_steps_per_s"]["engine"] > 0
    prec = json.loads((out / "precision.json").read_text())
    runs = prec["runs"]
    assert runs["highest"]["lowered_dot_precisions"] == ["HIGHEST"]
    assert runs["default"]["lowered_dot_precisions"] == ["DEFAULT"]
    for diff in runs["default"]["difference_from_reference"].values():
        assert diff["max_abs"] == 0.0  # the CPU ignores the precision: bitwise equal


def test_dry_run_science_archive_holds_the_run(dry_run, tmp_path):
    """science.tar.gz: the plan's choice, the slice's sweep, its rows, every config's final
    json and npz, and invocation records that carry jax's version."""
    out, _, _ = dry_run
    with tarfile.open(out / "science.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    run = tmp_path / "science"
    plan = json.loads((run / "science-plan.json").read_text())
    assert plan["chosen"]["d"] == 8 and plan["chosen"]["estimated_seconds"] > 0
    configs = load(str(run / "sweep.toml")).configs()
    assert len(configs) == plan["chosen"]["configs"] == 2 * plan["chosen"]["seeds"]
    for c in configs:
        assert (run / "final" / f"{c.config_id}.json").exists()
        assert (run / "final" / f"{c.config_id}.npz").exists()
    rows = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    assert {r["config_id"] for r in rows} == {c.config_id for c in configs}
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["invocations"][-1]["environment"]["jax"] == jax.__version__
    assert json.loads((run / "science.json").read_text())["npz_left_out"] == []


def test_regime_slice_is_the_committed_regime_sweep_at_its_d():
    """The slice's lam arm is lam <= 1/(4 d Xi_2) rounded down to two digits: at d = 32, 64 and
    128 the configs of sweeps/theorem33-regime.toml, config id for config id."""
    regime = load(os.path.join(ROOT, "sweeps", "theorem33-regime.toml")).configs()
    for d in (32, 64, 128):
        want = sorted(c.config_id for c in regime if c.d == d)
        assert sorted(c.config_id for c in loads(_gpu.regime_slice(d, 4)).configs()) == want
    lam_only = loads(_gpu.regime_slice(256, 1, control=False)).configs()
    assert [(c.d, c.seed, c.lam) for c in lam_only] == [(256, 0, 3.8e-6)]


def test_pack_leaves_out_npz_files_past_the_limit(tmp_path):
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"counts": {"done": 2}}))
    (run / "results.jsonl").write_text('{"step": 1}\n' * 1000)
    rng = np.random.default_rng(0)
    np.savez(run / "final" / "small.npz", w=rng.standard_normal(1000))
    np.savez(run / "final" / "big.npz", w=rng.standard_normal(2_000_000))  # 16 MB
    (run / "final" / "small.json").write_text("{}")
    path = tmp_path / "s.tar.gz"
    got = _gpu.pack_science(str(run), str(tmp_path), str(path), limit=8 << 20)
    assert got["npz_left_out"] == 1 and os.path.getsize(path) < 8 << 20
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
        note = json.load(tar.extractfile("science/science.json"))
    assert {"science/final/small.npz", "science/results.jsonl", "science/manifest.json"} <= names
    assert "science/final/big.npz" not in names
    assert note["npz_left_out"] == [
        {"file": "final/big.npz", "bytes": os.path.getsize(run / "final" / "big.npz")}
    ]


def test_a_stage_past_its_budget_is_stopped_and_said_so(tmp_path):
    log = tmp_path / "log"
    t0 = time.monotonic()
    got = _gpu._run_stage(
        [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
        1.0,
        str(log),
        lambda line: None,
        None,
    )
    assert time.monotonic() - t0 < 30
    assert got["status"] == "stopped at its budget of 1 s"
    assert "started" in log.read_text() and "stopped at its budget" in log.read_text()


def test_junit_summary_counts_and_names_what_did_not_pass(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<testsuites><testsuite><testcase classname="a" name="ok" time="1.5"/>'
        '<testcase classname="a" name="bad" time="0.5"><failure message="boom&#10;more"/>'
        "</testcase></testsuite></testsuites>"
    )
    assert _gpu.junit_summary(str(xml)) == {
        "tests": 2,
        "passed": 1,
        "not_passed": {"a::bad": "failure: boom"},
        "seconds": 2.0,
    }
    assert _gpu.junit_summary(str(tmp_path / "missing.xml")) is None


def test_versions_that_differ_from_the_lock_are_in_the_environment_and_report(tmp_path):
    """A lock that pins another jax: the environment lists it, and the report's provenance
    line says so; packages the lock pins as installed are not listed."""
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"# comment\njax==0.0.1\nnumpy=={np.__version__}\nnot-installed==1.0\n")
    assert records.lock_differences(path=str(lock)) == [
        f"jax {jax.__version__} (requirements.lock: 0.0.1)"
    ]
    assert records.lock_differences(None, path=str(lock)) == records.lock_differences(
        path=str(lock)
    )
    env = {**records.environment(), "lock_differences": records.lock_differences(path=str(lock))}
    lines = report.provenance({"invocations": [{"environment": env}]})
    assert f"not the lock's versions: jax {jax.__version__} (requirements.lock: 0.0.1)" in (
        "\n".join(lines)
    )


@pytest.mark.parametrize(
    "kind,name",
    [
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("cpu", None),
        ("TPU v5 lite", None),
    ],
)
def test_device_kinds_are_recognized_from_jax_device_kind(kind, name):
    got = devices.detect(kind)
    assert (got.name if got else None) == name


def test_what_the_gpu_run_imports_is_in_the_device_image():
    """Every third-party module that jaxcl, the GPU run and its smoke tests import (at any depth
    of their code) comes from a package the device image holds: nothing can be installed
    there. The one exception, _gpu.NOT_IN_IMAGE, is imported only inside a function, on a path
    the run does not take. The check itself tells a planted import apart."""
    import ast
    import glob
    import importlib.metadata as md

    owner = md.packages_distributions()
    image = {p.lower().replace("_", "-") for p in _gpu.IMAGE_PACKAGES}
    local = {"jaxcl", "_bench", "_gpu", "peers", "support", "reference", "test_loss"}
    local |= {"test_geometry", "test_train", "conftest"}
    local |= {"_gpu_env", "_gpu_stages", "_bench_tools", "_peers_torch"}

    lazy_ok = {p.lower().replace("_", "-") for p in _gpu.NOT_IN_IMAGE}

    def outside(text: str) -> set[str]:
        found = set()
        tree = ast.parse(text)
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - local - set(sys.stdlib_module_names):
                dists = {d.lower().replace("_", "-") for d in owner.get(top, [top])}
                lazy = id(node) not in top_level and dists & lazy_ok
                if not dists & image and not lazy:
                    found.add(top)
        return found

    assert outside("import tomli_w\nfrom jax import numpy\nimport json") == {"tomli_w"}
    assert outside("def f():\n    import tomli_w\n") == set()  # lazy, and allowed
    assert outside("def f():\n    import tomli\n") == {"tomli"}
    paths = [p for pat in _gpu.IMPORTED for p in glob.glob(os.path.join(ROOT, pat), recursive=True)]
    assert len(paths) > 60
    missing = {p: outside(open(p).read()) for p in paths}
    assert {os.path.relpath(p, ROOT): m for p, m in missing.items() if m} == {}
