"""``tfnorm study``: may too much batch normalization hurt? When and why? Train and see.

``tfnorm study`` runs the ``headline`` experiment; ``--experiment NAME[,NAME...]`` any
of :data:`tfnorm.study.experiments.EXPERIMENTS` or ``compare`` (the free comparison of
``--norms`` x ``--placement``; giving either of those flags alone means ``compare``).
Each experiment prints its tables, its findings and its answer, computed from this
run, and writes its section of ``results.json`` / ``results.csv`` and a figure.
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
MODEL_DEFAULTS = {"mlp": {"depth": 8, "width": 128}, "cnn": {"depth": 6, "width": 32},
                  "cnn1d": {"depth": 3, "width": 32}}
DEFAULT_EPOCHS = 6  # compare
DEFAULT_SEEDS = 3  # compare
DEFAULT_BATCH_SIZE = 64
DEFAULT_OUT = "tfnorm-study"
DEFAULT_EXPERIMENT = "headline"
COMPARE = "compare"


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
        "  tfnorm study --experiment har               # needs pip install \"tfnorm[har]\"\n"
        "  tfnorm study --model cnn --norms batch,none --placement every,first,input\n"
        "  tfnorm study --summarize tfnorm-study        # print a results.json again\n")
    g = parser.add_argument_group("what to run")
    g.add_argument("--experiment", default=None, metavar="NAME[,NAME...]",
                   help=f"experiments to run: {', '.join(EXPERIMENTS)}, {COMPARE}, or all "
                        f"(default {DEFAULT_EXPERIMENT}; --norms/--placement alone: {COMPARE})")
    g.add_argument("--full", action="store_true",
                   help="each experiment's long grid (more depths, batch sizes and seeds)")
    g.add_argument("--depths", default=None, metavar="LIST",
                   help="depths of the headline, depth and gradients experiments, e.g. 2,4,8,16,32")
    g.add_argument("--batch-sizes", default=None, metavar="LIST",
                   help="batch sizes of the batch-size and gradients experiments, e.g. 2,4,8,32,128")
    g.add_argument("--summarize", default=None, metavar="DIR",
                   help="print the tables, findings and answers of DIR/results.json; trains nothing")
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
    g.add_argument("--model", default=None, metavar="{mlp,cnn,cnn1d}",
                   help="plain stack without skip connections (default mlp; cnn1d takes "
                        "(time, channels) data such as --dataset basicmotions)")
    g.add_argument("--depth", type=int, default=None,
                   help="hidden Dense/Conv layers (default 8 for mlp, 6 for cnn)")
    g.add_argument("--width", type=int, default=None,
                   help="units/filters per hidden layer (default 128 for mlp, 32 for cnn and cnn1d)")
    g = parser.add_argument_group("data and training")
    g.add_argument("--dataset", default="mnist10k",
                   help="mnist10k (embedded, 8,000 train / 2,000 test, no download), "
                        "basicmotions (smartwatch sensors, needs tfnorm[har]) or "
                        "tfds:NAME[:SPLIT] for a TensorFlow Datasets name already prepared "
                        "(default mnist10k; compare only)")
    g.add_argument("--data-dir", default=None, help="data directory passed to tfds")
    g.add_argument("--train-size", type=int, default=None, metavar="N",
                   help="train on a stratified subset of N samples (default: all)")
    g.add_argument("--test-size", type=int, default=None, metavar="N",
                   help="test on a stratified subset of N samples (default: all)")
    g.add_argument("--epochs", type=int, default=None,
                   help=f"epochs per run (default: the experiment's; {DEFAULT_EPOCHS} for compare)")
    g.add_argument("--batch-size", type=int, default=None,
                   help=f"default {DEFAULT_BATCH_SIZE} (8 for har)")
    g.add_argument("--seeds", type=int, default=None, metavar="N",
                   help=f"runs per configuration, seeds 0..N-1 (default: the experiment's; "
                        f"{DEFAULT_SEEDS} for compare)")
    g.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 0.001)")
    g.add_argument("--optimizer", default="adam",
                   help=f"one of {', '.join(sorted(OPTIMIZERS))} (default adam)")
    g.add_argument("--strategy", default="default", metavar="{default,mirrored,multiworker}",
                   help="tf.distribute strategy: mirrored (every GPU, or two logical CPU devices "
                        "without one) or multiworker (one process per worker, each with its "
                        "TF_CONFIG and its own --out); batch normalization is synchronized "
                        "(default: one device)")
    g.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"where results.json, results.csv and the figures go (default {DEFAULT_OUT})")


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
        raise UsageError(f"{flag} takes comma-separated integers, received {flag} {value}") from None
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
        raise UsageError("--norms and --placement choose what --experiment compare trains; "
                         f"the other experiments have their own grid (received --experiment "
                         f"{args.experiment})")
    return out


def check_out(out: str) -> None:
    """``--out`` exists or can be created, and is writable (checked before anything trains)."""
    import tempfile

    from tfnorm.cli import UsageError

    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UsageError(f"--out {out} is not a writable directory ({err.strerror or err}); "
                         "give another --out DIR") from None


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
    for name, value in (("--depth", depth), ("--width", width), ("--epochs", epochs),
                        ("--batch-size", batch_size), ("--seeds", seeds),
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
            "width": width, "configs": configs, "skipped": skipped, "epochs": epochs,
            "seeds": seeds, "batch_size": batch_size}


def _check_dataset(name: str) -> None:
    from tfnorm.cli import UsageError

    if not (name in ("mnist10k", "basicmotions") or name.startswith("tfds:")):
        raise UsageError(f"unknown dataset {name!r}; valid: mnist10k (embedded), "
                         "basicmotions (tfnorm[har]) or tfds:NAME[:SPLIT] (a TensorFlow Datasets name)")


def options_of(args):
    """The :class:`~tfnorm.study.experiments.Options` of the experiments (checked)."""
    from tfnorm.cli import UsageError
    from tfnorm.study.experiments import Options
    from tfnorm.study.train import check_optimizer

    for name, value in (("--depth", args.depth), ("--width", args.width), ("--epochs", args.epochs),
                        ("--batch-size", args.batch_size), ("--seeds", args.seeds),
                        ("--train-size", args.train_size), ("--test-size", args.test_size)):
        _positive(name, value)
    if not args.lr > 0:
        raise UsageError(f"--lr must be > 0, received --lr {args.lr}")
    if args.model is not None and args.model not in ("mlp", "cnn"):
        raise UsageError(f"unknown model {args.model!r} for the experiments; valid: mlp, cnn "
                         "(har always trains its 1-D CNN; cnn1d: --experiment compare)")
    try:
        check_optimizer(args.optimizer)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.strategy != "default":
        raise UsageError("--strategy applies to --experiment compare only")
    _check_dataset(args.dataset)
    if args.dataset != "mnist10k":
        raise UsageError("--dataset applies to --experiment compare only (the experiments use "
                         "the embedded digits; har uses BasicMotions)")
    return Options(full=args.full, seeds=args.seeds, epochs=args.epochs,
                   train_size=args.train_size, test_size=args.test_size,
                   depths=_int_list("--depths", args.depths),
                   batch_sizes=_int_list("--batch-sizes", args.batch_sizes), model=args.model,
                   depth=args.depth, width=args.width, batch_size=args.batch_size, lr=args.lr,
                   optimizer=args.optimizer)


def run(args) -> int:
    from tfnorm.study import report

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


def summarize(out: str) -> int:
    """``--summarize DIR``: the findings, answers and figures of ``DIR/results.json``
    computed again from its stored runs (by this version of the analyses), printed and
    saved back; trains nothing."""
    from tfnorm.cli import UsageError
    from tfnorm.study import experiments as ex
    from tfnorm.study import plot, report

    path = os.path.join(out, "results.json")
    if not os.path.exists(path):
        raise UsageError(f"--summarize {out}: there is no {path}; run tfnorm study --out {out} first")
    doc = report.read_results(path)
    if not doc["experiments"]:
        raise UsageError(f"--summarize {out}: {path} holds no experiment sections")
    try:
        check_out(out)
        writable = True
    except UsageError:
        writable = False
    sections = {}
    for name, section in doc["experiments"].items():
        if name in ex.EXPERIMENTS and section.get("runs"):
            opts = ex.Options(**section.get("options", {}))
            section = dict(section, **ex.EXPERIMENTS[name].analyze(section["runs"], opts),
                           rule=_rule())
            if writable:
                plot.plot_experiment(name, section, section["runs"], os.path.join(out, f"{name}.png"))
            sections[name] = section
        print(report.format_section(name, section))
        meta = section.get("meta", {})
        print(f"({meta.get('command', '?')}; {meta.get('date', '?')}, {meta.get('cpu', '?')}, "
              f"{meta.get('wall_seconds', '?')} s)")
        print()
    if writable and sections:
        report.write_results(out, sections, doc.get("meta", {}))
    return 0


def run_experiments(names, opts, out, meta, start) -> dict:
    """Plans every experiment, runs all their jobs with one progress line, then analyses,
    prints and saves each; returns the sections."""
    from tfnorm.study import experiments as ex
    from tfnorm.study import plot, report
    from tfnorm.study.train import Progress, format_duration

    plans = {n: ex.EXPERIMENTS[n].plan(opts) for n in names}
    jobs = [j for n in names for j in plans[n]]
    total = sum(j.cost for j in jobs)
    print(f"tfnorm study: {', '.join(names)}{' (--full)' if opts.full else ''}: "
          f"{len(jobs)} runs; {ex.QUESTION}")
    sys.stdout.flush()
    progress = Progress(len(jobs), label_width=max(len(j.label) for j in jobs), total_cost=total)
    sections = {}
    for name in names:
        t0 = time.time()
        print(f"-- {name}: {ex.EXPERIMENTS[name].question}")
        sys.stdout.flush()
        records = ex.run_jobs(plans[name], progress)
        section = ex.EXPERIMENTS[name].analyze(records, opts)
        section.update(question=ex.EXPERIMENTS[name].question, rule=_rule(), runs=records,
                       options=_opts_doc(opts))
        figure = os.path.join(out, f"{name}.png")
        plot.plot_experiment(name, section, records, figure)
        section["figure"] = os.path.basename(figure)
        section["meta"] = dict(meta, wall_seconds=round(time.time() - t0, 1))
        sections[name] = section
        print()
        print(report.format_section(name, section))
        print(f"figure: {figure} ({format_duration(time.time() - t0)})")
        print()
        meta_now = dict(meta, wall_seconds=round(time.time() - start, 1))
        report.write_results(out, {name: section}, meta_now)  # each experiment saved as it ends
        sys.stdout.flush()
    return sections


def _rule() -> str:
    from tfnorm.study.verdict import RULE

    return RULE


def _opts_doc(opts) -> dict:
    import dataclasses

    return dataclasses.asdict(opts)


def run_compare(args, plan, meta) -> dict:
    """``--experiment compare``: every configuration of --norms x --placement, every seed."""
    from tfnorm.cli import UsageError
    from tfnorm.study import data as data_mod
    from tfnorm.study import plot, report
    from tfnorm.study.train import CompiledModels, Progress, TrainSettings, train_run

    start = time.time()
    if args.strategy != "default":  # created before any other TensorFlow work
        from tfnorm.study.train import strategy_for

        replicas = strategy_for(args.strategy).num_replicas_in_sync
        if plan["batch_size"] % replicas:
            raise UsageError(f"--batch-size {plan['batch_size']} must be a multiple of the "
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
                             epochs=plan["epochs"], batch_size=plan["batch_size"], lr=args.lr,
                             optimizer=args.optimizer, strategy=args.strategy)
    configs, seeds = plan["configs"], list(range(plan["seeds"]))
    command = _command(args, plan)
    print(f"tfnorm study: {settings.model} depth {settings.depth} width {settings.width} on "
          f"{data.name} ({len(data.x_train)} train / {len(data.x_test)} test), "
          f"{_n(len(configs), 'config')} x {_n(len(seeds), 'seed')}, "
          f"{_n(settings.epochs, 'epoch')}, batch "
          f"{settings.batch_size}, {settings.optimizer} lr {settings.lr:g}")
    sys.stdout.flush()

    out = args.out
    png_path = os.path.join(out, "study.png")
    meta = dict(meta, command=command)
    settings_doc = dict(vars(settings), dataset=data.name, train_samples=len(data.x_train),
                        test_samples=len(data.x_test), seeds=seeds,
                        configs=[c.label for c in configs])
    progress = Progress(len(configs) * len(seeds),
                        label_width=max(len(c.label) for c in configs),
                        total_cost=float(len(configs) * len(seeds)))

    def section(runs):
        return {"question": "free comparison of --norms x --placement", "settings": settings_doc,
                "summary": report.summarize(runs), "runs": [r.to_dict() for r in runs],
                "figure": os.path.basename(png_path),
                "meta": dict(meta, wall_seconds=round(time.time() - start, 1))}

    runs = []
    cache = CompiledModels()
    try:
        for config in configs:
            for seed in seeds:
                runs.append(train_run(data, config, seed, settings, progress, cache))
                report.write_results(out, {COMPARE: section(runs)}, meta)
    finally:
        if runs:
            plot.plot_study(runs, png_path, title=_title(settings, data, len(seeds)))
    result = section(runs)
    report.write_results(out, {COMPARE: result}, meta)

    print()
    print(report.format_table(report.summarize(runs)))
    print()
    print(f"test accuracy after {_n(settings.epochs, 'epoch')}, mean ± sd over "
          f"{_n(len(seeds), 'seed')}; "
          "final train loss: mean of the last epoch; s/epoch: training time per epoch "
          "(median after the first)")
    print(f"figure: {png_path}")
    return result


def _command_line(args) -> str:
    """This invocation as a command line (argv as given)."""
    return " ".join(shlex.quote(p) for p in ["tfnorm", "study"] + list(getattr(args, "_argv", [])))


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
                        ("--test-size", args.test_size), ("--epochs", plan["epochs"]),
                        ("--batch-size", plan["batch_size"]), ("--seeds", plan["seeds"]),
                        ("--lr", args.lr), ("--optimizer", args.optimizer),
                        ("--strategy", None if args.strategy == "default" else args.strategy),
                        ("--out", args.out)):
        if value is not None:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return " ".join(shlex.quote(p) for p in parts)
