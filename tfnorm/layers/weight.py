"""Wrappers that normalize another layer's kernel: weight normalization, spectral normalization.

The wrappers normalize inside ``call`` and run the wrapped layer's own operation
(matmul, convolution, embedding lookup, or a recurrent cell's step). Where the
normalization is a factor per unit or for the whole kernel (weight and spectral norm), the
operation runs on the stored kernel and the factor is applied to its output (a recurrent
cell takes the normalized kernel itself), except in float16, where the kernel is normalized first
to keep the product in range. They never assign into the wrapped layer's
variables: gradients reach the stored kernel through the
normalization, and mixed precision keeps its float32 master weights.
"""

from __future__ import annotations

import keras
import numpy as np
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


# The kinds of layer (tfnorm.layers.kernels.kind) each wrapper accepts, and their names.
_WEIGHT_NORM_KINDS = {"dense": "Dense", "conv": "Conv1D, Conv2D, Conv3D",
                      "recurrent": "SimpleRNN, LSTM, GRU"}
_SPECTRAL_KINDS = {"dense": "Dense", "conv": "Conv1D, Conv2D, Conv3D",
                   "conv_transpose": "Conv1DTranspose, Conv2DTranspose, Conv3DTranspose",
                   "depthwise": "DepthwiseConv1D, DepthwiseConv2D",
                   "separable": "SeparableConv1D, SeparableConv2D", "embedding": "Embedding"}


def _check_wrappable(owner: str, layer, accepted) -> str:
    """The layer's kind when ``owner`` accepts it: a Keras layer of one of the ``accepted``
    kinds with its own forward pass and float (not quantized) weights."""
    kind = kernels.kind(layer)
    if kind not in accepted:
        names = ", ".join(accepted.values())
        raise ValueError(
            f"{owner} wraps keras.layers {names} (with their own call), received "
            f"layer={layer!r} of type {type(layer).__name__}; wrap the plain Keras layer"
        )
    if getattr(layer, "quantization_mode", None) is not None:
        raise ValueError(
            f"{owner} wraps a layer with float weights, received a {type(layer).__name__} "
            f"with quantization_mode={layer.quantization_mode!r}"
        )
    if kind == "recurrent":
        if layer.stateful:
            raise ValueError(f"{owner} wraps a recurrent layer with stateful=False, received "
                             f"{type(layer).__name__} {layer.name!r} with stateful=True")
        if getattr(layer, "use_cudnn", "auto") is True:
            raise ValueError(f"{owner} runs the recurrent layer's cell step by step, not "
                             f"cuDNN: wrap {type(layer).__name__} {layer.name!r} with "
                             f"use_cudnn='auto' or False, received use_cudnn=True")
    return kind


