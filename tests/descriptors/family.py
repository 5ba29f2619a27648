"""Descriptors of the wider family: weight-based wrappers and convolutions, FRN/TLU, EvoNorms,
switchable, local response, pixel, scale normalization and Dynamic Tanh.

Every reference is written from its paper's equations in NumPy: convolutions
as explicit sums over kernel offsets, spectral norm as Miyato et al.'s
Algorithm 1, LRN as a loop over channel windows.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

import tfnorm
from tests.descriptors.core import _axes, _bcast
from tests.harness import Case, default_randomize

# ---------------------------------------------------------------------------
# helpers


def _tuple(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _affine(y, p, axes, rank, center=True, scale=True):
    if scale:
        y = y * _bcast(p["gamma"], axes, rank)
    if center:
        y = y + _bcast(p["beta"], axes, rank)
    return y


# relu, not tanh: relu keeps the scale of the pre-activations, so the half-precision checks
# (errors relative to the largest output) stay meaningful.
_ACT = {None: lambda t: t, "linear": lambda t: t, "relu": lambda t: np.maximum(t, 0.0)}


def conv_nd(
    x, w, strides=1, padding="valid", dilation_rate=1, data_format="channels_last", groups=1
):
    """N-d convolution (cross-correlation, as in TF) as a sum over kernel offsets."""
    rank = w.ndim - 2
    if data_format == "channels_first":
        x = np.moveaxis(x, 1, -1)
    s, d, k = _tuple(strides, rank), _tuple(dilation_rate, rank), w.shape[:rank]
    spatial = x.shape[1:-1]
    pads = []
    for i in range(rank):
        span = (k[i] - 1) * d[i] + 1
        if padding == "same":
            out = -(-spatial[i] // s[i])
            total = max((out - 1) * s[i] + span - spatial[i], 0)
            pads.append((total // 2, total - total // 2))
        elif padding == "causal":
            pads.append((span - 1, 0))
        else:
            pads.append((0, 0))
    xp = np.pad(x, [(0, 0)] + pads + [(0, 0)])
    out = [(xp.shape[1 + i] - ((k[i] - 1) * d[i] + 1)) // s[i] + 1 for i in range(rank)]
    cin_g, cout = w.shape[-2], w.shape[-1]
    cout_g = cout // groups
    y = np.zeros((x.shape[0], *out, cout))
    for off in np.ndindex(*k):
        idx = tuple(
            slice(off[i] * d[i], off[i] * d[i] + (out[i] - 1) * s[i] + 1, s[i]) for i in range(rank)
        )
        patch = xp[(slice(None),) + idx + (slice(None),)]
        for g in range(groups):
            y[..., g * cout_g : (g + 1) * cout_g] += (
                patch[..., g * cin_g : (g + 1) * cin_g] @ w[off][:, g * cout_g : (g + 1) * cout_g]
            )
    return np.moveaxis(y, -1, 1) if data_format == "channels_first" else y


class Linear:
    """A wrapped Dense/ConvND in NumPy: ``op(x, kernel)``, bias axis, activation."""

    def __init__(self, kind, **kwargs):
        self.kind, self.kwargs = kind, kwargs

    def keras_layer(self, dtype=None):
        cls = {
            "dense": keras.layers.Dense,
            "conv1d": keras.layers.Conv1D,
            "conv2d": keras.layers.Conv2D,
            "conv3d": keras.layers.Conv3D,
        }[self.kind]
        return cls(**self.kwargs, **({} if dtype is None else {"dtype": dtype}))

    def channel_axis(self, rank):
        return 1 if self.kwargs.get("data_format") == "channels_first" else rank - 1

    def op(self, x, kernel):
        if self.kind == "dense":
            return x @ kernel
        keys = ("strides", "padding", "dilation_rate", "data_format", "groups")
        return conv_nd(x, kernel, **{k: self.kwargs[k] for k in keys if k in self.kwargs})

    def finish(self, y, bias):
        if bias is not None:
            y = y + _bcast(bias, [self.channel_axis(y.ndim)], y.ndim)
        return _ACT[self.kwargs.get("activation")](y)

    def uses_bias(self):
        return self.kwargs.get("use_bias", True)


# ---------------------------------------------------------------------------
# weight-based references


DATA_INIT_EPSILON = 1e-6


def wn_reference(lin: Linear, data_init=True):
    """Salimans & Kingma 2016, eq. 2 (w = g v/||v||) and Sec. 3 (data-dependent init:
    t = v.x/||v||, g <- 1/sigma[t], b <- -mu[t]/sigma[t])."""

    def ref(x, p, training):
        v = p["kernel"]
        fan = tuple(range(v.ndim - 1))
        direction = v / np.sqrt((v**2).sum(axis=fan, keepdims=True))
        if data_init and training and p["initialized"] < 0.5:
            t = lin.op(x, direction)
            c = lin.channel_axis(t.ndim)
            red = tuple(a for a in range(t.ndim) if a != c)
            sigma = np.sqrt(t.var(axis=red, keepdims=True) + DATA_INIT_EPSILON)
            if lin.uses_bias():
                return lin.finish((t - t.mean(axis=red, keepdims=True)) / sigma, None)
            return lin.finish(t / sigma, None)
        bias = p["bias"] + p.get("offset", 0.0) if lin.uses_bias() else None
        return lin.finish(lin.op(x, p["g"] * direction), bias)

    return ref


def power_iteration(w2, u, steps):
    """Miyato et al. 2018, Alg. 1 on W = w2.T (w2: (fan_in, units)); returns (u, v, sigma)."""
    u = u / np.linalg.norm(u)
    for _ in range(steps):
        v = w2 @ u
        v = v / np.linalg.norm(v)
        u = w2.T @ v
        u = u / np.linalg.norm(u)
    return u, v, v @ w2 @ u


def sn_reference(lin: Linear, power_iterations=1):
    """Miyato et al. 2018: W_SN = W / sigma(W); inference: sigma = ||W u|| with the stored u."""

    def ref(x, p, training):
        w = p["kernel"]
        w2 = w.reshape(-1, w.shape[-1])
        if training:
            _, _, sigma = power_iteration(w2, p["u"], power_iterations)
        else:
            sigma = np.linalg.norm(w2 @ (p["u"] / np.linalg.norm(p["u"])))
        return lin.finish(lin.op(x, w / sigma), p["bias"] if lin.uses_bias() else None)

    return ref


def ws_reference(lin: Linear, epsilon=1e-5):
    """Qiao et al. 2019, eq. 5-6: W_hat = (W - mean) / sqrt(var + eps) over each filter's fan-in."""

    def ref(x, p, training):
        w = p["kernel"]
        fan = tuple(range(w.ndim - 1))
        w_hat = (w - w.mean(axis=fan, keepdims=True)) / np.sqrt(
            w.var(axis=fan, keepdims=True) + epsilon
        )
        return lin.finish(lin.op(x, w_hat), p["bias"] if lin.uses_bias() else None)

    return ref


