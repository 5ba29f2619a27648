"""``tfnorm bench``: tfnorm's layers timed against their Keras twins and the elementwise floor.

For every public layer (discovered at run time), each suitable shape, fp32
and bf16, with and without XLA, the forward pass (inference) and a training
step (forward plus gradients with respect to the input and the weights) are
timed together with the Keras twin or the composition the layer replaces,
and with ``x * 2`` on the same tensor under the same compile setting: the
cheapest thing that reads and writes it. The three are run round-robin so
that machine noise hits them alike; medians after warm-up are reported.

Run ``tfnorm bench`` (about ten minutes on two cores), ``tfnorm bench --quick``
(about one), ``--json`` for machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import sys

_CHOICES = {
    "shapes": ("conv", "seq", "dense", "conv-small", "seq-small", "vol-small"),
    "dtypes": ("float32", "bfloat16"),
    "compile": ("graph", "xla"),
    "modes": ("forward", "train"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="about one minute: the layers with a Keras twin or a goal "
                             "(unless --layers), fp32, each layer's first shape, fewer repeats")
    parser.add_argument("--json", action="store_true",
                        help="print JSON (machine description, settings, rows, skipped) "
                             "instead of the table")
    parser.add_argument("--save", metavar="PATH",
                        help="also write the JSON to PATH")
    parser.add_argument("--layers", metavar="NAMES",
                        help="comma-separated short or class names (default: every public layer)")
    parser.add_argument("--shapes", metavar="NAMES",
                        help="comma-separated among conv (32x56x56x64), seq (16x256x1024), "
                             "dense (256x1024), conv-small (8x28x28x64), seq-small (16x256x128), "
                             "vol-small (2x8x16x16x32); "
                             "default: the shapes that suit each layer")
    parser.add_argument("--all-shapes", action="store_true",
                        help="layers without a Keras twin on every shape that suits them "
                             "(default: their first)")
    parser.add_argument("--dtypes", metavar="NAMES",
                        help="comma-separated among float32, bfloat16 (default both; "
                             "--quick: float32)")
    parser.add_argument("--compile", metavar="NAMES",
                        help="comma-separated among graph (tf.function) and xla "
                             "(tf.function(jit_compile=True)); default both")
    parser.add_argument("--modes", metavar="NAMES",
                        help="comma-separated among forward, train (default both)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds per configuration (default 15; --quick: 5)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed calls per callable first (default 3; --quick: 2)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress lines on stderr")
    # Shrinks every shape to a few KiB: exercises the whole command in seconds.
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)


def _list(value, what):
    from tfnorm.cli import UsageError

    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    valid = _CHOICES[what]
    bad = [v for v in items if v not in valid]
    if bad or not items:
        raise UsageError(f"--{what} {value!r}: unknown {bad or 'empty list'}; "
                         f"choose among {', '.join(valid)}")
    return items


def _command_line() -> str:
    args = [a for a in sys.argv[1:]]
    return "tfnorm " + " ".join(args) if args else "tfnorm bench"


def run(args) -> int:
    from tfnorm.cli import UsageError

    shapes = _list(args.shapes, "shapes")
    dtypes = _list(args.dtypes, "dtypes")
    compiles = _list(args.compile, "compile")
    modes = _list(args.modes, "modes")
    for name in ("repeats", "warmup"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be >= 1, received --{name} {value}")

    from tfnorm.bench import plan, report, runner

    settings = runner.Settings(
        shapes=shapes,
        dtypes=dtypes or (["float32"] if args.quick else list(runner.DTYPES)),
        compiles=compiles or list(runner.COMPILES),
        modes=modes or list(runner.MODES),
        repeats=args.repeats or (5 if args.quick else 15),
        warmup=args.warmup or (2 if args.quick else 3),
        first_shape_only=args.quick,
        all_shapes=args.all_shapes,
        goals_only=args.quick and not args.layers,
        tiny=args.tiny,
    )
    try:
        subjects, skipped = plan.subjects(args.layers.split(",") if args.layers else None)
    except KeyError as err:
        raise UsageError(err.args[0]) from None
    if not subjects:
        raise UsageError("no layer to benchmark")

    meta = report.machine()
    meta["settings"] = {
        "quick": args.quick, "tiny": args.tiny, "all_shapes": args.all_shapes,
        "repeats": settings.repeats,
        "warmup": settings.warmup, "dtypes": list(settings.dtypes),
        "compile": list(settings.compiles), "modes": list(settings.modes),
        "shapes": {k: list(v) for k, v in
                   (plan.TINY_SHAPES if args.tiny else plan.SHAPES).items()},
        "train_floor_passes": runner.TRAIN_FLOOR_PASSES,
    }
    rows, failed = runner.run(subjects, settings, progress=not args.no_progress)
    skipped = skipped + failed
    document = {"machine": meta, "command": _command_line(), "rows": rows, "skipped": skipped}
    if args.save:
        with open(args.save, "w") as fh:
            json.dump(document, fh, indent=1)
    if args.json:
        json.dump(document, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(report.text(meta, rows, skipped, document["command"]))
    return 0
