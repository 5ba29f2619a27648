"""The experiments of ``tfnorm study``: where too much batch normalization hurts, and why.

Each experiment is a grid of *jobs* (train a network with one seed, or measure a freshly
initialized one) and an *analysis* that turns this run's numbers into a section of
``results.json``: a summary table, findings decided by the rule of
:mod:`tfnorm.study.verdict`, and a figure. Nothing in a verdict is written in advance:
a run in which the placements do not differ says so. This module names them, with their
questions (:data:`EXPERIMENTS`); :mod:`tfnorm.study.grids` holds the configurations, the
:class:`Options` and the plans, :mod:`tfnorm.study.jobs` what a job is and
:func:`run_jobs`, and :mod:`tfnorm.study.analysis` the analyses.

================  =====================================================================
``headline``      gradients at initialization at a few depths, and the plain MLP trained
                  shallow and deep with BN after every layer / the first only / on the
                  input / none (the default of ``tfnorm study``)
``depth``         test accuracy against depth for each placement, with LayerNorm,
                  GroupNorm and Online Normalization after every layer as controls
``gradients``     per-layer gradient norms at initialization, their growth rate per layer
                  against batch size beside the mean-field 1.2112, and how much a
                  sample's features depend on its batch companions (no training)
``batch-size``    BN every / BN first against GroupNorm, LayerNorm and Online
                  Normalization across batch sizes
``statistics``    the same trained networks evaluated with their moving averages
                  (momentum 0.99 and 0.9), with statistics recomputed over the training
                  set (:func:`tfnorm.recompute_batch_statistics`) and with batch statistics
``residual``      the deep network with identity skip connections
``har``           a 1-D CNN on real smartwatch sensor data (BasicMotions): Li et al.'s
                  single input BatchNormalization against per-sensor input BN, BN after
                  every convolution, and none
================  =====================================================================

>>> sorted(EXPERIMENTS)
['batch-size', 'depth', 'gradients', 'har', 'headline', 'residual', 'statistics']
>>> jobs = EXPERIMENTS["headline"].plan(Options())
>>> sorted({j.kind for j in jobs}), len(jobs) > 20
(['probe', 'train'], True)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List

from tfnorm.study.analysis import ANALYSES, HAR_EARLY_EPOCH
from tfnorm.study.grids import (
    CONTROLS,
    EVERY,
    FIRST,
    GLOBAL_INPUT,
    INPUT,
    PLACEMENT_CONFIGS,
    PLACEMENT_NAMES,
    PLAIN,
    PLANS,
    Options,
)
from tfnorm.study.jobs import EVAL_MODES, Job, run_jobs

__all__ = [
    "CONTROLS",
    "EVAL_MODES",
    "EVERY",
    "EXPERIMENTS",
    "Experiment",
    "FIRST",
    "GLOBAL_INPUT",
    "HAR_EARLY_EPOCH",
    "INPUT",
    "Job",
    "Options",
    "PLACEMENT_CONFIGS",
    "PLACEMENT_NAMES",
    "PLAIN",
    "QUESTION",
    "run_jobs",
]

QUESTION = "May too much batch normalization hurt learning?"


@dataclasses.dataclass
class Experiment:
    """One experiment: its question, its plan (:class:`Options` -> jobs) and its analysis
    (records -> a section of ``results.json``)."""

    name: str
    question: str
    plan: Callable[[Options], List[Job]]
    analyze: Callable[[List[Dict], Options], Dict]
    describe: str = ""


#: name -> (question, what it runs: the line of ``tfnorm study --help``), in the order
#: ``--experiment all`` runs them.
_QUESTIONS = {
    "headline": (
        f"{QUESTION} When and why?",
        "gradients at init + shallow and deep MLP, four placements (default)",
    ),
    "depth": (
        "Where does the harm appear as the network gets deeper?",
        "accuracy against depth, four placements and LN/GN/Online controls",
    ),
    "gradients": (
        "Why: do gradients explode at initialization?",
        "per-layer gradient norms at init vs batch size, no training",
    ),
    "batch-size": (
        "When do batch statistics become noise?",
        "BN against GN, LN and Online Normalization across batch sizes",
    ),
    "statistics": (
        "Is the harm the moving averages at test time?",
        "moving averages vs recomputed vs batch statistics",
    ),
    "residual": ("Do skip connections remove the harm?", "the deep network with identity skips"),
    "har": (
        "And on real wearable-sensor data (Li et al.'s setting)?",
        "1-D CNN on BasicMotions: Li et al.'s input BN vs the others",
    ),
}

EXPERIMENTS: Dict[str, Experiment] = {
    name: Experiment(name, question, PLANS[name], ANALYSES[name], describe)
    for name, (question, describe) in _QUESTIONS.items()
}
