"""Descriptors of the seed papers' layers: Online Normalization, AdaNorm/DetachNorm, cosine.

The references are written from the papers' equations: Online Normalization
sample by sample in a Python loop (Chiley et al. 2019, forward normalization
and backward control process), AdaNorm's and DetachNorm's gradients derived by
hand (Xu et al. 2019), cosine layers on explicitly extracted, zero-padded
patches (Luo et al. 2017).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

import tfnorm
from tests.harness import Case

# ---------------------------------------------------------------------------
# Online Normalization


def _to_nlc(x, axis):
    """(N, ..., C, ...) -> (N, L, C): channel last, other non-batch axes flattened."""
    xm = np.moveaxis(x, axis % x.ndim, -1)
    return xm.reshape(xm.shape[0], -1, xm.shape[-1]), xm.shape


def _from_nlc(f, moved_shape, axis, ndim):
    return np.moveaxis(f.reshape(moved_shape), -1, axis % ndim)


class OnlineNormNumpy:
    """Online Normalization, literally: one sample at a time (Chiley et al. 2019).

    Holds the streamed statistics ``mu``, ``var`` and the control state ``u``,
    ``v``; ``forward`` then ``backward`` is one training step.
    """

    def __init__(
        self,
        channels,
        alpha_fwd=0.999,
        alpha_bkw=0.99,
        axis=-1,
        epsilon=1e-5,
        ecm="ac",
        ls_epsilon=1e-5,
        clamp_value=5.0,
        center=True,
        scale=True,
        params=None,
    ):
        self.af, self.ab, self.axis, self.eps = alpha_fwd, alpha_bkw, axis, epsilon
        self.ecm, self.ls_eps, self.clamp = ecm, ls_epsilon, clamp_value
        p = params or {}
        self.gamma = np.array(p.get("gamma", np.ones(channels))) if scale else None
        self.beta = np.array(p.get("beta", np.zeros(channels))) if center else None
        self.mu = np.array(p.get("streaming_mean", np.zeros(channels)), np.float64)
        self.var = np.array(p.get("streaming_variance", np.ones(channels)), np.float64)
        self.u = np.array(p.get("u_control", np.zeros(channels)), np.float64)
        self.v = np.array(p.get("v_control", np.zeros(channels)), np.float64)

    # -- the pieces -----------------------------------------------------------
    def _affine_ecm(self, y):
        """y: (N, L, C) -> o (after gamma, beta) and z (after ecm)."""
        o = y * (self.gamma if self.gamma is not None else 1.0)
        o = o + (self.beta if self.beta is not None else 0.0)
        if self.ecm == "ac":
            return o, np.clip(o, -self.clamp, self.clamp)
        if self.ecm == "ls":
            rms = np.sqrt((o**2).mean(axis=(1, 2), keepdims=True) + self.ls_eps)
            return o, o / rms
        return o, o

    def forward(self, x, training=True):
        f, moved = _to_nlc(np.asarray(x, np.float64), self.axis)
        if not training:
            y = (f - self.mu) / np.sqrt(self.var + self.eps)
            _, z = self._affine_ecm(y)
            return _from_nlc(z, moved, self.axis, x.ndim)
        y = np.empty_like(f)
        scales = np.empty((f.shape[0], f.shape[2]))
        for t in range(f.shape[0]):
            m_t, s2_t = f[t].mean(0), f[t].var(0)
            scales[t] = np.sqrt(self.var + self.eps)
            y[t] = (f[t] - self.mu) / scales[t]
            self.var = (
                self.af * self.var
                + (1 - self.af) * s2_t
                + self.af * (1 - self.af) * (m_t - self.mu) ** 2
            )
            self.mu = self.mu + (1 - self.af) * (m_t - self.mu)
        o, z = self._affine_ecm(y)
        self._cache = (y, o, z, scales, moved, x.ndim)
        return _from_nlc(z, moved, self.axis, x.ndim)

    def backward(self, dz):
        """Returns ``(dx, dgamma, dbeta)`` and advances ``u``, ``v``."""
        y, o, z, scales, moved, ndim = self._cache
        d, _ = _to_nlc(np.asarray(dz, np.float64), self.axis)
        if self.ecm == "ac":
            d = d * (np.abs(o) < self.clamp)
        elif self.ecm == "ls":
            rms = np.sqrt((o**2).mean(axis=(1, 2), keepdims=True) + self.ls_eps)
            d = d / rms - o * (d * o).mean(axis=(1, 2), keepdims=True) / rms**3
        dgamma = (d * y).sum((0, 1)) if self.gamma is not None else None
        dbeta = d.sum((0, 1)) if self.beta is not None else None
        if self.gamma is not None:
            d = d * self.gamma
        k = 1 - self.ab
        dx = np.empty_like(d)
        for t in range(d.shape[0]):
            g = d[t] - k * self.v * y[t]
            self.v = self.v + (g * y[t]).mean(0)
            g = g / scales[t]
            dx[t] = g - k * self.u
            self.u = self.u + dx[t].mean(0)
        return _from_nlc(dx, moved, self.axis, ndim), dgamma, dbeta

    def state(self):
        return {
            "streaming_mean": self.mu,
            "streaming_variance": self.var,
            "u_control": self.u,
            "v_control": self.v,
        }


def _online_channels(x, kwargs):
    return x.shape[kwargs.get("axis", -1) % x.ndim]


def online_reference(**kwargs):
    def ref(x, p, training):
        return OnlineNormNumpy(_online_channels(x, kwargs), params=p, **kwargs).forward(x, training)

    return ref


def online_grad_reference(**kwargs):
    def grad(x, p, training, dy):
        ref = OnlineNormNumpy(_online_channels(x, kwargs), params=p, **kwargs)
        ref.forward(x, True)
        return ref.backward(dy)[0]

    return grad


# ---------------------------------------------------------------------------
# AdaNorm, DetachNorm


def _flat_axes(x, axis):
    axes = [axis] if isinstance(axis, int) else list(axis)
    axes = sorted(a % x.ndim for a in axes)
    rest = [a for a in range(x.ndim) if a not in axes]
    xm = np.transpose(x, rest + axes)
    shape = xm.shape
    n = int(np.prod([x.shape[a] for a in axes]))
    inverse = np.argsort(rest + axes)
    return xm.reshape(-1, n), (shape, inverse)


def _unflat(f, info):
    shape, inverse = info
    return np.transpose(f.reshape(shape), inverse)


def adanorm_reference(axis=-1, k=0.1, c=1.0, epsilon=1e-5):
    """Xu et al. 2019 (AdaNorm): z = C (1 - k y) y, y = (x - mu) / (sigma + eps), sigma unbiased."""

    def ref(x, p, training):
        f, info = _flat_axes(x, axis)
        y = (f - f.mean(1, keepdims=True)) / (f.std(1, ddof=1, keepdims=True) + epsilon)
        return _unflat(c * (1 - k * y) * y, info)

    return ref


def adanorm_grad_reference(axis=-1, k=0.1, c=1.0, epsilon=1e-5):
    """phi(y) = C (1 - k y) is a constant (Xu et al. 2019, AdaNorm): dL/dy = phi * dL/dz, then
    y = xc / s with xc = x - mean, s = sigma + eps and d sigma / d x_j = xc_j / ((n - 1) sigma):
    dx_j = (g_j - mean(g)) / s - xc_j * sum_i(g_i xc_i) / (s^2 (n - 1) sigma)."""

    def grad(x, p, training, dy):
        f, info = _flat_axes(x, axis)
        d, _ = _flat_axes(dy, axis)
        n = f.shape[1]
        xc = f - f.mean(1, keepdims=True)
        sigma = np.sqrt((xc**2).sum(1, keepdims=True) / (n - 1))
        s = sigma + epsilon
        g = c * (1 - k * xc / s) * d
        dx = (g - g.mean(1, keepdims=True)) / s - xc * (g * xc).sum(1, keepdims=True) / (
            s**2 * (n - 1) * sigma
        )
        return _unflat(dx, info)

    return grad


def detach_reference(axis=-1, epsilon=1e-5):
    """LayerNorm's forward (Ba et al. 2016), no gain or bias."""

    def ref(x, p, training):
        f, info = _flat_axes(x, axis)
        y = (f - f.mean(1, keepdims=True)) / np.sqrt(f.var(1, keepdims=True) + epsilon)
        return _unflat(y, info)

    return ref


