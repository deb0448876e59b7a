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


# ---- results/theorem33-findings.md: each number from the regime report or from theory

FINDINGS_TEXT = (ROOT / "results" / "theorem33-findings.md").read_text()
FINDINGS = " ".join(FINDINGS_TEXT.split())  # line breaks as spaces


def _regime_claim(claim: str, arm: str | None = "λ set") -> dict:
    rows = _report("theorem33-regime")["liao"]["claims"]
    return next(r for r in rows if r["claim"] == claim and r.get("lam_arm") == arm)


@pytest.mark.parametrize("claim", ["lucky_pure", "F1e", "empty_stays"])
def test_findings_failure_shares_are_the_reports(claim):
    r = _regime_claim(claim)
    cells = " | ".join(f"{k}/{n}" for k, n in (r["by_d"][str(d)] for d in (32, 64, 128)))
    cells = cells.replace(" | ", " fail | ", 1)
    row = next((line for line in FINDINGS_TEXT.splitlines() if cells in line), None)
    assert row is not None, cells
    assert f"{r['slope']:.3g} [{r['lo']:.3g}, {r['hi']:.3g}]" in row
    assert r["verdict"] == "contradicts"


@pytest.mark.slow
def test_findings_hypotheses_numbers_are_the_reports_and_theorys():
    from jaxcl.experiments.liao import theory
    from jaxcl.experiments.liao.config import Config

    panel = _report("theorem33-regime")["liao"]["hypotheses"]
    cell = {(h["lam_arm"], h["d"]): h for h in panel}
    assert f"{cell[('λ set', 32)]['all_lucky']['value']:.3g} at d = 32" in FINDINGS
    assert all(cell[("λ set", d)]["lam"]["value"] == pytest.approx(0.246, abs=5e-4) for d in
               (32, 64, 128))  # fmt: skip
    ctrl = ", ".join(f"{cell[('λ default', d)]['lam']['value']:.3g}" for d in (32, 64))
    assert (
        ctrl in FINDINGS and f"{cell[('λ default', 128)]['lam']['value']:.3g} at C_m 2" in FINDINGS
    )
    ratio = ", ".join(f"{cell[('λ set', d)]['window']['value']:.3g}" for d in (32, 64))
    assert ratio in FINDINGS
    for d, quoted in ((256, "4.16e-08"), (1024, "0.00289"), (4096, "0.79")):
        m = round(d**1.5)
        p = theory.all_atoms_lucky(d, m, theory.expected_counts(d, m, 1.0)["p_lucky"])
        assert f"{p:.3g}" == quoted and f"{quoted} at d = {d}" in FINDINGS
    lam = {r: [Config(d=d).LAM * d * theory.xi2(d, 1.5, r) for d in (8, 128)] for r in (1.0, 0.25)}
    assert f"{lam[1.0][0]:.3g} to 2.78" in FINDINGS
    assert (
        f"{lam[1.0][1]:.3g}" == "2.78" and f"{lam[0.25][0]:.3g} to {lam[0.25][1]:.3g}" in FINDINGS
    )


def test_findings_derivation_numbers_are_theorys():
    import math

    from jaxcl.experiments.liao import theory

    d, m = 4096, round(4096**1.5)
    n0 = theory.n0_leading(d, 0.75)
    assert f"E|N_i(0)| ≈ {n0:.3g} at ratio 0.75 (e^(−{n0:.3g}) = {math.exp(-n0):.3g}" in FINDINGS
    assert f"E|M_j*| ≈ {theory.lucky_leading(d, m, 0.75):.3g}" in FINDINGS
    assert f"d^ω1 = {d ** theory.omega1(1.5, 0.75):.3g}" in FINDINGS
    assert f"and {theory.n0_leading(d, 0.5):.3g} at ratio 0.5" in FINDINGS


def test_findings_stage_times_and_maxima_are_the_reports():
    t2 = _regime_claim("T2")
    best, mine = t2["scales"][0], next(s for s in t2["scales"] if s["name"].endswith("log log d)"))
    assert best["name"] == "d log d/η" and f"by ΔAIC {mine['delta']:.3g}" in FINDINGS
    late = _regime_claim("N_t_late")["max_law"]["excess"]
    assert ", ".join(f"{late[str(d)]:.3g}" for d in (32, 64, 128)) in FINDINGS
    tally = _report("theorem33-regime")["liao"]["tally"]
    assert tally["fails"] >= 2 and tally["outside the hypotheses"] == 1


def _beyond() -> dict:
    return _report("geometry-beyond")["geometry"]["beyond"]


def _share(x: int, n: int) -> str:
    from jaxcl.tables import clopper_pearson

    lo, hi = clopper_pearson(x, n)
    return f"{x}/{n} [{lo:.2f}, {hi:.2f}]"


def _rank_cell(classes: list[int], ratio: float, p: int) -> dict:
    return next(
        c
        for c in _beyond()["rank"]
        if c.get("p") == p and c["ratio"] == ratio and c["classes"] == classes
    )


def _sci(x: float) -> str:
    """x as the docs write it: two digits, a short exponent (7.8e-5)."""
    m, e = f"{x:.1e}".split("e")
    return f"{m}e{int(e)}"


def _flat(text: str) -> str:
    """Markdown as one line: line breaks as spaces, escaped stars plain."""
    return " ".join(text.replace("\\*", "*").split())


GEOMETRY = _flat((ROOT / "docs" / "geometry.md").read_text())
SEPARATING = [
    ([1, 3], 0.0025),
    ([1, 4], 0.0025),
    ([2, 2], 0.01),
    ([2, 3], 0.0025),
    ([2, 4], 0.0025),
]


