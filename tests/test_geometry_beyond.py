"""The geometry report past the paper's assumptions (SPEC §10): effective rank, Clopper–Pearson
share intervals, and the report's sentence answers on made-up finals whose answers are known."""

import math
import os

import numpy as np
import pytest
from scipy import stats

from jaxcl.engine import sweep
from jaxcl.experiments.geometry.observables import effective_rank
from jaxcl.experiments.geometry.report import beyond as report_beyond
from jaxcl.experiments.geometry.report import rank as report_rank
from jaxcl.experiments.geometry.report import stats as report_stats
from jaxcl.experiments.geometry.report import training as report_training
from jaxcl.experiments.geometry.report import verdicts as report_verdicts
from jaxcl.experiments.geometry.report.stats import loss_label

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- effective rank


@pytest.mark.parametrize("r", [1, 2, 3, 5])
@pytest.mark.numerics
def test_effective_rank_of_r_equal_eigenvalues_is_r(r):
    # rows ±e_i, i < r, each equally often, in R^6: covariance I_r / r (mean 0)
    eye = np.eye(6)[:r]
    Z = np.concatenate([eye, -eye] * 3)
    assert effective_rank(Z) == pytest.approx(r, rel=1e-9)


@pytest.mark.numerics
def test_effective_rank_hand_case_and_degenerate():
    # covariance eigenvalues 3/4, 1/4: exp(−(3/4 ln 3/4 + 1/4 ln 1/4))
    Z = np.array([[math.sqrt(3), 0], [-math.sqrt(3), 0], [0, 1], [0, -1]]) * 0.7
    want = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert effective_rank(Z) == pytest.approx(want, rel=1e-9)
    assert effective_rank(np.ones((5, 3))) == 0.0  # one point: no spread at all
    # rotation invariant
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((2, 2)))
    assert effective_rank(Z @ q) == pytest.approx(want, rel=1e-9)


# ---- Clopper–Pearson


@pytest.mark.numerics
def test_clopper_pearson_hand_cases():
    cp = report_stats.clopper_pearson
    # x = 0 or n: closed forms (α/2)^(1/n)
    assert cp(0, 4) == pytest.approx((0.0, 1 - 0.025**0.25), abs=1e-9)
    assert cp(4, 4) == pytest.approx((0.025**0.25, 1.0), abs=1e-9)
    # x = 1, n = 2: P(X ≥ 1 | lo) = 1 − (1 − lo)² = 0.025, P(X ≤ 1 | hi) = 1 − hi² = 0.025
    assert cp(1, 2) == pytest.approx((1 - math.sqrt(0.975), math.sqrt(0.975)), abs=1e-9)


@pytest.mark.parametrize("x,n", [(1, 4), (2, 4), (3, 7), (5, 12), (0, 9)])
@pytest.mark.numerics
def test_clopper_pearson_against_beta_quantiles(x, n):
    lo = stats.beta.ppf(0.025, x, n - x + 1) if x > 0 else 0.0
    hi = stats.beta.ppf(0.975, x + 1, n - x) if x < n else 1.0
    assert report_stats.clopper_pearson(x, n) == pytest.approx((lo, hi), abs=1e-9)


def test_clopper_pearson_refuses_bad_counts():
    for x, n in ((3, 2), (-1, 2), (0, 0), (1.5, 3)):
        with pytest.raises(ValueError, match="x <= n"):
            report_stats.clopper_pearson(x, n)


# ---- the report's answers on made-up finals


def _final(
    seed,
    dev,
    steps=100,
    ratio=0.1,
    C=(2, 2),
    p=8,
    loss="infonce",
    k=8,
    tau=0.5,
    G=None,
    cos=0.3,
    nc1=1e-5,
    hard_beta=0.0,
    samples_major=200,
):
    n = [samples_major] * C[0] + [max(1, round(ratio * samples_major))] * C[1]
    G = np.eye(sum(C)) if G is None else G
    return {
        "config_id": f"c{C}{p}{loss}{k}{tau}{ratio}{steps}{hard_beta}s{seed}",
        "n_major_classes": C[0],
        "n_minor_classes": C[1],
        "p": p,
        "loss": loss,
        "loss_alpha": 1.0,
        "loss_beta": 1.0,
        "loss_psi": "log1p",
        "loss_phi": "exp",
        "negatives": k,
        "tau": tau,
        "ratio": ratio,
        "steps": steps,
        "seed": seed,
        "samples_major": samples_major,
        "hard_beta": hard_beta,
        "pi": [x / sum(n) for x in n],
        "observables": {
            "G_max_dev": dev,
            "minority_cos": cos,
            "nc1": nc1,
            "G": G.tolist(),
            "G_opt": G.tolist(),
        },
    }


