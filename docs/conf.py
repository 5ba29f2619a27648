"""Sphinx configuration of the tfnorm API reference (``sphinx-build -W -b html docs OUT``)."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, os.path.dirname(HERE))  # the checkout, when tfnorm is not installed

# autodoc imports tfnorm, and tfnorm imports TensorFlow: keep its C++ start-up lines quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from tfnorm.__about__ import __version__  # noqa: E402

project = "tfnorm"
author = "the tfnorm authors"
copyright = "the tfnorm authors, Apache-2.0"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax 3 served from the built site itself (_static/mathjax/), not from a CDN:
    # the formulas render offline too.
    "sphinx-mathjax-offline",
    "tfnorm_docs",  # _ext/tfnorm_docs.py: command-line help and docstring clean-ups
]

exclude_patterns = ["_build", "study"]
templates_path = []
html_static_path = []

# Google-style docstrings with Args / Call arguments / Example / Reference sections.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_param = False  # "center, scale: ..." stays one entry, as written
napoleon_custom_sections = [
    ("Call arguments", "params_style"),
    "Reference",
]

autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False  # Keras' own method docstrings are not tfnorm's API
autodoc_preserve_defaults = True
autodoc_typehints = "signature"
autoclass_content = "class"

pygments_style = "sphinx"
# Literal blocks ("::") in the docstrings hold formulas and shell lines, not Python;
# the ">>>" examples and code-block directives are highlighted all the same.
highlight_language = "none"

html_theme = "furo"
html_title = f"tfnorm {release}"
html_theme_options = {"navigation_with_keys": True}
html_show_sourcelink = False
