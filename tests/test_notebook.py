"""examples/quickstart.ipynb runs top to bottom in a Jupyter kernel of this interpreter, and is
committed without outputs."""

import os
import sys

import pytest

from support import ROOT

NOTEBOOK = os.path.join(ROOT, "examples", "quickstart.ipynb")


def test_quickstart_is_committed_without_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


@pytest.mark.slow
@pytest.mark.notebook
def test_quickstart_notebook_executes(tmp_path):
    import nbclient
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    # kernel "python3" starts sys.executable (jupyter_client swaps it in for "python"); its cwd
    # is tmp_path, where the notebook writes runs/quickstart; the environment (XLA_FLAGS, the
    # compile cache off, PYTHONPATH) is this process's
    nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the two figures
    assert len(os.listdir(tmp_path / "runs" / "quickstart" / "final")) == 2 * 12
    ran = nb.cells[-1].outputs[0]["text"].strip()
    assert ran == sys.executable  # the kernel is this interpreter (the venv's), not another python
