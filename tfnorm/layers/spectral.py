"""Spectral normalization (Miyato et al. 2018): a wrapper dividing a kernel by its largest
singular value.

See :mod:`tfnorm.layers.wrapper` for how the kernel wrappers run the wrapped layer.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfnorm import ops
from tfnorm.layers import kernels
from tfnorm.layers.base import check_int, register
from tfnorm.layers.wrapper import KernelWrapper

# The kinds of layer (tfnorm.layers.kernels.kind) spectral normalization accepts, and their names.
_SPECTRAL_KINDS = {
    "dense": "Dense",
    "conv": "Conv1D, Conv2D, Conv3D",
    "conv_transpose": "Conv1DTranspose, Conv2DTranspose, Conv3DTranspose",
    "depthwise": "DepthwiseConv1D, DepthwiseConv2D",
    "separable": "SeparableConv1D, SeparableConv2D",
    "embedding": "Embedding",
}


@register("spectral", kind="wrapper")
class SpectralNormalization(KernelWrapper):
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
      power_iterations: power-iteration steps per training call, 1 to 1000.
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
        # each step reads the kernel twice per training call: beyond 1000 is a mistake, not a
        # better estimate (a few steps per call converge over training, Miyato et al.)
        self.power_iterations = check_int("power_iterations", power_iterations, 1, 1000)

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
        return [
            self._sigma(self._matrix(dtype, name), training, u)
            for name, u in zip(self._kernel_names, self._u)
        ]

    def _effective(self):
        return {
            name: self._kernel(tf.float32, name) / sigma
            for name, sigma in zip(self._kernel_names, self._sigmas(tf.float32, False))
        }

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
        normalized = [
            tf.cast(self._kernel(sdt, name) / sigma, cdt)
            for name, sigma in zip(self._kernel_names, sigmas)
        ]
        outputs = kernels.linear(self.layer, inputs, *normalized)
        return kernels.finish(self.layer, outputs, self._bias(sdt))

    def get_config(self):
        config = super().get_config()
        config.update({"power_iterations": self.power_iterations})
        return config
