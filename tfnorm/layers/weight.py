"""Wrappers that normalize another layer's kernel: weight normalization, spectral normalization.

The wrappers normalize inside ``call`` and run the wrapped layer's own operation
(matmul or convolution). Where the normalization is a factor per unit or for the whole
kernel (weight and spectral norm), the operation runs on the stored kernel and the factor is
applied to its output, except in float16, where the kernel is normalized first
to keep the product in range. They never assign into the wrapped layer's
variables: gradients reach the stored kernel through the
normalization, and mixed precision keeps its float32 master weights.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfnorm import ops
from tfnorm.layers import kernels
from tfnorm.layers.base import (
    CheckedCall,
    check_bool,
    check_config_keys,
    check_int,
    register,
)

# Variance floor of the data-dependent initialization (a constant batch has no spread).
_DATA_INIT_EPSILON = 1e-6


_SUPPORTED = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def _check_wrappable(owner: str, layer) -> None:
    """Accepts Dense and Conv1D/2D/3D whose forward pass is Keras' own."""
    ok = isinstance(layer, _SUPPORTED) and any(
        type(layer).call is base.call for base in _SUPPORTED if isinstance(layer, base))
    if not ok:
        raise ValueError(
            f"{owner} wraps keras.layers.Dense, Conv1D, Conv2D or Conv3D (with their own call), "
            f"received layer={layer!r} of type {type(layer).__name__}; wrap the plain Keras layer"
        )


class _KernelWrapper(CheckedCall, keras.layers.Wrapper):
    """Shared plumbing of the kernel-normalizing wrappers."""

    def __init__(self, layer, **kwargs):
        _check_wrappable(type(self).__name__, layer)
        if kwargs.get("dtype") is None:  # compute like the wrapped layer unless told otherwise
            kwargs["dtype"] = layer.dtype_policy
        super().__init__(layer, **kwargs)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        check_config_keys(cls, config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"),
                                                      custom_objects=custom_objects)
        return cls(layer, **config)

    def build(self, input_shape):
        spec = self.layer.input_spec  # the wrapped call is bypassed: check its rank here
        rank = len(input_shape)
        need = getattr(spec, "min_ndim", None) or getattr(spec, "ndim", None)
        if need is not None and rank < need:
            raise ValueError(
                f"{type(self).__name__}: the wrapped {type(self.layer).__name__} needs an input "
                f"of rank >= {need} (batch axis included), received an input of shape "
                f"{tuple(input_shape)} (rank {rank})"
            )
        if not self.layer.built:
            self.layer.build(input_shape)
        if not kernels.is_dense(self.layer):  # a Dense works at any rank, a convolution at one
            self._record_built_shape(input_shape)
        self._units = int(self.layer.kernel.shape[-1])
        self._kernel_rank = len(self.layer.kernel.shape)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def _param(self, name, shape, initializer, trainable=True):
        return self.add_weight(name=name, shape=tuple(shape), initializer=initializer,
                               trainable=trainable, autocast=False)

    def _kernel(self, dtype):
        return kernels.read_stored(self.layer.kernel, dtype)

    def _bias(self, dtype):
        return None if self.layer.bias is None else kernels.read_stored(self.layer.bias, dtype)


