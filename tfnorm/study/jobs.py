"""The jobs of the experiments: what one is (:class:`Job`), and :func:`run_jobs`.

A job trains one configuration with one seed (``"train"``: a
:func:`~tfnorm.study.train.train_run`, for the ``statistics`` experiment also evaluated
with other statistics) or measures a freshly initialized network (``"probe"``: gradient
norms per layer and the batch dependence of the features, :mod:`tfnorm.study.diagnostics`).
:func:`run_jobs` runs them in order and returns one JSON-ready record per job, what the
analyses read.

>>> from tfnorm.study.models import Config
>>> from tfnorm.study.train import TrainSettings
>>> Job("depth", "train", Config("batch", "every"), TrainSettings(depth=8), seed=0).label
'batch@every d8 b64'
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from tfnorm.study.models import Config
from tfnorm.study.train import TrainSettings

#: The statistics a trained network is evaluated with (``evaluate_statistics``).
EVAL_MODES = ("moving averages", "recomputed", "batch statistics")


@dataclasses.dataclass
class Job:
    """One unit of work: train ``config`` with ``seed``, or measure it at initialization."""

    experiment: str
    kind: str  # "train" | "probe"
    config: Config
    settings: TrainSettings
    seed: int
    dataset: str = "mnist10k"
    train_size: Optional[int] = None
    test_size: Optional[int] = None
    probe_batch_sizes: Sequence[int] = ()  # probe: gradient norms at each of these
    sensitivity: bool = False  # probe: also the batch dependence of the features
    evaluate_statistics: bool = False  # train: also evaluate with other statistics
    cost: float = 1.0

    @property
    def label(self) -> str:
        s = self.settings
        text = f"{self.config.label} d{s.depth}"
        if s.residual:
            text += " residual"
        if self.kind == "probe":
            return f"{text} at init"
        return f"{text} b{s.batch_size}"


def _probe(job: Job, data) -> Dict[str, Any]:
    import keras

    from tfnorm.study import diagnostics
    from tfnorm.study.models import build_model

    s = job.settings
    keras.backend.clear_session()
    keras.utils.set_random_seed(job.seed)
    model = build_model(
        job.config, s.model, data.input_shape, data.num_classes, s.depth, s.width, s.residual
    )
    rng = np.random.default_rng(1000 + job.seed)
    norms, growth = {}, {}
    for b in job.probe_batch_sizes:
        idx = rng.choice(len(data.x_train), size=min(b, len(data.x_train)), replace=False)
        n = diagnostics.gradient_norms(model, data.x_train[idx], data.y_train[idx])
        norms[str(b)] = n.tolist()
        growth[str(b)] = diagnostics.growth_rate(n, trim=1)
    sens = []
    if job.sensitivity:
        idx = rng.choice(
            len(data.x_train), size=min(2 * s.batch_size, len(data.x_train)), replace=False
        )
        sens = diagnostics.batch_sensitivity(
            model, data.x_train[idx], probes=min(8, s.batch_size // 2), seed=job.seed
        ).tolist()
    return {"grad_norms": norms, "growth": growth, "sensitivity": sens}


def _evaluate_statistics(model, data, settings: TrainSettings) -> Dict[str, Any]:
    """Test accuracy of one trained network with three kinds of statistics (the model's
    statistics are changed: the next seed starts from fresh weights anyway)."""
    import tensorflow as tf

    import tfnorm

    def accuracy(x, y, training, batch):
        correct = 0
        for i in range(0, len(x), batch):
            logits = model(tf.constant(x[i : i + batch]), training=training)
            correct += int(np.sum(np.argmax(np.asarray(logits), -1) == y[i : i + batch]))
        return correct / len(x)

    out = {"moving averages": accuracy(data.x_test, data.y_test, False, 500)}
    tfnorm.recompute_batch_statistics(model, data.x_train, batch_size=500)
    out["recomputed"] = accuracy(data.x_test, data.y_test, False, 500)
    train_acc = accuracy(data.x_train, data.y_train, False, 500)
    rng = np.random.default_rng(7)
    order = rng.permutation(len(data.x_test))
    b = settings.batch_size
    usable = (len(order) // b) * b
    xs, ys = data.x_test[order[:usable]], data.y_test[order[:usable]]
    out["batch statistics"] = accuracy(xs, ys, True, b)
    return {"evaluations": out, "train_accuracy_recomputed": train_acc}


def run_jobs(jobs: Sequence[Job], progress=None, load_data=None) -> List[Dict]:
    """Runs ``jobs`` in order; returns one record (a JSON-ready dict) per job."""
    from tfnorm.study import data as data_mod
    from tfnorm.study.train import CompiledModels, train_run

    cache_data: Dict[tuple, Any] = {}
    load_data = load_data or (lambda name, tr, te: data_mod.prepare(name, None, tr, te))
    cache = CompiledModels()
    records = []
    for job in jobs:
        key = (job.dataset, job.train_size, job.test_size)
        if key not in cache_data:
            cache_data[key] = load_data(*key)
        data = cache_data[key]
        s = job.settings
        rec = {
            "experiment": job.experiment,
            "kind": job.kind,
            "config": job.config.label,
            "norm": job.config.norm,
            "placement": job.config.placement,
            "options": dict(job.config.options),
            "model": s.model,
            "depth": s.depth,
            "width": s.width,
            "residual": s.residual,
            "batch_size": s.batch_size,
            "seed": job.seed,
            "dataset": data.name,
            "train_samples": len(data.x_train),
            "test_samples": len(data.x_test),
        }
        if job.kind == "probe":
            t0 = time.perf_counter()
            rec.update(_probe(job, data))
            rec["seconds"] = time.perf_counter() - t0
            if progress is not None:
                g = rec["growth"].get(str(s.batch_size))
                extra = f"  growth {g:.3f}x/layer" if g is not None else ""
                if rec["sensitivity"]:
                    extra += f"  batch dependence {rec['sensitivity'][-1]:.3f}"
                progress.line(
                    f"{job.label:<{progress.label_width}} seed {job.seed}{extra}", job.cost
                )
        else:
            result = train_run(
                data, job.config, job.seed, s, progress, cache, label=job.label, cost=job.cost
            )
            rec.update(result.to_dict())
            rec["config"] = job.config.label
            if job.evaluate_statistics:
                rec.update(_evaluate_statistics(cache.model, data, s))
        records.append(rec)
    return records