def _wn_randomize(initialized):
    def randomize(layer, rng):
        default_randomize(layer, rng)
        if layer.initialized is not None:
            layer.initialized.assign(float(initialized))

    return randomize


def _sn_randomize(layer, rng):
    default_randomize(layer, rng)
    u = rng.normal(size=layer.u.shape)
    layer.u.assign((u / np.linalg.norm(u)).astype(layer.u.dtype))


def _small_input(rng, shape):
    """The wrappers and convolutions keep their input's scale (they do not normalize the
    activations): inputs of scale ~0.15 keep the float16 head of test_precision.py's
    loss-scaled family model (inputs x 30, every branch concatenated) within range."""
    return rng.normal(size=shape) * 0.15 + 0.03


def _wrapper_factory(wrapper, lin: Linear, **wrapper_kwargs):
    def factory(dtype=None):
        extra = {} if dtype is None else {"dtype": dtype}
        return wrapper(lin.keras_layer(dtype), **wrapper_kwargs, **extra)

    return factory


def _wn(id, lin, input_shape, grad_shape, data_init=True, initialized=0.0):
    # "synchronized" is not a constructor argument: it records, for the distributed checks,
    # that with data_init the layer's training statistics (its initialization) span all
    # replicas (WeightNormalization.synchronized).
    kwargs = {"data_init": data_init, **({"synchronized": True} if data_init else {})}
    return Case(
        id=id,
        cls=tfnorm.WeightNormalization,
        kwargs=kwargs,
        input_shape=input_shape,
        grad_shape=grad_shape,
        reference=wn_reference(lin, data_init),
        factory=_wrapper_factory(tfnorm.WeightNormalization, lin, data_init=data_init),
        randomize=_wn_randomize(initialized),
        input_fn=_small_input,
        stateful=data_init and initialized < 0.5,
        notes="data_init runs on the first training call when the flag is 0",
    )


