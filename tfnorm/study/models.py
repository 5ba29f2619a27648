"""The networks the study trains: plain MLP and CNN stacks, varying only normalization.

Both are deliberately plain (no skip connections), so that where normalization sits
matters: ``depth`` hidden Dense/Conv layers of ``width`` units, ReLU after each, and a
Dense classifier. A normalization layer goes between a hidden layer and its ReLU.

Placements:
  * ``every`` -- a normalization layer after each hidden Dense/Conv;
  * ``first`` -- only after the first hidden Dense/Conv;
  * ``input`` -- a single normalization layer on the input, none in the network.

Normalization names come from the registry (:func:`tfnorm.get`), resolved when a model
is built, plus two names of the study's own: ``none`` (no normalization; one
configuration whatever the placement) and ``cosine`` (``tfnorm.CosineDense`` /
``tfnorm.CosineConv2D`` *in place of* the Dense/Conv layers at the placement; there is
no ``input`` placement for it).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import List, Optional, Sequence, Tuple

MODELS = ("mlp", "cnn")
PLACEMENTS = ("every", "first", "input")
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

    @property
    def label(self) -> str:
        return self.norm if self.placement is None else f"{self.norm}@{self.placement}"


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
                    f"valid: {', '.join(valid)}")
        elif registry._lookup(name) is None:
            raise ValueError(f"unknown norm {name!r}; valid: {', '.join(valid)}")
        if name not in out:
            out.append(name)
    return out


def check_placements(names: Sequence[str]) -> List[str]:
    out = []
    for name in names:
        if name not in PLACEMENTS:
            raise ValueError(f"unknown placement {name!r}; valid: {', '.join(PLACEMENTS)}")
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


def expand_configs(norms: Sequence[str], placements: Optional[Sequence[str]] = None
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
        where = placements if placements is not None else (
            PLACEMENTS if norm == "batch" else ("every",))
        for p in where:
            if norm == COSINE and p == "input":
                skipped.append("cosine@input (cosine layers replace Dense/Conv; "
                               "there is no cosine layer on the input)")
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


def make_norm(name: str, channels: int, layer_name: Optional[str] = None):
    """A normalization layer from the registry with its default arguments, except that a
    layer taking ``groups`` (group normalization, EvoNorm-S0) gets a value that divides
    ``channels`` (:func:`choose_groups`), and one taking ``synchronized`` gets True when
    built inside a ``tf.distribute`` strategy's scope (``--strategy``)."""
    from tfnorm import registry

    cls = registry.resolve(name)
    kwargs = {}
    if "groups" in inspect.signature(cls.__init__).parameters:  # group norm, EvoNorm-S0, ...
        kwargs["groups"] = choose_groups(channels)
    if "synchronized" in inspect.signature(cls.__init__).parameters and _in_strategy_scope():
        kwargs["synchronized"] = True  # --strategy: statistics of the global batch
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
    return keras.layers.Conv2D(filters, 3, strides=strides, padding="same",
                               kernel_initializer=KERNEL_INITIALIZER, name=name)


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


def build_model(config: Config, model: str, input_shape: Sequence[int], num_classes: int,
                depth: int, width: int):
    """The network for ``config`` (a Functional keras Model, uncompiled).

    Args:
      config: which normalization, where.
      model: ``"mlp"`` (Flatten, ``depth`` Dense layers) or ``"cnn"`` (``depth`` 3x3
        convolutions, stride 2 at two of them, global average pooling).
      input_shape: one image, ``(H, W, C)``.
      num_classes: outputs of the final Dense (logits).
      depth: hidden Dense/Conv layers.
      width: their units/filters.
    """
    import keras

    check_model(model)
    norm, placement = config.norm, config.placement
    if norm != NONE and placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; valid: {', '.join(PLACEMENTS)}")
    if norm == COSINE and placement == "input":
        raise ValueError("the cosine layers replace Dense/Conv layers; cosine has no 'input' "
                         "placement (use every or first)")
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be >= 1, received depth={depth}, width={width}")

    inputs = keras.Input(tuple(input_shape), name="image")
    x = inputs
    if model == "mlp":
        x = keras.layers.Flatten(name="flatten")(x)
    if norm not in (NONE, COSINE) and placement == "input":
        x = make_norm(norm, int(x.shape[-1]), layer_name="input_norm")(x)
    strides = cnn_strides(depth) if model == "cnn" else None
    for i in range(depth):
        here = norm != NONE and (placement == "every" or (placement == "first" and i == 0))
        cosine = here and norm == COSINE
        name = f"{'dense' if model == 'mlp' else 'conv'}_{i + 1}"
        if model == "mlp":
            x = _dense(width, cosine, name)(x)
        else:
            x = _conv(width, strides[i], cosine, name)(x)
        if here and not cosine:
            x = make_norm(norm, width, layer_name=f"norm_{i + 1}")(x)
        x = keras.layers.ReLU(name=f"relu_{i + 1}")(x)
    if model == "cnn":
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"{model}_{config.label.replace('@', '_')}")


def preflight(configs: Sequence[Config], model: str, input_shape: Sequence[int],
              num_classes: int, depth: int, width: int) -> None:
    """Builds every configuration once, so that a normalization that cannot go into this
    network (e.g. an image-only layer in the MLP) is reported before anything trains.

    Raises:
      ValueError: one line naming the configuration and the layer's own reason.
    """
    for config in configs:
        try:
            build_model(config, model, input_shape, num_classes, depth, width)
        except (ValueError, TypeError) as err:
            text = str(err).strip()
            reason = text.splitlines()[0] if text else type(err).__name__
            raise ValueError(
                f"{config.label} cannot be built into the {model} ({reason})") from None
