"""``tfnorm bench``: tfnorm's layers timed against their Keras twins and the elementwise floor.

For every public layer (discovered at run time), each suitable shape, fp32
and bf16, with and without XLA, the forward pass (inference) and a training
step (forward plus gradients with respect to the input and the weights) are
timed together with the Keras twin or the composition the layer replaces,
and with ``x * 2`` on the same tensor under the same compile setting: the
cheapest thing that reads and writes it. The three are run round-robin so
that machine noise hits them alike; medians after warm-up are reported.

``--peers torch,jax`` adds the same operations in PyTorch and in Keras 3 on
JAX, each in its own process and interpreter (:mod:`tfnorm.bench.peers`),
sampled in the same rounds; ``--models`` times whole models (ResNet50,
MobileNetV2, a transformer encoder) with Keras' and tfnorm's normalization
(:mod:`tfnorm.bench.models`).

Run ``tfnorm bench`` (about four minutes on two cores), ``tfnorm bench --quick``
(about one), ``--json`` for machine-readable output. ``--save RUN.json`` keeps
a run; ``tfnorm bench --from RUN.json --markdown`` prints it as the README's
tables (the README's are the runs saved in ``docs/bench/``).
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
    "peers": ("torch", "jax"),
    "models": ("resnet50", "mobilenetv2", "transformer"),
}
# Flags that choose layer rows, meaningless with --models.
_LAYER_ONLY = ("layers", "shapes", "all_shapes", "peers")

EPILOG = """\
peers (--peers torch,jax): each peer runs in its own process, from the first of
  1. the interpreter named by TFNORM_BENCH_TORCH_PYTHON or TFNORM_BENCH_JAX_PYTHON
     (e.g. /path/to/venv/bin/python), when that variable is set;
  2. this Python, when it can import torch (for torch) or jax and keras (for jax);
and is reported as "skipped (not installed: ...)" otherwise. The workers import
neither TensorFlow nor tfnorm: a peer's environment needs only its framework
(torch; or jax, jaxlib and keras), e.g.
  TFNORM_BENCH_TORCH_PYTHON=/tmp/peer-torch/bin/python \\
  TFNORM_BENCH_JAX_PYTHON=/tmp/peer-jax/bin/python tfnorm bench --peers torch,jax