def _beyond(finals):
    """(answer lines, section lines, report.json `beyond`) of the SPEC §10 answers."""
    answers, details = report_beyond.report(None, finals, loss_label)
    return list(answers.lines), list(details.lines), details.summary.get("beyond", {})


def test_reach_answer_all_within():
    finals = [_final(s, 0.01) for s in range(4)] + [_final(s, 0.005, steps=400) for s in range(4)]
    ans, lines, summary = _beyond(finals)
    assert summary["reach"] == [
        {
            "loss": "infonce",
            "k": 8,
            "tau": 0.5,
            "steps": 100,
            "runs": 4,
            "within": 4,
            "slow": 0,
            "stalled": 0,
            "converging": 0,
            "end_points": {},
        }
    ]
    lo = 0.025**0.25
    text = "\n".join(ans)
    assert f"4/4 [{lo:.2f}, 1.00] runs end within 0.02 of G*" in text
    assert "rerun" not in text  # nothing needed the longer run


def test_reach_answer_slow_stalled_converging():
    short = [0.01, 0.015, 0.05, 0.06, 0.08]
    longer = [0.005, 0.005, 0.01, 0.055, 0.03]  # seed 2 slow, 3 stalled, 4 converging
    finals = [_final(s, d) for s, d in enumerate(short)] + [
        _final(s, d, steps=400) for s, d in enumerate(longer)
    ]
    ans, _, summary = _beyond(finals)
    row = summary["reach"][0]
    assert (row["within"], row["slow"], row["stalled"], row["converging"]) == (2, 1, 1, 1)
    lo, hi = stats.beta.ppf(0.025, 2, 4), stats.beta.ppf(0.975, 3, 3)
    text = "\n".join(ans)
    assert f"2/5 [{lo:.2f}, {hi:.2f}] runs end within 0.02" in text
    one = report_stats.share_cell(1, 3)
    assert (
        f"Of the 3 runs not within that were rerun 4× longer, {one} reach G* (slow "
        f"convergence), {one} stay put (max|G − G*| above half the short run's), {one} are "
        "still converging"
    ) in text
    # the two longer runs still not within end at G = I, far from G* of the imbalanced 2+2 (its
    # minority cosine is > 0): the continuation moves G a lot, so neither is a critical point
    assert row["end_points"] == {"not converged": 2}
    assert "The 2 longer runs still not within end at: not converged (2)" in text
    assert text.index("## Answers") == 0


def test_hard_claim_yes_and_no():
    er0, er1 = [3.0, 3.01, 2.99, 3.0], [2.0, 2.02, 1.98, 2.0]
    nc_lo, nc_hi = [1e-6, 2e-6, 1.5e-6, 1e-6], [1e-3, 2e-3, 1.5e-3, 1e-3]
    cos = [0.3, 0.31, 0.29, 0.3]
    yes, text = report_training._claim("x", 0, 4, (er0, nc_lo, cos), (er1, nc_hi, cos))
    assert yes and "effective rank" in text and "(falls)" in text and "(rises)" in text
    # effective rank up instead: no trade
    no, _ = report_training._claim("x", 0, 4, (er1, nc_lo, cos), (er0, nc_hi, cos))
    assert not no
    # neither NC1 up nor minority cos down: no trade
    no, _ = report_training._claim("x", 0, 4, (er0, nc_lo, cos), (er1, nc_lo, cos))
    assert not no


