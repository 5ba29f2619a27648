"""The package as a user installs it: dependencies and extras, the command's fast path,
the built sdist and wheel, the notebooks' install cells, and lint.

The build runs once per session (``built`` fixture): ``python -m build`` makes
the sdist and, from it, the wheel, exactly as a release would.
"""

from __future__ import annotations

import ast
import email
import glob
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
pytestmark = pytest.mark.slow

# A module that makes the named imports fail, as if those packages were not installed.
_BLOCK = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Block())
"""


def _python(code, blocked=(), env=None, cwd=None, timeout=300):
    prelude = _BLOCK.format(blocked=set(blocked)) if blocked else ""
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO,
        env={**os.environ, **(env or {})},
    )


def _tfnorm(*args, env=None):
    return subprocess.run(
        [os.path.join(BIN, "tfnorm"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


# --- the command line -----------------------------------------------------------------


def test_help_and_version_import_neither_tensorflow_nor_keras():
    import tfnorm

    proc = _python(
        "import sys, _tfnorm_cli\n"
        "for argv in (['--version'], ['--help'], []):\n"
        "    try:\n"
        "        _tfnorm_cli.main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'tfnorm', 'numpy') if m in sys.modules)\n"
        "print('IMPORTED', heavy)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert f"tfnorm {tfnorm.__version__}" in proc.stdout
    assert "IMPORTED []" in proc.stdout
    for sub in ("study", "bench", "demo"):
        assert sub in proc.stdout


def test_installed_command_answers_version_and_help():
    import tfnorm

    proc = _tfnorm("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"tfnorm {tfnorm.__version__}"
    assert proc.stderr == ""  # no TensorFlow start-up lines
    proc = _tfnorm("--help")
    assert proc.returncode == 0 and "usage: tfnorm" in proc.stdout and proc.stderr == ""


def test_other_backend_version_works_and_a_command_gives_one_line():
    import tfnorm

    proc = _tfnorm("--version", env={"KERAS_BACKEND": "jax"})
    assert proc.returncode == 0 and proc.stdout.strip() == f"tfnorm {tfnorm.__version__}"
    proc = _tfnorm("study", env={"KERAS_BACKEND": "jax"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tfnorm: error:") and "KERAS_BACKEND=tensorflow" in lines[0]
    assert "'jax'" in lines[0] and "Traceback" not in proc.stderr


def test_subcommand_help_lists_its_arguments():
    proc = _tfnorm("demo", "--help")
    assert proc.returncode == 0 and "--norms" in proc.stdout and "--batch-size" in proc.stdout


def test_loading_a_saved_model_needs_import_tfnorm_as_the_readme_says(tmp_path):
    path = str(tmp_path / "model.keras")
    save = _python(
        "import keras, tfnorm\n"
        "m = keras.Sequential([keras.Input((4, 4, 8)), tfnorm.GroupNormalization(groups=2)])\n"
        f"m.save({path!r})\n"
    )
    assert save.returncode == 0, save.stderr[-3000:]
    without = _python(f"import keras\nkeras.saving.load_model({path!r})\n")
    assert without.returncode != 0
    assert "Could not locate class 'GroupNormalization'" in without.stderr
    assert "'registered_name': 'tfnorm>GroupNormalization'" in without.stderr
    readme = open(os.path.join(REPO, "README.md")).read()
    assert "Could not locate class 'GroupNormalization'" in readme
    with_import = _python(
        f"import keras, tfnorm\nm = keras.saving.load_model({path!r})\n"
        "assert type(m.layers[0]) is tfnorm.GroupNormalization\n"
    )
    assert with_import.returncode == 0, with_import.stderr[-3000:]


def test_readme_distribute_example_runs_as_written():
    readme = open(os.path.join(REPO, "README.md")).read()
    (block,) = [
        b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "distribute.train(" in b
    ]
    proc = _python(block, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("2 replicas; accuracy per epoch:"), proc.stdout


# --- the core and the extras ----------------------------------------------------------

EXTRA_MODULES = ("matplotlib", "aeon", "tensorflow_datasets")


def test_core_works_without_the_extras():
    proc = _python(
        "import sys, numpy as np, keras, tfnorm\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in "
        f"{EXTRA_MODULES!r}]\n"
        "model = keras.Sequential([keras.Input((4, 4, 8)), tfnorm.GroupNormalization(groups=2),\n"
        "                          keras.layers.Flatten(), keras.layers.Dense(3)])\n"
        "swapped = tfnorm.swap_normalization(model, 'layer', match='group')\n"
        "folded = tfnorm.fold_normalization(swapped)\n"
        "print(tfnorm.datasets.load('mnist10k').x_train.shape)\n",
        blocked=EXTRA_MODULES,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(8000, 28, 28, 1)" in proc.stdout


@pytest.mark.parametrize(
    "call, extra",
    [
        ("tfnorm.datasets.load('basicmotions')", "har"),
        ("tfnorm.datasets.load('tfds:mnist')", "tfds"),
        (
            "from tfnorm.study import plot; plot.plot_study([], 'figure.png')",
            "study",
        ),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(call, extra):
    proc = _python(
        "import tfnorm\n"
        "from tfnorm._extras import MissingExtraError\n"
        "try:\n"
        f"    {call}\n"
        "except MissingExtraError as err:\n"
        "    assert isinstance(err, ImportError) and isinstance(err, ValueError)\n"
        "    print('MESSAGE', err)\n",
        blocked=EXTRA_MODULES,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    message = proc.stdout.split("MESSAGE ", 1)[1].strip()
    assert "\n" not in message
    assert f'pip install "tfnorm[{extra}]"' in message and "which is not installed" in message


def test_study_without_matplotlib_stops_before_training():
    proc = _python(
        "import sys, _tfnorm_cli\nsys.exit(_tfnorm_cli.main(['study']))\n",
        blocked=("matplotlib",),
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tfnorm study: error:") and 'pip install "tfnorm[study]"' in last
    assert "Epoch" not in proc.stdout


def _project():
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def test_declared_dependencies_are_the_core_and_the_extras():
    project = _project()
    names = {re.split(r"[<>=!\[ ;]", d)[0] for d in project["dependencies"]}
    assert names == {"tensorflow", "keras", "numpy"}
    extras = project["optional-dependencies"]
    assert {"study", "har", "tfds", "docs", "test"} <= set(extras)
    assert any(d.startswith("matplotlib") for d in extras["study"])
    assert any(d.startswith("aeon") for d in extras["har"])
    assert any(d.startswith("tensorflow-datasets") for d in extras["tfds"])
    # the test extra has every other extra: the suite runs everything
    assert "tfnorm[study,har,tfds,docs]" in extras["test"]
    # each extra's module maps to the extra that installs it
    from tfnorm import _extras

    for module, (_, extra) in _extras.EXTRAS.items():
        assert extra in extras, module


def test_imports_of_optional_packages_stay_inside_functions():
    """No module of tfnorm imports an extra's package at module level."""
    offenders = []
    for path in glob.glob(os.path.join(REPO, "tfnorm", "**", "*.py"), recursive=True):
        tree = ast.parse(open(path).read(), path)
        for node in tree.body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{os.path.relpath(path, REPO)}:{node.lineno} {n}"
                for n in names
                if n.split(".")[0] in EXTRA_MODULES
            ]
    assert offenders == []


