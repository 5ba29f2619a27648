"""The ``tfnorm`` command's entry point.

It lives outside the ``tfnorm`` package on purpose: ``import tfnorm`` registers
every layer with Keras, which imports TensorFlow (seconds, and start-up lines
on stderr), while ``tfnorm --help`` and ``tfnorm --version`` need neither.
Those two are answered here; every other command line goes to
:func:`tfnorm.cli.main`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from typing import List, Optional

# name -> (module, one-line help). Each module defines add_arguments(parser) and run(args) -> int.
SUBCOMMANDS = {
    "demo": (
        "tfnorm.demo",
        "batch normalization's moving-average lag in one minute, on the embedded MNIST digits",
    ),
    "study": (
        "tfnorm.study.cli",
        "may too much batch normalization hurt? when and why? experiments with measured "
        "evidence and a computed verdict",
    ),
    "bench": (
        "tfnorm.bench",
        "time tfnorm's layers against their Keras twins, PyTorch, Keras on JAX and the x*2 floor",
    ),
}


def version() -> str:
    """tfnorm's version, read from ``tfnorm/__about__.py`` without importing the package."""
    spec = importlib.util.find_spec("tfnorm")  # locates the package; runs none of it
    path = os.path.join(list(spec.submodule_search_locations)[0], "__about__.py")
    about = importlib.util.spec_from_file_location("_tfnorm_about", path)
    module = importlib.util.module_from_spec(about)
    about.loader.exec_module(module)
    return module.__version__


def build_parser(with_arguments: bool = True) -> argparse.ArgumentParser:
    """The ``tfnorm`` parser; ``with_arguments=False`` leaves the sub-commands' own out.

    The sub-commands' arguments come from their modules, which import tfnorm
    (and so TensorFlow); the top-level help only lists the sub-commands.
    """
    parser = argparse.ArgumentParser(
        prog="tfnorm",
        description="Normalization layers for Keras 3 on TensorFlow.",
    )
    parser.add_argument("--version", action="version", version=f"tfnorm {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if with_arguments:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "--version"):
        parser = build_parser(with_arguments=False)
        if not argv:
            parser.print_help()
            return 0
        parser.parse_args(argv[:1])  # prints the help or the version, and exits
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up lines
    try:
        from tfnorm.cli import main as run  # imports tfnorm, and so TensorFlow
    except ImportError as err:
        if getattr(err, "keras_backend", None) is None:
            raise
        # Keras is set to another backend: one line, no traceback.
        print(f"tfnorm: error: {err}", file=sys.stderr)
        return 2
    return run(argv)


if __name__ == "__main__":
    raise SystemExit(main())
