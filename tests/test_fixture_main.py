"""Refactor guard (issue: one engine, several experiments): with `loss = "infonce"` or no `loss`
field, the final arrays of sweeps/figure1.toml and of a d = 32 grid are those that commit
2499e74 wrote before the engine/experiment split and the loss family, to 1e-6 relative.

The fixture (tests/fixtures/main_arrays.npz) was made by tests/fixtures/make_main_arrays.py at
that commit. It guards the refactor; the independent checks of the same arrays are the tests
of the step against autodiff and of the observables against tests/reference.py.
"""

import os

import numpy as np

from jaxcl.engine.cli import main
from support import ROOT

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "main_arrays.npz")
D32 = """
[base]
d = 32
C_m = 1.5
steps = 150
log_every = 50
{extra}
[grid]
ratio = [0.25, 1.0]
seed = [0]
"""


def _arrays(out) -> dict:
    import json

    got = {}
    for name in sorted(os.listdir(out / "final")):
        if not name.endswith(".json"):
            continue
        info = json.loads((out / "final" / name).read_text())
        key = f"d{info['d']}_r{info['ratio']:g}_s{info['seed']}"
        with np.load(out / "final" / name.replace(".json", ".npz")) as z:
            got.update({f"{key}/{k}": z[k] for k in z.files})
    return got


def _check(got: dict, keys: list[str]) -> None:
    with np.load(FIXTURE) as want:
        assert keys, "no fixture arrays selected"
        for k in keys:
            a, b = got[k], want[k]
            assert a.shape == b.shape and a.dtype == b.dtype, k
            # relative to the array's scale, so entries near zero are held to the same bar
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * float(np.abs(b).max()),
                                       err_msg=k)


def test_d32_grid_equals_main(tmp_path):
    """With `loss = "infonce"` written out (figure1.toml below has no loss field)."""
    (tmp_path / "s.toml").write_text(D32.format(extra='loss = "infonce"'))
    assert main(["run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    got = _arrays(tmp_path / "o")
    with np.load(FIXTURE) as want:
        keys = [k for k in want.files if k.startswith("d32_")]
    assert len(keys) == 2 * 5 and set(keys) == set(got)
    _check(got, keys)


def test_figure1_equals_main(tmp_path):
    assert main(["run", os.path.join(ROOT, "sweeps", "figure1.toml"), "--out",
                 str(tmp_path / "f1"), "--no-progress"]) == 0
    got = _arrays(tmp_path / "f1")
    with np.load(FIXTURE) as want:
        keys = [k for k in want.files if k.startswith("d9_")]
    assert len(keys) == 24 * 5 and set(keys) == set(got)
    _check(got, keys)
