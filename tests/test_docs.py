"""The API reference (docs/) builds with warnings as errors, and its pages show what they must.

One ``sphinx-build -W --keep-going -b html docs OUT`` in a subprocess (about 10 s on two
cores); the checks then read the HTML it wrote.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import fcntl
except ImportError:  # not on Windows: each xdist worker then builds its own copy
    fcntl = None

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# What the build imports, by the name it is imported under (the MathJax copy's is hyphenated).
NEEDED = ("sphinx", "furo", "sphinx-mathjax-offline")


def _build(out: Path):
    """Builds the site into ``out``; returns ``out``, or why there is no site."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        return (
            f"building the docs needs {', '.join(missing)}, which is not installed: "
            f"install the test extra, pip install -e '.[test]' (or the docs extra, '.[docs]')"
        )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(DOCS),
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # TensorFlow's start-up lines (absl, oneDNN, CUDA) are not Sphinx's
    report = "\n".join(
        line
        for line in proc.stderr.splitlines()
        if not line.startswith(("I0000", "W0000", "E0000")) and "absl::InitializeLog" not in line
    )
    if proc.returncode != 0:
        return f"sphinx-build -W failed (exit {proc.returncode}):\n{report[-6000:]}"
    return out


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The built site's folder, or why there is none (each test then fails with that).

    Under pytest-xdist the workers of one run share a single build: the first to take
    the lock builds, the others wait for it and read its result.
    """
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None or fcntl is None:
        return _build(tmp_path_factory.mktemp("docs_html"))
    shared = tmp_path_factory.getbasetemp().parent / f"docs-{run}"
    shared.mkdir(exist_ok=True)
    result = shared / "result.txt"
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not result.exists():
                outcome = _build(shared / "html")
                result.write_text("ok" if isinstance(outcome, Path) else outcome)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    text = result.read_text()
    return shared / "html" if text == "ok" else text


def _site(built) -> Path:
    """The site's folder; a failed test (not an error, not a skip) when there is none."""
    if isinstance(built, str):
        pytest.fail(built, pytrace=False)
    return built


def _page(site: Path, name: str) -> str:
    path = site / f"{name}.html"
    assert path.is_file(), f"{name}.html was not built"
    return path.read_text(encoding="utf-8")


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def _doctests(page: str) -> list:
    """The text of every highlighted ``>>>`` example block of a page."""
    blocks = re.findall(
        r'<div class="doctest highlight-default notranslate">(.*?)</pre>', page, flags=re.S
    )
    return [_text(block) for block in blocks]


def _documented(page: str) -> set:
    return set(re.findall(r'<dt class="sig sig-object py" id="([\w.]+)"', page))


def test_group_normalization_page(built):
    site = _site(built)
    page = _page(site, "layers/group")
    # the formula as display math for MathJax, not as text
    display = re.findall(r'<div class="math notranslate nohighlight">(.*?)</div>', page, re.S)
    assert any(r"\sqrt{\sigma_g^2 + \epsilon}" in html.unescape(m) for m in display), display
    # the class, with the signature of its __init__ (not Keras' Layer.__new__(*args, **kwargs))
    assert {"tfnorm.GroupNormalization", "tfnorm.InstanceNormalization"} <= _documented(page)
    signature = _text(page.split('id="tfnorm.GroupNormalization"', 1)[1].split("</dt>", 1)[0])
    assert "groups=32" in signature and "*args" not in signature, signature
    # arguments, the runnable example (highlighted), the paper
    assert "must divide the channel count" in page
    examples = _doctests(page)
    assert any(
        ">>> gn = tfnorm.GroupNormalization(groups=2)" in e and "(2, 5, 5, 4)" in e
        for e in examples
    ), examples
    assert '<span class="kn">import</span>' in page  # pygments markup inside the example
    assert "Group Normalization." in _text(page) and "ECCV 2018" in page


def test_math_is_served_with_the_site(built):
    site = _site(built)
    page = _page(site, "layers/group")
    sources = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', page, flags=re.I)
    assert sources, "no MathJax script on the page"
    for src in sources:
        assert not src.startswith(("http:", "https:", "//")), f"MathJax from the network: {src}"
        assert (site / "layers" / src).resolve().is_file(), f"{src} is not part of the site"


def test_every_public_layer_has_formula_example_and_reference(built):
    site = _site(built)
    import tfnorm

    documented = {}
    for path in sorted((site / "layers").glob("*.html")):
        page = path.read_text(encoding="utf-8")
        for name in _documented(page):
            documented[name] = page
    for name in tfnorm.layers.__all__:
        if name == "NormalizationLayer":
            continue
        page = documented.get(f"tfnorm.{name}")
        assert page is not None, f"tfnorm.{name} is on no page under docs/layers/"
        body = page.split(f'id="tfnorm.{name}"', 1)[1]
        body = body.split('<dt class="sig sig-object py" id="tfnorm.', 1)[0]
        assert any(f"tfnorm.{name}(" in e for e in _doctests(body)), f"{name}: no example"
        assert '<p class="rubric">Reference' in body, f"{name}: no Reference section"
        assert '<div class="math notranslate nohighlight">' in page, f"{name}: no formula"
    assert "tfnorm.NormalizationLayer" in _documented(_page(site, "registry"))


def test_tool_pages(built):
    site = _site(built)
    expect = {
        "swap": ["tfnorm.swap_normalization", "tfnorm.swap.SwapReport"],
        "registry": ["tfnorm.get", "tfnorm.register", "tfnorm.layers.registration.Traits"],
        "recompute": ["tfnorm.recompute_batch_statistics", "tfnorm.recompute.RecomputeReport"],
        "distribute": ["tfnorm.distribute.train", "tfnorm.distribute.make_strategy"],
        "study": ["tfnorm.study.run_study", "tfnorm.study.expand_configs"],
    }
    for name, objects in expect.items():
        missing = set(objects) - _documented(_page(site, name))
        assert not missing, f"{name}.html lacks {sorted(missing)}"
    # the command-line pages carry the parsers' own --help
    assert "usage: tfnorm study" in _text(_page(site, "study"))
    bench = _text(_page(site, "bench"))
    assert "usage: tfnorm bench" in bench and "--quick" in bench
    # the registry table is generated from the registry
    registry = _text(_page(site, "registry"))
    assert "evonorm_s0" in registry and "EvoNormS0" in registry


def test_porting_page(built):
    site = _site(built)
    page = _text(_page(site, "porting"))
    assert "custom_objects=tfnorm.compat.tfa_objects()" in page
    for cls in (
        "GroupNormalization",
        "InstanceNormalization",
        "WeightNormalization",
        "FilterResponseNormalization",
        "TLU",
        "SpectralNormalization",
    ):
        assert f"Addons>{cls}" in page, cls
    assert "momentum=0.9" in page  # PyTorch's momentum=0.1
