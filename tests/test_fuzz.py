"""Property-based checks of every public layer against the float64 references of the descriptors.

Hypothesis draws a layer configuration (axes positive, negative or lists where the
layer takes them; ranks 2-5; axis sizes 1-64, at most ``MAX_ELEMENTS`` values), a
dtype policy, an input (scales 1e-6 to 1e4, offsets up to 1e6, all zeros, constants,
zero or constant slices, size-1 axes) and an execution mode (eager, ``tf.function``,
``tf.function(jit_compile=True)``), and compares outputs and input gradients with the
NumPy references of ``tests/descriptors`` (written from the papers, in float64) and
across modes.

Tolerances (see :func:`output_tolerance`) are those a correct implementation meets:

* the reference is evaluated on the *rounded* input, the values the layer sees;
* ``base * scale``: a few roundings of the output, relative to the output's scale
  (``max |reference|``): 8 units in the last place for half precision, 64 for
  float32, 1e-12 (``FLOAT64_RTOL``) for float64;
* ``K * S``: ``S`` is how much the float64 reference moves when every input value is
  perturbed by a few (4) units roundoff of the precision the layer computes in (float32
  statistics for half-precision input; the compute dtype itself, subnormals included,
  for the layers whose documented element-wise or linear maths run in it), measured on
  the reference itself. A backward-stable computation errs by a small multiple of
  ``S``; ``K = 64`` covers the growth of rounding in sums over up to 4096 values. ``S``
  is what makes ill-conditioned draws (an offset of 1e6 on a spread of 1e-3 in
  float32) fair, and it is 0 for an exact input such as all zeros, where the answer
  must then be exact to ``base``;
* an absolute floor of a few subnormal spacings of the compute dtype (float16
  subnormals have an absolute spacing of 2**-24); the rounding of the centring layers'
  apply step ``x * a + b`` (:func:`apply_rounding`); for float64, ``K`` times the
  float64 reference's own rounding (:func:`reference_rounding`).

Properties, one test each: outputs against the reference (every policy and mode) and
in float64 to 1e-12; input gradients against the reference (float32, float64); eager,
``tf.function`` and XLA agreeing on degenerate inputs; another rank than the built one;
half precision (tiny inputs, tiny spreads, float32 inputs beyond float16's range, finite
gradients, float32 weights and state under pure half-precision policies, moving and
streamed statistics that keep updating).

The example budgets are fixed (derandomized) for CI; ``TFNORM_FUZZ_PROFILE=release``
runs 20 times as many examples.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Dict, Optional, Tuple

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, Phase, assume, example, given, note, settings
from hypothesis import strategies as st

import tfnorm
from tests.descriptors import core, family, seed
from tests.harness import params_of

pytestmark = pytest.mark.slow

# ---------------------------------------------------------------------------
# budgets

# no "explain" phase: it reruns a failing example many times (minutes with compiled modes)
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
settings.register_profile("release", parent=settings.get_profile("ci"))
PROFILE = os.environ.get("TFNORM_FUZZ_PROFILE", "ci")
if PROFILE not in ("ci", "release"):
    raise ValueError(f"TFNORM_FUZZ_PROFILE must be 'ci' or 'release', received {PROFILE!r}")
_SCALE = {"ci": 1, "release": 20}[PROFILE]


def fuzz(n: int):
    """``@settings(derandomize=True, max_examples=n, deadline=None)`` (x20 for release)."""
    return settings(settings.get_profile(PROFILE), max_examples=n * _SCALE)


# ---------------------------------------------------------------------------
# precision

MAX_ELEMENTS = 4096
POLICIES = ["float32", "float64", "mixed_float16", "mixed_bfloat16", "float16", "bfloat16"]
HALF = ("float16", "bfloat16")
MODES = ["eager", "function", "jit"]
# unit roundoff
U = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
# absolute spacing of the subnormals (bfloat16 on CPU: float32's exponent range)
TINY = {"float64": 5e-324, "float32": 1.4e-45, "float16": 2.0**-24, "bfloat16": 9.2e-41}
MAX_FINITE = {"float64": 1.8e308, "float32": 3.4e38, "float16": 65504.0, "bfloat16": 3.39e38}
FLOAT64_RTOL = 1e-12
BASE = {
    "float64": FLOAT64_RTOL,
    "float32": 64 * U["float32"],
    "float16": 8 * U["float16"],
    "bfloat16": 8 * U["bfloat16"],
}
K = 64


def compute_dtype(policy: str) -> str:
    return keras.DTypePolicy(policy).compute_dtype


def stats_dtype(dtype: str) -> str:
    return "float32" if dtype in HALF else dtype


def rounded(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` rounded to ``dtype`` (bfloat16 included), back as float64."""
    return tf.cast(tf.cast(tf.constant(x, tf.float64), dtype), tf.float64).numpy()


# ---------------------------------------------------------------------------
# layer configurations


@dataclasses.dataclass
class Spec:
    """One drawn layer configuration; ``repr`` is what a falsifying example prints."""

    name: str
    kwargs: Dict[str, Any]
    shape: Tuple[int, ...]
    training: bool
    wrapped: Optional[Tuple[str, Dict[str, Any]]] = None  # wrappers: (kind, Keras kwargs)
    initialized: float = 0.0  # WeightNormalization's data-init flag
    # filled by make_spec
    reference: Callable = None
    grad: Optional[str] = "fd"  # "fd": autodiff of the forward; "custom"; None: not checked
    grad_reference: Optional[Callable] = None
    randomize: Callable = None  # randomize_uniform unless make_spec says otherwise
    # the documented element-wise or linear maths of the layer run in the compute dtype
    half_maths: bool = False
    accumulated: int = 1  # values summed per output in the compute dtype (linear maths)

    def __repr__(self):
        wrapped = f", wrapped={self.wrapped!r}" if self.wrapped else ""
        init = f", initialized={self.initialized}" if self.name == "WeightNormalization" else ""
        return (
            f"Spec({self.name}({_kw(self.kwargs)}), shape={self.shape}, "
            f"training={self.training}{wrapped}{init})"
        )

    def _repr_pretty_(self, printer, cycle):  # how hypothesis prints a falsifying example
        printer.text(repr(self))

    def make(self, dtype=None) -> keras.layers.Layer:
        extra = {} if dtype is None else {"dtype": keras.DTypePolicy(dtype)}
        cls = getattr(tfnorm, self.name)
        if self.wrapped is not None:
            inner = family.Linear(self.wrapped[0], **self.wrapped[1]).keras_layer(
                None if dtype is None else keras.DTypePolicy(dtype)
            )
            return cls(inner, **self.kwargs, **extra)
        return cls(**self.kwargs, **extra)

    def built(self, dtype=None, seed_=0, shape=None) -> keras.layers.Layer:
        layer = self.make(dtype)
        layer.build(tuple(shape or self.shape))
        (self.randomize or randomize_uniform)(layer, np.random.default_rng(seed_))
        return layer


def _kw(kwargs):
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _assign(v, value):
    v.assign(tf.cast(tf.constant(np.asarray(value, np.float64)), v.dtype))


def randomize_uniform(layer, rng):
    """``harness.default_randomize`` (uniform(0.5, 1.5), so variances stay valid) for
    variables of any dtype, bfloat16 included."""
    for v in layer.weights:
        _assign(v, rng.uniform(0.5, 1.5, size=v.shape))


def randomize_normal(layer, rng):
    """Cosine layers: kernels and biases of both signs (uniform(0.5, 1.5) would make every
    cosine close to 1)."""
    for v in layer.weights:
        _assign(v, rng.normal(size=v.shape))


def randomize_tlu(layer, rng):
    """As ``family._tlu_randomize``: thresholds among the inputs, slopes of both signs."""
    _assign(layer.tau, rng.uniform(-0.1, 0.1, size=layer.tau.shape))
    if layer.alpha is not None:
        _assign(layer.alpha, rng.uniform(-0.8, 0.8, size=layer.alpha.shape))


def randomize_spectral(layer, rng):
    """As ``family._sn_randomize``: weights uniform, ``u`` a unit vector."""
    randomize_uniform(layer, rng)
    u = rng.normal(size=layer.u.shape)
    _assign(layer.u, u / np.linalg.norm(u))


def randomize_weightnorm(initialized):
    """As ``family._wn_randomize``: weights uniform, the data-init flag as drawn."""

    def randomize(layer, rng):
        randomize_uniform(layer, rng)
        if layer.initialized is not None:
            _assign(layer.initialized, initialized)

    return randomize


