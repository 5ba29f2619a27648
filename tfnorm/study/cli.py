"""``tfnorm study``: may too much batch normalization hurt? When and why? Train and see.

``tfnorm study`` runs the ``headline`` experiment; ``--experiment NAME[,NAME...]`` any
of :data:`tfnorm.study.experiments.EXPERIMENTS` or ``compare`` (the free comparison of
``--norms`` x ``--placement``; giving either of those flags alone means ``compare``).
Each experiment prints its tables, its findings and its answer, computed from this
run, and writes its section of ``results.json`` / ``results.csv`` and a figure.

This module defines and checks the flags (:func:`add_arguments`, :func:`experiments_of`,
:func:`validate`, :func:`options_of`) before anything trains; :func:`run` then hands the
checked options to :mod:`tfnorm.study.runner`.
"""

from __future__ import annotations

import argparse
import shlex
import time
from typing import List, Optional

from tfnorm.study import models
from tfnorm.study.runner import COMPARE, check_out, run_compare, run_experiments, summarize
from tfnorm.study.train import OPTIMIZERS

#: Per-model defaults for --depth / --width.
MODEL_DEFAULTS = {
    "mlp": {"depth": 8, "width": 128},
    "cnn": {"depth": 6, "width": 32},
    "cnn1d": {"depth": 3, "width": 32},
}
DEFAULT_EPOCHS = 6  # compare
DEFAULT_SEEDS = 3  # compare
DEFAULT_BATCH_SIZE = 64
DEFAULT_OUT = "tfnorm-study"
DEFAULT_EXPERIMENT = "headline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    from tfnorm.study.experiments import EXPERIMENTS

    table = "\n".join(f"  {n:<11} {e.describe}" for n, e in EXPERIMENTS.items())
    parser.epilog = (
        "experiments (--experiment):\n" + table + "\n"
        f"  {COMPARE:<11} free comparison of --norms x --placement (the flags below)\n\n"
        "A bare `tfnorm study` runs the headline experiment (about 3-4 minutes on 2 CPU cores)\n"
        "on the embedded MNIST digits and prints a verdict computed from its numbers.\n\n"
        "examples:\n"
        "  tfnorm study\n"
        "  tfnorm study --experiment depth,gradients\n"
        "  tfnorm study --experiment all --full        # the whole study, about 30 minutes\n"
        "  tfnorm study --experiment batch-size --batch-sizes 2,8,32,128\n"
        '  tfnorm study --experiment har               # needs pip install "tfnorm[har]"\n'
        "  tfnorm study --model cnn --norms batch,none --placement every,first,input\n"
        "  tfnorm study --summarize tfnorm-study        # print a results.json again\n"
    )
    g = parser.add_argument_group("what to run")
    g.add_argument(
        "--experiment",
        default=None,
        metavar="NAME[,NAME...]",
        help=f"experiments to run: {', '.join(EXPERIMENTS)}, {COMPARE}, or all "
        f"(default {DEFAULT_EXPERIMENT}; --norms/--placement alone: {COMPARE})",
    )
    g.add_argument(
        "--full",
        action="store_true",
        help="each experiment's long grid (more depths, batch sizes and seeds)",
    )
    g.add_argument(
        "--depths",
        default=None,
        metavar="LIST",
        help="depths of the headline, depth and gradients experiments, e.g. 2,4,8,16,32",
    )
    g.add_argument(
        "--batch-sizes",
        default=None,
        metavar="LIST",
        help="batch sizes of the batch-size and gradients experiments, e.g. 2,4,8,32,128",
    )
    g.add_argument(
        "--summarize",
        default=None,
        metavar="DIR",
        help="print the tables, findings and answers of DIR/results.json; trains nothing",
    )
    g = parser.add_argument_group("what to compare")
    g.add_argument(
        "--norms",
        default=None,
        metavar="LIST",
        help="comma-separated normalizations: registry names (batch, layer, group, "
        "online, adanorm, ...; see tfnorm.available()), 'none' for no "
        "normalization, 'cosine' for cosine layers in place of Dense/Conv "
        f"(default: those of {','.join(models.DEFAULT_NORMS)} this tfnorm has)",
    )
    g.add_argument(
        "--placement",
        default=None,
        metavar="LIST",
        help="comma-separated placements, applied to every norm: every (after each "
        "hidden Dense/Conv), first (after the first only), input (one norm on "
        "the input) (default: every,first,input for batch; every for the others)",
    )
    g = parser.add_argument_group("the network")
    g.add_argument(
        "--model",
        default=None,
        metavar="{mlp,cnn,cnn1d}",
        help="plain stack without skip connections (default mlp; cnn1d takes "
        "(time, channels) data such as --dataset basicmotions)",
    )
    g.add_argument(
        "--depth",
        type=int,
        default=None,
        help="hidden Dense/Conv layers (default 8 for mlp, 6 for cnn)",
    )
    g.add_argument(
        "--width",
        type=int,
        default=None,
        help="units/filters per hidden layer (default 128 for mlp, 32 for cnn and cnn1d)",
    )
    g = parser.add_argument_group("data and training")
    g.add_argument(
        "--dataset",
        default="mnist10k",
        help="mnist10k (embedded, 8,000 train / 2,000 test, no download), "
        "basicmotions (smartwatch sensors, needs tfnorm[har]) or "
        "tfds:NAME[:SPLIT] for a TensorFlow Datasets name already prepared "
        "(default mnist10k; compare only)",
    )
    g.add_argument("--data-dir", default=None, help="data directory passed to tfds")
    g.add_argument(
        "--train-size",
        type=int,
        default=None,
        metavar="N",
        help="train on a stratified subset of N samples (default: all)",
    )
    g.add_argument(
        "--test-size",
        type=int,
        default=None,
        metavar="N",
        help="test on a stratified subset of N samples (default: all)",
    )
    g.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epochs per run (default: the experiment's; {DEFAULT_EPOCHS} for compare)",
    )
    g.add_argument(
        "--batch-size", type=int, default=None, help=f"default {DEFAULT_BATCH_SIZE} (8 for har)"
    )
    g.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="N",
        help=f"runs per configuration, seeds 0..N-1 (default: the experiment's; "
        f"{DEFAULT_SEEDS} for compare)",
    )
    g.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 0.001)")
    g.add_argument(
        "--optimizer", default="adam", help=f"one of {', '.join(sorted(OPTIMIZERS))} (default adam)"
    )
    g.add_argument(
        "--strategy",
        default="default",
        metavar="{default,mirrored,multiworker}",
        help="tf.distribute strategy: mirrored (every GPU, or two logical CPU devices "
        "without one) or multiworker (one process per worker, each with its "
        "TF_CONFIG and its own --out); batch normalization is synchronized "
        "(default: one device)",
    )
    g.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"where results.json, results.csv and the figures go (default {DEFAULT_OUT})",
    )


