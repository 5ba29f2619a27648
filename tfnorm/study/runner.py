"""Running what ``tfnorm study`` was asked for, once :mod:`tfnorm.study.cli` has checked it.

:func:`run_experiments` plans the experiments, runs all their jobs with one progress line,
then analyses, prints and saves each; :func:`run_compare` trains the free comparison of
``--norms`` x ``--placement``; :func:`summarize` (``--summarize DIR``) computes the findings
of a stored ``results.json`` again. Each writes its sections of ``results.json`` /
``results.csv`` and its figures under ``--out``.
"""

from __future__ import annotations

import os
import shlex
import sys
import time

from tfnorm.study import models

COMPARE = "compare"  # --experiment compare: the free comparison of --norms x --placement


def check_out(out: str) -> None:
    """``--out`` exists or can be created, and is writable (checked before anything trains)."""
    import tempfile

    from tfnorm.cli import UsageError

    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UsageError(
            f"--out {out} is not a writable directory ({err.strerror or err}); "
            "give another --out DIR"
        ) from None


def summarize(out: str) -> int:
    """``--summarize DIR``: the findings, answers and figures of ``DIR/results.json``
    computed again from its stored runs (by this version of the analyses), printed and
    saved back; trains nothing."""
    from tfnorm.cli import UsageError
    from tfnorm.study import experiments as ex
    from tfnorm.study import plot, report

    path = os.path.join(out, "results.json")
    if not os.path.exists(path):
        raise UsageError(
            f"--summarize {out}: there is no {path}; run tfnorm study --out {out} first"
        )
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
            section = dict(
                section, **ex.EXPERIMENTS[name].analyze(section["runs"], opts), rule=_rule()
            )
            if writable:
                plot.plot_experiment(
                    name, section, section["runs"], os.path.join(out, f"{name}.png")
                )
            sections[name] = section
        print(report.format_section(name, section))
        meta = section.get("meta", {})
        print(
            f"({meta.get('command', '?')}; {meta.get('date', '?')}, {meta.get('cpu', '?')}, "
            f"{meta.get('wall_seconds', '?')} s)"
        )
        print()
    if writable and sections:
        report.write_results(out, sections, doc.get("meta", {}))
    return 0


def run_experiments(names, opts, out, meta, start) -> dict:
    """Plans every experiment, runs all their jobs with one progress line, then analyses,
    prints and saves each; returns the sections."""
    from tfnorm.study import experiments as ex
    from tfnorm.study import plot, report
    from tfnorm.study.progress import Progress, format_duration

    plans = {n: ex.EXPERIMENTS[n].plan(opts) for n in names}
    jobs = [j for n in names for j in plans[n]]
    total = sum(j.cost for j in jobs)
    print(
        f"tfnorm study: {', '.join(names)}{' (--full)' if opts.full else ''}: "
        f"{len(jobs)} runs; {ex.QUESTION}"
    )
    sys.stdout.flush()
    progress = Progress(len(jobs), label_width=max(len(j.label) for j in jobs), total_cost=total)
    sections = {}
    for name in names:
        t0 = time.time()
        print(f"-- {name}: {ex.EXPERIMENTS[name].question}")
        sys.stdout.flush()
        records = ex.run_jobs(plans[name], progress)
        section = ex.EXPERIMENTS[name].analyze(records, opts)
        section.update(
            question=ex.EXPERIMENTS[name].question,
            rule=_rule(),
            runs=records,
            options=_opts_doc(opts),
        )
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
    from tfnorm.study.progress import Progress
    from tfnorm.study.train import CompiledModels, TrainSettings, train_run

    start = time.time()
    if args.strategy != "default":  # created before any other TensorFlow work
        from tfnorm.study.train import strategy_for

        replicas = strategy_for(args.strategy).num_replicas_in_sync
        if plan["batch_size"] % replicas:
            raise UsageError(
                f"--batch-size {plan['batch_size']} must be a multiple of the "
                f"{replicas} replicas of --strategy {args.strategy}"
            )
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
        models.preflight(
            plan["configs"],
            plan["model"],
            data.input_shape,
            data.num_classes,
            plan["depth"],
            plan["width"],
        )
    except ValueError as err:
        raise UsageError(str(err)) from None

    settings = TrainSettings(
        model=plan["model"],
        depth=plan["depth"],
        width=plan["width"],
        epochs=plan["epochs"],
        batch_size=plan["batch_size"],
        lr=args.lr,
        optimizer=args.optimizer,
        strategy=args.strategy,
    )
    configs, seeds = plan["configs"], list(range(plan["seeds"]))
    command = _command(args, plan)
    print(
        f"tfnorm study: {settings.model} depth {settings.depth} width {settings.width} on "
        f"{data.name} ({len(data.x_train)} train / {len(data.x_test)} test), "
        f"{_n(len(configs), 'config')} x {_n(len(seeds), 'seed')}, "
        f"{_n(settings.epochs, 'epoch')}, batch "
        f"{settings.batch_size}, {settings.optimizer} lr {settings.lr:g}"
    )
    sys.stdout.flush()

    out = args.out
    png_path = os.path.join(out, "study.png")
    meta = dict(meta, command=command)
    settings_doc = dict(
        vars(settings),
        dataset=data.name,
        train_samples=len(data.x_train),
        test_samples=len(data.x_test),
        seeds=seeds,
        configs=[c.label for c in configs],
    )
    progress = Progress(
        len(configs) * len(seeds),
        label_width=max(len(c.label) for c in configs),
        total_cost=float(len(configs) * len(seeds)),
    )

    def section(runs):
        return {
            "question": "free comparison of --norms x --placement",
            "settings": settings_doc,
            "summary": report.summarize(runs),
            "runs": [r.to_dict() for r in runs],
            "figure": os.path.basename(png_path),
            "meta": dict(meta, wall_seconds=round(time.time() - start, 1)),
        }

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
    print(
        f"test accuracy after {_n(settings.epochs, 'epoch')}, mean ± sd over "
        f"{_n(len(seeds), 'seed')}; "
        "final train loss: mean of the last epoch; s/epoch: training time per epoch "
        "(median after the first)"
    )
    print(f"figure: {png_path}")
    return result


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _title(settings, data, n_seeds: int) -> str:
    return (
        f"{settings.model} depth {settings.depth} width {settings.width}, {data.name}, "
        f"{settings.epochs} epochs, batch {settings.batch_size}, {settings.optimizer} "
        f"lr {settings.lr:g}, {n_seeds} seeds"
    )


def _command(args, plan) -> str:
    """The command line that reproduces this study (for results.json)."""
    parts = ["tfnorm", "study"]
    for flag, value in (
        ("--norms", args.norms),
        ("--placement", args.placement),
        ("--model", plan["model"]),
        ("--depth", plan["depth"]),
        ("--width", plan["width"]),
        ("--dataset", args.dataset),
        ("--data-dir", args.data_dir),
        ("--train-size", args.train_size),
        ("--test-size", args.test_size),
        ("--epochs", plan["epochs"]),
        ("--batch-size", plan["batch_size"]),
        ("--seeds", plan["seeds"]),
        ("--lr", args.lr),
        ("--optimizer", args.optimizer),
        ("--strategy", None if args.strategy == "default" else args.strategy),
        ("--out", args.out),
    ):
        if value is not None:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return " ".join(shlex.quote(p) for p in parts)
