"""``tfnorm demo``: batch normalization's moving-average lag, measured in about a minute.

The same small CNN is trained for one epoch on the embedded MNIST digits with
each normalization given by ``--norms``. A layer that normalizes with batch
statistics in training uses moving averages at inference; after one short
epoch those averages still carry much of their initial values (``momentum**steps``),
so the test accuracy in inference mode can be far below what the network has
learned. The demo measures it twice: with the moving averages as trained, and
after :func:`tfnorm.recompute_batch_statistics` replaced them by the exact
statistics of the training digits. Layers without moving averages (layer, group)
are measured once. The gap is one of the mechanisms ``tfnorm study`` measures
(``--experiment statistics``).
"""

from __future__ import annotations

import time


def add_arguments(parser):
    parser.add_argument("--epochs", type=int, default=1, help="epochs per model (default 1)")
    parser.add_argument(
        "--norms",
        default="batch,layer,group",
        help="comma-separated registry names (default batch,layer,group)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")


def run(args) -> int:
    from tfnorm.cli import UsageError

    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} must be >= 1, received {flag} {getattr(args, name)}")
    import keras

    import tfnorm
    from tfnorm import datasets

    names = [n.strip() for n in args.norms.split(",") if n.strip()]
    classes = {}
    for n in names:
        try:
            classes[n] = tfnorm.registry.resolve(n)
        except ValueError as err:
            raise UsageError(str(err)) from None
    data = datasets.load("mnist10k")
    x_tr = data.x_train.astype("float32") / 255.0
    x_te = data.x_test.astype("float32") / 255.0
    steps = args.epochs * -(-len(x_tr) // args.batch_size)
    print(
        f"mnist10k: {len(x_tr)} train / {len(x_te)} test digits (embedded, no download); "
        f"{steps} training steps per model"
    )
    rows = []
    for name in names:
        keras.utils.set_random_seed(0)
        traits = tfnorm.traits(classes[name])
        kw = {"groups": 8} if traits is not None and traits.groups else {}
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Conv2D(16, 3, padding="same"),
                tfnorm.get(name, **kw),
                keras.layers.ReLU(),
                keras.layers.MaxPooling2D(),
                keras.layers.Conv2D(32, 3, padding="same"),
                tfnorm.get(name, **kw),
                keras.layers.ReLU(),
                keras.layers.MaxPooling2D(),
                keras.layers.Flatten(),
                keras.layers.Dense(data.num_classes),
            ]
        )
        model.compile(
            "adam",
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        print(f"\n== {name} ==")
        t0 = time.time()
        model.fit(x_tr, data.y_train, batch_size=args.batch_size, epochs=args.epochs, verbose=2)
        _, acc = model.evaluate(x_te, data.y_test, verbose=0)
        momenta = [
            float(layer.momentum)
            for layer in model.layers
            if hasattr(layer, "momentum") and hasattr(layer, "moving_mean")
        ]
        recomputed = None
        if momenta:
            tfnorm.recompute_batch_statistics(model, x_tr, batch_size=256)
            _, recomputed = model.evaluate(x_te, data.y_test, verbose=0)
        rows.append((name, acc, recomputed, momenta[0] if momenta else None))
        line = f"{name}: test accuracy {acc:.1%}"
        if recomputed is not None:
            line += f"; {recomputed:.1%} with the moving averages recomputed"
        print(f"{line} ({time.time() - t0:.1f} s)")
    print("\n" + summary(rows, steps))
    return 0


def summary(rows, steps: int) -> str:
    """What the run showed, in words computed from its numbers.

    ``rows``: (name, test accuracy, accuracy after recomputing the moving
    averages or None, momentum or None).

    Example:
      >>> print(summary([("batch", 0.11, 0.97, 0.99), ("group", 0.95, None, None)], 157))
      batch: 11.0% in inference mode with its moving averages, 97.0% once they are the training digits' exact statistics. After 157 steps at momentum 0.99 the averages still hold 0.99**157 = 20.6% of their initial values: moving-average lag, not a network that failed to learn.
      group: 95.0% (no moving averages: the same statistics in training and inference).
    """
    out = []
    for name, acc, recomputed, momentum in rows:
        if recomputed is None:
            out.append(
                f"{name}: {acc:.1%} (no moving averages: the same statistics in training "
                "and inference)."
            )
            continue
        left = momentum**steps
        text = (
            f"{name}: {acc:.1%} in inference mode with its moving averages, {recomputed:.1%} "
            "once they are the training digits' exact statistics."
        )
        if recomputed - acc > 0.05:
            text += (
                f" After {steps} steps at momentum {momentum:g} the averages still hold "
                f"{momentum:g}**{steps} = {left:.1%} of their initial values: moving-average "
                "lag, not a network that failed to learn."
            )
        else:
            text += (
                f" After {steps} steps at momentum {momentum:g} ({left:.1%} of the initial "
                "values left) the moving averages have caught up."
            )
        out.append(text)
    return "\n".join(out)
