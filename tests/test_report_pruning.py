"""The pruning report's verdict per mode (report/pruning.py), fed made-up finals with known
answers: a change counts only when its 95% interval over seeds excludes 0."""

import math

import numpy as np
import pytest

from jaxcl.experiments.liao.report import pruning as rp

JITTER = np.array([0.0, 0.01, -0.01, 0.0])  # sd 0.0082, 95% half-width 0.008 with 4 seeds


def _final(mode, alpha, seed, cov, gap, pure=0.0, noise=0.4, prune_at=None):
    d, n_major = 8, 4
    obs = {
        "cov_minor_kept": cov,
        "probe_gap": gap,
        "noise_frac_kept": noise,
        "pure_counts": [3] * n_major + [pure] * (d - n_major),
        "pure_learner_counts": [3] * d,
        "probe_major": 0.9,
        "probe_minor": 0.9 - gap,
        "cov_major_kept": 0.9,
        "purity_kept": 0.5,
        "cov_minor": cov,
        "lucky_total": 0,
        "alive_frac": 1.0,
    }
    f = {
        "ratio": 0.5,
        "d": d,
        "m": 22,
        "n_major": n_major,
        "seed": seed,
        "prune_fraction": alpha,
        "observables": obs,
    }
    if mode is not None:
        f["prune_mode"] = mode
    if prune_at is not None:
        f["prune_at"] = prune_at
    return f


def _seeds(mode, alpha, cov, gap, jitter=JITTER, **kw):
    return [_final(mode, alpha, s, cov + jitter[s], gap + jitter[s], **kw) for s in range(4)]


def _finals():
    return (
        _seeds("neurons", 0.0, 0.10, 0.30)  # baseline, written as mode neurons
        + _seeds("weights", 0.0, 0.10, 0.30)  # the same runs again: kept once per seed
        + _seeds("weights", 0.3, 0.60, 0.05, pure=2.0, noise=0.1)  # clearly restored
        + _seeds("neurons", 0.3, 0.10, 0.30, jitter=np.array([0.02, -0.02, 0.01, -0.01])[::-1])
        + _seeds("neurons_once", 0.1, 0.40, 0.45)  # coverage up, gap worse: no
        + _seeds("neurons_once", 0.3, 0.40, 0.30)  # coverage up, gap unchanged: partly
        + _seeds("neurons_once", 0.3, 0.105, 0.295, prune_at="T2")  # below NEGLIGIBLE
        + _seeds("neurons_once", 0.1, 0.30, 0.10, prune_at="T2")
    )  # both better, cov < 0.5


def test_significant_and_restoration_by_hand():
    assert rp.significant((0.1, 0.05, 0.15), +1) == 1
    assert rp.significant((0.1, 0.05, 0.15), -1) == -1
    assert rp.significant((0.1, -0.01, 0.21), +1) == 0  # interval holds 0
    assert rp.significant((0.005, 0.004, 0.006), +1) == 0  # below NEGLIGIBLE
    assert rp.significant((math.nan,) * 3, +1) == 0
    up, down, flat = (0.2, 0.1, 0.3), (-0.2, -0.3, -0.1), (0.0, -0.1, 0.1)
    rest = {"pure_minor": flat, "noise_frac_kept": flat}
    assert rp.restoration({"cov_minor_kept": up, "probe_gap": down, **rest}, 0.6) == 2
    assert rp.restoration({"cov_minor_kept": up, "probe_gap": down, **rest}, 0.3) == 1  # < 0.5
    assert rp.restoration({"cov_minor_kept": up, "probe_gap": flat, **rest}, 0.6) == 1
    assert rp.restoration({"cov_minor_kept": flat, "probe_gap": down, **rest}, 0.6) == 1
    assert rp.restoration({"cov_minor_kept": up, "probe_gap": up, **rest}, 0.6) == 0
    assert rp.restoration({"cov_minor_kept": flat, "probe_gap": flat, **rest}, 0.6) == 0


@pytest.mark.numerics
def test_mode_verdicts_on_made_up_finals():
    got = {v["mode"]: v for v in rp.mode_verdicts(_finals())}
    assert set(got) == {"weights", "neurons", "neurons_once@T1", "neurons_once@T2"}
    assert got["weights"]["word"] == "yes" and got["weights"]["best_alpha"] == 0.3
    assert got["neurons"]["word"] == "no"
    assert got["neurons_once@T1"]["word"] == "partly"
    assert got["neurons_once@T1"]["best_alpha"] == 0.3
    assert got["neurons_once@T2"]["word"] == "partly"
    assert got["neurons_once@T2"]["best_alpha"] == 0.1
    # the numbers: weights raises minority coverage by 0.5, interval ± 1.96·sd·sqrt(2/4)
    mid, lo, hi = got["weights"]["by_alpha"][0.3]["cov_minor_kept"]
    half = 1.96 * math.hypot(np.std(JITTER, ddof=1) / 2, np.std(JITTER, ddof=1) / 2)
    assert math.isclose(mid, 0.5) and math.isclose(hi - mid, half) and math.isclose(mid - lo, half)
    assert math.isclose(got["weights"]["by_alpha"][0.3]["pure_minor"][0], 2.0)
    assert math.isclose(got["weights"]["by_alpha"][0.3]["noise_frac_kept"][0], -0.3)


@pytest.mark.slow
def test_section_states_each_mode(tmp_path):
    sec = rp.pruning_section(_finals())
    summary, text = sec.summary["pruning"], "\n".join(sec.lines)
    for name, write in sec.files:
        write(str(tmp_path / name))
    assert "ratio 0.5, d 8, weights: **yes** (at α = 0.3" in text
    assert "raises minority coverage (kept neurons) by 0.5" in text
    assert "ratio 0.5, d 8, neurons: **no**" in text
    assert "neurons_once@T1: **partly**" in text
    assert (tmp_path / "pruning.png").exists()
    assert {s["mode"]: s["word"] for s in summary}["weights"] == "yes"
    assert "| 0.5 | 8 | off | 0 | 4 |" in text  # the baseline once, not twice


def test_finals_without_prune_mode_read_as_neurons():
    """Finals with no prune_mode field: mode "neurons"; no α = 0 baseline: said so."""
    finals = _seeds(None, 0.2, 0.3, 0.2)
    assert rp.mode_label(finals[0]) == "neurons"
    (v,) = rp.mode_verdicts(finals)
    assert v["level"] is None
    assert "no α = 0 baseline" in rp._statement(v)
