"""The claim-by-claim verdicts of Liao's report, fed numbers with known answers."""

import math

import numpy as np
import pytest

from jaxcl.experiments.liao import claims
from jaxcl.experiments.liao.claims import CONTRADICTS, SUPPORTS, UNDECIDED, share_verdict, verdict

NAN = math.nan


@pytest.mark.parametrize("args, kw, expected, words", [
    # lower bound Ω(d^0.5): an interval reaching 0.5 or above supports, one below contradicts
    (("lower", 0.7, 0.5, 0.9, 0.5, 4), {}, SUPPORTS, "reaches 0.5"),
    (("lower", 0.45, 0.3, 0.6, 0.5, 4), {}, SUPPORTS, "reaches"),
    (("lower", 0.2, 0.1, 0.3, 0.5, 4), {}, CONTRADICTS, "entirely below 0.5"),
    # upper bound O(d^0.5): above contradicts, within supports
    (("upper", 0.3, 0.2, 0.4, 0.5, 4), {}, SUPPORTS, "stays within"),
    (("upper", 0.8, 0.6, 1.0, 0.5, 4), {}, CONTRADICTS, "entirely above 0.5"),
    # Θ: two-sided
    (("equal", 1.2, 1.1, 1.3, 1.25, 4), {}, SUPPORTS, "contains 1.25"),
    (("equal", 0.9, 0.8, 1.0, 1.25, 4), {}, CONTRADICTS, "below"),
    (("equal", 1.6, 1.5, 1.7, 1.25, 4), {}, CONTRADICTS, "above"),
    # Θ with a tolerance: 1.05 [1.02, 1.09] agrees with 1.02 ± 0.1; 1.3 [1.25, 1.35] does not
    (("equal", 1.05, 1.02, 1.09, 1.02, 4), {"tol": 0.1}, SUPPORTS, "1.02 ± 0.1"),
    (("equal", 1.05, 1.04, 1.09, 1.02, 4), {}, CONTRADICTS, "above 1.02"),
    (("equal", 1.3, 1.25, 1.35, 1.02, 4), {"tol": 0.1}, CONTRADICTS, "above 1.02 ± 0.1"),
    # vacuous bounds decide nothing, whatever the slope
    (("lower", -3.0, -3.2, -2.8, -2.5, 4), {}, UNDECIDED, "vacuous"),
    (("lower", 5.0, 4.0, 6.0, 0.0, 4), {}, UNDECIDED, "vacuous"),
    (("upper", 2.0, 1.9, 2.1, 1.6, 4), {"trivial": 1.5}, UNDECIDED, "vacuous"),
    (("upper", 0.9, 0.8, 1.0, 1.0, 4), {"trivial": 1.0}, UNDECIDED, "vacuous"),
    # too few d, no fit, zero counts, too wide an interval
    (("lower", 0.7, 0.6, 0.8, 0.5, 2), {}, UNDECIDED, "too few d"),
    (("lower", NAN, NAN, NAN, 0.5, 1), {"zeros": (8, 16, 32)}, UNDECIDED, "zero count"),
    (("lower", NAN, NAN, NAN, 0.5, 0), {}, UNDECIDED, "no fit"),
    (("upper", 0.3, -0.9, 0.6, 0.5, 4), {}, UNDECIDED, "wider than 1"),
    # a wide interval entirely on the wrong side still contradicts
    (("upper", 2.5, 1.2, 3.8, 0.5, 4), {}, CONTRADICTS, "above"),
    # a zero at one d is reported beside a supported fit
    (("lower", 0.7, 0.5, 0.9, 0.5, 3), {"zeros": (8,)}, SUPPORTS, "d = [8] left out"),
])
def test_verdict_known_answers(args, kw, expected, words):
    v, why = verdict(*args, **kw)
    assert v == expected and words in why, (v, why)


@pytest.mark.parametrize("mean, lo, hi, n, expected", [
    (0.88, 0.85, 0.91, 120, SUPPORTS),
    (0.80, 0.70, 0.90, 120, SUPPORTS),
    (0.37, 0.30, 0.44, 120, CONTRADICTS),
    (0.55, 0.45, 0.65, 120, UNDECIDED),
    (0.45, 0.30, 0.60, 120, UNDECIDED),  # interval reaches 50%
    (NAN, NAN, NAN, 0, UNDECIDED),
])
def test_share_verdict_known_answers(mean, lo, hi, n, expected):
    assert share_verdict(mean, lo, hi, n)[0] == expected