def _split(value: Optional[str]) -> Optional[List[str]]:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _positive(name: str, value, minimum=1) -> None:
    from tfnorm.cli import UsageError

    if value is not None and value < minimum:
        raise UsageError(f"{name} must be >= {minimum}, received {name} {value}")


def _int_list(flag: str, value: Optional[str]) -> Optional[List[int]]:
    from tfnorm.cli import UsageError

    items = _split(value)
    if items is None:
        return None
    try:
        out = [int(v) for v in items]
    except ValueError:
        raise UsageError(
            f"{flag} takes comma-separated integers, received {flag} {value}"
        ) from None
    if not out or min(out) < 1:
        raise UsageError(f"{flag} takes integers >= 1, received {flag} {value}")
    return sorted(dict.fromkeys(out))


def experiments_of(args) -> List[str]:
    """The experiments this command runs, in the order given (``all``: every one)."""
    from tfnorm.cli import UsageError
    from tfnorm.study.experiments import EXPERIMENTS

    names = _split(args.experiment)
    if names is None:
        compare = args.norms is not None or args.placement is not None
        return [COMPARE if compare else DEFAULT_EXPERIMENT]
    if not names:
        raise UsageError("--experiment is empty; e.g. --experiment headline")
    valid = list(EXPERIMENTS) + [COMPARE]
    out: List[str] = []
    for name in names:
        if name == "all":
            out += [n for n in EXPERIMENTS if n not in out]
            continue
        if name not in valid:
            raise UsageError(f"unknown experiment {name!r}; valid: {', '.join(valid)}, all")
        if name not in out:
            out.append(name)
    if (args.norms is not None or args.placement is not None) and COMPARE not in out:
        raise UsageError(
            "--norms and --placement choose what --experiment compare trains; "
            f"the other experiments have their own grid (received --experiment "
            f"{args.experiment})"
        )
    return out


