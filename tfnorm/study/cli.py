"""``tfnorm study``: may too much batch normalization hurt? Train and see.

Trains the same small, plain network several times, varying only normalization,
and reports what changed: a table on stdout, ``results.json`` / ``results.csv``
(every run, every epoch) and ``study.png`` (curves, mean ± sd over seeds).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from typing import List, Optional

from tfnorm.study import models
from tfnorm.study.train import OPTIMIZERS

#: Per-model defaults for --depth / --width.
MODEL_DEFAULTS = {"mlp": {"depth": 8, "width": 128}, "cnn": {"depth": 6, "width": 32}}
DEFAULT_EPOCHS = 6
DEFAULT_SEEDS = 3
DEFAULT_OUT = "tfnorm-study"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "The default run (about 3 minutes on 2 CPU cores) trains an 8-layer MLP on the\n"
        "embedded MNIST digits with batch normalization after every layer, after the first\n"
        "layer only, and on the input only, with no normalization, and with every other\n"
        "normalization after every layer; 3 seeds each.\n\n"
        "examples:\n"
        "  tfnorm study\n"
        "  tfnorm study --model cnn --norms batch,none --placement every,first,input\n"
        "  tfnorm study --norms online,batch --batch-size 1 --epochs 2\n"
        "  tfnorm study --dataset tfds:fashion_mnist --data-dir ~/tensorflow_datasets\n")
    g = parser.add_argument_group("what to compare")
    g.add_argument("--norms", default=None, metavar="LIST",
                   help="comma-separated normalizations: registry names (batch, layer, group, "
                        "online, adanorm, ...; see tfnorm.available()), 'none' for no "
                        "normalization, 'cosine' for cosine layers in place of Dense/Conv "
                        f"(default: those of {','.join(models.DEFAULT_NORMS)} this tfnorm has)")
    g.add_argument("--placement", default=None, metavar="LIST",
                   help="comma-separated placements, applied to every norm: every (after each "
                        "hidden Dense/Conv), first (after the first only), input (one norm on "
                        "the input) (default: every,first,input for batch; every for the others)")
    g = parser.add_argument_group("the network")
    g.add_argument("--model", default="mlp", metavar="{mlp,cnn}",
                   help="plain stack without skip connections (default mlp)")
    g.add_argument("--depth", type=int, default=None,
                   help="hidden Dense/Conv layers (default 8 for mlp, 6 for cnn)")
    g.add_argument("--width", type=int, default=None,
                   help="units/filters per hidden layer (default 128 for mlp, 32 for cnn)")
    g = parser.add_argument_group("data and training")
    g.add_argument("--dataset", default="mnist10k",
                   help="mnist10k (embedded, 8,000 train / 2,000 test, no download) or "
                        "tfds:NAME[:SPLIT] for a TensorFlow Datasets name already prepared "
                        "(default mnist10k)")
    g.add_argument("--data-dir", default=None, help="data directory passed to tfds")
    g.add_argument("--train-size", type=int, default=None, metavar="N",
                   help="train on a stratified subset of N samples (default: all)")
    g.add_argument("--test-size", type=int, default=None, metavar="N",
                   help="test on a stratified subset of N samples (default: all)")
    g.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help=f"epochs per run (default {DEFAULT_EPOCHS})")
    g.add_argument("--batch-size", type=int, default=64, help="default 64")
    g.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, metavar="N",
                   help=f"runs per configuration, seeds 0..N-1 (default {DEFAULT_SEEDS})")
    g.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 0.001)")
    g.add_argument("--optimizer", default="adam",
                   help=f"one of {', '.join(sorted(OPTIMIZERS))} (default adam)")
    g.add_argument("--strategy", default="default", metavar="{default,mirrored,multiworker}",
                   help="tf.distribute strategy: mirrored (every GPU, or two logical CPU devices "
                        "without one) or multiworker (one process per worker, each with its "
                        "TF_CONFIG and its own --out); batch normalization is synchronized "
                        "(default: one device)")
    g.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"where results.json, results.csv and study.png go (default {DEFAULT_OUT})")


def _split(value: Optional[str]) -> Optional[List[str]]:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _positive(name: str, value, minimum=1) -> None:
    from tfnorm.cli import UsageError

    if value is not None and value < minimum:
        raise UsageError(f"{name} must be >= {minimum}, received {name} {value}")


def validate(args) -> dict:
    """Checks every option before anything trains; raises UsageError (one line)."""
    from tfnorm.cli import UsageError

    try:
        model = models.check_model(args.model)
        norms = _split(args.norms)
        if norms is not None and not norms:
            raise ValueError("--norms is empty; give at least one name, e.g. --norms batch,none")
        norms = models.check_norms(norms) if norms is not None else models.default_norms()
        placements = _split(args.placement)
        if placements is not None and not placements:
            raise ValueError("--placement is empty; valid: " + ", ".join(models.PLACEMENTS))
        placements = models.check_placements(placements) if placements is not None else None
        from tfnorm.study.train import check_optimizer

        check_optimizer(args.optimizer)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if not (args.dataset == "mnist10k" or args.dataset.startswith("tfds:")):
        raise UsageError(f"unknown dataset {args.dataset!r}; valid: mnist10k (embedded) or "
                         "tfds:NAME[:SPLIT] (a TensorFlow Datasets name)")
    depth = args.depth if args.depth is not None else MODEL_DEFAULTS[model]["depth"]
    width = args.width if args.width is not None else MODEL_DEFAULTS[model]["width"]
    for name, value in (("--depth", depth), ("--width", width), ("--epochs", args.epochs),
                        ("--batch-size", args.batch_size), ("--seeds", args.seeds),
                        ("--train-size", args.train_size), ("--test-size", args.test_size)):
        _positive(name, value)
    if not args.lr > 0:
        raise UsageError(f"--lr must be > 0, received --lr {args.lr}")
    from tfnorm.distribute import STRATEGIES

    if args.strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {args.strategy!r}; valid: {', '.join(STRATEGIES)}")
    configs, skipped = models.expand_configs(norms, placements)
    if not configs:
        raise UsageError("nothing to train: " + "; ".join(skipped))
    return {"model": model, "norms": norms, "placements": placements, "depth": depth,
            "width": width, "configs": configs, "skipped": skipped}


def run(args) -> int:
    from tfnorm.cli import UsageError
    from tfnorm.study import data as data_mod
    from tfnorm.study import plot, report
    from tfnorm.study.train import CompiledModels, Progress, TrainSettings, train_run

    start = time.time()
    plan = validate(args)
    if args.strategy != "default":  # created before any other TensorFlow work
        from tfnorm.study.train import strategy_for

        replicas = strategy_for(args.strategy).num_replicas_in_sync
        if args.batch_size % replicas:
            raise UsageError(f"--batch-size {args.batch_size} must be a multiple of the "
                             f"{replicas} replicas of --strategy {args.strategy}")
        print(f"strategy: {args.strategy}, {replicas} replicas in sync")
    if args.norms is None:
        missing = [n for n in models.DEFAULT_NORMS if n not in plan["norms"]]
        if missing:
            print(f"note: not in this tfnorm, skipped: {', '.join(missing)}")
    for note in plan["skipped"]:
        print(f"note: skipped {note}")
    try:
        data = data_mod.prepare(args.dataset, args.data_dir, args.train_size, args.test_size)
    except ValueError as err:
        raise UsageError(str(err).splitlines()[0]) from None
    try:
        models.preflight(plan["configs"], plan["model"], data.input_shape, data.num_classes,
                         plan["depth"], plan["width"])
    except ValueError as err:
        raise UsageError(str(err)) from None

    settings = TrainSettings(model=plan["model"], depth=plan["depth"], width=plan["width"],
                             epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             optimizer=args.optimizer, strategy=args.strategy)
    configs, seeds = plan["configs"], list(range(args.seeds))
    command = _command(args, plan)
    print(f"tfnorm study: {settings.model} depth {settings.depth} width {settings.width} on "
          f"{data.name} ({len(data.x_train)} train / {len(data.x_test)} test), "
          f"{_n(len(configs), 'config')} x {_n(len(seeds), 'seed')}, "
          f"{_n(settings.epochs, 'epoch')}, batch "
          f"{settings.batch_size}, {settings.optimizer} lr {settings.lr:g}")
    sys.stdout.flush()

    out = args.out
    os.makedirs(out, exist_ok=True)
    json_path, csv_path, png_path = (os.path.join(out, n) for n in
                                     ("results.json", "results.csv", "study.png"))
    meta = report.machine_info()
    meta["command"] = command
    settings_doc = dict(vars(settings), dataset=data.name, train_samples=len(data.x_train),
                        test_samples=len(data.x_test), seeds=seeds,
                        configs=[c.label for c in configs])
    progress = Progress(len(configs) * len(seeds),
                        label_width=max(len(c.label) for c in configs))
    runs = []
    cache = CompiledModels()
    try:
        for config in configs:
            for seed in seeds:
                runs.append(train_run(data, config, seed, settings, progress, cache))
                meta["wall_seconds"] = round(time.time() - start, 1)
                report.write_json(json_path, runs, settings_doc, meta)
                report.write_csv(csv_path, runs)
    finally:
        if runs:
            plot.plot_study(runs, png_path, title=_title(settings, data, len(seeds)))
    meta["wall_seconds"] = round(time.time() - start, 1)
    report.write_json(json_path, runs, settings_doc, meta)

    print()
    print(report.format_table(report.summarize(runs)))
    print()
    print(f"test accuracy after {_n(settings.epochs, 'epoch')}, mean ± sd over "
          f"{_n(len(seeds), 'seed')}; "
          "final train loss: mean of the last epoch; s/epoch: training time per epoch "
          "(median after the first)")
    print(f"wrote {json_path}, {csv_path}, {png_path} ({meta['wall_seconds']:.0f} s in all)")
    return 0


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _title(settings, data, n_seeds: int) -> str:
    return (f"{settings.model} depth {settings.depth} width {settings.width}, {data.name}, "
            f"{settings.epochs} epochs, batch {settings.batch_size}, {settings.optimizer} "
            f"lr {settings.lr:g}, {n_seeds} seeds")


def _command(args, plan) -> str:
    """The command line that reproduces this study (for results.json)."""
    parts = ["tfnorm", "study"]
    for flag, value in (("--norms", args.norms), ("--placement", args.placement),
                        ("--model", plan["model"]), ("--depth", plan["depth"]),
                        ("--width", plan["width"]), ("--dataset", args.dataset),
                        ("--data-dir", args.data_dir), ("--train-size", args.train_size),
                        ("--test-size", args.test_size), ("--epochs", args.epochs),
                        ("--batch-size", args.batch_size), ("--seeds", args.seeds),
                        ("--lr", args.lr), ("--optimizer", args.optimizer),
                        ("--strategy", None if args.strategy == "default" else args.strategy),
                        ("--out", args.out)):
        if value is not None:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return " ".join(shlex.quote(p) for p in parts)