def _final(d, seed, ratio=1.0, C_m=1.5, lucky=1.0, pure=1.0, T1=10):
    """A final json with made-up observables: counts d^lucky and d^pure (times a seed factor)."""
    k = 1 + 0.01 * seed
    return {"d": d, "m": round(d ** C_m), "seed": seed, "ratio": ratio, "C_m": C_m, "gamma_c0": 5e-4, "eta": 1.0,
            "eps_max": 1.0, "prune_fraction": 0.0, "loss": "infonce", "T1": T1 * d, "T2": -1,
            "observables": {"lucky_counts": [k * d ** lucky], "ordinary_counts": [k * d ** 1.0],
                            "N_sizes": [k * 3.0], "pure_counts": [k * d ** pure],
                            "lucky_kept_frac": 0.9, "lucky_total": 50}}


def test_claims_section_reads_each_verdict_from_its_numbers():
    """Counts growing like d^1 at ratio 1 (ω1 = C_m − (1 + γc0) ≈ 0.4995): the lower bounds are
    supported, the ordinary count's O(d^ω2) (ω2 ≈ 0.5) is contradicted (slope 1), a constant |N_i|
    stays within its O(d^γc0), T_2 is never reached, the lucky share of 0.9 supports."""
    finals = [_final(d, s) for d in (8, 16, 32, 64) for s in range(4)]
    lines = []
    rows = {r["claim"]: r for r in claims.claims_section(finals, lines)}
    assert rows["lucky"]["verdict"] == SUPPORTS and abs(rows["lucky"]["slope"] - 1) < 1e-6
    assert rows["pure"]["verdict"] == SUPPORTS
    assert rows["ordinary"]["verdict"] == CONTRADICTS
    assert rows["N"]["verdict"] == SUPPORTS
    finals_n = [dict(f, observables={**f["observables"], "N_sizes": [d_ ** 0.2]})
                for f in finals for d_ in [f["d"]]]
    n_rows = {r["claim"]: r for r in claims.claims_section(finals_n, [])}
    assert n_rows["N"]["verdict"] == CONTRADICTS  # d^0.2 outgrows O(d^0.0005) at ratio 1
    assert rows["T2"]["verdict"] == UNDECIDED and "never reached" in rows["T2"]["why"]
    assert rows["lucky_pure"]["verdict"] == SUPPORTS
    text = "\n".join(lines)
    assert text.startswith("## Theorem 3.3 and Lemma C.1, claim by claim")
    assert "4 supported" in text or "supported" in text
    # T_1 = 10 d grows with slope 1; the scale d log d/log log d has a steeper finite-d slope
    theta = rows["T1"]["theta"]
    assert theta > 1 and rows["T1"]["verdict"] == (CONTRADICTS if rows["T1"]["hi"] < theta - 0.1
                                                   else SUPPORTS)
    # a vacuous lower bound at ratio 0.5 (ω1 = 1.5 − 4(1 + γc0) < 0) whatever the counts
    finals = [_final(d, s, ratio=0.5) for d in (8, 16, 32) for s in range(4)]
    rows = {r["claim"]: r for r in claims.claims_section(finals, [])}
    assert rows["lucky"]["verdict"] == UNDECIDED and "vacuous" in rows["lucky"]["why"]
    assert np.isfinite(rows["lucky"]["slope"])


def test_eta_threshold_words():
    words = claims._eta_words
    assert "stops holding between η = 1 and 2" in words(32, 1.0, 1.5, {0.5: True, 1.0: True,
                                                                        2.0: False, 6.0: False})
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
            f["observables"] = {**f["observables"], "lucky_kept_frac": share + 0.01 * s,
                                "alive_frac": 1.0}
            finals.append(f)
    lines = []
    rows = claims.eta_section(finals, lines)
    assert [round(r["share"], 3) for r in rows] == [0.915, 0.865, 0.615, 0.315]
    assert "stops holding between η = 1 and 2" in "\n".join(lines)
