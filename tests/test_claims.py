"""The claim-by-claim verdicts of Liao's report (verdicts.py rules, claims.py rows), fed numbers
with known answers: a saturating mean, a growing-then-flat count, a flat count with a wide
interval, a genuine violation, 4-of-4 shares, and expectations that fall or grow."""

import math

import numpy as np
import pytest

from jaxcl.experiments.liao import theory
from jaxcl.experiments.liao.report import claims, findings, rules, verdicts
from jaxcl.experiments.liao.report import eta as report_eta
from jaxcl.experiments.liao.report.verdicts import CONTRADICTS, SUPPORTS, UNDECIDED

DS = (8, 16, 32, 64, 128)


def _by_d(means, noise=0.01, seeds=4):
    """{d: per-seed values}: each mean times (1 + noise·(s − 1.5)), s = 0..3."""
    return {d: [m * (1 + noise * (s - 1.5)) for s in range(seeds)] for d, m in means.items()}


@pytest.mark.numerics
def test_clopper_pearson_against_closed_forms_and_binomial_sums():
    for n in (1, 4, 20):  # k = n: lo = (α/2)^(1/n); k = 0: hi = 1 − (α/2)^(1/n)
        assert verdicts.clopper_pearson(n, n)[0] == pytest.approx(0.025 ** (1 / n), abs=1e-9)
        assert verdicts.clopper_pearson(0, n)[1] == pytest.approx(1 - 0.025 ** (1 / n), abs=1e-9)
    k, n = 17, 22  # the interval's ends are where the binomial tails reach α/2
    lo, hi = verdicts.clopper_pearson(k, n)
    tail_up = sum(math.comb(n, i) * lo**i * (1 - lo) ** (n - i) for i in range(k, n + 1))
    tail_dn = sum(math.comb(n, i) * hi**i * (1 - hi) ** (n - i) for i in range(0, k + 1))
    assert tail_up == pytest.approx(0.025, abs=1e-7) and tail_dn == pytest.approx(0.025, abs=1e-7)
    lo, hi = verdicts.clopper_pearson(9992, 16384)  # large n (the F.1(e) share at C_m = 2)
    assert lo < 9992 / 16384 < hi and hi - lo < 0.02


def test_saturating_mean_supports_an_upper_bound():
    """Q = 1.2 − 3/d over d = 8 … 128 levels off: its whole-range slope is well above θ = 0.0005
    but its local exponent at d = 128 (a fit with a curvature term) is ≈ 0, within θ + 0.1."""
    by_d = _by_d({d: 1.2 - 3 / d for d in DS})
    assert verdicts.fit.fit_exponent(by_d).lo > 0.1  # a whole-range rule would say "grows"
    v, why = verdicts.upper(by_d, 0.0005)
    assert v == SUPPORTS and "at most 0.0005 + 0.1" in why, why
    # mean |N_i(T)| of the C_m 1.5 sweep at ratio 1 (0.40, 0.75, 1.10, 1.016, 1.002) rises and
    # falls back: no smooth curve through five d pins its local exponent, and the rule says so
    bumpy = _by_d(dict(zip(DS, (0.40, 0.75, 1.10, 1.016, 1.002))))
    v, why = verdicts.upper(bumpy, 0.0005)
    assert v == UNDECIDED and "wider than 1" in why, why


def test_growing_then_flat_does_not_support_a_growth_lower_bound():
    """P_j grows over d = 8 … 32 then stays flat: a whole-range slope near 0.8, a tail near 0."""
    by_d = _by_d(dict(zip(DS, (2.0, 5.0, 12.0, 12.5, 12.2))))
    assert verdicts.fit.fit_exponent(by_d).slope > 0.5  # a whole-range rule would read growth
    v, why = verdicts.lower(by_d, 0.5)
    # the local exponent at d = 128 is about 0 but its interval (three flat d after a rise)
    # reaches up to 0.45: no growth shown, and no shortfall that a constant cannot cover
    assert v == UNDECIDED and "contains 0" in why, why