def make_spec(name, kwargs, shape, training=False, wrapped=None, initialized=0.0) -> Spec:
    """The spec of ``name(**kwargs)`` on ``shape``, with its descriptor reference."""
    spec = Spec(name, dict(kwargs), tuple(shape), bool(training), wrapped, float(initialized))
    kw = spec.kwargs
    rank = len(shape)
    if name == "BatchNormalization":
        spec.reference = core.bn_reference(**kw)
        if kw.get("renorm") and training:
            spec.grad = "custom"
            spec.grad_reference = core.renorm_grad_reference(**kw)
    elif name == "LayerNormalization":
        spec.reference = core.ln_reference(**kw)
    elif name == "RMSNormalization":
        spec.reference = core.rms_reference(**kw)
    elif name == "GroupNormalization":
        spec.reference = core.gn_reference(**kw)
    elif name == "InstanceNormalization":
        spec.reference = core.in_reference(**kw)
    elif name == "FilterResponseNormalization":
        spec.reference = family.frn_reference(**kw)
    elif name == "TLU":
        spec.reference = family.tlu_reference(**kw)
        spec.randomize = randomize_tlu
        spec.half_maths = True
    elif name == "EvoNormB0":
        spec.reference = family.evonorm_b0_reference(**kw)
    elif name == "EvoNormS0":
        spec.reference = family.evonorm_s0_reference(**kw)
    elif name == "SwitchableNormalization":
        spec.reference = family.switchable_reference(**kw)
    elif name == "LocalResponseNormalization":
        spec.reference = family.lrn_reference(**kw)
    elif name == "PixelNormalization":
        spec.reference = family.pixel_reference(**kw)
    elif name == "ScaleNormalization":
        spec.reference = family.scale_reference(**kw)
    elif name == "DynamicTanh":
        spec.reference = family.dyt_reference(**kw)
        spec.half_maths = True  # "element-wise maths run in the input's dtype"
    elif name == "AdaNorm":
        spec.reference = seed.adanorm_reference(**kw)
        spec.grad, spec.grad_reference = "custom", adanorm_grad_limit(**kw)
    elif name == "DetachNormalization":
        spec.reference = seed.detach_reference(**kw)
        spec.grad, spec.grad_reference = "custom", seed.detach_grad_reference(**kw)
    elif name == "OnlineNormalization":
        spec.reference = seed.online_reference(**kw)
        if training:
            spec.grad, spec.grad_reference = "custom", seed.online_grad_reference(**kw)
    elif name == "CosineDense":
        spec.reference = seed.cosine_dense_reference(**kw)
        spec.randomize = randomize_normal
        spec.half_maths, spec.accumulated = True, shape[-1] + 1
    elif name in ("CosineConv1D", "CosineConv2D"):
        spec.reference = seed.cosine_conv_reference(1 if name == "CosineConv1D" else 2, **kw)
        spec.randomize = randomize_normal
        c = shape[1] if kw.get("data_format") == "channels_first" else shape[-1]
        spec.half_maths, spec.accumulated = True, math.prod(kw["kernel_size"]) * c + 1
    elif name.startswith("WeightStandardizedConv"):
        conv = {k: v for k, v in kw.items() if k != "epsilon"}
        lin = family.Linear(f"conv{rank - 2}d", **conv)
        spec.reference = family.ws_reference(lin, kw.get("epsilon", 1e-5))
        spec.half_maths, spec.accumulated = True, math.prod(kw["kernel_size"]) * shape[-1]
    elif name in ("WeightNormalization", "SpectralNormalization"):
        kind, lin_kw = wrapped
        lin = family.Linear(kind, **lin_kw)
        spec.half_maths = True
        spec.accumulated = math.prod(lin_kw.get("kernel_size", (1,))) * shape[-1]
        if name == "WeightNormalization":
            spec.reference = family.wn_reference(lin, kw.get("data_init", True))
            spec.randomize = randomize_weightnorm(initialized)
            if kw.get("data_init", True) and training and initialized < 0.5:
                # the data-dependent initialization assigns g (and the offset) from the batch
                # (Salimans & Kingma, Sec. 3): the call's gradient is that of the initialized
                # layer (as in TF-Addons), not the derivative of x -> t / sigma(t)
                spec.grad = None
        else:
            spec.reference = family.sn_reference(lin, kw.get("power_iterations", 1))
            spec.randomize = randomize_spectral
            if training:  # u and v are constants of the backward pass (Miyato et al.)
                spec.grad = None
    else:
        raise KeyError(name)
    return spec


def adanorm_grad_limit(**kwargs):
    """``seed.adanorm_grad_reference`` completed at a constant row (sigma = 0), where its
    last term is 0/0: the term is ``xc * sum(g xc) / (s**2 (n-1) sigma)`` with
    ``|xc| <= sqrt(n-1) sigma``, so it tends to 0 with sigma; its limit, 0, is what the
    layer documents (``tfnorm.ops.adanorm``)."""
    full = seed.adanorm_grad_reference(**kwargs)
    axis, c, epsilon = kwargs.get("axis", -1), kwargs.get("c", 1.0), kwargs.get("epsilon", 1e-5)

    def grad(x, p, training, dy):
        with np.errstate(divide="ignore", invalid="ignore"):
            dx = full(x, p, training, dy)
        f, info = seed._flat_axes(x, axis)
        d, _ = seed._flat_axes(dy, axis)
        xc = f - f.mean(1, keepdims=True)
        constant = np.all(xc == 0, axis=1, keepdims=True)
        if constant.any():
            g = c * d  # y = 0 on a constant row: phi = c
            limit = seed._unflat((g - g.mean(1, keepdims=True)) / epsilon, info)
            dx = np.where(seed._unflat(np.broadcast_to(constant, f.shape), info), limit, dx)
        return dx

    return grad


# -- drawing ----------------------------------------------------------------

_SIZE = st.one_of(st.integers(1, 6), st.integers(1, 64))


def _cap(sizes, keep=()):
    """Halves the largest free axes until the tensor has at most MAX_ELEMENTS values."""
    sizes = list(sizes)
    while math.prod(sizes) > MAX_ELEMENTS:
        free = [i for i in range(len(sizes)) if i not in keep and sizes[i] > 1]
        if not free:
            break
        i = max(free, key=lambda j: sizes[j])
        sizes[i] = max(1, sizes[i] // 2)
    return tuple(sizes)


def _shape(draw, rank, keep=()):
    return _cap([draw(_SIZE) for _ in range(rank)], keep)


def _signed(draw, a, rank):
    return a - rank if draw(st.booleans()) else a


def _axes(draw, rank, multi=True):
    """An ``axis`` argument (int, negative int or list) and the axes it resolves to."""
    if multi:
        axes = draw(st.lists(st.integers(1, rank - 1), min_size=1, max_size=rank - 1, unique=True))
    else:
        axes = [draw(st.integers(1, rank - 1))]
    signed = [_signed(draw, a, rank) for a in axes]
    if len(signed) == 1 and (not multi or draw(st.booleans())):
        return signed[0], (axes[0],)
    return signed, tuple(sorted(axes))


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


_EPS = st.sampled_from([1e-3, 1e-5, 1e-6, 0.1])


def _flags(draw, *names):
    return {n: draw(st.booleans()) for n in names}


def _d_batch(draw):
    rank = draw(st.integers(2, 5))
    axis, axes = _axes(draw, rank)
    shape = _shape(draw, rank)
    kw = dict(
        axis=axis,
        epsilon=draw(_EPS),
        momentum=draw(st.sampled_from([0.9, 0.99])),
        **_flags(draw, "center", "scale"),
    )
    variant = draw(st.sampled_from(["plain", "synchronized", "ghost", "renorm"]))
    if variant == "synchronized":
        kw["synchronized"] = True
    elif variant == "ghost":
        kw["virtual_batch_size"] = draw(st.sampled_from(_divisors(shape[0])))
    elif variant == "renorm":
        kw.update(
            renorm=True,
            center=True,
            scale=True,
            renorm_clipping=draw(
                st.sampled_from([None, {"rmax": 1.5, "dmax": 0.5}, {"rmax": 2.0}])
            ),
        )
    return kw, shape, draw(st.booleans())


def _d_multi(extra):
    """Layers over one or more feature axes (LayerNorm-like)."""

    def draw_fn(draw):
        rank = draw(st.integers(2, 5))
        axis, axes = _axes(draw, rank)
        shape = _shape(draw, rank)
        return dict(axis=axis, **extra(draw)), shape, False

    return draw_fn


def _d_channel(min_rank, extra, groups=None, training=False):
    """Layers with one channel axis."""

    def draw_fn(draw):
        rank = draw(st.integers(min_rank, 5))
        axis, (c,) = _axes(draw, rank, multi=False)
        shape = _shape(draw, rank, keep=(c,))
        kw = dict(axis=axis, **extra(draw))
        if groups is not None:
            kw["groups"] = draw(st.sampled_from(groups(shape[c])))
        return kw, shape, draw(st.booleans()) if training else False

    return draw_fn


def _d_adanorm(draw):
    rank = draw(st.integers(2, 5))
    axis, axes = _axes(draw, rank)
    shape = list(_shape(draw, rank))
    if math.prod(shape[a] for a in axes) < 2:  # the unbiased std needs two values
        shape[axes[0]] = 2
    kw = dict(
        axis=axis,
        k=draw(st.sampled_from([0.0, 0.1, 0.3])),
        c=draw(st.sampled_from([1.0, 0.5, 2.0])),
        epsilon=draw(_EPS),
    )
    return kw, tuple(shape), False


def _d_online(draw):
    rank = draw(st.integers(2, 5))
    axis, (c,) = _axes(draw, rank, multi=False)
    shape = _shape(draw, rank, keep=(c,))
    kw = dict(
        axis=axis,
        alpha_fwd=draw(st.sampled_from([0.9, 0.99, 0.999])),
        alpha_bkw=draw(st.sampled_from([0.8, 0.99])),
        ecm=draw(st.sampled_from(["ac", "ls", None])),
        epsilon=draw(_EPS),
        clamp_value=draw(st.sampled_from([5.0, 2.0])),
        **_flags(draw, "center", "scale"),
    )
    return kw, shape, draw(st.booleans())


def _d_cosine_dense(draw):
    rank = draw(st.integers(2, 5))
    shape = _shape(draw, rank, keep=(rank - 1,))
    kw = dict(
        units=draw(st.integers(1, 6)),
        centered=draw(st.booleans()),
        use_bias=draw(st.booleans()),
        epsilon=draw(st.sampled_from([1e-6, 1e-3])),
        activation=draw(st.sampled_from([None, "tanh"])),
    )
    return kw, shape, False


def _conv_geometry(draw, n_spatial, causal=False):
    """Keras convolution arguments and spatial sizes that fit them."""
    padding = draw(st.sampled_from(["valid", "same"] + (["causal"] if causal else [])))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(n_spatial))
    how = draw(st.sampled_from(["plain", "strided", "dilated"]))
    strides = (
        tuple(draw(st.integers(1, 2)) for _ in range(n_spatial))
        if how == "strided"
        else (1,) * n_spatial
    )
    dilation = (
        tuple(draw(st.integers(1, 2)) for _ in range(n_spatial))
        if how == "dilated"
        else (1,) * n_spatial
    )
    biggest = {1: 16, 2: 8, 3: 5}[n_spatial]
    spatial = tuple(
        draw(st.integers((k - 1) * d + 1, (k - 1) * d + biggest)) for k, d in zip(kernel, dilation)
    )
    kw = dict(kernel_size=kernel, strides=strides, padding=padding, dilation_rate=dilation)
    return kw, spatial


