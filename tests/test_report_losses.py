"""The loss-family section of Liao's report: each loss's change against InfoNCE, as a sentence and
as numbers with a verdict word in report.json (what `jaxcl compare` reads)."""

import numpy as np
import pytest

from jaxcl.experiments.liao.report.losses import loss_section, verdict_word


def test_verdict_words():
    assert verdict_word((0.3, 0.2, 0.4)) == "raises"
    assert verdict_word((-0.3, -0.4, -0.2)) == "lowers"
    assert verdict_word((0.005, 0.001, 0.009)) == "negligible"  # excludes 0, below 0.01
    assert verdict_word((0.3, -0.1, 0.7)) == "none"
    assert verdict_word((float("nan"),) * 3) == "too few seeds"


@pytest.mark.numerics
def test_changes_against_infonce_by_hand(tmp_path):
    def final(loss, cov, **kw):
        obs = {
            "cov_minor": cov,
            "probe_gap": 0.4,
            "alive_frac": 1.0,
            "cov_major": 0.99,
            "probe_minor": 0.6,
        }
        return {
            "d": 16,
            "ratio": 0.5,
            "prune_fraction": 0.0,
            "loss": loss,
            "observables": obs,
            **kw,
        }

    base = [0.01, 0.02, 0.03]
    finals = [final("infonce", c) for c in base] + [
        final("balanced", c, loss_alpha=1.0, loss_beta=2.5) for c in (0.31, 0.32, 0.33)
    ]
    sec = loss_section(finals)
    rows, lines = sec.summary["losses"], sec.lines
    for name, write in sec.files:
        write(str(tmp_path / name))
    assert [r["loss"] for r in rows] == ["infonce", "balanced(α=1, β=2.5)"]
    assert "vs_infonce" not in rows[0]
    ch = rows[1]["vs_infonce"]["cov_minor"]
    # mean difference 0.3; independent seeds: half-width 1.96 * sqrt(s²/3 + s²/3), s = 0.01
    half = 1.96 * np.sqrt(2 * 0.01**2 / 3)
    np.testing.assert_allclose([ch["mean"], ch["lo"], ch["hi"]], [0.3, 0.3 - half, 0.3 + half])
    assert ch["verdict"] == "raises"
    assert rows[1]["vs_infonce"]["probe_gap"]["verdict"] == "none"  # equal in every seed
    assert any("raises minority coverage by 0.3" in x for x in lines)
    assert (tmp_path / "losses.png").exists()


@pytest.mark.slow
def test_step_control_matches_beta_over_alpha():
    """balanced(1, 2.5) at η = 1 against InfoNCE at η = 2.5: a gain over InfoNCE that the larger
    step alone gives does not survive; one it does not give survives."""

    def final(loss, cov, eta=1.0, **kw):
        obs = {
            "cov_minor": cov,
            "probe_gap": 0.4,
            "alive_frac": 1.0,
            "cov_major": 0.99,
            "probe_minor": 0.6,
        }
        return {
            "d": 16,
            "ratio": 0.5,
            "prune_fraction": 0.0,
            "loss": loss,
            "eta": eta,
            "observables": obs,
            **kw,
        }

    def run(ctrl_cov):
        finals = (
            [final("infonce", c) for c in (0.01, 0.02, 0.03, 0.02)]
            + [
                final("balanced", c, loss_alpha=1.0, loss_beta=2.5)
                for c in (0.31, 0.32, 0.33, 0.32)
            ]
            + [final("infonce", c, eta=2.5) for c in ctrl_cov]
        )
        sec = loss_section(finals)
        return {r["loss"]: r for r in sec.summary["losses"]}, "\n".join(sec.lines)

    rows, text = run((0.30, 0.33, 0.32, 0.31))  # the bigger step alone gives the gain
    ctl = rows["balanced(α=1, β=2.5)"]["vs_step_control"]
    assert ctl["eta"] == 2.5 and ctl["cov_minor"]["verdict"] == "none"
    assert "infonce at η=2.5" in rows and "not shown to survive" in text
    rows, text = run((0.02, 0.03, 0.01, 0.02))
    assert rows["balanced(α=1, β=2.5)"]["vs_step_control"]["cov_minor"]["verdict"] == "raises"
    assert "**survives**" in text
