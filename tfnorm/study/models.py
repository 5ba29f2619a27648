"""The networks the study trains: plain MLP and CNN stacks, varying only normalization.

Both are deliberately plain (no skip connections), so that where normalization sits
matters: ``depth`` hidden Dense/Conv layers of ``width`` units, ReLU after each, and a
Dense classifier. A normalization layer goes between a hidden layer and its ReLU.

Placements:
  * ``every`` -- a normalization layer after each hidden Dense/Conv;
  * ``first`` -- only after the first hidden Dense/Conv;
  * ``input`` -- a single normalization layer on the input, none in the network
    (one statistic per input feature: per pixel for the MLP, per sensor channel for
    the 1-D CNN);
  * ``input-global`` -- a single normalization on the input seen as one channel, so
    batch normalization z-scores the whole input with one mean and one variance
    (Li et al. 2018's BatchNormalization over a ``(time, sensors, 1)`` input).

``residual=True`` adds an identity skip connection around every hidden layer whose
input and output widths agree (all but the first): ``x <- x + relu(norm(layer(x)))``.

Normalization names come from the registry (:func:`tfnorm.get`), resolved when a model
is built, plus two names of the study's own: ``none`` (no normalization; one
configuration whatever the placement) and ``cosine`` (``tfnorm.CosineDense`` /
``tfnorm.CosineConv2D`` *in place of* the Dense/Conv layers at the placement; there is
no ``input`` placement for it).
"""

from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Sequence, Tuple

MODELS = ("mlp", "cnn", "cnn1d")
#: The placements the default comparison tries for batch normalization.
PLACEMENTS = ("every", "first", "input")
#: Every placement ``--placement`` accepts.
ALL_PLACEMENTS = PLACEMENTS + ("input-global",)
INPUT_PLACEMENTS = ("input", "input-global")
NONE = "none"
COSINE = "cosine"
#: The normalizations the default study compares, in this order (those available).
DEFAULT_NORMS = ("batch", "layer", "group", "online", "adanorm", COSINE, NONE)
#: Classes the ``cosine`` configuration needs.
COSINE_CLASSES = ("CosineDense", "CosineConv2D")
KERNEL_INITIALIZER = "he_normal"  # plain ReLU stacks: keep the unnormalized baseline trainable