def _sn(id, lin, input_shape, grad_shape, power_iterations=1):
    return Case(
        id=id,
        cls=tfnorm.SpectralNormalization,
        kwargs={"power_iterations": power_iterations},
        input_shape=input_shape,
        grad_shape=grad_shape,
        reference=sn_reference(lin, power_iterations),
        factory=_wrapper_factory(
            tfnorm.SpectralNormalization, lin, power_iterations=power_iterations
        ),
        randomize=_sn_randomize,
        stateful=True,
        grad_training=False,
        input_fn=_small_input,
        notes="finite differences in inference: in training u and v are constants of "
        "the backward pass (Miyato et al.), not of the forward; tests/test_family.py "
        "checks the training gradient with u, v fixed",
    )


# Padding "same"/"causal" in the weight-standardized cases: a standardized filter sums to 0,
# so on a constant input a "valid" convolution gives just the bias, and a float16 convolution's
# rounding (|x| * fan_in * 2**-11, as for keras.layers.Conv2D) is then not small relative to the
# output in tests/test_precision.py's |x| = 1e4 check; border windows keep the output's scale.
def _ws(id, cls, kind, input_shape, grad_shape, epsilon=1e-5, **conv_kwargs):
    lin = Linear(kind, **conv_kwargs)
    kwargs = dict(conv_kwargs, **({} if epsilon == 1e-5 else {"epsilon": epsilon}))
    return Case(
        id=id,
        cls=cls,
        kwargs=kwargs,
        input_shape=input_shape,
        grad_shape=grad_shape,
        reference=ws_reference(lin, epsilon),
        input_fn=_small_input,
    )


# ---------------------------------------------------------------------------
# activation-normalization references


def frn_reference(axis=-1, epsilon=1e-6, learned_epsilon=False, center=True, scale=True, **_):
    """Singh & Krishnan 2020, eq. 1-2: nu2 = mean over H, W of x^2; x / sqrt(nu2 + |eps|)."""

    def ref(x, p, training):
        rank = x.ndim
        c = axis % rank
        sp = tuple(a for a in range(1, rank) if a != c)
        eps = abs(epsilon) + (abs(float(p["learned_eps"])) if learned_epsilon else 0.0)
        y = x / np.sqrt((x**2).mean(axis=sp, keepdims=True) + eps)
        return _affine(y, p, [c], rank, center, scale)

    return ref


def tlu_reference(axis=-1, affine=False, **_):
    """Singh & Krishnan 2020, eq. 3: z = max(y, tau); TLU-affine: z = max(y, alpha y + tau)."""

    def ref(x, p, training):
        ax = sorted(a % x.ndim for a in (axis if isinstance(axis, (list, tuple)) else [axis]))
        tau = _bcast(p["tau"], ax, x.ndim)
        if affine:
            return np.maximum(x, _bcast(p["alpha"], ax, x.ndim) * x + tau)
        return np.maximum(x, tau)

    return ref