@pytest.mark.parametrize("n", [4, 6, 9, 12])
def test_decided_against_one_half_matches_the_interval(n):
    rng = np.random.default_rng(n)
    for _ in range(8):
        ok = [bool(x) for x in rng.random(n) < rng.random()]
        verdict, need = report_verdicts.decided(ok)
        lo, hi = report_stats.clopper_pearson(sum(ok), n)
        want = "reaches" if lo > 0.5 else "does not" if hi < 0.5 else "undecided"
        assert verdict == want
        if need is None:
            assert verdict == "undecided"
            continue
        # every prefix from `need` seeds on is on the same side; the one before it is not
        side = [report_stats.clopper_pearson(sum(ok[:m]), m) for m in range(1, n + 1)]
        same = [(a > 0.5) if verdict == "reaches" else (b < 0.5) for a, b in side]
        assert all(same[need - 1 :]) and (need == 1 or not same[need - 2])


def test_rank_answer_separates_rank_from_C_minus_1(monkeypatch):
    # rank G* = 2 < C − 1 = 3 by construction: G*_2 = G*, the runs at p = 2 reach it up to a
    # swap of the two minority classes (equal size) or end at a made-up miss
    G_full = np.array(
        [[1, -1, 0.5, 0.4], [-1, 1, -0.5, -0.4], [0.5, -0.5, 1, 0.9], [0.4, -0.4, 0.9, 1]]
    )
    swapped = G_full[[0, 1, 3, 2]][:, [0, 1, 3, 2]]
    far = G_full.copy()
    far[2, 3] = far[3, 2] = -1.0
    monkeypatch.setattr(report_rank, "gram", lambda pi, k, tau, rank, hb, kw: (G_full, 2))
    monkeypatch.setattr(report_rank, "rho_star", lambda a, b, k, tau, rank, kw: 0.1)
    miss = dict(verdict="local minimum", grad_scaled=1e-3, newton_step=1e-3, min_eig_scaled=0.16)
    miss.update(F_gap=5e-4, moved=1e-3)
    monkeypatch.setattr(report_rank, "classify_miss", lambda f: dict(miss))
    finals = [_final(s, 0.0, p=2, G=swapped) for s in range(11)] + [_final(11, 0.0, p=2, G=far)]
    finals += [_final(s, 0.0, p=p, G=G_full) for p in (3, 4) for s in range(12)]
    ans, lines, summary = _beyond(finals)
    cells = {c["p"]: c for c in summary["rank"] if "p" in c}
    assert [cells[p]["within"] for p in (2, 3, 4)] == [11, 12, 12]
    assert cells[2]["verdict"] == "reaches" and cells[2]["seeds_to_decide"] == 6
    assert cells[2]["misses"] == [dict(seed=11, max_dev=1.9, minority_cos=0.3, **miss)]
    text = "\n".join(ans)
    assert (
        "every case reaches G*_p at every p ≥ rank G* tried, so the data support p ≥ rank G*"
        in (text)
    )
    assert "local minimum (1)" in text
    row = "| 2+2 ratio 0.1 p 2 s11 | 1.9 | 0.3 | 0.001 | 0.001 | 0.16 | 5.00e-04 | 0.001 |"
    assert row + " local minimum |" in "\n".join(lines)


def test_counts_answer(monkeypatch):
    monkeypatch.setattr(
        report_beyond, "rho_star", lambda a, b, k, tau, rank, kw: 0.01 / a if a <= 2 else 0.0
    )
    monkeypatch.setattr(report_beyond, "_floor_cos", lambda a, b: 1.0 if a <= 2 else 0.5)
    G = np.eye(3)
    G[1, 2] = G[2, 1] = 1.0  # 1+2 trained: collapsed
    finals = (
        [_final(s, 0.0, C=(1, 2), ratio=0.0025, G=G, cos=1.0) for s in range(3)]
        + [_final(s, 0.0, C=(3, 2), ratio=0.0025, cos=0.5) for s in range(3)]
        + [_final(s, 0.0, C=(2, 2), cos=0.3) for s in range(3)]
    )
    ans, _, summary = _beyond(finals)
    text = "\n".join(ans)
    assert "ρ* > 0 for 1+2, 1+3, 1+4, 2+2, 2+3, 2+4; ρ* = 0" in text
    assert "1 majority: 2, 3, 4; 2 majority: 2, 3, 4; 3 majority: none" in text
    assert "not a property of two minority classes only" in text
    assert (
        "1+2 at ratio 0.0025 (ρ* = 0.01): minority cos 1 [1, 1] against 1 predicted, "
        f"collapsed in {report_stats.share_cell(3, 3)}"
    ) in text
    assert summary["counts"]["rho_star"]["3+4"] == 0.0