torch: torch.nn.functional ops, eager, batch/group/instance norm in NCHW (NCL for
sequences), layer/RMS norm channels-last, bfloat16 weights for bf16. jax: the Keras
layers on the JAX backend under jax.jit, channels-last, mixed_bfloat16 for bf16.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--quick",
        action="store_true",
        help="about one minute: the layers with a Keras twin or a goal "
        "(unless --layers), fp32, each layer's first shape, fewer repeats; "
        "too few to judge goals: they are listed without ok/MISS, "
        "under a warning",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON (machine description, settings, rows, skipped) instead of the table",
    )
    parser.add_argument("--save", metavar="PATH", help="also write the JSON to PATH")
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the results as the README's Markdown tables instead of the text table",
    )
    parser.add_argument(
        "--from",
        dest="from_json",
        metavar="PATH",
        help="render a run saved with --save (text, --markdown or --json) instead of running one",
    )
    parser.add_argument(
        "--layers",
        metavar="NAMES",
        help="comma-separated short or class names (default: every public layer)",
    )
    parser.add_argument(
        "--shapes",
        metavar="NAMES",
        help="comma-separated among conv (32x56x56x64), seq (16x256x1024), "
        "dense (256x1024), conv-small (8x28x28x64), seq-small (16x256x128), "
        "vol-small (2x8x16x16x32); "
        "default: the shapes that suit each layer",
    )
    parser.add_argument(
        "--all-shapes",
        action="store_true",
        help="layers without a Keras twin on every shape that suits them (default: their first)",
    )
    parser.add_argument(
        "--dtypes",
        metavar="NAMES",
        help="comma-separated among float32, bfloat16 (default both; --quick: float32)",
    )
    parser.add_argument(
        "--compile",
        metavar="NAMES",
        help="comma-separated among graph (tf.function) and xla "
        "(tf.function(jit_compile=True)); default both",
    )
    parser.add_argument(
        "--modes", metavar="NAMES", help="comma-separated among forward, train (default both)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds per configuration (default 15; --quick: 5)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed calls per callable first (default 3; --quick: 2)",
    )
    parser.add_argument(
        "--peers",
        metavar="NAMES",
        help="comma-separated among torch, jax: also time each layer's "
        "operation in PyTorch and in Keras on JAX, each in its own process, "
        "in the same rounds; adds their columns, the fastest peer and "
        "tfnorm / fastest peer (unless --layers, only the layers a peer "
        "has: batch, layer, rms, group, instance; see below for where "
        "each peer's Python is found)",
    )
    parser.add_argument(
        "--models",
        metavar="NAMES",
        nargs="?",
        const=",".join(_CHOICES["models"]),
        help="time whole models instead of layers: inference and training step "
        "of ResNet50 (Keras BN, tfnorm BN, Keras GN, tfnorm GN, folded), "
        "MobileNetV2 (Keras BN, tfnorm BN, folded) and a transformer "
        "encoder (Keras LN, tfnorm LN, Keras RMS, tfnorm RMS); NAMES: "
        "comma-separated among resnet50, mobilenetv2, transformer (default "
        "all); float32, no XLA and 7 repeats unless told (a few minutes "
        "on two cores)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
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
        raise UsageError(
            f"--{what} {value!r}: unknown {bad or 'empty list'}; choose among {', '.join(valid)}"
        )
    return items


def _command_line() -> str:
    args = [a for a in sys.argv[1:]]
    return "tfnorm " + " ".join(args) if args else "tfnorm bench"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _emit(args, document: dict, text: str, warning) -> None:
    if args.save:
        with open(args.save, "w") as fh:
            json.dump(document, fh, indent=1)
    if warning and (args.markdown or args.json):  # the text table carries it inline
        print(warning, file=sys.stderr)
    if args.markdown:
        from tfnorm.bench import models, report

        render = models.markdown if _is_models_run(document) else report.markdown
        print(render(document))
    elif args.json:
        json.dump(document, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(text)


def _is_models_run(document: dict) -> bool:
    return "models" in document["machine"].get("settings", {})


def _render_saved(args) -> int:
    """``--from PATH``: a saved run (``--save``), as text, Markdown or JSON."""
    from tfnorm.bench import report
    from tfnorm.cli import UsageError

    try:
        with open(args.from_json) as fh:
            document = json.load(fh)
        rows, meta = document["rows"], document["machine"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(
            f"--from {args.from_json!r}: not a run saved by tfnorm bench --save ({err})"
        ) from None
    from tfnorm.bench import models

    render = models.text if _is_models_run(document) else report.text
    text = render(meta, rows, document.get("skipped", []), document.get("command"))
    warning = (document.get("warnings") or [None])[0]
    args.save = None
    _emit(args, document, text, warning)
    return 0


def run(args) -> int:
    from tfnorm.cli import UsageError

    if args.json and args.markdown:
        raise UsageError("--json and --markdown: choose one output")
    if args.from_json is not None:
        given = [
            _flag(n)
            for n in ("quick", "layers", "shapes", "all_shapes", "dtypes", "compile", "modes")
            + ("repeats", "warmup", "peers", "models", "save")
            if getattr(args, n) not in (None, False)
        ]
        if given:
            raise UsageError(f"--from renders a saved run; {', '.join(given)} choose a new run")
        return _render_saved(args)
    shapes = _list(args.shapes, "shapes")
    dtypes = _list(args.dtypes, "dtypes")
    compiles = _list(args.compile, "compile")
    modes = _list(args.modes, "modes")
    peer_names = _list(args.peers, "peers")
    model_names = _list(args.models, "models")
    for name in ("repeats", "warmup"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be >= 1, received --{name} {value}")
    if model_names is not None:
        given = [_flag(n) for n in _LAYER_ONLY if getattr(args, n)]
        if given:
            raise UsageError(
                f"--models times whole models; {', '.join(given)} "
                "choose layer rows and do not apply to it"
            )
        return _run_models(args, model_names, dtypes, compiles, modes)

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
    if peer_names and not args.layers:
        subjects = [s for s in subjects if s.spec.peer]
    if not subjects:
        raise UsageError("no layer to benchmark")

    meta = report.machine()
    meta["settings"] = {
        "quick": args.quick,
        "tiny": args.tiny,
        "all_shapes": args.all_shapes,
        "repeats": settings.repeats,
        "warmup": settings.warmup,
        "dtypes": list(settings.dtypes),
        "compile": list(settings.compiles),
        "modes": list(settings.modes),
        "shapes": {k: list(v) for k, v in (plan.TINY_SHAPES if args.tiny else plan.SHAPES).items()},
        "train_floor_passes": runner.TRAIN_FLOOR_PASSES,
    }
    running = []
    if peer_names:
        from tfnorm.bench import peers

        say = None if args.no_progress else (lambda m: print(m, file=sys.stderr, flush=True))
        running, meta["peers"] = peers.start(peer_names, progress=say)
    try:
        rows, failed = runner.run(subjects, settings, progress=not args.no_progress, peers=running)
    finally:
        if running:
            peers.stop(running, meta["peers"])
    skipped = skipped + failed
    meta["load_end"] = report.load_average()
    warning = report.quick_warning(meta)
    document = {
        "machine": meta,
        "command": _command_line(),
        "rows": rows,
        "skipped": skipped,
        "warnings": [warning] if warning else [],
    }
    _emit(args, document, report.text(meta, rows, skipped, document["command"]), warning)
    return 0


def _run_models(args, names, dtypes, compiles, modes) -> int:
    from tfnorm.bench import models, report
    from tfnorm.bench.runner import Settings

    settings = Settings(
        dtypes=dtypes or ["float32"],
        compiles=compiles or ["graph"],
        modes=modes or ["forward", "train"],
        repeats=args.repeats or (3 if args.quick else 7),
        warmup=args.warmup or (1 if args.quick else 2),
        tiny=args.tiny,
    )
    meta = report.machine()
    sizes = models.TINY_SIZES if args.tiny else models.SIZES
    meta["settings"] = {
        "models": list(names),
        "quick": args.quick,
        "tiny": args.tiny,
        "repeats": settings.repeats,
        "warmup": settings.warmup,
        "dtypes": list(settings.dtypes),
        "compile": list(settings.compiles),
        "modes": list(settings.modes),
        "sizes": {
            n: {
                "batch": sizes[n].batch,
                "input": list(sizes[n].input_shape),
                **dict(sizes[n].options),
            }
            for n in names
        },
    }
    rows, skipped = models.run(names, settings, progress=not args.no_progress)
    meta["load_end"] = report.load_average()
    warning = models.model_warning(meta)
    document = {
        "machine": meta,
        "command": _command_line(),
        "rows": rows,
        "skipped": skipped,
        "warnings": [warning] if warning else [],
    }
    _emit(args, document, models.text(meta, rows, skipped, document["command"]), warning)
    return 0