@register("weight", kind="wrapper")
class WeightNormalization(_KernelWrapper):
    r"""Weight normalization: each unit's weight vector split into a length and a direction.

    Wraps a ``Dense`` or ``Conv1D/2D/3D`` layer whose kernel ``v`` becomes the
    direction; a new per-unit length ``g`` gives the kernel actually used::

        w_j = g_j * v_j / ||v_j||        (v_j: the fan-in weights of output unit j)
        y   = activation(op(x, w) + b)

    computed inside ``call`` as ``(g_j / ||v_j||) * op(x, v)_j + b_j`` (the
    same, the op being linear in each unit's weights; the op runs once, on the
    stored kernel; under float16 the kernel is normalized first, to keep the
    product in range). The wrapped layer's variables are never assigned to,
    so gradients reach ``v`` through the normalization and mixed precision
    keeps its float32 master weights. ``g`` starts at ``||v_j||`` (the wrapped
    layer's function is unchanged at first).

    With ``data_init=True``, the first call with ``training=True`` initializes
    from that batch (Salimans & Kingma, Sec. 3): with ``t = op(x, v/||v||)``
    and its per-unit batch mean ``mu`` and standard deviation ``sigma``, it sets
    ``g = 1/sigma`` and the bias to ``-mu/sigma``, so the pre-activations of
    that batch have zero mean and unit variance per unit. The bias shift is
    kept by the wrapper as a non-trainable ``offset`` added to the wrapped
    layer's (trainable) bias, which is not written to; without a bias
    (``use_bias=False``) only ``g`` is set. A non-trainable ``initialized``
    flag records that this happened, so it happens once and survives saving
    and loading. Under ``tf.distribute`` the statistics are those of the
    global batch (all replicas start from the same ``g``); a batch with NaN or
    inf initializes nothing (the next finite one does).

    Args:
      layer: a ``keras.layers.Dense``, ``Conv1D``, ``Conv2D`` or ``Conv3D``.
      data_init: data-dependent initialization on the first training call.
        Default True.

    Call arguments:
      inputs: the wrapped layer's input.
      training: a training call; the first one runs the data-dependent
        initialization when ``data_init=True``.

    Example:
      >>> import numpy as np, keras, tfnorm
      >>> wn = tfnorm.WeightNormalization(keras.layers.Dense(3))
      >>> y = wn(np.random.rand(64, 5).astype("float32"), training=True)
      >>> y = y.numpy()  # this batch's pre-activations: zero mean, unit variance per unit
      >>> bool(np.allclose(y.mean(0), 0, atol=1e-5)), bool(np.allclose(y.std(0), 1, atol=1e-4))
      (True, True)

    Reference:
      T. Salimans, D. P. Kingma. "Weight Normalization: A Simple
      Reparameterization to Accelerate Training of Deep Neural Networks."
      NeurIPS 2016.
    """

    def __init__(self, layer, data_init=True, **kwargs):
        super().__init__(layer, **kwargs)
        self.data_init = check_bool("data_init", data_init)

    def build(self, input_shape):
        super().build(input_shape)
        fan_in = kernels.fan_in_axes(self._kernel_rank)

        def kernel_norm(shape, dtype=None):
            v = self._kernel(tf.float32)
            return tf.cast(tf.sqrt(tf.reduce_sum(tf.square(v), fan_in)), dtype or tf.float32)

        self.g = self._param("g", (self._units,), kernel_norm)
        self.offset = None
        self.initialized = None
        if self.data_init:
            if self.layer.bias is not None:
                self.offset = self._param("offset", (self._units,), "zeros", trainable=False)
            self.initialized = self._param("initialized", (), "zeros", trainable=False)

    def _inverse_norms(self, dtype):
        """``1 / ||v_j||`` per output unit, shape ``(units,)``."""
        return tf.reshape(ops.inverse_norm(self._kernel(dtype), kernels.fan_in_axes(self._kernel_rank)),
                          [-1])

    def _assign_init(self, mean, var):
        """Sets g = 1/sigma and the bias to -mu/sigma unless a statistic is not finite."""
        inv = tf.math.rsqrt(var + tf.constant(_DATA_INIT_EPSILON, var.dtype))
        ok = tf.reduce_all(tf.math.is_finite(inv))
        shift = None
        if self.offset is not None:
            shift = -mean * inv - self._bias(mean.dtype)
            ok = tf.logical_and(ok, tf.reduce_all(tf.math.is_finite(shift)))
        self.g.assign(tf.where(ok, tf.cast(inv, self.g.dtype), self.g))
        if shift is not None:
            self.offset.assign(tf.where(ok, tf.cast(shift, self.offset.dtype), self.offset))
        self.initialized.assign(tf.cast(ok, self.initialized.dtype))
        return ok

    def _data_dependent_init(self, t, unit_scale=None):
        """Runs the initialization while pending, from the pre-activations ``t * unit_scale``
        (``unit_scale`` per output unit, None for 1): ``op(x, v / ||v||)`` before ``g``."""
        rank = t.shape.rank
        axis = kernels.channel_axis(self.layer, rank)
        reduce = [a for a in range(rank) if a != axis]
        pending = tf.convert_to_tensor(self.initialized) < 0.5
        skip = lambda: tf.constant(False)  # noqa: E731

        def assign(mean, var):  # the statistics of t * unit_scale
            if unit_scale is not None:
                mean, var = mean * unit_scale, var * tf.square(unit_scale)
            return self._assign_init(mean, var)

        ctx = tf.distribute.get_replica_context()
        if ctx is None or ctx.num_replicas_in_sync == 1:
            return tf.cond(pending, lambda: assign(*ops.moments(t, reduce, keepdims=False)), skip)
        # Across replicas the statistics are the global batch's. Synchronization may not sit
        # inside control flow, so the two small all-reduces run at every training call; the
        # reductions over t run only while pending.
        sdt = ops.stats_dtype(t.dtype)
        shape = [self._units if a == axis else 1 for a in range(rank)]

        def sums(shift, n):
            def local():
                return tf.stack(ops.shifted_sums(t, reduce, shift)[:n])
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                  tf.cond(pending, local, lambda: tf.zeros([n] + shape, sdt)))

        count, s1 = tf.unstack(sums(tf.zeros([], sdt), 2))
        center = tf.math.divide_no_nan(s1, count)
        mean, var = ops.moments_from_sums(*tf.unstack(sums(center, 3)), center)
        return tf.cond(pending, lambda: assign(tf.reshape(mean, [-1]), tf.reshape(var, [-1])),
                       skip)

    def call(self, inputs, training=None):
        sdt = ops.stats_dtype(inputs.dtype)
        inv = self._inverse_norms(sdt)
        if inputs.dtype == tf.float16:
            # float16: normalize the kernel first so the product stays in float16's range
            kernel = self._kernel(sdt) * inv
            t = kernels.linear(self.layer, inputs, tf.cast(kernel, inputs.dtype))
            unit_scale = None
        else:
            # op(x, g v/||v||) = (g/||v||) op(x, v) unit by unit: the op runs on the stored
            # kernel and 1/||v|| joins the per-unit multiply-add, so no normalized kernel is
            # written (bfloat16 has float32's range: the unnormalized product cannot overflow).
            t = kernels.linear(self.layer, inputs, self._kernel(inputs.dtype))
            unit_scale = inv
        deps = []
        if self.data_init and bool(training) and self.trainable:
            deps.append(self._data_dependent_init(t, unit_scale))
        with tf.control_dependencies(deps):
            g = tf.cast(self.g, sdt)
            bias = self._bias(sdt)
            if bias is not None and self.offset is not None:
                bias = bias + tf.cast(self.offset, sdt)
        return kernels.finish(self.layer, t, bias, scale=g if unit_scale is None else g * unit_scale)

    def get_config(self):
        config = super().get_config()
        config.update({"data_init": self.data_init})
        return config