def test_flat_count_with_a_wide_interval_does_not_support():
    """|M_j*| at ratio 0.75, C_m 2: a slope of 0.112 [−0.313, 0.53] against θ = 0.221, an interval
    that holds θ but also 0, decides nothing (a rule that asked only for θ inside the interval
    would say "supports")."""
    by_d = {
        8: [0.0, 0.1, 0.2, 0.0],
        16: [0.05, 0.15, 0.02, 0.1],
        32: [0.02, 0.2, 0.05, 0.06],
        64: [0.1, 0.01, 0.2, 0.03],
    }
    v, why = verdicts.lower(by_d, 0.221)
    assert v == UNDECIDED and ("contains 0" in why or "below" in why), why


def test_genuine_violations_are_contradicted():
    by_d = _by_d({d: d**1.2 for d in DS})
    v, why = verdicts.upper(by_d, 0.5)
    assert v == CONTRADICTS and "its largest value at d = [8, 16]" in why, why
    # a quantity that grows past θ + tol over the tail but within 2x of its small-d level is
    # not enough: a constant cannot be ruled out
    by_d = _by_d({8: 1.0, 16: 1.0, 32: 0.6, 64: 0.8, 128: 1.2})
    assert verdicts.upper(by_d, 0.0)[0] == UNDECIDED
    assert verdicts.lower(_by_d({d: d**0.1 for d in DS}), 0.8)[0] == CONTRADICTS


def test_shares_with_exact_intervals():
    assert verdicts.share(4, 4, "lucky neurons")[0] == UNDECIDED  # 4 of 4: [40%, 100%]
    assert verdicts.share(904, 1069, "x")[0] == SUPPORTS  # 85% of 1069: lower end 82%
    assert verdicts.share(15, 22, "x")[0] == UNDECIDED  # 70% of 22
    assert verdicts.share(33, 200, "x")[0] == CONTRADICTS
    assert verdicts.share(0, 0, "x")[0] == UNDECIDED
    n = verdicts.share_sample(0.9)
    assert verdicts.clopper_pearson(round(0.9 * n), n)[0] >= 0.8
    assert verdicts.clopper_pearson(round(0.9 * (n - 1)), n - 1)[0] < 0.8
    assert verdicts.share_sample(0.7) is None  # between the thresholds: no n decides


def test_counts_against_nonpositive_exponents():
    """Ω(d^θ ≤ 0) for a count asks only that it never vanish."""
    assert verdicts.lower({d: [0.0] * 4 for d in DS}, -2.5)[0] == CONTRADICTS
    assert verdicts.lower({d: [0.0] * 4 for d in DS}, 0.3)[0] == CONTRADICTS  # θ > 0 too
    assert verdicts.lower({d: [3.0, 1.0, 2.0, 5.0] for d in DS}, -2.5)[0] == SUPPORTS
    assert (
        verdicts.lower({**{d: [1.0] * 4 for d in DS}, 128: [0.0, 1.0, 1.0, 1.0]}, -2.5)[0]
        == UNDECIDED
    )


@pytest.mark.slow
def test_verdicts_against_exact_expectations():
    """The lucky count's exact expectation at ratio 0.75, C_m 1.5 falls with d (eq. 17's event
    needs every other coordinate small: ≈ exp(−E|N_i(0)|)), so the claim fails in expectation
    even where a few measured counts are not 0; growth past an O bound does the same."""
    exp = {
        d: (
            theory.expected_counts(d, round(d**1.5), 0.75)["lucky"],
            theory.expected_counts(d, round(d**1.5), 0.75)["lucky_se"],
        )
        for d in (64, 128, 256)
    }
    assert exp[256][0] < exp[128][0] < exp[64][0]
    v, why = verdicts.lower(_by_d({d: 1.0 for d in DS}), -0.279, expected=exp)
    assert v == CONTRADICTS and "fails in expectation" in why
    assert verdicts.expectation_slope({64: (1.0, 0.0), 128: (0.0, 0.0)}, True) == -math.inf
    assert math.isnan(verdicts.expectation_slope({64: (1.0, 0.6), 128: (0.5, 0.1)}, True))
    v, why = verdicts.upper(_by_d({d: 1.0 for d in DS}), 0.0, expected={1024: 10.0, 4096: 40.0})
    assert v == CONTRADICTS and "slope 1 > 0" in why


