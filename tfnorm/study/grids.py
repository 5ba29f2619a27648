"""What each experiment trains and measures: the configurations, :class:`Options`, the plans.

The experiments compare a few fixed configurations (batch normalization after every
layer, after the first only, on the input, none; LayerNorm, GroupNorm and Online
Normalization after every layer as controls). Each experiment's plan turns the
:class:`Options` of the command line into its grid of
:class:`~tfnorm.study.jobs.Job` objects (:data:`PLANS`, by experiment name), each with
a rough cost for the progress line's time estimate.

>>> [c.label for c in PLACEMENT_CONFIGS]
['batch@every', 'batch@first', 'batch@input', 'none']
>>> jobs = PLANS["depth"](Options(depths=[2, 8], seeds=1))
>>> sorted({j.settings.depth for j in jobs}), len(jobs)
([2, 8], 14)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, Optional

from tfnorm.study.jobs import Job
from tfnorm.study.models import NONE, Config
from tfnorm.study.train import TrainSettings

EVERY, FIRST, INPUT = Config("batch", "every"), Config("batch", "first"), Config("batch", "input")
GLOBAL_INPUT = Config("batch", "input-global")
PLAIN = Config(NONE)
PLACEMENT_CONFIGS = (EVERY, FIRST, INPUT, PLAIN)
CONTROLS = (Config("layer", "every"), Config("group", "every"), Config("online", "every"))
#: Names the figures and verdicts use for the four placements of batch normalization.
PLACEMENT_NAMES = {
    "batch@every": "BN after every layer",
    "batch@first": "BN after the first layer",
    "batch@input": "one BN on the input",
    "none": "no normalization",
    "batch@input-global": "one BN on the input (one channel, Li et al.)",
}


@dataclasses.dataclass
class Options:
    """What the command line may change; None: the experiment's own default."""

    full: bool = False
    seeds: Optional[int] = None
    epochs: Optional[int] = None
    train_size: Optional[int] = None
    test_size: Optional[int] = None
    depths: Optional[List[int]] = None
    batch_sizes: Optional[List[int]] = None
    model: Optional[str] = None
    depth: Optional[int] = None
    width: Optional[int] = None
    batch_size: Optional[int] = None
    lr: float = 1e-3
    optimizer: str = "adam"

    def pick(self, name: str, default, full):
        value = getattr(self, name)
        if value is not None:
            return value
        return full if self.full else default


def _estimate(settings: TrainSettings, config: Config, n_train: int) -> float:
    """Rough seconds of a training run on 2 CPU cores (only the ratios matter: the
    progress line scales them by the time the finished runs took)."""
    steps = math.ceil(n_train / settings.batch_size) * settings.epochs
    normed = settings.depth if config.placement == "every" else (0 if config.norm == NONE else 1)
    per_step = 3e-4 + (settings.depth * 1.2e-5 + normed * 3.5e-5) * max(
        1.0, settings.batch_size / 64
    )
    if settings.model == "cnn":
        per_step *= 8
    return 2.0 + steps * per_step


def _train_jobs(
    experiment,
    configs,
    settings_list,
    seeds,
    dataset="mnist10k",
    train_size=None,
    test_size=None,
    n_train=8000,
    **extra,
) -> List[Job]:
    jobs = []
    for settings in settings_list:
        for config in configs:
            for seed in seeds:
                jobs.append(
                    Job(
                        experiment,
                        "train",
                        config,
                        settings,
                        seed,
                        dataset,
                        train_size,
                        test_size,
                        cost=_estimate(settings, config, train_size or n_train),
                        **extra,
                    )
                )
    return jobs


def _settings(opts: Options, **kw) -> TrainSettings:
    base = dict(
        model=opts.model or "mlp",
        width=opts.width or (32 if opts.model == "cnn" else 128),
        lr=opts.lr,
        optimizer=opts.optimizer,
        batch_size=opts.batch_size or 64,
    )
    base.update(kw)
    return TrainSettings(**base)


def _plan_headline(opts: Options) -> List[Job]:
    seeds = range(opts.pick("seeds", 3, 4))
    depths = opts.depths or [4, 32]
    probe_depths = sorted(set([8, 16] + [max(depths)]))
    jobs = []
    for depth in probe_depths:
        s = _settings(opts, depth=depth, epochs=1)
        for config in PLACEMENT_CONFIGS:
            for seed in seeds:
                jobs.append(
                    Job(
                        "headline",
                        "probe",
                        config,
                        s,
                        seed,
                        probe_batch_sizes=(s.batch_size,),
                        sensitivity=True,
                        cost=0.2 + 0.02 * depth,
                    )
                )
    epochs = opts.pick("epochs", 5, 5)
    settings = [_settings(opts, depth=d, epochs=epochs) for d in depths]
    jobs += _train_jobs(
        "headline",
        PLACEMENT_CONFIGS,
        settings,
        seeds,
        train_size=opts.train_size,
        test_size=opts.test_size,
    )
    return jobs