@register("spectral", kind="wrapper")
class SpectralNormalization(_KernelWrapper):
    r"""Spectral normalization: the kernel divided by its largest singular value.

    Wraps a ``Dense`` or ``Conv1D/2D/3D`` layer. Its kernel, reshaped to a
    matrix ``W`` of shape ``(fan_in, units)``, is used as ``W / sigma(W)``,
    where ``sigma`` is estimated by power iteration with a persistent unit
    vector ``u`` (a non-trainable weight of size ``units``). In training, each
    call runs ``power_iterations`` steps (Miyato et al., Alg. 1)::

        v <- W u / ||W u||,   u <- W^T v / ||W^T v||,   sigma = v^T W u

    stores the new ``u``, and treats ``u`` and ``v`` as constants, so the
    gradient reaches ``W`` through ``sigma`` too. In inference ``u`` is left
    alone and ``sigma = ||W u||`` (one half step, with ``v = W u / ||W u||``).
    The result is computed inside ``call``; the wrapped layer's variables are
    never assigned to. Power iteration runs in float32 under mixed precision.

    Args:
      layer: a ``keras.layers.Dense``, ``Conv1D``, ``Conv2D`` or ``Conv3D``.
      power_iterations: power-iteration steps per training call (>= 1).
        Default 1.

    Call arguments:
      inputs: the wrapped layer's input.
      training: run power iteration and update ``u``.

    Example:
      >>> import numpy as np, keras, tfnorm
      >>> keras.utils.set_random_seed(0)
      >>> sn = tfnorm.SpectralNormalization(keras.layers.Dense(4, use_bias=False),
      ...                                   power_iterations=50)
      >>> _ = sn(np.zeros((1, 6), "float32"), training=True)
      >>> w = sn(np.eye(6, dtype="float32")).numpy()  # the normalized kernel
      >>> round(float(np.linalg.svd(w, compute_uv=False)[0]), 4)
      1.0

    Reference:
      T. Miyato, T. Kataoka, M. Koyama, Y. Yoshida. "Spectral Normalization for
      Generative Adversarial Networks." ICLR 2018.
    """

    def __init__(self, layer, power_iterations=1, **kwargs):
        super().__init__(layer, **kwargs)
        self.power_iterations = check_int("power_iterations", power_iterations, 1)

    def build(self, input_shape):
        super().build(input_shape)

        def unit_normal(shape, dtype=None):
            u = keras.random.normal(shape, dtype=dtype or "float32")
            return u / keras.ops.norm(u)

        self.u = self._param("u", (self._units,), unit_normal, trainable=False)

    def _matrix(self, dtype):
        return tf.reshape(self._kernel(dtype), [-1, self._units])

    def _sigma(self, w, training):
        u = tf.math.l2_normalize(tf.cast(self.u, w.dtype))
        if not training:
            wu = tf.linalg.matvec(w, u)  # one read of W: sigma = v.(W u) = ||W u||
            return tf.tensordot(tf.stop_gradient(tf.math.l2_normalize(wu)), wu, 1)
        w_const = tf.stop_gradient(w)  # u and v are constants of the backward pass
        for _ in range(self.power_iterations):
            v = tf.math.l2_normalize(tf.linalg.matvec(w_const, u))
            u = tf.math.l2_normalize(tf.linalg.matvec(w_const, v, transpose_a=True))
        self.u.assign(tf.cast(u, self.u.dtype))
        return tf.tensordot(v, tf.linalg.matvec(w, u), 1)

    def call(self, inputs, training=None):
        sdt = ops.stats_dtype(inputs.dtype)
        w = self._matrix(sdt)
        sigma = self._sigma(w, bool(training) and self.trainable)
        if inputs.dtype != tf.float16:
            # The linear op is linear in the kernel: dividing its (smaller or equal) output by
            # sigma, fused with the bias, saves a pass that writes a normalized kernel.
            # bfloat16 has float32's range, so its unnormalized product cannot overflow.
            outputs = kernels.linear(self.layer, inputs, self._kernel(inputs.dtype))
            return kernels.finish(self.layer, outputs, self._bias(sdt), scale=1.0 / sigma)
        # float16: normalize the kernel first so the product stays in float16's range
        kernel = self._kernel(sdt) / sigma
        outputs = kernels.linear(self.layer, inputs, tf.cast(kernel, inputs.dtype))
        return kernels.finish(self.layer, outputs, self._bias(sdt))

    def get_config(self):
        config = super().get_config()
        config.update({"power_iterations": self.power_iterations})
        return config