@pytest.mark.slow
def test_stage_times_theta_tolerance():
    by_d = _by_d({d: 3.0 * d**1.05 for d in DS})
    assert verdicts.equal(by_d, 1.02)[0] == SUPPORTS
    # 0.25 off over the tail, but Q/d^1.3 at d = 128 is still 0.59x its d = 16 value: not yet
    assert verdicts.equal(by_d, 1.3)[0] == UNDECIDED
    assert verdicts.equal(by_d, 1.5)[0] == CONTRADICTS  # 0.39x
    assert verdicts.equal(by_d, 0.6)[0] == CONTRADICTS  # 2.6x above
    assert verdicts.equal({8: [1.0], 16: [2.0]}, 1.0)[0] == UNDECIDED


def _final(d, seed, ratio=1.0, C_m=1.5, lucky=1.0, pure=1.0, N=1.0, T1=10, lam=1e-7):
    """A final json with made-up observables: counts d^lucky and d^pure (times a seed factor);
    λ small enough for λ d Ξ_2 ≤ 1; F.1(e) failing on a share d/200 of the neurons with a set,
    no neuron without one learning."""
    k = 1 + 0.01 * seed
    m = round(d**C_m)
    return {
        "lam": lam,
        "lam_at_9": 0.03,
        "tau": math.log(d),
        "K": 64,
        "d": d,
        "m": m,
        "seed": seed,
        "ratio": ratio,
        "C_m": C_m,
        "gamma_c0": 5e-4,
        "eta": 1.0,
        "eps_max": 1.0,
        "prune_fraction": 0.0,
        "loss": "infonce",
        "config_id": f"d{d}_r{ratio}_s{seed}",
        "T1": T1 * d,
        "T2": -1,
        "T3": d**1.01,
        "T4": d**1.99,
        "observables": {
            "lucky_counts": [k * d**lucky] * 3,
            "ordinary_counts": [k * d] * 3,
            "N0_sizes": [1, 2],
            "N_sizes": [N] * 20 + [0] * 4,
            "pure_counts": [k * d**pure, 2 * k * d**pure],
            "lucky_kept_frac": 0.9,
            "lucky_total": 50,
            "N_subset_frac": 0.25,
            "N0_nonempty": m // 2,
            "N_subset_nonempty0": m // 2 - round(m // 2 * d / 200),
            "N0_empty_learned": 0,
        },
    }


@pytest.mark.slow
def test_claims_section_reads_each_verdict_from_its_numbers():
    """Inside the hypotheses (ratio 1, C_m 2, d = 32-128, λ d Ξ_2 ≪ 1): counts growing like d
    support the Ω(d^ω1 ≈ d) bounds, N_i(0) ≤ 2 is O(1) against the extreme-value law, a window
    max |N_i(t)| of d^0.8 outgrows it, a constant 10% of lucky neurons failing is no "w.h.p.",
    F.1(e) failing on a share d/200 that grows contradicts it, and 20 of 24 neurons with a set
    contradict o(m/d)."""
    finals = [_final(d, s, C_m=2.0) for d in (32, 64, 128) for s in range(4)]
    panel, found, sec = claims.claims_section(finals)
    rows, lines = {r["claim"]: r for r in sec.summary["claims"]}, sec.lines
    assert all(h["lam"]["holds"] and h["all_lucky"]["holds"] for h in panel.summary["hypotheses"])
    assert rows["lucky_min"]["verdict"] == SUPPORTS
    assert rows["pure_min"]["verdict"] == SUPPORTS
    assert rows["N0_max"]["verdict"] == SUPPORTS and rows["N0_thm"]["verdict"] == SUPPORTS
    assert rows["N_t_T"]["verdict"] == SUPPORTS
    windows = {f["config_id"]: {"N_max_late": f["d"] ** 0.8} for f in finals}
    n_rows = {
        r["claim"]: r for r in claims.claims_section(finals, windows=windows)[2].summary["claims"]
    }
    assert n_rows["N_t_late"]["verdict"] == CONTRADICTS  # d^0.8 outgrows O(d^0.0005)
    assert rows["T2"]["verdict"] == UNDECIDED and "never reached" in rows["T2"]["why"]
    # T_1 = 10 d exactly: d/η fits with no residual and the theory's scale falls far behind
    assert rows["T1"]["verdict"] == CONTRADICTS and rows["T1"]["scales"][0]["name"] == "d/η"
    assert rows["lucky_pure"]["verdict"] == UNDECIDED and rows["lucky_pure"]["n"] == 200
    assert rows["F1e"]["verdict"] == CONTRADICTS and "grows" in rows["F1e"]["why"]
    assert rows["empty_stays"]["verdict"] == SUPPORTS
    assert rows["o_md"]["verdict"] == CONTRADICTS and rows["o_md"]["k"] == 20 * 4
    text = "\n".join(lines)
    assert text.startswith("## Theorem 3.3 and Lemma C.1, claim by claim")
    assert all("decide" in r for r in rows.values() if r["verdict"] == UNDECIDED)
    assert found.summary["tally"]["fails"] >= 1


