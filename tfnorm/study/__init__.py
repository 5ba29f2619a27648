"""The study runner behind ``tfnorm study``: may too much batch normalization hurt? When and why?

The same small, plain networks are trained and measured many times, varying only
normalization (which one, and where: after every layer, after the first only, or on
the input), over several seeds. :mod:`tfnorm.study.experiments` holds the experiments
(``headline``, ``depth``, ``gradients``, ``batch-size``, ``statistics``, ``residual``,
``har``), each a grid of jobs and an analysis whose findings follow the rule of
:mod:`tfnorm.study.verdict`; :mod:`tfnorm.study.diagnostics` measures networks at
initialization (gradient growth per layer, batch dependence of the features). Each
step is a function, so a notebook can run a study piece by piece:

>>> from tfnorm.study import Config, expand_configs
>>> [c.label for c in expand_configs(["batch", "none"], ["every", "input"])[0]]
['batch@every', 'batch@input', 'none']
"""

from tfnorm.study.data import StudyData, prepare, subsample
from tfnorm.study.experiments import EXPERIMENTS, Options, run_jobs
from tfnorm.study.models import (
    DEFAULT_NORMS,
    MODELS,
    PLACEMENTS,
    Config,
    build_model,
    check_norms,
    choose_groups,
    default_norms,
    expand_configs,
    valid_norms,
)
from tfnorm.study.plot import plot_study
from tfnorm.study.report import format_table, summarize, write_csv, write_json
from tfnorm.study.train import CompiledModels, Progress, RunResult, TrainSettings, train_run

__all__ = [
    "CompiledModels",
    "DEFAULT_NORMS",
    "EXPERIMENTS",
    "Options",
    "run_jobs",
    "MODELS",
    "PLACEMENTS",
    "Config",
    "Progress",
    "RunResult",
    "StudyData",
    "TrainSettings",
    "build_model",
    "check_norms",
    "choose_groups",
    "default_norms",
    "expand_configs",
    "format_table",
    "plot_study",
    "prepare",
    "run_study",
    "subsample",
    "summarize",
    "train_run",
    "valid_norms",
    "write_csv",
    "write_json",
]


def run_study(data, configs, seeds, settings, progress=None):
    """Trains every configuration with every seed; returns the list of :class:`RunResult`.

    Args:
      data: a :class:`StudyData` (see :func:`prepare`).
      configs: :class:`Config` objects (see :func:`expand_configs`).
      seeds: an iterable of integer seeds.
      settings: a :class:`TrainSettings`.
      progress: a :class:`Progress` (None: silent).
    """
    cache = CompiledModels()  # one traced model per configuration, reused across seeds
    return [train_run(data, c, s, settings, progress, cache) for c in configs for s in seeds]
