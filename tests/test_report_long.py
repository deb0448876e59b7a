"""The long-run section of Liao's report: observables over time (CSV rows = results.jsonl rows,
PNG), the run's history from its invocation records, and the trend comparison."""

import csv
import json

import numpy as np
import pytest

from jaxcl.engine import report, runner
from jaxcl.engine.sweep import loads
from support import tiny_sweep

pytestmark = pytest.mark.slow  # a long-run report from a sweep


def test_long_run_section(tmp_path):
    sweep = loads(
        tiny_sweep(steps=1)
        .replace("steps = 1", 'steps = "T4"')
        .replace("ratio = [0.5, 1.0]", "ratio = [1.0]")
        .replace("[0, 1, 2]", "[0, 1]")
    )
    out = tmp_path / "run"
    runner.run(sweep, str(out), progress=False)
    finals = report.load_finals(str(out))
    d, T4 = finals[0]["d"], finals[0]["T4"]
    # a made-up d-sweep trend at the same ratio and C_m: pure count = 2 (d/4)^0.5 up to d = 4
    trend = tmp_path / "trend.json"
    trend.write_text(
        json.dumps(
            {
                "results": {
                    "liao": {
                        "claims": [
                            {
                                "claim": "pure",
                                "ratio": 1.0,
                                "C_m": finals[0]["C_m"],
                                "slope": 0.5,
                                "lo": 0.4,
                                "hi": 0.6,
                                "means": {"2": 2 * 0.5**0.5, "4": 2.0},
                            }
                        ]
                    }
                }
            }
        )
    )
    report.write_report(str(out), {"trend": str(trend)}, out=str(tmp_path / "res"))
    text = (tmp_path / "res" / "report.md").read_text()
    assert f"The long run: d = {d} through T_3 and T_4" in text
    assert "1 `jaxcl run` invocations; stops: none" in text
    with open(tmp_path / "res" / "trajectory.csv") as f:
        rows = list(csv.DictReader(f))
    with open(out / "results.jsonl") as f:
        jsonl = [json.loads(x) for x in f]
    assert len(rows) == len(jsonl) == 2 * int(np.ceil(round(T4) / 10))
    assert {int(r["seed"]) for r in rows} == {0, 1}
    assert (tmp_path / "res" / "trajectory.png").stat().st_size > 10_000
    extrap = 2.0 * (d / 4) ** 0.5
    res = json.loads((tmp_path / "res" / "report.json").read_text())["results"]["liao"]
    (t,) = res["long_run"]["trend"]
    assert abs(t["extrapolated"] - extrap) < 1e-9
    measured = np.mean([np.mean(f["observables"]["pure_counts"]) for f in finals])
    assert abs(t["measured"] - measured) < 1e-9