def test_geometry_beyond_rank_rule_is_the_reports():
    text = {name: _flat(t) for name, t in DOCS.items()}
    cells = [c for c in _beyond()["rank"] if "p" in c and c["rank"] < c["C"] - 1]
    assert sorted({(tuple(c["classes"]), c["ratio"]) for c in cells}) == [
        (tuple(c), r) for c, r in SEPARATING
    ]
    # every p >= rank G* + 1 reaches, in 12/12 seeds; below C - 1 in four cases
    above = [c for c in cells if c["p"] >= c["rank"] + 1]
    assert all(c["verdict"] == "reaches" and (c["within"], c["runs"]) == (12, 12) for c in above)
    assert f"{_share(12, 12)} each" in text["docs/results.md"]
    below = {tuple(c["classes"]) for c in above if c["p"] < c["C"] - 1}
    assert len(below) == 4 and "below C − 1 in four of them" in text["docs/results.md"]
    # at p = rank G*: the shares quoted, and the rule's sentence in the report's answer
    at = {tuple(c["classes"]): c for c in cells if c["p"] == c["rank"]}
    for c in at.values():
        assert _share(c["within"], c["runs"]) in GEOMETRY
        assert _share(c["within"], c["runs"]) in text["docs/results.md"]
    assert f"it would take about {at[(2, 2)]['seeds_needed']:,} seeds" in GEOMETRY
    verdicts = tuple(at[c]["verdict"] for c in ((2, 2), (2, 3), (2, 4)))
    assert verdicts == ("undecided", "does not", "does not")
    answer = (ROOT / "results/geometry-beyond/report.md").read_text()
    assert "The rule the data support is p ≥ rank G* + 1" in answer
    assert "p = rank G* + 1 on" in text["README.md"]
    # the misses at p = rank G*: all strict local minima, with the quoted ranges
    misses = [m for c in at.values() for m in c["misses"]]
    assert {m["verdict"] for m in misses} == {"local minimum"}
    assert f"All {len(misses)} runs that miss at p = rank G*" in GEOMETRY
    assert (
        f"all {len(misses)} misses there end at a strict local minimum" in (text["docs/results.md"])
    )
    eig = [m["min_eig_scaled"] for m in misses]
    gap = [m["F_gap"] for m in misses]
    for t in (GEOMETRY, text["docs/results.md"]):
        assert f"{_sci(min(gap))} to {_sci(max(gap))}" in t
        assert f"{min(eig):.3g}–{max(eig):.3g}" in t
    assert f"at most {max(m['newton_step'] for m in misses):.2g} rad" in GEOMETRY
    assert f"moves G by at most {max(m['moved'] for m in misses):.2g}" in GEOMETRY


def test_geometry_beyond_rank_c_minus_1_cases_reach_at_rank_g_star():
    at_rank = [c for c in _beyond()["rank"] if "p" in c and c["p"] == c["rank"] == c["C"] - 1]
    assert sorted((tuple(c["classes"]), c["ratio"]) for c in at_rank) == [
        ((2, 2), 0.1),
        ((2, 2), 1.0),
        ((4, 4), 1.0),
    ]
    assert all((c["within"], c["runs"]) == (12, 12) for c in at_rank)
    assert "training reaches G*_p = G* at p = rank G* itself" in GEOMETRY
    assert "p = rank G* fails only where rank G* < C − 1" in GEOMETRY


def test_geometry_beyond_4_plus_4_and_rho_quotes_are_the_reports():
    c6 = _rank_cell([4, 4], 1.0, 6)
    assert f"in {_share(c6['within'], c6['runs'])} seeds" in GEOMETRY
    assert {m["verdict"] for m in c6["misses"]} == {"not converged"}
    assert f"Newton steps up to {max(m['newton_step'] for m in c6['misses']):.2g} rad" in GEOMETRY
    assert f"moves G by up to {max(m['moved'] for m in c6['misses']):.2g}" in GEOMETRY
    rho = {tuple(c["classes"]): c for c in _beyond()["rank"] if "rho_star_p" in c}
    r22 = rho[(2, 2)]
    assert f"{r22['rho_star_p']['2']:.7g}" == "0.1459193"
    for t in (GEOMETRY, _flat(DOCS["docs/results.md"])):
        assert "0.1459193" in t and f"{r22['rho_star']:.4g}" in t
    for cls in ((2, 3), (2, 4)):
        r = rho[cls]
        assert f"{r['rho_star_p']['2']:.3g} against {r['rho_star']:.3g}" in GEOMETRY
    rise = max(r["largest_rise"] for r in rho.values())
    assert f"largest rise measured is {_sci(rise)} relative" in GEOMETRY


def test_geometry_beyond_reach_and_hard_quotes_are_the_reports():
    text = " ".join(DOCS["docs/results.md"].split())
    reach = _beyond()["reach"]
    within, runs = sum(r["within"] for r in reach), sum(r["runs"] for r in reach)
    slow = sum(r["slow"] for r in reach)
    stalled = sum(r["stalled"] for r in reach)
    rerun = slow + stalled + sum(r["converging"] for r in reach)
    assert f"{within}/{runs} runs of the loss × k × τ grid end within 0.02 of G*" in text
    assert f"{slow} of the {rerun} misses rerun 4× longer get there" in text
    assert f"{stalled} (one seed, ratio 0.03) stay" in text
    ends = Counter()
    for r in reach:
        ends.update(r["end_points"])
    assert f"all {sum(ends.values())} longer runs still outside 0.02 are not converged" in text
    assert set(ends) == {"not converged"}
    hard = {h["hard_beta"]: h for h in _beyond()["hard"] if h["ratio"] == 0.1}
    er = {b: sum(h["effective_rank"]) / len(h["effective_rank"]) for b, h in hard.items()}
    assert f"effective rank of Z rises {er[0.0]:.3g} → {er[4.0]:.3g}" in text