class _KernelWrapper(CheckedCall, keras.layers.Wrapper):
    """Shared plumbing of the kernel-normalizing wrappers."""

    #: The kinds of layer the wrapper accepts (see :func:`_check_wrappable`).
    _accepted = {}

    def __init__(self, layer, **kwargs):
        kind = _check_wrappable(type(self).__name__, layer, self._accepted)
        if kwargs.get("dtype") is None:  # compute like the wrapped layer unless told otherwise
            kwargs["dtype"] = layer.dtype_policy
        super().__init__(layer, **kwargs)
        self._kind = kind
        # Masks: a recurrent layer consumes them and an Embedding makes them, as unwrapped;
        # the others do not support them (as before: Keras warns that the mask is dropped).
        self.supports_masking = self._kind in ("recurrent", "embedding")

    def __call__(self, *args, **kwargs):
        if self._kind == "embedding":  # indices, not a float input: skip the float check
            return keras.layers.Wrapper.__call__(self, *args, **kwargs)
        return super().__call__(*args, **kwargs)

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
        if self._kind == "recurrent":
            need = 3
        if need is not None and rank < need:
            raise ValueError(
                f"{type(self).__name__}: the wrapped {type(self.layer).__name__} needs an input "
                f"of rank >= {need} (batch axis included), received an input of shape "
                f"{tuple(input_shape)} (rank {rank})"
            )
        if not self.layer.built:
            self.layer.build(input_shape)
        if self._kind not in ("dense", "embedding"):  # these work at any rank, the others at one
            self._record_built_shape(input_shape)
        self._layer_input_shape = tuple(input_shape)
        self._owner = kernels.kernel_owner(self.layer)
        self._kernel_names = kernels.kernel_names(self.layer)
        kernel = getattr(self._owner, self._kernel_names[-1])
        self._units = int(kernel.shape[-1])
        self._kernel_rank = len(kernel.shape)
        if self._kind == "recurrent":
            # Not tracked: it holds no weights of its own (it reads the wrapped cell's).
            object.__setattr__(self, "_recurrence", kernels.Recurrence(self.layer))

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_mask(self, inputs, mask=None):
        if self._kind in ("recurrent", "embedding"):
            return self.layer.compute_mask(inputs, mask)
        return None

    def _param(self, name, shape, initializer, trainable=True):
        return self.add_weight(name=name, shape=tuple(shape), initializer=initializer,
                               trainable=trainable, autocast=False)

    def _kernel(self, dtype, name=None):
        return kernels.read_stored(getattr(self._owner, name or self._kernel_names[0]), dtype)

    def _bias(self, dtype):
        bias = getattr(self.layer, "bias", None)
        return None if bias is None else kernels.read_stored(bias, dtype)

    def _effective(self):
        """``{kernel name: effective value}`` (float32 tensors), and the bias's when it
        differs from the stored one (key ``"bias"``)."""
        raise NotImplementedError

    def remove(self):
        """A new layer of the wrapped class, without the normalization, computing what this
        wrapper computes in inference.

        It is made from the wrapped layer's config and holds the effective
        (normalized) kernel and the wrapped layer's other weights; the wrapper
        and the wrapped layer are left as they are (nothing is assigned to
        either). The wrapper must be built.
        """
        if not self.built:
            raise ValueError(f"{type(self).__name__} {self.name!r}: remove() needs a built "
                             "wrapper (call it or build it first)")
        if getattr(self.layer, "lora_enabled", False):
            raise ValueError(f"{type(self).__name__} {self.name!r}: remove() makes a layer "
                             f"without LoRA; the wrapped {type(self.layer).__name__} has LoRA "
                             "enabled (its kernel is the sum of the stored kernel and the "
                             "low-rank update)")
        effective = self._effective()
        replace = {}
        for name, value in effective.items():
            owner = self.layer if name == "bias" else self._owner
            replace[id(getattr(owner, name))] = value
        layer = type(self.layer).from_config(self.layer.get_config())
        layer.build(self._layer_input_shape)
        values = []
        for v in self.layer.weights:
            value = replace.pop(id(v), None)
            values.append(v.numpy() if value is None else
                          np.asarray(tf.cast(value, v.dtype).numpy()))
        if replace:  # every effective weight must have found its variable
            raise RuntimeError(f"{type(self).__name__}.remove(): a normalized weight of "
                               f"{type(self.layer).__name__} is not among its weights")
        layer.set_weights(values)
        return layer


