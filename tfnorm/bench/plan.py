"""What ``tfnorm bench`` measures: layers, their baselines, shapes and goals.

Layers are discovered at run time from ``tfnorm.__all__``, so a layer added
to the package gets rows without a change here. The specs (keyed by the
registry's short name, checked against it) only add what
cannot be guessed: the Keras twin (or the composition a layer replaces), the
shapes that suit the layer, constructor arguments, and the performance goal.
A public layer without a spec is tried with its default arguments on every
shape; what cannot be built is reported as skipped, with the reason.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# Realistic activations: an NHWC conv map, a (B, T, C) sequence, a (B, C) batch
# of dense features; smaller ones for layers that also do a matmul/convolution,
# and a (B, T, C) sequence with small C for the layers a small transformer uses.
SHAPES: Dict[str, Tuple[int, ...]] = {
    "conv": (32, 56, 56, 64),
    "seq": (16, 256, 1024),
    "dense": (256, 1024),
    "conv-small": (8, 28, 28, 64),
    "seq-small": (16, 256, 128),
    "vol-small": (2, 8, 16, 16, 32),
}
# For the test suite: the same code paths on tensors that cost nothing.
TINY_SHAPES: Dict[str, Tuple[int, ...]] = {
    "conv": (2, 4, 4, 32),
    "seq": (2, 4, 64),
    "dense": (8, 64),
    "conv-small": (2, 4, 4, 32),
    "seq-small": (2, 4, 32),
    "vol-small": (1, 2, 4, 4, 8),
}
BASE_SHAPES = ("conv", "seq", "dense")

Factory = Callable[[int, Optional[str]], list]  # (channels, dtype policy) -> layers applied in turn


@dataclasses.dataclass
class Spec:
    """How to benchmark one public layer class.

    Attributes:
      shapes: shape keys, in order of relevance (``--quick`` takes the first).
      make: builds the tfnorm side; default ``cls(**kwargs)``.
      baseline: builds what the layer is compared with; None for no baseline.
      baseline_label: how the table names the baseline.
      twin: the baseline is the Keras built-in computing the same function.
      goal: the largest acceptable ratio tfnorm / baseline.
      goal_modes: the modes (``forward``/``train``) the goal applies to.
      floor_goal: the layer is elementwise apart from its statistics, so the
        ``x * 2`` floor is a fair target (not for layers with a matmul/conv).
      peer: the same operation for ``--peers``: a peer op name (see
        :data:`tfnorm.bench.peers.PEER_OPS`) and its arguments; None for none.
    """

    shapes: Tuple[str, ...] = BASE_SHAPES
    make: Optional[Factory] = None
    baseline: Optional[Factory] = None
    baseline_label: str = ""
    twin: bool = False
    goal: Optional[float] = None
    goal_modes: Tuple[str, ...] = ("forward", "train")
    floor_goal: bool = True
    peer: Optional[Tuple[str, Dict[str, object]]] = None


@dataclasses.dataclass
class Subject:
    """One layer class ready to benchmark."""

    name: str
    short: str
    make: Factory
    spec: Spec


def _keras():
    import keras

    return keras


def _tfnorm():
    import tfnorm

    return tfnorm


def _kw(dtype):
    return {} if dtype is None else {"dtype": dtype}


def _specs() -> Dict[str, Spec]:
    """Short name -> :class:`Spec`; a ValueError names a key the registry does not know."""
    from tfnorm import registry

    specs = _spec_table()
    unknown = sorted(set(specs) - set(registry.available(None)))
    if unknown:
        raise ValueError(f"bench specs for unregistered short names {unknown}")
    from tfnorm.bench.peers import PEER_OPS

    bad = sorted(k for k, s in specs.items() if s.peer and s.peer[0] not in PEER_OPS)
    if bad:
        raise ValueError(f"bench specs {bad} name a peer op outside {PEER_OPS}")
    return specs


def _spec_table() -> Dict[str, Spec]:
    keras = _keras()
    tn = _tfnorm()
    L = keras.layers

    def keras_twin(cls, **kw):
        return lambda c, dt: [cls(**kw, **_kw(dt))]

    def tfnorm_layer(name, **kw):
        return lambda c, dt: [getattr(tn, name)(**kw, **_kw(dt))]

    def dense(c, dt):
        return L.Dense(c, **_kw(dt))

    def conv2d(c, dt):
        return L.Conv2D(c, 3, padding="same", **_kw(dt))

    def conv1d(c, dt):
        return L.Conv1D(c, 3, padding="same", **_kw(dt))

    def cls_of(name):
        return getattr(tn, name)

    return {
        # -- layers with a Keras twin ------------------------------------------------
        # (the last shape, a (B, T, C) sequence with small C, is the one a small
        # transformer or a 1-D conv net has)
        "batch": Spec(
            ("conv", "seq", "dense", "seq-small"),
            baseline=keras_twin(L.BatchNormalization),
            baseline_label="keras",
            twin=True,
            goal=1.0,
            peer=("batch_norm", {"epsilon": 1e-3}),
        ),
        "layer": Spec(
            ("seq", "dense", "conv", "seq-small"),
            baseline=keras_twin(L.LayerNormalization),
            baseline_label="keras",
            twin=True,
            goal=0.8,
            peer=("layer_norm", {"epsilon": 1e-3}),
        ),
        "rms": Spec(
            ("seq", "dense", "seq-small"),
            baseline=keras_twin(L.RMSNormalization),
            baseline_label="keras",
            twin=True,
            goal=0.8,
            peer=("rms_norm", {"epsilon": 1e-6}),
        ),
        "group": Spec(
            ("conv",),
            make=tfnorm_layer("GroupNormalization", groups=32),
            baseline=keras_twin(L.GroupNormalization, groups=32),
            baseline_label="keras",
            twin=True,
            goal=0.5,
            peer=("group_norm", {"groups": 32, "epsilon": 1e-3}),
        ),
        "instance": Spec(
            ("conv",),
            baseline=keras_twin(L.GroupNormalization, groups=-1),
            baseline_label="keras GN(-1)",
            twin=True,
            goal=0.5,
            peer=("instance_norm", {"epsilon": 1e-3}),
        ),
        "spectral": Spec(
            ("dense",),
            make=lambda c, dt: [cls_of("SpectralNormalization")(dense(c, dt), **_kw(dt))],
            baseline=lambda c, dt: [L.SpectralNormalization(dense(c, dt), **_kw(dt))],
            baseline_label="keras",
            twin=True,
            goal=1.0,
            floor_goal=False,
        ),
        # -- layers without one: compared with what they replace or build on -----------
        "online": Spec(
            ("conv", "seq", "dense"),
            baseline=tfnorm_layer("BatchNormalization"),
            baseline_label="tfnorm BN",
            goal=2.0,
            goal_modes=("train",),
        ),
        "adanorm": Spec(
            ("seq", "dense"),
            baseline=tfnorm_layer("LayerNormalization"),
            baseline_label="tfnorm LN",
            goal=1.15,
        ),
        "detach": Spec(
            ("seq", "dense"),
            baseline=tfnorm_layer("LayerNormalization"),
            baseline_label="tfnorm LN",
        ),
        "cosine_dense": Spec(
            ("dense",),
            make=lambda c, dt: [cls_of("CosineDense")(c, **_kw(dt))],
            baseline=lambda c, dt: [dense(c, dt), tn.LayerNormalization(**_kw(dt))],
            baseline_label="Dense+tfnorm LN",
            goal=1.3,
            floor_goal=False,
        ),
        "cosine_conv1d": Spec(
            ("seq-small",),
            make=lambda c, dt: [cls_of("CosineConv1D")(c, 3, padding="same", **_kw(dt))],
            baseline=lambda c, dt: [conv1d(c, dt), tn.BatchNormalization(**_kw(dt))],
            baseline_label="Conv1D+tfnorm BN",
            floor_goal=False,
        ),
        "cosine_conv2d": Spec(
            ("conv-small",),
            make=lambda c, dt: [cls_of("CosineConv2D")(c, 3, padding="same", **_kw(dt))],
            baseline=lambda c, dt: [conv2d(c, dt), tn.BatchNormalization(**_kw(dt))],
            baseline_label="Conv2D+tfnorm BN",
            floor_goal=False,
        ),
        "weight": Spec(
            ("dense",),
            make=lambda c, dt: [cls_of("WeightNormalization")(dense(c, dt), **_kw(dt))],
            baseline=lambda c, dt: [dense(c, dt)],
            baseline_label="keras Dense",
            floor_goal=False,
        ),
        "frn": Spec(
            ("conv",), baseline=tfnorm_layer("InstanceNormalization"), baseline_label="tfnorm IN"
        ),
        "evonorm_b0": Spec(
            ("conv",), baseline=tfnorm_layer("BatchNormalization"), baseline_label="tfnorm BN"
        ),
        "evonorm_s0": Spec(
            ("conv",),
            baseline=tfnorm_layer("GroupNormalization", groups=32),
            baseline_label="tfnorm GN",
        ),
        "switchable": Spec(
            ("conv",), baseline=tfnorm_layer("BatchNormalization"), baseline_label="tfnorm BN"
        ),
        "lrn": Spec(("conv",)),
        "tlu": Spec(("conv",)),
        "pixel": Spec(
            ("conv", "seq"), baseline=tfnorm_layer("RMSNormalization"), baseline_label="tfnorm RMS"
        ),
        "scale": Spec(
            ("seq", "dense"), baseline=tfnorm_layer("RMSNormalization"), baseline_label="tfnorm RMS"
        ),
        "dyt": Spec(
            ("seq", "dense"),
            baseline=tfnorm_layer("LayerNormalization"),
            baseline_label="tfnorm LN",
        ),
    }


def public_layer_classes() -> List[type]:
    """Concrete public Keras layer classes of tfnorm, in ``__all__`` order."""
    keras = _keras()
    tn = _tfnorm()
    out = []
    for name in tn.__all__:
        obj = getattr(tn, name, None)
        if (
            inspect.isclass(obj)
            and issubclass(obj, keras.layers.Layer)
            and not inspect.isabstract(obj)
            and obj is not tn.NormalizationLayer
        ):
            out.append(obj)
    return out


def short_names() -> Dict[str, str]:
    """Class name -> registry short name (the first one registered)."""
    from tfnorm import registry

    out: Dict[str, str] = {}
    for short in registry.available(None):
        cls = registry.resolve(short)
        out.setdefault(cls.__name__, short)
    return out


def _auto_spec(cls, missing: List[str]) -> Optional[Spec]:
    """A spec for a layer that needs arguments only a convolution, dense layer or wrapper takes.

    ``filters``/``kernel_size``: a 1-D/2-D/3-D convolution (from the class
    name) with as many filters as input channels, kernel 3, "same" padding,
    against the Keras convolution; ``units``: against a Keras Dense layer;
    ``layer``: a wrapper around a Dense layer, against the bare Dense layer.
    """
    keras = _keras()
    L = keras.layers
    params = inspect.signature(cls.__init__).parameters
    name = cls.__name__
    if missing and set(missing) <= {"filters", "kernel_size"}:
        dims = 3 if "3D" in name else 1 if "1D" in name else 2
        shape = {1: "seq-small", 2: "conv-small", 3: "vol-small"}[dims]
        conv = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}[dims]
        pad = {"padding": "same"} if "padding" in params else {}
        return Spec(
            (shape,),
            make=lambda c, dt: [cls(filters=c, kernel_size=3, **pad, **_kw(dt))],
            baseline=lambda c, dt: [conv(c, 3, padding="same", **_kw(dt))],
            baseline_label=f"keras {conv.__name__}",
            floor_goal=False,
        )
    if missing == ["units"]:
        return Spec(
            ("dense",),
            make=lambda c, dt: [cls(units=c, **_kw(dt))],
            baseline=lambda c, dt: [L.Dense(c, **_kw(dt))],
            baseline_label="keras Dense",
            floor_goal=False,
        )
    if missing == ["layer"]:
        return Spec(
            ("dense",),
            make=lambda c, dt: [cls(L.Dense(c, **_kw(dt)), **_kw(dt))],
            baseline=lambda c, dt: [L.Dense(c, **_kw(dt))],
            baseline_label="keras Dense",
            floor_goal=False,
        )
    return None


def _required_args(cls) -> List[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return [
        p.name
        for p in params
        if p.name != "self"
        and p.default is p.empty
        and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]


def subjects(select: Optional[Sequence[str]] = None) -> Tuple[List[Subject], List[dict]]:
    """The layers to benchmark, and ``{"layer", "reason"}`` for those left out.

    ``select``: registry short names or class names (case-insensitive); None
    for every public layer.
    """
    specs = _specs()
    shorts = short_names()
    classes = public_layer_classes()
    out: List[Subject] = []
    skipped: List[dict] = []
    wanted = None
    if select is not None:
        wanted = {s.strip().lower() for s in select if s.strip()}
        known = {c.__name__.lower() for c in classes} | {s.lower() for s in shorts.values()}
        unknown = sorted(wanted - known)
        if unknown:
            names = sorted({shorts.get(c.__name__, c.__name__) for c in classes})
            raise KeyError(f"unknown layer(s) {unknown}; choose among {', '.join(names)}")
    for cls in classes:
        name = cls.__name__
        short = shorts.get(name, name)
        if wanted is not None and name.lower() not in wanted and short.lower() not in wanted:
            continue
        spec = specs.get(short)
        if spec is None:
            missing = _required_args(cls)
            spec = _auto_spec(cls, missing) if missing else Spec()
            if spec is None:
                skipped.append(
                    {
                        "layer": name,
                        "reason": "needs constructor arguments "
                        f"{missing} and has no benchmark spec",
                    }
                )
                continue
        make = spec.make or (lambda c, dt, cls=cls: [cls(**_kw(dt))])
        out.append(Subject(name=name, short=short, make=make, spec=spec))
    return out, skipped