def detach_grad_reference(axis=-1, epsilon=1e-5):
    """Mean and variance are constants (Xu et al. 2019, DetachNorm): dx = dz / sqrt(var + eps)."""

    def grad(x, p, training, dy):
        f, info = _flat_axes(x, axis)
        d, _ = _flat_axes(dy, axis)
        return _unflat(d / np.sqrt(f.var(1, keepdims=True) + epsilon), info)

    return grad


# ---------------------------------------------------------------------------
# Cosine normalization

_ACTIVATIONS = {None: lambda t: t, "tanh": np.tanh, "relu": lambda t: np.maximum(t, 0)}


def _cosine(xv, wv, centered, epsilon):
    """Cosine of augmented vectors; xv (..., K), wv (K, F)."""
    if centered:
        xv = xv - xv.mean(-1, keepdims=True)
        wv = wv - wv.mean(0, keepdims=True)
    num = xv @ wv
    nx = np.sqrt((xv**2).sum(-1, keepdims=True) + epsilon)
    nw = np.sqrt((wv**2).sum(0, keepdims=True) + epsilon)
    return num / (nx * nw)


def cosine_dense_reference(
    units, centered=False, use_bias=False, epsilon=1e-6, activation=None, **_
):
    """Luo et al. 2017: the cosine of w and x (centered: Pearson); the bias is w_0 with x_0 = 1."""

    def ref(x, p, training):
        w = p["kernel"]
        xv = x
        if use_bias:
            w = np.concatenate([w, p["bias"][None, :]], 0)
            xv = np.concatenate([x, np.ones(x.shape[:-1] + (1,))], -1)
        return _ACTIVATIONS[activation](_cosine(xv, w, centered, epsilon))

    return ref