def _d_cosine_conv(n_spatial):
    def draw_fn(draw):
        geo, spatial = _conv_geometry(draw, n_spatial, causal=n_spatial == 1)
        n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
        fmt = draw(st.sampled_from(["channels_last", "channels_first"]))
        shape = (n, c) + spatial if fmt == "channels_first" else (n,) + spatial + (c,)
        kw = dict(
            filters=draw(st.integers(1, 4)),
            **geo,
            centered=draw(st.booleans()),
            use_bias=draw(st.booleans()),
            epsilon=draw(st.sampled_from([1e-6, 1e-3])),
            activation=draw(st.sampled_from([None, "tanh"])),
            data_format=fmt,
        )
        return kw, shape, False

    return draw_fn


def _d_ws(n_spatial):
    def draw_fn(draw):
        geo, spatial = _conv_geometry(draw, n_spatial, causal=n_spatial == 1)
        shape = (draw(st.integers(1, 3)),) + spatial + (draw(st.integers(1, 3)),)
        kw = dict(
            filters=draw(st.integers(1, 4)),
            **geo,
            use_bias=draw(st.booleans()),
            epsilon=draw(st.sampled_from([1e-5, 1e-3])),
        )
        return kw, shape, False

    return draw_fn


def _d_wrapped(draw):
    kind = draw(st.sampled_from(["dense", "conv1d", "conv2d"]))
    if kind == "dense":
        rank = draw(st.integers(2, 4))
        shape = _shape(draw, rank, keep=(rank - 1,))
        shape = shape[:-1] + (min(shape[-1], 16),)
        lin = dict(units=draw(st.integers(1, 5)), use_bias=draw(st.booleans()))
    else:
        geo, spatial = _conv_geometry(draw, 1 if kind == "conv1d" else 2)
        shape = (draw(st.integers(1, 3)),) + spatial + (draw(st.integers(1, 3)),)
        lin = dict(filters=draw(st.integers(1, 4)), use_bias=draw(st.booleans()), **geo)
    return (kind, lin), shape


def _eps_only(default):
    return lambda draw: dict(epsilon=draw(st.sampled_from([default, 1e-3, 0.1])))


_AFFINE = lambda draw: dict(epsilon=draw(_EPS), **_flags(draw, "center", "scale"))  # noqa: E731

DRAWERS = {
    "BatchNormalization": _d_batch,
    "LayerNormalization": _d_multi(_AFFINE),
    "RMSNormalization": _d_multi(lambda d: dict(epsilon=d(_EPS), scale=d(st.booleans()))),
    "GroupNormalization": _d_channel(2, _AFFINE, groups=lambda c: _divisors(c) + [-1]),
    "InstanceNormalization": _d_channel(3, _AFFINE),
    "FilterResponseNormalization": _d_channel(
        3,
        lambda d: dict(
            epsilon=d(st.sampled_from([1e-6, 1e-4, 1e-2])),
            learned_epsilon=d(st.booleans()),
            **_flags(d, "center", "scale"),
        ),
    ),
    "TLU": _d_multi(lambda d: dict(affine=d(st.booleans()))),
    "EvoNormB0": _d_channel(
        3,
        lambda d: dict(
            epsilon=d(st.sampled_from([1e-5, 1e-3])),
            momentum=d(st.sampled_from([0.9, 0.99])),
            **_flags(d, "center", "scale"),
        ),
        training=True,
    ),
    "EvoNormS0": _d_channel(
        2,
        lambda d: dict(
            epsilon=d(st.sampled_from([1e-5, 1e-3, 0.1])), **_flags(d, "center", "scale")
        ),
        groups=_divisors,
    ),
    "SwitchableNormalization": _d_channel(
        3,
        lambda d: dict(
            epsilon=d(st.sampled_from([1e-5, 1e-3])),
            momentum=d(st.sampled_from([0.9, 0.99])),
            **_flags(d, "center", "scale"),
        ),
        training=True,
    ),
    "LocalResponseNormalization": _d_channel(
        2,
        lambda d: dict(
            depth_radius=d(st.integers(0, 5)),
            bias=d(st.sampled_from([1.0, 2.0, 0.5])),
            alpha=d(st.sampled_from([1.0, 0.3, 1e-4])),
            beta=d(st.sampled_from([0.5, 0.75, 1.0])),
        ),
    ),
    "PixelNormalization": _d_multi(_eps_only(1e-8)),
    "ScaleNormalization": _d_multi(_eps_only(1e-5)),
    "DynamicTanh": _d_multi(lambda d: dict(alpha_init=d(st.sampled_from([0.5, 0.8, 2.0])))),
    "AdaNorm": _d_adanorm,
    "DetachNormalization": _d_multi(_eps_only(1e-5)),
    "OnlineNormalization": _d_online,
    "CosineDense": _d_cosine_dense,
    "CosineConv1D": _d_cosine_conv(1),
    "CosineConv2D": _d_cosine_conv(2),
    "WeightStandardizedConv1D": _d_ws(1),
    "WeightStandardizedConv2D": _d_ws(2),
    "WeightStandardizedConv3D": _d_ws(3),
    "WeightNormalization": None,
    "SpectralNormalization": None,
}
ALL = sorted(DRAWERS)


@st.composite
def layer_specs(draw, names=tuple(ALL)):
    name = draw(st.sampled_from(sorted(names)))
    if name == "WeightNormalization":
        wrapped, shape = _d_wrapped(draw)
        data_init = draw(st.booleans())
        initialized = draw(st.sampled_from([0.0, 1.0])) if data_init else 0.0
        return make_spec(
            name, {"data_init": data_init}, shape, draw(st.booleans()), wrapped, initialized
        )
    if name == "SpectralNormalization":
        wrapped, shape = _d_wrapped(draw)
        return make_spec(
            name, {"power_iterations": draw(st.integers(1, 3))}, shape, draw(st.booleans()), wrapped
        )
    kw, shape, training = DRAWERS[name](draw)
    return make_spec(name, kw, shape, training)


def test_every_public_layer_is_drawn():
    public = {n for n in tfnorm.layers.__all__ if n != "NormalizationLayer"}
    assert public == set(ALL), f"layers without a fuzz drawer: {sorted(public - set(ALL))}"


# -- inputs -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Input:
    """How an input is made (its ``repr`` reproduces it): ``offset + scale * N(0, 1)``,
    or a degenerate pattern."""

    kind: str
    scale: float
    offset: float
    seed: int
    spread: float = 1e-5  # "tiny_slice": the spread of sample 0

    def __repr__(self):
        spread = f", spread={self.spread!r}" if self.kind == "tiny_slice" else ""
        return (
            f"Input(kind={self.kind!r}, scale={self.scale!r}, offset={self.offset!r}, "
            f"seed={self.seed!r}{spread})"
        )

    def _repr_pretty_(self, printer, cycle):
        printer.text(repr(self))

    def make(self, shape) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        x = self.offset + self.scale * rng.normal(size=shape)
        if self.kind == "zeros":
            return np.zeros(shape)
        if self.kind == "constant":
            return np.full(shape, self.offset or self.scale)
        if self.kind in ("zero_slice", "constant_slice"):
            value = 0.0 if self.kind == "zero_slice" else self.offset + self.scale
            x[0] = value  # every per-sample statistic of sample 0
            x[(slice(None),) * (len(shape) - 1) + (0,)] = value  # the first channel, last axis
            if len(shape) > 2:
                x[:, 0] = value  # the first channel, channels first
        if self.kind == "tiny_slice":  # sample 0: a tiny spread around the offset
            x[0] = self.offset + self.spread * rng.normal(size=shape[1:])
        return x