@register("weight", kind="wrapper")
class WeightNormalization(_KernelWrapper):
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
            return self._recurrence(inputs, kernel, mask=mask, training=training,
                                    initial_state=initial_state)
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

    Wraps a ``Dense``, ``Conv1D/2D/3D``, ``Conv1D/2D/3DTranspose``,
    ``DepthwiseConv1D/2D``, ``SeparableConv1D/2D`` or ``Embedding`` layer.
    Its kernel, reshaped to a matrix ``W`` whose columns are the kernel's last
    axis and whose rows are all its other axes, is used as ``W / sigma(W)``,
    where ``sigma`` is estimated by power iteration with a persistent unit
    vector ``u`` (a non-trainable weight of the size of the last axis). The
    last axis is the output units of a ``Dense`` and of a convolution (the
    paper's ``(fan_in, units)`` matrix of a filter bank), the input channels
    of a transposed convolution (whose kernel is that of the convolution it
    transposes), the depth multiplier of a depthwise convolution and the
    embedding dimension of an ``Embedding`` (``(input_dim, output_dim)``):
    the rows and columns ``keras.layers.SpectralNormalization`` uses. A
    separable convolution, the composition of its depthwise and pointwise
    convolutions, has each of its two kernels normalized by its own ``sigma``
    (vectors ``u_depthwise`` and ``u_pointwise``), which bounds the spectral
    norm of the composition by 1. In training, each
    call runs ``power_iterations`` steps (Miyato et al., Alg. 1)::

        v <- W u / ||W u||,   u <- W^T v / ||W^T v||,   sigma = v^T W u

    stores the new ``u``, and treats ``u`` and ``v`` as constants, so the
    gradient reaches ``W`` through ``sigma`` too. In inference ``u`` is left
    alone and ``sigma = ||W u||`` (one half step, with ``v = W u / ||W u||``).
    The result is computed inside ``call``; the wrapped layer's variables are
    never assigned to. Power iteration runs in float32 under mixed precision.
    :meth:`remove` returns a plain layer of the wrapped class holding
    ``W / sigma`` with the inference ``sigma`` (the wrapper's inference
    function, without the normalization).

    Args:
      layer: a ``keras.layers.Dense``, ``Conv1D/2D/3D``,
        ``Conv1D/2D/3DTranspose``, ``DepthwiseConv1D/2D``,
        ``SeparableConv1D/2D`` or ``Embedding``.
      power_iterations: power-iteration steps per training call (>= 1).
        Default 1.

    Call arguments:
      inputs: the wrapped layer's input (integer indices for an ``Embedding``).
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

    _accepted = _SPECTRAL_KINDS

    def __init__(self, layer, power_iterations=1, **kwargs):
        super().__init__(layer, **kwargs)
        self.power_iterations = check_int("power_iterations", power_iterations, 1)

    def build(self, input_shape):
        super().build(input_shape)

        def unit_normal(shape, dtype=None):
            u = keras.random.normal(shape, dtype=dtype or "float32")
            return u / keras.ops.norm(u)

        self._u = []
        for name in self._kernel_names:  # "u" for one kernel, "u_depthwise", "u_pointwise"
            u_name = "u" if len(self._kernel_names) == 1 else "u_" + name.split("_")[0]
            size = int(getattr(self._owner, name).shape[-1])
            self._u.append(self._param(u_name, (size,), unit_normal, trainable=False))
        self.u = self._u[0]

    def _matrix(self, dtype, name=None):
        kernel = self._kernel(dtype, name)
        return tf.reshape(kernel, [-1, kernel.shape[-1]])

    def _sigma(self, w, training, u_var=None):
        u_var = self.u if u_var is None else u_var
        u = tf.math.l2_normalize(tf.cast(u_var, w.dtype))
        if not training:
            wu = tf.linalg.matvec(w, u)  # one read of W: sigma = v.(W u) = ||W u||
            return tf.tensordot(tf.stop_gradient(tf.math.l2_normalize(wu)), wu, 1)
        w_const = tf.stop_gradient(w)  # u and v are constants of the backward pass
        for _ in range(self.power_iterations):
            v = tf.math.l2_normalize(tf.linalg.matvec(w_const, u))
            u = tf.math.l2_normalize(tf.linalg.matvec(w_const, v, transpose_a=True))
        u_var.assign(tf.cast(u, u_var.dtype))
        return tf.tensordot(v, tf.linalg.matvec(w, u), 1)

    def _sigmas(self, dtype, training):
        return [self._sigma(self._matrix(dtype, name), training, u)
                for name, u in zip(self._kernel_names, self._u)]

    def _effective(self):
        return {name: self._kernel(tf.float32, name) / sigma
                for name, sigma in zip(self._kernel_names, self._sigmas(tf.float32, False))}

    def call(self, inputs, training=None):
        cdt = tf.as_dtype(self.compute_dtype) if self._kind == "embedding" else inputs.dtype
        sdt = ops.stats_dtype(cdt)
        sigmas = self._sigmas(sdt, bool(training) and self.trainable)
        if cdt != tf.float16:
            # The op is linear in each kernel: dividing its output by the sigmas, fused with
            # the bias, saves a pass that writes a normalized kernel. bfloat16 has float32's
            # range, so its unnormalized product cannot overflow.
            stored = [self._kernel(cdt, name) for name in self._kernel_names]
            outputs = kernels.linear(self.layer, inputs, *stored)
            scale = 1.0 / sigmas[0] if len(sigmas) == 1 else 1.0 / (sigmas[0] * sigmas[1])
            return kernels.finish(self.layer, outputs, self._bias(sdt), scale=scale)
        # float16: normalize the kernels first so the product stays in float16's range
        normalized = [tf.cast(self._kernel(sdt, name) / sigma, cdt)
                      for name, sigma in zip(self._kernel_names, sigmas)]
        outputs = kernels.linear(self.layer, inputs, *normalized)
        return kernels.finish(self.layer, outputs, self._bias(sdt))

    def get_config(self):
        config = super().get_config()
        config.update({"power_iterations": self.power_iterations})
        return config