def test_main_geometry_study_gets_no_new_sections():
    # results/geometry must keep its content: its sweep's configs trigger none of the answers
    configs = sweep.load(os.path.join(ROOT, "sweeps", "geometry.toml")).configs()
    finals = [
        {
            **c.resolved(),
            "config_id": c.config_id,
            "observables": {"G_max_dev": 0.0, "minority_cos": 0.0, "nc1": 0.0},
        }
        for c in configs
    ]
    assert _beyond(finals) == ([], [], {})


def _case(name, rank, C, verdicts, misses=None):
    return {"name": name, "rank": rank, "C": C, "verdicts": verdicts, "misses": misses or {}}


def test_rule_names_the_offset_the_verdicts_support_and_the_c_minus_1_counterexample():
    r = report_verdicts.rule
    assert "cannot tell" in r([])
    # reaches from rank G* + 1 in both; 2+3 does so at p = 3 < C − 1 = 4
    two = [
        _case("A", 2, 5, {2: "does not", 3: "reaches", 4: "reaches"}, {2: {"local minimum": 9}}),
        _case("B", 1, 4, {2: "reaches", 3: "reaches"}),
    ]
    text = r(two)
    assert "The rule the data support is p ≥ rank G* + 1" in text
    assert "At p = rank G*: A does not; B not trained there (p = 1 does not train" in text
    assert "the threshold is not C − 1: A from p = 3 < C − 1 = 4; B from p = 2 < C − 1 = 3" in text
    assert "At p = rank G* (1 case) the runs that miss G*_p end at local minimum (9)" in text
    # one case reaching at p = rank G*: the offset is the largest over cases, still 1
    assert "p ≥ rank G* + 1" in r(two + [_case("C", 2, 4, {2: "reaches", 3: "reaches"})])
    # every case from rank G* itself
    assert "support p ≥ rank G*" in r([_case("C", 2, 4, {2: "reaches", 3: "reaches"})])
    # a later p that does not reach breaks "from p0 on": no rule
    bad = r([_case("D", 2, 5, {2: "reaches", 3: "undecided"})])
    assert "1 of 1 do not reach" in bad and "no rule" in bad
    # reaching only from C − 1 = 3: the threshold may be C − 1, so no counterexample is named
    assert "threshold is not" not in r([_case("E", 2, 4, {2: "does not", 3: "reaches"})])


@pytest.mark.parametrize("x, n", [(82, 144), (5, 12), (7, 12), (30, 40)])
def test_seeds_needed_is_where_the_exact_interval_first_leaves_one_half(x, n):
    m = report_verdicts.seeds_needed(x, n)

    def interval(m):  # Clopper–Pearson from scipy's beta quantiles, at the share x/n
        k = round(m * x / n)
        lo = stats.beta.ppf(0.025, k, m - k + 1) if k > 0 else 0.0
        hi = stats.beta.ppf(0.975, k + 1, m - k) if k < m else 1.0
        return lo, hi

    lo, hi = interval(m)
    assert lo > 0.5 or hi < 0.5
    if m > n:  # not decided at m − 1 (the share's rounding keeps this monotone here)
        lo, hi = interval(m - 1)
        assert lo <= 0.5 <= hi
    assert report_verdicts.seeds_needed(6, 12) is None  # exactly one half: no count decides it


def test_int_runs_writes_runs_of_three_or_more_as_a_span():
    from jaxcl.tables import int_runs

    assert int_runs([9, 0, 1, 2, 3, 7, 10, 3]) == "0–3, 7, 9, 10"
    assert int_runs(range(320)) == "0–319" and int_runs([]) == "" and int_runs([5]) == "5"
    # every value is recovered from the text
    xs = [0, 2, 3, 4, 6, 7, 11, 12, 13, 14]
    back = []
    for part in int_runs(xs).split(", "):
        a, _, b = part.partition("–")
        back += list(range(int(a), int(b or a) + 1))
    assert back == xs
