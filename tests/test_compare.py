"""`jaxcl compare`: rows matched by their identifying fields whatever their order, verdicts equal
or not, intervals overlapping or not, entries in one report only; exit 1 on a differing verdict."""

import json

from jaxcl.engine import compare
from jaxcl.engine.cli import main


def _report(tmp_path, name, results):
    d = tmp_path / name
    d.mkdir()
    (d / "report.json").write_text(json.dumps({"results": results}))
    return str(d)


A = {
    "liao": {
        "losses": [
            {
                "d": 16,
                "ratio": 0.5,
                "loss": "infonce",
                "cov_minor": {"mean": 0.001, "lo": 0.0, "hi": 0.002},
            },
            {
                "d": 16,
                "ratio": 0.5,
                "loss": "balanced",
                "cov_minor": {"mean": 0.3, "lo": 0.2, "hi": 0.4},
                "vs_infonce": {
                    "cov_minor": {"mean": 0.3, "lo": 0.2, "hi": 0.4, "verdict": "raises"}
                },
            },
        ],
        "claims": [
            {
                "claim": "|M_j*|",
                "ratio": 1.0,
                "slope": 0.45,
                "lo": 0.3,
                "hi": 0.6,
                "verdict": "supports",
            }
        ],
    }
}


def test_same_report_in_another_order_agrees(tmp_path):
    b = json.loads(json.dumps(A))
    b["liao"]["losses"].reverse()
    rows = compare.compare(A, b)
    kinds = sorted(r["kind"] for r in rows)
    # 2 verdicts (the loss's change, the claim), 4 intervals (2 rows, the change, the slope)
    assert kinds == ["interval"] * 4 + ["verdict"] * 2
    assert all(r["agree"] for r in rows)
    assert main(["compare", _report(tmp_path, "a", A), _report(tmp_path, "b", b)]) == 0


def test_differences_are_found(tmp_path, capsys):
    b = json.loads(json.dumps(A))
    row = b["liao"]["losses"][1]
    row["cov_minor"] = {"mean": 0.6, "lo": 0.5, "hi": 0.7}  # no overlap with [0.2, 0.4]
    row["vs_infonce"]["cov_minor"].update(verdict="none", lo=-0.1)
    b["liao"]["claims"][0].update(slope=0.5, lo=0.35, hi=0.65)  # overlaps: agrees
    b["liao"]["losses"].append({"d": 32, "ratio": 0.5, "loss": "infonce"})
    rows = {(r["kind"], r["path"]): r for r in compare.compare(A, b)}
    bad = sorted(k for k, r in rows.items() if not r["agree"])
    assert bad == [
        ("interval", "liao.losses[loss=balanced, d=16, ratio=0.5].cov_minor"),
        ("missing", "liao.losses[loss=infonce, d=32, ratio=0.5]"),
        ("verdict", "liao.losses[loss=balanced, d=16, ratio=0.5].vs_infonce.cov_minor.verdict"),
    ]
    out = str(tmp_path / "t.md")
    assert (
        main(["compare", _report(tmp_path, "a", A), _report(tmp_path, "b", b), "--out", out]) == 1
    )
    text = open(out).read()
    assert text.startswith(
        "1/2 verdicts agree, 3/4 intervals overlap, 1 entries in one report only"
    )
    assert "| raises | none | **no** |" in text
    assert main(["compare", str(tmp_path / "nowhere"), out]) == 2
    assert "no report.json" in capsys.readouterr().err
