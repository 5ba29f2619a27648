"""One process of the distributed checks in ``test_distributed.py``.

Run as ``python -m tests.dist_worker --strategy mirrored --out FILE`` (two
logical CPU devices in this process) or, once per worker with ``TF_CONFIG``
set, ``--strategy multiworker``. It runs every descriptor case under the
strategy and compares each replica with single-device runs of the same layer
in the same process, then trains a small model with
:func:`tfnorm.distribute.train`; it writes a JSON report that the test reads.

What a case is compared with (``R`` replicas, replica ``k`` taking slice ``k``
of the global batch):

* inference output: the layer on replica ``k``'s slice;
* training output and input gradient: the layer on the whole batch when it has
  ``synchronized=True``, else on replica ``k``'s slice alone;
* weight gradients summed over replicas: the whole-batch gradient
  (synchronized) or the sum of the replicas' gradients;
* every weight after the training call, on every local replica: the
  whole-batch result (synchronized); else the replicas' results combined as
  the variable's ``aggregation`` says (``mean``: their mean; ``sum``: their
  sum; ``only_first_replica``: replica 0's; ``none``: they must agree).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(HERE))

from tfnorm import distribute  # noqa: E402  (imports no TensorFlow device yet)


def _close(actual, expected, what):
    import numpy as np

    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        return f"{what}: shape {actual.shape} != expected {expected.shape}"
    scale = max(1.0, float(np.nanmax(np.abs(expected))) if expected.size else 1.0)
    err = np.abs(actual - expected)
    bad = ~(err <= 2e-5 * scale + 2e-5 * np.abs(expected))
    if bad.any():
        return f"{what}: max abs error {float(np.nanmax(err)):.3g} (scale {scale:.3g})"
    return None


def distributed_cases(strategy="mirrored"):
    """The cases checked under ``strategy``.

    ``"mirrored"``: every descriptor case, plus a ``synchronized=True`` variant
    of each case whose layer takes a ``synchronized`` argument and does not set
    it (ghost, renorm, ... modes). ``"multiworker"`` (two processes, so twice
    the time): of those, the cases with state or synchronized statistics, and
    the first case of every other layer class.
    """
    import dataclasses

    from tests.descriptors import CASES
    from tfnorm.layers.base import init_arguments

    out = []
    for case in CASES:
        out.append(case)
        if (
            case.factory is None
            and "synchronized" in init_arguments(case.cls)
            and not case.kwargs.get("synchronized")
        ):
            out.append(
                dataclasses.replace(
                    case, id=f"{case.id}+sync", kwargs={**case.kwargs, "synchronized": True}
                )
            )
    if strategy == "multiworker":
        seen, subset = set(), []
        for case in out:
            if case.stateful or case.kwargs.get("synchronized") or case.cls not in seen:
                subset.append(case)
            seen.add(case.cls)
        out = subset
    return out


def check_case(case, strategy, seed=0):
    """Compares one case under ``strategy`` with single-device runs; returns a dict."""
    import numpy as np
    import tensorflow as tf

    import tfnorm
    from tests.harness import built, call

    replicas = strategy.num_replicas_in_sync
    n0 = case.input_shape[0]
    batch = n0 if n0 % replicas == 0 else n0 * replicas
    if case.call_kwargs:
        return {"ok": False, "error": "call_kwargs are not supported by the distributed check"}
    per = batch // replicas
    rng = np.random.default_rng(seed)
    x = case.input_fn(rng, (batch,) + tuple(case.input_shape[1:])).astype("float32")
    slices = [x[k * per : (k + 1) * per] for k in range(replicas)]

    def fwd_bwd(layer, xv, dy):
        xv = tf.constant(xv)
        y_inf = call(layer, xv, False, case)
        with tf.GradientTape() as tape:
            tape.watch(xv)
            y = call(layer, xv, True, case)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * dy)
        grads = tape.gradient(loss, [xv] + list(layer.trainable_weights))
        grads = [
            tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
            for g, v in zip(grads, [xv] + list(layer.trainable_weights))
        ]
        return (
            y_inf.numpy(),
            y.numpy(),
            grads[0].numpy(),
            [g.numpy() for g in grads[1:]],
            [v.numpy() for v in layer.weights],
        )

    # single-device runs: the whole batch, and each replica's slice alone
    probe = built(case, seed=seed + 1)
    out_shape = tuple(call(probe, tf.constant(x[:1]), False, case).shape[1:])
    dy = rng.normal(size=(batch,) + out_shape).astype("float32")
    dys = [dy[k * per : (k + 1) * per] for k in range(replicas)]
    full = fwd_bwd(built(case, seed=seed + 1), x, dy)
    alone = [fwd_bwd(built(case, seed=seed + 1), slices[k], dys[k]) for k in range(replicas)]

    with strategy.scope():
        layer = built(case, seed=seed + 1)
    # statistics of the global batch: synchronized layers, and the data-dependent
    # initialization of weight normalization
    sync = bool(getattr(layer, "synchronized", False)) or (
        isinstance(layer, tfnorm.WeightNormalization) and layer.data_init
    )
    aggregations = [str(getattr(v, "aggregation", "none")) for v in layer.weights]
    xs = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(slices[ctx.replica_id_in_sync_group])
    )
    dys_d = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(dys[ctx.replica_id_in_sync_group])
    )

    def replica_fn(xr, dyr):
        ctx = tf.distribute.get_replica_context()
        y_inf = call(layer, xr, False, case)
        with tf.GradientTape() as tape:
            tape.watch(xr)
            y = call(layer, xr, True, case)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * dyr)
        variables = list(layer.trainable_weights)
        grads = tape.gradient(loss, [xr] + variables)
        grads = [
            tf.zeros(v.shape, tf.float32) if g is None else tf.convert_to_tensor(g)
            for g, v in zip(grads, [xr] + variables)
        ]
        return ctx.replica_id_in_sync_group, y_inf, y, grads[0], grads[1:]

    def step(xs, dys_d):
        rid, y_inf, y, gx, gp = strategy.run(replica_fn, args=(xs, dys_d))
        gp = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in gp]
        return rid, y_inf, y, gx, gp

    # Layers with state or cross-replica statistics run as in training, in a tf.function;
    # the others eagerly (the same numbers, without the cost of tracing).
    if case.stateful or sync:
        step = tf.function(step)

    rid, y_inf, y, gx, gp = step(xs, dys_d)
    local = lambda t: [np.asarray(v) for v in strategy.experimental_local_results(t)]  # noqa: E731
    errors = []
    for r, yi, yt, g in zip(local(rid), local(y_inf), local(y), local(gx)):
        k = int(r)
        rows = slice(k * per, (k + 1) * per)
        errors.append(_close(yi, alone[k][0], f"replica {k} inference output"))
        errors.append(
            _close(yt, full[1][rows] if sync else alone[k][1], f"replica {k} training output")
        )
        errors.append(
            _close(g, full[2][rows] if sync else alone[k][2], f"replica {k} input gradient")
        )
    for i, (v, g) in enumerate(zip(layer.trainable_weights, gp)):
        expected = full[3][i] if sync else sum(a[3][i] for a in alone)
        errors.append(_close(np.asarray(g), expected, f"gradient of {v.path} summed over replicas"))
    for i, v in enumerate(layer.weights):
        if sync:
            expected = full[4][i]
        else:
            states = [a[4][i] for a in alone]
            agg = aggregations[i].split(".")[-1].lower()
            if agg == "mean":
                expected = np.mean(states, 0)
            elif agg == "sum":
                expected = np.sum(states, 0)
            elif agg == "only_first_replica":
                expected = states[0]
            else:
                expected = states[0]
                if any(not np.allclose(s, states[0], atol=1e-6, rtol=1e-6) for s in states):
                    errors.append(
                        f"{v.path}: aggregation {aggregations[i]!r} but the replicas' "
                        "updates differ"
                    )
        components = strategy.experimental_local_results(getattr(v, "value", v))
        for j, c in enumerate(components):
            errors.append(_close(np.asarray(c), expected, f"{v.path} on local replica {j}"))
    errors = [e for e in errors if e]
    return {
        "ok": not errors,
        "error": "; ".join(errors) or None,
        "synchronized": sync,
        "aggregations": aggregations,
    }


def check_training(strategy):
    """Trains a small model with ``tfnorm.distribute.train`` and compares with one device."""
    import keras
    import numpy as np
    import tensorflow as tf

    import tfnorm

    rng = np.random.default_rng(5)
    x = (rng.normal(size=(64, 6)) * 2 + 1).astype("float32")
    y = rng.integers(0, 3, 64)
    batch = 16
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def build():
        keras.utils.set_random_seed(3)
        return keras.Sequential(
            [
                keras.Input((6,)),
                tfnorm.BatchNormalization(
                    synchronized=True, momentum=0.0, center=False, scale=False, name="probe"
                ),
                keras.layers.Dense(8),
                tfnorm.BatchNormalization(synchronized=True, momentum=0.5),
                keras.layers.ReLU(),
                keras.layers.Dense(3),
            ]
        )

    with strategy.scope():
        model = build()
    reference = build()
    out = {"replicas": strategy.num_replicas_in_sync}
    # one step on the first global batch: the probe's moving statistics are that batch's
    distribute.train(
        model,
        x,
        y,
        loss=loss,
        optimizer="sgd",
        strategy=strategy,
        batch_size=batch,
        epochs=1,
        steps_per_epoch=1,
        shuffle=False,
        verbose=0,
    )
    probe = model.get_layer("probe")
    out["probe_mean_error"] = float(np.abs(probe.moving_mean.numpy() - x[:batch].mean(0)).max())
    out["probe_variance_error"] = float(
        np.abs(probe.moving_variance.numpy() - x[:batch].var(0)).max()
    )
    out["local_batch_mean_distance"] = float(
        np.abs(x[: batch // strategy.num_replicas_in_sync].mean(0) - x[:batch].mean(0)).max()
    )
    # then shuffled epochs; the reference takes the same steps on one device
    distribute.train(
        reference,
        x,
        y,
        loss=loss,
        optimizer="sgd",
        batch_size=batch,
        epochs=1,
        steps_per_epoch=1,
        shuffle=False,
        verbose=0,
    )
    h = distribute.train(
        model,
        x,
        y,
        loss=loss,
        optimizer="sgd",
        strategy=strategy,
        batch_size=batch,
        epochs=2,
        shuffle=True,
        seed=7,
        verbose=0,
    )
    h_ref = distribute.train(
        reference,
        x,
        y,
        loss=loss,
        optimizer="sgd",
        batch_size=batch,
        epochs=2,
        shuffle=True,
        seed=7,
        verbose=0,
    )
    out["weight_errors"] = {
        v.path: float(np.abs(v.numpy() - r.numpy()).max())
        for v, r in zip(model.weights, reference.weights)
    }
    out["loss"] = h["loss"]
    out["reference_loss"] = h_ref["loss"]
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Keras' own fit() runs under MirroredStrategy (not under multi-worker, keras#20585)
        with strategy.scope():
            fitted = build()
            fitted.compile(keras.optimizers.SGD(0.1), loss)
        fitted_ref = build()
        fitted_ref.compile(keras.optimizers.SGD(0.1), loss)
        h_fit = fitted.fit(x, y, batch_size=batch, epochs=2, shuffle=False, verbose=0)
        h_fit_ref = fitted_ref.fit(x, y, batch_size=batch, epochs=2, shuffle=False, verbose=0)
        out["fit_weight_errors"] = {
            v.path: float(np.abs(v.numpy() - r.numpy()).max())
            for v, r in zip(fitted.weights, fitted_ref.weights)
        }
        out["fit_loss"] = h_fit.history["loss"]
        out["fit_reference_loss"] = h_fit_ref.history["loss"]
    out["weights_moved"] = float(
        max(
            np.abs(v.numpy() - w).max()
            for v, w in zip(build().weights, [r.numpy() for r in reference.weights])
        )
    )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", choices=["mirrored", "multiworker"], required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cases", default="", help="comma-separated case ids (default all)")
    args = parser.parse_args(argv)
    t0 = time.time()
    strategy = distribute.make_strategy(
        args.strategy, cpu_replicas=2 if args.strategy == "mirrored" else None
    )
    wanted = {c for c in args.cases.split(",") if c}
    report = {"strategy": args.strategy, "replicas": strategy.num_replicas_in_sync, "cases": {}}
    resolver = getattr(strategy, "cluster_resolver", None)
    report["task"] = getattr(resolver, "task_id", 0) if args.strategy == "multiworker" else 0
    for case in distributed_cases(args.strategy):
        if wanted and case.id not in wanted:
            continue
        try:
            report["cases"][case.id] = check_case(case, strategy)
        except Exception as err:  # reported per case, the run goes on
            report["cases"][case.id] = {
                "ok": False,
                "error": f"{type(err).__name__}: {err}"[:2000],
                "traceback": traceback.format_exc()[-3000:],
            }
    try:
        report["training"] = check_training(strategy)
    except Exception as err:
        report["training"] = {
            "error": f"{type(err).__name__}: {err}"[:2000],
            "traceback": traceback.format_exc()[-3000:],
        }
    report["seconds"] = time.time() - t0
    path = args.out if args.strategy == "mirrored" else f"{args.out}.{report['task']}"
    with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=1)
    os.replace(path + ".tmp", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