def evonorm_b0_reference(momentum=0.99, epsilon=1e-5, axis=-1, center=True, scale=True, **_):
    """Liu et al. 2020, Table 1 / Fig. 4: x / max(sqrt(s2_bwh + eps), v1 x + sqrt(s2_wh + eps))."""

    def ref(x, p, training):
        rank = x.ndim
        c = axis % rank
        sp = tuple(a for a in range(1, rank) if a != c)
        if training:
            s2b = x.var(axis=(0,) + sp, keepdims=True)
        else:
            s2b = _bcast(p["moving_variance"], [c], rank)
        s2i = x.var(axis=sp, keepdims=True)
        den = np.maximum(
            np.sqrt(s2b + epsilon), _bcast(p["v1"], [c], rank) * x + np.sqrt(s2i + epsilon)
        )
        return _affine(x / den, p, [c], rank, center, scale)

    return ref


def evonorm_s0_reference(groups=32, epsilon=1e-5, axis=-1, center=True, scale=True, **_):
    """Liu et al. 2020, Table 1: x sigmoid(v1 x) / sqrt(s2_{w,h,c/g} + eps)."""

    def ref(x, p, training):
        rank = x.ndim
        c = axis % rank
        xm = np.moveaxis(x, c, -1)
        n, ch = xm.shape[0], xm.shape[-1]
        xg = xm.reshape(n, -1, groups, ch // groups)
        var = np.broadcast_to(xg.var(axis=(1, 3), keepdims=True), xg.shape).reshape(xm.shape)
        var = np.moveaxis(var, -1, c)
        v1 = _bcast(p["v1"], [c], rank)
        sigmoid = 0.5 * (1.0 + np.tanh(0.5 * v1 * x))
        y = x * sigmoid / np.sqrt(var + epsilon)
        return _affine(y, p, [c], rank, center, scale)

    return ref


def switchable_reference(momentum=0.99, epsilon=1e-5, axis=-1, center=True, scale=True, **_):
    """Luo et al. 2019, eq. 3-5: softmax-weighted IN/LN/BN means and variances."""

    def softmax(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    def ref(x, p, training):
        rank = x.ndim
        c = axis % rank
        sp = tuple(a for a in range(1, rank) if a != c)
        ln = tuple(range(1, rank))
        stats = [
            (x.mean(axis=sp, keepdims=True), x.var(axis=sp, keepdims=True)),
            (x.mean(axis=ln, keepdims=True), x.var(axis=ln, keepdims=True)),
        ]
        if training:
            bn = (0,) + sp
            stats.append((x.mean(axis=bn, keepdims=True), x.var(axis=bn, keepdims=True)))
        else:
            stats.append(
                (_bcast(p["moving_mean"], [c], rank), _bcast(p["moving_variance"], [c], rank))
            )
        wm, wv = softmax(p["mean_weights"]), softmax(p["variance_weights"])
        mean = sum(w * m for w, (m, _) in zip(wm, stats))
        var = sum(w * v for w, (_, v) in zip(wv, stats))
        return _affine((x - mean) / np.sqrt(var + epsilon), p, [c], rank, center, scale)

    return ref


def lrn_reference(depth_radius=5, bias=1.0, alpha=1.0, beta=0.5, axis=-1, **_):
    """Krizhevsky et al. 2012, Sec. 3.3 in TF's convention (alpha not divided by the window)."""

    def ref(x, p, training):
        xm = np.moveaxis(x, axis % x.ndim, -1)
        ch = xm.shape[-1]
        out = np.empty_like(xm)
        for c in range(ch):
            lo, hi = max(0, c - depth_radius), min(ch, c + depth_radius + 1)
            s = (xm[..., lo:hi] ** 2).sum(axis=-1)
            out[..., c] = xm[..., c] / (bias + alpha * s) ** beta
        return np.moveaxis(out, -1, axis % x.ndim)

    return ref


def pixel_reference(epsilon=1e-8, axis=-1, **_):
    """Karras et al. 2018, Sec. 4.2: b = a / sqrt(mean_j a_j^2 + eps) over the channels."""

    def ref(x, p, training):
        ax = tuple(_axes(axis, x.ndim))
        return x / np.sqrt((x**2).mean(axis=ax, keepdims=True) + epsilon)

    return ref


def scale_reference(epsilon=1e-5, axis=-1, **_):
    """Nguyen & Salazar 2019, eq. 9: g x / ||x||, the norm clamped at eps."""

    def ref(x, p, training):
        ax = tuple(_axes(axis, x.ndim))
        norm = np.sqrt((x**2).sum(axis=ax, keepdims=True))
        return float(p["g"]) * x / np.maximum(norm, epsilon)

    return ref


def dyt_reference(alpha_init=0.5, axis=-1, **_):
    """Zhu et al. 2025, Alg. 1: gamma * tanh(alpha x) + beta."""

    def ref(x, p, training):
        ax = _axes(axis, x.ndim)
        y = np.tanh(float(p["alpha"]) * x)
        return y * _bcast(p["gamma"], ax, x.ndim) + _bcast(p["beta"], ax, x.ndim)

    return ref


def _tlu_input(rng, shape):
    """TLU passes its input's scale through (it does not normalize). Small inputs keep the
    float16 head of test_precision.py's loss-scaled training (inputs x 30) from overflowing."""
    return rng.normal(size=shape) * 0.15


def _tlu_randomize(layer, rng):
    """Thresholds among the inputs, so both sides of max(x, tau) are exercised; slopes of
    both signs for TLU-affine."""
    layer.tau.assign(rng.uniform(-0.1, 0.1, size=layer.tau.shape).astype(layer.tau.dtype))
    if layer.alpha is not None:
        layer.alpha.assign(rng.uniform(-0.8, 0.8, size=layer.alpha.shape).astype(layer.alpha.dtype))


def _case(id, cls, ref_factory, input_shape, grad_shape=None, **kwargs):
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k.startswith("case_")}
    return Case(
        id=id,
        cls=cls,
        kwargs=kwargs,
        input_shape=input_shape,
        reference=ref_factory(**kwargs),
        grad_shape=grad_shape,
        **{k[5:]: v for k, v in extra.items()},
    )


# Fan-ins stay <= 8 so that float16 outputs of the wrapped linear maps stay finite for the
# |x| = 1e4 inputs of tests/test_precision.py (the linear op itself runs in float16, as in Keras).
_dense3_relu = Linear("dense", units=3, activation="relu")
_dense3 = Linear("dense", units=3)
_dense4_nobias = Linear("dense", units=4, use_bias=False)
_conv2d = Linear("conv2d", filters=3, kernel_size=(2, 2), padding="same")
# Keras runs channels_first 1-D/2-D convolutions on CPU only when grouped (through XLA).
_conv1d_cf = Linear("conv1d", filters=4, kernel_size=2, groups=2, data_format="channels_first")
_dense4 = Linear("dense", units=4)
_conv2d_relu = Linear("conv2d", filters=3, kernel_size=(2, 2), strides=2, activation="relu")
_conv1d_causal = Linear("conv1d", filters=3, kernel_size=2, padding="causal", dilation_rate=2)

CASES = [
    _wn("weightnorm-dense", _dense3_relu, (6, 4), (3, 4), data_init=False),
    _wn("weightnorm-dense-data-init", _dense3, (8, 5), (6, 5)),
    _wn("weightnorm-dense-rank3-nobias-data-init", _dense4_nobias, (4, 3, 5), (2, 3, 5)),
    _wn("weightnorm-conv2d-initialized", _conv2d, (2, 5, 5, 2), (1, 3, 3, 2), initialized=1.0),
    dataclasses.replace(
        _wn("weightnorm-conv1d-channels-first-data-init", _conv1d_cf, (3, 2, 7), None),
        gradient=None,
        notes="on CPU Keras compiles a channels_first convolution with XLA at every eager call, "
        "so finite differences (two calls per input and weight entry) take ~20 s; the "
        "gradient path is that of weightnorm-conv2d-initialized and the dense cases",
    ),
    _sn("spectral-dense", _dense4, (5, 6), (3, 6)),
    _sn("spectral-conv2d", _conv2d_relu, (2, 4, 4, 2), (1, 4, 4, 2), power_iterations=3),
    _sn("spectral-conv1d-causal", _conv1d_causal, (3, 6, 2), (2, 4, 2)),
    _ws(
        "ws-conv1d-causal",
        tfnorm.WeightStandardizedConv1D,
        "conv1d",
        (3, 7, 2),
        (2, 5, 2),
        filters=3,
        kernel_size=2,
        padding="causal",
        dilation_rate=2,
    ),
    _ws(
        "ws-conv2d-strided",
        tfnorm.WeightStandardizedConv2D,
        "conv2d",
        (2, 5, 5, 1),
        (1, 4, 4, 1),
        filters=4,
        kernel_size=(2, 2),
        strides=2,
        padding="same",
    ),
    _ws(
        "ws-conv2d-dilated",
        tfnorm.WeightStandardizedConv2D,
        "conv2d",
        (2, 5, 5, 2),
        (1, 4, 4, 2),
        epsilon=1e-3,
        filters=3,
        kernel_size=(1, 2),
        dilation_rate=(1, 2),
        padding="same",
        use_bias=False,
    ),
    _ws(
        "ws-conv3d",
        tfnorm.WeightStandardizedConv3D,
        "conv3d",
        (2, 3, 3, 3, 1),
        (1, 3, 2, 3, 1),
        filters=2,
        kernel_size=(2, 1, 2),
        padding="same",
        activation="relu",
    ),
    _case("frn-2d", tfnorm.FilterResponseNormalization, frn_reference, (2, 4, 4, 3), (2, 2, 2, 2)),
    _case(
        "frn-1d-learned-epsilon",
        tfnorm.FilterResponseNormalization,
        frn_reference,
        (3, 5, 4),
        (2, 3, 2),
        learned_epsilon=True,
    ),
    _case(
        "frn-3d-channels-first",
        tfnorm.FilterResponseNormalization,
        frn_reference,
        (2, 3, 2, 3, 3),
        (1, 2, 2, 2, 2),
        axis=1,
        epsilon=1e-4,
        center=False,
    ),
    _case(
        "tlu",
        tfnorm.TLU,
        tlu_reference,
        (3, 4, 4, 3),
        (2, 2, 2, 3),
        case_input_fn=_tlu_input,
        case_randomize=_tlu_randomize,
    ),
    _case(
        "tlu-channels-first",
        tfnorm.TLU,
        tlu_reference,
        (3, 3, 5),
        (2, 3, 3),
        axis=1,
        case_input_fn=_tlu_input,
        case_randomize=_tlu_randomize,
    ),
    _case(
        "tlu-affine",
        tfnorm.TLU,
        tlu_reference,
        (3, 4, 4, 3),
        (2, 2, 2, 3),
        affine=True,
        case_input_fn=_tlu_input,
        case_randomize=_tlu_randomize,
    ),
    # TF-Addons' layout: one tau and alpha per position and channel
    _case(
        "tlu-affine-per-position",
        tfnorm.TLU,
        tlu_reference,
        (3, 4, 2, 3),
        (2, 4, 2, 3),
        affine=True,
        axis=[1, 2, 3],
        case_input_fn=_tlu_input,
        case_randomize=_tlu_randomize,
    ),
    _case(
        "evonorm-b0-2d",
        tfnorm.EvoNormB0,
        evonorm_b0_reference,
        (4, 3, 3, 4),
        (3, 2, 2, 2),
        case_stateful=True,
    ),
    _case(
        "evonorm-b0-channels-first-1d",
        tfnorm.EvoNormB0,
        evonorm_b0_reference,
        (4, 3, 5),
        (3, 2, 3),
        axis=1,
        momentum=0.9,
        case_stateful=True,
    ),
    # EvoNorm-S0 does not subtract a mean: a constant input c gives c / sqrt(epsilon) exactly,
    # 3e6 for c = 1e4 and epsilon = 1e-5, beyond float16's 65504 in any implementation; the
    # cases use epsilon=0.1 so that test_precision.py's constant 1e4 input has a float16 answer.
    _case(
        "evonorm-s0-2d",
        tfnorm.EvoNormS0,
        evonorm_s0_reference,
        (2, 3, 3, 8),
        (2, 2, 2, 4),
        groups=4,
        epsilon=0.1,
    ),
    _case(
        "evonorm-s0-dense",
        tfnorm.EvoNormS0,
        evonorm_s0_reference,
        (4, 6),
        (3, 6),
        groups=3,
        epsilon=0.1,
    ),
    _case(
        "evonorm-s0-channels-first-3d",
        tfnorm.EvoNormS0,
        evonorm_s0_reference,
        (2, 4, 2, 3, 2),
        (1, 4, 2, 1, 2),
        groups=2,
        axis=1,
        scale=False,
        epsilon=0.1,
    ),
    _case(
        "switchable-2d",
        tfnorm.SwitchableNormalization,
        switchable_reference,
        (4, 3, 3, 4),
        (3, 2, 2, 2),
        case_stateful=True,
    ),
    _case(
        "switchable-channels-first-1d",
        tfnorm.SwitchableNormalization,
        switchable_reference,
        (3, 4, 5),
        (3, 2, 3),
        axis=1,
        momentum=0.9,
        case_stateful=True,
    ),
    _case(
        "lrn-4d",
        tfnorm.LocalResponseNormalization,
        lrn_reference,
        (2, 3, 3, 8),
        (1, 2, 2, 6),
        depth_radius=2,
        bias=2.0,
        alpha=0.5,
        beta=0.75,
    ),
    _case(
        "lrn-defaults-channels-first",
        tfnorm.LocalResponseNormalization,
        lrn_reference,
        (2, 4, 3, 3),
        (1, 4, 2, 2),
        axis=1,
    ),
    _case(
        "lrn-dense",
        tfnorm.LocalResponseNormalization,
        lrn_reference,
        (3, 12),
        (2, 7),
        depth_radius=1,
        alpha=0.3,
        beta=1.0,
    ),
    _case("pixel-2d", tfnorm.PixelNormalization, pixel_reference, (2, 4, 4, 5), (1, 2, 2, 5)),
    _case(
        "pixel-channels-first",
        tfnorm.PixelNormalization,
        pixel_reference,
        (2, 5, 3, 3),
        (1, 5, 2, 2),
        axis=1,
        epsilon=1e-6,
    ),
    _case("scale", tfnorm.ScaleNormalization, scale_reference, (3, 4, 8), (2, 2, 8)),
    _case(
        "scale-multi-axis",
        tfnorm.ScaleNormalization,
        scale_reference,
        (2, 3, 4, 5),
        (1, 2, 3, 4),
        axis=[2, 3],
    ),
    _case("dyt", tfnorm.DynamicTanh, dyt_reference, (3, 4, 6), (2, 2, 6)),
    _case(
        "dyt-channels-first",
        tfnorm.DynamicTanh,
        dyt_reference,
        (2, 3, 4, 4),
        (1, 3, 2, 2),
        axis=1,
        alpha_init=0.8,
    ),
]