KINDS = [
    "normal",
    "normal",
    "normal",
    "zeros",
    "constant",
    "zero_slice",
    "constant_slice",
    "tiny_slice",
]


@st.composite
def inputs(draw, dtype, kinds=tuple(KINDS), scale=(-6.0, 4.0), offset=(-6.0, 6.0)):
    kind = draw(st.sampled_from(kinds))
    s = 10.0 ** draw(st.floats(*scale))
    o = draw(st.sampled_from([0.0, 1.0, -1.0])) * 10.0 ** draw(st.floats(*offset))
    if dtype == "float16":  # keep |x| (about |o| + 4.5 s) within float16's 65504
        s, o = min(s, 4e3), math.copysign(min(abs(o), 2e4), o)
    return Input(kind, float(f"{s:.3g}"), float(f"{o:.3g}"), draw(st.integers(0, 2**16)))


# ---------------------------------------------------------------------------
# running a layer


def _state(layer):
    return [v.numpy() for v in layer.weights]


def _restore(layer, state):
    for v, s in zip(layer.weights, state):
        v.assign(s)


def run(layer, x, training, w, mode):
    """``(y, dx)`` of the loss ``sum(y * w)`` in ``mode``, layer state restored after."""
    state = _state(layer)

    def f(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(tf.cast(y, w.dtype) * w)
        g = tape.gradient(loss, x)
        return y, tf.zeros_like(x) if g is None else g

    fn = {
        "eager": f,
        "function": tf.function(f, autograph=False),
        "jit": tf.function(f, jit_compile=True, autograph=False),
    }[mode]
    try:
        y, g = fn(x)
        return (tf.cast(y, tf.float64).numpy(), tf.cast(g, tf.float64).numpy())
    finally:
        _restore(layer, state)


def call(layer, x, training, mode):
    """The output in ``mode``; state updates (moving statistics) are kept."""
    f = lambda x: layer(x, training=training)  # noqa: E731
    fn = {
        "eager": f,
        "function": tf.function(f, autograph=False),
        "jit": tf.function(f, jit_compile=True, autograph=False),
    }[mode]
    return tf.cast(fn(x), tf.float64).numpy()


def forward(layer, x, training, mode):
    """The output in ``mode``, layer state restored after."""
    state = _state(layer)
    try:
        return call(layer, x, training, mode)
    finally:
        _restore(layer, state)


def upstream(shape, dtype, seed_):
    wdt = tf.float64 if dtype == "float64" else tf.float32
    return tf.constant(np.random.default_rng(seed_ + 1).normal(size=shape), wdt)


# ---------------------------------------------------------------------------
# tolerances


def sensitivity(ref, x, p, training, rel, absolute=0.0, seed_=0):
    """How far the reference moves for perturbations ``|dx_i| <= rel |x_i| + absolute``
    (the backward error of one rounding per value), the max over two random draws."""
    rng = np.random.default_rng(seed_ + 7)
    with np.errstate(all="ignore"):
        y0 = ref(x, p, training)
        s = 0.0
        for _ in range(2):
            r = rng.uniform(-1.0, 1.0, size=x.shape)
            y1 = ref(x + r * (rel * np.abs(x) + absolute), p, training)
            d = np.abs(y1 - y0)
            s = max(s, float(np.max(d[np.isfinite(d)], initial=0.0)))
    return s


def reference_rounding(ref, x, p, training, y):
    """How far the float64 reference is from the same formulas in extended precision
    (``np.longdouble``; 0 where that is float64 or a reference converts back): a float64
    layer may err by a multiple of this where its output is a cancellation (the weighted
    mean of a single value in SwitchableNormalization: the weights sum to 1 only to
    rounding, and the output is that rounding)."""
    try:
        with np.errstate(all="ignore"):
            y_ext = ref(
                x.astype(np.longdouble),
                {k: np.asarray(v, np.longdouble) for k, v in p.items()},
                training,
            )
        d = np.abs(np.asarray(y_ext, np.longdouble) - y)
        return float(np.max(d[np.isfinite(d)], initial=0.0))
    except Exception:  # a reference that takes float64 only
        return 0.0


def _min_variance(spec, x, p, training):
    """The smallest variance a centring layer divides by (its statistics, from x)."""
    kw, rank = spec.kwargs, x.ndim
    if spec.name in ("LayerNormalization", "DetachNormalization"):
        return float(x.var(axis=tuple(core._axes(kw.get("axis", -1), rank))).min())
    if spec.name == "OnlineNormalization":  # var_t >= alpha_fwd * var_(t-1) along the stream
        return float(p["streaming_variance"].min()) * kw.get("alpha_fwd", 0.999) ** x.shape[0]
    if spec.name == "BatchNormalization":
        if not training:
            return float(p["moving_variance"].min())
        ch = core._axes(kw.get("axis", -1), rank)
        red = tuple(a for a in range(rank) if a not in ch)
        vbs = kw.get("virtual_batch_size")
        chunks = np.split(x, x.shape[0] // vbs) if vbs else [x]
        return float(min(ch_.var(axis=red).min() for ch_ in chunks))
    if spec.name not in ("GroupNormalization", "InstanceNormalization", "SwitchableNormalization"):
        return None  # no centring apply step
    c = kw.get("axis", -1) % rank
    spatial = tuple(a for a in range(1, rank) if a != c)
    if spec.name == "GroupNormalization":
        xm = np.moveaxis(x, c, -1)
        g = xm.shape[-1] if kw.get("groups", 32) == -1 else kw.get("groups", 32)
        return float(xm.reshape(xm.shape[0], -1, g, xm.shape[-1] // g).var(axis=(1, 3)).min())
    if spec.name == "InstanceNormalization":
        return float(x.var(axis=spatial).min()) if spatial else 0.0
    if spec.name == "SwitchableNormalization":  # a mixture: at least its smallest part
        parts = [x.var(axis=spatial).min(), x.var(axis=tuple(range(1, rank))).min()]
        parts.append(x.var(axis=(0,) + spatial).min() if training else p["moving_variance"].min())
        return float(min(parts))


def slice_size(spec):
    """The number of values the layer's smallest statistic is taken over (None: none)."""
    kw, shape = spec.kwargs, spec.shape
    rank = len(shape)
    name = spec.name
    if name in (
        "LayerNormalization",
        "DetachNormalization",
        "RMSNormalization",
        "PixelNormalization",
        "ScaleNormalization",
        "AdaNorm",
    ):
        return math.prod(shape[a] for a in core._axes(kw.get("axis", -1), rank))
    if name == "CosineDense":
        return shape[-1] + kw.get("use_bias", False)
    if name in ("CosineConv1D", "CosineConv2D"):
        c = shape[1] if kw.get("data_format") == "channels_first" else shape[-1]
        return math.prod(kw["kernel_size"]) * c + kw.get("use_bias", False)
    if name == "BatchNormalization":
        if not spec.training:
            return None
        ch = core._axes(kw.get("axis", -1), rank)
        n = math.prod(shape[a] for a in range(rank) if a not in ch)
        return n // shape[0] * kw["virtual_batch_size"] if kw.get("virtual_batch_size") else n
    if name not in (
        "GroupNormalization",
        "InstanceNormalization",
        "FilterResponseNormalization",
        "EvoNormB0",
        "EvoNormS0",
        "SwitchableNormalization",
        "OnlineNormalization",
    ):
        return None
    c = kw.get("axis", -1) % rank
    spatial = math.prod(shape[a] for a in range(1, rank) if a != c)
    if name in ("GroupNormalization", "EvoNormS0"):
        groups = kw.get("groups", 32)
        return spatial * (1 if groups == -1 else shape[c] // groups)
    return spatial


def term_gain(spec, x, p, training, y_ref):
    """The size of the terms a gradient is a sum of, per unit of upstream gradient:
    gamma / sqrt(var + eps) for the centring layers (1/sqrt(eps) on a slice of one value,
    whose gradient is 0 to the rounding of such terms), output scale / input scale else."""
    with np.errstate(all="ignore"):
        var = _min_variance(spec, x, p, training)
    if var is not None:
        gamma = float(np.max(np.abs(p["gamma"]))) if "gamma" in p else 1.0
        return gamma / math.sqrt(max(var, 0.0) + _epsilon(spec))
    if spec.name == "DynamicTanh":  # gamma * alpha * (1 - tanh**2): terms of gamma * alpha
        return float(np.max(np.abs(p["gamma"]))) * abs(float(p["alpha"]))
    top = float(np.max(np.abs(x), initial=0.0))
    return float(np.max(np.abs(y_ref), initial=0.0)) / top if top > 0 else 0.0


def _epsilon(spec):
    default = (
        1e-3
        if spec.name
        in (
            "BatchNormalization",
            "LayerNormalization",
            "GroupNormalization",
            "InstanceNormalization",
        )
        else 1e-5
    )
    return spec.kwargs.get("epsilon", default)


def apply_rounding(spec, dtype, x, p, training):
    """The rounding of the apply step of the centring layers: ``y = x * a + b`` with
    ``a = gamma / sqrt(var + eps)`` and ``b = beta - mean * a`` (``tfnorm.ops.normalize``,
    as Keras' layers do; centred first for half-precision input) rounds ``x * a`` once,
    ``u |x| |a|`` per value. Where the answer does not move with x (a slice of one or two
    values normalizes to beta or +-1) ``S`` misses it."""
    if dtype in HALF:  # half-precision input: centred first, in float32
        return 0.0
    with np.errstate(all="ignore"):
        var = _min_variance(spec, x, p, training)
    if var is None or x.size == 0:
        return 0.0
    gamma = float(np.max(np.abs(p["gamma"]))) if "gamma" in p else 1.0
    return (
        4 * U[dtype] * float(np.max(np.abs(x))) * gamma / math.sqrt(max(var, 0.0) + _epsilon(spec))
    )


def output_tolerance(spec, dtype, xr, p, training, y_ref, seed_=0, in_dtype=None):
    """``base * scale + K * S + floor`` (module docstring); ``in_dtype``: the input's dtype
    when it is not the compute dtype (a float32 input under mixed precision)."""
    scale = float(np.max(np.abs(y_ref), initial=0.0))
    elem = dtype if (dtype in HALF and spec.half_maths) else stats_dtype(dtype)
    absolute = TINY[dtype] if dtype in HALF and spec.half_maths else 0.0
    s = sensitivity(spec.reference, xr, p, training, 4 * U[elem], absolute, seed_)
    floor = 8 * TINY[dtype] * spec.accumulated * max(1.0, _param_scale(p))
    floor += apply_rounding(spec, in_dtype or dtype, xr, p, training)
    if dtype == "float64":
        floor += K * reference_rounding(spec.reference, xr, p, training, y_ref)
    return BASE[dtype] * scale + K * s + floor, scale, s


def _param_scale(p):
    return max([float(np.max(np.abs(v), initial=0.0)) for v in p.values()] or [1.0])


def check_close(what, got, want, atol, scale=None):
    """Every value within ``atol`` of the reference; a reference's finite value must be
    matched by a finite one."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, reference {want.shape}"
    lost = np.isfinite(want) & ~np.isfinite(got)
    if lost.any():
        i = tuple(int(j) for j in np.argwhere(lost)[0])
        raise AssertionError(
            f"{what}: {int(lost.sum())} of {got.size} values not finite where the reference "
            f"is, first at {i}: got {got[i]!r}, reference {want[i]!r}"
        )
    with np.errstate(invalid="ignore"):
        err = np.where(np.isfinite(want), np.abs(got - want), 0.0)
    if err.max(initial=0.0) > atol:
        i = np.unravel_index(np.argmax(err), err.shape)
        sc = "" if scale is None else f", output scale {scale:.3g}"
        raise AssertionError(
            f"{what}: max |got - reference| = {err[i]:.3g} > tolerance {atol:.3g}{sc}, at "
            f"{tuple(int(j) for j in i)}: got {got[i]!r}, reference {want[i]!r}"
        )


def check_same_pattern(what, got, want):
    """NaN in the same places, inf in the same places, finite in the same places."""
    for name, test in (("NaN", np.isnan), ("finite", np.isfinite)):
        a, b = test(got), test(want)
        if not np.array_equal(a, b):
            i = tuple(int(j) for j in np.argwhere(a != b)[0])
            raise AssertionError(
                f"{what}: {name} in different places ({int((a != b).sum())} of {a.size} "
                f"values), first at {i}: {got[i]!r} vs {want[i]!r}"
            )


def in_range(y_ref, dtype):
    """The answer fits the compute dtype with room for the layer's intermediates."""
    return (
        bool(np.all(np.isfinite(y_ref)))
        and float(np.max(np.abs(y_ref), initial=0.0)) < MAX_FINITE[dtype] / 8
    )


def prepare(spec, policy, inp, seed_=0):
    """The layer, its float64 params, the compute-dtype input, the rounded input, the
    reference output and the output tolerance."""
    dtype = compute_dtype(policy)
    layer = spec.built(policy, seed_)
    p = params_of(layer)
    x = inp.make(spec.shape)
    xr = rounded(x, dtype)
    with np.errstate(all="ignore"):
        y_ref = spec.reference(xr, p, spec.training)
    assume(in_range(y_ref, dtype))
    tol, scale, s = output_tolerance(spec, dtype, xr, p, spec.training, y_ref, seed_=seed_)
    note(
        f"compute dtype {dtype}; reference scale {scale:.3g}, sensitivity {s:.3g}, "
        f"tolerance {tol:.3g}"
    )
    return Prepared(layer, p, tf.cast(tf.constant(xr), dtype), xr, y_ref, tol, scale, s)


@dataclasses.dataclass
class Prepared:
    layer: keras.layers.Layer
    p: dict
    x: tf.Tensor  # the input, in the compute dtype
    xr: np.ndarray  # the same values, float64
    y_ref: np.ndarray
    tol: float
    scale: float
    s: float  # sensitivity


# ---------------------------------------------------------------------------
# gradients against the reference


def fd_directional(ref, x, p, training, w, v, h):
    """Central difference of ``sum(w * ref(x + t v))`` at ``t = 0``."""
    plus = np.sum(w * ref(x + h * v, p, training))
    minus = np.sum(w * ref(x - h * v, p, training))
    return (plus - minus) / (2 * h)


def check_gradient(spec, xr, p, w, g, rtol, dtype, seed_=0):
    """The layer's input gradient ``g`` against the reference: the whole gradient for a
    custom backward (its ``grad_reference``), three random directional derivatives of the
    reference forward otherwise, each central difference checked against a halved step
    (a kink within reach of the step, e.g. TLU's max or a clamp, leaves it unchecked)."""
    w = np.asarray(w, np.float64)
    if spec.grad == "custom":
        with np.errstate(all="ignore"):
            want = spec.grad_reference(xr, p, spec.training, w)
        assume(np.all(np.isfinite(want)))
        scale = float(np.max(np.abs(want), initial=0.0))
        # plus how far the reference gradient moves when the input is rounded (a gradient
        # that is a cancellation, e.g. AdaNorm of two values, is tiny next to its terms)
        sg = sensitivity(
            lambda x, p_, t: spec.grad_reference(x, p_, t, w),
            xr,
            p,
            spec.training,
            4 * U[dtype],
            seed_=seed_,
        )
        # and the rounding of the terms each value sums (term_gain per unit of upstream)
        terms = (
            K
            * U[dtype]
            * float(np.max(np.abs(w)))
            * math.sqrt(slice_size(spec) or 1)
            * term_gain(spec, xr, p, spec.training, spec.reference(xr, p, spec.training))
        )
        check_close(
            "input gradient vs grad_reference", g, want, rtol * scale + K * sg + terms, scale
        )
        return
    assert np.all(np.isfinite(g)), (
        f"input gradient: {int(np.sum(~np.isfinite(g)))} of {g.size} values not finite, e.g. "
        f"{g[~np.isfinite(g)][:3]}"
    )
    rng = np.random.default_rng(seed_ + 3)
    spread = float(np.std(xr))
    h = max(1e-6 * (spread if spread > 0 else 1e-3), 1e-9 * float(np.max(np.abs(xr))))
    y_ref = spec.reference(xr, p, spec.training)
    # the central difference's own rounding: each sum to float64 precision, divided by 2h
    fd_noise = 8 * U["float64"] * (float(np.sum(np.abs(w * y_ref))) / h)
    got, want, noise = [], [], []
    for _ in range(3):
        v = rng.choice([-1.0, 1.0], size=xr.shape)
        with np.errstate(all="ignore"):
            d1 = fd_directional(spec.reference, xr, p, spec.training, w, v, h)
            d2 = fd_directional(spec.reference, xr, p, spec.training, w, v, h / 2)
        # halving the step moves a smooth central difference by 3/4 of its (tiny) error
        if not (np.isfinite(d1) and np.isfinite(d2)) or abs(d1 - d2) > 0.1 * rtol * abs(d2):
            note(f"directional difference unstable ({d1!r} vs {d2!r}): skipped")
            continue
        got.append(float(np.sum(g * v)))
        want.append((4 * d2 - d1) / 3)  # Richardson
        # ... and the step rounded at x: one ulp of max |x| against h
        noise.append(fd_noise + 8 * U["float64"] * float(np.max(np.abs(xr))) / h * abs(d2))
    if not want:
        return
    rms = math.sqrt(sum(d * d for d in want) / len(want))
    # a gradient sums terms ~ |w| * term_gain: their rounding (K units) bounds its error
    # however small the sum (DynamicTanh's gamma alpha (1 - tanh**2) at |alpha x| ~ 10)
    terms = float(np.sqrt(np.sum(w * w))) * term_gain(spec, xr, p, spec.training, y_ref)
    floor = K * U[dtype] * terms
    if rms <= max(noise):
        # the output does not move with x (a statistic of one value; ScaleNorm of one value,
        # g sign(x)): the gradient is all cancellation
        floor = max(floor, rtol * terms)
    err = max(abs(a - b) - n for a, b, n in zip(got, want, noise))
    assert err <= rtol * rms + floor, (
        f"directional derivatives of the input gradient {got} vs reference {want}: "
        f"max error {err:.3g} (beyond the difference's own rounding, {max(noise):.3g}) > "
        f"{rtol:.3g} x rms {rms:.3g} + floor {floor:.3g}"
    )


def _twin(spec, layer, dtype):
    """The layer built in ``dtype`` holding ``layer``'s weights."""
    twin = spec.built(dtype)
    for v, u in zip(twin.weights, layer.weights):
        _assign(v, np.asarray(u.numpy(), np.float64))
    return twin


def gradient_rounding(spec, c, dtype, w, g):
    """The rounding of this gradient computation: the eager gradient ``g`` against the
    same layer's in float64 (same weights, same input values); for float64, float32's
    against float64's scaled by ``2**-29``. Where a gradient is a cancellation (a size-1
    normalized axis: LayerNorm's is 0 to rounding of terms ~ gamma / sqrt(eps)) its size
    says nothing of its rounding; this does. It sets a tolerance, never an expected value."""
    w64 = tf.cast(w, tf.float64)
    _, g64 = run(_twin(spec, c.layer, "float64"), tf.constant(c.xr), spec.training, w64, "eager")
    if dtype == "float64":
        _, g32 = run(
            _twin(spec, c.layer, "float32"),
            tf.constant(c.xr, tf.float32),
            spec.training,
            tf.cast(w, tf.float32),
            "eager",
        )
        g, scale = g32, U["float64"] / U["float32"]
    else:
        scale = 1.0
    d = np.abs(g - g64)
    return scale * float(np.max(d[np.isfinite(d)], initial=0.0))


# ===========================================================================
# the properties


@fuzz(80)
@given(
    spec=layer_specs(),
    policy=st.sampled_from(POLICIES),
    mode=st.sampled_from(MODES),
    data=st.data(),
)
def test_forward_matches_reference(spec, policy, mode, data):
    """Every layer, policy, input and mode: the output is the reference's, to the
    precision of the compute dtype (module docstring)."""
    inp = data.draw(inputs(compute_dtype(policy)), label="input")
    c = prepare(spec, policy, inp)
    y = forward(c.layer, c.x, spec.training, mode)
    check_close(f"output ({mode})", y, c.y_ref, c.tol, c.scale)


@fuzz(70)
@given(
    spec=layer_specs(),
    policy=st.sampled_from(["float32", "float64"]),
    mode=st.sampled_from(MODES),
    data=st.data(),
)
def test_input_gradient_matches_reference(spec, policy, mode, data):
    """float32 and float64: the input gradient is the derivative of the reference (or the
    paper's prescribed backward, for AdaNorm, DetachNorm, Online Normalization and renorm),
    wherever the problem is well conditioned at the compute precision (beyond, rounding of
    the input alone moves the answer; the other properties cover those inputs)."""
    assume(spec.grad is not None)
    dtype = compute_dtype(policy)
    inp = data.draw(inputs(dtype), label="input")
    c = prepare(spec, policy, inp)
    # float32: a gradient is a few normalizations deep; 1e-3 leaves room for its rounding
    rtol = 1e-3 if dtype == "float32" else 1e-7
    # well conditioned at the compute precision: rounding the input moves the output by
    # far less than rtol (K * S < rtol / 4 of its scale; a gradient is one derivative more
    # sensitive), and in float32 no statistic over one to three values (they normalize to
    # beta or +-1 up to eps / spread**2: the gradient is a cancellation of terms ~1/sigma,
    # which float32 rounds at any relative size)
    assume(K * c.s <= rtol / 4 * c.scale)
    assume(dtype != "float32" or slice_size(spec) not in (1, 2, 3))
    w = upstream(c.y_ref.shape, dtype, inp.seed)
    _, g = run(c.layer, c.x, spec.training, w, mode)  # outputs: test_forward_matches_reference
    check_gradient(spec, c.xr, c.p, w.numpy(), g, rtol, dtype, inp.seed)


DEGENERATE = ("zeros", "constant", "zero_slice", "constant_slice", "tiny_slice")


@fuzz(40)
@given(spec=layer_specs(), policy=st.sampled_from(POLICIES), data=st.data())
@example(
    spec=make_spec("ScaleNormalization", {"axis": -2}, (2, 5, 3)), policy="float32", data=None
).via("the issue: a NaN gradient under jit_compile on an all-zero slice")
def test_modes_agree_on_outputs_and_gradients(spec, policy, data):
    """Eager, tf.function and jit_compile give the same outputs and input gradients on
    degenerate inputs (all zeros, constants, zero and constant slices, tiny spreads; size-1
    axes come with the shapes): NaN and inf in the same places, the rest within the
    compute dtype's tolerance of each other (and the outputs of the reference)."""
    dtype = compute_dtype(policy)
    if data is None:  # the explicit example: sample 0 and the first channel all zero
        inp = Input("zero_slice", 1.0, 0.0, 0)
    else:
        inp = data.draw(inputs(dtype, kinds=DEGENERATE + ("normal",)), label="input")
    c = prepare(spec, policy, inp)
    w = upstream(c.y_ref.shape, dtype, inp.seed)
    y0, g0 = run(c.layer, c.x, spec.training, w, "eager")
    check_close("output (eager)", y0, c.y_ref, c.tol, c.scale)
    finite = np.isfinite(g0)
    gscale = float(np.max(np.abs(g0[finite]), initial=0.0))
    # How far one rounding of the input moves the (eager) gradient: a gradient is a second
    # derivative away from the output's conditioning (at a constant slice, d var / dx = 0
    # multiplies (var + eps)**-1.5), so modes may differ by a multiple of that
    sg = 0.0
    rng = np.random.default_rng(inp.seed + 11)
    for _ in range(2):
        xp = c.xr * (1 + 2 * U[dtype] * rng.choice([-1.0, 1.0], size=c.xr.shape))
        _, gp = run(c.layer, tf.cast(tf.constant(xp), dtype), spec.training, w, "eager")
        both = finite & np.isfinite(gp)
        sg = max(sg, float(np.max(np.abs(gp - g0)[both], initial=0.0)))
    # and the rounding of the terms it sums (a gradient that is 0 by cancellation, on a
    # slice of one value, is 0 in one mode and u * terms in another)
    terms = float(np.max(np.abs(w.numpy()))) * term_gain(spec, c.xr, c.p, spec.training, c.y_ref)
    gtol = BASE[dtype] * gscale + K * max(
        sg, gradient_rounding(spec, c, dtype, w, g0), U[dtype] * terms
    )
    for mode in ("function", "jit"):
        y, g = run(c.layer, c.x, spec.training, w, mode)
        check_same_pattern(f"output ({mode} vs eager)", y, y0)
        check_close(f"output ({mode})", y, c.y_ref, c.tol, c.scale)
        check_same_pattern(f"input gradient ({mode} vs eager)", g, g0)
        check_close(
            f"input gradient ({mode} vs eager)",
            np.where(finite, g, 0.0),
            np.where(finite, g0, 0.0),
            gtol,
        )


# -- (1) another rank -------------------------------------------------------


@fuzz(60)
@given(
    spec=layer_specs(),
    new_rank=st.integers(2, 5),
    mode=st.sampled_from(["eager", "function"]),
    sizes=st.lists(st.integers(1, 5), min_size=5, max_size=5),
)
def test_other_rank_raises_or_is_right(spec, new_rank, mode, sizes):
    """A layer built for one rank and called on another raises a ValueError that names the
    built and the received shapes (its axes were resolved for the built rank); the layers
    documented to work at any rank once built, as Dense does (CosineDense, the wrappers of a
    Dense), give the reference's answer at the new rank. Never a silently different number."""
    assume(new_rank != len(spec.shape))
    shape = list(sizes[:new_rank])
    shape[0], shape[-1] = spec.shape[0], spec.shape[-1]  # as built: the batch, the last axis
    shape = tuple(shape)
    any_rank = spec.name == "CosineDense" or (spec.wrapped or ("",))[0] == "dense"
    layer = spec.built("float32")
    p = params_of(layer)
    x = rounded(Input("normal", 1.5, 0.3, 0).make(shape), "float32")
    try:
        y = forward(layer, tf.constant(x, tf.float32), spec.training, mode)
    except ValueError as err:
        msg = str(err)
        assert not any_rank, f"built for {spec.shape}, refused an input of shape {shape}: {msg}"
        assert str(spec.shape) in msg and str(shape) in msg, (
            f"the ValueError for an input of shape {shape} (built for {spec.shape}) does not "
            f"name both shapes: {msg}"
        )
        return
    assert any_rank, (
        f"built for inputs of shape {spec.shape}, accepted an input of shape {shape} "
        f"({mode}) and returned shape {y.shape}: its axes were resolved for rank "
        f"{len(spec.shape)}"
    )
    want = spec.reference(x, p, spec.training)
    tol, scale, _ = output_tolerance(spec, "float32", x, p, spec.training, want)
    check_close(
        f"output at rank {new_rank} (built for rank {len(spec.shape)})", y, want, tol, scale
    )


# -- (2) half precision -----------------------------------------------------


@fuzz(40)
@given(
    spec=layer_specs(),
    exponent=st.floats(-7.0, -5.0),
    seed_=st.integers(0, 2**16),
    mode=st.sampled_from(MODES),
)
@example(
    spec=make_spec("ScaleNormalization", {"axis": 1}, (3, 5, 4)),
    exponent=-6.0,
    seed_=0,
    mode="eager",
).via("the issue: inf under mixed_float16")
def test_mixed_float16_tiny_inputs_stay_finite(spec, exponent, seed_, mode):
    """mixed_float16, inputs of scale 1e-7..1e-5 (float16 subnormals): finite outputs, the
    reference's (their squares underflow float16: statistics must be float32)."""
    inp = Input("normal", float(f"{10.0**exponent:.3g}"), 0.0, seed_)
    c = prepare(spec, "mixed_float16", inp)
    y = forward(c.layer, c.x, spec.training, mode)
    assert np.all(np.isfinite(y)), (
        f"{int(np.sum(~np.isfinite(y)))} of {y.size} outputs not finite ({mode}), e.g. "
        f"{y[~np.isfinite(y)][:3]}; reference max {c.scale:.3g}"
    )
    check_close(f"output ({mode})", y, c.y_ref, c.tol, c.scale)


def _scaled_upstream(spec, xr, p, shape, dtype, seed_, target):
    """An upstream gradient scaled so that the reference input gradient peaks at
    ``target``, inside float16's range (a gradient ~ 1/(spread + eps) exceeds 65504 for a
    unit upstream when the spread is 1e-5: then no float16 answer exists)."""
    w = np.random.default_rng(seed_ + 1).normal(size=shape)
    with np.errstate(all="ignore"):
        g = spec.grad_reference(xr, p, spec.training, w)
    peak = float(np.max(np.abs(g), initial=0.0))
    assume(np.isfinite(peak) and peak > 0)
    # the layer receives the upstream gradient in its compute dtype (float16 subnormals for a
    # small one): the reference takes the same rounded values
    return rounded(w * (target / peak), dtype)


@fuzz(40)
@given(
    spec=layer_specs(names=("AdaNorm", "DetachNormalization")),
    policy=st.sampled_from(["mixed_float16", "mixed_bfloat16"]),
    feed=st.sampled_from(["float32", "compute"]),
    offset=st.sampled_from([0.0, 1.0, -3.0, 100.0]),
    spread=st.floats(-6.0, -4.0),
    peak=st.sampled_from([1.0, 1e2, 4e3, 3e4]),
    seed_=st.integers(0, 2**16),
    mode=st.sampled_from(MODES),
)
@example(
    spec=make_spec("AdaNorm", {"axis": -2}, (3, 6, 4)),
    policy="mixed_float16",
    feed="float32",
    offset=1.0,
    spread=-5.0,
    peak=1.0,
    seed_=0,
    mode="eager",
).via("the issue: NaN gradients")
def test_half_precision_tiny_spread_gradients_are_finite(
    spec, policy, feed, offset, spread, peak, seed_, mode
):
    """Per-sample layers with the paper's backward under mixed precision, a sample whose
    spread is tiny (1e-6..1e-4): finite input gradients, those of ``grad_reference``.

    * ``feed="float32"`` (a model's float32 input): the statistics read the float32 input,
      as for the outputs of LayerNormalization (below); the upstream gradient is a unit
      normal one (the gradient reaches ~1/(spread + epsilon), beyond float16, and is float32).
    * ``feed="compute"`` (a half-precision input, e.g. another layer's output; often a
      constant slice once rounded): the reference at the rounded input, the upstream scaled
      for it to peak at 1..3e4, within float16's 65504.
    """
    dtype = compute_dtype(policy)
    inp = Input("tiny_slice", 1.0, offset, seed_, spread=float(f"{10.0**spread:.3g}"))
    layer = spec.built(policy, seed_)
    p = params_of(layer)
    in_dtype = "float32" if feed == "float32" else dtype
    xr = rounded(inp.make(spec.shape), in_dtype)
    if feed == "float32":  # the gradient reaching the output is rounded to the compute dtype
        w = rounded(np.random.default_rng(seed_ + 1).normal(size=spec.shape), dtype)
    else:
        w = _scaled_upstream(spec, xr, p, spec.shape, dtype, seed_, peak)
    with np.errstate(all="ignore"):
        y_ref = spec.reference(xr, p, spec.training)
        want = spec.grad_reference(xr, p, spec.training, w)
    assume(np.all(np.isfinite(want)))
    s_rel = sensitivity(spec.reference, xr, p, spec.training, 4 * U["float32"]) / max(
        float(np.max(np.abs(y_ref))), 1e-300
    )
    _, g = run(layer, tf.constant(xr, in_dtype), spec.training, tf.constant(w, tf.float32), mode)
    assert np.all(np.isfinite(g)), (
        f"{int(np.sum(~np.isfinite(g)))} of {g.size} input gradients not finite ({mode}, "
        f"{in_dtype} input), e.g. {g[~np.isfinite(g)][:3]}; reference gradient max "
        f"{np.abs(want).max():.3g}, min where not finite "
        f"{np.abs(want[~np.isfinite(g)]).min():.3g}"
    )
    # float32 statistics: the output and the upstream gradient are rounded to `dtype`
    # (2 x 8 units), plus the conditioning of the float32 statistics (K * S, relative)
    gscale = float(np.max(np.abs(want)))
    check_close(
        f"input gradient ({mode}, {in_dtype} input)",
        g,
        want,
        (2 * BASE[dtype] + K * s_rel) * gscale,
        gscale,
    )


@fuzz(30)
@given(
    spec=layer_specs(),
    policy=st.sampled_from(["mixed_float16", "mixed_bfloat16", "float16", "bfloat16"]),
    mode=st.sampled_from(MODES),
    inp=st.none(),
    data=st.data(),
)
@example(
    spec=make_spec("FilterResponseNormalization", {"axis": -3}, (1, 1, 5, 12, 7)),
    policy="mixed_float16",
    mode="eager",
    inp=Input("normal", 4000.0, -7140.0, 0),
    data=None,
).via("found by this suite")
@example(
    spec=make_spec(
        "CosineConv2D",
        {
            "filters": 2,
            "kernel_size": (1, 2),
            "strides": (1, 1),
            "padding": "valid",
            "dilation_rate": (1, 1),
            "centered": False,
            "use_bias": False,
            "epsilon": 1e-3,
            "activation": None,
            "data_format": "channels_last",
        },
        (3, 5, 8, 2),
    ),
    policy="mixed_float16",
    mode="jit",
    inp=Input("constant", 1.0, -20000.0, 432),
    data=None,
).via("found by this suite")
def test_half_precision_input_gradients_are_finite(spec, policy, mode, inp, data):
    """Half precision, any layer, inputs up to 1e4: the input gradient is finite wherever the
    exact one is finite and fits the compute dtype (the float64 layer's gradient, used only
    to tell, is below 65504 / 16; no loss scaling needed)."""
    dtype = compute_dtype(policy)
    if inp is None:
        inp = data.draw(
            inputs(dtype, kinds=("normal", "normal", "constant", "zero_slice")), label="input"
        )
    c = prepare(spec, policy, inp)
    w = upstream(c.y_ref.shape, dtype, inp.seed)
    _, g64 = run(
        _twin(spec, c.layer, "float64"),
        tf.constant(c.xr),
        spec.training,
        tf.cast(w, tf.float64),
        "eager",
    )
    assume(np.all(np.isfinite(g64)) and float(np.max(np.abs(g64))) < MAX_FINITE["float16"] / 16)
    _, g = run(c.layer, c.x, spec.training, w, mode)
    bad = ~np.isfinite(g)
    assert not bad.any(), (
        f"{int(bad.sum())} of {g.size} input gradients not finite ({mode}), e.g. {g[bad][:3]} "
        f"where the float64 layer's are {g64[bad][:3]} (its largest {np.abs(g64).max():.3g})"
    )


@fuzz(25)
@given(
    spec=layer_specs(names=("LayerNormalization", "GroupNormalization")),
    offset=st.floats(4.9, 6.0),
    sign=st.sampled_from([1.0, -1.0]),
    spread=st.floats(0.0, 4.0),
    seed_=st.integers(0, 2**16),
    mode=st.sampled_from(MODES),
)
def test_mixed_float16_float32_input_beyond_float16_range(spec, offset, sign, spread, seed_, mode):
    """A float32 input above float16's 65504 into LayerNormalization/GroupNormalization under
    mixed_float16: finite outputs, the reference's for the float32 input (as Keras' layers
    do: their statistics read the float32 input)."""
    inp = Input("normal", float(f"{10.0**spread:.3g}"), sign * float(f"{10.0**offset:.3g}"), seed_)
    layer = spec.built("mixed_float16")
    p = params_of(layer)
    xr = rounded(inp.make(spec.shape), "float32")
    assume(np.max(np.abs(xr)) > 65504)
    y_ref = spec.reference(xr, p, spec.training)
    tol, scale, s = output_tolerance(
        spec, "float16", xr, p, spec.training, y_ref, in_dtype="float32"
    )
    y = forward(layer, tf.constant(xr, tf.float32), spec.training, mode)
    assert np.all(np.isfinite(y)), (
        f"{int(np.sum(~np.isfinite(y)))} of {y.size} outputs not finite ({mode}) for a float32 "
        f"input with max |x| = {np.max(np.abs(xr)):.3g}, e.g. {y[~np.isfinite(y)][:3]}"
    )
    check_close(f"output ({mode})", y, y_ref, tol, scale)


def statistics_weights(layer, name):
    """The variables a layer's statistics read: every weight of a normalization layer and
    of a cosine layer (norms of the kernel and the bias), a weight-standardized
    convolution's kernel, a wrapper's own weights (the wrapped Keras layer's are Keras')."""
    if name in ("WeightNormalization", "SpectralNormalization"):
        inner = {id(v) for v in layer.layer.weights}
        return [v for v in layer.weights if id(v) not in inner]
    if name.startswith("WeightStandardizedConv"):
        return [layer.kernel]
    return list(layer.weights)


@fuzz(100)
@given(
    spec=layer_specs(
        names=tuple(n for n in ALL if n not in ("TLU", "DynamicTanh", "LocalResponseNormalization"))
    ),
    policy=st.sampled_from(["float16", "bfloat16"]),
)
def test_pure_half_policies_keep_statistics_weights_float32(spec, policy):
    """dtype="float16"/"bfloat16" (not mixed): weights and state that take part in statistics
    (moving and streamed statistics, gains and offsets folded with them, kernels whose norms
    are taken) stay float32. TLU and DynamicTanh compute no statistics, LRN has no weights."""
    layer = spec.built(policy)
    bad = [
        f"{v.path}: {v.dtype}" for v in statistics_weights(layer, spec.name) if v.dtype != "float32"
    ]
    assert not bad, f"under dtype={policy!r}: {bad}"


def _batch_statistics(spec, x):
    """The batch mean and (biased) variance a layer's moving averages take, per channel."""
    kw, rank = spec.kwargs, x.ndim
    ch = core._axes(kw.get("axis", -1), rank)
    red = tuple(a for a in range(rank) if a not in ch)
    vbs = kw.get("virtual_batch_size")
    if vbs:  # ghost batches: the mean of the sub-batches' statistics
        chunks = np.split(x, x.shape[0] // vbs)
        mean = np.mean([c.mean(axis=red) for c in chunks], 0)
        var = np.mean([c.var(axis=red) for c in chunks], 0)
        return mean, var
    return x.mean(axis=red), x.var(axis=red)


@fuzz(40)
@given(
    spec=layer_specs(names=("BatchNormalization", "EvoNormB0", "SwitchableNormalization")),
    policy=st.sampled_from(POLICIES),
    variance=st.sampled_from([0.25, 0.6, 1.6, 3.0]),
    offset=st.sampled_from([0.0, 0.5, -2.0]),
    seed_=st.integers(0, 2**16),
    mode=st.sampled_from(MODES),
)
def test_moving_statistics_keep_updating(spec, policy, variance, offset, seed_, mode):
    """One training call on data of variance != 1, under every policy (pure half precision
    included): each moving average moves by (1 - momentum) (batch statistic - old value),
    to 1% of that step (float32 state resolves a step of 1e-3 of 1.0; half-precision
    state would not)."""
    assume(not spec.kwargs.get("renorm"))  # renorm derives its variance from a stddev
    spec = make_spec(spec.name, spec.kwargs, spec.shape, True)
    note(f"run in training: {spec!r}")
    n_values = math.prod(spec.shape) / math.prod(
        spec.shape[a] for a in core._axes(spec.kwargs.get("axis", -1), len(spec.shape))
    )
    assume(n_values >= 2)
    dtype = compute_dtype(policy)
    layer = spec.built(policy, seed_)
    p = params_of(layer)
    xr = rounded(Input("normal", math.sqrt(variance), offset, seed_).make(spec.shape), dtype)
    call(layer, tf.cast(tf.constant(xr), dtype), True, mode)
    momentum = spec.kwargs.get("momentum", 0.99)
    mean, var = _batch_statistics(spec, xr)
    stats = [("moving_variance", var)] + (
        [] if spec.name == "EvoNormB0" else [("moving_mean", mean)]
    )
    for name, batch in stats:
        old = p[name]
        want = momentum * old + (1 - momentum) * batch.reshape(old.shape)
        got = np.asarray(getattr(layer, name).numpy(), np.float64)
        step = np.abs(want - old)
        check_close(
            f"{name} after one training call ({mode}), from {old.ravel()[:3]}",
            got,
            want,
            1e-2 * float(step.min()) + 8 * U["float32"] * float(np.abs(want).max()),
        )


@fuzz(25)
@given(
    spec=layer_specs(names=("OnlineNormalization",)),
    policy=st.sampled_from(["float16", "bfloat16", "mixed_float16", "mixed_bfloat16"]),
    mode=st.sampled_from(MODES),
    data=st.data(),
)
def test_online_streamed_statistics_under_half_precision(spec, policy, mode, data):
    """OnlineNormalization under half-precision policies: after a training call the streamed
    mean and variance are finite and are the float64 stream's for the rounded input
    (float32 statistics; a streamed variance of x ~ 1e3 is beyond float16)."""
    dtype = compute_dtype(policy)
    inp = data.draw(
        inputs(dtype, kinds=("normal",), scale=(0.0, 4.0), offset=(-3.0, 3.0)), label="input"
    )
    spec = make_spec(spec.name, spec.kwargs, spec.shape, True)
    note(f"run in training: {spec!r}")
    layer = spec.built(policy, inp.seed)
    p = params_of(layer)
    xr = rounded(inp.make(spec.shape), dtype)
    kw = spec.kwargs

    def stream(x):
        ref = seed.OnlineNormNumpy(seed._online_channels(x, kw), params=p, **kw)
        ref.forward(x, True)
        return np.concatenate([ref.mu, ref.var])

    want = stream(xr)
    call(layer, tf.cast(tf.constant(xr), dtype), True, mode)
    got = np.concatenate(
        [
            np.asarray(layer.streaming_mean.numpy(), np.float64),
            np.asarray(layer.streaming_variance.numpy(), np.float64),
        ]
    )
    assert np.all(np.isfinite(got)), (
        f"streamed statistics not finite under {policy} ({mode}): mean "
        f"{layer.streaming_mean.numpy()}, variance {layer.streaming_variance.numpy()}; "
        f"float64 stream: {want}"
    )
    s = sensitivity(lambda x, p_, t: stream(x), xr, p, True, 4 * U["float32"])
    check_close(
        f"streamed mean and variance ({mode})",
        got,
        want,
        BASE["float32"] * float(np.abs(want).max()) + K * s,
    )


# -- (4) float64 ----------------------------------------------------------------


@fuzz(80)
@given(spec=layer_specs(), mode=st.sampled_from(MODES), inp=st.none(), data=st.data())
@example(
    spec=make_spec("LayerNormalization", {"axis": 1, "epsilon": 1e-3}, (3, 8, 2)),
    mode="eager",
    inp=Input("normal", 0.01, 0.0, 0),
    data=None,
).via("the issue: epsilon=1e-3 rounded through float32, 2e-8 relative")
@example(
    spec=make_spec("OnlineNormalization", {"ecm": "ls", "epsilon": 0.1}, (2, 2), True),
    mode="eager",
    inp=Input("constant", 1.0, 0.773, 0),
    data=None,
).via("found by this suite: ls_epsilon")
def test_float64_matches_reference_to_1e12(spec, mode, inp, data):
    """float64 layers are the float64 reference to 1e-12 of the output's scale (plus the
    input's conditioning, K * S at float64): a constant such as epsilon=1e-3 rounded through
    float32 (relative error 5e-8) shows as ~2e-8 on small-variance inputs."""
    if inp is None:
        inp = data.draw(inputs("float64", scale=(-6.0, 1.0), offset=(-6.0, 2.0)), label="input")
    c = prepare(spec, "float64", inp)
    y = forward(c.layer, c.x, spec.training, mode)
    check_close(f"output ({mode}, float64)", y, c.y_ref, c.tol, c.scale)