def test_windows_take_the_max_over_logged_t_in_T3_T4(tmp_path):
    """N_max of results.jsonl rows: only steps in [T_3, T_4] count (T_3 = 8.2, T_4 = 63 at
    d = 8); T_3 < T_2 is flagged."""
    import json

    f = _final(8, 0)
    f["T2"] = 30
    rows = [
        {"config_id": f["config_id"], "step": s, "N_max": n}
        for s, n in ((0, 9), (5, 7), (10, 3), (40, 2), (63, 4), (100, 8))
    ]
    rows.append({"config_id": "other", "step": 10, "N_max": 50})
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    w = claims.windows(str(tmp_path / "r.jsonl"), [f])
    assert w == {f["config_id"]: {"N_max": 4, "N_max_late": 4, "T3_before_T2": True}}
    f["T2"] = 50  # after stage 2 (t ≥ 50, in [T_3, T_4]): only t = 63
    rows[4]["N_max"] = 1
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert claims.windows(str(tmp_path / "r.jsonl"), [f])[f["config_id"]]["N_max_late"] == 1
    assert claims.windows(str(tmp_path / "missing.jsonl"), [f]) == {}


@pytest.mark.slow
def test_claims_section_ratio_and_init_stats():
    """(ii): equal |N_i(T)| at ratios 0.5 and 1 contradicts "a smaller ratio enlarges |N_i|";
    init-stats records past the trained d extend the Lemma C.1 rows."""
    finals = [
        _final(d, s, ratio=r, N=1.0) for r in (0.5, 1.0) for d in (8, 16, 32) for s in range(4)
    ]
    rows = claims.claims_section(finals)[2].summary["claims"]
    ratio_rows = [r for r in rows if r["claim"] == "ratio_N"]
    # at C_m 1.5 and d ≤ 32 almost surely some atom has no lucky neuron: outside the hypotheses
    assert len(ratio_rows) == 1 and ratio_rows[0]["verdict"] == rules.OUTSIDE
    assert "P(every atom has a lucky neuron) ≥ 0.9 fails" in ratio_rows[0]["why"]
    stats = {
        "C_m": 1.5,
        "gamma_c0": 5e-4,
        "records": [
            {
                "d": d,
                "m": round(d**1.5),
                "ratio": 1.0,
                "seed": s,
                "lucky_counts": [d, d],
                "ordinary_counts": [d, d],
                "N0_hist": [0, 5, 1] + [0] * 61,
            }
            for d in (64, 128)
            for s in range(2)
        ]
        + [
            {
                "d": 256,
                "m": 4096,
                "ratio": 1.0,
                "seed": s,
                "lucky_counts": [256, 256],
                "ordinary_counts": [256, 256],
                "N0_hist": [0] * 63 + [1],
            }
            for s in range(2)
        ],
        "expected": [],
    }
    rows = claims.claims_section(finals, init_stats=[stats])[2].summary["claims"]
    lucky = [r for r in rows if r["claim"] == "lucky_min" and r["ratio"] == 1.0][0]
    assert lucky["d"] == [8, 16, 32, 64, 128, 256] and lucky["trained_d"] == [8, 16, 32]
    n0 = [r for r in rows if r["claim"] == "N0_max" and r["ratio"] == 1.0][0]
    assert n0["means"]["128"] == 2.0  # the highest non-empty bin of the |N_i(0)| histogram
    assert 256 not in n0["d"]  # its last bin ("63 or more") holds a neuron: the max is unknown


def test_eta_threshold_words():
    words = report_eta._eta_words
    assert "stops holding between η = 1 and 2" in words(
        32, 1.0, 1.5, {0.5: True, 1.0: True, 2.0: False, 6.0: False}
    )
    assert "at every η tried (up to 6)" in words(32, 1.0, 1.5, {1.0: True, 6.0: True})
    assert "fewer than 80%" in words(32, 1.0, 1.5, {1.0: False, 6.0: False})
    assert "not monotone" in words(32, 1.0, 1.5, {0.5: True, 1.0: False, 2.0: True})
    assert "no lucky neurons" in words(32, 0.5, 1.5, {1.0: None, 2.0: None})