def _plan_depth(opts: Options) -> List[Job]:
    seeds = range(opts.pick("seeds", 2, 3))
    depths = opts.depths or opts.pick("depths", [2, 4, 8, 16, 32], [2, 4, 8, 16, 32, 64])
    epochs = opts.pick("epochs", 3, 3)
    settings = [_settings(opts, depth=d, epochs=epochs) for d in depths]
    # the controls stop at depth 32 unless the depths are given: at 64 they cost the most
    # and answer nothing the placements do not
    control_settings = settings if opts.depths else [t for t in settings if t.depth <= 32]
    return _train_jobs(
        "depth",
        PLACEMENT_CONFIGS,
        settings,
        seeds,
        train_size=opts.train_size,
        test_size=opts.test_size,
    ) + _train_jobs(
        "depth",
        CONTROLS,
        control_settings,
        seeds,
        train_size=opts.train_size,
        test_size=opts.test_size,
    )


def _plan_gradients(opts: Options) -> List[Job]:
    seeds = range(opts.pick("seeds", 3, 3))
    depths = opts.depths or opts.pick("depths", [8, 16, 32], [8, 16, 32, 64])
    sizes = opts.batch_sizes or opts.pick(
        "batch_sizes", [4, 16, 64, 256], [2, 4, 8, 16, 64, 256, 512]
    )
    jobs = []
    for depth in depths:
        for config in PLACEMENT_CONFIGS + (CONTROLS[0],):
            for seed in seeds:
                s = _settings(opts, depth=depth, epochs=1)
                jobs.append(
                    Job(
                        "gradients",
                        "probe",
                        config,
                        s,
                        seed,
                        probe_batch_sizes=tuple(sizes),
                        sensitivity=True,
                        cost=0.3 + 0.01 * depth * len(sizes),
                    )
                )
    return jobs


def _plan_batch_size(opts: Options) -> List[Job]:
    seeds = range(opts.pick("seeds", 2, 2))
    sizes = opts.batch_sizes or opts.pick(
        "batch_sizes", [2, 4, 8, 32, 128], [2, 4, 8, 16, 32, 64, 128]
    )
    depth = opts.depth or 8
    epochs = opts.pick("epochs", 2, 2)
    train_size = opts.train_size or 2000
    settings = [_settings(opts, depth=depth, epochs=epochs, batch_size=b) for b in sizes]
    return _train_jobs(
        "batch-size",
        (EVERY, FIRST) + CONTROLS,
        settings,
        seeds,
        train_size=train_size,
        test_size=opts.test_size,
    )


def _plan_statistics(opts: Options) -> List[Job]:
    seeds = range(opts.pick("seeds", 3, 3))
    depth = opts.depth or 16
    epochs = opts.pick("epochs", 3, 5)
    configs = [
        Config("batch", p, (("momentum", m),)) for p in ("every", "first") for m in (0.99, 0.9)
    ]
    return _train_jobs(
        "statistics",
        configs,
        [_settings(opts, depth=depth, epochs=epochs)],
        seeds,
        train_size=opts.train_size,
        test_size=opts.test_size,
        evaluate_statistics=True,
    )


def _plan_residual(opts: Options) -> List[Job]:
    seeds = range(opts.pick("seeds", 3, 3))
    depth = opts.depth or 32
    epochs = opts.pick("epochs", 3, 5)
    settings = [_settings(opts, depth=depth, epochs=epochs, residual=r) for r in (False, True)]
    return _train_jobs(
        "residual",
        (EVERY, FIRST, PLAIN),
        settings,
        seeds,
        train_size=opts.train_size,
        test_size=opts.test_size,
    )


def _plan_har(opts: Options) -> List[Job]:
    seeds = range(opts.pick("seeds", 6, 8))
    epochs = opts.pick("epochs", 20, 20)
    depths = [opts.depth] if opts.depth else [3, 12]
    settings = [
        TrainSettings(
            model="cnn1d",
            depth=d,
            width=opts.width or 32,
            epochs=epochs,
            batch_size=opts.batch_size or 8,
            lr=opts.lr,
            optimizer=opts.optimizer,
        )
        for d in depths
    ]
    configs = (GLOBAL_INPUT, INPUT, EVERY, PLAIN)
    jobs = _train_jobs(
        "har",
        configs,
        settings,
        seeds,
        dataset="basicmotions",
        train_size=opts.train_size,
        test_size=opts.test_size,
        n_train=40,
    )
    for j in jobs:
        j.cost = 1.0 + 0.002 * epochs * j.settings.depth
    return jobs


#: Each experiment's plan, by name: :class:`Options` -> its jobs.
PLANS: Dict[str, Callable[[Options], List[Job]]] = {
    "headline": _plan_headline,
    "depth": _plan_depth,
    "gradients": _plan_gradients,
    "batch-size": _plan_batch_size,
    "statistics": _plan_statistics,
    "residual": _plan_residual,
    "har": _plan_har,
}
