"""The base of the wrappers that normalize another layer's kernel (weight and spectral norm).

The wrappers normalize inside ``call`` and run the wrapped layer's own operation
(matmul, convolution, embedding lookup, or a recurrent cell's step). Where the
normalization is a factor per unit or for the whole kernel (weight and spectral norm), the
operation runs on the stored kernel and the factor is applied to its output (a recurrent
cell takes the normalized kernel itself), except in float16, where the kernel is normalized first
to keep the product in range. They never assign into the wrapped layer's
variables: gradients reach the stored kernel through the
normalization, and mixed precision keeps its float32 master weights.

:class:`KernelWrapper` holds what the two share: which layers they accept
(:func:`check_wrappable`), building, config, masks, and ``remove()``.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfnorm import ops
from tfnorm.layers import kernels
from tfnorm.layers.base import CheckedCall, check_config_keys

__all__ = ["KernelWrapper", "check_wrappable"]


def check_wrappable(owner: str, layer, accepted) -> str:
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
            raise ValueError(
                f"{owner} wraps a recurrent layer with stateful=False, received "
                f"{type(layer).__name__} {layer.name!r} with stateful=True"
            )
        if getattr(layer, "use_cudnn", "auto") is True:
            raise ValueError(
                f"{owner} runs the recurrent layer's cell step by step, not "
                f"cuDNN: wrap {type(layer).__name__} {layer.name!r} with "
                f"use_cudnn='auto' or False, received use_cudnn=True"
            )
    return kind


class KernelWrapper(CheckedCall, keras.layers.Wrapper):
    """Shared plumbing of the kernel-normalizing wrappers."""

    #: The kinds of layer the wrapper accepts (see :func:`check_wrappable`).
    _accepted = {}

    def __init__(self, layer, **kwargs):
        kind = check_wrappable(type(self).__name__, layer, self._accepted)
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
        layer = keras.saving.deserialize_keras_object(
            config.pop("layer"), custom_objects=custom_objects
        )
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
        # float32 whatever the policy (float64 in a float64 layer), as the layers' own weights
        return self.add_weight(
            name=name,
            shape=tuple(shape),
            initializer=initializer,
            dtype=ops.stats_dtype(self.variable_dtype),
            trainable=trainable,
            autocast=False,
        )

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
            raise ValueError(
                f"{type(self).__name__} {self.name!r}: remove() needs a built "
                "wrapper (call it or build it first)"
            )
        if getattr(self.layer, "lora_enabled", False):
            raise ValueError(
                f"{type(self).__name__} {self.name!r}: remove() makes a layer "
                f"without LoRA; the wrapped {type(self.layer).__name__} has LoRA "
                "enabled (its kernel is the sum of the stored kernel and the "
                "low-rank update)"
            )
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
            values.append(
                v.numpy() if value is None else np.asarray(tf.cast(value, v.dtype).numpy())
            )
        if replace:  # every effective weight must have found its variable
            raise RuntimeError(
                f"{type(self).__name__}.remove(): a normalized weight of "
                f"{type(self.layer).__name__} is not among its weights"
            )
        layer.set_weights(values)
        return layer