def validate(args) -> dict:
    """Checks the options of ``compare`` before anything trains; raises UsageError (one line)."""
    from tfnorm.cli import UsageError

    try:
        model = models.check_model(args.model or "mlp")
        norms = _split(args.norms)
        if norms is not None and not norms:
            raise ValueError("--norms is empty; give at least one name, e.g. --norms batch,none")
        norms = models.check_norms(norms) if norms is not None else models.default_norms()
        placements = _split(args.placement)
        if placements is not None and not placements:
            raise ValueError("--placement is empty; valid: " + ", ".join(models.ALL_PLACEMENTS))
        placements = models.check_placements(placements) if placements is not None else None
        from tfnorm.study.train import check_optimizer

        check_optimizer(args.optimizer)
    except ValueError as err:
        raise UsageError(str(err)) from None
    _check_dataset(args.dataset)
    depth = args.depth if args.depth is not None else MODEL_DEFAULTS[model]["depth"]
    width = args.width if args.width is not None else MODEL_DEFAULTS[model]["width"]
    epochs = args.epochs if args.epochs is not None else DEFAULT_EPOCHS
    seeds = args.seeds if args.seeds is not None else DEFAULT_SEEDS
    batch_size = args.batch_size if args.batch_size is not None else DEFAULT_BATCH_SIZE
    for name, value in (
        ("--depth", depth),
        ("--width", width),
        ("--epochs", epochs),
        ("--batch-size", batch_size),
        ("--seeds", seeds),
        ("--train-size", args.train_size),
        ("--test-size", args.test_size),
    ):
        _positive(name, value)
    if not args.lr > 0:
        raise UsageError(f"--lr must be > 0, received --lr {args.lr}")
    from tfnorm.distribute import STRATEGIES

    if args.strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {args.strategy!r}; valid: {', '.join(STRATEGIES)}")
    configs, skipped = models.expand_configs(norms, placements)
    if not configs:
        raise UsageError("nothing to train: " + "; ".join(skipped))
    return {
        "model": model,
        "norms": norms,
        "placements": placements,
        "depth": depth,
        "width": width,
        "configs": configs,
        "skipped": skipped,
        "epochs": epochs,
        "seeds": seeds,
        "batch_size": batch_size,
    }


def _check_dataset(name: str) -> None:
    from tfnorm.cli import UsageError

    if not (name in ("mnist10k", "basicmotions") or name.startswith("tfds:")):
        raise UsageError(
            f"unknown dataset {name!r}; valid: mnist10k (embedded), "
            "basicmotions (tfnorm[har]) or tfds:NAME[:SPLIT] (a TensorFlow Datasets name)"
        )


def options_of(args):
    """The :class:`~tfnorm.study.experiments.Options` of the experiments (checked)."""
    from tfnorm.cli import UsageError
    from tfnorm.study.experiments import Options
    from tfnorm.study.train import check_optimizer

    for name, value in (
        ("--depth", args.depth),
        ("--width", args.width),
        ("--epochs", args.epochs),
        ("--batch-size", args.batch_size),
        ("--seeds", args.seeds),
        ("--train-size", args.train_size),
        ("--test-size", args.test_size),
    ):
        _positive(name, value)
    if not args.lr > 0:
        raise UsageError(f"--lr must be > 0, received --lr {args.lr}")
    if args.model is not None and args.model not in ("mlp", "cnn"):
        raise UsageError(
            f"unknown model {args.model!r} for the experiments; valid: mlp, cnn "
            "(har always trains its 1-D CNN; cnn1d: --experiment compare)"
        )
    try:
        check_optimizer(args.optimizer)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.strategy != "default":
        raise UsageError("--strategy applies to --experiment compare only")
    _check_dataset(args.dataset)
    if args.dataset != "mnist10k":
        raise UsageError(
            "--dataset applies to --experiment compare only (the experiments use "
            "the embedded digits; har uses BasicMotions)"
        )
    return Options(
        full=args.full,
        seeds=args.seeds,
        epochs=args.epochs,
        train_size=args.train_size,
        test_size=args.test_size,
        depths=_int_list("--depths", args.depths),
        batch_sizes=_int_list("--batch-sizes", args.batch_sizes),
        model=args.model,
        depth=args.depth,
        width=args.width,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
    )


def run(args) -> int:
    from tfnorm._extras import MissingExtraError, require
    from tfnorm.cli import UsageError
    from tfnorm.study import report

    try:  # before any training: the figures need it
        require("matplotlib", "tfnorm study's figures")
    except MissingExtraError as err:
        raise UsageError(str(err)) from None
    if args.summarize is not None:
        return summarize(args.summarize)
    names = experiments_of(args)
    others = [n for n in names if n != COMPARE]
    opts = options_of(args) if others else None
    plan = validate(args) if COMPARE in names else None
    if others and "har" in others:
        _check_har_available()
    check_out(args.out)
    start = time.time()
    meta = report.machine_info()
    meta["command"] = _command_line(args)
    sections = {}
    if plan is not None:
        sections[COMPARE] = run_compare(args, plan, meta)
    if others:
        sections.update(run_experiments(others, opts, args.out, meta, start))
    meta["wall_seconds"] = round(time.time() - start, 1)
    paths = report.write_results(args.out, {}, meta)
    print(f"wrote {', '.join(paths)} and the figures ({meta['wall_seconds']:.0f} s in all)")
    return 0


def _check_har_available() -> None:
    from tfnorm.cli import UsageError
    from tfnorm.study import data as data_mod

    try:
        data_mod.prepare("basicmotions")
    except ValueError as err:
        raise UsageError(str(err).splitlines()[0]) from None


def _command_line(args) -> str:
    """This invocation as a command line (argv as given)."""
    return " ".join(shlex.quote(p) for p in ["tfnorm", "study"] + list(getattr(args, "_argv", [])))