@dataclasses.dataclass(frozen=True)
class Config:
    """One study configuration: a normalization at a placement (``none`` has no placement)."""

    norm: str
    placement: Optional[str] = None
    #: extra constructor arguments of the normalization layer, e.g. ``(("momentum", 0.9),)``
    options: Tuple[Tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        base = self.norm if self.placement is None else f"{self.norm}@{self.placement}"
        if self.options:
            base += "[" + ",".join(f"{k}={v}" for k, v in self.options) + "]"
        return base


def cosine_available() -> bool:
    import tfnorm

    return all(hasattr(tfnorm, name) for name in COSINE_CLASSES)


def valid_norms() -> List[str]:
    """Every name :func:`check_norms` accepts (registry short names plus none/cosine)."""
    import tfnorm

    names = [NONE] + list(tfnorm.available())
    if cosine_available():
        names.append(COSINE)
    return sorted(set(names))


def check_norms(names: Sequence[str]) -> List[str]:
    """Returns ``names`` with registry class names kept as given; raises ValueError on unknown ones."""
    from tfnorm import registry

    valid = valid_norms()
    out = []
    for name in names:
        if name in (NONE, COSINE):
            if name == COSINE and not cosine_available():
                raise ValueError(
                    f"unknown norm {name!r}: this tfnorm has no {' / '.join(COSINE_CLASSES)}; "
                    f"valid: {', '.join(valid)}"
                )
        elif registry.lookup(name) not in registry.classes():
            raise ValueError(f"unknown norm {name!r}; valid: {', '.join(valid)}")
        if name not in out:
            out.append(name)
    return out


def check_placements(names: Sequence[str]) -> List[str]:
    out = []
    for name in names:
        if name not in ALL_PLACEMENTS:
            raise ValueError(f"unknown placement {name!r}; valid: {', '.join(ALL_PLACEMENTS)}")
        if name not in out:
            out.append(name)
    return out


def check_model(name: str) -> str:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    return name


def default_norms() -> List[str]:
    """:data:`DEFAULT_NORMS` restricted to what this tfnorm provides."""
    valid = set(valid_norms())
    return [n for n in DEFAULT_NORMS if n in valid]


def expand_configs(
    norms: Sequence[str], placements: Optional[Sequence[str]] = None
) -> Tuple[List[Config], List[str]]:
    """The configurations to train and notes about combinations that were skipped.

    ``placements=None`` is the default design: batch normalization at every placement
    (the question), every other normalization after every layer.
    """
    configs: List[Config] = []
    skipped: List[str] = []
    for norm in norms:
        if norm == NONE:
            configs.append(Config(NONE))
            continue
        where = (
            placements
            if placements is not None
            else (PLACEMENTS if norm == "batch" else ("every",))
        )
        for p in where:
            if norm == COSINE and p in INPUT_PLACEMENTS:
                skipped.append(
                    f"cosine@{p} (cosine layers replace Dense/Conv; "
                    "there is no cosine layer on the input)"
                )
                continue
            configs.append(Config(norm, p))
    return configs, skipped


def choose_groups(channels: int, max_groups: int = 32, min_per_group: int = 4) -> int:
    """Groups for group normalization: the most groups (<= 32) that divide ``channels``
    with at least 4 channels each (fewer channels: one group).

    >>> choose_groups(128), choose_groups(32), choose_groups(784), choose_groups(1)
    (32, 8, 28, 1)
    """
    need = min(min_per_group, channels)
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0 and channels // g >= need:
            return g
    return 1


def _in_strategy_scope() -> bool:
    import tensorflow as tf

    return tf.distribute.has_strategy()


def make_norm(name: str, channels: int, layer_name: Optional[str] = None, options=()):
    """A normalization layer from the registry with its default arguments, except that a
    layer taking ``groups`` (group normalization, EvoNorm-S0) gets a value that divides
    ``channels`` (:func:`choose_groups`), and one taking ``synchronized`` gets True when
    built inside a ``tf.distribute`` strategy's scope (``--strategy``)."""
    from tfnorm import registry

    cls = registry.resolve(name)
    traits = registry.traits(cls) or registry.Traits(name)
    kwargs = {}
    if traits.groups:  # group norm, EvoNorm-S0, ...
        kwargs["groups"] = choose_groups(channels)
    if traits.synchronized and _in_strategy_scope():
        kwargs["synchronized"] = True  # --strategy: statistics of the global batch
    kwargs.update(dict(options))
    if layer_name is not None:
        kwargs["name"] = layer_name
    return cls(**kwargs)  # tfnorm.get(name) takes no layer name: its first argument is `name`


def _dense(units, cosine, name):
    import keras

    if cosine:
        import tfnorm

        return tfnorm.CosineDense(units, name=name)  # scale-free: the initializer's scale is moot
    return keras.layers.Dense(units, kernel_initializer=KERNEL_INITIALIZER, name=name)


def _conv(filters, strides, cosine, name):
    import keras

    if cosine:
        import tfnorm

        return tfnorm.CosineConv2D(filters, 3, strides=strides, padding="same", name=name)
    return keras.layers.Conv2D(
        filters,
        3,
        strides=strides,
        padding="same",
        kernel_initializer=KERNEL_INITIALIZER,
        name=name,
    )


def cnn_strides(depth: int) -> List[int]:
    """Stride of each conv: 2 at the second layer and halfway through the rest, else 1.

    >>> cnn_strides(6), cnn_strides(2), cnn_strides(1)
    ([1, 2, 1, 2, 1, 1], [1, 2], [2])
    """
    if depth == 1:
        return [2]
    strides = [1] * depth
    strides[1] = 2
    if depth >= 4:
        strides[1 + (depth - 1) // 2] = 2
    return strides


def _conv1d(filters, cosine, name):
    import keras

    if cosine:
        import tfnorm

        return tfnorm.CosineConv1D(filters, 5, padding="same", name=name)
    return keras.layers.Conv1D(
        filters, 5, padding="same", kernel_initializer=KERNEL_INITIALIZER, name=name
    )


def _input_norm(x, norm, placement, options):
    """One normalization on the input: per feature (``input``) or over everything as a
    single channel (``input-global``)."""
    import keras

    if placement == "input":
        return make_norm(norm, int(x.shape[-1]), layer_name="input_norm", options=options)(x)
    shape = tuple(int(d) for d in x.shape[1:])
    x = keras.layers.Reshape(shape + (1,), name="as_one_channel")(x)
    x = make_norm(norm, 1, layer_name="input_norm", options=options)(x)
    return keras.layers.Reshape(shape, name="back_to_input_shape")(x)


def build_model(
    config: Config,
    model: str,
    input_shape: Sequence[int],
    num_classes: int,
    depth: int,
    width: int,
    residual: bool = False,
):
    """The network for ``config`` (a Functional keras Model, uncompiled).

    Args:
      config: which normalization, where.
      model: ``"mlp"`` (Flatten, ``depth`` Dense layers), ``"cnn"`` (``depth`` 3x3
        convolutions, stride 2 at two of them, global average pooling) or ``"cnn1d"``
        (``depth`` 1-D convolutions of width 5 over ``(time, channels)`` input, global
        average pooling over time).
      input_shape: one sample, ``(H, W, C)`` for images or ``(T, C)`` for sequences.
      num_classes: outputs of the final Dense (logits).
      depth: hidden Dense/Conv layers.
      width: their units/filters.
      residual: identity skip connections around the hidden layers after the first.
    """
    import keras

    check_model(model)
    norm, placement = config.norm, config.placement
    if norm != NONE and placement not in ALL_PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; valid: {', '.join(ALL_PLACEMENTS)}")
    if norm == COSINE and placement in INPUT_PLACEMENTS:
        raise ValueError(
            f"the cosine layers replace Dense/Conv layers; cosine has no "
            f"{placement!r} placement (use every or first)"
        )
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be >= 1, received depth={depth}, width={width}")
    want = 2 if model == "cnn1d" else 3
    if len(input_shape) != want:
        raise ValueError(
            f"the {model} takes inputs of rank {want} per sample "
            f"({'(time, channels)' if want == 2 else '(height, width, channels)'}), "
            f"received input_shape={tuple(input_shape)}"
        )

    inputs = keras.Input(tuple(input_shape), name="inputs")
    x = inputs
    if model == "mlp":
        x = keras.layers.Flatten(name="flatten")(x)
    if norm not in (NONE, COSINE) and placement in INPUT_PLACEMENTS:
        x = _input_norm(x, norm, placement, config.options)
    strides = cnn_strides(depth) if model == "cnn" else None
    for i in range(depth):
        here = norm != NONE and (placement == "every" or (placement == "first" and i == 0))
        cosine = here and norm == COSINE
        name = f"{'dense' if model == 'mlp' else 'conv'}_{i + 1}"
        skip = x if residual and i > 0 and (model != "cnn" or strides[i] == 1) else None
        if model == "mlp":
            x = _dense(width, cosine, name)(x)
        elif model == "cnn":
            x = _conv(width, strides[i], cosine, name)(x)
        else:
            x = _conv1d(width, cosine, name)(x)
        if here and not cosine:
            x = make_norm(norm, width, layer_name=f"norm_{i + 1}", options=config.options)(x)
        x = keras.layers.ReLU(name=f"relu_{i + 1}")(x)
        if skip is not None:
            x = keras.layers.Add(name=f"skip_{i + 1}")([skip, x])
    if model == "cnn":
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    elif model == "cnn1d":
        x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    suffix = "_residual" if residual else ""
    label = config.label.replace("@", "_").replace("[", "_").replace("]", "").replace(",", "_")
    label = label.replace("=", "").replace("-", "_")
    return keras.Model(inputs, outputs, name=f"{model}_{label}{suffix}")


def preflight(
    configs: Sequence[Config],
    model: str,
    input_shape: Sequence[int],
    num_classes: int,
    depth: int,
    width: int,
    residual: bool = False,
) -> None:
    """Builds every configuration once, so that a normalization that cannot go into this
    network (e.g. an image-only layer in the MLP) is reported before anything trains.

    Raises:
      ValueError: one line naming the configuration and the layer's own reason.
    """
    for config in configs:
        try:
            build_model(config, model, input_shape, num_classes, depth, width, residual)
        except (ValueError, TypeError) as err:
            text = str(err).strip()
            reason = text.splitlines()[0] if text else type(err).__name__
            raise ValueError(
                f"{config.label} cannot be built into the {model} ({reason})"
            ) from None
