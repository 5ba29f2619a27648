"""Descriptors of the core layers, with NumPy references written from the papers."""

from __future__ import annotations

import numpy as np

import tfnorm
from tests.harness import Case

# ---------------------------------------------------------------------------
# References. x: float64 array; p: weights by name; training: bool.


def _bcast(v, axes, rank):
    shape = [1] * rank
    for a, n in zip(axes, np.shape(v)):
        shape[a] = n
    return np.reshape(v, shape)


def _axes(axis, rank):
    axis = [axis] if isinstance(axis, int) else list(axis)
    return sorted(a % rank for a in axis)


def bn_reference(
    axis=-1,
    epsilon=1e-3,
    center=True,
    scale=True,
    virtual_batch_size=None,
    renorm=False,
    renorm_clipping=None,
    **_,
):
    """Ioffe & Szegedy 2015, Alg. 1; ghost batches (Hoffer 2017); renorm (Ioffe 2017, Alg. 1)."""

    def ref(x, p, training):
        rank = x.ndim
        ch = _axes(axis, rank)
        red = tuple(a for a in range(rank) if a not in ch)
        g = _bcast(p["gamma"], ch, rank) if scale else 1.0
        b = _bcast(p["beta"], ch, rank) if center else 0.0
        if not training:
            m = _bcast(p["moving_mean"], ch, rank)
            v = _bcast(p["moving_variance"], ch, rank)
            return g * (x - m) / np.sqrt(v + epsilon) + b
        chunks = (
            [x] if virtual_batch_size is None else np.split(x, x.shape[0] // virtual_batch_size)
        )
        outs = []
        for c in chunks:
            mu = c.mean(axis=red, keepdims=True)
            var = ((c - mu) ** 2).mean(axis=red, keepdims=True)
            sigma = np.sqrt(var + epsilon)
            xhat = (c - mu) / sigma
            if renorm:
                rm = _bcast(p["renorm_mean"], ch, rank)
                rs = np.maximum(_bcast(p["renorm_stddev"], ch, rank), np.sqrt(epsilon))
                r = sigma / rs
                d = (mu - rm) / rs
                clip = renorm_clipping or {}
                rmax = clip.get("rmax")
                rmin = clip.get("rmin", None if rmax is None else 1.0 / rmax)
                if rmax is not None:
                    r = np.minimum(r, rmax)
                if rmin is not None:
                    r = np.maximum(r, rmin)
                if clip.get("dmax") is not None:
                    d = np.clip(d, -clip["dmax"], clip["dmax"])
                xhat = xhat * r + d
            outs.append(g * xhat + b)
        return np.concatenate(outs, 0)

    return ref


def renorm_grad_reference(axis=-1, epsilon=1e-3, renorm_clipping=None, **_):
    """Ioffe 2017, Alg. 1 backward: r and d are constants, so with xhat = (x - mu)/sigma,
    dL/dxhat = dy * gamma * r and the usual BN backward (Ioffe & Szegedy 2015, Sec. 3):
    dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / sigma."""

    def grad(x, p, training, dy):
        rank = x.ndim
        ch = _axes(axis, rank)
        red = tuple(a for a in range(rank) if a not in ch)
        mu = x.mean(axis=red, keepdims=True)
        sigma = np.sqrt(((x - mu) ** 2).mean(axis=red, keepdims=True) + epsilon)
        xhat = (x - mu) / sigma
        rs = np.maximum(_bcast(p["renorm_stddev"], ch, rank), np.sqrt(epsilon))
        r = sigma / rs
        clip = renorm_clipping or {}
        if clip.get("rmax") is not None:
            r = np.clip(r, clip.get("rmin", 1.0 / clip["rmax"]), clip["rmax"])
        dxhat = dy * _bcast(p["gamma"], ch, rank) * r
        return (
            dxhat
            - dxhat.mean(axis=red, keepdims=True)
            - xhat * (dxhat * xhat).mean(axis=red, keepdims=True)
        ) / sigma

    return grad


def ln_reference(axis=-1, epsilon=1e-3, center=True, scale=True, **_):
    """Ba et al. 2016, eq. 4: statistics over the hidden units of one sample."""

    def ref(x, p, training):
        rank = x.ndim
        ax = tuple(_axes(axis, rank))
        mu = x.mean(axis=ax, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=ax, keepdims=True)
        y = (x - mu) / np.sqrt(var + epsilon)
        if scale:
            y = y * _bcast(p["gamma"], ax, rank)
        if center:
            y = y + _bcast(p["beta"], ax, rank)
        return y

    return ref


def rms_reference(axis=-1, epsilon=1e-6, scale=True, **_):
    """Zhang & Sennrich 2019, eq. 4: a_i / RMS(a) * g_i, RMS(a) = sqrt(mean(a^2))."""

    def ref(x, p, training):
        rank = x.ndim
        ax = tuple(_axes(axis, rank))
        rms = np.sqrt((x**2).mean(axis=ax, keepdims=True) + epsilon)
        y = x / rms
        return y * _bcast(p["gamma"], ax, rank) if scale else y

    return ref


def gn_reference(groups=32, axis=-1, epsilon=1e-3, center=True, scale=True, **_):
    """Wu & He 2018, eq. 1-2 and Fig. 3: moments over (C/G, H, W) per sample and group."""

    def ref(x, p, training):
        rank = x.ndim
        c = axis % rank
        xm = np.moveaxis(x, c, -1)  # (N, ..., C)
        n, ch = xm.shape[0], xm.shape[-1]
        g = ch if groups == -1 else groups  # -1: one group per channel
        xg = xm.reshape(n, -1, g, ch // g)
        mu = xg.mean(axis=(1, 3), keepdims=True)
        var = ((xg - mu) ** 2).mean(axis=(1, 3), keepdims=True)
        y = ((xg - mu) / np.sqrt(var + epsilon)).reshape(xm.shape)
        if scale:
            y = y * p["gamma"]
        if center:
            y = y + p["beta"]
        return np.moveaxis(y, -1, c)

    return ref


def in_reference(axis=-1, epsilon=1e-3, center=True, scale=True, **_):
    """Ulyanov et al. 2016, eq. 4: moments over the spatial axes per sample and channel."""

    def ref(x, p, training):
        rank = x.ndim
        c = axis % rank
        sp = tuple(a for a in range(1, rank) if a != c)
        mu = x.mean(axis=sp, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=sp, keepdims=True)
        y = (x - mu) / np.sqrt(var + epsilon)
        if scale:
            y = y * _bcast(p["gamma"], (c,), rank)
        if center:
            y = y + _bcast(p["beta"], (c,), rank)
        return y

    return ref


# ---------------------------------------------------------------------------
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


CASES = [
    _case(
        "batch-dense", tfnorm.BatchNormalization, bn_reference, (16, 6), (6, 3), case_stateful=True
    ),
    _case(
        "batch-conv2d",
        tfnorm.BatchNormalization,
        bn_reference,
        (4, 5, 5, 3),
        (3, 2, 2, 2),
        case_stateful=True,
    ),
    _case(
        "batch-channels-first",
        tfnorm.BatchNormalization,
        bn_reference,
        (4, 3, 5, 5),
        (3, 2, 2, 2),
        axis=1,
        momentum=0.9,
        epsilon=1e-5,
        case_stateful=True,
    ),
    _case(
        "batch-no-affine",
        tfnorm.BatchNormalization,
        bn_reference,
        (8, 4, 5),
        (4, 2, 3),
        center=False,
        scale=False,
        case_stateful=True,
    ),
    _case(
        "batch-ghost",
        tfnorm.BatchNormalization,
        bn_reference,
        (12, 4, 3),
        (4, 2, 3),
        virtual_batch_size=2,
        case_stateful=True,
    ),
    _case(
        "batch-renorm",
        tfnorm.BatchNormalization,
        bn_reference,
        (16, 5),
        (6, 3),
        renorm=True,
        renorm_clipping={"rmax": 1.5, "dmax": 0.5},
        case_stateful=True,
        case_gradient="custom",
        case_grad_reference=renorm_grad_reference(renorm_clipping={"rmax": 1.5, "dmax": 0.5}),
    ),
    _case(
        "batch-sync",
        tfnorm.BatchNormalization,
        bn_reference,
        (8, 5),
        (6, 3),
        synchronized=True,
        case_stateful=True,
    ),
    _case("layer", tfnorm.LayerNormalization, ln_reference, (4, 7, 10), (2, 2, 5)),
    _case(
        "layer-multi-axis",
        tfnorm.LayerNormalization,
        ln_reference,
        (3, 4, 5, 6),
        (2, 2, 2, 3),
        axis=[2, 3],
        epsilon=1e-5,
    ),
    _case(
        "layer-simple",
        tfnorm.LayerNormalization,
        ln_reference,
        (4, 12),
        (3, 5),
        center=False,
        scale=False,
    ),
    _case("rms", tfnorm.RMSNormalization, rms_reference, (4, 7, 10), (2, 2, 5)),
    _case(
        "rms-axis1",
        tfnorm.RMSNormalization,
        rms_reference,
        (4, 6, 3),
        (2, 4, 2),
        axis=1,
        epsilon=1e-5,
    ),
    _case("group", tfnorm.GroupNormalization, gn_reference, (3, 5, 5, 8), (2, 2, 2, 4), groups=2),
    _case("group-dense", tfnorm.GroupNormalization, gn_reference, (4, 12), (3, 6), groups=3),
    _case(
        "group-per-channel",
        tfnorm.GroupNormalization,
        gn_reference,
        (3, 5, 5, 4),
        (2, 2, 2, 4),
        groups=-1,
    ),
    _case(
        "group-channels-first-1d",
        tfnorm.GroupNormalization,
        gn_reference,
        (3, 8, 7),
        (2, 4, 3),
        groups=2,
        axis=1,
        epsilon=1e-5,
    ),
    _case("instance-1d", tfnorm.InstanceNormalization, in_reference, (3, 9, 4), (2, 3, 2)),
    _case("instance-2d", tfnorm.InstanceNormalization, in_reference, (2, 5, 6, 3), (2, 2, 3, 2)),
    _case(
        "instance-3d-channels-first",
        tfnorm.InstanceNormalization,
        in_reference,
        (2, 3, 4, 3, 3),
        (1, 2, 2, 2, 2),
        axis=1,
        center=False,
    ),
]