def test_eta_section_table_and_verdict():
    finals = []
    for eta, share in ((0.5, 0.9), (1.0, 0.85), (2.0, 0.6), (6.0, 0.3)):
        for s in range(4):
            f = _final(32, s)
            f["eta"] = eta
            f["observables"] = {
                **f["observables"],
                "lucky_kept_frac": share + 0.01 * s,
                "alive_frac": 1.0,
            }
            finals.append(f)
    sec = report_eta.eta_section(finals)
    assert [round(r["share"], 3) for r in sec.summary["eta"]] == [0.915, 0.865, 0.615, 0.315]
    assert "stops holding between η = 1 and 2" in "\n".join(sec.lines)


# ---- the rules that read a claim where it can be read (report/rules.py)


def test_a_bound_at_the_trivial_exponent_is_vacuous():
    """|N_i| ≤ d: O(d^0.95) cannot fail (0.95 + 0.1 ≥ 1); O(d^0.5) can."""
    v, why = rules.vacuous(0.95, 1.0)
    assert v == rules.VACUOUS and "cannot fail" in why
    assert rules.vacuous(0.5, 1.0) is None and rules.vacuous(0.5, None) is None


def _poisson_maxima(mean_of_d, ds=(32, 64, 128, 256), seeds=4, c_m=1.5):
    rng = np.random.default_rng(0)
    return {
        d: [float(rng.poisson(mean_of_d(d), round(d**c_m)).max()) for _ in range(seeds)] for d in ds
    }, {d: round(d**c_m) for d in ds}


def test_a_maximum_of_bounded_counts_grows_and_still_supports():
    """max over d^1.5 neurons of Poisson(0.5) counts grows with d (extreme values), while each
    count is O(1): the excess over the extreme-value law stays ≤ 2×."""
    maxima, n = _poisson_maxima(lambda d: 0.5)
    assert maxima[256][0] > maxima[32][0] or np.mean(maxima[256]) > np.mean(maxima[32])
    v, why, info = rules.maximum(maxima, 0.5, n, 0.0, 32, what="m neurons'")
    assert v == SUPPORTS, why
    assert all(x <= 2 for x in info["excess"].values())


def test_a_maximum_of_growing_counts_contradicts_O1():
    """Per-neuron counts whose mean grows like d^1.5 against a claimed O(1)."""
    maxima, n = _poisson_maxima(lambda d: 0.5 * (d / 32) ** 1.5)
    v, why, info = rules.maximum(maxima, 0.5, n, 0.0, 32, what="m neurons'")
    assert v == CONTRADICTS and "rising" in why, why
    # the same counts against the right exponent are fine
    assert rules.maximum(maxima, 0.5, n, 1.5, 32, what="m neurons'")[0] == SUPPORTS


def test_stage_times_by_aic():
    """T = 3 d log d/log log d (seed noise 2%) picks the theory's scale; T = d² rejects it."""
    from jaxcl.experiments.liao.report.claim_rows import SCALES

    named = "d log d/(η log log d)"
    rng = np.random.default_rng(1)
    ds = (16, 32, 64, 128, 256)
    t = {d: list(3 * SCALES[named](d) * (1 + 0.02 * rng.standard_normal(4))) for d in ds}
    v, why, ranking = rules.scale(t, named, SCALES)
    assert v == SUPPORTS and ranking[0]["name"] in (named, "d/η", "d log d/η"), why
    sq = {d: list(0.01 * d**2 * (1 + 0.02 * rng.standard_normal(4))) for d in ds}
    v, why, ranking = rules.scale(sq, named, SCALES)
    assert v == CONTRADICTS and ranking[0]["name"] == "d²/η", why
    assert rules.scale({16: [1.0], 32: [2.0]}, named, SCALES)[0] == UNDECIDED


def _cells(shares, n=400, seeds=4):
    rng = np.random.default_rng(2)
    return [(d, s, int(rng.binomial(n, p)), n) for d, p in shares.items() for s in range(seeds)]


