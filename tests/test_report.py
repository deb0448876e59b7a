"""`jaxcl report` on a tiny run directory: report.md with every section, and the PNG plots."""

import json

import pytest

from jaxcl.experiments.liao import initstats
from jaxcl.engine.cli import main

SWEEP = """
[base]
m = 40
L = 3
K = 32
steps = 60
log_every = 20
probe_samples = 256

[grid]
d = [5, 7]
ratio = [0.5, 1.0]
seed = [0, 1]
"""
# The pruning section is checked on made-up finals in test_report_pruning.py (a prune_fraction
# grid here would double the shape groups this fixture compiles).


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep")
    # d = 7 has the shapes (and the 8-config batch) of test_observables' run: its compiled
    # programs are reused in a full test session
    (root / "s.toml").write_text(SWEEP)
    out = root / "out"
    assert main(["run", str(root / "s.toml"), "--out", str(out), "--no-progress"]) == 0
    # the same init-stats shapes as test_theory (its compile is then shared)
    initstats.write(
        initstats.run([12, 24], 2.5, [0.75, 1.0], [0, 1, 2], log=lambda *_: None), str(out)
    )
    assert main(["report", str(out)]) == 0
    return out


@pytest.mark.slow
def test_report_sections_and_plots(report):
    text = (report / "report.md").read_text()
    for heading in (
        "## Theorem 3.3 and Lemma C.1, claim by claim",
        "## Stage times",
        "## Scaling exponents",
        "## Figures",
        "## Init-only counts",
    ):
        assert heading in text, heading
    assert text.index("claim by claim") < text.index("## Stage times")  # the report opens with it
    assert "\\|M_j*\\|" in text  # table cells escape their pipes
    for png in (
        "scaling.png",
        "report_figure1.png",
        "coverage.png",
        "N_hist.png",
        "init_scaling.png",
    ):
        assert (report / png).stat().st_size > 10_000, png
        assert f"]({png})" in text


def test_report_refuses_empty_dir(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "nothing to report" in capsys.readouterr().err


@pytest.mark.slow
def test_report_reads_several_init_stats_and_refuses_a_missing_one(report, tmp_path, capsys):
    """--init-stats takes several files (each gets its section; the claims read them all); a
    path that is not a file is refused, naming it, before anything is written."""
    import shutil

    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(report / "init_stats.json", other / "init_stats.json")
    out = tmp_path / "rep"
    assert (
        main(
            [
                "report",
                str(report),
                "--out",
                str(out),
                "--init-stats",
                str(report / "init_stats.json"),
                str(other / "init_stats.json"),
            ]
        )
        == 0
    )
    text = (out / "report.md").read_text()
    assert text.count("## Init-only counts") == 2 and (out / "init_scaling_2.png").exists()
    assert (
        main(
            [
                "report",
                str(report),
                "--out",
                str(tmp_path / "x"),
                "--init-stats",
                str(tmp_path / "nope.json"),
            ]
        )
        == 2
    )
    assert "nope.json" in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_init_stats_records_where_and_how_it_ran(tmp_path):
    """`jaxcl init-stats` writes its own provenance (command, machine, commit, seconds,
    environment) into init_stats.json, and the report names it (same shapes as the fixture)."""
    out = tmp_path / "init"
    assert (
        main(
            [
                "init-stats",
                "--out",
                str(out),
                "--d",
                "12",
                "24",
                "--C_m",
                "2.5",
                "--ratios",
                "0.75",
                "1.0",
                "--seeds",
                "3",
            ]
        )
        == 0
    )
    rec = json.loads((out / "init_stats.json").read_text())["invocation"]
    assert rec["seconds"] >= 0 and rec["commit"] and rec["environment"]["jax"]
    assert main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert f"Counted by `{rec['command']}` on {rec['host']}" in text and rec["commit"] in text