# --- the built distributions ----------------------------------------------------------


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), REPO],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sdist,) = glob.glob(str(out / "*.tar.gz"))
    (wheel,) = glob.glob(str(out / "*.whl"))
    return sdist, wheel


def test_twine_check_strict(built):
    proc = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *built],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASSED") == 2


def test_wheel_metadata(built):
    _, wheel = built
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.message_from_bytes(z.read(meta_name))
        (entry,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = z.read(entry).decode()
    assert meta["License-Expression"] == "Apache-2.0"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    classifiers = meta.get_all("Classifier")
    assert "Framework :: Keras" in classifiers
    assert any(c.startswith("Programming Language :: Python :: 3.11") for c in classifiers)
    assert any(c.startswith("Topic :: Scientific/Engineering") for c in classifiers)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(urls)
    assert "normalization" in meta["Keywords"]
    assert set(meta.get_all("Provides-Extra")) >= {"study", "har", "tfds", "docs", "test"}
    core = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert sorted(re.split(r"[<>=!\[ ;]", r)[0] for r in core) == ["keras", "numpy", "tensorflow"]
    assert "tfnorm = _tfnorm_cli:main" in entry_points
    # the package, its data and the command's entry point; no tests
    assert "_tfnorm_cli.py" in names and "tfnorm/datasets/mnist10k.npz" in names
    assert "tfnorm/study/plot.py" in names and "tfnorm/bench/peer_torch.py" in names
    assert not [n for n in names if n.startswith("tests/")]


def test_sdist_carries_its_test_suite_and_runs_it(built, tmp_path):
    sdist, _ = built
    with tarfile.open(sdist) as t:
        t.extractall(tmp_path, filter="data")
    (root,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    for rel in (
        "tests/conftest.py",
        "tests/harness.py",
        "tests/descriptors",
        "tests/fixtures/tfa",
        "tests/test_layers.py",
        "notebooks/01_quickstart.ipynb",
        "docs/conf.py",
        "LICENSE",
        "CHANGELOG.md",
        ".ci/run",
        "_tfnorm_cli.py",
    ):
        assert (root / rel).exists(), rel
    tracked = subprocess.run(
        ["git", "ls-files", "tests/fixtures", "tests/descriptors"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    for rel in tracked.stdout.split():  # every fixture, when run from a git checkout
        assert (root / rel).exists(), rel
    # the sdist's own tests run from the sdist (a quick file of them, this interpreter)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_registry.py"],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert re.search(r"\d+ passed", proc.stdout)


def _install_spec(cell_source):
    """The pip requirement a notebook's first cell installs on Colab."""
    (call,) = [
        node
        for node in ast.walk(ast.parse(cell_source))
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "subprocess.run"
    ]
    parts = [e.value for e in call.args[0].elts if isinstance(e, ast.Constant)]
    assert parts[:3] == ["-m", "pip", "install"], parts
    return parts[-1]


def test_notebook_install_cells_resolve_against_the_built_wheel(built):
    """Each notebook's install cell, with the built wheel in place of the index's tfnorm."""
    _, wheel = built
    specs = set()
    for path in sorted(glob.glob(os.path.join(REPO, "notebooks", "*.ipynb"))):
        with open(path) as f:
            cells = [c for c in json.load(f)["cells"] if c["cell_type"] == "code"]
        spec = _install_spec("".join(cells[0]["source"]))
        assert re.fullmatch(r"tfnorm(\[[a-z,]+\])?", spec), (path, spec)
        specs.add(spec)
    extras = _project()["optional-dependencies"]
    for spec in sorted(specs):
        wanted = re.findall(r"[a-z]+", spec[len("tfnorm") :])
        assert set(wanted) <= set(extras), spec
        target = wheel + spec[len("tfnorm") :]
        # the extras' requirements resolve (against this environment, which has them) ...
        resolved = _pip_dry_run(target)
        assert resolved.returncode == 0, (spec, resolved.stderr[-3000:])
        # ... and the wheel itself installs, even where the same version is installed already
        alone = _pip_dry_run(target, "--ignore-installed", "--no-deps")
        assert alone.returncode == 0, (spec, alone.stderr[-3000:])
        installed = [i["metadata"] for i in json.loads(alone.stdout)["install"]]
        assert [(m["name"], m["version"]) for m in installed] == [("tfnorm", _project_version())]


def _pip_dry_run(target, *flags):
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-"]
        + list(flags)
        + [target],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _project_version():
    import tfnorm

    return tfnorm.__version__


# --- lint -----------------------------------------------------------------------------


def test_ruff_check():
    proc = subprocess.run(
        [os.path.join(BIN, "ruff"), "check", "--no-cache", "."],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-5000:]


def test_ruff_format():
    proc = subprocess.run(
        [os.path.join(BIN, "ruff"), "format", "--no-cache", "--check", "."],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-5000:]


def test_pre_commit_runs_the_same_checks():
    config = os.path.join(REPO, ".pre-commit-config.yaml")
    proc = subprocess.run(
        [os.path.join(BIN, "pre-commit"), "validate-config", config],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = open(config).read()
    assert "ruff check" in text and "ruff format" in text