def test_every_whp_claims_read_the_failure_trend():
    """A failure share that falls with d supports "every … w.h.p.", one that grows contradicts
    it, a flat one decides nothing, no failures at all support it."""
    falling = _cells({32: 0.3, 64: 0.15, 128: 0.05})
    assert rules.falls(falling, "x")[0] == SUPPORTS
    rising = _cells({32: 0.08, 64: 0.28})  # the regime run's lucky neurons, about
    v, why, info = rules.falls(rising, "lucky neurons that do not end pure")
    assert v == CONTRADICTS and "grows" in why and info["lo"] > 0, why
    assert rules.falls(_cells({32: 0.2, 64: 0.2, 128: 0.2}), "x")[0] == UNDECIDED
    assert rules.falls(_cells({32: 0.0, 64: 0.0}), "x")[0] == SUPPORTS
    assert rules.falls(_cells({32: 0.2}), "x")[0] == UNDECIDED  # one d: no trend


@pytest.mark.slow
def test_theorem_claims_outside_their_hypotheses_name_the_one_that_fails():
    """The same counts with λ d Ξ_2 far above 1 read "outside the hypotheses" for Theorem 3.3's
    claims (naming λ d Ξ_2 ≤ 1), while Lemma C.1's init claims are still judged."""
    finals = [_final(d, s, C_m=2.0) for d in (16, 32, 64) for s in range(4)]
    for f in finals:
        f["lam"] = 1.0
    rows = claims.claims_section(finals)[2].summary["claims"]
    by = {r["claim"]: r for r in rows}
    assert by["pure_min"]["verdict"] == rules.OUTSIDE
    assert "λ d Ξ_2 ≤ 1 fails" in by["pure_min"]["why"]
    assert by["lucky_min"]["verdict"] != rules.OUTSIDE
    fs = findings.findings(rows)
    outside = [f for f in fs if f["verdict"] == rules.OUTSIDE]
    assert outside and all("λ d Ξ_2 ≤ 1" in f["statement"] for f in outside)
    assert sum(len(f["rows"]) for f in fs) == len(rows)  # every row in exactly one finding


def test_findings_group_rows_by_cause_and_derive_the_lucky_factor():
    """Two failing lucky rows below ratio 1 are one finding with the e^(−E|N_i(0)|) derivation;
    its numbers are theory's leading terms."""
    rows = [
        {"claim": "lucky_min", "ratio": r, "C_m": 1.5, "eta": 1.0, "d": [1024, 4096],
         "verdict": CONTRADICTS, "why": "fails in expectation", "words": "w"}
        for r in (0.5, 0.75)
    ] + [
        {"claim": "T1", "ratio": 1.0, "C_m": 1.5, "eta": 1.0, "d": [8, 16, 32],
         "verdict": SUPPORTS, "why": "fits", "words": "w"}
    ]  # fmt: skip
    fs = findings.findings(rows)
    assert [f["verdict"] for f in fs] == [findings.FAILS, findings.HOLDS]
    der = fs[0]["derivation"]
    assert fs[0]["rows"] == [0, 1] and len(der["cells"]) == 2
    c = der["cells"][1]  # ratio 0.75 at d = 4096
    assert c["E_N0_leading"] == pytest.approx(theory.n0_leading(4096, 0.75))
    assert c["exp_minus_N0"] == pytest.approx(math.exp(-c["E_N0_leading"]))
    assert c["lucky_leading"] < 4096 ** c["omega1"]  # the dropped factor bites
    sec = findings.findings_section(rows)
    assert "Findings: 1 hold, 1 fail, 0 open" in "\n".join(sec.lines)


@pytest.mark.slow
def test_findings_draw_the_failure_shares(tmp_path):
    """A failure-share row becomes a line of failure_shares.png, linked from the findings."""
    row = {"claim": "F1e", "ratio": 1.0, "C_m": 2.0, "eta": 1.0, "lam_arm": "λ set",
           "d": [32, 64], "verdict": CONTRADICTS, "why": "grows", "words": "w",
           "by_d": {"32": [72, 848], "64": [854, 3123]}}  # fmt: skip
    sec = findings.findings_section([row])
    assert "![failure shares](failure_shares.png)" in sec.lines
    ((name, write),) = sec.files
    write(str(tmp_path / name))
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert findings.findings_section([{**row, "by_d": {}}]).files == ()
