"""The ``tfnorm`` command line: ``tfnorm study``, ``tfnorm bench``, ...

Sub-commands live in their own modules, each with ``add_arguments(parser)``
and ``run(args)``; bad user input raises :class:`UsageError` (one line, exit 2).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

from tfnorm.__about__ import __version__

# name -> (module, one-line help). Each module defines add_arguments(parser) and run(args) -> int.
SUBCOMMANDS = {
    "demo": (
        "tfnorm.demo",
        "train a small model with a few tfnorm layers on the embedded MNIST digits",
    ),
    "study": (
        "tfnorm.study.cli",
        "may too much batch normalization hurt? when and why? experiments with measured evidence and a computed verdict",
    ),
    "bench": ("tfnorm.bench", "time tfnorm's layers against their Keras twins and the x*2 floor"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfnorm",
        description="Normalization layers for Keras 3 on TensorFlow.",
    )
    parser.add_argument("--version", action="version", version=f"tfnorm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        mod = importlib.import_module(module)
        mod.add_arguments(p)
    return parser


class UsageError(ValueError):
    """Bad command-line input: reported as one line, exit code 2, no traceback."""


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if getattr(args, "command", None) in argv:  # the sub-command's own arguments, as given
        args._argv = argv[argv.index(args.command) + 1 :]
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    mod = importlib.import_module(args._module)
    try:
        return int(mod.run(args) or 0)
    except UsageError as err:
        # Bad input: one line, no traceback, exit code 2.
        print(f"tfnorm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
