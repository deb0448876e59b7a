"""The numbers README.md and docs/results.md quote from results/<study>/report.json are the
report's own: each quote is looked up in the committed report.json (not in a copy of the text)."""

import json
import pathlib
import re
from collections import Counter

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = {
    "README.md": (ROOT / "README.md").read_text(),
    "docs/results.md": (ROOT / "docs/results.md").read_text(),
}


def _report(study: str) -> dict:
    return json.loads((ROOT / "results" / study / "report.json").read_text())["results"]


def _fmt(x: float) -> str:
    return f"{x:.3g}".replace("-", "−")


def _loss_row(ratio: float, loss: str) -> dict:
    return next(
        r
        for r in _report("balanced-loss")["liao"]["losses"]
        if r["ratio"] == ratio and r["loss"] == loss
    )


def test_theorem33_tally_is_the_reports():
    counts = Counter(r["verdict"] for r in _report("theorem33-cpu")["liao"]["claims"])
    tally = (
        f"{counts['supports']} supported, {counts['contradicts']} contradicted, "
        f"{counts['cannot decide']} undecided"
    )
    for name, text in DOCS.items():
        quoted = re.findall(r"(\d+) supported, (\d+) contradicted, (\d+) undecided", text)
        assert quoted, f"{name} quotes no tally"
        for q in quoted:
            assert ", ".join(q) == ", ".join(re.findall(r"\d+", tally)), (name, q, tally)


@pytest.mark.parametrize(
    "ratio, loss, key",
    [
        (0.5, "balanced(α=1, β=2.5)", "cov_minor"),
        (0.5, "balanced(α=1, β=1.5)", "cov_minor"),
        (0.5, "infonce at η=2.5", "cov_minor"),
    ],
)
def test_balanced_loss_intervals_are_the_reports(ratio, loss, key):
    c = _loss_row(ratio, loss)[key]
    cell = f"{_fmt(c['mean'])} [{_fmt(c['lo'])}, {_fmt(c['hi'])}]"
    assert any(cell in t for t in DOCS.values()), cell


@pytest.mark.parametrize("beta", [1.5, 2.5])
def test_step_control_differences_are_the_reports(beta):
    c = _loss_row(0.5, f"balanced(α=1, β={beta:g})")["vs_step_control"]["cov_minor"]
    sign = "+" if c["mean"] > 0 else ""
    mean = f"{sign}{_fmt(c['mean'])}" if beta == 2.5 else _fmt(c["mean"])
    cell = f"{mean} [{_fmt(c['lo'])}, {_fmt(c['hi'])}]"
    assert any(cell in t for t in DOCS.values()), cell
