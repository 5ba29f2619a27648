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

import _tfnorm_cli

SUBCOMMANDS = _tfnorm_cli.SUBCOMMANDS


def build_parser() -> argparse.ArgumentParser:
    """The ``tfnorm`` parser with every sub-command's arguments."""
    return _tfnorm_cli.build_parser(with_arguments=True)


class UsageError(ValueError):
    """Bad command-line input: reported as one line, exit code 2, no traceback."""


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
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
