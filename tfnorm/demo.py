"""``tfnorm demo``: a one-minute tour — the same small CNN with a few normalizations."""

from __future__ import annotations

import time


def add_arguments(parser):
    parser.add_argument("--epochs", type=int, default=1, help="epochs per model (default 1)")
    parser.add_argument(
        "--norms",
        default="batch,layer,group",
        help="comma-separated registry names (default batch,layer,group)",
    )


def run(args) -> int:
    from tfnorm.cli import UsageError

    if args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, received --epochs {args.epochs}")
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
    print(f"mnist10k: {len(x_tr)} train / {len(x_te)} test digits (embedded, no download)")
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
                keras.layers.GlobalAveragePooling2D(),
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
        model.fit(x_tr, data.y_train, batch_size=64, epochs=args.epochs, verbose=2)
        _, acc = model.evaluate(x_te, data.y_test, verbose=0)
        print(f"{name}: test accuracy {acc:.4f} ({time.time() - t0:.1f} s)")
    return 0
