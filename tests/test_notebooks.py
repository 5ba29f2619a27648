"""Every notebook in notebooks/ runs top to bottom (small-data mode) in a fresh kernel.

The kernel is this interpreter (``sys.executable``), registered in a temporary
kernelspec directory, so the test works the same in the shared venv and in a fresh
``python3 -m venv .venv && .venv/bin/pip install ".[test]"``: a ``python3`` kernelspec
found elsewhere on the machine (which could point at another Python) is never used.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(REPO, "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))
COLAB = "https://colab.research.google.com/github/tfnorm/tfnorm/blob/main/notebooks/{}"
#: The tutorials the project promises (more may be added; none may be left out of the run).
REQUIRED = {
    "01_quickstart.ipynb",
    "02_too_much_batchnorm.ipynb",
    "03_online_norm_tiny_batches.ipynb",
    "04_adanorm_and_cosine.ipynb",
    "05_swap_bn_to_gn.ipynb",
    "06_export_and_serve.ipynb",
}


def _name(path):
    return os.path.basename(path)


def _load(path):
    with open(path) as f:
        return json.load(f)


def _code(nb):
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_every_notebook_in_the_folder_is_executed():
    # The execution test below is parametrized over this very glob; this test fails if a
    # notebook is missing, if the parametrization was narrowed, or if a notebook file
    # appeared that the run did not see (e.g. a stale list).
    on_disk = sorted(_name(p) for p in glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))
    assert on_disk == [_name(p) for p in NOTEBOOKS]
    assert REQUIRED <= set(on_disk), f"missing notebooks: {sorted(REQUIRED - set(on_disk))}"
    params = test_notebook_runs_top_to_bottom.pytestmark
    (mark,) = [m for m in params if m.name == "parametrize"]
    assert [_name(p) for p in mark.args[1]] == on_disk
    assert not any(m.name in ("skip", "skipif", "xfail") for m in params)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_name)
def test_notebook_is_a_colab_tutorial(path):
    nb = _load(path)
    assert nb["nbformat"] == 4
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown"
    assert COLAB.format(_name(path)) in "".join(first["source"])  # the "Open in Colab" badge
    code = _code(nb)
    # the first code cell installs tfnorm, on Colab only
    assert "google.colab" in code[0] and "pip" in code[0] and "install" in code[0]
    assert re.search(r"^if IN_COLAB:", code[0], flags=re.M)
    assert not any("google.colab" in c or "pip install" in c for c in code[1:])
    assert any('os.environ.get("TFNORM_NOTEBOOK_SMALL")' in c for c in code)
    # shipped clean: no outputs, no execution counts
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.fixture(scope="module")
def kernel_spec_dir(tmp_path_factory):
    """A kernelspec named python3 that runs *this* interpreter."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / "python3"
    spec.mkdir()
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (tfnorm tests)",
                "language": "python",
            }
        )
    )
    return str(root)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_name)
def test_notebook_runs_top_to_bottom(path, tmp_path, kernel_spec_dir):
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    ksm = KernelSpecManager(kernel_dirs=[kernel_spec_dir], ensure_native_kernel=False)
    km = KernelManager(kernel_name="python3", kernel_spec_manager=ksm)
    assert km.kernel_spec.argv[0] == sys.executable
    env = dict(os.environ)
    env.update(
        {
            "TFNORM_NOTEBOOK_SMALL": "1",
            "KERAS_BACKEND": "tensorflow",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "MPLBACKEND": "Agg",
            "PYTHONPATH": os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")])),
        }
    )
    client = NotebookClient(
        nb, km=km, timeout=300, allow_errors=False, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute(env=env, cwd=str(tmp_path))
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells and all(c.execution_count for c in code_cells)
    errors = [o for c in code_cells for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