def _pads(n, k, s, d, padding):
    if padding == "valid":
        return 0, 0
    if padding == "causal":
        return d * (k - 1), 0
    out = math.ceil(n / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def cosine_conv_reference(
    rank,
    filters,
    kernel_size,
    strides=1,
    padding="valid",
    dilation_rate=1,
    centered=False,
    use_bias=False,
    epsilon=1e-6,
    activation=None,
    data_format="channels_last",
    **_,
):
    """Luo et al. 2017: each output is the cosine of a (zero-padded) patch and a filter."""
    tup = lambda v: (v,) * rank if isinstance(v, int) else tuple(v)  # noqa: E731
    ks, ss, ds = tup(kernel_size), tup(strides), tup(dilation_rate)

    def ref(x, p, training):
        if data_format == "channels_first":
            x = np.moveaxis(x, 1, -1)
        spatial = x.shape[1:-1]
        pads = [_pads(n, k, s, d, padding) for n, k, s, d in zip(spatial, ks, ss, ds)]
        xp = np.pad(x, [(0, 0)] + pads + [(0, 0)])
        outs = [(xp.shape[i + 1] - ds[i] * (ks[i] - 1) - 1) // ss[i] + 1 for i in range(rank)]
        w = p["kernel"].reshape(-1, filters)
        if use_bias:
            w = np.concatenate([w, p["bias"][None, :]], 0)
        y = np.zeros((x.shape[0],) + tuple(outs) + (filters,))
        for pos in itertools.product(*[range(o) for o in outs]):
            idx = tuple(
                slice(o * s, o * s + d * (k - 1) + 1, d) for o, s, d, k in zip(pos, ss, ds, ks)
            )
            patch = xp[(slice(None),) + idx + (slice(None),)].reshape(x.shape[0], -1)
            if use_bias:
                patch = np.concatenate([patch, np.ones((x.shape[0], 1))], -1)
            y[(slice(None),) + pos + (slice(None),)] = _cosine(patch, w, centered, epsilon)
        y = _ACTIVATIONS[activation](y)
        if data_format == "channels_first":
            y = np.moveaxis(y, -1, 1)
        return y

    return ref


# ---------------------------------------------------------------------------
def _online(id, input_shape, grad_shape=None, **kwargs):
    return Case(
        id=id,
        cls=tfnorm.OnlineNormalization,
        kwargs=kwargs,
        input_shape=input_shape,
        reference=online_reference(**kwargs),
        grad_shape=grad_shape,
        stateful=True,
        gradient="custom",
        grad_reference=online_grad_reference(**kwargs),
    )


def _per_sample(id, cls, ref, grad_ref, input_shape, grad_shape=None, **kwargs):
    return Case(
        id=id,
        cls=cls,
        kwargs=kwargs,
        input_shape=input_shape,
        reference=ref(**kwargs),
        grad_shape=grad_shape,
        training_modes=(False,),
        gradient="custom",
        grad_reference=grad_ref(**kwargs),
    )


def _cosine_case(id, cls, input_shape, grad_shape, **kwargs):
    if cls is tfnorm.CosineDense:
        ref = cosine_dense_reference(**kwargs)
    else:
        rank = 1 if cls is tfnorm.CosineConv1D else 2
        ref = cosine_conv_reference(rank, **kwargs)
    return Case(
        id=id,
        cls=cls,
        kwargs=kwargs,
        input_shape=input_shape,
        reference=ref,
        grad_shape=grad_shape,
        training_modes=(False,),
    )


CASES = [
    _online("online-dense", (16, 6), (6, 3), alpha_fwd=0.9, alpha_bkw=0.8),
    _online("online-conv2d-ls", (4, 5, 5, 3), (3, 2, 2, 2), ecm="ls", alpha_fwd=0.9),
    _online(
        "online-channels-first",
        (4, 3, 5, 5),
        (3, 2, 3, 2),
        axis=1,
        ecm=None,
        alpha_fwd=0.95,
        alpha_bkw=0.9,
    ),
    _online(
        "online-seq-no-affine",
        (5, 7, 3),
        (3, 4, 2),
        center=False,
        scale=False,
        clamp_value=2.0,
        alpha_fwd=0.8,
    ),
    _online("online-conv3d", (2, 3, 3, 2, 4), (2, 2, 2, 2, 2), ecm="ls", alpha_bkw=0.9),
    _online("online-batch1", (1, 4, 4, 3), (1, 2, 3, 2), alpha_fwd=0.9),
    _per_sample(
        "adanorm", tfnorm.AdaNorm, adanorm_reference, adanorm_grad_reference, (4, 7, 10), (2, 2, 5)
    ),
    _per_sample(
        "adanorm-multi-axis",
        tfnorm.AdaNorm,
        adanorm_reference,
        adanorm_grad_reference,
        (3, 4, 5, 6),
        (2, 2, 2, 3),
        axis=[2, 3],
        k=0.2,
        c=2.0,
        epsilon=1e-3,
    ),
    _per_sample(
        "adanorm-axis1",
        tfnorm.AdaNorm,
        adanorm_reference,
        adanorm_grad_reference,
        (3, 6, 4),
        (2, 4, 3),
        axis=1,
        k=0.3,
    ),
    _per_sample(
        "detach",
        tfnorm.DetachNormalization,
        detach_reference,
        detach_grad_reference,
        (4, 12),
        (3, 5),
    ),
    _per_sample(
        "detach-axis1",
        tfnorm.DetachNormalization,
        detach_reference,
        detach_grad_reference,
        (3, 6, 4),
        (2, 4, 3),
        axis=1,
        epsilon=1e-3,
    ),
    _cosine_case("cosine-dense-bias", tfnorm.CosineDense, (4, 7), (2, 4), units=5, use_bias=True),
    _cosine_case(
        "cosine-dense-centered-bias",
        tfnorm.CosineDense,
        (3, 4, 6),
        (2, 2, 4),
        units=3,
        centered=True,
        use_bias=True,
        activation="tanh",
    ),
    _cosine_case(
        "cosine-conv1d-same-strided",
        tfnorm.CosineConv1D,
        (2, 9, 3),
        (1, 5, 2),
        filters=4,
        kernel_size=3,
        strides=2,
        padding="same",
    ),
    _cosine_case(
        "cosine-conv1d-causal-dilated-bias",
        tfnorm.CosineConv1D,
        (2, 8, 2),
        (1, 6, 2),
        filters=3,
        kernel_size=2,
        dilation_rate=2,
        padding="causal",
        use_bias=True,
    ),
    _cosine_case(
        "cosine-conv1d-channels-first-centered",
        tfnorm.CosineConv1D,
        (2, 3, 7),
        (1, 2, 5),
        filters=2,
        kernel_size=3,
        centered=True,
        data_format="channels_first",
    ),
    _cosine_case(
        "cosine-conv2d-same-bias",
        tfnorm.CosineConv2D,
        (2, 6, 6, 3),
        (1, 4, 4, 2),
        filters=4,
        kernel_size=3,
        padding="same",
        use_bias=True,
        activation="relu",
    ),
    _cosine_case(
        "cosine-conv2d-centered-strided",
        tfnorm.CosineConv2D,
        (2, 7, 7, 2),
        (1, 5, 5, 2),
        filters=3,
        kernel_size=(3, 2),
        strides=(2, 1),
        centered=True,
        use_bias=True,
    ),
]
