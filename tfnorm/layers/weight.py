"""Weight normalization (Salimans & Kingma 2016): a wrapper that reparametrizes a kernel.

See :mod:`tfnorm.layers.wrapper` for how the kernel wrappers run the wrapped layer.
"""

from __future__ import annotations

import tensorflow as tf

from tfnorm import ops
from tfnorm.layers import kernels
from tfnorm.layers.base import check_bool, register
from tfnorm.layers.wrapper import KernelWrapper

# Variance floor of the data-dependent initialization (a constant batch has no spread).
_DATA_INIT_EPSILON = 1e-6

# The kinds of layer (tfnorm.layers.kernels.kind) weight normalization accepts, and their names.
_WEIGHT_NORM_KINDS = {
    "dense": "Dense",
    "conv": "Conv1D, Conv2D, Conv3D",
    "recurrent": "SimpleRNN, LSTM, GRU",
}


@register("weight", kind="wrapper")
class WeightNormalization(KernelWrapper):
    r"""Weight normalization: each unit's weight vector split into a length and a direction.

    Wraps a ``Dense``, ``Conv1D/2D/3D``, ``SimpleRNN``, ``LSTM`` or ``GRU``
    layer whose kernel ``v`` becomes the direction; a new per-unit length
    ``g`` gives the kernel actually used::

        w_j = g_j * v_j / ||v_j||        (v_j: the fan-in weights of output unit j)
        y   = activation(op(x, w) + b)

    computed inside ``call`` as ``(g_j / ||v_j||) * op(x, v)_j + b_j`` (the
    same, the op being linear in each unit's weights; the op runs once, on the
    stored kernel; under float16 the kernel is normalized first, to keep the
    product in range). The wrapped layer's variables are never assigned to,
    so gradients reach ``v`` through the normalization and mixed precision
    keeps its float32 master weights. ``g`` starts at ``||v_j||`` (the wrapped
    layer's function is unchanged at first).

    A recurrent layer's input kernel (its cell's ``kernel``, shape
    ``(input_dim, gates * units)``) is the one normalized, column by column
    over the input axis; the recurrent kernel and the bias are used as
    stored. The wrapper runs the cell's own step (every gate, activation and
    dropout option of the wrapped layer) with the normalized kernel, through a
    ``keras.layers.RNN`` step by step (not cuDNN); masks and ``initial_state``
    are passed on. ``stateful=True`` layers are not accepted.

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
    inf initializes nothing (the next finite one does). The paper's
    initialization is for feed-forward layers: a recurrent layer is wrapped
    with ``data_init=False`` (True is refused).

    :meth:`remove` returns a plain layer of the wrapped class holding the
    effective kernel ``w`` (and the bias plus ``offset``): the same function as
    the wrapper in inference, without the reparameterization.

    Args:
      layer: a ``keras.layers.Dense``, ``Conv1D``, ``Conv2D``, ``Conv3D``,
        ``SimpleRNN``, ``LSTM`` or ``GRU``.
      data_init: data-dependent initialization on the first training call.
        Default True; a recurrent layer needs False.

    Call arguments:
      inputs: the wrapped layer's input.
      training: a training call; the first one runs the data-dependent
        initialization when ``data_init=True``.
      mask, initial_state: passed on to a recurrent layer (ignored by the
        others).

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

    _accepted = _WEIGHT_NORM_KINDS

    def __init__(self, layer, data_init=True, **kwargs):
        super().__init__(layer, **kwargs)
        self.data_init = check_bool("data_init", data_init)
        if self._kind == "recurrent" and self.data_init:
            raise ValueError(
                f"WeightNormalization: the data-dependent initialization is for feed-forward "
                f"layers (Salimans & Kingma, Sec. 3); wrap {type(layer).__name__} "
                f"{layer.name!r} with data_init=False, received data_init=True"
            )

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
            if self._bias(tf.float32) is not None:
                self.offset = self._param("offset", (self._units,), "zeros", trainable=False)
            self.initialized = self._param("initialized", (), "zeros", trainable=False)

    def _inverse_norms(self, dtype):
        """``1 / ||v_j||`` per output unit, shape ``(units,)``."""
        axes = kernels.fan_in_axes(self._kernel_rank)
        return tf.reshape(ops.inverse_norm(self._kernel(dtype), axes), [-1])

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

            return ctx.all_reduce(
                tf.distribute.ReduceOp.SUM,
                tf.cond(pending, local, lambda: tf.zeros([n] + shape, sdt)),
            )

        count, s1 = tf.unstack(sums(tf.zeros([], sdt), 2))
        center = tf.math.divide_no_nan(s1, count)
        mean, var = ops.moments_from_sums(*tf.unstack(sums(center, 3)), center)
        return tf.cond(pending, lambda: assign(tf.reshape(mean, [-1]), tf.reshape(var, [-1])), skip)

    def _scale(self, dtype):
        """``g_j / ||v_j||`` per output unit."""
        return tf.cast(self.g, dtype) * self._inverse_norms(dtype)

    def _effective(self):
        out = {self._kernel_names[0]: self._kernel(tf.float32) * self._scale(tf.float32)}
        if self.offset is not None:
            out["bias"] = self._bias(tf.float32) + tf.cast(self.offset, tf.float32)
        return out

    def call(self, inputs, training=None, mask=None, initial_state=None):
        sdt = ops.stats_dtype(inputs.dtype)
        if self._kind == "recurrent":  # the cell multiplies by its kernel: hand it w itself
            kernel = tf.cast(self._kernel(sdt) * self._scale(sdt), inputs.dtype)
            return self._recurrence(
                inputs, kernel, mask=mask, training=training, initial_state=initial_state
            )
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
        scale = g if unit_scale is None else g * unit_scale
        return kernels.finish(self.layer, t, bias, scale=scale)

    def get_config(self):
        config = super().get_config()
        config.update({"data_init": self.data_init})
        return config
